from __future__ import annotations

import dataclasses

import pytest

from qwen_embed import CATALOG, UnknownModelError
from qwen_embed.hub.catalog import find_model, lookup_repo, normalize_quant, parse_gguf_filename, quant_rank


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
    assert lookup_repo(alias)[0] == repo


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
        lookup_repo("2B")


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
