"""The server's Prometheus metrics (``GET /metrics``), in a registry of each app's own."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError

__all__ = ["ROUTES", "Metrics"]

#: Paths reported by name; any other path is reported as ``other`` (bounded label values).
ROUTES = frozenset(
    {
        "/v1/embeddings",
        "/embeddings",
        "/v1/rerank",
        "/rerank",
        "/v2/rerank",
        "/v1/search",
        "/search",
        "/v1/models",
        "/health",
        "/metrics",
    }
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TEXT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class Metrics:
    """Counters, gauges and histograms of one app (a fresh ``CollectorRegistry``, never the global one)."""

    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as error:
            raise ConfigurationError('The server needs its extra: pip install "qwen-embed[server]"') from error
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "qwen_embed_requests", "HTTP requests answered, by path and status.", ["path", "status"], registry=r
        )
        self.latency = Histogram(
            "qwen_embed_request_duration_seconds",
            "Time from request to the end of the response, by path.",
            ["path"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("qwen_embed_requests_in_flight", "HTTP requests being answered.", registry=r)
        self.inputs = Counter("qwen_embed_inputs", "Texts embedded (answered with a vector).", registry=r)
        self.tokens = Counter(
            "qwen_embed_tokens", "Tokens of the texts embedded (prompt and EOS included).", registry=r
        )
        self.dropped = Counter(
            "qwen_embed_dropped_inputs", "Texts not embedded because their client went away first.", registry=r
        )
        self.rerank_documents = Counter(
            "qwen_embed_rerank_documents", "Documents scored by the reranker (answered with a score).", registry=r
        )
        self.rerank_tokens = Counter(
            "qwen_embed_rerank_tokens", "Tokens of the (query, document) pairs scored, prompt included.", registry=r
        )
        self.rerank_dropped = Counter(
            "qwen_embed_rerank_dropped_documents",
            "Documents not scored because their client went away first.",
            registry=r,
        )
        self.search_queries = Counter(
            "qwen_embed_search_queries", "Search queries answered (POST /v1/search).", registry=r
        )
        self.search_tokens = Counter(
            "qwen_embed_search_tokens", "Tokens of the search queries embedded (prompt and EOS included).", registry=r
        )
        self.search_dropped = Counter(
            "qwen_embed_search_dropped_queries",
            "Search queries not looked up because their client went away first.",
            registry=r,
        )
        self.search_seconds = Histogram(
            "qwen_embed_search_duration_seconds",
            "Time of one index lookup (a batch of query vectors).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_requests = Gauge(
            "qwen_embed_queue_requests", "Requests (embeddings, reranks, searches) waiting for the engines.", registry=r
        )
        self.queue_inputs = Gauge(
            "qwen_embed_queue_inputs", "Texts, rerank documents and search queries waiting for the engines.", registry=r
        )
        self.batch_texts = Histogram(
            "qwen_embed_batch_texts", "Texts (or rerank documents) per engine call.", buckets=_TEXT_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "qwen_embed_batch_tokens", "Tokens per engine call.", buckets=_TOKEN_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "qwen_embed_batch_duration_seconds", "Time of one engine call.", buckets=_LATENCY_BUCKETS, registry=r
        )

    # The scheduler's observer interface.
    def batch_done(self, *, kind: str, texts: int, tokens: int, seconds: float) -> None:
        if kind == "search":  # an index lookup, not a model call
            self.search_seconds.observe(seconds)
            return
        self.batch_texts.observe(texts)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)

    def queue_changed(self, *, jobs: int, inputs: int) -> None:
        self.queue_requests.set(jobs)
        self.queue_inputs.set(inputs)

    def inputs_dropped(self, *, kind: str, count: int) -> None:
        {"rerank": self.rerank_dropped, "search": self.search_dropped}.get(kind, self.dropped).inc(count)

    # The HTTP side.
    def request_done(self, path: str, status: int, seconds: float) -> None:
        label = path if path in ROUTES else "other"
        self.requests.labels(path=label, status=str(status)).inc()
        self.latency.labels(path=label).observe(seconds)

    def embedded(self, inputs: int, tokens: int) -> None:
        self.inputs.inc(inputs)
        self.tokens.inc(tokens)

    def reranked(self, documents: int, tokens: int) -> None:
        self.rerank_documents.inc(documents)
        self.rerank_tokens.inc(tokens)

    def searched(self, queries: int, tokens: int) -> None:
        self.search_queries.inc(queries)
        self.search_tokens.inc(tokens)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def value(self, name: str, labels: dict[str, Any] | None = None) -> float:
        """One sample's current value (0 when absent): for tests and the health answer."""
        found = self.registry.get_sample_value(name, labels or {})
        return 0.0 if found is None else float(found)
