"""The Embedder on the real llama.cpp engine, against the numpy reference."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from qwen_embed import Embedder, EmbedderClosedError

from .conftest import ModelFactory, real_vocab
from .reference import cosine
from .reference import embed as ref_embed

TEXTS = [
    "What is GGUF?",
    "Qwen3-Embedding turns text into vectors for search.",
    "",
    "def add(a, b):\n    return a + b\n",
    "向量检索与文本嵌入",
    "Привет, мир! 🙂",
    "x",
]


def _words(n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    vocab = "the model reads text and returns one vector for each document query search".split()
    return " ".join(vocab[int(i)] for i in rng.integers(0, len(vocab), n))


def test_vectors_match_reference_last_pooling(tiny_embedder: Embedder, tiny_model: Path) -> None:
    vectors = tiny_embedder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), tiny_embedder.dim)
    assert vectors.dtype == np.float32
    for text, vec in zip(TEXTS, vectors):
        ref = ref_embed(str(tiny_model), tiny_embedder.tokenize(text))
        assert cosine(vec, ref) >= 0.99999, text


def test_vectors_match_reference_real_vocabulary(real_vocab_model: Path) -> None:
    with Embedder(real_vocab_model) as emb:
        texts = [*TEXTS, _words(300, seed=3)]
        for text, vec in zip(texts, emb.encode(texts)):
            assert cosine(vec, ref_embed(str(real_vocab_model), emb.tokenize(text))) >= 0.99999


def test_mean_pooling_matches_reference(tiny_model: Path) -> None:
    with Embedder(tiny_model, pooling="mean") as emb:
        assert emb.pooling == "mean"
        texts = ["mean pooling over every token", _words(120)]
        for text, vec in zip(texts, emb.encode(texts)):
            assert cosine(vec, ref_embed(str(tiny_model), emb.tokenize(text), pooling="mean")) >= 0.99999


def test_pooling_from_file(model_factory: ModelFactory) -> None:
    with Embedder(model_factory(pooling_type=1)) as emb:
        assert emb.pooling == "mean"
    with Embedder(model_factory(pooling_type=None)) as emb:
        assert emb.pooling == "last"  # qwen3 without the key: LAST


def test_batched_equals_one_at_a_time(tiny_model: Path) -> None:
    lengths = [1, 2, 7, 30, 100, 255, 256, 257, 511, 513, 900, 2000]
    texts = [_words(n, seed=n) for n in lengths]
    # A small token budget forces many packed decodes, and the 2,000-token text a decode of its own.
    with Embedder(tiny_model, batch_tokens=600, batch_size=5) as emb:
        batched = emb.encode(texts)
        assert max(emb.count_tokens(t) for t in texts) > 600
        for text, vec in zip(texts, batched):
            assert cosine(vec, emb.encode(text)) >= 0.9999
        # Input order survives the length sort.
        np.testing.assert_allclose(emb.encode(texts[::-1]), batched[::-1], atol=5e-4)


def test_single_string_and_list_shapes(tiny_embedder: Embedder) -> None:
    assert tiny_embedder.encode("hello").shape == (tiny_embedder.dim,)
    assert tiny_embedder.encode(["hello"]).shape == (1, tiny_embedder.dim)
    assert tiny_embedder.encode(("a", "b")).shape == (2, tiny_embedder.dim)
    assert tiny_embedder.encode([]).shape == (0, tiny_embedder.dim)
    assert tiny_embedder.encode([], dim=32).shape == (0, 32)
    vec = tiny_embedder.encode("hello")
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("add_eos", [True, False, None])
def test_exactly_one_eos_whatever_the_file_says(model_factory: ModelFactory, add_eos: bool | None) -> None:
    path = model_factory(add_eos_token=add_eos)
    baseline = model_factory(add_eos_token=True)
    with Embedder(path) as emb, Embedder(baseline) as base:
        assert emb.add_eos_token is add_eos
        for text in ["Hello world", ""]:
            ids = emb.tokenize(text)
            assert ids[-1] == emb.eos_token_id
            assert int((ids == emb.eos_token_id).sum()) == 1
            assert emb.count_tokens(text) == len(ids)
        # Same weights, only the flag differs: the vectors must be identical.
        np.testing.assert_allclose(emb.encode(TEXTS), base.encode(TEXTS), atol=1e-6)


def test_empty_string_is_the_eos_alone(tiny_embedder: Embedder, tiny_model: Path) -> None:
    assert tiny_embedder.tokenize("").tolist() == [tiny_embedder.eos_token_id]
    vec = tiny_embedder.encode("")
    assert np.isfinite(vec).all()
    assert cosine(vec, ref_embed(str(tiny_model), [tiny_embedder.eos_token_id])) >= 0.99999


def test_literal_control_token_in_text_stays_text(real_vocab_model: Path) -> None:
    with Embedder(real_vocab_model) as emb:
        ids = emb.tokenize("before <|endoftext|> after <|im_end|>")
        assert int((ids == emb.eos_token_id).sum()) == 1 and ids[-1] == emb.eos_token_id
        assert len(ids) > 4  # the markers were split into ordinary pieces


@pytest.mark.skipif(real_vocab() is None, reason="needs ../shared/vocab (the real Qwen2 vocabulary)")
def test_real_vocabulary_token_ids(real_vocab_model: Path) -> None:
    with Embedder(real_vocab_model) as emb:
        assert emb.eos_token_id == 151643
        assert emb.tokenize("Hello world").tolist() == [9707, 1879, 151643]


def test_matryoshka_slices_then_normalizes(tiny_embedder: Embedder, tiny_model: Path) -> None:
    raw = tiny_embedder.encode(TEXTS[:3], normalize=False)
    small = tiny_embedder.encode(TEXTS[:3], dim=32)
    expected = raw[:, :32] / np.linalg.norm(raw[:, :32], axis=1, keepdims=True)
    np.testing.assert_allclose(small, expected, atol=1e-6)
    ref = ref_embed(str(tiny_model), tiny_embedder.tokenize(TEXTS[1]), dim=32)
    assert cosine(small[1], ref) >= 0.99999


def test_default_dim_from_constructor(tiny_model: Path) -> None:
    with Embedder(tiny_model, dim=48, normalize=False) as emb:
        assert emb.dim == 48 and emb.native_dim == 64
        vec = emb.encode("abc")
        assert vec.shape == (48,)
        assert abs(float(np.linalg.norm(vec)) - 1.0) > 1e-3  # not normalized
        assert emb.encode("abc", dim=64).shape == (64,)


def test_threads_give_the_same_vectors(tiny_model: Path) -> None:
    with Embedder(tiny_model, n_threads=1) as one, Embedder(tiny_model, n_threads=2) as two:
        assert one.n_threads == 1 and two.n_threads == 2
        np.testing.assert_allclose(one.encode(TEXTS), two.encode(TEXTS), atol=1e-5)


def test_thread_env_variable(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_EMBED_NUM_THREADS", "1")
    with Embedder(tiny_model) as emb:
        assert emb.n_threads == 1


def test_concurrent_calls_equal_serial_calls(tiny_embedder: Embedder) -> None:
    inputs = [[_words(n, seed=s) for n in (3, 50, 200)] for s in range(8)]
    serial = [tiny_embedder.encode(x) for x in inputs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = tiny_embedder.encode(inputs[i])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, expected in enumerate(serial):
        np.testing.assert_allclose(results[i], expected, atol=1e-6)


def test_truncate_keeps_the_eos(tiny_model: Path) -> None:
    text = _words(200)
    with Embedder(tiny_model, max_length=16, long_text="truncate") as emb:
        ids = emb.tokenize(text)
        kept = [*ids[:15].tolist(), emb.eos_token_id]
        assert cosine(emb.encode(text), ref_embed(str(tiny_model), kept)) >= 0.99999
        short = "tiny"
        assert cosine(emb.encode(short), ref_embed(str(tiny_model), emb.tokenize(short))) >= 0.99999


def test_metadata_and_repr(tiny_embedder: Embedder, tiny_model: Path) -> None:
    emb = tiny_embedder
    assert emb.architecture == "qwen3"
    assert emb.native_dim == 64 and emb.dim == 64
    assert emb.context_length == 32768
    assert emb.max_length == 8192
    assert emb.quantization == "F32"
    assert emb.model_path == tiny_model
    assert emb.metadata["general.architecture"] == "qwen3"
    text = repr(emb)
    for part in (tiny_model.name, "F32", "dim=64", "pooling=last", "max_length=8192", "llama.cpp"):
        assert part in text


def test_max_length_capped_by_context(model_factory: ModelFactory) -> None:
    with Embedder(model_factory(context_length=1024)) as emb:
        assert emb.max_length == 1024


def test_close_and_context_manager(tiny_model: Path) -> None:
    with Embedder(tiny_model) as emb:
        emb.encode("ok")
    with pytest.raises(EmbedderClosedError, match="closed"):
        emb.encode("again")
    emb.close()  # idempotent
    assert "closed" in repr(emb)


def test_loading_is_silent(tiny_model: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with Embedder(tiny_model) as emb:
        emb.encode(["quiet", "please"])
    out, err = capfd.readouterr()
    assert out == "" and err == ""
