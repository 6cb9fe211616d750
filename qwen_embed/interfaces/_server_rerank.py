"""``POST /v1/rerank`` (and ``/rerank``, ``/v2/rerank``): Qwen3-Reranker scores in the shapes llama-server, Jina
and Cohere use.

Request fields: ``query`` (a string), ``documents`` (non-empty strings or ``{"text": ...}``
objects), ``top_n`` (default: all), ``return_documents`` (default ``false``, Cohere's default;
llama-server never returns them, Jina defaults to ``true``), ``model`` (optional; a name of the
reranker) and one of ours, ``instruction`` (the task, default the reranker's). The answer, best first:

    {"object": "list", "model": "...", "results": [{"index": 2, "relevance_score": 0.93,
     "document": {"text": "..."}}, ...], "usage": {"prompt_tokens": 812, "total_tokens": 812}}

``POST /v2/rerank`` is Cohere's v2 API (what ``cohere.ClientV2(base_url=...).rerank`` calls): the
same request (Cohere's ``max_tokens_per_doc`` and ``priority`` are checked and otherwise unused:
each pair is cut to the reranker's ``max_length``, document first), answered as Cohere does:

    {"id": "<request id>", "results": [{"index": 2, "relevance_score": 0.93}, ...],
     "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 812},
              "tokens": {"input_tokens": 812, "output_tokens": 0}}}

``relevance_score`` is the official ``p(yes)`` in [0, 1]; the usage counts each pair's tokens
as the model reads them (prompt included, after truncation to the reranker's ``max_length``).
A query or instruction that alone fills ``max_length`` is a 400 naming it.

The request lifecycle is the server's one (:mod:`._server_route`): parsing and token counting on
a worker thread, scoring through the fair scheduler that embeddings use too, ``batch_texts``
documents per engine call, so concurrent requests of both models take turns and the documents of a
client that went away are never scored.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import InputTooLongError
from ..reranker import Reranker
from ._server_http import ClientGone, RequestError, check_model, check_unicode, json_kind, load_object, optional_text
from ._server_route import AppParts, ModelRoute, Plan, Tally
from ._server_scheduler import Rows

__all__ = ["RerankRequest", "RerankRoute", "RerankWork", "Shape", "count_tokens", "parse_rerank", "render_rerank"]

Shape = Literal["v1", "cohere-v2"]


@dataclass(frozen=True)
class RerankRequest:
    """A checked rerank request."""

    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool
    instruction: str | None


def parse_rerank(raw: bytes, *, aliases: frozenset[str], name: str, max_inputs: int) -> RerankRequest:
    """Decode and check the JSON body; every problem is a :class:`RequestError` naming the field."""
    body = load_object(raw)
    check_model(body, aliases=aliases, name=repr(name))
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        got = "missing" if query is None else "blank" if isinstance(query, str) else json_kind(query)
        raise RequestError(400, f"'query' must be a non-empty string (it is {got}).", param="query")
    check_unicode(query, "'query'", "query")
    documents = _documents(body.get("documents"), max_inputs)
    top_n = _positive(body, "top_n", "leave it out for all")
    _positive(body, "max_tokens_per_doc", "leave it out for the reranker's max_length")  # Cohere's; checked only
    _positive(body, "priority", "leave it out", low=0)  # Cohere's; checked only
    flag = body.get("return_documents", False)
    if not isinstance(flag, bool):
        raise RequestError(
            400, f"'return_documents' must be true or false, not {json.dumps(flag)}.", param="return_documents"
        )
    instruction = optional_text(body, "instruction")
    return RerankRequest(query, documents, top_n, flag, instruction)


def _positive(body: dict[str, Any], field: str, instead: str, *, low: int = 1) -> int | None:
    value = body.get(field)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        kind = "a positive integer" if low == 1 else f"an integer of at least {low}"
        raise RequestError(400, f"'{field}' must be {kind}, not {json.dumps(value)}; {instead}.", param=field)
    return value


def _documents(raw: object, max_inputs: int) -> list[str]:
    if not isinstance(raw, list) or not raw:
        got = "missing" if raw is None else "empty" if raw == [] else json_kind(raw)
        raise RequestError(
            400,
            f"'documents' must be a non-empty array of strings or {{\"text\": ...}} objects (it is {got}).",
            param="documents",
        )
    if len(raw) > max_inputs:
        raise RequestError(
            400,
            f"Too many documents: {len(raw):,} (at most {max_inputs:,} per request, --max-inputs); "
            "split them over several requests.",
            param="documents",
        )
    texts: list[str] = []
    for i, item in enumerate(raw):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            shown = f"an object whose 'text' is {json_kind(text)}" if isinstance(item, dict) else json_kind(item)
            raise RequestError(
                400, f'documents[{i}] is {shown}; send a string or {{"text": "..."}}.', param="documents"
            )
        if not text:
            raise RequestError(400, f"documents[{i}] is empty.", param="documents")
        check_unicode(text, f"documents[{i}]", "documents")
        texts.append(text)
    return texts


def count_tokens(reranker: Reranker, request: RerankRequest, *, stop: threading.Event, budget: int) -> list[int]:
    """Tokens of each of the request's pairs as the model reads them; over ``budget`` in all is a 400
    ``request_too_large``, a query or instruction that alone fills ``max_length`` a 400 naming it."""
    _check_head(reranker, request)
    costs: list[int] = []
    total = 0
    for i, document in enumerate(request.documents):
        if stop.is_set():
            raise ClientGone
        cost = len(reranker.tokenize(request.query, document, instruction=request.instruction))
        total += cost
        if total > budget:
            raise RequestError(
                400,
                f"The request has more than {budget:,} tokens (--max-request-tokens; reached at "
                f"documents[{i}]); split it over several requests.",
                param="documents",
                code="request_too_large",
            )
        costs.append(cost)
    return costs


def _check_head(reranker: Reranker, request: RerankRequest) -> None:
    """A 400 naming the query or the instruction when it alone leaves no room for a document."""
    try:
        reranker.tokenize(request.query, "", instruction=request.instruction)
    except InputTooLongError as error:
        what = error.param if error.param in ("query", "instruction") else "query"
        raise RequestError(
            400,
            f"The {what} alone fills the reranker's max_length ({reranker.max_length:,} tokens, prompt included), "
            "which leaves no room for a document. Shorten it.",
            param=what,
        ) from None


def render_rerank(
    request: RerankRequest, scores: np.ndarray, *, model: str, tokens: int, shape: Shape = "v1", request_id: str = ""
) -> bytes:
    """The answer as JSON bytes: best first (ties keep input order), cut to ``top_n``, in ``shape``."""
    order = np.argsort(-scores, kind="stable")[: request.top_n]
    results: list[dict[str, Any]] = []
    for i in order.tolist():
        entry: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
        if request.return_documents:
            entry["document"] = {"text": request.documents[i]}
        results.append(entry)
    answer: dict[str, Any]
    if shape == "cohere-v2":
        meta = {
            "api_version": {"version": "2"},
            "billed_units": {"input_tokens": tokens},
            "tokens": {"input_tokens": tokens, "output_tokens": 0},
        }
        answer = {"id": request_id, "results": results, "meta": meta}
    else:
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        answer = {"object": "list", "model": model, "results": results, "usage": usage}
    return json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()


class RerankWork:
    """One engine call of the reranker: documents scored for one query and instruction (equal ones share decodes)."""

    kind = "rerank"

    def __init__(self, reranker: Reranker, query: str, instruction: str | None) -> None:
        self.reranker, self.query, self.instruction = reranker, query, instruction

    def __call__(self, items: list[str]) -> np.ndarray:
        pairs = [(self.query, document) for document in items]
        return self.reranker.predict(pairs, instruction=self.instruction, show_progress=False)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RerankWork)
            and other.reranker is self.reranker
            and (other.query, other.instruction) == (self.query, self.instruction)
        )

    def __hash__(self) -> int:
        return hash((id(self.reranker), self.query, self.instruction))


class RerankRoute(ModelRoute[RerankRequest, Rows]):
    """A rerank route over ``reranker``, answering in ``shape`` (``"v1"``, or Cohere's ``"cohere-v2"``).

    Args:
        reranker: The model (scored on the scheduler's engine thread, tokenized on the workers).
        aliases: Every ``model`` value that names it.
        shape: The answer's shape.
        name: Its served name.
        parts: The app's shared parts.
        tally: Its request counts (shared by its routes).
    """

    verb = "rerank"
    long_input_param = "documents"

    def __init__(
        self,
        reranker: Reranker,
        *,
        aliases: frozenset[str],
        shape: Shape = "v1",
        name: str,
        parts: AppParts,
        tally: Tally,
    ) -> None:
        super().__init__(name=name, parts=parts, tally=tally)
        self.reranker, self.aliases, self.shape = reranker, aliases, shape

    def health(self) -> dict[str, Any]:
        """What ``/health`` reports about the reranker."""
        return {
            "model": self.name,
            "max_length": self.reranker.max_length,
            "requests": self.tally.requests,
            "documents": self.tally.inputs,
        }

    def plan(self, raw: bytes, stop: threading.Event) -> Plan[RerankRequest]:
        opts = self.options
        request = parse_rerank(raw, aliases=self.aliases, name=self.name, max_inputs=opts.max_inputs)
        costs = count_tokens(self.reranker, request, stop=stop, budget=opts.max_request_tokens)
        work = RerankWork(self.reranker, request.query, request.instruction)
        return Plan(request, request.documents, costs, work, sum(costs))

    async def execute(self, plan: Plan[RerankRequest], stop: threading.Event) -> Rows:
        return await self.submit(plan)

    def render(self, plan: Plan[RerankRequest], out: Rows, request_id: str) -> bytes:
        return render_rerank(
            plan.request, out.values, model=self.name, tokens=plan.tokens, shape=self.shape, request_id=request_id
        )

    def served(self, plan: Plan[RerankRequest], out: Rows) -> None:
        self.metrics.reranked(len(plan.items), plan.tokens)
