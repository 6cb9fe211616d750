from __future__ import annotations

from pathlib import Path

import pytest

from qwen_embed import InvalidModelFileError, read_gguf_info
from qwen_embed.testing import train_vocabulary

from .conftest import ModelFactory, real_vocab


def test_reads_what_the_factory_wrote(model_factory: ModelFactory) -> None:
    info = read_gguf_info(model_factory(add_eos_token=False, pooling_type=1, context_length=4096))
    assert info.architecture == "qwen3"
    assert info.embedding_length == 64
    assert info.context_length == 4096
    assert info.block_count == 2
    assert info.pooling_type == 1
    assert info.add_eos_token is False
    assert info.quantization == "F32"
    assert info.vocab_size == train_vocabulary().size
    names = {t.name for t in info.tensors}
    assert {"token_embd.weight", "output_norm.weight", "blk.1.ffn_down.weight"} <= names


def test_absent_keys_are_none(model_factory: ModelFactory) -> None:
    info = read_gguf_info(model_factory(add_eos_token=None, pooling_type=None))
    assert info.add_eos_token is None
    assert info.pooling_type is None


@pytest.mark.skipif(real_vocab() is None, reason="needs ../shared/vocab")
def test_vocabulary_file_arrays() -> None:
    path = real_vocab()
    assert path is not None
    info = read_gguf_info(path)
    assert info.vocab_size == 151936 and info.eos_token_id == 151643
    full = read_gguf_info(path, full_arrays=("tokenizer.ggml.tokens",))
    assert full.metadata["tokenizer.ggml.tokens"][151643] == "<|endoftext|>"


def test_header_cut_inside_metadata(tiny_model: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_model.read_bytes()[:200])
    with pytest.raises(InvalidModelFileError, match="truncated or corrupt"):
        read_gguf_info(cut)
