"""``POST /v1/rerank`` (and ``/rerank``): Qwen3-Reranker scores in the shape llama-server, Jina and Cohere use.

Request fields: ``query`` (a string), ``documents`` (strings or ``{"text": ...}`` objects),
``top_n`` (default: all), ``return_documents`` (default ``false``, Cohere's default; llama-server
never returns them, Jina defaults to ``true``), ``model`` (optional; a name of the reranker) and
one of ours, ``instruction`` (the task, default the reranker's). The answer, best first:

    {"object": "list", "model": "...", "results": [{"index": 2, "relevance_score": 0.93,
     "document": {"text": "..."}}, ...], "usage": {"prompt_tokens": 812, "total_tokens": 812}}

``relevance_score`` is the official ``p(yes)`` in [0, 1]; the usage counts each pair's tokens
as the model reads them (prompt included, after truncation to the reranker's ``max_length``).

As for embeddings, the event loop only moves bytes: parsing, token counting and rendering run
on the server's worker threads, and scoring on one thread of the reranker's own, a chunk of
``batch_texts`` documents at a time, so concurrent requests take turns and the chunks of a
client that went away are never scored.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EmbedderClosedError, QwenEmbedError
from ._server_http import (
    ClientGone,
    RequestError,
    check_content_type,
    check_model,
    json_kind,
    load_object,
    race,
    read_body,
    wait_disconnect,
)
from ._server_metrics import Metrics

if TYPE_CHECKING:
    from ..reranker import Reranker
    from .server import ServerOptions

__all__ = ["RerankRequest", "RerankRoute", "count_tokens", "parse_rerank", "render_rerank"]

logger = logging.getLogger("qwen_embed.server")


@dataclass(frozen=True)
class RerankRequest:
    """A checked ``/v1/rerank`` request."""

    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool
    instruction: str | None


def parse_rerank(raw: bytes, *, aliases: set[str], name: str, max_inputs: int) -> RerankRequest:
    """Decode and check the JSON body; every problem is a :class:`RequestError` naming the field."""
    body = load_object(raw)
    check_model(body, aliases=aliases, name=name)
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        got = "missing" if query is None else "blank" if isinstance(query, str) else json_kind(query)
        raise RequestError(400, f"'query' must be a non-empty string (it is {got}).", param="query")
    _check_unicode(query, "'query'", "query")
    documents = _documents(body.get("documents"), max_inputs)
    top_n = body.get("top_n")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise RequestError(
            400, f"'top_n' must be a positive integer, not {json.dumps(top_n)}; leave it out for all.", param="top_n"
        )
    flag = body.get("return_documents", False)
    if not isinstance(flag, bool):
        raise RequestError(
            400, f"'return_documents' must be true or false, not {json.dumps(flag)}.", param="return_documents"
        )
    instruction = body.get("instruction")
    if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
        raise RequestError(400, "'instruction' must be a non-empty string.", param="instruction")
    if instruction is not None:
        _check_unicode(instruction, "'instruction'", "instruction")
    return RerankRequest(query, documents, top_n, flag, instruction)


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
        _check_unicode(text, f"documents[{i}]", "documents")
        texts.append(text)
    return texts


def _check_unicode(text: str, where: str, param: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise RequestError(
            400,
            f"{where} holds a lone surrogate at character {error.start} ({error.object[error.start]!r}), "
            "which is not Unicode text; fix the bad decode that made it, or replace it.",
            param=param,
        ) from None


def count_tokens(reranker: Reranker, request: RerankRequest, *, stop: threading.Event, budget: int) -> int:
    """Tokens of all the request's pairs as the model reads them; over ``budget`` is a 400 ``request_too_large``."""
    total = 0
    for i, document in enumerate(request.documents):
        if stop.is_set():
            raise ClientGone
        total += len(reranker.tokenize(request.query, document, instruction=request.instruction))
        if total > budget:
            raise RequestError(
                400,
                f"The request has more than {budget:,} tokens (--max-request-tokens; reached at "
                f"documents[{i}]); split it over several requests.",
                param="documents",
                code="request_too_large",
            )
    return total


def render_rerank(request: RerankRequest, scores: np.ndarray, *, model: str, tokens: int) -> bytes:
    """The answer as JSON bytes: best first (ties keep input order), cut to ``top_n``."""
    order = np.argsort(-scores, kind="stable")[: request.top_n]
    results: list[dict[str, Any]] = []
    for i in order.tolist():
        entry: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
        if request.return_documents:
            entry["document"] = {"text": request.documents[i]}
        results.append(entry)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    answer = {"object": "list", "model": model, "results": results, "usage": usage}
    return json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()


class RerankRoute:
    """The ``/v1/rerank`` handler of one app, with the reranker's engine thread.

    Args:
        reranker: The model (scored on this route's own thread, tokenized on the workers).
        name: The name clients send as ``model``.
        options: The server's limits (``max_inputs``, ``max_request_tokens``, bodies, ``batch_texts``).
        metrics: The app's metrics.
        offload: Runs a function on the app's worker threads.
        failure: Turns a :class:`RequestError` into the app's error response.
    """

    def __init__(
        self,
        reranker: Reranker,
        *,
        name: str,
        options: ServerOptions,
        metrics: Metrics,
        offload: Callable[..., Awaitable[Any]],
        failure: Callable[[RequestError], Any],
    ) -> None:
        self.reranker = reranker
        self.name = name
        file = reranker.model_path.name
        self.aliases = {name, file, file.removesuffix(".gguf")}
        self._options, self._metrics, self._offload, self._failure = options, metrics, offload, failure
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwen-embed-rerank")
        self.requests = 0
        self.documents = 0

    def health(self) -> dict[str, Any]:
        """What ``/health`` reports about the reranker."""
        return {
            "model": self.name,
            "max_length": self.reranker.max_length,
            "requests": self.requests,
            "documents": self.documents,
        }

    async def stop(self) -> None:
        """Drop the chunks waiting for the engine, then wait for the one being scored."""
        self._engine.shutdown(wait=False, cancel_futures=True)
        await asyncio.get_running_loop().run_in_executor(None, self._engine.shutdown, True)

    def _prepare(self, raw: bytes, stop: threading.Event) -> tuple[RerankRequest, int]:
        opts = self._options
        request = parse_rerank(raw, aliases=self.aliases, name=self.name, max_inputs=opts.max_inputs)
        return request, count_tokens(self.reranker, request, stop=stop, budget=opts.max_request_tokens)

    async def _score(self, request: RerankRequest, watcher: asyncio.Future[None]) -> np.ndarray:
        documents, step = request.documents, self._options.batch_texts
        parts: list[np.ndarray] = []
        for start in range(0, len(documents), step):
            pairs = [(request.query, d) for d in documents[start : start + step]]
            work = functools.partial(self.reranker.predict, pairs, instruction=request.instruction, show_progress=False)
            try:
                future = self._engine.submit(work)
            except RuntimeError:  # the executor was shut down: the app is stopping
                raise EmbedderClosedError("the server is shutting down") from None
            try:
                parts.append(await race(asyncio.wrap_future(future), watcher))
            except ClientGone:
                ran = not future.cancel()  # False: it was still waiting, and now never runs
                self._metrics.rerank_dropped.inc(len(documents) - start - (len(pairs) if ran else 0))
                raise
        return np.concatenate(parts)

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import Response

        state = request.scope["state"]
        self.requests += 1
        try:
            check_content_type(request.headers.get("content-type"))
            raw = await read_body(
                request.receive,
                content_length=request.headers.get("content-length"),
                limit=self._options.max_body_bytes,
                timeout=self._options.body_timeout,
            )
            stop = threading.Event()
            watcher = asyncio.ensure_future(wait_disconnect(request.receive))
            try:
                parsed, tokens = await race(self._offload(self._prepare, raw, stop), watcher)
                del raw
                scores = await self._score(parsed, watcher)
                payload = await race(
                    self._offload(render_rerank, parsed, scores, model=self.name, tokens=tokens), watcher
                )
            finally:
                stop.set()
                watcher.cancel()
        except ClientGone:
            logger.info("client of request %s went away; its remaining work was dropped", state.get("request_id"))
            return Response(status_code=499)
        except RequestError as bad:
            return self._failure(bad)
        except EmbedderClosedError:
            return self._failure(RequestError(503, "The server is shutting down.", code="shutting_down"))
        except QwenEmbedError as bad:
            if isinstance(bad, ValueError | TypeError):
                return self._failure(RequestError(400, str(bad)))
            logger.exception("request %s: the reranker failed", state.get("request_id"))
            return self._failure(
                RequestError(
                    500,
                    f"The server could not rerank this request (request {state.get('request_id')}); "
                    "its log has the details.",
                )
            )
        n = len(parsed.documents)
        self.documents += n
        self._metrics.reranked(n, tokens)
        state["inputs"], state["tokens"] = n, tokens
        return Response(payload, media_type="application/json")
