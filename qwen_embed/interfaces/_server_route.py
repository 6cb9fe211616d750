"""The one request lifecycle of the server's model routes (``/v1/embeddings``, ``/v1/rerank``, ``/v2/rerank``).

A :class:`ModelRoute` says what is particular to its route: how a body becomes a :class:`Plan`
(parsed, checked and costed, on a worker thread), what the engine does with it (:meth:`~ModelRoute.execute`:
one trip through the scheduler, or several for a search), and how its outcome becomes the answer
(rendered on a worker thread). The lifecycle around it is written here once:

1. the content type is checked and the body read (bounded in size and time);
2. the plan is made on a worker thread, never on the event loop;
3. the plan's items go through the :class:`~._server_scheduler.Scheduler`, fairly beside every
   other request of every model, to the engine threads;
4. the answer is rendered on a worker thread;
5. all the while, a client that disconnects stops the work (499, its waiting sub-batches dropped);
6. errors map to answers in one place: a :class:`~._server_http.RequestError` as it says, the
   library's input errors as 400 (``InputTooLongError`` naming the route's field), a closed model
   as 503, anything else of the library's as a logged 500 with the request id.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import EmbedderClosedError, InputTooLongError, QwenEmbedError
from ._server_http import (
    ClientGone,
    RequestError,
    check_content_type,
    error_response,
    race,
    read_body,
    wait_disconnect,
)
from ._server_metrics import Metrics
from ._server_options import ServerOptions
from ._server_scheduler import Rows, Scheduler, Work

__all__ = ["AppParts", "ModelRoute", "Plan", "Tally"]

logger = logging.getLogger("qwen_embed.server")

R = TypeVar("R")
Out = TypeVar("Out")
T = TypeVar("T")


@dataclass(frozen=True)
class Plan(Generic[R]):
    """A checked request, ready for the engine.

    Attributes:
        request: The route's parsed request (what rendering needs).
        items: What the engine gets, one row back per item (texts, documents).
        costs: Tokens each item costs the engine (what the scheduler's batches are cut by).
        work: The engine call (equal works share decodes).
        tokens: The usage reported to the client.
    """

    request: R
    items: list[str]
    costs: list[int]
    work: Work
    tokens: int


@dataclass(frozen=True)
class AppParts:
    """What every route of one app shares: its options, metrics, engine scheduler and worker threads."""

    options: ServerOptions
    metrics: Metrics
    scheduler: Scheduler
    workers: Executor


@dataclass
class Tally:
    """What ``/health`` reports of one model, shared by all its routes."""

    requests: int = 0
    inputs: int = 0


class ModelRoute(ABC, Generic[R, Out]):
    """A POST route over a model, with the request lifecycle of the module docstring.

    ``R`` is the route's parsed request, ``Out`` what :meth:`execute` gives :meth:`render`.

    Args:
        name: The model's served name.
        parts: The app's options, metrics, engine scheduler (every model route shares it) and
            worker threads (parsing, token counting, rendering).
        tally: The model's request counts (shared between the routes of one model).
    """

    #: The verb of the 500 message ("could not embed this request").
    verb = "serve"
    #: The request field an ``InputTooLongError`` about an input (``param="input"``) names.
    long_input_param: str | None = None

    def __init__(self, *, name: str, parts: AppParts, tally: Tally) -> None:
        self.name = name
        self.options = parts.options
        self.metrics = parts.metrics
        self.scheduler = parts.scheduler
        self.tally = tally
        self._workers = parts.workers

    # ------------------------------------------------------------------ what a route says

    @abstractmethod
    def plan(self, raw: bytes, stop: threading.Event) -> Plan[R]:
        """Parse, check and cost the body (on a worker thread; raise :class:`ClientGone` once ``stop`` is set)."""

    @abstractmethod
    async def execute(self, plan: Plan[R], stop: threading.Event) -> Out:
        """Run the plan on the engines (on the event loop: every piece of work is handed to the scheduler or the
        workers); the request's disconnect race cancels it, and sets ``stop``."""

    @abstractmethod
    def render(self, plan: Plan[R], out: Out, request_id: str) -> bytes:
        """The answer's JSON bytes (on a worker thread)."""

    def served(self, plan: Plan[R], out: Out) -> None:
        """Count a request answered 200 (on the event loop)."""

    def usage(self, plan: Plan[R], out: Out) -> int:
        """The tokens the request cost (the access log's count): the plan's, unless the route knows more."""
        return plan.tokens

    async def submit(self, plan: Plan[R]) -> Rows:
        """The plan's items through the scheduler: the usual :meth:`execute`."""
        return await self.scheduler.submit(plan.items, plan.costs, plan.work)

    # ------------------------------------------------------------------ the lifecycle

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._workers, functools.partial(fn, *args))

    async def handle(self, request: Any) -> Any:
        """The Starlette endpoint: answer ``request``."""
        from starlette.responses import Response

        state = request.scope["state"]
        request_id = str(state.get("request_id"))
        self.tally.requests += 1
        try:
            plan, out, payload = await self._answer(request, request_id)
        except ClientGone:
            logger.info("client of request %s went away; its remaining work was dropped", request_id)
            return Response(status_code=499)
        except RequestError as bad:
            return error_response(bad)
        except EmbedderClosedError:
            return error_response(RequestError(503, "The server is shutting down.", code="shutting_down"))
        except QwenEmbedError as bad:
            if isinstance(bad, ValueError | TypeError):
                param = _long_param(bad, self.long_input_param) if isinstance(bad, InputTooLongError) else None
                return error_response(RequestError(400, str(bad), param=param))
            logger.exception("request %s: the model failed", request_id)
            message = f"The server could not {self.verb} this request (request {request_id}); its log has the details."
            return error_response(RequestError(500, message))
        self.tally.inputs += len(plan.items)
        self.served(plan, out)
        state["inputs"], state["tokens"] = len(plan.items), self.usage(plan, out)
        return Response(payload, media_type="application/json")

    async def _answer(self, request: Any, request_id: str) -> tuple[Plan[R], Out, bytes]:
        check_content_type(request.headers.get("content-type"))
        raw = await read_body(
            request.receive,
            content_length=request.headers.get("content-length"),
            limit=self.options.max_body_bytes,
            timeout=self.options.body_timeout,
        )
        stop = threading.Event()
        watcher = asyncio.ensure_future(wait_disconnect(request.receive))
        try:
            plan = await race(self.offload(self.plan, raw, stop), watcher)
            del raw
            out = await race(self.execute(plan, stop), watcher)
            payload = await race(self.offload(self.render, plan, out, request_id), watcher)
        finally:
            stop.set()
            watcher.cancel()
        return plan, out, payload


def _long_param(error: InputTooLongError, inputs: str | None) -> str | None:
    """The request field ``error`` is about: the route's inputs field, or the query or instruction it names."""
    return inputs if error.param == "input" else error.param
