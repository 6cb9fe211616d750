"""The PyTorch engine on the same GGUF: against the numpy reference and the llama.cpp engine."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch  # the torch extra is part of the test extra: missing fails, not skips

from qwen_embed import (
    ConfigurationError,
    Embedder,
    EmbedderClosedError,
    InputTooLongError,
    InputTypeError,
    InvalidInputError,
)
from qwen_embed.engines import hardware
from qwen_embed.engines import torch as te
from qwen_embed.engines.base import choose_backend
from qwen_embed.engines.gguf_info import read_gguf_info
from qwen_embed.testing import ModelShape, quantize_model

from .conftest import ModelFactory, real_vocab
from .reference import cosine
from .reference import embed as ref_embed

TEXTS = ["What is GGUF?", "a longer text about embeddings and vectors " * 6, "", "中文 🎉 Привет", "x"]


def _ref(path: Path, emb: Embedder, texts: list[str], pooling: str = "last") -> np.ndarray:
    return np.stack([ref_embed(str(path), emb.tokenize(t), pooling=pooling) for t in texts])


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(min(cosine(x, y) for x, y in zip(a, b)))


@pytest.fixture(scope="module")
def small_f32(model_factory: ModelFactory) -> Path:
    return model_factory(shape="small", seed=3)


@pytest.fixture(scope="module")
def pair(small_f32: Path) -> Iterator[tuple[Embedder, Embedder]]:
    with (
        Embedder(small_f32, n_threads=2) as llama,
        Embedder(small_f32, n_threads=2, backend="torch", dtype="float32") as t,
    ):
        yield llama, t


@pytest.mark.parametrize("add_eos", [True, False, None])
def test_float32_matches_the_reference_whatever_the_eos_flag(model_factory: ModelFactory, add_eos: bool | None) -> None:
    path = model_factory(add_eos_token=add_eos)
    with Embedder(path, n_threads=2, backend="torch", dtype="float32", normalize=False) as emb:
        assert emb.backend == "torch" and "engine=torch float32" in repr(emb)
        ids = emb.tokenize("hello world")
        assert ids[-1] == emb.eos_token_id and (ids == emb.eos_token_id).sum() == 1
        assert _min_cos(emb.encode(TEXTS), _ref(path, emb, TEXTS)) >= 0.99999


def test_float32_matches_llama_cpp_batched_and_single(pair: tuple[Embedder, Embedder]) -> None:
    llama, torch_emb = pair
    for text in TEXTS:
        np.testing.assert_array_equal(llama.tokenize(text), torch_emb.tokenize(text))
    batched = torch_emb.encode(TEXTS)
    assert _min_cos(batched, llama.encode(TEXTS)) >= 0.99999
    assert _min_cos(batched, np.stack([torch_emb.encode(t) for t in TEXTS])) >= 0.99999


def test_bfloat16_is_close(small_f32: Path, pair: tuple[Embedder, Embedder]) -> None:
    with Embedder(small_f32, n_threads=2, backend="torch", dtype="bfloat16") as emb:
        assert emb.engine == "torch bfloat16" and emb.compute_dtype == "bfloat16"
        assert pair[1].compute_dtype == "float32" and pair[0].compute_dtype is None  # llama.cpp: the file's types
        assert _min_cos(emb.encode(TEXTS), pair[0].encode(TEXTS)) >= 0.999


def test_mean_pooling(small_f32: Path) -> None:
    with Embedder(small_f32, n_threads=2, backend="torch", dtype="float32", pooling="mean", normalize=False) as emb:
        assert _min_cos(emb.encode(TEXTS), _ref(small_f32, emb, TEXTS, pooling="mean")) >= 0.99999


@pytest.mark.parametrize("quant", ["F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q5_0"])
def test_every_quant_type(small_f32: Path, tmp_path: Path, quant: str) -> None:
    path = quantize_model(small_f32, tmp_path / f"m-{quant}.gguf", quant)
    with (
        Embedder(path, n_threads=2, backend="torch", dtype="float32", normalize=False) as t,
        Embedder(path, n_threads=2, normalize=False) as llama,
    ):
        ours = t.encode(TEXTS)
        assert _min_cos(ours, _ref(path, t, TEXTS)) >= 0.99999  # same dequantized weights, exact maths
        assert _min_cos(ours, llama.encode(TEXTS)) >= 0.999  # llama.cpp also rounds activations to 8 bits


def test_tokenizer_identity_on_a_large_varied_corpus(model_factory: ModelFactory) -> None:
    """The Python standard library's sources and docstrings, tokenized both ways."""
    vocab = real_vocab()
    path = model_factory(vocab=vocab) if vocab else model_factory()
    lib = Path(inspect.getfile(os)).parent
    files = sorted(lib.glob("*.py"))[:120]
    texts = [f.read_text(encoding="utf-8", errors="replace")[:6000] for f in files]
    texts += ["naïve café — 東京 — Ελληνικά — عربى — 😀👍🏽 — ∀x∈ℝ", "\r\n\r\n\t  \u00a0\u2003 tabs"]
    with Embedder(path, n_threads=2) as llama, Embedder(path, n_threads=2, backend="torch", dtype="float32") as t:
        assert t._engine.tokenizer_source == "tokenizers (GGUF vocabulary)"  # type: ignore[attr-defined]
        total = 0
        for text in texts:
            a, b = llama.tokenize(text), t.tokenize(text)
            np.testing.assert_array_equal(a, b, err_msg=text[:80])
            total += len(a)
    assert total > 100_000


def test_falls_back_to_llama_cpp_tokens_when_the_bpe_disagrees(
    small_f32: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    real_build = te._build_bpe

    def gpt2_split(tokens: list[str], merges: list[str]) -> Tokenizer:  # failure injection: the wrong regex
        tokenizer = real_build(tokens, merges)
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        assert isinstance(tokenizer.model, models.BPE)
        return tokenizer

    monkeypatch.setattr(te, "_build_bpe", gpt2_split)
    with Embedder(small_f32, n_threads=2, backend="torch", dtype="float32") as t, Embedder(small_f32) as llama:
        assert t._engine.tokenizer_source == "llama.cpp"  # type: ignore[attr-defined]
        np.testing.assert_array_equal(
            t.tokenize("digits 1234567 and   spaces"), llama.tokenize("digits 1234567 and   spaces")
        )


def test_prompts_long_text_and_matryoshka_match_across_engines(pair: tuple[Embedder, Embedder]) -> None:
    llama, t = pair
    assert _min_cos(t.encode_queries(TEXTS[:2]), llama.encode_queries(TEXTS[:2])) >= 0.99999
    assert _min_cos(t.encode(TEXTS, dim=32), llama.encode(TEXTS, dim=32)) >= 0.99999
    doc = "# Title\n\n" + "Sentences about embeddings. " * 200
    a = t.encode_long(doc, chunk_tokens=96, overlap=16)
    b = llama.encode_long(doc, chunk_tokens=96, overlap=16)
    assert [(c.start, c.end) for c in a.chunks] == [(c.start, c.end) for c in b.chunks]
    assert cosine(a.vector, b.vector) >= 0.99999


def test_bad_inputs_on_the_torch_engine(small_f32: Path) -> None:
    emb = Embedder(small_f32, n_threads=2, backend="torch", dtype="float32", max_length=32)
    with pytest.raises(InputTypeError):
        emb.encode(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        emb.encode("bad \ud800 surrogate")
    with pytest.raises(InputTooLongError):
        emb.encode("word " * 100)
    emb.close()
    with pytest.raises(EmbedderClosedError):
        emb.encode("x")


def test_bad_options(small_f32: Path) -> None:
    with pytest.raises(ConfigurationError, match="dtype must be"):
        Embedder(small_f32, backend="torch", dtype="int8")
    with pytest.raises(ConfigurationError, match="apply to backend='torch'"):
        Embedder(small_f32, backend="llama", dtype="bfloat16")
    with pytest.raises(ConfigurationError, match="backend must be one of"):
        Embedder(small_f32, backend="onnx")


def test_auto_is_the_default_and_falls_back_without_torch(small_f32: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Embedder(small_f32, n_threads=2) as emb:  # 256 wide: llama.cpp on every machine
        assert emb.backend == "llama", emb.backend_reason
        assert emb.backend_reason == "auto: the model is 256 wide, under 1024, where llama.cpp is faster"
    with Embedder(small_f32, n_threads=2, dtype="float32") as emb:  # only torch takes dtype=
        assert emb.backend == "torch" and "dtype='float32' given" in emb.backend_reason
    monkeypatch.setattr(te, "torch_available", lambda: False)  # failure injection: a machine without torch
    with Embedder(small_f32, n_threads=2) as emb:
        assert emb.backend == "llama" and emb.backend_reason == "auto: PyTorch is not installed"
    with pytest.raises(ConfigurationError, match="needs PyTorch"):
        Embedder(small_f32, backend="torch")
    with pytest.raises(ConfigurationError, match=r"dtype='bfloat16' apply to the torch engine, which needs PyTorch"):
        Embedder(small_f32, dtype="bfloat16")


WIDE = ModelShape(n_layer=1, n_embd=1024, n_head=8, n_head_kv=4, head_dim=128, n_ff=512)


@pytest.fixture(scope="module")
def wide_model(model_factory: ModelFactory) -> Path:
    """The narrowest width ``auto`` runs on torch (the 0.6B's), one layer, small vocabulary."""
    return model_factory(shape=WIDE, dtype="f16")


def _machine(monkeypatch: pytest.MonkeyPatch, flags: set[str]) -> None:
    """Failure injection: this CPU's feature flags, and no CUDA."""
    monkeypatch.delenv("QWEN_EMBED_HARDWARE", raising=False)  # this test injects its own answer
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(hardware, "_cuda_available", lambda: False)


def test_auto_picks_torch_on_bfloat16_cpus_for_wide_models_that_fit(
    wide_model: Path, small_f32: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = read_gguf_info(wide_model)
    _machine(monkeypatch, {"avx512f", "avx512_bf16"})
    chosen, reason = choose_backend("auto", None, info=info)
    assert chosen == "torch" and "avx512_bf16" in reason and "bfloat16 weights fit the available RAM" in reason
    assert "CUDA" not in reason  # the embedder reads a CUDA pick from the reason
    with Embedder(wide_model, n_threads=2) as emb:  # the default, end to end
        assert emb.backend == "torch" and emb.engine == "torch bfloat16", emb.backend_reason
        assert emb.encode(["hello", "world"]).shape == (2, 1024)
    chosen, reason = choose_backend("auto", None, info=read_gguf_info(small_f32))
    assert chosen == "llama" and "256 wide, under 1024" in reason
    chosen, reason = choose_backend("auto", None, info=info, memory_budget=10_000_000)
    assert chosen == "llama" and "more than the memory_budget (10.00 MB)" in reason
    _machine(monkeypatch, {"avx512f", "avx512_vnni"})
    chosen, reason = choose_backend("auto", None, info=info)
    assert chosen == "llama" and "no AMX, AVX512-BF16 or CUDA" in reason


def test_auto_on_cuda_counts_gpu_memory(wide_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = read_gguf_info(wide_model)
    monkeypatch.delenv("QWEN_EMBED_HARDWARE", raising=False)  # this test injects its own answer
    monkeypatch.setattr(hardware, "_cuda_available", lambda: True)  # failure injection: a GPU machine
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (1 << 40, 1 << 40))
    chosen, reason = choose_backend("auto", None, info=info)
    assert chosen == "torch" and reason.startswith("auto: CUDA is available; bfloat16 weights fit the free GPU memory")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (1 << 20, 1 << 40))
    chosen, reason = choose_backend("auto", None, info=info)
    assert chosen == "llama" and "more than the free GPU memory" in reason


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.path.exists("/proc/driver/nvidia/version"),
    reason="Linux without an NVIDIA driver",
)
def test_auto_does_not_import_torch_to_pick_llama_cpp(small_f32: Path) -> None:
    """The default backend costs no ``import torch`` (about a second) where torch would not run."""
    code = (
        "import sys; from qwen_embed import Embedder; "
        f"e = Embedder({str(small_f32)!r}, n_threads=1); print(e.backend, 'torch' in sys.modules); e.close()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["llama", "False"]


def test_a_tokenizers_panic_falls_back_to_llama_cpps_tokenizer(small_f32: Path) -> None:
    from qwen_embed.engines.torch import _Tokenizer

    tokenizer = _Tokenizer(small_f32)
    expected = tokenizer.tokenize("a run of spaces:" + " " * 50)

    class PanicException(BaseException):  # what pyo3 raises when Oniguruma gives up (a ~10M-space run)
        pass

    class Panicking:  # failure injection: the tokenizers BPE panics
        def encode(self, text: str, add_special_tokens: bool = False) -> None:
            raise PanicException("Onig: Regex search error: retry-limit-in-match over")

    tokenizer.bpe = Panicking()
    assert tokenizer.tokenize("a run of spaces:" + " " * 50).tolist() == expected.tolist()
    tokenizer.close()
