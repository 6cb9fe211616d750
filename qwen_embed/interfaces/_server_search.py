"""``POST /v1/search`` (and ``/search``): a search index served beside the embedding model (``serve --index``).

The request: ``query`` (a string) or ``queries`` (a list of strings), and optionally

* ``top_k``: results per query (default 10);
* ``rerank``: ``true``, ``false``, or how many vector-search candidates the reranker scores per
  query (``rerank_top``, also accepted under that name); default: rerank the best 50 when the
  server has a reranker and the index keeps texts, as :meth:`Retriever.search
  <qwen_embed.search.Retriever.search>` does;
* ``task`` or ``instruction``: how the queries are embedded. By default they are embedded as
  the index records (its ``query_task`` or ``query_instruction``). Another prompt is taken only
  where the index allows it: when its documents were embedded bare (the official retrieval
  recipe, where the query instruction is the caller's choice); an index of instructed documents
  (a symmetric task) takes only the query prompt it records, and any other is a 400 saying so;
* ``return_receipts``: each result gets its query's :class:`~qwen_embed.Receipt`;
* ``model``: optional, a name of the embedding model.

The answer, one entry per query, best hit first::

    {"object": "list", "model": "...", "data": [{"object": "search_result", "index": 0,
     "query": "...", "hits": [{"id": "doc-17", "score": 0.93, "vector_score": 0.61,
     "rerank_score": 0.93, "text": "...", "metadata": {...}}]}], "reranker": "...",
     "usage": {"prompt_tokens": 812, "total_tokens": 812}}

``score`` is the reranker's ``p(yes)`` when it reranked (``rerank_score``), else the vector
similarity (``vector_score``); ``text`` and ``metadata`` are there when the index keeps them;
``reranker`` names the reranker when it reranked; ``usage`` counts the queries' tokens and,
when reranked, each (query, document) pair's.

Every stage goes through the fair scheduler (:mod:`._server_scheduler`), never the event loop:
the queries are embedded on the embedding model's lane (sharing decodes with ``/v1/embeddings``
requests of the same prompt), looked up on the index's own lane (``batch_texts`` queries per
call), and their candidates scored on the reranker's lane; token counting and rendering run on
the worker threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..calls import EncodeCall, Side
from ..embedder import Embedder
from ..errors import InputTooLongError, QwenEmbedError
from ..reranker import Reranker
from ._server_embeddings import EmbedWork, input_costs, optional_flag, render_receipt
from ._server_http import ClientGone, RequestError, check_model, check_unicode, json_kind, load_object, optional_text
from ._server_options import QUERY_SUFFIX
from ._server_rerank import RerankWork
from ._server_route import AppParts, ModelRoute, Plan, Tally
from ._server_scheduler import Rows

if TYPE_CHECKING:
    from ..search import Hit, SearchIndex

__all__ = [
    "DEFAULT_RERANK_TOP",
    "DEFAULT_TOP_K",
    "SearchOutcome",
    "SearchRequest",
    "SearchRoute",
    "SearchWork",
    "index_query_call",
    "parse_search",
    "render_search",
]

logger = logging.getLogger("qwen_embed.server")

#: Results per query when the request says none (as :meth:`Retriever.search <qwen_embed.search.Retriever.search>`).
DEFAULT_TOP_K = 10
#: Candidates the reranker scores per query with ``"rerank": true`` (as ``Retriever.search``).
DEFAULT_RERANK_TOP = 50


@dataclass(frozen=True)
class SearchRequest:
    """A parsed ``/v1/search`` request (its prompt not yet checked against the index).

    Attributes:
        queries: The queries.
        field: The field they came in (``"query"`` or ``"queries"``; what errors name).
        top_k: Results per query.
        rerank_top: Candidates the reranker scores per query; ``None``: no reranking.
        task: The ``task`` asked for, if any.
        instruction: The ``instruction`` asked for, if any (wins over ``task``).
        receipts: Whether each result gets its query's receipt.
        model: The name to answer with.
    """

    queries: list[str]
    field: str
    top_k: int
    rerank_top: int | None
    task: str | None
    instruction: str | None
    receipts: bool
    model: str


@dataclass(frozen=True)
class SearchOutcome:
    """What the engines made of a search: the hits per query, the queries' receipts, the rerank tokens."""

    hits: list[list[Hit]]
    receipts: list[Any]
    reranked: bool = False
    rerank_documents: int = 0
    rerank_tokens: int = 0


def parse_search(
    raw: bytes,
    *,
    names: Mapping[str, Side | None],
    name: str,
    max_inputs: int,
    rerank_default: bool,
    rerank_refusal: str | None,
) -> SearchRequest:
    """Decode and check the JSON body; every problem is a :class:`RequestError` naming the field.

    Args:
        raw: The body.
        names: Every accepted ``model`` value (the embedding model's names).
        name: The served name (the answer's ``model`` when the request names none).
        max_inputs: Most queries per request; also the most results per query, and the most
            documents reranked per request (queries times candidates).
        rerank_default: Whether a request that says nothing about reranking is reranked.
        rerank_refusal: Why this server cannot rerank (``None``: it can).
    """
    body = load_object(raw)
    model = check_model(body, aliases=names, name=f"{name!r} (and {name + QUERY_SUFFIX!r})")
    queries, field = _queries(body, max_inputs)
    top_k = _count(body, "top_k", max_inputs, "results per query")
    rerank_top = _rerank_top(body, max_inputs, rerank_default, rerank_refusal)
    if rerank_top is not None:
        documents = len(queries) * max(rerank_top, top_k or DEFAULT_TOP_K)
        if documents > max_inputs:
            raise RequestError(
                400,
                f"Reranking {max(rerank_top, top_k or DEFAULT_TOP_K):,} candidates for each of {len(queries):,} "
                f"queries is {documents:,} documents; at most {max_inputs:,} per request (--max-inputs). "
                "Send fewer queries per request, or a smaller 'rerank'.",
                param="rerank",
            )
    task, instruction = optional_text(body, "task"), optional_text(body, "instruction")
    receipts = optional_flag(body, "return_receipts", default=False)
    return SearchRequest(queries, field, top_k or DEFAULT_TOP_K, rerank_top, task, instruction, receipts, model or name)


def _queries(body: Mapping[str, Any], max_inputs: int) -> tuple[list[str], str]:
    one, many = body.get("query"), body.get("queries")
    if one is not None and many is not None:
        raise RequestError(400, "Send 'query' (one string) or 'queries' (a list), not both.", param="queries")
    if one is None and many is None:
        raise RequestError(400, "'query' (a string) or 'queries' (a list of strings) is required.", param="query")
    if one is not None:
        if not isinstance(one, str) or not one.strip():
            got = "blank" if isinstance(one, str) else json_kind(one)
            raise RequestError(400, f"'query' must be a non-empty string (it is {got}).", param="query")
        check_unicode(one, "'query'", "query")
        return [one], "query"
    if not isinstance(many, list) or not many:
        got = "empty" if many == [] else json_kind(many)
        raise RequestError(400, f"'queries' must be a non-empty array of strings (it is {got}).", param="queries")
    if len(many) > max_inputs:
        raise RequestError(
            400,
            f"Too many queries: {len(many):,} (at most {max_inputs:,} per request, --max-inputs); "
            "split them over several requests.",
            param="queries",
        )
    for i, text in enumerate(many):
        if not isinstance(text, str) or not text.strip():
            got = "blank" if isinstance(text, str) else json_kind(text)
            raise RequestError(400, f"queries[{i}] must be a non-empty string (it is {got}).", param="queries")
        check_unicode(text, f"queries[{i}]", "queries")
    return list(many), "queries"


def _count(body: Mapping[str, Any], field: str, most: int, what: str) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise RequestError(
            400, f"'{field}' must be an integer from 1 to {most:,} ({what}; --max-inputs), not {json.dumps(value)}.",
            param=field,
        )  # fmt: skip
    return value


def _rerank_top(body: Mapping[str, Any], most: int, default: bool, refusal: str | None) -> int | None:
    """Candidates reranked per query (``None``: no reranking) from ``rerank`` and ``rerank_top``."""
    flag, top = body.get("rerank"), _count(body, "rerank_top", most, "candidates reranked per query")
    if flag is not None and not isinstance(flag, bool):
        top_given = top
        top = _count(body, "rerank", most, "true, false, or the candidates reranked per query")
        if top_given is not None and top_given != top:
            raise RequestError(
                400, f"'rerank' ({top}) and 'rerank_top' ({top_given}) say different things; send one.", param="rerank"
            )
        flag = True
    if flag is False:
        if top is not None:
            raise RequestError(400, "'rerank' is false but 'rerank_top' is given; send one.", param="rerank")
        return None
    wanted = flag is True or top is not None
    if wanted and refusal is not None:
        raise RequestError(400, refusal, param="rerank")
    if not wanted and (not default or refusal is not None):
        return None
    return top if top is not None else DEFAULT_RERANK_TOP


def index_query_call(index: SearchIndex) -> EncodeCall:
    """The encode call that embeds a query as ``index`` records (what :class:`~qwen_embed.search.Retriever` uses)."""
    recipe = index.recipe
    assert recipe is not None
    if recipe.query_instruction is not None:
        return EncodeCall(instruction=recipe.query_instruction)
    return EncodeCall(side="query", task=recipe.query_task)


def render_search(
    request: SearchRequest, outcome: SearchOutcome, *, model: str, reranker: str | None, tokens: int
) -> bytes:
    """The ``/v1/search`` answer as JSON bytes (see the module docstring)."""
    parts: list[str] = []
    for i, (query, hits) in enumerate(zip(request.queries, outcome.hits)):
        shown = ",".join(_render_hit(hit) for hit in hits)
        receipt = ',"receipt":' + render_receipt(outcome.receipts[i]) if request.receipts else ""
        parts.append(
            f'{{"object":"search_result","index":{i},"query":{json.dumps(query, ensure_ascii=False)},'
            f'"hits":[{shown}]{receipt}}}'
        )
    named = f',"reranker":{json.dumps(reranker)}' if outcome.reranked and reranker is not None else ""
    usage = json.dumps({"prompt_tokens": tokens, "total_tokens": tokens})
    return f'{{"object":"list","model":{json.dumps(model)},"data":[{",".join(parts)}]{named},"usage":{usage}}}'.encode()


def _render_hit(hit: Hit) -> str:
    entry: dict[str, Any] = {"id": hit.id, "score": hit.score, "vector_score": hit.vector_score}
    if hit.rerank_score is not None:
        entry["rerank_score"] = hit.rerank_score
    if hit.text is not None:
        entry["text"] = hit.text
    if hit.metadata is not None:
        entry["metadata"] = hit.metadata
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


class SearchWork:
    """One lookup of query vectors in the index, on its lane (equal lookups share a call).

    Each item is a query vector; each row of the answer (an object array) is that query's hits.
    """

    kind = "search"

    def __init__(self, index: SearchIndex, k: int) -> None:
        self.index, self.k = index, k

    def __call__(self, items: list[np.ndarray]) -> np.ndarray:
        found = self.index.search(np.stack(items), self.k)
        out = np.empty(len(found), dtype=object)
        for i, hits in enumerate(found):
            out[i] = hits
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchWork) and other.index is self.index and other.k == self.k

    def __hash__(self) -> int:
        return hash((id(self.index), self.k))


class SearchRoute(ModelRoute[SearchRequest, SearchOutcome]):
    """``POST /v1/search`` over ``index`` (see the module docstring).

    Args:
        embedder: The embedding model; its settings match the index's recipe (checked by the app).
        index: The index, open.
        reranker: The reranker that reranks candidates by default (``None``: none served).
        names: Every ``model`` value of the embedding model.
        name: The embedding model's served name.
        reranker_name: The reranker's served name.
        parts: The app's shared parts.
        tally: The index's request counts.
    """

    verb = "search"
    long_input_param = "queries"

    def __init__(
        self,
        embedder: Embedder,
        index: SearchIndex,
        *,
        reranker: Reranker | None,
        names: Mapping[str, Side | None],
        name: str,
        reranker_name: str | None,
        parts: AppParts,
        tally: Tally,
    ) -> None:
        super().__init__(name=name, parts=parts, tally=tally)
        self.embedder, self.index, self.reranker = embedder, index, reranker
        self.names, self.reranker_name = names, reranker_name
        self.call = index_query_call(index)
        recipe = index.recipe
        assert recipe is not None
        self.recipe = recipe
        self.rerank_refusal = (
            "This server has no reranker; start it with --reranker MODEL (qwen-embed serve) to rerank search results."
            if reranker is None
            else f"The index {index.path} keeps no texts, so the reranker cannot score its rows; rebuild it with "
            "texts (qwen-embed index DIR), or send \"rerank\": false."
            if not index.stores_documents
            else None
        )  # fmt: skip
        self.queries = 0

    def health(self) -> dict[str, Any]:
        """What ``/health`` reports about the index."""
        return {
            "index": str(self.index.path),
            "rows": len(self.index),
            "dim": self.index.dim,
            "precision": self.index.precision,
            "reranks": self.rerank_refusal is None,
            "requests": self.tally.requests,
            "queries": self.tally.inputs,
        }

    def plan(self, raw: bytes, stop: threading.Event) -> Plan[SearchRequest]:
        opts = self.options
        request = parse_search(
            raw, names=self.names, name=self.name, max_inputs=opts.max_inputs,
            rerank_default=self.reranker is not None, rerank_refusal=self.rerank_refusal,
        )  # fmt: skip
        call, field = self._query_call(request)
        costs = input_costs(
            self.embedder, call, request.queries, stop=stop, budget=opts.max_request_tokens, prompt_field=field,
            inputs=request.field,
        )  # fmt: skip
        if request.rerank_top is not None:
            self._check_rerank_head(request)
        return Plan(request, request.queries, costs, EmbedWork(self.embedder, call), sum(costs))

    def _query_call(self, request: SearchRequest) -> tuple[EncodeCall, str | None]:
        """The call that embeds the queries, and the field that chose it: the index's, or the one asked for when
        the index allows it (a 400 saying why otherwise)."""
        if request.instruction is None and request.task is None:
            return self.call, None
        from ..search.recipe import embedder_query_prompt

        field = "instruction" if request.instruction is not None else "task"
        call = (
            EncodeCall(instruction=request.instruction)
            if request.instruction is not None
            else EncodeCall(side="query", task=request.task)
        )
        try:
            prompt = embedder_query_prompt(self.embedder, request.task, request.instruction)
        except QwenEmbedError as error:
            raise RequestError(400, str(error), param=field) from None
        recipe = self.recipe
        if prompt != recipe.query_prompt and tuple(recipe.document_prompt) != ("", ""):
            recorded = (
                f"instruction {recipe.query_instruction!r}"
                if recipe.query_instruction is not None
                else f"task {recipe.query_task!r}"
            )
            raise RequestError(
                400,
                f"This index's documents were embedded with the prompt {tuple(recipe.document_prompt)!r}, so its "
                f"queries must be embedded as it records ({recorded}: {tuple(recipe.query_prompt)!r}); the "
                f"'{field}' asked for gives {prompt!r}. Leave '{field}' out, or rebuild the index for that task.",
                param=field,
            )
        return call, field

    def _check_rerank_head(self, request: SearchRequest) -> None:
        """A 400 naming the query when it alone leaves the reranker no room for a document."""
        assert self.reranker is not None
        for i, query in enumerate(request.queries):
            try:
                self.reranker.tokenize(query, "")
            except InputTooLongError:
                where = "'query'" if request.field == "query" else f"queries[{i}]"
                raise RequestError(
                    400,
                    f"{where} alone fills the reranker's max_length ({self.reranker.max_length:,} tokens, prompt "
                    'included), which leaves no room for a document. Shorten it, or send "rerank": false.',
                    param=request.field,
                ) from None

    async def execute(self, plan: Plan[SearchRequest], stop: threading.Event) -> SearchOutcome:
        request = plan.request
        embedded = await self.submit(plan)
        depth = max(request.top_k, request.rerank_top) if request.rerank_top is not None else request.top_k
        vectors = list(embedded.values)
        found = await self.scheduler.submit(vectors, [1] * len(vectors), SearchWork(self.index, depth))
        candidates: list[list[Hit]] = list(found.values)
        if request.rerank_top is None:
            return SearchOutcome([hits[: request.top_k] for hits in candidates], embedded.receipts)
        budget = self.options.max_request_tokens - plan.tokens
        costs = await self.offload(self._rerank_costs, request, candidates, stop, budget)
        assert self.reranker is not None
        scored = await _all(
            self.scheduler.submit([hit.text or "" for hit in hits], cost, RerankWork(self.reranker, query, None))
            for query, hits, cost in zip(request.queries, candidates, costs)
            if hits
        )
        answers: list[list[Hit]] = []
        rows = iter(scored)
        for hits in candidates:
            answers.append(_reranked(hits, next(rows), request.top_k) if hits else [])
        return SearchOutcome(answers, embedded.receipts, True, sum(map(len, costs)), sum(sum(cost) for cost in costs))

    def _rerank_costs(
        self, request: SearchRequest, candidates: list[list[Hit]], stop: threading.Event, budget: int
    ) -> list[list[int]]:
        """Tokens of each (query, candidate) pair as the reranker reads them; the request's token budget checked."""
        assert self.reranker is not None
        costs: list[list[int]] = []
        total = 0
        for query, hits in zip(request.queries, candidates):
            mine: list[int] = []
            for hit in hits:
                if stop.is_set():
                    raise ClientGone
                if hit.text is None:
                    raise RequestError(
                        400, f"The row {hit.id!r} keeps no text, so the reranker cannot score it; send \"rerank\": "
                        "false.", param="rerank",
                    )  # fmt: skip
                cost = len(self.reranker.tokenize(query, hit.text))
                mine.append(cost)
                total += cost
                if total > budget:
                    raise RequestError(
                        400,
                        f"The request has more than {self.options.max_request_tokens:,} tokens with its reranked "
                        "candidates (--max-request-tokens); send fewer queries or a smaller 'rerank'.",
                        param="rerank",
                        code="request_too_large",
                    )
            costs.append(mine)
        return costs

    def render(self, plan: Plan[SearchRequest], out: SearchOutcome, request_id: str) -> bytes:
        request = plan.request
        return render_search(
            request, out, model=request.model, reranker=self.reranker_name, tokens=self.usage(plan, out)
        )

    def usage(self, plan: Plan[SearchRequest], out: SearchOutcome) -> int:
        return plan.tokens + out.rerank_tokens

    def served(self, plan: Plan[SearchRequest], out: SearchOutcome) -> None:
        self.metrics.searched(len(plan.items), plan.tokens)
        if out.reranked:
            self.metrics.reranked(out.rerank_documents, out.rerank_tokens)


def _reranked(hits: Sequence[Hit], rows: Rows, k: int) -> list[Hit]:
    """The ``k`` hits the reranker scores highest (ties keep the vector order), as ``Retriever.search`` gives them."""
    scores = rows.values
    order = np.argsort(-scores, kind="stable")[:k]
    return [
        dataclasses.replace(hits[i], score=float(scores[i]), vector_score=hits[i].score, rerank_score=float(scores[i]))
        for i in order.tolist()
    ]


async def _all(calls: Iterable[Coroutine[Any, Any, Rows]]) -> list[Rows]:
    """Await every scheduler call together; the first failure cancels the others (their work is dropped)."""
    tasks: list[asyncio.Future[Rows]] = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
