"""quantize_embeddings equals sentence-transformers' on the same inputs and ranges."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from qwen_embed import ConfigurationError, DimensionError, InputTypeError
from qwen_embed.quantization import PRECISIONS, QuantizationRanges, dequantize_embeddings, quantize_embeddings

pytest.importorskip("sentence_transformers")
try:  # sentence-transformers 6 moved the module under util/
    from sentence_transformers.util import quantization as st_quantization
except ImportError:  # pragma: no cover - sentence-transformers 5
    from sentence_transformers import quantization as st_quantization  # type: ignore[no-redef]
ST_PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def _vectors(n: int, dim: int, seed: int = 0, dtype: Any = np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def _same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b)


@pytest.mark.parametrize("precision", ST_PRECISIONS)
@pytest.mark.parametrize("dim", [1024, 37, 8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_equals_sentence_transformers_with_calibration(precision: str, dim: int, dtype: Any) -> None:
    x = _vectors(40, dim, seed=1, dtype=dtype)
    calibration = _vectors(300, dim, seed=2)
    ours = quantize_embeddings(x, precision, calibration_embeddings=calibration)
    theirs = st_quantization.quantize_embeddings(x, precision, calibration_embeddings=calibration)
    _same(ours, theirs)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_equals_sentence_transformers_with_ranges(precision: str) -> None:
    x = _vectors(64, 96, seed=3)
    ranges = QuantizationRanges.from_embeddings(_vectors(500, 96, seed=4))
    theirs = st_quantization.quantize_embeddings(x, precision, ranges=ranges.as_array())
    _same(quantize_embeddings(x, precision, ranges=ranges), theirs)
    _same(quantize_embeddings(x, precision, ranges=ranges.as_array()), theirs)  # their (2, dim) layout too
    # values outside the ranges clip to the ends, as theirs do
    wide = x * 5
    _same(
        quantize_embeddings(wide, precision, ranges=ranges),
        st_quantization.quantize_embeddings(wide, precision, ranges=ranges.as_array()),
    )


def test_broken_ranges_differ_from_sentence_transformers() -> None:
    """The twin of the tests above: other ranges give other codes, so the comparison can fail."""
    x = _vectors(64, 96, seed=3)
    ranges = QuantizationRanges.from_embeddings(_vectors(500, 96, seed=4))
    shifted = QuantizationRanges(ranges.minimum - 0.01, ranges.maximum)
    theirs = st_quantization.quantize_embeddings(x, "int8", ranges=ranges.as_array())
    assert not np.array_equal(quantize_embeddings(x, "int8", ranges=shifted), theirs)


def test_broken_bit_order_differs_from_sentence_transformers() -> None:
    x = _vectors(16, 64, seed=5)
    little = np.packbits(x > 0, axis=-1, bitorder="little")
    theirs = st_quantization.quantize_embeddings(x, "ubinary")
    assert not np.array_equal(little, theirs)
    _same(quantize_embeddings(x, "ubinary"), theirs)


@pytest.mark.parametrize("precision", ["float32", "binary", "ubinary", "int8"])
def test_one_vector_keeps_its_shape(precision: str) -> None:
    x = _vectors(1, 50, seed=6)[0]
    ranges = QuantizationRanges.from_embeddings(_vectors(100, 50, seed=7))
    ours = quantize_embeddings(x, precision, ranges=ranges)
    theirs = st_quantization.quantize_embeddings(x, precision, ranges=ranges.as_array())
    _same(ours, theirs)
    assert ours.ndim == 1


@pytest.mark.parametrize("precision", ST_PRECISIONS)
def test_empty_matrix(precision: str) -> None:
    x = np.zeros((0, 20), dtype=np.float32)
    _same(quantize_embeddings(x, precision), st_quantization.quantize_embeddings(x, precision))


def test_constant_dimension_gets_step_one() -> None:
    calibration = _vectors(50, 12, seed=8)
    calibration[:, 3] = 0.25  # an empty range
    x = _vectors(10, 12, seed=9)
    _same(
        quantize_embeddings(x, "uint8", calibration_embeddings=calibration),
        st_quantization.quantize_embeddings(x, "uint8", calibration_embeddings=calibration),
    )


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_multi_vector_list_shares_ranges(precision: str) -> None:
    docs = [_vectors(n, 32, seed=10 + n) for n in (3, 7, 1)]
    calibration = _vectors(100, 32, seed=20)
    ours = quantize_embeddings(docs, precision, calibration_embeddings=calibration)
    theirs = st_quantization.quantize_embeddings(docs, precision, calibration_embeddings=calibration)
    assert isinstance(ours, list) and len(ours) == 3
    for a, b in zip(ours, theirs):
        _same(a, b)
    assert quantize_embeddings([], "int8") == []


def test_torch_tensors_bfloat16_included() -> None:
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(_vectors(8, 40, seed=11)).to(torch.bfloat16)
    calibration = _vectors(100, 40, seed=12)
    for precision in ("int8", "ubinary", "float32"):
        _same(
            quantize_embeddings(x, precision, calibration_embeddings=calibration),
            st_quantization.quantize_embeddings(x, precision, calibration_embeddings=calibration),
        )


def test_float16_is_a_cast() -> None:
    x = _vectors(5, 10, seed=13)
    out = quantize_embeddings(x, "float16")
    assert out.dtype == np.float16 and np.array_equal(out, x.astype(np.float16))
    assert "float16" in PRECISIONS


def test_int8_without_ranges_is_refused() -> None:
    """sentence-transformers guesses ranges from the batch; two batches would then be incomparable."""
    with pytest.raises(ConfigurationError, match=r"int8 quantization needs ranges= or calibration_embeddings="):
        quantize_embeddings(_vectors(10, 8), "int8")
    with pytest.raises(ConfigurationError, match=r"uint8 quantization needs ranges="):
        quantize_embeddings([_vectors(3, 8)], "uint8")


def test_bad_inputs() -> None:
    with pytest.raises(ConfigurationError, match=r"precision='int4' is not one of 'float32', 'float16'"):
        quantize_embeddings(_vectors(2, 8), "int4")
    with pytest.raises(InputTypeError, match=r"embeddings to quantize must be float, not int8"):
        quantize_embeddings(np.zeros((2, 8), dtype=np.int8), "binary")
    ranges = QuantizationRanges.from_embeddings(_vectors(10, 8))
    with pytest.raises(DimensionError, match=r"the quantization ranges have 8 dimensions, the vectors 9"):
        quantize_embeddings(_vectors(2, 9), "int8", ranges=ranges)
    with pytest.raises(DimensionError, match=r"ranges must have shape \(2, dim\)"):
        quantize_embeddings(_vectors(2, 8), "int8", ranges=np.zeros((3, 8)))
    with pytest.raises(ConfigurationError, match=r"maximum < minimum in dimension 0"):
        QuantizationRanges(np.ones(4), np.zeros(4))
    with pytest.raises(ConfigurationError, match=r"minimum holds a NaN"):
        QuantizationRanges(np.full(4, np.nan), np.zeros(4))


def test_ranges_round_trip_through_json_exactly() -> None:
    ranges = QuantizationRanges.from_embeddings(_vectors(100, 64, seed=14))
    import json

    back = QuantizationRanges.from_json(json.loads(json.dumps(ranges.to_json())))
    assert back == ranges and hash(back) == hash(ranges)
    assert back != QuantizationRanges(ranges.minimum, ranges.maximum + 1e-3)
    with pytest.raises(ValueError):
        ranges.minimum[0] = 1.0  # read-only


def test_dequantize_int8_within_one_step() -> None:
    x = _vectors(30, 64, seed=15)
    ranges = QuantizationRanges.from_embeddings(x)
    for precision in ("int8", "uint8"):
        back = dequantize_embeddings(quantize_embeddings(x, precision, ranges=ranges), precision, ranges)
        _, steps = ranges.steps()
        assert back.dtype == np.float32
        assert np.all(back <= x + 1e-6) and np.all(x - back <= steps + 1e-6)


def test_dequantize_binary_is_the_sign() -> None:
    x = _vectors(6, 21, seed=16)
    for precision in ("binary", "ubinary"):
        back = dequantize_embeddings(quantize_embeddings(x, precision), precision, dim=21)
        assert back.shape == (6, 21)
        assert np.array_equal(back, np.where(x > 0, 1.0, -1.0).astype(np.float32))
    with pytest.raises(DimensionError, match=r"dim=30 does not fit 3 packed bytes"):
        dequantize_embeddings(quantize_embeddings(x, "ubinary"), "ubinary", dim=30)
    with pytest.raises(ConfigurationError, match=r"dequantizing int8 vectors needs the ranges"):
        dequantize_embeddings(np.zeros((1, 4), np.int8), "int8")
