"""HTTP pieces of the server: OpenAI-shaped errors, the guarded body read, request parsing, response rendering.

Parsing and rendering are plain functions the server runs on a worker thread, never on the
event loop. Rendering goes row by row so another thread (the event loop) gets the GIL between
rows instead of waiting for one long C call to finish.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ._server_scheduler import Key

__all__ = [
    "LANGCHAIN_HINT",
    "ClientGone",
    "Parsed",
    "RequestError",
    "check_content_type",
    "check_model",
    "error_body",
    "json_kind",
    "load_object",
    "parse_request",
    "race",
    "read_body",
    "render_embeddings",
    "wait_disconnect",
]

LANGCHAIN_HINT = (
    "LangChain's OpenAIEmbeddings sends token ids by default: create it with "
    "OpenAIEmbeddings(..., check_embedding_ctx_length=False) so it sends the texts."
)

T = TypeVar("T")

Receive = Callable[[], Awaitable[Mapping[str, Any]]]


class RequestError(Exception):
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
    kind = "invalid_request_error" if status < 500 else "server_error"
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


class ClientGone(Exception):
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


@dataclass(frozen=True)
class Parsed:
    """A checked ``/v1/embeddings`` request."""

    texts: list[str]
    key: Key
    encoding: str


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


def check_model(body: Mapping[str, Any], *, aliases: set[str], name: str) -> None:
    """An absent ``model`` is fine; one that names no alias of ``name`` is a 404 ``model_not_found``."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(
            400, f"'model' must be a string, not {json_kind(model)}; this server has {name!r}.", param="model"
        )
    if model is not None and model not in aliases:
        raise RequestError(
            404,
            f"The model {model!r} does not exist here; this server has {name!r}.",
            param="model",
            code="model_not_found",
        )


def parse_request(raw: bytes, *, aliases: set[str], name: str, max_inputs: int) -> Parsed:
    """Decode and check the JSON body; every problem is a :class:`RequestError` naming the field."""
    body = load_object(raw)
    check_model(body, aliases=aliases, name=name)
    texts = _texts(body.get("input"), max_inputs)
    encoding = body.get("encoding_format")
    if encoding is None:
        encoding = "float"
    elif not isinstance(encoding, str) or encoding not in ("float", "base64"):
        raise RequestError(
            400,
            f'\'encoding_format\' must be "float" or "base64", not {json.dumps(encoding)}.',
            param="encoding_format",
        )
    dim = body.get("dimensions")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
        raise RequestError(400, f"'dimensions' must be an integer, not {json.dumps(dim)}.", param="dimensions")
    prompt_name, instruction = body.get("prompt_name"), body.get("instruction")
    for field_name, value in (("prompt_name", prompt_name), ("instruction", instruction)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise RequestError(400, f"'{field_name}' must be a non-empty string.", param=field_name)
    return Parsed(texts, (prompt_name, instruction, dim), encoding)


def _texts(raw: object, max_inputs: int) -> list[str]:
    if raw is None:
        raise RequestError(400, "'input' is required: a string or a list of strings.", param="input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise RequestError(400, "'input' must be a non-empty string or a non-empty list of strings.", param="input")
    if len(texts) > max_inputs:
        raise RequestError(
            400,
            f"Too many inputs: {len(texts):,} (at most {max_inputs:,} per request, "
            "--max-inputs); split them over several requests.",
            param="input",
        )
    if all(isinstance(t, int) and not isinstance(t, bool) for t in texts) or any(isinstance(t, list) for t in texts):
        raise RequestError(
            400,
            "'input' holds token ids; this server embeds text only, so send the strings. " + LANGCHAIN_HINT,
            param="input",
            code="token_ids_not_supported",
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(400, f"input[{i}] is {json_kind(text)}, not a string.", param="input")
        if not text:
            raise RequestError(400, f"input[{i}] is empty.", param="input")
    return texts


def json_kind(value: object) -> str:
    """How messages name a JSON value's type ("an array", "null", ...)."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def render_embeddings(vectors: np.ndarray, *, encoding: str, model: str, tokens: int) -> bytes:
    """The ``/v1/embeddings`` answer as JSON bytes, built one vector at a time."""
    parts: list[str] = []
    for i, vector in enumerate(vectors):
        if encoding == "base64":
            value = '"' + base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii") + '"'
        else:
            value = json.dumps(vector.tolist(), separators=(",", ":"))
        parts.append(f'{{"object":"embedding","index":{i},"embedding":{value}}}')
    usage = json.dumps({"prompt_tokens": tokens, "total_tokens": tokens})
    return f'{{"object":"list","data":[{",".join(parts)}],"model":{json.dumps(model)},"usage":{usage}}}'.encode()


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
