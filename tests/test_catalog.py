from __future__ import annotations

import dataclasses

import pytest

from qwen_embed import CATALOG, RERANKER_CATALOG, CatalogModel, ConfigurationError, RerankerModel, UnknownModelError
from qwen_embed.hub.catalog import (
    KINDS,
    KnownQuant,
    find_model,
    lookup,
    normalize_quant,
    parse_gguf_filename,
    quant_rank,
)


@pytest.mark.parametrize(
    ("alias", "repo"),
    [
        ("0.6B", "Qwen/Qwen3-Embedding-0.6B-GGUF"),
        ("0.6b", "Qwen/Qwen3-Embedding-0.6B-GGUF"),
        ("qwen3-embedding-4b", "Qwen/Qwen3-Embedding-4B-GGUF"),
        ("Qwen/Qwen3-Embedding-8B", "Qwen/Qwen3-Embedding-8B-GGUF"),
        ("qwen/qwen3-embedding-8b-gguf", "Qwen/Qwen3-Embedding-8B-GGUF"),
        ("someone/other-GGUF", "someone/other-GGUF"),
    ],
)
def test_aliases_and_repo_ids(alias: str, repo: str) -> None:
    assert lookup(alias)[0] == repo


def test_catalog_is_frozen_data_with_the_official_shapes() -> None:
    assert [(m.size, m.native_dim, m.layers) for m in CATALOG] == [
        ("0.6B", 1024, 28),
        ("4B", 2560, 36),
        ("8B", 4096, 36),
    ]
    model = find_model("4B")
    assert model is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.native_dim = 1  # type: ignore[misc]
    assert model.filename("q4_k_m") == "Qwen3-Embedding-4B-Q4_K_M.gguf"
    assert model.filename("F16") == "Qwen3-Embedding-4B-f16.gguf"
    assert [q.name for q in find_model("0.6B").quants] == ["F16", "Q8_0"]  # type: ignore[union-attr]
    assert model.approx_bytes("Q8_0") == 4_280_000_000


def test_unknown_alias_lists_the_catalog() -> None:
    with pytest.raises(UnknownModelError, match=r"Unknown model '2B'.*'0\.6B'.*Qwen/Qwen3-Embedding-8B-GGUF"):
        lookup("2B")


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("Qwen3-Embedding-0.6B-Q8_0.gguf", ("Q8_0", 1, 1)),
        ("Qwen3-Embedding-0.6B-f16.gguf", ("F16", 1, 1)),
        ("sub/dir/model.Q4_K_M.gguf", ("Q4_K_M", 1, 1)),
        ("m-IQ4_XS.gguf", ("IQ4_XS", 1, 1)),
        ("m-bf16-00002-of-00003.gguf", ("BF16", 2, 3)),
        ("model.gguf", (None, 1, 1)),
    ],
)
def test_parse_gguf_filename(name: str, parsed: tuple[str | None, int, int]) -> None:
    assert parse_gguf_filename(name) == parsed


def test_quant_names_and_quality_order() -> None:
    assert normalize_quant(" q5_k_m ") == "Q5_K_M" and normalize_quant("fp16") == "F16"
    ordered = sorted(["Q4_K_M", "f16", "Q8_0", "Q6_K", "Q5_0", "Q5_K_M", "WEIRD"], key=quant_rank)
    assert ordered == ["f16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "WEIRD"]


# ----------------------------------------------------------------------------- one type, one lookup, both kinds


@pytest.mark.parametrize(
    ("name", "kind", "repo"),
    [
        ("0.6B", "embedding", "Qwen/Qwen3-Embedding-0.6B-GGUF"),
        ("0.6B", "reranker", "ggml-org/Qwen3-Reranker-0.6B-Q8_0-GGUF"),
        ("qwen3-reranker-4b", "reranker", "Voodisss/Qwen3-Reranker-4B-GGUF-llama_cpp"),
        ("Qwen/Qwen3-Reranker-8B", "reranker", "Voodisss/Qwen3-Reranker-8B-GGUF-llama_cpp"),
        ("someone/reranker-GGUF", "reranker", "someone/reranker-GGUF"),
    ],
)
def test_one_lookup_for_both_kinds(name: str, kind: str, repo: str) -> None:
    repo_id, entry = lookup(name, kind=kind)
    assert repo_id == repo
    assert entry is None or (entry.kind == kind and isinstance(entry, CatalogModel))


def test_the_same_size_names_a_different_repo_per_kind() -> None:
    embedding, reranker = lookup("4B")[1], lookup("4B", kind="reranker")[1]
    assert embedding is not None and reranker is not None
    assert embedding.repo_id != reranker.repo_id and (embedding.kind, reranker.kind) == ("embedding", "reranker")
    assert embedding.hidden == reranker.hidden == 2560  # the same Qwen3-4B shape


def test_unknown_names_and_kinds() -> None:
    with pytest.raises(UnknownModelError, match=r"Unknown reranker '2B'.*reranker catalog.*'0\.6B'.*Voodisss"):
        lookup("2B", kind="reranker")
    with pytest.raises(ConfigurationError, match=r"kind must be one of embedding, reranker, not 'ranker'"):
        lookup("0.6B", kind="ranker")


def test_old_names_still_import() -> None:
    assert RerankerModel is CatalogModel
    assert {m.kind for m in CATALOG} == {"embedding"} and {m.kind for m in RERANKER_CATALOG} == {"reranker"}
    assert all(m.native_dim == m.hidden for m in CATALOG)


@pytest.mark.parametrize("entry", [*CATALOG, *RERANKER_CATALOG], ids=lambda m: f"{m.kind}-{m.size}")
def test_every_default_quant_is_in_its_list(entry: CatalogModel) -> None:
    assert entry.kind in KINDS
    assert normalize_quant(entry.default_quant) in [q.name for q in entry.quants]
    assert entry.repo_id in entry.aliases and entry.size in entry.aliases


def test_an_entry_whose_default_quant_is_not_listed_is_refused() -> None:
    """The twin of the test above: the check the entries pass does fail on a bad one."""
    good = RERANKER_CATALOG[1]
    with pytest.raises(ConfigurationError, match=r"default_quant 'Q8_0' is not one of its quants \(F16\)"):
        dataclasses.replace(good, default_quant="Q8_0")
    with pytest.raises(ConfigurationError, match=r"kind must be one of embedding, reranker, not 'rerank'"):
        dataclasses.replace(good, kind="rerank")
    assert dataclasses.replace(good, quants=(*good.quants, KnownQuant("Q8_0", 1))).kind == "reranker"
