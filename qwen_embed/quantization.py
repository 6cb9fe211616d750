"""Smaller vectors: ``int8``/``uint8`` scalar quantization and ``binary``/``ubinary`` sign bits.

The arithmetic, shapes, dtypes and bit order are sentence-transformers' ``quantize_embeddings``,
so vectors quantized here and there are interchangeable (a user can switch libraries without
re-indexing):

- ``int8``/``uint8``: per dimension, ``[min, max]`` is cut into 255 steps,
  ``code = clip(floor((x - min) / step), 0, 255)`` (minus 128 for ``int8``). A dimension whose
  range is empty gets a step of 1.
- ``binary``/``ubinary``: the sign bits ``x > 0`` packed 8 per byte, first dimension in the
  most significant bit (``numpy.packbits``); ``binary`` is each byte minus 128 as ``int8``.
  1024 dimensions give 128 bytes.

One difference, on purpose: sentence-transformers computes the ``int8`` ranges from the batch
itself when it is given neither ``ranges`` nor ``calibration_embeddings`` (with a warning), which
makes vectors of two batches incomparable. Here that call is refused: compute the ranges once
with :meth:`QuantizationRanges.from_embeddings` on a representative sample, keep them with the
vectors (:mod:`qwen_embed.search` stores them in its manifest), and pass them to every call.

>>> ranges = QuantizationRanges.from_embeddings(sample)              # doctest: +SKIP
>>> codes = quantize_embeddings(vectors, "int8", ranges=ranges)      # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigurationError, DimensionError, InputTypeError

__all__ = ["PRECISIONS", "QuantizationRanges", "dequantize_embeddings", "quantize_embeddings"]

#: The precisions :func:`quantize_embeddings` writes (sentence-transformers' five, and float16).
PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")


@dataclass(frozen=True, eq=False)
class QuantizationRanges:
    """Per-dimension ``[min, max]`` of ``int8``/``uint8`` quantization (sentence-transformers' ``ranges``).

    Attributes:
        minimum: float32 array of shape ``(dim,)`` (read-only).
        maximum: float32 array of shape ``(dim,)`` (read-only), ``>= minimum``.
    """

    minimum: np.ndarray
    maximum: np.ndarray

    def __post_init__(self) -> None:
        low = _range_row(self.minimum, "minimum")
        high = _range_row(self.maximum, "maximum")
        if low.shape != high.shape:
            raise DimensionError(f"QuantizationRanges: minimum has {low.size} dimensions, maximum {high.size}")
        if bool(np.any(high < low)):
            first = int(np.argmax(high < low))
            raise ConfigurationError(
                f"QuantizationRanges: maximum < minimum in dimension {first} ({high[first]} < {low[first]})"
            )
        object.__setattr__(self, "minimum", low)
        object.__setattr__(self, "maximum", high)

    @classmethod
    def from_embeddings(cls, calibration: Any) -> QuantizationRanges:
        """The per-dimension min and max of ``calibration`` (a ``(n, dim)`` array of float vectors, n >= 1)."""
        data = _as_float_array(calibration, "calibration embeddings")
        if data.ndim != 2 or data.shape[0] == 0:
            raise DimensionError(f"calibration embeddings must be a non-empty (n, dim) matrix, not shape {data.shape}")
        return cls(np.min(data, axis=0), np.max(data, axis=0))

    @classmethod
    def from_array(cls, ranges: Any) -> QuantizationRanges:
        """From sentence-transformers' layout: a ``(2, dim)`` array, minima then maxima."""
        if isinstance(ranges, QuantizationRanges):
            return ranges
        array = np.asarray(ranges)
        if array.ndim != 2 or array.shape[0] != 2:
            raise DimensionError(f"ranges must have shape (2, dim) (minima, then maxima), not {array.shape}")
        return cls(array[0], array[1])

    @property
    def dim(self) -> int:
        """Number of dimensions."""
        return int(self.minimum.size)

    def as_array(self) -> np.ndarray:
        """sentence-transformers' layout: float32 ``(2, dim)``, minima then maxima."""
        return np.vstack((self.minimum, self.maximum))

    def to_json(self) -> list[list[float]]:
        """``[[minima...], [maxima...]]`` as Python floats (exact: every float32 is a float)."""
        return [self.minimum.astype(float).tolist(), self.maximum.astype(float).tolist()]

    @classmethod
    def from_json(cls, value: Any) -> QuantizationRanges:
        """The inverse of :meth:`to_json`."""
        if not isinstance(value, list) or len(value) != 2:
            raise ConfigurationError("quantization ranges must be [[minima...], [maxima...]]")
        return cls.from_array(np.asarray(value, dtype=np.float64))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantizationRanges):
            return NotImplemented
        return bool(np.array_equal(self.minimum, other.minimum) and np.array_equal(self.maximum, other.maximum))

    def __hash__(self) -> int:
        return hash((self.minimum.tobytes(), self.maximum.tobytes()))

    def __repr__(self) -> str:
        return f"QuantizationRanges(dim={self.dim})"

    def steps(self) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, steps)`` as sentence-transformers computes them (float32; an empty range gets step 1)."""
        steps = (self.maximum - self.minimum) / 255
        return self.minimum, np.where(steps == 0, 1, steps).astype(np.float32)


def quantize_embeddings(
    embeddings: Any,
    precision: str,
    ranges: QuantizationRanges | np.ndarray | None = None,
    calibration_embeddings: Any = None,
) -> Any:
    """Quantize float vectors as sentence-transformers does (same shapes, dtypes and bit order).

    Args:
        embeddings: Float vectors: a ``(n, dim)`` or ``(dim,)`` array, a list of them, a
            torch tensor, or a list of ``(tokens, dim)`` matrices (multi-vector: one list out,
            quantized with shared ranges).
        precision: ``"float32"``, ``"float16"``, ``"int8"``, ``"uint8"``, ``"binary"`` or ``"ubinary"``.
        ranges: For ``int8``/``uint8``: a :class:`QuantizationRanges` or a ``(2, dim)`` array.
        calibration_embeddings: For ``int8``/``uint8``, instead of ``ranges``: vectors whose
            per-dimension min and max are the ranges (``ranges`` wins when both are given).

    Returns:
        ``float32``/``float16`` ``(…, dim)``; ``int8``/``uint8`` ``(…, dim)``; ``binary``
        (``int8``) or ``ubinary`` (``uint8``) ``(…, ceil(dim / 8))``.

    Raises:
        ConfigurationError: An unknown precision, or ``int8``/``uint8`` with neither ``ranges``
            nor ``calibration_embeddings`` (ranges guessed from each batch would make batches
            incomparable; see :meth:`QuantizationRanges.from_embeddings`).
        InputTypeError: The embeddings are already ``int8``/``uint8``.
        DimensionError: ``ranges`` do not have the embeddings' dimension.
    """
    if precision not in PRECISIONS:
        raise ConfigurationError(f"precision={precision!r} is not one of {', '.join(map(repr, PRECISIONS))}")
    if isinstance(embeddings, list) and not embeddings:
        return []
    if isinstance(embeddings, list) and _is_matrix(embeddings[0]):  # multi-vector: shared ranges
        matrices = [_as_float_array(m, "embeddings") for m in embeddings]
        shared: QuantizationRanges | None = None
        if precision in ("int8", "uint8"):
            shared = _ranges_for(precision, ranges, calibration_embeddings, matrices[0].shape[-1])
        return [quantize_embeddings(m, precision, ranges=shared) for m in matrices]
    array = _as_float_array(embeddings, "embeddings")
    dim = array.shape[-1] if array.ndim else 0
    if array.ndim == 2 and array.shape[0] == 0:
        return _empty(precision, dim, array)
    if precision == "float32":
        return array.astype(np.float32)
    if precision == "float16":
        return array.astype(np.float16)
    if precision in ("int8", "uint8"):
        chosen = _ranges_for(precision, ranges, calibration_embeddings, dim)
        starts, steps = chosen.steps()
        codes = np.clip(np.floor((array - starts) / steps), 0, 255)
        if precision == "uint8":
            return codes.astype(np.uint8)
        return (codes - 128).astype(np.int8)
    bits = np.packbits(array > 0, axis=-1)
    if precision == "ubinary":
        return bits
    return (bits ^ np.uint8(0x80)).view(np.int8)  # byte - 128, as int8


def dequantize_embeddings(
    codes: np.ndarray, precision: str, ranges: QuantizationRanges | np.ndarray | None = None, *, dim: int | None = None
) -> np.ndarray:
    """Float32 vectors back from quantized ones (what rescoring compares a float query with).

    ``int8``/``uint8``: each code's step start, ``(code [+ 128]) * step + min``, with ``ranges``.
    ``binary``/``ubinary``: ``+1.0`` for a set bit and ``-1.0`` for a clear one, cut to ``dim``
    (the packing pads to whole bytes). ``float32``/``float16``: cast to float32.
    """
    if precision not in PRECISIONS:
        raise ConfigurationError(f"precision={precision!r} is not one of {', '.join(map(repr, PRECISIONS))}")
    array = np.asarray(codes)
    if precision in ("float32", "float16"):
        return array.astype(np.float32)
    if precision in ("int8", "uint8"):
        if ranges is None:
            raise ConfigurationError(f"dequantizing {precision} vectors needs the ranges they were quantized with")
        chosen = _check_dim(QuantizationRanges.from_array(ranges), array.shape[-1])
        starts, steps = chosen.steps()
        values = array.astype(np.float32)
        if precision == "int8":
            values += 128
        out: np.ndarray = values * steps + starts
        return out
    raw = array.view(np.uint8) ^ np.uint8(0x80) if precision == "binary" else array.view(np.uint8)
    bits = np.unpackbits(raw, axis=-1)
    if dim is not None:
        if not 0 < dim <= bits.shape[-1] or dim <= bits.shape[-1] - 8:
            raise DimensionError(f"dim={dim} does not fit {raw.shape[-1]} packed bytes")
        bits = bits[..., :dim]
    return bits.astype(np.float32) * 2 - 1


# ---------------------------------------------------------------------- helpers


def _range_row(value: Any, what: str) -> np.ndarray:
    row = np.array(value, dtype=np.float32).reshape(-1) if np.ndim(value) == 1 else None
    if row is None or row.size == 0:
        raise DimensionError(f"QuantizationRanges.{what} must be a non-empty 1-D array, not shape {np.shape(value)}")
    if not bool(np.all(np.isfinite(row))):
        raise ConfigurationError(f"QuantizationRanges.{what} holds a NaN or an infinity")
    row.flags.writeable = False
    return row


def _is_matrix(item: Any) -> bool:
    return np.ndim(item) == 2


def _as_float_array(value: Any, what: str) -> np.ndarray:
    if type(value).__module__.split(".")[0] == "torch":  # a tensor, without importing torch
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        value = tensor.numpy()
    elif isinstance(value, list) and value and type(value[0]).__module__.split(".")[0] == "torch":
        return _as_float_array(np.stack([_as_float_array(v, what) for v in value]), what)
    array = np.asarray(value)
    if array.dtype in (np.int8, np.uint8):
        raise InputTypeError(f"{what} to quantize must be float, not {array.dtype} (they look quantized already)")
    if array.dtype == object or array.dtype.kind not in "fiub":
        raise InputTypeError(f"{what} must be numbers, not {array.dtype}")
    return array


def _check_dim(ranges: QuantizationRanges, dim: int) -> QuantizationRanges:
    if ranges.dim != dim:
        raise DimensionError(f"the quantization ranges have {ranges.dim} dimensions, the vectors {dim}")
    return ranges


def _ranges_for(precision: str, ranges: Any, calibration: Any, dim: int) -> QuantizationRanges:
    if ranges is not None:
        return _check_dim(QuantizationRanges.from_array(ranges), dim)
    if calibration is not None:
        return _check_dim(QuantizationRanges.from_embeddings(calibration), dim)
    raise ConfigurationError(
        f"{precision} quantization needs ranges= or calibration_embeddings=: ranges taken from each batch would "
        "make vectors of different batches incomparable. Compute them once with "
        "QuantizationRanges.from_embeddings(sample) and pass ranges= to every call (keep them with the vectors)."
    )


def _empty(precision: str, dim: int, array: np.ndarray) -> np.ndarray:
    if precision in ("int8", "uint8"):
        return np.zeros((0, dim), dtype=np.int8 if precision == "int8" else np.uint8)
    if precision in ("binary", "ubinary"):
        return np.zeros((0, math.ceil(dim / 8)), dtype=np.int8 if precision == "binary" else np.uint8)
    return array.astype(np.float16 if precision == "float16" else np.float32)
