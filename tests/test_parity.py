"""Parity with the official Transformers recipe, through llama.cpp's own GGUF conversion.

A random Qwen3 checkpoint in Hugging Face format is embedded two ways: by the Qwen3-Embedding
README recipe (AutoModel, left padding, last-token pooling, L2 normalize, queries in the
official instruction format) and by this library on the GGUF that llama.cpp's
``convert_hf_to_gguf.py`` makes of the same checkpoint (f32, f16, then Q8_0 and Q4_K_M).
Each part of our path that matters (EOS, prompt format, pooling, normalization) is also broken
on purpose, to show the parity check catches it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  (the parity extra: a missing dependency fails here, it does not skip)
import transformers  # noqa: F401

from qwen_embed import Embedder
from qwen_embed.testing import load_vocabulary, quantize_model, train_vocabulary
from qwen_embed.text.prompts import DEFAULT_QUERY_INSTRUCTION, DEFAULT_REGISTRY, PromptRegistry

from .conftest import PARITY_REPORT, real_vocab
from .parity_support import OfficialRecipe, convert, llama_cpp_source, make_hf_checkpoint

pytestmark = pytest.mark.parity

CACHE = Path.home() / ".cache" / "qwen_embed" / "parity"
TASK = DEFAULT_QUERY_INSTRUCTION
WORDS = (
    "model vector search query document index memory token layer weight quantize batch thread cache "
    "river mountain garden kitchen bread coffee music guitar planet ocean forest winter summer city "
    "contract court patent medicine protein enzyme market price order invoice train station ticket"
).split()


@dataclass
class Parity:
    recipe: OfficialRecipe
    files: dict[str, Path]
    queries: list[str]
    documents: list[str]
    long_texts: list[str]
    real_vocab: bool


def _texts(n: int, n_words: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(WORDS[int(i)] for i in rng.integers(0, len(WORDS), n_words)).capitalize() + "." for _ in range(n)]


def _long_text(recipe: OfficialRecipe, n_tokens: int, *, seed: int) -> str:
    """Sentences until the official tokenizer counts about ``n_tokens`` (any vocabulary)."""
    sentences = _texts(4 * n_tokens, 12, seed=seed)
    lo, hi = 1, len(sentences)
    while lo < hi:  # the most sentences that stay within n_tokens
        mid = (lo + hi + 1) // 2
        if len(recipe.tokenizer(" ".join(sentences[:mid]))["input_ids"]) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(sentences[:lo])


@pytest.fixture(scope="session")
def parity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parity]:
    root = tmp_path_factory.mktemp("parity")
    vocab_path = real_vocab()
    vocab = load_vocabulary(vocab_path) if vocab_path else train_vocabulary()
    checkpoint = make_hf_checkpoint(root / "hf", vocab)
    src = llama_cpp_source(CACHE)
    files = {
        kind: convert(src, checkpoint, root / f"model-{kind}.gguf", outtype=kind, real_vocab=vocab_path is not None)
        for kind in ("f32", "f16")
    }
    for quant in ("Q8_0", "Q4_K_M"):
        files[quant] = quantize_model(files["f16"], root / f"model-{quant}.gguf", quant)
    rng = np.random.default_rng(7)
    recipe = OfficialRecipe(checkpoint)
    long_texts = [_long_text(recipe, n_tokens, seed=n_tokens) for n_tokens in (800, 2000, 4000)]
    yield Parity(
        recipe=recipe,
        files=files,
        queries=_texts(20, int(rng.integers(4, 9)), seed=1),
        documents=_texts(50, 30, seed=2),
        long_texts=long_texts,
        real_vocab=vocab_path is not None,
    )


def check_parity(ours: np.ndarray, reference: np.ndarray, *, min_cos: float = 0.9999) -> float:
    """Same vectors: cosine at least ``min_cos`` and the same (unit) length. Returns the worst cosine."""
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    norms = np.linalg.norm(ours, axis=1)
    assert np.allclose(norms, np.linalg.norm(reference, axis=1), atol=1e-3), f"norms differ: {norms[:4]}"
    cos = (ours * reference).sum(axis=1) / (norms * np.linalg.norm(reference, axis=1))
    assert cos.min() >= min_cos, f"worst cosine {cos.min():.6f} < {min_cos} (at text {int(cos.argmin())})"
    return float(cos.min())


def _report(line: str) -> None:
    PARITY_REPORT.append(line)


def test_the_converted_file_is_what_we_expect(parity: Parity) -> None:
    with Embedder(parity.files["f32"], n_threads=2) as emb:
        assert emb.architecture == "qwen3" and emb.native_dim == 512 and emb.pooling == "last"
        ids = emb.tokenize("hello")
        assert ids[-1] == emb.eos_token_id and (ids == emb.eos_token_id).sum() == 1


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_documents_and_queries_match_the_recipe(parity: Parity, kind: str) -> None:
    recipe = parity.recipe
    with Embedder(parity.files[kind], n_threads=2) as emb:
        docs = parity.documents + parity.long_texts
        assert max(emb.count_tokens(t) for t in parity.long_texts) > 3000
        cos_docs = check_parity(emb.encode_documents(docs), recipe.encode(docs))
        formatted = [recipe.detailed_instruct(TASK, q) for q in parity.queries]
        cos_queries = check_parity(emb.encode_queries(parity.queries), recipe.encode(formatted))
        single = check_parity(np.stack([emb.encode(d) for d in parity.long_texts]), recipe.encode(parity.long_texts))
    _report(f"{kind}: worst cosine documents {cos_docs:.7f}, queries {cos_queries:.7f}, long one by one {single:.7f}")


def test_matryoshka_matches_slice_then_normalize(parity: Parity) -> None:
    with Embedder(parity.files["f32"], n_threads=2) as emb:
        ours = emb.encode_documents(parity.documents, dim=256)
    assert ours.shape == (50, 256)
    _report(f"f32 dim=256: worst cosine {check_parity(ours, parity.recipe.encode(parity.documents, dim=256)):.7f}")


def _top10(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    return np.argsort(-(queries @ documents.T), axis=1, kind="stable")[:, :10]


@pytest.mark.parametrize("kind", ["f32", "f16", "Q8_0", "Q4_K_M"])
def test_retrieval_ranking_agreement(parity: Parity, kind: str) -> None:
    recipe = parity.recipe
    ref_q = recipe.encode([recipe.detailed_instruct(TASK, q) for q in parity.queries])
    ref_d = recipe.encode(parity.documents)
    with Embedder(parity.files[kind], n_threads=2) as emb:
        q = emb.encode_queries(parity.queries)
        d = emb.encode_documents(parity.documents)
    cos = float(min((q * ref_q).sum(1).min(), (d * ref_d).sum(1).min()))
    same_order = float((_top10(q, d) == _top10(ref_q, ref_d)).all(axis=1).mean())
    same_set = float(np.mean([set(a) == set(b) for a, b in zip(_top10(q, d), _top10(ref_q, ref_d))]))
    scores = -np.sort(-(ref_q @ ref_d.T), axis=1)[:, :10]
    gap = float(np.median(scores[:, :-1] - scores[:, 1:]))  # random weights: neighbours are very close
    _report(
        f"{kind}: worst cosine {cos:.6f}; same top-10 order {same_order:.0%}, same top-10 set {same_set:.0%} "
        f"(median gap between neighbouring top-10 scores in the reference: {gap:.5f})"
    )
    if kind in ("f32", "f16"):
        assert cos >= 0.9999
    if kind == "f32":  # f16 rounding may swap two neighbours 0.005 apart: reported, not asserted
        assert same_order == 1.0


# ----------------------------------------------------------------------------- the checks catch breakage


def test_a_wrong_eos_breaks_parity(parity: Parity) -> None:
    with Embedder(parity.files["f32"], n_threads=2) as emb:
        good = emb.encode_documents(parity.documents[:8])
        check_parity(good, parity.recipe.encode(parity.documents[:8]))
        wrong = emb.tokenize("<|im_end|>") if parity.real_vocab else np.array([emb.eos_token_id + 1])
        emb._eos = int(wrong[0]) if len(wrong) == 1 else emb.eos_token_id + 1  # the chat terminator instead
        with pytest.raises(AssertionError, match="worst cosine"):
            check_parity(emb.encode_documents(parity.documents[:8]), parity.recipe.encode(parity.documents[:8]))


def test_a_wrong_prompt_format_breaks_parity(parity: Parity) -> None:
    registry = PromptRegistry(dict(DEFAULT_REGISTRY))
    registry.register_prompt("spaced", TASK, template="Instruct: {instruction}\nQuery: {text}")
    formatted = [parity.recipe.detailed_instruct(TASK, q) for q in parity.queries]
    with Embedder(parity.files["f32"], n_threads=2, prompts=registry) as emb:
        check_parity(emb.encode(parity.queries, prompt_name="query"), parity.recipe.encode(formatted))
        with pytest.raises(AssertionError, match="worst cosine"):
            check_parity(emb.encode(parity.queries, prompt_name="spaced"), parity.recipe.encode(formatted))


def test_mean_pooling_breaks_parity(parity: Parity) -> None:
    with Embedder(parity.files["f32"], n_threads=2, pooling="mean") as emb:
        with pytest.raises(AssertionError, match="worst cosine"):
            check_parity(emb.encode_documents(parity.documents[:8]), parity.recipe.encode(parity.documents[:8]))


def test_skipping_normalization_breaks_parity(parity: Parity) -> None:
    with Embedder(parity.files["f32"], n_threads=2, normalize=False) as emb:
        with pytest.raises(AssertionError, match="norms differ"):
            check_parity(emb.encode_documents(parity.documents[:8]), parity.recipe.encode(parity.documents[:8]))


def test_decomposed_unicode_matches_the_recipe(parity: Parity) -> None:
    """The official tokenizer normalizes to NFC; llama.cpp alone would not (café in NFD)."""
    texts = ["cafe\u0301 au lait", "A\u030angstro\u0308m and Co\u0308ln", "e\u0301te\u0301 a\u0300 Paris"]
    with Embedder(parity.files["f32"], n_threads=2) as emb:
        check_parity(emb.encode_documents(texts), parity.recipe.encode(texts))
        assert emb.count_tokens("cafe\u0301") == emb.count_tokens("caf\u00e9")
