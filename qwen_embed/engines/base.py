"""The engine seam: what the models need from an inference engine, and which engine to use.

An engine does three things: tokenize a text, decode a packed batch of token sequences,
and hand back one pooled (not yet normalized) vector per sequence. Batching, prompts,
long-text policies, Matryoshka slicing and normalization live above it and are written
once for every engine. :mod:`.llama` (llama.cpp) and :mod:`.torch` (PyTorch on the same
GGUF) implement it; neither is imported until a model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np

from ..errors import ConfigurationError

__all__ = ["BACKENDS", "Engine", "Pooling", "choose_backend"]

Pooling = Literal["last", "mean"]


class Engine(Protocol):
    """What the :class:`~qwen_embed.Embedder` needs from an inference engine."""

    @property
    def n_embd(self) -> int:
        """Width of the pooled vectors."""
        ...

    @property
    def max_sequences(self) -> int:
        """Most sequences one :meth:`embed` call takes."""
        ...

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        ...

    @property
    def workarounds(self) -> tuple[str, ...]:
        """Human-readable notes on the workarounds in force."""
        ...

    def tokenize(self, text: str, *, special: bool = False) -> np.ndarray:
        """Token ids of ``text`` (int32), no BOS/EOS added; ``special`` parses control tokens."""
        ...

    def token_bytes(self, token: int) -> bytes:
        """The exact bytes a token stands for (control tokens: ``b""``)."""
        ...

    def embed(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Pooled, unnormalized float32 vectors, one row per sequence, in order."""
        ...

    def close(self) -> None:
        """Release native resources (idempotent)."""
        ...


BACKENDS = ("auto", "llama", "torch")


def choose_backend(backend: str, device: str | None) -> tuple[str, str]:
    """``(backend, reason)``: ``auto`` picks torch where it is installed and has AMX, AVX512-BF16 or CUDA."""
    if backend not in BACKENDS:
        raise ConfigurationError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")
    from .torch import cpu_flags, torch_available

    if backend == "llama":
        return "llama", "asked for (backend='llama')"
    if backend == "torch":
        if not torch_available():
            raise ConfigurationError('backend="torch" needs PyTorch: pip install "qwen-embed[torch]"')
        return "torch", "asked for (backend='torch')"
    if not torch_available():
        return "llama", "auto: PyTorch is not installed"
    import torch

    if (device or "").startswith("cuda") or (device is None and torch.cuda.is_available()):
        return "torch", "auto: CUDA is available"
    found = sorted(cpu_flags() & {"amx_bf16", "avx512_bf16"})
    if found:
        return "torch", f"auto: PyTorch with bfloat16 matmuls on this CPU ({', '.join(found)})"
    return "llama", "auto: no AMX, AVX512-BF16 or CUDA here, where llama.cpp is the faster engine"
