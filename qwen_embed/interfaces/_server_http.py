"""HTTP pieces every route shares: OpenAI-shaped errors, the guarded body read, the disconnect race, JSON checks.

The checks are plain functions the routes run on a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import QwenEmbedError

if TYPE_CHECKING:
    from starlette.responses import Response

__all__ = [
    "ClientGone",
    "RequestError",
    "check_content_type",
    "check_model",
    "check_unicode",
    "error_body",
    "error_response",
    "json_kind",
    "load_object",
    "optional_text",
    "race",
    "read_body",
    "wait_disconnect",
]

T = TypeVar("T")

Receive = Callable[[], Awaitable[Mapping[str, Any]]]


class RequestError(QwenEmbedError):
    """A request the server answers with a 4xx (or a 5xx it chose), in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = dict(headers or {})


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> bytes:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


def error_response(bad: RequestError) -> Response:
    """The Starlette response for ``bad`` (OpenAI's error shape, its status and headers)."""
    from starlette.responses import Response

    body = error_body(bad.status, bad.message, param=bad.param, code=bad.code)
    return Response(body, status_code=bad.status, media_type="application/json", headers=bad.headers)


class ClientGone(QwenEmbedError):
    """The client closed the connection before its answer was ready."""


async def read_body(receive: Receive, *, content_length: str | None, limit: int, timeout: float) -> bytes:
    """The request body, at most ``limit`` bytes (413) and read within ``timeout`` seconds (408)."""
    too_big = RequestError(
        413,
        f"The request body is over this server's limit of {limit:,} bytes (--max-body-bytes); "
        "send fewer or shorter inputs per request.",
        code="request_too_large",
        headers={"Connection": "close"},
    )
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise RequestError(400, f"Content-Length {content_length!r} is not a number.") from None
        if declared > limit:
            raise too_big

    async def collect() -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        raise RequestError(
            408,
            f"The request body did not arrive within {timeout:g} s (--body-timeout).",
            code="request_timeout",
            headers={"Connection": "close"},
        ) from None


def load_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object; anything else is a 400 saying what is wrong."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise RequestError(400, "The request body is JSON nested too deeply.") from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise RequestError(400, f"The request body is not valid JSON ({error}).") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"The request body must be a JSON object, not {json_kind(body)}.")
    return body


def check_model(body: Mapping[str, Any], *, aliases: Collection[str], name: str) -> str | None:
    """The ``model`` asked for: absent is fine (``None``); one that is not in ``aliases`` is a 404 ``model_not_found``.

    ``name`` is what the messages offer instead (the served names).
    """
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(
            400, f"'model' must be a string, not {json_kind(model)}; this server has {name}.", param="model"
        )
    if model is not None and model not in aliases:
        raise RequestError(
            404,
            f"The model {model!r} does not exist here; this server has {name}.",
            param="model",
            code="model_not_found",
        )
    return model


def json_kind(value: object) -> str:
    """How messages name a JSON value's type ("an array", "null", ...)."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def optional_text(body: Mapping[str, Any], field: str) -> str | None:
    """``body[field]`` when it is a non-empty string (without lone surrogates), ``None`` when absent; else a 400."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise RequestError(400, f"'{field}' must be a non-empty string.", param=field)
    check_unicode(value, f"'{field}'", field)
    return value


def check_unicode(text: str, where: str, param: str) -> None:
    """A 400 naming ``where`` when ``text`` holds a lone surrogate (it cannot be UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise RequestError(
            400,
            f"{where} holds a lone surrogate at character {error.start} ({error.object[error.start]!r}), "
            "which is not Unicode text; fix the bad decode that made it, or replace it.",
            param=param,
        ) from None


def check_content_type(value: str | None) -> None:
    media = (value or "").split(";")[0].strip().lower()
    if media != "application/json":
        shown = repr(value) if value else "none"
        raise RequestError(
            415,
            f"Content-Type must be application/json (got {shown}); send the body as JSON "
            "with that header, as the openai client does.",
            code="unsupported_media_type",
        )


async def wait_disconnect(receive: Callable[[], Awaitable[Any]]) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def race(work: Awaitable[T], watcher: asyncio.Future[None]) -> T:
    """``await work``, unless the client disconnects first (then cancel it and raise :class:`ClientGone`)."""
    task: asyncio.Future[T] = asyncio.ensure_future(work)
    both: set[asyncio.Future[Any]] = {task, watcher}
    try:
        done, _ = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # nobody awaits it any more
    raise ClientGone
