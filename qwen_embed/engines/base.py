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
from .gguf_info import GGUFInfo
from .hardware import Hardware, detect_hardware

__all__ = ["AUTO_TORCH_MIN_WIDTH", "BACKENDS", "Engine", "Pooling", "choose_backend"]

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

    def token_facts(self) -> tuple[int, tuple[str, ...]]:
        """``(bytes of the longest token, user-defined tokens)``: what cutting a text before tokenizing needs."""
        ...

    def embed(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Pooled, unnormalized float32 vectors, one row per sequence, in order."""
        ...

    def close(self) -> None:
        """Release native resources (idempotent)."""
        ...


BACKENDS = ("auto", "llama", "torch")

#: ``backend="auto"`` runs torch only on models at least this wide (the smallest official
#: Qwen3-Embedding is 1024 wide): below it the torch engine's per-layer overhead outweighs its
#: faster GEMMs, and single queries are slower than on llama.cpp (benchmarks/RESULTS.md).
AUTO_TORCH_MIN_WIDTH = 1024


def choose_backend(
    backend: str,
    device: str | None,
    *,
    info: GGUFInfo | None = None,
    dtype: str | None = None,
    memory_budget: int | None = None,
    hardware: Hardware | None = None,
) -> tuple[str, str]:
    """``(backend, reason)``: the engine to run and why, in words for ``repr``, logs and the doctor.

    One policy for every model kind (embedding models and rerankers). ``auto`` picks torch where
    all of these hold, else llama.cpp:

    - PyTorch is installed (``dtype=`` or ``device=`` given: torch, the only engine that takes them);
    - the model (``info``) is at least :data:`AUTO_TORCH_MIN_WIDTH` wide;
    - it has fast matmuls here (``hardware``, default :func:`~qwen_embed.engines.hardware.detect_hardware`):
      a CUDA GPU, or a CPU with AMX or AVX512-BF16 (bfloat16 GEMMs several times llama.cpp's on Q8_0;
      without them torch runs float32, four times the memory of Q8_0 and slower for single queries);
    - its weights in the torch dtype, plus working memory, fit ``memory_budget`` (default: the
      RAM available now, or the free GPU memory).

    Without ``info`` the width and memory checks are skipped.
    """
    if backend not in BACKENDS:
        raise ConfigurationError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")
    from .torch import torch_available

    if backend == "llama":
        return "llama", "asked for (backend='llama')"
    if backend == "torch":
        if not torch_available():
            raise ConfigurationError('backend="torch" needs PyTorch: pip install "qwen-embed[torch]"')
        return "torch", "asked for (backend='torch')"
    given = [f"{name}={value!r}" for name, value in (("dtype", dtype), ("device", device)) if value is not None]
    if not torch_available():
        if given:
            raise ConfigurationError(
                f'{" and ".join(given)} apply to the torch engine, which needs PyTorch: pip install "qwen-embed[torch]"'
            )
        return "llama", "auto: PyTorch is not installed"
    width = int(info.embedding_length or 0) if info is not None else AUTO_TORCH_MIN_WIDTH
    if given:
        hw = hardware or detect_hardware()
        gpu = "; CUDA is available" if device is None and hw.cuda else ""
        return "torch", f"auto: {' and '.join(given)} given, which only the torch engine takes{gpu}"
    if width < AUTO_TORCH_MIN_WIDTH:  # checked first: it needs no hardware probe
        return "llama", f"auto: the model is {width} wide, under {AUTO_TORCH_MIN_WIDTH}, where llama.cpp is faster"
    hw = hardware or detect_hardware()
    forced = "" if hw.source == "detected" else f" ({hw.source})"
    if hw.cuda:
        why = f"CUDA is available{forced}"
    else:
        found = hw.bf16_features
        if not found:
            return "llama", f"auto: no AMX, AVX512-BF16 or CUDA here{forced}, where llama.cpp is the faster engine"
        why = f"PyTorch with bfloat16 matmuls on this CPU ({', '.join(found)}){forced}"
    if info is None:
        return "torch", f"auto: {why}"
    return _check_budget(info, hw.torch_dtype("cuda" if hw.cuda else "cpu"), memory_budget, hw.cuda, why)


def _check_budget(info: GGUFInfo, dtype: str, budget: int | None, cuda: bool, why: str) -> tuple[str, str]:
    """Torch when its weights fit the budget (GPU memory on CUDA, else RAM); else llama.cpp, saying so."""
    from .._memory import OVERHEAD_BYTES, available_memory, format_size
    from ._weights import weight_bytes

    itemsize = 4 if dtype == "float32" else 2
    try:
        need = weight_bytes(info, int(info.block_count or 0), itemsize) + OVERHEAD_BYTES
    except Exception:  # an odd file: the engine itself will say what is wrong
        return "torch", f"auto: {why}"
    where = "available RAM"
    if budget is None:
        if cuda:
            budget, where = _free_gpu_memory(), "free GPU memory"
        else:
            budget = available_memory()
    else:
        where = "memory_budget"
    if need > budget:
        return "llama", (
            f"auto: the torch engine would need about {format_size(need)} ({dtype} weights and working memory), "
            f"more than the {where} ({format_size(budget)}), so llama.cpp runs the file as it is"
        )
    return "torch", f"auto: {why}; {dtype} weights fit the {where} ({format_size(need)} of {format_size(budget)})"


def _free_gpu_memory() -> int:
    """Free memory of the current CUDA device (0 when torch cannot tell, so llama.cpp is chosen)."""
    try:
        import torch

        return int(torch.cuda.mem_get_info()[0])
    except Exception:  # no usable GPU after all (a forced answer, a driver error)
        return 0
