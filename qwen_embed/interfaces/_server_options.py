"""The server's options (:class:`ServerOptions`) and the names it serves its models under."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .. import _config
from ..errors import ConfigurationError

__all__ = ["QUERY_SUFFIX", "ServerOptions", "default_engine_threads", "default_model_name", "file_aliases"]

#: Appended to the embedding model's served name, it names the query side: ``Qwen3-Embedding-0.6B-query``
#: embeds every input as :meth:`Embedder.encode_queries <qwen_embed.Embedder.encode_queries>` does.
QUERY_SUFFIX = "-query"


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """How the server answers; ``qwen-embed serve`` sets these from its flags.

    Args:
        model_name: Name clients send as ``model`` (default: the file name without the quant);
            ``<model_name>-query`` names the same model with the query side chosen.
        reranker_name: The reranker's name, likewise.
        host: The address served; with ``allowed_hosts`` it makes the names the Host check accepts.
        max_inputs: Most inputs in one request.
        max_request_tokens: Most tokens (prompt and EOS included) in one request, all inputs together.
        max_body_bytes: Largest request body (413 above it).
        body_timeout: Seconds a client has to send the whole body (408 after).
        api_key: Required as ``Authorization: Bearer KEY`` on every path but ``/health``; ``None``: open.
        cors_origins: Origins browsers may call from (``"*"`` for any); empty: no CORS headers at all.
        allowed_hosts: More names accepted in the ``Host`` header (``"*"`` accepts any).
        check_host: Refuse requests whose ``Host`` is not a name of this server (DNS rebinding guard).
        batch_texts: Most texts (or rerank documents) in one engine call (requests are cut into
            sub-batches of this size).
        batch_tokens: Most tokens in one engine call (a longer single text runs alone).
        batch_wait: Seconds the idle engine waits for concurrent requests to share its first call.
        workers: Threads that parse requests, count tokens and render answers.
    """

    model_name: str | None = None
    reranker_name: str | None = None
    host: str = "127.0.0.1"
    max_inputs: int = 2048
    max_request_tokens: int = 1_000_000
    max_body_bytes: int = 32 * 2**20
    body_timeout: float = 60.0
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    check_host: bool = True
    batch_texts: int = _config.DEFAULT_BATCH_SIZE
    batch_tokens: int = _config.DEFAULT_BATCH_TOKENS
    batch_wait: float = 0.005
    workers: int = 4

    def __post_init__(self) -> None:
        for name in ("max_inputs", "max_request_tokens", "max_body_bytes", "batch_texts", "batch_tokens", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"ServerOptions.{name} must be a positive int, not {value!r}")
        for name in ("body_timeout", "batch_wait"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigurationError(f"ServerOptions.{name} must be a number of seconds >= 0, not {value!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigurationError("the API key is empty; pass a non-empty key or none at all")
        for name in ("cors_origins", "allowed_hosts"):
            if isinstance(getattr(self, name), str):
                raise ConfigurationError(f"ServerOptions.{name} is a tuple of strings, not one string")


class ModelFile(Protocol):
    """What naming needs of a model: its file and quantization."""

    @property
    def model_path(self) -> Path: ...

    @property
    def quantization(self) -> str: ...


def default_model_name(model: ModelFile) -> str:
    """``Qwen3-Embedding-0.6B`` for ``Qwen3-Embedding-0.6B-Q8_0.gguf``: the file name without the quant."""
    stem = model.model_path.name.removesuffix(".gguf")
    quant = model.quantization
    for suffix in (f"-{quant}", f"-{quant.lower()}", f".{quant}"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def file_aliases(model: ModelFile, name: str) -> frozenset[str]:
    """Every ``model`` value that names ``model``: its served name, its file name, the file name without ``.gguf``."""
    file = model.model_path.name
    return frozenset({name, file, file.removesuffix(".gguf")})


def default_engine_threads() -> int:
    """``qwen-embed serve``'s engine threads: ``$QWEN_EMBED_NUM_THREADS`` if set, else every CPU this process may
    use but one (at least 1).

    The spare core keeps the event loop and the workers responsive: the server's load test on 2 cores measured a
    small request's p99 at 44 ms with the engine on one core, against 329 ms with it on both.
    """
    if os.environ.get(_config.ENV_THREADS, "").strip():
        return _config.default_threads()
    return max(1, _config.default_threads() - 1)
