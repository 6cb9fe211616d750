"""An OpenAI-compatible embedding server (``pip install "qwen-embed[server]"``; ``qwen-embed serve``).

``POST /v1/embeddings`` takes ``model``, ``input`` (a string or a list of strings),
``encoding_format`` (``float`` or ``base64``), ``dimensions`` (Matryoshka), and two
optional fields of ours: ``prompt_name`` (``"query"``, ``"document"``, any registered
prompt) and ``instruction`` (a task in the official query format). Without them the
inputs are embedded as given, as a document would be. ``GET /v1/models`` and
``GET /health`` answer too. Requests from concurrent clients are batched together
on the one engine; errors come back in OpenAI's shape, a 500 without any traceback.

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="EMPTY")
    client.embeddings.create(model="Qwen3-Embedding-0.6B", input=["What is GGUF?"])
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..embedder import Embedder
from ..errors import ConfigurationError, DimensionError, InputTooLongError, QwenEmbedError, UnknownPromptError

__all__ = ["create_app", "serve"]

logger = logging.getLogger(__name__)

_Key = tuple[str | None, str | None, int | None]  # (prompt_name, instruction, dimensions)


class _RequestError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


@dataclass
class _Job:
    texts: list[str]
    key: _Key
    future: asyncio.Future[np.ndarray]


@dataclass
class ServerStats:
    requests: int = 0
    batches: int = 0
    texts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class _Batcher:
    """Gathers the jobs waiting at one moment and runs them as one ``encode`` per (prompt, dim)."""

    def __init__(self, embedder: Embedder, *, max_texts: int, wait: float, stats: ServerStats) -> None:
        self._embedder = embedder
        self._max_texts = max_texts
        self._wait = wait
        self._stats = stats
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwen-embed-engine")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str], key: _Key) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(texts, key, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            await asyncio.sleep(self._wait)  # let concurrent requests arrive
            count = len(jobs[0].texts)
            while count < self._max_texts and not self._queue.empty():
                job = self._queue.get_nowait()
                jobs.append(job)
                count += len(job.texts)
            groups: dict[_Key, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for key, members in groups.items():
                texts = [t for job in members for t in job.texts]
                try:
                    vectors = await loop.run_in_executor(self._executor, self._encode, texts, key)
                except Exception as error:
                    for job in members:
                        if not job.future.done():
                            job.future.set_exception(error)
                    continue
                with self._stats.lock:
                    self._stats.batches += 1
                    self._stats.texts += len(texts)
                offset = 0
                for job in members:
                    if not job.future.done():
                        job.future.set_result(vectors[offset : offset + len(job.texts)])
                    offset += len(job.texts)

    def _encode(self, texts: list[str], key: _Key) -> np.ndarray:
        prompt_name, instruction, dim = key
        if instruction is not None:
            return self._embedder.encode(texts, instruction=instruction, dim=dim)
        if prompt_name == "query":
            return self._embedder.encode_queries(texts, dim=dim)
        if prompt_name in ("document", "passage"):
            return self._embedder.encode_documents(texts, dim=dim)
        return self._embedder.encode(texts, prompt_name=prompt_name, dim=dim)


def default_model_name(embedder: Embedder) -> str:
    """``Qwen3-Embedding-0.6B`` for ``Qwen3-Embedding-0.6B-Q8_0.gguf``: the file name without the quant."""
    stem = embedder.model_path.name.removesuffix(".gguf")
    quant = embedder.quantization
    for suffix in (f"-{quant}", f"-{quant.lower()}", f".{quant}"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def create_app(
    embedder: Embedder,
    *,
    model_name: str | None = None,
    max_inputs: int = 2048,
    max_batch_texts: int = 256,
    batch_wait: float = 0.005,
) -> Any:
    """The ASGI app (Starlette) serving ``embedder``; ``app.state.stats`` counts requests and batches."""
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route
    except ImportError as error:
        raise ConfigurationError('The server needs its extra: pip install "qwen-embed[server]"') from error

    name = model_name or default_model_name(embedder)
    aliases = {name, embedder.model_path.name, embedder.model_path.name.removesuffix(".gguf")}
    stats = ServerStats()
    batcher = _Batcher(embedder, max_texts=max_batch_texts, wait=batch_wait, stats=stats)

    def failure(status: int, message: str, *, param: str | None = None, code: str | None = None) -> JSONResponse:
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return JSONResponse(body, status_code=status)

    async def embeddings(request: Request) -> JSONResponse:
        with stats.lock:
            stats.requests += 1
        try:
            try:
                body = await request.json()
            except ValueError:
                raise _RequestError(400, "The request body is not valid JSON.") from None
            texts, key, encoding = _parse(body, aliases=aliases, name=name, max_inputs=max_inputs)
            n_tokens = _count_tokens(embedder, texts, key)
            vectors = await batcher.submit(texts, key)
        except _RequestError as bad:
            return failure(bad.status, bad.message, param=bad.param, code=bad.code)
        except (InputTooLongError, DimensionError, UnknownPromptError, ConfigurationError) as bad:
            return failure(400, str(bad), param="input" if isinstance(bad, InputTooLongError) else None)
        except QwenEmbedError as bad:
            if isinstance(bad, ValueError | TypeError):
                return failure(400, str(bad))
            logger.exception("embedding failed")
            return failure(500, "The server could not embed this request; see its log.")
        except Exception:
            logger.exception("embedding failed")
            return failure(500, "The server could not embed this request; see its log.")
        data = [
            {"object": "embedding", "index": i, "embedding": _encode_vector(vector, encoding)}
            for i, vector in enumerate(vectors)
        ]
        usage = {"prompt_tokens": n_tokens, "total_tokens": n_tokens}
        return JSONResponse({"object": "list", "data": data, "model": name, "usage": usage})

    async def models(request: Request) -> JSONResponse:
        card = {"id": name, "object": "model", "created": 0, "owned_by": "qwen_embed"}
        return JSONResponse({"object": "list", "data": [card]})

    async def health(request: Request) -> JSONResponse:
        with stats.lock:
            counts = {"requests": stats.requests, "batches": stats.batches, "texts": stats.texts}
        return JSONResponse({"status": "ok", "model": name, "dim": embedder.dim, **counts})

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return failure(404, f"No route {request.method} {request.url.path}.")

    async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
        return failure(405, f"{request.method} is not allowed on {request.url.path}.")

    async def crash(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return failure(500, "Internal server error; see the server's log.")

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = Starlette(
        routes=[
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed, 500: crash},
        lifespan=lifespan,
    )
    app.state.stats = stats
    app.state.model_name = name
    return app


def _parse(body: object, *, aliases: set[str], name: str, max_inputs: int) -> tuple[list[str], _Key, str]:
    if not isinstance(body, dict):
        raise _RequestError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if model is not None and model not in aliases:
        raise _RequestError(404, f"The model {model!r} does not exist here; this server has {name!r}.",
                            param="model", code="model_not_found")  # fmt: skip
    raw = body.get("input")
    if raw is None:
        raise _RequestError(400, "'input' is required: a string or a list of strings.", param="input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise _RequestError(400, "'input' must be a non-empty string or a non-empty list of strings.", param="input")
    if len(texts) > max_inputs:
        raise _RequestError(400, f"Too many inputs: {len(texts)} (at most {max_inputs}).", param="input")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            what = "token ids are not supported, send text" if isinstance(text, int | list) else "not a string"
            raise _RequestError(400, f"input[{i}]: {what}.", param="input")
        if not text:
            raise _RequestError(400, f"input[{i}] is empty.", param="input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _RequestError(400, "'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    dim = body.get("dimensions")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
        raise _RequestError(400, "'dimensions' must be an integer.", param="dimensions")
    prompt_name, instruction = body.get("prompt_name"), body.get("instruction")
    for field_name, value in (("prompt_name", prompt_name), ("instruction", instruction)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise _RequestError(400, f"'{field_name}' must be a non-empty string.", param=field_name)
    return texts, (prompt_name, instruction, dim), encoding


def _count_tokens(embedder: Embedder, texts: list[str], key: _Key) -> int:
    """Tokens the model reads (prompt and EOS included); raises InputTooLongError under ``long_text="error"``."""
    prompt_name, instruction, _ = key
    if prompt_name in ("document", "passage"):
        prompt_name = None  # retrieval documents carry no instruction
    total = 0
    for i, text in enumerate(texts):
        n = embedder.count_tokens(text, prompt_name=prompt_name, instruction=instruction)
        if n > embedder.max_length and embedder.long_text == "error":
            raise InputTooLongError(
                f"input[{i}] is {n:,} tokens (prompt and EOS included); the limit is {embedder.max_length:,}.",
                index=i,
                n_tokens=n,
                limit=embedder.max_length,
            )
        total += n
    return total


def _encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.astype(float).tolist()


def serve(
    embedder: Embedder,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str | None = None,
    max_inputs: int = 2048,
    sock: socket.socket | None = None,
    log_level: str = "warning",
) -> None:
    """Run the server until interrupted (uvicorn)."""
    try:
        import uvicorn
    except ImportError as error:
        raise ConfigurationError('The server needs its extra: pip install "qwen-embed[server]"') from error
    app = create_app(embedder, model_name=model_name, max_inputs=max_inputs)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    server = uvicorn.Server(config)
    if sock is None:
        print(f"qwen-embed: serving {app.state.model_name} on http://{host}:{port}/v1", flush=True)
    server.run(sockets=[sock] if sock is not None else None)
