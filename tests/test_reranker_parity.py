"""Reranker scores against the official Transformers recipe, on all four outputs of llama.cpp's converter.

Random ``Qwen3ForCausalLM`` checkpoints, tied and untied, are converted by llama.cpp's own
``convert_hf_to_gguf.py`` twice each: in reranker mode (``cls.output`` + RANK pooling; the untied
model's LM head is *replaced*) and as a plain causal LM (``output.weight`` or only ``token_embd``).
The Qwen3-Reranker README recipe (AutoModelForCausalLM, left padding, body-only truncation,
``softmax([l_no, l_yes])[yes]``) scores the same pairs on the checkpoint itself. llama.cpp's own
RANK pooling on the reranker-mode files is a second reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  (the parity extra: a missing dependency fails here, it does not skip)
import transformers  # noqa: F401

from qwen_embed import Reranker
from qwen_embed.engines.gguf_info import read_gguf_info
from qwen_embed.testing import quantize_model

from .conftest import PARITY_REPORT, real_vocab
from .parity_support import convert, llama_cpp_source
from .reranker_support import (
    OfficialReranker,
    make_causal_lm_checkpoint,
    rank_pooling_scores,
    reranker_vocabulary,
)

pytestmark = pytest.mark.parity

CACHE = Path.home() / ".cache" / "qwen_embed" / "parity"
VARIANTS = ("rerank-tied", "rerank-untied", "plain-tied", "plain-untied")
WORDS = (
    "model vector search query document index memory token layer weight quantize batch thread cache "
    "river mountain garden kitchen bread coffee music guitar planet ocean forest winter summer city "
    "contract court patent medicine protein enzyme market price order invoice train station ticket yes no"
).split()


@dataclass
class RerankParity:
    recipes: dict[str, OfficialReranker]  # "tied" / "untied"
    files: dict[str, Path]
    pairs: list[tuple[str, str]]
    real_vocab: bool


def _sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(WORDS[int(i)] for i in rng.integers(0, len(WORDS), n)).capitalize()


def _pairs() -> list[tuple[str, str]]:
    rng = np.random.default_rng(3)
    queries = [_sentence(rng, int(rng.integers(2, 8))) + "?" for _ in range(4)]
    pairs = [(q, _sentence(rng, int(rng.integers(3, 60))) + ".") for q in queries for _ in range(4)]
    pairs += [
        ("What is GGUF?", ""),
        ("", "An empty query."),
        ("naïve café", "Déjà vu — “quotes”, 中文分词, Привет, 3.14159!"),
        ("code", "def f(x):\n    return x ** 2\n\n\tindent"),
        ("spaces", "  leading and trailing  "),
        ("newline", "\nA document that starts with a newline."),
    ]
    return pairs


@pytest.fixture(scope="session")
def rerank_parity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RerankParity]:
    root = tmp_path_factory.mktemp("rerank_parity")
    vocab_path = real_vocab()
    vocab = reranker_vocabulary(vocab_path)
    src = llama_cpp_source(CACHE)
    files: dict[str, Path] = {}
    recipes: dict[str, OfficialReranker] = {}
    for tie in ("tied", "untied"):
        checkpoint = make_causal_lm_checkpoint(root / f"checkpoint-{tie}", vocab, tied=tie == "tied", seed=11)
        named = root / f"qwen3-reranker-tiny-{tie}"  # the converter detects a reranker by the folder name
        named.symlink_to(checkpoint, target_is_directory=True)
        real = vocab_path is not None
        files[f"rerank-{tie}"] = convert(src, named, root / f"rerank-{tie}.gguf", outtype="f32", real_vocab=real)
        files[f"plain-{tie}"] = convert(src, checkpoint, root / f"plain-{tie}.gguf", outtype="f32", real_vocab=real)
        recipes[tie] = OfficialReranker(checkpoint)
    files["rerank-untied-f16"] = convert(
        src, root / "qwen3-reranker-tiny-untied", root / "rerank-untied-f16.gguf", outtype="f16", real_vocab=real
    )
    files["rerank-untied-Q8_0"] = quantize_model(files["rerank-untied-f16"], root / "rerank-untied-Q8_0.gguf", "Q8_0")
    yield RerankParity(recipes=recipes, files=files, pairs=_pairs(), real_vocab=vocab_path is not None)


def _tie(variant: str) -> str:
    return "untied" if "untied" in variant else "tied"


def test_the_converter_makes_the_four_variants(rerank_parity: RerankParity) -> None:
    for variant in VARIANTS:
        info = read_gguf_info(rerank_parity.files[variant])
        names = {t.name: t for t in info.tensors}
        if variant.startswith("rerank"):
            assert names["cls.output.weight"].shape == (256, 2)
            assert info.pooling_type == 4
            assert info.arch_value("classifier.output_labels") == ["yes", "no"]
            assert "tokenizer.chat_template.rerank" in info.metadata
            assert "output.weight" not in names  # untied: the LM head is replaced; tied: token_embd is the head
        else:
            assert "cls.output.weight" not in names
            assert ("output.weight" in names) == (variant == "plain-untied")


def test_label_tokens_are_the_official_ids(rerank_parity: RerankParity) -> None:
    with Reranker(rerank_parity.files["plain-tied"], n_threads=2) as rr:
        assert rr.head.tensor == "token_embd.weight"
        if rerank_parity.real_vocab:  # fastembed used 2132 ('It') for "no"
            assert rr.head.rows == (9693, 2152)


@pytest.mark.parametrize("variant", VARIANTS)
def test_scores_match_the_official_recipe(rerank_parity: RerankParity, variant: str) -> None:
    recipe = rerank_parity.recipes[_tie(variant)]
    pairs = rerank_parity.pairs
    reference, reference_odds = recipe.scores(pairs)
    with Reranker(rerank_parity.files[variant], n_threads=2, batch_size=8) as rr:
        assert [rr.tokenize(q, d).tolist() for q, d in pairs] == recipe.token_ids(pairs)
        ours = rr.predict(pairs).astype(np.float64)
        odds = rr.predict(pairs, raw=True).astype(np.float64)
        head = rr.head.description
    worst = float(np.abs(ours - reference).max())
    PARITY_REPORT.append(
        f"reranker {variant:<14} f32 head={head:<34} max |Δ score| {worst:.2e}, "
        f"max |Δ log-odds| {np.abs(odds - reference_odds).max():.2e}, "
        f"scores {reference.min():.3f}…{reference.max():.3f}"
    )
    assert reference.max() - reference.min() > 0.3, "the fixture's scores should spread over (0, 1)"
    assert worst <= 1e-3


@pytest.mark.parametrize("variant", ["rerank-tied", "rerank-untied"])
def test_llama_cpp_rank_pooling_agrees(rerank_parity: RerankParity, variant: str) -> None:
    pairs = rerank_parity.pairs[:10]
    with Reranker(rerank_parity.files[variant], n_threads=2) as rr:
        ours = rr.predict(pairs).astype(np.float64)
        sequences = [rr.tokenize(q, d) for q, d in pairs]
    theirs = rank_pooling_scores(rerank_parity.files[variant], sequences)
    PARITY_REPORT.append(
        f"reranker {variant:<14} vs llama.cpp RANK pooling: max |Δ score| {np.abs(ours - theirs).max():.2e}"
    )
    assert np.abs(ours - theirs).max() <= 1e-3


def test_truncation_matches_the_recipe(rerank_parity: RerankParity) -> None:
    recipe = rerank_parity.recipes["untied"]
    pairs = [(q, d * 6) for q, d in rerank_parity.pairs[:8]]
    max_length = 120  # room for every query (a query that alone fills max_length is an error since issue 21)
    reference, _ = recipe.scores(pairs, max_length=max_length)
    with Reranker(rerank_parity.files["rerank-untied"], n_threads=2, max_length=max_length) as rr:
        tokens = [rr.tokenize(q, d).tolist() for q, d in pairs]
        assert tokens == recipe.token_ids(pairs, max_length=max_length)
        assert all(len(t) <= max_length and t[-len(recipe.suffix) :] == recipe.suffix for t in tokens)
        assert sum(len(t) == max_length for t in tokens) >= 4  # the documents really are cut
        ours = rr.predict(pairs).astype(np.float64)
    assert np.abs(ours - reference).max() <= 1e-3


def test_custom_instruction_matches_the_recipe(rerank_parity: RerankParity) -> None:
    instruction = "Retrieve the passage that answers the legal question"
    pairs = rerank_parity.pairs[:6]
    reference, _ = rerank_parity.recipes["tied"].scores(pairs, instruction=instruction)
    with Reranker(rerank_parity.files["rerank-tied"], n_threads=2) as rr:
        ours = rr.predict(pairs, instruction=instruction).astype(np.float64)
    assert np.abs(ours - reference).max() <= 1e-3


def test_torch_engine_matches_the_recipe(rerank_parity: RerankParity) -> None:
    pairs = rerank_parity.pairs
    reference, _ = rerank_parity.recipes["untied"].scores(pairs)
    with Reranker(rerank_parity.files["rerank-untied"], backend="torch", dtype="float32", n_threads=2) as rr:
        ours = rr.predict(pairs).astype(np.float64)
    worst = float(np.abs(ours - reference).max())
    PARITY_REPORT.append(f"reranker rerank-untied   torch float32: max |Δ score| {worst:.2e}")
    assert worst <= 1e-3


@pytest.mark.parametrize("kind", ["f16", "Q8_0"])
def test_quantized_files_are_reported(rerank_parity: RerankParity, kind: str) -> None:
    pairs = rerank_parity.pairs
    reference, _ = rerank_parity.recipes["untied"].scores(pairs)
    with Reranker(rerank_parity.files[f"rerank-untied-{kind}"], n_threads=2) as rr:
        ours = rr.predict(pairs).astype(np.float64)
        head = rr.head.description
    worst = float(np.abs(ours - reference).max())
    PARITY_REPORT.append(f"reranker rerank-untied   {kind:<5} head={head}: max |Δ score| {worst:.2e}")
    assert worst <= 0.1, "a quantized file should stay close to the official scores"
