"""What this machine offers the engines: CPU features and CUDA, detected once or forced.

The backend choice (``backend="auto"``) and the torch engine's default dtype read a
:class:`Hardware`; :func:`detect_hardware` reads the machine, unless ``$QWEN_EMBED_HARDWARE``
names one of :data:`FORCED_HARDWARE` (``bf16-cpu``, ``amx-cpu``, ``plain-cpu``, ``cuda``), so a
test run (or a user) on any machine can see the decisions another machine would make.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import _config
from ..errors import ConfigurationError

__all__ = ["FORCED_HARDWARE", "Hardware", "cpu_flags", "detect_hardware"]

_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@dataclass(frozen=True)
class Hardware:
    """The facts the backend choice needs.

    Attributes:
        cpu_flags: The CPU's feature flags (``/proc/cpuinfo`` names: ``avx512_bf16``, ``amx_bf16``, ...).
        cuda: Whether a CUDA GPU is usable by PyTorch.
        source: ``"detected"``, or how the answer was forced.
    """

    cpu_flags: frozenset[str]
    cuda: bool
    source: str = "detected"

    @property
    def bf16_features(self) -> tuple[str, ...]:
        """The CPU features that make bfloat16 matmuls fast (AMX, AVX512-BF16), sorted."""
        return tuple(sorted(self.cpu_flags & _BF16_FLAGS))

    def torch_dtype(self, device: str) -> str:
        """The torch engine's default dtype: bfloat16 on CUDA and on AMX/AVX512-BF16 CPUs, else float32."""
        return "bfloat16" if device.startswith("cuda") or self.bf16_features else "float32"


#: Answers ``$QWEN_EMBED_HARDWARE`` can force (CI runs the suite under ``bf16-cpu`` on every machine).
FORCED_HARDWARE: dict[str, Hardware] = {
    "plain-cpu": Hardware(frozenset({"avx2"}), False, "forced: QWEN_EMBED_HARDWARE=plain-cpu"),
    "bf16-cpu": Hardware(
        frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}), False, "forced: QWEN_EMBED_HARDWARE=bf16-cpu"
    ),
    "amx-cpu": Hardware(
        frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}),
        False,
        "forced: QWEN_EMBED_HARDWARE=amx-cpu",
    ),
    "cuda": Hardware(frozenset({"avx2"}), True, "forced: QWEN_EMBED_HARDWARE=cuda"),
}


def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _cuda_available() -> bool:
    """``torch.cuda.is_available()``, without importing torch (a second) on Linux hosts with no NVIDIA driver."""
    if sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia/version"):
        return False
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def detect_hardware() -> Hardware:
    """This machine's :class:`Hardware`, or the answer ``$QWEN_EMBED_HARDWARE`` forces."""
    forced = _config.forced_hardware()
    if forced is not None:
        try:
            return FORCED_HARDWARE[forced]
        except KeyError:
            raise ConfigurationError(
                f"{_config.ENV_HARDWARE}={forced!r} is not one of {', '.join(FORCED_HARDWARE)} (or unset)."
            ) from None
    return Hardware(cpu_flags(), _cuda_available())
