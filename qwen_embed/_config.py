"""Defaults and the environment variables the library reads (all in one place)."""

from __future__ import annotations

import os

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BATCH_TOKENS",
    "DEFAULT_MAX_LENGTH",
    "MIN_DIM",
    "default_threads",
    "forced_hardware",
]

#: Qwen's own examples and MTEB runs embed at most 8192 tokens.
DEFAULT_MAX_LENGTH = 8192
#: Most sequences packed into one decode.
DEFAULT_BATCH_SIZE = 64
#: Most tokens packed into one decode (a longer single text gets a decode of its own).
DEFAULT_BATCH_TOKENS = 1024
#: Smallest Matryoshka dimension Qwen3-Embedding supports.
MIN_DIM = 32

ENV_THREADS = "QWEN_EMBED_NUM_THREADS"
#: Forces the hardware answer of ``backend="auto"`` (see :mod:`qwen_embed.engines.hardware`).
ENV_HARDWARE = "QWEN_EMBED_HARDWARE"


def forced_hardware() -> str | None:
    """``$QWEN_EMBED_HARDWARE`` (``bf16-cpu``, ``amx-cpu``, ``plain-cpu``, ``cuda``), or ``None`` when unset."""
    value = os.environ.get(ENV_HARDWARE, "").strip().lower()
    return value or None


def default_threads() -> int:
    """Threads for llama.cpp: ``$QWEN_EMBED_NUM_THREADS``, else the CPUs this process may use."""
    value = os.environ.get(ENV_THREADS, "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n > 0:
            return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
