"""Torch dequantization of GGUF blocks: bit for bit what gguf-py computes, and the loader built on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from qwen_embed.engines import _dequant, _weights
from qwen_embed.engines.gguf_info import read_gguf_info
from qwen_embed.testing import quantize_model

from .conftest import ModelFactory

TYPES = list(_dequant.BLOCK_SIZES)
# Byte offsets of the float16 scales in each block layout (set to finite values for the exact check).
SCALE_BYTES = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


def _random_blocks(type_name: str, n_blocks: int, *, finite: bool, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    _, size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    if type_name in ("F32", "F16", "BF16") and finite:  # one value per "block"
        values = rng.standard_normal(n_blocks).astype(np.float32) * 100
        if type_name == "F16":
            return values.astype("<f2").view(np.uint8).copy()
        if type_name == "BF16":
            return (values.view(np.uint32) >> 16).astype("<u2").view(np.uint8).copy()
        return values.view(np.uint8).copy()
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    if finite:
        for byte in SCALE_BYTES.get(type_name, []):
            scales = rng.standard_normal(n_blocks).astype(np.float16) * np.float16(0.01)
            raw[:, byte : byte + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


def _gguf(raw: np.ndarray, type_name: str) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        return dequantize(raw.reshape(1, -1), GGMLQuantizationType[type_name]).reshape(-1).astype(np.float32)


def _ours(raw: np.ndarray, type_name: str) -> np.ndarray:
    return _dequant.dequantize_blocks(torch, torch.from_numpy(raw.copy()), type_name).numpy()


@pytest.mark.parametrize("type_name", TYPES)
def test_random_blocks_with_finite_scales_match_gguf_py_bit_for_bit(type_name: str) -> None:
    raw = _random_blocks(type_name, 3000, finite=True)
    ref, ours = _gguf(raw, type_name), _ours(raw, type_name)
    assert np.isfinite(ref).all()
    np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("type_name", TYPES)
def test_arbitrary_bytes_match_gguf_py_up_to_nan_payloads(type_name: str) -> None:
    raw = _random_blocks(type_name, 3000, finite=False, seed=1)
    ref, ours = _gguf(raw, type_name), _ours(raw, type_name)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    keep = ~np.isnan(ref)
    np.testing.assert_array_equal(ours[keep].view(np.uint32), ref[keep].view(np.uint32))


def test_a_partial_block_is_refused() -> None:
    with pytest.raises(ValueError, match="not whole Q8_0 blocks"):
        _dequant.dequantize_blocks(torch, torch.zeros(35, dtype=torch.uint8), "Q8_0")


def _read_from(raw: np.ndarray):  # type: ignore[no-untyped-def]
    def read(buffer: torch.Tensor, offset: int) -> None:
        buffer.copy_(torch.from_numpy(raw[offset : offset + buffer.numel()].copy()))

    return read


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_K", "Q6_K", "F16", "F32"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rows_into_any_dtype_round_once_across_slices(
    type_name: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_dequant, "_CHUNK_BYTES", 3000)  # many slices, one ending mid-tensor
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    rows, cols = 37, 512
    raw = _random_blocks(type_name, rows * cols // block, finite=True, seed=2)
    out = torch.empty(rows, cols, dtype=dtype)
    _dequant.dequantize_rows_into(torch, out, _read_from(raw), type_name, block_size=block, type_size=size)
    expected = torch.from_numpy(_gguf(raw, type_name).reshape(rows, cols)).to(dtype)
    assert torch.equal(out.view(torch.uint8), expected.view(torch.uint8))


def test_other_types_go_through_gguf_py() -> None:
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType.Q4_1]
    raw = _random_blocks("Q4_1", 64, finite=True, seed=3)
    out = torch.empty(8, 256)
    _dequant.dequantize_rows_into(torch, out, _read_from(raw), "Q4_1", block_size=block, type_size=size)
    np.testing.assert_array_equal(out.numpy().reshape(-1), _gguf(raw, "Q4_1"), strict=False)


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_0", "Q5_0", "Q4_K_M", "Q5_K_M", "Q6_K", "BF16", "F16"])
def test_real_quantized_files_load_exactly_as_gguf_py_dequantizes(
    model_factory: ModelFactory, tmp_path: Path, quant: str
) -> None:
    """Every weight of a llama.cpp-quantized file, through the loader, against gguf-py tensor by tensor."""
    path = quantize_model(model_factory(shape="small", seed=5), tmp_path / f"m-{quant}.gguf", quant)
    info = read_gguf_info(path)
    n_layer = int(info.block_count or 0)
    weights = _weights.load_gguf_weights(info, n_layer=n_layer, torch=torch, dtype=torch.float32, device="cpu")
    data = np.fromfile(path, dtype=np.uint8)
    types: set[str] = set()
    for key, (shape, matrix, names) in _weights.weight_shapes(info, n_layer).items():
        got = weights[key]
        if key == "token_embd":  # kept as raw rows: look every row up
            got = got.lookup(torch.arange(shape[0]), torch.float32)
        parts = []
        for name in names:
            tensor = next(t for t in info.tensors if t.name == name)
            types.add(tensor.type_name)
            start = info.data_offset + tensor.offset
            parts.append(
                _gguf(data[start : start + tensor.n_bytes], tensor.type_name).reshape(tuple(reversed(tensor.shape)))
            )
        expected = np.concatenate(parts) if matrix else parts[0]
        np.testing.assert_array_equal(got.numpy().view(np.uint32), expected.view(np.uint32), err_msg=key)
    main_type = {"Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K"}.get(quant, quant)
    assert main_type in types, types  # the file really held that type (K-quant mixes add Q6_K)


def test_threads_give_the_same_weights(
    model_factory: ModelFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_weights, "_TASK_BYTES", 4096)  # every matrix split into many tasks
    path = quantize_model(model_factory(shape="small", seed=6), tmp_path / "m.gguf", "Q8_0")
    info = read_gguf_info(path)
    n_layer = int(info.block_count or 0)
    threads_before = torch.get_num_threads()
    one = _weights.load_gguf_weights(info, n_layer=n_layer, torch=torch, dtype=torch.bfloat16, device="cpu")
    two = _weights.load_gguf_weights(info, n_layer=n_layer, torch=torch, dtype=torch.bfloat16, device="cpu", threads=2)
    assert torch.get_num_threads() == threads_before  # the intra-op pool is restored
    assert one.keys() == two.keys()
    table = one.pop("token_embd")
    assert torch.equal(table.raw, two.pop("token_embd").raw)
    for key in one:
        assert torch.equal(one[key], two[key]), key
    expected = _weights.weight_bytes(info, n_layer, 2)
    assert expected == table.nbytes + sum(t.numel() * t.element_size() for t in one.values())


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_K_M", "F16"])
def test_embedding_rows_look_up_exactly_what_the_whole_table_dequantizes_to(
    model_factory: ModelFactory, tmp_path: Path, quant: str
) -> None:
    path = quantize_model(model_factory(shape="small", seed=7), tmp_path / f"m-{quant}.gguf", quant)
    info = read_gguf_info(path)
    table = _weights.load_gguf_weights(info, n_layer=0, torch=torch, dtype=torch.bfloat16, device="cpu")["token_embd"]
    tensor = next(t for t in info.tensors if t.name == "token_embd.weight")
    start = info.data_offset + tensor.offset
    whole = _gguf(np.fromfile(path, dtype=np.uint8)[start : start + tensor.n_bytes], tensor.type_name)
    whole_t = torch.from_numpy(whole.reshape(table.shape))
    ids = torch.tensor([[5, 0, 17], [table.shape[0] - 1, 5, 3]])
    assert torch.equal(table.lookup(ids, torch.float32), whole_t[ids])
    assert torch.equal(table.lookup(ids, torch.bfloat16), whole_t[ids].to(torch.bfloat16))


def test_a_truncated_read_is_a_clear_error(model_factory: ModelFactory, tmp_path: Path) -> None:
    from qwen_embed.errors import ModelLoadError

    path = quantize_model(model_factory(shape="small", seed=6), tmp_path / "m.gguf", "Q8_0")
    info = read_gguf_info(path)
    with open(path, "r+b") as handle:  # failure injection: the file shrinks after its header was read
        handle.truncate(info.data_offset + 1000)
    with pytest.raises(ModelLoadError, match="unexpected end of file"):
        _weights.load_gguf_weights(
            info, n_layer=int(info.block_count or 0), torch=torch, dtype=torch.float32, device="cpu"
        )
