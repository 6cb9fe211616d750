"""Memory arithmetic shared by the downloader (``quant="auto"``) and the backend choice.

A neutral module: both :mod:`qwen_embed.hub` and :mod:`qwen_embed.engines` read it, so
neither imports the other.
"""

from __future__ import annotations

import os

from .errors import ConfigurationError

__all__ = ["OVERHEAD_BYTES", "available_memory", "format_size"]

#: Working memory beyond a model's weights: llama.cpp's compute buffers, our batch arrays, the interpreter.
OVERHEAD_BYTES = 512 * 1024 * 1024


def available_memory() -> int:
    """Bytes of RAM available to a new allocation now (``MemAvailable`` on Linux), else total RAM."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil  # type: ignore[import-not-found,unused-ignore]

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        raise ConfigurationError("Cannot read this machine's memory; pass memory_budget= (bytes).") from None


def format_size(n_bytes: int) -> str:
    """``1234567`` -> ``"1.23 MB"`` (decimal units, as the Hub lists file sizes)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.2f} {unit}"
    return f"{n_bytes} B"
