"""One backend policy for every model kind, with the hardware answer injected (any CI machine sees every decision)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_embed import ConfigurationError, Embedder, Reranker
from qwen_embed.engines.base import AUTO_TORCH_MIN_WIDTH, choose_backend
from qwen_embed.engines.gguf_info import read_gguf_info
from qwen_embed.engines.hardware import FORCED_HARDWARE, Hardware, detect_hardware
from qwen_embed.testing import ModelShape

from .conftest import ModelFactory
from .reranker_support import make_reranker_gguf, reranker_vocabulary

pytest.importorskip("torch")

PLAIN = Hardware(frozenset({"avx2"}), False)
BF16 = Hardware(frozenset({"avx512f", "avx512_bf16"}), False)
AMX = Hardware(frozenset({"amx_bf16", "avx512_bf16"}), False)
VNNI_ONLY = Hardware(frozenset({"avx512f", "avx512_vnni"}), False)
WIDE = ModelShape(n_layer=1, n_embd=1024, n_head=8, n_head_kv=4, head_dim=128, n_ff=512)  # the 0.6B's width


def test_forced_hardware_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_EMBED_HARDWARE", "bf16-cpu")
    assert detect_hardware() == FORCED_HARDWARE["bf16-cpu"]
    assert detect_hardware().torch_dtype("cpu") == "bfloat16"
    monkeypatch.setenv("QWEN_EMBED_HARDWARE", "plain-cpu")
    assert detect_hardware().torch_dtype("cpu") == "float32"
    monkeypatch.setenv("QWEN_EMBED_HARDWARE", "tpu")
    with pytest.raises(ConfigurationError, match=r"QWEN_EMBED_HARDWARE='tpu' is not one of plain-cpu, bf16-cpu"):
        detect_hardware()
    monkeypatch.delenv("QWEN_EMBED_HARDWARE")
    assert detect_hardware().source == "detected"


@pytest.mark.parametrize("hardware", [PLAIN, BF16, AMX, VNNI_ONLY, FORCED_HARDWARE["cuda"]])
def test_narrow_models_run_on_llama_whatever_the_hardware(tiny_model: Path, hardware: Hardware) -> None:
    chosen, reason = choose_backend("auto", None, info=read_gguf_info(tiny_model), hardware=hardware)
    assert chosen == "llama" and f"under {AUTO_TORCH_MIN_WIDTH}" in reason


@pytest.mark.parametrize(
    ("hardware", "expected"), [(PLAIN, "llama"), (VNNI_ONLY, "llama"), (BF16, "torch"), (AMX, "torch")]
)
def test_wide_models_follow_the_cpu(model_factory: ModelFactory, hardware: Hardware, expected: str) -> None:
    info = read_gguf_info(model_factory(shape=WIDE, dtype="f16"))
    chosen, reason = choose_backend("auto", None, info=info, hardware=hardware)
    assert chosen == expected, reason
    if expected == "torch":
        assert "bfloat16 weights fit the available RAM" in reason
        chosen, reason = choose_backend("auto", None, info=info, hardware=hardware, memory_budget=10_000_000)
        assert chosen == "llama" and "more than the memory_budget (10.00 MB)" in reason
    else:
        assert "no AMX, AVX512-BF16 or CUDA here" in reason


def test_both_model_kinds_choose_alike_under_a_forced_bf16_cpu(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reranker used to skip the width check: a 64-wide test reranker ran on torch bfloat16 on BF16 CPUs."""
    monkeypatch.setenv("QWEN_EMBED_HARDWARE", "bf16-cpu")
    with Embedder(tiny_model, n_threads=1) as emb:
        assert emb.backend == "llama" and "wide, under 1024" in emb.backend_reason
    path = make_reranker_gguf(tmp_path / "rr.gguf", reranker_vocabulary(None))
    with Reranker(path, n_threads=1) as rr:
        assert rr.backend == "llama" and "wide, under 1024" in rr.backend_reason, rr.backend_reason
