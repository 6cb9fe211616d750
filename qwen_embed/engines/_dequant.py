"""GGUF block formats unpacked with torch tensor ops, bit-exact with ``gguf.quants.dequantize``.

Each function takes the raw bytes of whole blocks as a ``(n_blocks, type_size)`` uint8
tensor and returns ``(n_blocks, block_size)`` float32 values computed with the same
float32 operations, in the same order, as gguf-py's numpy code (so the results are
identical bit for bit). Torch runs them on all intra-op threads without Python loops;
:func:`dequantize_rows_into` feeds a tensor through in slices of rows, writing each slice
straight into the destination (of any dtype), so no whole-tensor float32 copy ever exists.

Supported: F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K (every type the official
Qwen3-Embedding GGUFs use). Other types go through gguf-py, slice by slice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["BLOCK_SIZES", "dequantize_blocks", "dequantize_rows_into", "supported", "unpack_into"]

QK_K = 256

#: ``type_name -> (elements per block, bytes per block)`` for the types unpacked here.
BLOCK_SIZES: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q8_0": (32, 34),
    "Q4_0": (32, 18),
    "Q5_0": (32, 22),
    "Q4_K": (QK_K, 144),
    "Q5_K": (QK_K, 176),
    "Q6_K": (QK_K, 210),
}

_CHUNK_BYTES = 1024 * 1024  # raw bytes unpacked per step: small temporaries, reused, in cache


def supported(type_name: str) -> bool:
    """Whether ``type_name`` is unpacked by torch ops here (else gguf-py's numpy code does it)."""
    return type_name in BLOCK_SIZES


def _scale(torch: Any, b: Any, byte: int) -> Any:
    """The float16 at ``byte`` of every block (``(n, type_size)`` uint8, even size) as ``(n, 1)`` float32."""
    return b.view(torch.float16)[:, byte // 2 : byte // 2 + 1].float()


def _nibbles(torch: Any, qs: Any, groups: int, width: int) -> Any:
    """Low then high nibbles of ``(n, groups * width)`` bytes -> ``(n, groups, 2, width)`` uint8."""
    q = qs.reshape(qs.shape[0], groups, 1, width)
    return torch.cat((q & 0x0F, q >> 4), dim=2)


def _bits(torch: Any, packed: Any, count: int) -> Any:
    """Little-endian bits of ``(n, count // 8)`` bytes -> ``(n, count)`` uint8 0/1 (bit i of the whole)."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    return ((packed[:, :, None] >> shifts) & 1).reshape(packed.shape[0], count)


# Each unpacker splits ``(n, type_size)`` blocks into integer quants ``q`` (n, groups, width),
# a float32 scale per group (n, groups, 1) and, for K-quants, a float32 minimum to subtract;
# the value is ``scale * q`` (``- min``): gguf-py's float32 operations in the same order.
_Parts = tuple[Any, Any, Any]


def _q8_0(torch: Any, b: Any) -> _Parts:
    return b[:, 2:].view(torch.int8).reshape(-1, 1, 32), _scale(torch, b, 0).reshape(-1, 1, 1), None


def _q4_0(torch: Any, b: Any) -> _Parts:
    q = _nibbles(torch, b[:, 2:], 1, 16).reshape(-1, 1, 32).to(torch.int8) - 8
    return q, _scale(torch, b, 0).reshape(-1, 1, 1), None


def _q5_0(torch: Any, b: Any) -> _Parts:
    n = b.shape[0]
    high = _bits(torch, b[:, 2:6], 32)
    low = _nibbles(torch, b[:, 6:], 1, 16).reshape(n, 32)
    q = (low | (high << 4)).to(torch.int8) - 16
    return q.reshape(n, 1, 32), _scale(torch, b, 0).reshape(n, 1, 1), None


def _k_scales(torch: Any, b: Any) -> tuple[Any, Any]:
    """Q4_K/Q5_K: ``d * scale`` and ``dmin * min`` per 32-value group, ``(n, 8, 1)`` float32 each."""
    n = b.shape[0]
    s = b[:, 4:16].reshape(n, 3, 4)
    d, m, m_d = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat((d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)), dim=1)
    mn = torch.cat((m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)), dim=1)
    return (_scale(torch, b, 0) * sc.float()).reshape(n, 8, 1), (_scale(torch, b, 2) * mn.float()).reshape(n, 8, 1)


def _q4_k(torch: Any, b: Any) -> _Parts:
    scale, minimum = _k_scales(torch, b)
    return _nibbles(torch, b[:, 16:], 4, 32).reshape(-1, 8, 32), scale, minimum


def _q5_k(torch: Any, b: Any) -> _Parts:
    n = b.shape[0]
    scale, minimum = _k_scales(torch, b)
    low = _nibbles(torch, b[:, 48:], 4, 32).reshape(n, 8, 32)
    shifts = torch.arange(8, dtype=torch.uint8, device=b.device).reshape(1, 8, 1)
    high = (b[:, 16:48].reshape(n, 1, 32) >> shifts) & 1
    return low | (high << 4), scale, minimum


def _q6_k(torch: Any, b: Any) -> _Parts:
    n = b.shape[0]
    low = _nibbles(torch, b[:, :128], 2, 64).reshape(n, 8, 32)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=b.device).reshape(1, 1, 4, 1)
    high = ((b[:, 128:192].reshape(n, 2, 1, 32) >> shifts) & 0x03).reshape(n, 8, 32)
    q = ((low | (high << 4)).to(torch.int8) - 32).reshape(n, 16, 16)
    scale = (_scale(torch, b, 208) * b[:, 192:208].view(torch.int8).float()).reshape(n, 16, 1)
    return q, scale, None


_FLOATS: dict[str, str] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_UNPACK: dict[str, Callable[[Any, Any], _Parts]] = {
    "Q8_0": _q8_0,
    "Q4_0": _q4_0,
    "Q5_0": _q5_0,
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
}


def unpack_into(torch: Any, out: Any, blocks: Any, type_name: str, scratch: Any = None) -> Any:
    """Float values of ``blocks`` written into ``out`` (``(n, block_size)``, any float dtype); returns ``out``.

    ``scratch`` (float32, at least ``out.numel()`` values) avoids a temporary when ``out`` is not float32.
    """
    if type_name in _FLOATS:
        return out.copy_(blocks.contiguous().view(getattr(torch, _FLOATS[type_name])).reshape(out.shape))
    if type_name not in _UNPACK:
        return out.copy_(_numpy_unpack(torch, blocks.reshape(-1).cpu(), type_name).reshape(out.shape))
    q, scale, minimum = _UNPACK[type_name](torch, blocks)
    work = out if out.dtype == torch.float32 and out.is_contiguous() else None
    if work is None:
        work = scratch[: out.numel()] if scratch is not None else torch.empty(out.numel(), device=out.device)
    work = work.view(q.shape)
    work.copy_(q)
    work.mul_(scale)
    if minimum is not None:
        work.sub_(minimum)
    if work.data_ptr() != out.data_ptr():
        out.copy_(work.view(out.shape))
    return out


def dequantize_blocks(torch: Any, raw: Any, type_name: str) -> Any:
    """Float32 values of whole blocks: ``raw`` is uint8, ``n_blocks * type_size`` bytes long.

    Returns a 1-D float32 tensor of ``n_blocks * block_size`` values.
    """
    block, size = BLOCK_SIZES[type_name]
    if raw.numel() % size:
        raise ValueError(f"{raw.numel()} bytes are not whole {type_name} blocks of {size} bytes")
    blocks = raw.reshape(-1, size)
    out = torch.empty((blocks.shape[0], block), dtype=torch.float32, device=raw.device)
    return unpack_into(torch, out, blocks, type_name).reshape(-1)


def _numpy_unpack(torch: Any, raw: Any, type_name: str) -> Any:
    """gguf-py's dequantization of whole blocks, for the types not unpacked in torch."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    values = dequantize(raw.numpy().reshape(1, -1), GGMLQuantizationType[type_name])
    return torch.from_numpy(values.reshape(-1))


def dequantize_rows_into(
    torch: Any,
    out: Any,
    read: Callable[[Any, int], None],
    type_name: str,
    *,
    block_size: int,
    type_size: int,
) -> None:
    """Fill the 2-D tensor ``out`` (any dtype) with a GGUF tensor's values, a slice of rows at a time.

    ``read(buffer, offset)`` must fill the uint8 tensor ``buffer`` with the tensor's raw bytes
    from ``offset`` (relative to the tensor's start). Rows are ``out.shape[1]`` values wide.
    Each slice is unpacked to float32 and rounded once into ``out``'s dtype (round to nearest
    even, as ``.to(dtype)`` does), so the result equals dequantizing in gguf-py then converting.
    Slices are about 1 MiB of raw bytes: their float32 temporaries stay in cache and are reused.
    """
    rows, cols = out.shape
    if cols % block_size:
        raise ValueError(f"rows of {cols} values are not whole {type_name} blocks of {block_size}")
    row_bytes = cols // block_size * type_size
    per_step = max(1, _CHUNK_BYTES // row_bytes)
    step_rows = min(rows, per_step)
    same_type = _FLOATS.get(type_name) == str(out.dtype).removeprefix("torch.")
    if same_type and out.is_contiguous() and out.device.type == "cpu":  # read the bytes straight into place
        read(out.reshape(-1).view(torch.uint8), 0)
        return
    buffer = torch.empty(step_rows * row_bytes, dtype=torch.uint8)
    scratch = torch.empty(step_rows * cols, dtype=torch.float32) if type_name in _UNPACK else None
    for start in range(0, rows, per_step):
        stop = min(rows, start + per_step)
        chunk = buffer[: (stop - start) * row_bytes]
        read(chunk, start * row_bytes)
        target = out[start:stop]
        if type_name in _UNPACK or type_name in _FLOATS:
            dest = target if target.device.type == "cpu" else torch.empty(target.shape, dtype=target.dtype)
            unpack_into(torch, dest.view(-1, block_size), chunk.view(-1, type_size), type_name, scratch)
            if dest is not target:
                target.copy_(dest)
        else:
            target.copy_(_numpy_unpack(torch, chunk, type_name).reshape(stop - start, cols))
