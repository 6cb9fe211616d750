"""``POST /v1/rerank`` (and ``/rerank``, ``/v2/rerank``): Qwen3-Reranker scores in the shapes llama-server, Jina
and Cohere use.

Request fields: ``query`` (a string), ``documents`` (non-empty strings or ``{"text": ...}``
objects), ``top_n`` (default: all), ``return_documents`` (default ``false``, Cohere's default;
llama-server never returns them, Jina defaults to ``true``), ``model`` (optional; a name of the
reranker) and ours, the fields of :class:`~qwen_embed.RerankCall`:

* ``instruction``: the task (default the reranker's);
* ``long_text``: what a pair over the reranker's ``max_length`` becomes: ``"truncate"`` (the
  default, the official recipe: the document's end is cut, and the result says so),
  ``"chunk"`` (the document is scored in token-exact windows, each with the whole prompt,
  instruction and query; the result gets the best window's character ``span``) or ``"error"``
  (a 400 naming ``documents[i]``);
* ``aggregate``: with ``"chunk"``, how the window scores make the document's: ``"max"``
  (default), ``"mean"`` or ``"first"``;
* ``overlap``: with ``"chunk"``, tokens two neighbouring windows share (0 to 4,096, default 32);
* ``deterministic``: ``true`` scores each pair alone, so a score is bit-identical whatever the
  other documents of the request (and of others' requests batched with it); slower;
* ``return_receipts``: ``true`` adds each result's ``receipt`` (:class:`~qwen_embed.Receipt`).

The answer, best first:

    {"object": "list", "model": "...", "results": [{"index": 2, "relevance_score": 0.93,
     "document": {"text": "..."}, "span": [1804, 3310]}, {"index": 0, "relevance_score": 0.41,
     "truncated": true}, ...], "usage": {"prompt_tokens": 812, "total_tokens": 812}}

``span`` is there for a document scored in windows, ``truncated: true`` for one whose end was cut;
clients of the other servers ignore both.

``POST /v2/rerank`` is Cohere's v2 API (what ``cohere.ClientV2(base_url=...).rerank`` calls): the
same request (Cohere's ``max_tokens_per_doc`` and ``priority`` are checked and otherwise unused:
the pair's length is the reranker's ``max_length`` and ``long_text``'s), answered as Cohere does:

    {"id": "<request id>", "results": [{"index": 2, "relevance_score": 0.93}, ...],
     "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 812},
              "tokens": {"input_tokens": 812, "output_tokens": 0}}}

``relevance_score`` is the official ``p(yes)`` in [0, 1]; the usage counts the tokens decoded
for each pair (prompt included; after a cut, or every window of a chunked document: the receipts'
``tokens_used``). A query or instruction that alone fills ``max_length`` is a 400 naming it.

``--max-request-tokens`` bounds what a request may cost before anything is decoded: a pair
counts what its decode will take, so a chunked document counts each window with its prompt. A
document over ``max_length`` is counted in blocks short enough to be tokenized whole, and the
count stops at the limit, so a 10 MB document costs the tokenization of its first part, then a
400 ``request_too_large``; what passes is costed exactly by :meth:`Reranker.plan
<qwen_embed.Reranker.plan>` (the receipts scoring will give).

The request lifecycle is the server's one (:mod:`._server_route`): parsing and token counting on
a worker thread, scoring through the fair scheduler that embeddings use too, ``batch_texts``
documents per engine call, so concurrent requests of both models take turns and the documents of a
client that went away are never scored. A chunked document is one item there: its windows are
scored in one engine call.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from ..calls import AGGREGATES, MAX_OVERLAP, RERANK_LONG_TEXT, Receipt, RerankCall
from ..errors import InputTooLongError
from ..reranker import Reranker
from ._server_embeddings import optional_flag, render_receipt
from ._server_http import ClientGone, RequestError, check_model, check_unicode, json_kind, load_object, optional_text
from ._server_route import AppParts, ModelRoute, Plan, Tally
from ._server_scheduler import Rows

__all__ = [
    "RerankRequest",
    "RerankRoute",
    "RerankWork",
    "Scored",
    "Shape",
    "count_tokens",
    "parse_rerank",
    "render_rerank",
]

Shape = Literal["v1", "cohere-v2"]


@dataclass(frozen=True)
class RerankRequest:
    """A checked rerank request.

    Attributes:
        query: The query.
        documents: The documents' texts.
        top_n: Most results (``None``: all).
        return_documents: Whether each result repeats its document.
        call: The library call the pairs get (instruction, ``long_text``, ``aggregate``).
        receipts: Whether each result gets its pair's receipt (``return_receipts``).
    """

    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool
    call: RerankCall = field(default_factory=RerankCall)
    receipts: bool = False

    @property
    def instruction(self) -> str | None:
        """The task instruction asked for (``None``: the reranker's)."""
        return self.call.instruction


_OVERLAP = RerankCall().overlap  # tokens two windows of a chunked document share, unless the body says


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
    long_text = _choice(body, "long_text", RERANK_LONG_TEXT)
    aggregate = _choice(body, "aggregate", AGGREGATES)
    overlap = _positive(body, "overlap", f"at most {MAX_OVERLAP:,}; leave it out for {_OVERLAP}", low=0)
    if overlap is not None and overlap > MAX_OVERLAP:
        raise RequestError(
            400, f"'overlap' must be at most {MAX_OVERLAP:,} tokens, not {overlap}; leave it out for {_OVERLAP}.",
            param="overlap",
        )  # fmt: skip
    deterministic = optional_flag(body, "deterministic", default=False)
    call = RerankCall(instruction=instruction, long_text=long_text, aggregate=aggregate, show_progress=False,
                      overlap=_OVERLAP if overlap is None else overlap, deterministic=deterministic)  # fmt: skip
    receipts = optional_flag(body, "return_receipts", default=False)
    return RerankRequest(query, documents, top_n, flag, call, receipts)


def _choice(body: dict[str, Any], field: str, choices: tuple[str, ...]) -> str:
    """``body[field]`` when it is one of ``choices`` (the first when absent); else a 400 naming it."""
    value = body.get(field)
    if value is None:
        return choices[0]
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(json.dumps(c) for c in choices[:-1]) + f" or {json.dumps(choices[-1])}"
        raise RequestError(
            400, f"'{field}' must be {listed}, not {json.dumps(value)}; leave it out for {json.dumps(choices[0])}.",
            param=field,
        )  # fmt: skip
    return value


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


# ---------------------------------------------------------------------- token counting


@dataclass(frozen=True)
class _Frame:
    """What the prompt of one (instruction, query) takes.

    Attributes:
        fixed: Tokens of the prompt's fixed parts, instruction and query (every window repeats them).
        keep: Tokens left for the document's part (``" " + document``) in one pair.
    """

    fixed: int
    keep: int


#: Tokens of the space that opens a document's part of the pair (one byte: one token in a byte-level vocabulary).
_SPACE = 1
#: Bytes of the first block a long document is counted in (times ``keep``); halved while a block may be cut.
_FIRST_BLOCK = 4


def count_tokens(reranker: Reranker, request: RerankRequest, *, stop: threading.Event, budget: int) -> list[int]:
    """Tokens each of the request's pairs will cost the engine, counted before anything is decoded.

    A pair that fits costs its tokens; one over ``max_length`` costs ``max_length`` under
    ``"truncate"``, and under ``"chunk"`` its windows' tokens (each window with the whole prompt).
    A first pass counts long documents in blocks and stops past ``budget`` (a 10 MB document costs
    the tokenization of its first part, see :func:`_document_tokens`); it counts a chunked document
    as its own tokens, a lower bound of its windows', so it refuses only what is surely too large.
    What passes is planned exactly by :meth:`~qwen_embed.Reranker.plan`: the receipts ``run`` gives.

    Raises:
        RequestError: 400 ``request_too_large`` past ``budget`` tokens in all (the count stops
            there); 400 naming the query or instruction that alone fills ``max_length``; under
            ``"error"``, a 400 naming the first document over ``max_length``.
        ClientGone: ``stop`` was set (the client went away).
    """
    frame = _frame(reranker, request)
    call = request.call
    costs: list[int] = []
    total = 0
    for i, document in enumerate(request.documents):
        if stop.is_set():
            raise ClientGone
        cost = len(reranker.tokenize(request.query, document, instruction=call.instruction))
        if cost >= reranker.max_length and call.long_text != "truncate":  # it may be over: count further
            most = budget - total if call.long_text == "chunk" else 2 * frame.keep
            tokens, blocks = _document_tokens(reranker, request, document, frame, most=most, stop=stop)
            if call.long_text == "error" and tokens - blocks > frame.keep:  # over for sure (else the engine decides)
                raise _too_long(reranker, i)
            if call.long_text == "chunk":  # a lower bound of its windows' tokens: they cover the document
                cost = max(cost, frame.fixed + tokens - blocks)
        total += cost
        if total > budget:
            raise RequestError(
                400,
                f"The request has more than {budget:,} tokens (--max-request-tokens; reached at "
                f"documents[{i}]{', counting its windows' if cost > reranker.max_length else ''}); split it "
                "over several requests.",
                param="documents",
                code="request_too_large",
            )
        costs.append(cost)
    # The count above is bounded (it stops past the budget) and never over a pair's cost, so it refuses only what
    # is surely too large; within it, the reranker's own plan gives each pair's exact cost (run's receipts).
    pairs = [(request.query, document) for document in request.documents]
    try:
        receipts = reranker.plan(pairs, call)
    except InputTooLongError as error:
        raise _too_long(reranker, error.index or 0) from None
    costs = [receipt.tokens_used for receipt in receipts]
    if sum(costs) > budget:
        reached = next(i for i, total in enumerate(itertools.accumulate(costs)) if total > budget)
        raise RequestError(
            400,
            f"The request has more than {budget:,} tokens (--max-request-tokens; reached at documents[{reached}], "
            "counting its windows); split it over several requests.",
            param="documents",
            code="request_too_large",
        )
    return costs


def _frame(reranker: Reranker, request: RerankRequest) -> _Frame:
    """The request's prompt size; a 400 naming the query or the instruction when it leaves no room for a document."""
    try:
        alone = len(reranker.tokenize(request.query, "", instruction=request.instruction))
    except InputTooLongError as error:
        what = error.param if error.param in ("query", "instruction") else "query"
        raise RequestError(
            400,
            f"The {what} alone fills the reranker's max_length ({reranker.max_length:,} tokens, prompt included), "
            "which leaves no room for a document. Shorten it.",
            param=what,
        ) from None
    fixed = alone - _SPACE
    return _Frame(fixed, reranker.max_length - fixed)


def _document_tokens(
    reranker: Reranker, request: RerankRequest, document: str, frame: _Frame, *, most: int, stop: threading.Event
) -> tuple[int, int]:
    """``(tokens, blocks)``: the tokens of ``" " + document``, counted in ``blocks`` pieces, stopping past ``most``.

    Each block is tokenized as the document of a pair short enough not to be cut (a block whose
    count reaches the pair's room is counted again in halves), so the cost is bounded by ``most``
    however long the document. A cut between two blocks can move a token across it, so the count
    is within ``blocks`` tokens of the document's own.
    """
    size = _FIRST_BLOCK * frame.keep  # bytes
    total = blocks = start = 0
    while start < len(document) and total <= most:
        if stop.is_set():
            raise ClientGone
        end = _block_end(document, start, size)
        part = len(reranker.tokenize(request.query, document[start:end], instruction=request.instruction))
        tokens = part - frame.fixed - _SPACE  # the block's own; its space is the document's only once
        if part >= reranker.max_length and size >= frame.keep:  # the block may have been cut
            size = max(frame.keep - 1, size // 2)  # bytes: at most a token each, so never cut
            continue
        total += tokens + (_SPACE if start == 0 else 0)
        blocks += 1
        start = end
    return total, blocks


def _block_end(text: str, start: int, size: int) -> int:
    """Where a block of at most ``size`` UTF-8 bytes from ``start`` ends; after a space or line break when one is
    in its second half (the next block then starts a word, as the document's own tokens do)."""
    end = min(len(text), start + size)
    while end - start > 1 and len(text[start:end].encode("utf-8", "surrogatepass")) > size:
        end = start + max(1, (end - start) * 3 // 4)
    if end < len(text):
        block = text[start:end]
        after = max(block.rfind(" "), block.rfind("\n")) + 1
        if after > len(block) // 2:
            end = start + after
    return end


def _too_long(reranker: Reranker, i: int) -> RequestError:
    """The 400 of ``long_text: "error"`` for ``documents[i]``."""
    return RequestError(
        400,
        f"documents[{i}] does not fit the reranker's max_length ({reranker.max_length:,} tokens with the prompt, "
        'instruction and query) and \'long_text\' is "error". Send "long_text": "chunk" to score every window of '
        'it, or "truncate" to cut its end (the official recipe).',
        param="documents",
    )


# ---------------------------------------------------------------------- the answer


class Scored(NamedTuple):
    """What the engine made of one document (a :class:`Rows` receipt).

    Attributes:
        receipt: Its :class:`~qwen_embed.Receipt` (``None`` when refused).
        span: The best window's character span (a document scored in windows).
        refused: Under ``long_text: "error"``, the error that refused it (it was not scored).
    """

    receipt: Receipt | None
    span: tuple[int, int] | None = None
    refused: InputTooLongError | None = None


def render_rerank(
    request: RerankRequest,
    scores: np.ndarray,
    *,
    model: str,
    tokens: int,
    shape: Shape = "v1",
    request_id: str = "",
    scored: list[Scored] | None = None,
) -> bytes:
    """The answer as JSON bytes: best first (ties keep input order), cut to ``top_n``, in ``shape``.

    With ``scored`` (one per document), a result gets ``span`` (scored in windows), ``truncated``
    (its end was cut) and, when the request asked for them, ``receipt``.
    """
    order = np.argsort(-scores, kind="stable")[: request.top_n]
    results: list[str] = []
    for i in order.tolist():
        entry: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
        if request.return_documents:
            entry["document"] = {"text": request.documents[i]}
        done = scored[i] if scored is not None else None
        if done is not None and done.span is not None:
            entry["span"] = [int(done.span[0]), int(done.span[1])]
        if done is not None and done.receipt is not None and done.receipt.truncated:
            entry["truncated"] = True
        text = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
        if request.receipts and done is not None and done.receipt is not None:
            text = text[:-1] + ',"receipt":' + render_receipt(done.receipt) + "}"
        results.append(text)
    listed = "[" + ",".join(results) + "]"
    if shape == "cohere-v2":
        meta = {
            "api_version": {"version": "2"},
            "billed_units": {"input_tokens": tokens},
            "tokens": {"input_tokens": tokens, "output_tokens": 0},
        }
        answer = f'{{"id":{json.dumps(request_id)},"results":{listed},"meta":{_compact(meta)}}}'
    else:
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        answer = f'{{"object":"list","model":{json.dumps(model, ensure_ascii=False)},"results":{listed},' \
            f'"usage":{_compact(usage)}}}'  # fmt: skip
    return answer.encode()


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class RerankWork:
    """One engine call of the reranker: documents scored for one query under one :class:`~qwen_embed.RerankCall`
    (equal ones share decodes), through :meth:`Reranker.run <qwen_embed.Reranker.run>`.

    It answers the scores with a :class:`Scored` per document. Under ``long_text="error"`` a document over
    ``max_length`` is refused alone (its ``Scored.refused``; the other documents of the call are scored), so the
    requests that share the call are not failed by another's document.

    Args:
        reranker: The model.
        query: The query of every pair.
        call: The call (default: :class:`~qwen_embed.RerankCall`'s defaults, the reranker's instruction).
    """

    kind = "rerank"

    def __init__(self, reranker: Reranker, query: str, call: RerankCall | None = None) -> None:
        self.reranker, self.query = reranker, query
        self.call = (call or RerankCall()).replace(show_progress=False)

    def __call__(self, items: list[str]) -> Rows:
        refused: dict[int, InputTooLongError] = {}
        kept = list(range(len(items)))
        scores = np.full(len(items), np.nan, dtype=np.float32)
        while kept:
            try:
                result = self.reranker.run([(self.query, items[i]) for i in kept], self.call)
            except InputTooLongError as error:  # nothing was decoded: refuse that document, score the others
                if error.param != "document" or error.index is None:
                    raise
                refused[kept.pop(error.index)] = error
                continue
            scores[kept] = result.scores
            scored = dict(zip(kept, (Scored(r, s) for r, s in zip(result.receipts, result.best_spans))))
            break
        else:
            scored = {}
        rows = [scored.get(i) or Scored(None, None, refused.get(i)) for i in range(len(items))]
        return Rows(scores, list(rows))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RerankWork)
            and other.reranker is self.reranker
            and (other.query, other.call) == (self.query, self.call)
        )

    def __hash__(self) -> int:
        return hash((id(self.reranker), self.query, self.call))


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
        work = RerankWork(self.reranker, request.query, request.call)
        return Plan(request, request.documents, costs, work, sum(costs))

    async def execute(self, plan: Plan[RerankRequest], stop: threading.Event) -> Rows:
        out = await self.submit(plan)
        for i, done in enumerate(out.receipts):
            if isinstance(done, Scored) and done.refused is not None:
                raise _too_long(self.reranker, i)
        return out

    def render(self, plan: Plan[RerankRequest], out: Rows, request_id: str) -> bytes:
        return render_rerank(
            plan.request, out.values, model=self.name, tokens=self.usage(plan, out), shape=self.shape,
            request_id=request_id, scored=[_scored(done) for done in out.receipts],
        )  # fmt: skip

    def usage(self, plan: Plan[RerankRequest], out: Rows) -> int:
        """The tokens decoded: each receipt's ``tokens_used`` (every window of a chunked document)."""
        receipts = [_scored(done).receipt for done in out.receipts]
        return sum(cost if receipt is None else receipt.tokens_used for receipt, cost in zip(receipts, plan.costs))

    def served(self, plan: Plan[RerankRequest], out: Rows) -> None:
        self.metrics.reranked(len(plan.items), self.usage(plan, out))


def _scored(done: object) -> Scored:
    """A row's :class:`Scored` (an empty one for a row without)."""
    return done if isinstance(done, Scored) else Scored(None)
