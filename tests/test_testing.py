"""The model factory users import: qwen_embed.testing."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_embed import Embedder, read_gguf_info
from qwen_embed.testing import SHAPES, ModelShape, make_model, quantize_model, train_vocabulary

from .conftest import real_vocab


def test_trained_vocabulary_has_the_qwen_special_tokens() -> None:
    vocab = train_vocabulary(vocab_size=600)
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert token in vocab.tokens
    assert vocab.tokens[vocab.eos_id] == "<|endoftext|>"
    assert vocab.size == len(vocab.token_types)
    assert train_vocabulary(vocab_size=600) == vocab  # seeded and cached


def test_real_shapes_are_the_published_ones() -> None:
    assert SHAPES["0.6B"] == ModelShape(n_layer=28, n_embd=1024, n_head=16, n_head_kv=8, head_dim=128, n_ff=3072)
    assert SHAPES["4B"].n_embd == 2560 and SHAPES["4B"].n_layer == 36 and SHAPES["4B"].n_ff == 9728
    assert SHAPES["8B"].n_embd == 4096 and SHAPES["8B"].n_ff == 12288


def test_custom_shape_and_seed(tmp_path: Path) -> None:
    shape = ModelShape(n_layer=1, n_embd=32, n_head=2, n_head_kv=1, head_dim=16, n_ff=64)
    a = make_model(tmp_path / "a.gguf", shape=shape, seed=1, dtype="f16")
    b = make_model(tmp_path / "b.gguf", shape=shape, seed=2, dtype="f16")
    assert read_gguf_info(a).quantization == "F16"
    with Embedder(a) as ea, Embedder(b) as eb:
        assert ea.native_dim == 32
        assert float(ea.encode("same text") @ eb.encode("same text")) < 0.999  # other seed, other weights


@pytest.mark.skipif(real_vocab() is None, reason="needs ../shared/vocab")
def test_real_vocabulary_copied(tmp_path: Path) -> None:
    path = make_model(tmp_path / "real.gguf", vocab=real_vocab())
    info = read_gguf_info(path)
    assert info.vocab_size == 151936
    assert info.metadata["tokenizer.ggml.pre"] == "qwen2"


def test_unknown_quant(tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(Exception, match="Unknown quantization 'Q9_9'"):
        quantize_model(tiny_model, tmp_path / "x.gguf", "Q9_9")
