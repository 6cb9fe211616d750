"""An OpenAI-compatible embedding server (``pip install "qwen-embed[server]"``; ``qwen-embed serve``).

``POST /v1/embeddings`` takes OpenAI's ``model``, ``input`` (a string or a list of strings),
``encoding_format`` (``float`` or ``base64``) and ``dimensions`` (Matryoshka), and the library's
prompt options ``side`` (``"query"``/``"document"``), ``task`` (a registered prompt) and
``instruction`` (:mod:`._server_embeddings`; ``prompt_name`` is still accepted for ``task``).
Without them the inputs are embedded as given, as a document would be. OpenAI clients that send
bare text (LangChain's ``OpenAIEmbeddings``) choose the query side by the model name: the served
name plus ``-query`` (both are listed by ``GET /v1/models``). Started with a reranker,
``POST /v1/rerank`` scores documents for a query, and ``POST /v2/rerank`` does so in Cohere's v2
shape (:mod:`._server_rerank`); the server may serve the reranker alone. Started with a search
index, ``POST /v1/search`` embeds queries as the index records, looks them up and (with the
reranker) reranks the candidates (:mod:`._server_search`). ``return_receipts: true`` adds each
input's :class:`~qwen_embed.Receipt` to an embeddings or search answer. ``GET /v1/models``,
``GET /health`` and ``GET /metrics`` (Prometheus) answer too. Errors come back in OpenAI's shape.

Every model route is a :class:`~._server_route.ModelRoute` over one request lifecycle: the event
loop only moves bytes; parsing, token counting and JSON rendering run on worker threads; the models
run on an engine thread each (the index too), fed fairly by the scheduler (:mod:`._server_scheduler`): large requests
(embeddings or reranks) are cut into sub-batches that take turns with other requests, concurrent
small requests share decodes, and the remaining work of a client that disconnects is dropped.

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="EMPTY")
    client.embeddings.create(model="Qwen3-Embedding-0.6B", input=["GGUF is llama.cpp's file format."])
    client.embeddings.create(model="Qwen3-Embedding-0.6B-query", input=["What is GGUF?"])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ._server_embeddings import EmbeddingsRoute
from ._server_guard import Observe, RequireKey, allowed_host_names, is_loopback
from ._server_info import InfoRoutes
from ._server_metrics import Metrics
from ._server_options import QUERY_SUFFIX, ServerOptions, default_model_name, file_aliases
from ._server_rerank import RerankRoute, Shape
from ._server_route import AppParts, Tally
from ._server_run import build_server, logging_config
from ._server_scheduler import Scheduler
from ._server_search import SearchRoute

if TYPE_CHECKING:
    from ..embedder import Embedder
    from ..reranker import Reranker
    from ..search import Retriever, SearchIndex

__all__ = ["ENV_API_KEY", "QUERY_SUFFIX", "ServerOptions", "create_app", "default_model_name", "serve"]

logger = logging.getLogger("qwen_embed.server")

#: The environment variable ``qwen-embed serve`` reads the API key from when ``--api-key`` is not given.
ENV_API_KEY = "QWEN_EMBED_API_KEY"

#: Paths answered without the API key.
OPEN_PATHS = frozenset({"/health"})

#: Seconds the shutdown waits, past ``--shutdown-timeout``, for the cancelled requests to send their 503.
ANSWER_ON_SHUTDOWN = 2.0


def create_app(
    embedder: Embedder | None,
    options: ServerOptions | None = None,
    *,
    reranker: Reranker | None = None,
    index: SearchIndex | str | os.PathLike[str] | None = None,
) -> Any:
    """The ASGI app (Starlette) serving ``embedder``, ``reranker``, or both, and a search index.

    ``app.state.metrics`` holds its Prometheus metrics and ``app.state.scheduler`` the engine
    scheduler every model shares. The app owns its threads (the workers and an engine thread per
    model and for the index), started and stopped by its lifespan.

    Args:
        embedder: The embedding model (``None``: the reranker alone).
        options: How the server answers.
        reranker: A reranker for ``/v1/rerank``, ``/v2/rerank`` and the second stage of ``/v1/search``.
        index: A search index for ``POST /v1/search``: a :class:`~qwen_embed.search.SearchIndex`
            (the caller's, left open), or an index folder or a corpus folder indexed by
            ``qwen-embed index`` (opened here and closed when the app stops). Needs ``embedder``,
            whose settings must match the index's recipe.

    Raises:
        ConfigurationError: No model at all, both models under one name, or an index without an embedder
            (or without a recipe).
        EmbedderMismatchError: ``embedder`` would embed queries unlike the index's documents; the
            message lists each difference.
    """
    try:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.routing import Route
    except ImportError as error:
        raise ConfigurationError('The server needs its extra: pip install "qwen-embed[server]"') from error

    if embedder is None and reranker is None:
        raise ConfigurationError("create_app needs a model: an Embedder, a reranker=Reranker, or both")
    if embedder is None and index is not None:
        raise ConfigurationError(
            "searching an index needs the embedding model that embeds its queries; serve one with it "
            "(qwen-embed serve --index without --no-embedder)"
        )
    opts = options or ServerOptions()
    metrics = Metrics()
    scheduler = Scheduler(
        max_texts=opts.batch_texts, max_tokens=opts.batch_tokens, wait=opts.batch_wait, observer=metrics
    )
    workers = ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="qwen-embed-http")
    parts = AppParts(opts, metrics, scheduler, workers)
    embeddings = _embeddings_route(embedder, parts)
    reranks = _rerank_routes(reranker, parts, embeddings)
    retriever = _retriever(embeddings, index)
    try:
        search = _search_route(retriever, embeddings, reranks.get("v1"), parts)
        info = InfoRoutes(embeddings, reranks.get("v1"), parts, search)
        embed = embeddings.handle if embeddings is not None else info.no_embedder
        find = search.handle if search is not None else info.no_index
        active: set[asyncio.Task[Any]] = set()  # the requests being answered (Observe fills it)
        app = Starlette(
            routes=[
                Route("/v1/embeddings", embed, methods=["POST"]),
                Route("/embeddings", embed, methods=["POST"]),
                Route("/v1/rerank", reranks["v1"].handle if reranks else info.no_reranker, methods=["POST"]),
                Route("/rerank", reranks["v1"].handle if reranks else info.no_reranker, methods=["POST"]),
                Route("/v2/rerank", reranks["cohere-v2"].handle if reranks else info.no_reranker, methods=["POST"]),
                Route("/v1/search", find, methods=["POST"]),
                Route("/search", find, methods=["POST"]),
                Route("/v1/models", info.models, methods=["GET"]),
                Route("/health", info.health, methods=["GET"]),
                Route("/metrics", info.metrics, methods=["GET"]),
            ],
            middleware=_middleware(opts, metrics, active),
            exception_handlers={HTTPException: info.http_error},
            lifespan=_lifespan(scheduler, workers, active, retriever),
        )
    except BaseException:
        if retriever is not None:
            retriever.close()
        raise
    app.state.metrics = metrics
    app.state.scheduler = scheduler
    app.state.model_name = embeddings.name if embeddings else None
    app.state.reranker_name = info.rerank.name if info.rerank else None
    app.state.index = retriever.index if retriever is not None else None
    app.state.options = opts
    return app


def _embeddings_route(embedder: Embedder | None, parts: AppParts) -> EmbeddingsRoute | None:
    if embedder is None:
        return None
    name = parts.options.model_name or default_model_name(embedder)
    return EmbeddingsRoute(embedder, aliases=file_aliases(embedder, name), name=name, parts=parts, tally=Tally())


def _rerank_routes(
    reranker: Reranker | None, parts: AppParts, embeddings: EmbeddingsRoute | None
) -> dict[str, RerankRoute]:
    """The reranker's routes by answer shape (``v1``, ``cohere-v2``), sharing one tally; none without a reranker."""
    if reranker is None:
        return {}
    name = parts.options.reranker_name or default_model_name(reranker)
    if embeddings is not None and name in embeddings.names:
        raise ConfigurationError(
            f"The embedding model and the reranker are both named {name!r}; give them different names "
            "(--served-model-name, --served-reranker-name)."
        )
    tally, aliases = Tally(), file_aliases(reranker, name)
    shapes: tuple[Shape, ...] = ("v1", "cohere-v2")
    return {
        shape: RerankRoute(reranker, aliases=aliases, shape=shape, name=name, parts=parts, tally=tally)
        for shape in shapes
    }


def _retriever(
    embeddings: EmbeddingsRoute | None, index: SearchIndex | str | os.PathLike[str] | None
) -> Retriever | None:
    """The index, opened and checked against the embedding model (what ``Retriever`` checks); ``None`` without."""
    if index is None or embeddings is None:
        return None
    from ..search import Retriever

    return Retriever(embeddings.embedder, index)


def _search_route(
    retriever: Retriever | None, embeddings: EmbeddingsRoute | None, rerank: RerankRoute | None, parts: AppParts
) -> SearchRoute | None:
    if retriever is None or embeddings is None:
        return None
    route = SearchRoute(
        embeddings.embedder,
        retriever.index,
        reranker=rerank.reranker if rerank is not None else None,
        names=embeddings.names,
        name=embeddings.name,
        reranker_name=rerank.name if rerank is not None else None,
        parts=parts,
        tally=Tally(),
    )
    if rerank is not None and route.rerank_refusal is not None:
        logger.warning("the index %s keeps no texts: POST /v1/search does not rerank", retriever.index.path)
    return route


def _middleware(opts: ServerOptions, metrics: Metrics, active: set[asyncio.Task[Any]]) -> list[Any]:
    """Observe (outermost), CORS when asked, the API key when set."""
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware

    middleware = [
        Middleware(
            Observe,
            metrics=metrics,
            allowed_hosts=allowed_host_names(opts.host, opts.allowed_hosts) if opts.check_host else None,
            active=active,
        ),
    ]
    if opts.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(opts.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    if opts.api_key is not None:
        middleware.append(Middleware(RequireKey, key=opts.api_key, open_paths=OPEN_PATHS))
    return middleware


def _lifespan(
    scheduler: Scheduler,
    workers: ThreadPoolExecutor,
    active: set[asyncio.Task[Any]],
    retriever: Retriever | None = None,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """Start the scheduler; at shutdown, let cancelled requests answer, then stop the engines and the workers, and
    close the index if the app opened it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        scheduler.start()
        try:
            yield
        finally:
            # Past --shutdown-timeout uvicorn cancels the requests still running and comes here at once: give them
            # the moment they need to answer their JSON 503 before the process ends.
            cancelled = [task for task in active if not task.done()]
            if cancelled:
                await asyncio.wait(cancelled, timeout=ANSWER_ON_SHUTDOWN)
            await scheduler.stop()
            workers.shutdown(wait=False, cancel_futures=True)
            if retriever is not None:
                retriever.close()

    return lifespan


def serve(
    embedder: Embedder | None,
    options: ServerOptions | None = None,
    *,
    reranker: Reranker | None = None,
    index: SearchIndex | str | os.PathLike[str] | None = None,
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
        reranker: A reranker to serve at ``POST /v1/rerank`` (and to rerank ``/v1/search`` results).
        index: A search index (or index or corpus folder) to serve at ``POST /v1/search`` (see :func:`create_app`).
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
    app = create_app(embedder, opts, reranker=reranker, index=index)
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
