"""The server's other answers: ``GET /v1/models``, ``GET /health``, ``GET /metrics``, a route whose model is
absent, and Starlette's own 404/405 in OpenAI's error shape."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ._server_embeddings import EmbeddingsRoute
from ._server_http import RequestError, error_response
from ._server_options import QUERY_SUFFIX
from ._server_rerank import RerankRoute
from ._server_route import AppParts

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ._server_search import SearchRoute

__all__ = ["InfoRoutes"]


class InfoRoutes:
    """The endpoints that answer about the models rather than run them.

    Args:
        embeddings: The embeddings route (``None``: no embedding model).
        rerank: The ``/v1/rerank`` route (``None``: no reranker).
        parts: The app's shared parts (metrics, scheduler, workers).
        search: The ``/v1/search`` route (``None``: no index).
    """

    def __init__(
        self,
        embeddings: EmbeddingsRoute | None,
        rerank: RerankRoute | None,
        parts: AppParts,
        search: SearchRoute | None = None,
    ) -> None:
        self.embeddings, self.rerank, self.parts, self.search = embeddings, rerank, parts, search
        self.served = [
            *([embeddings.name, embeddings.name + QUERY_SUFFIX] if embeddings else []),
            *([rerank.name] if rerank else []),
        ]

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``: every served name (the embedding model's query side too)."""
        from starlette.responses import JSONResponse

        cards = [{"id": n, "object": "model", "created": 0, "owned_by": "qwen_embed"} for n in self.served]
        return JSONResponse({"object": "list", "data": cards})

    async def health(self, request: Request) -> Response:
        """``GET /health``: the models and their counts."""
        from starlette.responses import JSONResponse

        answer: dict[str, Any] = {"status": "ok"}
        if self.embeddings is not None:
            answer.update(
                model=self.embeddings.name,
                dim=self.embeddings.embedder.dim,
                requests=self.embeddings.tally.requests,
                batches=self.parts.scheduler.batches["embeddings"],
                texts=self.embeddings.tally.inputs,
            )
        if self.rerank is not None:
            answer["reranker"] = self.rerank.health()
        if self.search is not None:
            answer["search"] = self.search.health()
        return JSONResponse(answer)

    async def metrics(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus' text, rendered on a worker thread."""
        from starlette.responses import Response

        loop = asyncio.get_running_loop()
        body, content_type = await loop.run_in_executor(self.parts.workers, self.parts.metrics.render)
        return Response(body, headers={"Content-Type": content_type})

    async def no_embedder(self, request: Request) -> Response:
        """``/v1/embeddings`` on a server started with ``--no-embedder``."""
        assert self.rerank is not None
        return error_response(
            RequestError(
                404,
                "This server has no embedding model (it was started with --no-embedder); "
                f"it serves the reranker {self.rerank.name!r} at POST /v1/rerank.",
                code="model_not_found",
            )
        )

    async def no_reranker(self, request: Request) -> Response:
        """The rerank routes on a server started without ``--reranker``."""
        return error_response(
            RequestError(
                404,
                "This server has no reranker; start it with --reranker MODEL (qwen-embed serve) "
                "to serve POST /v1/rerank.",
                code="model_not_found",
            )
        )

    async def no_index(self, request: Request) -> Response:
        """``/v1/search`` on a server started without ``--index``."""
        return error_response(
            RequestError(
                404,
                "This server has no search index; start it with --index INDEX_OR_FOLDER (qwen-embed serve) "
                "to serve POST /v1/search.",
                code="index_not_found",
            )
        )

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """Starlette's 404 and 405 (and any other ``HTTPException``) in OpenAI's error shape."""
        status = int(getattr(exc, "status_code", 500))
        headers = dict(getattr(exc, "headers", None) or {})
        if status == 404:
            served = (
                ("POST /v1/embeddings", self.embeddings),
                ("POST /v1/rerank", self.rerank),
                ("POST /v1/search", self.search),
            )
            routes = " and ".join(route for route, on in served if on)
            message = f"No route {request.method} {request.url.path}; this server has {routes}."
        elif status == 405:
            allowed = headers.get("Allow", "")
            message = f"{request.method} is not allowed on {request.url.path}; use {allowed}."
        else:
            message = str(getattr(exc, "detail", "")) or "Bad request."
        return error_response(RequestError(status, message, headers=headers))
