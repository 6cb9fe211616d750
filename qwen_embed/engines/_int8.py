"""Int8 linear layers for the torch engine (``dtype="int8"``, CPU): int8 weights x int8 activations.

Weights are quantized once per output row (symmetric, scale = max |w| / 127); activations per
token at run time, the same way. The product runs in ``torch._int_mm`` (int32 accumulation:
VNNI / AMX-INT8 kernels through oneDNN where the CPU has them) and is scaled back to float32.
``torch._int_mm`` is a private API: :func:`int8_supported` probes it once and the engine
refuses ``dtype="int8"`` with a clear error where it is missing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Int8Linear", "int8_supported", "quantize_rows"]

_MIN_ROWS = 17  # torch._int_mm wants more than 16 rows of activations


def int8_supported(torch: Any) -> bool:
    """Whether this PyTorch has a working ``torch._int_mm`` on the CPU."""
    try:
        a = torch.ones((_MIN_ROWS, 8), dtype=torch.int8)
        out = torch._int_mm(a, torch.ones((8, 8), dtype=torch.int8))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return bool(out.dtype == torch.int32 and int(out[0, 0]) == 8)


class Int8Linear:
    """``x @ w.T`` with ``w`` stored as int8 rows and one float32 scale per row."""

    def __init__(self, torch: Any, weight: Any, scale: Any) -> None:
        self._torch = torch
        self.weight = weight  # (out, in) int8, contiguous
        self.scale = scale  # (out,) float32

    def __getitem__(self, rows: slice) -> Int8Linear:
        return Int8Linear(self._torch, self.weight[rows], self.scale[rows])

    def __call__(self, x: Any) -> Any:
        torch = self._torch
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).float()
        n = flat.shape[0]
        if n < _MIN_ROWS:
            flat = torch.cat((flat, flat.new_zeros((_MIN_ROWS - n, flat.shape[1]))))
        step = flat.abs().amax(dim=1, keepdim=True).clamp_min_(1e-12).div_(127.0)
        quantized = torch.round(flat / step).to(torch.int8)
        acc = torch._int_mm(quantized, self.weight.t())[:n]
        out = acc.float().mul_(step[:n]).mul_(self.scale)
        return out.reshape(*shape[:-1], out.shape[-1])


def quantize_rows(torch: Any, weight: Any) -> Int8Linear:
    """Int8 rows of a float matrix (any float dtype), ``scale = max |row| / 127``."""
    rows = weight.shape[0]
    q = torch.empty(weight.shape, dtype=torch.int8)
    scale = torch.empty(rows, dtype=torch.float32)
    step = max(1, (4 << 20) // max(1, weight.shape[1] * 4))  # a few MiB of float32 at a time
    for start in range(0, rows, step):
        block = weight[start : start + step].float()
        s = block.abs().amax(dim=1).clamp_min_(1e-12).div_(127.0)
        q[start : start + step] = torch.round(block / s[:, None]).to(torch.int8)
        scale[start : start + step] = s
    return Int8Linear(torch, q, scale)
