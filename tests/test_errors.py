"""Bad input gets a clear exception from the library's own hierarchy."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from qwen_embed import (
    ConfigurationError,
    DimensionError,
    Embedder,
    InputTooLongError,
    InputTypeError,
    InvalidInputError,
    InvalidModelFileError,
    ModelLoadError,
    ModelNotFoundError,
    QwenEmbedError,
    UnsupportedModelError,
)

from .conftest import ModelFactory


def _error_classes() -> list[type[BaseException]]:
    """Every exception class the package defines, discovered (not listed by hand)."""
    import importlib
    import inspect
    import pkgutil

    import qwen_embed

    found: dict[str, type[BaseException]] = {}
    for module in pkgutil.walk_packages(qwen_embed.__path__, "qwen_embed."):
        if module.name.endswith("__main__"):
            continue
        try:
            loaded = importlib.import_module(module.name)
        except ImportError:  # an integration whose framework is not installed
            continue
        for _, obj in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("qwen_embed"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_every_error_has_one_root() -> None:
    classes = _error_classes()
    assert len(classes) >= 27  # the discovery works: it finds at least the classes errors.py had
    assert [c.__name__ for c in classes if not issubclass(c, QwenEmbedError)] == []
    assert issubclass(InputTooLongError, ValueError)
    assert issubclass(InputTypeError, TypeError)
    assert issubclass(ModelNotFoundError, FileNotFoundError)


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        (None, "None"),
        ([None], "#0 is NoneType"),
        (["ok", 3], "#1 is int"),
        (["ok", b"bytes"], "#1 is bytes"),
        (b"raw bytes", "decode"),
        (42, "int"),
        ({"a": 1}, "dict"),
    ],
)
def test_non_str_input(tiny_embedder: Embedder, texts: object, match: str) -> None:
    with pytest.raises(InputTypeError, match=match):
        tiny_embedder.encode(texts)  # type: ignore[arg-type]


def test_lone_surrogate(tiny_embedder: Embedder) -> None:
    with pytest.raises(InvalidInputError, match=r"#1 cannot be encoded as UTF-8 at character 3"):
        tiny_embedder.encode(["fine", "bad\ud800text"])
    with pytest.raises(InvalidInputError, match="surrogate"):
        tiny_embedder.encode("\udfff")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        Embedder(tmp_path / "nope.gguf")
    with pytest.raises(ModelNotFoundError, match="not a file"):
        Embedder(tmp_path)


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("this is not a model, just some text " * 10)
    with pytest.raises(InvalidModelFileError, match="not a GGUF file"):
        Embedder(path)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(InvalidModelFileError, match="too small"):
        Embedder(empty)


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.01])
def test_truncated_gguf(tiny_model: Path, tmp_path: Path, keep: float) -> None:
    data = tiny_model.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InvalidModelFileError, match="truncated"):
        Embedder(cut)


def test_corrupt_header(tiny_model: Path, tmp_path: Path) -> None:
    data = bytearray(tiny_model.read_bytes())
    data[4:8] = (99).to_bytes(4, "little")  # version 99
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(InvalidModelFileError, match="version 99"):
        Embedder(bad)


def _write_gguf(path: Path, arch: str, *, tensors: bool = True) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_embedding_length(8)
    if tensors:
        writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_unsupported_architecture(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match=r"llama model.*Qwen3-Embedding"):
        Embedder(_write_gguf(tmp_path / "llama.gguf", "llama"))


def test_vocabulary_only_file(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="no weights"):
        Embedder(_write_gguf(tmp_path / "vocab.gguf", "qwen3", tensors=False))


def test_reranker_file(model_factory: ModelFactory) -> None:
    with pytest.raises(UnsupportedModelError, match="reranker"):
        Embedder(model_factory(pooling_type=4))


@pytest.mark.parametrize("dim", [0, 16, 31, 65, 10_000, -1, True, 32.0])
def test_dim_out_of_range(tiny_embedder: Embedder, tiny_model: Path, dim: object) -> None:
    with pytest.raises(DimensionError, match="dim"):
        tiny_embedder.encode("x", dim=dim)  # type: ignore[arg-type]
    with pytest.raises(DimensionError):
        Embedder(tiny_model, dim=dim)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"pooling": "cls"}, "pooling='cls'"),
        ({"long_text": "summarize"}, "'error', 'truncate'"),
        ({"max_length": 100_000}, "trained context of 32768"),
        ({"max_length": 1}, "at least 2"),
        ({"n_threads": 0}, "n_threads"),
        ({"batch_size": -3}, "batch_size"),
    ],
)
def test_bad_options(tiny_model: Path, option: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Embedder(tiny_model, **option)  # type: ignore[arg-type]


def test_unknown_policy_per_call(tiny_embedder: Embedder) -> None:
    with pytest.raises(ConfigurationError, match="Unknown long_text"):
        tiny_embedder.encode("x", long_text="chunkify")


def test_one_megabyte_text_raises_before_any_decode(tiny_embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = tiny_embedder._engine
    assert engine is not None

    def no_decode(*_args: object, **_kwargs: object) -> None:  # failure injection: must not be reached
        raise AssertionError("decoded although the input was too long")

    monkeypatch.setattr(engine, "embed", no_decode)
    huge = "lorem ipsum dolor sit amet " * 40_000  # ~1 MB
    with pytest.raises(
        InputTooLongError, match=r"Text #1 is (at least )?[\d,]+ tokens .* limit is max_length=8,192"
    ) as info:
        tiny_embedder.encode(["short", huge])
    assert info.value.index == 1 and info.value.limit == 8192 and info.value.n_tokens > 8192
    with pytest.raises(InputTooLongError, match="The text is"):
        tiny_embedder.encode(huge)


def test_too_long_under_truncate_prompt_room(tiny_model: Path) -> None:
    with Embedder(tiny_model, max_length=8, long_text="truncate") as emb:
        assert emb.encode("word " * 100).shape == (emb.dim,)


def test_incomplete_qwen3_file_is_refused_by_llama_cpp(tmp_path: Path) -> None:
    """Passes the header checks, fails in llama.cpp: a clear error with its reason, no crash."""
    with pytest.raises(ModelLoadError, match=r"could not load .*: .+"):
        Embedder(_write_gguf(tmp_path / "incomplete.gguf", "qwen3"))


# ---------------------------------------------------------------- issue 12: every option and input checked


def test_batch_size_over_llamas_sequence_limit_is_capped(tiny_model: Path) -> None:
    with Embedder(tiny_model, n_threads=1, batch_size=300, batch_tokens=4096) as emb:
        out = emb.encode([f"text {i}" for i in range(300)])
    assert out.shape == (300, emb.native_dim)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n_threads": 10**6}, "n_threads"),
        ({"normalize": "no"}, "normalize"),
        ({"normalize": None}, "normalize"),
        ({"n_gpu_layers": "x"}, "n_gpu_layers"),
        ({"n_gpu_layers": -5}, "n_gpu_layers"),
        ({"show_progress": "yes"}, "show_progress"),
    ],
)
def test_bad_options_raise_configuration_errors(tiny_model: Path, options: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Embedder(tiny_model, **options)


def test_model_path_of_the_wrong_type(tiny_model: Path) -> None:
    with pytest.raises(ConfigurationError, match="model_path must be a path"):
        Embedder(123)  # type: ignore[arg-type]


def test_per_call_normalize_must_be_a_bool(tiny_embedder: Embedder) -> None:
    with pytest.raises(ConfigurationError, match="normalize"):
        tiny_embedder.encode(["x"], normalize="no")  # type: ignore[arg-type]


def test_a_set_of_texts_is_refused(tiny_embedder: Embedder) -> None:
    with pytest.raises(InputTypeError, match="set, which has no order"):
        tiny_embedder.encode({"b", "a"})  # type: ignore[arg-type]


def test_numpy_string_arrays(tiny_embedder: Embedder) -> None:
    one = tiny_embedder.encode(np.array("a text"))
    assert one.shape == (tiny_embedder.dim,)
    many = tiny_embedder.encode(np.array(["a text", "another"]))
    np.testing.assert_allclose(many[0], one, atol=5e-4)
    with pytest.raises(InputTypeError, match="2-d"):
        tiny_embedder.encode(np.array([["a", "b"]]))


def test_lone_surrogate_in_encode_long(tiny_embedder: Embedder) -> None:
    with pytest.raises(InvalidInputError, match="character 6"):
        tiny_embedder.encode_long("hello \ud800 world")


def test_cuda_without_a_gpu_is_a_configuration_error(tiny_model: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigurationError, match="no CUDA GPU"):
        Embedder(tiny_model, backend="torch", device="cuda")
    with pytest.raises(ConfigurationError, match="not a device"):
        Embedder(tiny_model, backend="torch", device="gpu0")
