"""True quantized copies (llama_model_quantize) load and embed on the real engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qwen_embed import Embedder, read_gguf_info
from qwen_embed.engines.llama import LlamaCppEngine, needs_amx_workaround
from qwen_embed.testing import quantize_model

from .conftest import ModelFactory
from .reference import cosine

TEXTS = ["What is GGUF?", "Quantized weights, same vectors (almost).", "def f(x):\n    return x * 2", "向量"]


@pytest.fixture(scope="module")
def small_f32(model_factory: ModelFactory) -> Path:
    # K-quants need rows that are multiples of 256: the "small" shape has them.
    return model_factory(shape="small")


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_K_M", "Q6_K"])
def test_quantized_copy_embeds_close_to_f32(small_f32: Path, tmp_path: Path, quant: str) -> None:
    qpath = quantize_model(small_f32, tmp_path / f"small-{quant}.gguf", quant)
    assert read_gguf_info(qpath).quantization == quant
    with Embedder(small_f32) as ref, Embedder(qpath) as emb:
        assert emb.quantization == quant
        got, want = emb.encode(TEXTS), ref.encode(TEXTS)
    sims = [cosine(a, b) for a, b in zip(got, want)]
    print(f"\n{quant}: cosine to f32 min={min(sims):.5f} mean={np.mean(sims):.5f}")
    assert min(sims) > 0.9 if quant != "Q8_0" else min(sims) > 0.99


def test_factory_quant_option(model_factory: ModelFactory) -> None:
    path = model_factory(shape="small", quant="Q8_0")
    assert read_gguf_info(path).quantization == "Q8_0"


def test_amx_workaround_decision() -> None:
    assert needs_amx_workaround({"AMX_INT8": True}, quantized=True)
    assert not needs_amx_workaround({"AMX_INT8": True}, quantized=False)  # f16/f32 do not crash
    assert not needs_amx_workaround({"AVX512": True}, quantized=True)


def test_loading_without_extra_buffers_gives_the_same_vectors(model_factory: ModelFactory) -> None:
    """The AMX workaround (use_extra_bufts=False) changes where weights live, not the result."""
    path = model_factory(shape="small", quant="Q8_0")
    with Embedder(path) as emb:
        expected = emb.encode(TEXTS, normalize=False)
        seqs = [emb.tokenize(t) for t in TEXTS]
    engine = LlamaCppEngine(path, pooling="last", n_threads=2, max_context=4096, quantized=True, use_extra_bufts=False)
    try:
        np.testing.assert_allclose(engine.embed(seqs), expected, rtol=1e-4, atol=1e-4)
    finally:
        engine.close()
