"""An OpenAI-compatible embedding server (``pip install "qwen-embed[server]"``; ``qwen-embed serve``).

``POST /v1/embeddings`` takes ``model``, ``input`` (a string or a list of strings),
``encoding_format`` (``float`` or ``base64``), ``dimensions`` (Matryoshka), and two
optional fields of ours: ``prompt_name`` (``"query"``, ``"document"``, any registered
prompt) and ``instruction`` (a task in the official query format). Without them the
inputs are embedded as given, as a document would be. Started with a reranker,
``POST /v1/rerank`` scores documents for a query (:mod:`._server_rerank`); the server may
serve the reranker alone. ``GET /v1/models``, ``GET /health`` and ``GET /metrics``
(Prometheus) answer too. Errors come back in OpenAI's shape.

The event loop only moves bytes: parsing, token counting and JSON rendering run on worker
threads, and the engine runs on a thread of its own, fed fairly by the scheduler
(:mod:`._server_scheduler`): large requests are cut into sub-batches that take turns with
other requests, concurrent small requests share decodes, and the remaining work of a
client that disconnects is dropped.

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="EMPTY")
    client.embeddings.create(model="Qwen3-Embedding-0.6B", input=["What is GGUF?"])
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from .. import _config
from ..embedder import Embedder
from ..errors import ConfigurationError, EmbedderClosedError, InputTooLongError, QwenEmbedError
from ._server_guard import Observe, RequireKey, allowed_host_names, is_loopback
from ._server_http import (
    ClientGone,
    Parsed,
    RequestError,
    check_content_type,
    error_body,
    parse_request,
    race,
    read_body,
    render_embeddings,
    wait_disconnect,
)
from ._server_metrics import Metrics
from ._server_rerank import RerankRoute
from ._server_run import build_server, logging_config
from ._server_scheduler import Key, Scheduler

if TYPE_CHECKING:
    from ..reranker import Reranker

__all__ = ["ENV_API_KEY", "ServerOptions", "create_app", "default_model_name", "serve"]

logger = logging.getLogger("qwen_embed.server")

T = TypeVar("T")

#: The environment variable ``qwen-embed serve`` reads the API key from when ``--api-key`` is not given.
ENV_API_KEY = "QWEN_EMBED_API_KEY"

#: Paths answered without the API key.
OPEN_PATHS = frozenset({"/health"})


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """How the server answers; ``qwen-embed serve`` sets these from its flags.

    Args:
        model_name: Name clients send as ``model`` (default: the file name without the quant).
        reranker_name: The reranker's name, likewise.
        host: The address served; with ``allowed_hosts`` it makes the names the Host check accepts.
        max_inputs: Most inputs in one request.
        max_request_tokens: Most tokens (prompt and EOS included) in one request, all inputs together.
        max_body_bytes: Largest request body (413 above it).
        body_timeout: Seconds a client has to send the whole body (408 after).
        api_key: Required as ``Authorization: Bearer KEY`` on every path but ``/health``; ``None``: open.
        cors_origins: Origins browsers may call from (``"*"`` for any); empty: no CORS headers at all.
        allowed_hosts: More names accepted in the ``Host`` header (``"*"`` accepts any).
        check_host: Refuse requests whose ``Host`` is not a name of this server (DNS rebinding guard).
        batch_texts: Most texts in one engine call (requests are cut into sub-batches of this size).
        batch_tokens: Most tokens in one engine call (a longer single text runs alone).
        batch_wait: Seconds the idle engine waits for concurrent requests to share its first call.
        workers: Threads that parse requests, count tokens and render answers.
    """

    model_name: str | None = None
    reranker_name: str | None = None
    host: str = "127.0.0.1"
    max_inputs: int = 2048
    max_request_tokens: int = 1_000_000
    max_body_bytes: int = 32 * 2**20
    body_timeout: float = 60.0
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    check_host: bool = True
    batch_texts: int = _config.DEFAULT_BATCH_SIZE
    batch_tokens: int = _config.DEFAULT_BATCH_TOKENS
    batch_wait: float = 0.005
    workers: int = 4

    def __post_init__(self) -> None:
        for name in ("max_inputs", "max_request_tokens", "max_body_bytes", "batch_texts", "batch_tokens", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"ServerOptions.{name} must be a positive int, not {value!r}")
        for name in ("body_timeout", "batch_wait"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigurationError(f"ServerOptions.{name} must be a number of seconds >= 0, not {value!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigurationError("the API key is empty; pass a non-empty key or none at all")
        for name in ("cors_origins", "allowed_hosts"):
            if isinstance(getattr(self, name), str):
                raise ConfigurationError(f"ServerOptions.{name} is a tuple of strings, not one string")


@dataclass
class _Counts:
    requests: int = 0
    texts: int = 0


class _ModelFile(Protocol):
    @property
    def model_path(self) -> Path: ...

    @property
    def quantization(self) -> str: ...


def default_model_name(model: _ModelFile) -> str:
    """``Qwen3-Embedding-0.6B`` for ``Qwen3-Embedding-0.6B-Q8_0.gguf``: the file name without the quant."""
    stem = model.model_path.name.removesuffix(".gguf")
    quant = model.quantization
    for suffix in (f"-{quant}", f"-{quant.lower()}", f".{quant}"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def create_app(
    embedder: Embedder | None, options: ServerOptions | None = None, *, reranker: Reranker | None = None
) -> Any:
    """The ASGI app (Starlette) serving ``embedder``, ``reranker``, or both.

    ``app.state.metrics`` holds its Prometheus metrics and ``app.state.scheduler`` its
    engine scheduler (``None`` without an embedder). The app owns its thread pools (the
    workers, the embedder's engine thread, the reranker's), started and stopped by its lifespan.

    Raises:
        ConfigurationError: No model at all, or both models under one name.
    """
    try:
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.middleware.cors import CORSMiddleware
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route
    except ImportError as error:
        raise ConfigurationError('The server needs its extra: pip install "qwen-embed[server]"') from error

    if embedder is None and reranker is None:
        raise ConfigurationError("create_app needs a model: an Embedder, a reranker=Reranker, or both")
    opts = options or ServerOptions()
    name = (opts.model_name or default_model_name(embedder)) if embedder is not None else ""
    aliases = {name, embedder.model_path.name, embedder.model_path.name.removesuffix(".gguf")} if embedder else set()
    metrics = Metrics()
    counts = _Counts()
    scheduler = None
    if embedder is not None:
        scheduler = Scheduler(
            functools.partial(_encode, embedder),
            max_texts=opts.batch_texts,
            max_tokens=opts.batch_tokens,
            wait=opts.batch_wait,
            observer=metrics,
        )
    pool = ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="qwen-embed-http")

    async def offload(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args, **kwargs))

    def failure(bad: RequestError) -> Response:
        body = error_body(bad.status, bad.message, param=bad.param, code=bad.code)
        return Response(body, status_code=bad.status, media_type="application/json", headers=bad.headers)

    rerank = None
    if reranker is not None:
        reranker_name = opts.reranker_name or default_model_name(reranker)
        if reranker_name == name:
            raise ConfigurationError(
                f"The embedding model and the reranker are both named {name!r}; give them different names "
                "(--served-model-name, --served-reranker-name)."
            )
        rerank = RerankRoute(
            reranker, name=reranker_name, options=opts, metrics=metrics, offload=offload, failure=failure
        )

    def prepare(raw: bytes, stop: threading.Event) -> tuple[Parsed, list[int]]:
        assert embedder is not None
        parsed = parse_request(raw, aliases=aliases, name=name, max_inputs=opts.max_inputs)
        return parsed, _costs(embedder, parsed, stop=stop, budget=opts.max_request_tokens)

    def absent(what: str, instead: str) -> Response:
        return failure(RequestError(404, f"This server has no {what}; {instead}", code="model_not_found"))

    async def reranking(request: Request) -> Response:
        if rerank is None:
            return absent("reranker", "start it with --reranker MODEL (qwen-embed serve) to serve POST /v1/rerank.")
        response: Response = await rerank(request)
        return response

    async def embeddings(request: Request) -> Response:
        if scheduler is None:
            assert rerank is not None
            return absent(
                "embedding model (it was started with --no-embedder)",
                f"it serves the reranker {rerank.name!r} at POST /v1/rerank.",
            )
        state = request.scope["state"]
        counts.requests += 1
        try:
            check_content_type(request.headers.get("content-type"))
            raw = await read_body(
                request.receive,
                content_length=request.headers.get("content-length"),
                limit=opts.max_body_bytes,
                timeout=opts.body_timeout,
            )
            stop = threading.Event()
            watcher = asyncio.ensure_future(wait_disconnect(request.receive))
            try:
                parsed, costs = await race(offload(prepare, raw, stop), watcher)
                del raw
                vectors = await race(scheduler.submit(parsed.texts, costs, parsed.key), watcher)
                tokens = sum(costs)
                payload = await race(
                    offload(render_embeddings, vectors, encoding=parsed.encoding, model=name, tokens=tokens), watcher
                )
            finally:
                stop.set()
                watcher.cancel()
        except ClientGone:
            logger.info("client of request %s went away; its remaining work was dropped", state.get("request_id"))
            return Response(status_code=499)
        except RequestError as bad:
            return failure(bad)
        except EmbedderClosedError:
            return failure(RequestError(503, "The server is shutting down.", code="shutting_down"))
        except QwenEmbedError as bad:
            if isinstance(bad, ValueError | TypeError):
                param = "input" if isinstance(bad, InputTooLongError) else None
                return failure(RequestError(400, str(bad), param=param))
            logger.exception("request %s: the engine failed", state.get("request_id"))
            return failure(
                RequestError(
                    500,
                    f"The server could not embed this request (request "
                    f"{state.get('request_id')}); its log has the details.",
                )
            )
        counts.texts += len(parsed.texts)
        metrics.embedded(len(parsed.texts), tokens)
        state["inputs"], state["tokens"] = len(parsed.texts), tokens
        return Response(payload, media_type="application/json")

    served = [n for n in (name, rerank.name if rerank else "") if n]

    async def models(request: Request) -> JSONResponse:
        cards = [{"id": n, "object": "model", "created": 0, "owned_by": "qwen_embed"} for n in served]
        return JSONResponse({"object": "list", "data": cards})

    async def health(request: Request) -> JSONResponse:
        answer: dict[str, Any] = {"status": "ok"}
        if embedder is not None and scheduler is not None:
            answer.update(
                model=name,
                dim=embedder.dim,
                requests=counts.requests,
                batches=scheduler.batches,
                texts=counts.texts,
            )
        if rerank is not None:
            answer["reranker"] = rerank.health()
        return JSONResponse(answer)

    async def prometheus(request: Request) -> Response:
        body, content_type = await offload(metrics.render)
        return Response(body, headers={"Content-Type": content_type})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = int(getattr(exc, "status_code", 500))
        headers = dict(getattr(exc, "headers", None) or {})
        if status == 404:
            routes = " and ".join(
                r for r, on in (("POST /v1/embeddings", scheduler), ("POST /v1/rerank", rerank)) if on
            )
            message = f"No route {request.method} {request.url.path}; this server has {routes}."
        elif status == 405:
            allowed = headers.get("Allow", "")
            message = f"{request.method} is not allowed on {request.url.path}; use {allowed}."
        else:
            message = str(getattr(exc, "detail", "")) or "Bad request."
        return failure(RequestError(status, message, headers=headers))

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if scheduler is not None:
            scheduler.start()
        try:
            yield
        finally:
            if scheduler is not None:
                await scheduler.stop()
            if rerank is not None:
                await rerank.stop()
            pool.shutdown(wait=False, cancel_futures=True)

    middleware = [
        Middleware(
            Observe,
            metrics=metrics,  # type: ignore[arg-type]
            allowed_hosts=allowed_host_names(opts.host, opts.allowed_hosts) if opts.check_host else None,
        ),
    ]
    if opts.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(opts.cors_origins),
                allow_methods=["GET", "POST"],  # type: ignore[arg-type]
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    if opts.api_key is not None:
        middleware.append(Middleware(RequireKey, key=opts.api_key, open_paths=OPEN_PATHS))  # type: ignore[arg-type]
    from starlette.exceptions import HTTPException

    app = Starlette(
        routes=[
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/embeddings", embeddings, methods=["POST"]),
            Route("/v1/rerank", reranking, methods=["POST"]),
            Route("/rerank", reranking, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        middleware=middleware,
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.scheduler = scheduler
    app.state.model_name = name or None
    app.state.reranker_name = rerank.name if rerank else None
    app.state.options = opts
    return app


def _costs(embedder: Embedder, parsed: Parsed, *, stop: threading.Event, budget: int) -> list[int]:
    """Tokens each input costs the engine (prompt and EOS included); checks the per-text and per-request limits."""
    prompt_name, instruction, dim = parsed.key
    if dim is not None:
        low = min(_config.MIN_DIM, embedder.native_dim)
        if not low <= dim <= embedder.native_dim:
            raise RequestError(
                400, f"'dimensions' is {dim}; this model gives {low} to {embedder.native_dim}.", param="dimensions"
            )
    if prompt_name in ("document", "passage"):
        prompt_name = None  # retrieval documents carry no instruction
    limit, policy = embedder.max_length, embedder.long_text
    costs: list[int] = []
    total = 0
    for i, text in enumerate(parsed.texts):
        if stop.is_set():
            raise ClientGone
        n = embedder.count_tokens(text, prompt_name=prompt_name, instruction=instruction)
        if n > limit and policy == "error":
            raise InputTooLongError(
                f"input[{i}] is {n:,} tokens (prompt and EOS included); the limit is {limit:,}. Shorten it, or "
                "start the server with --long-text truncate or --long-text chunk.",
                index=i,
                n_tokens=n,
                limit=limit,
            )
        cost = min(n, limit) if policy == "truncate" else n
        total += cost
        if total > budget:
            raise RequestError(
                400,
                f"The request has more than {budget:,} tokens (--max-request-tokens; "
                f"reached at input[{i}]); split it over several requests.",
                param="input",
                code="request_too_large",
            )
        costs.append(cost)
    return costs


def _encode(embedder: Embedder, texts: list[str], key: Key) -> np.ndarray:
    """One engine call (on the scheduler's engine thread)."""
    prompt_name, instruction, dim = key
    if instruction is not None:
        return embedder.encode(texts, instruction=instruction, dim=dim)
    if prompt_name == "query":
        return embedder.encode_queries(texts, dim=dim)
    if prompt_name in ("document", "passage"):
        return embedder.encode_documents(texts, dim=dim)
    return embedder.encode(texts, prompt_name=prompt_name, dim=dim)


def serve(
    embedder: Embedder | None,
    options: ServerOptions | None = None,
    *,
    reranker: Reranker | None = None,
    port: int = 8000,
    sock: socket.socket | None = None,
    log_level: str = "info",
    access_log: bool = True,
    keep_alive_timeout: float = 5.0,
    header_timeout: float = 10.0,
    shutdown_timeout: float = 30.0,
    configure_logging: bool = True,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the server until interrupted (uvicorn; SIGINT/SIGTERM drain for up to ``shutdown_timeout`` s).

    Args:
        embedder: The embedding model to serve (used from several threads); ``None``: only the reranker.
        options: What the app answers and how (``ServerOptions.host`` is the address bound).
        reranker: A reranker to serve at ``POST /v1/rerank``.
        port: Port to bind (0: a free one; ``on_ready`` gets the URL).
        sock: A bound socket to serve on instead of ``host``/``port``.
        log_level: ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
        access_log: One log line per request (status, time, inputs, tokens).
        keep_alive_timeout: Seconds an idle keep-alive connection stays open.
        header_timeout: Seconds a client has to send a request's line and headers (408 after).
        shutdown_timeout: Seconds a shutdown waits for requests in flight before cancelling them.
        configure_logging: Send the server's logs to stderr (off: leave logging as the caller set it).
        on_ready: Called with the served URL once the port is bound.
    """
    opts = options or ServerOptions()
    config = logging_config(log_level, access_log=access_log) if configure_logging else None
    app = create_app(embedder, opts, reranker=reranker)
    server = build_server(
        app,
        host=opts.host,
        port=port,
        keep_alive_timeout=keep_alive_timeout,
        header_timeout=header_timeout,
        shutdown_timeout=shutdown_timeout,
        log_config=config,
        on_ready=on_ready,
    )
    if not is_loopback(opts.host) and opts.api_key is None:
        logger.warning(
            "serving on %s without an API key: anyone who can reach this port can use the server. "
            "Pass --api-key (or set QWEN_EMBED_API_KEY) to require one.",
            opts.host,
        )
    # Workers that render or tokenize hold the GIL in short slices; a 1 ms switch interval (5 ms by
    # default) lets the event loop get it back sooner, which is what keeps /health and small requests quick.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, 0.001))
    try:
        server.run(sockets=[sock] if sock is not None else None)
    finally:
        sys.setswitchinterval(interval)
