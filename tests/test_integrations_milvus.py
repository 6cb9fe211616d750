"""Milvus Lite: index and search qwen_embed vectors in a local database file (inner product on unit vectors)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from qwen_embed import Embedder

from .integration_support import (
    DOCUMENTS,
    QUERIES,
    assert_other_vectors,
    assert_printed_ranking,
    assert_ranked,
    assert_same_vectors,
    brute_force,
)

try:  # milvus-lite ships for Linux and macOS only; say why when it is not there
    import milvus_lite  # noqa: F401
    from pymilvus import MilvusClient
except ImportError as error:
    pytest.skip(
        f"Milvus Lite is not installed here ({error}): pip install 'qwen-embed[milvus]'", allow_module_level=True
    )

ROOT = Path(__file__).resolve().parents[1]


def test_milvus_lite_round_trip(tiny_embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default prompts: Milvus holds ``encode_documents``' vectors and its inner-product search over
    ``encode_queries``' vectors finds what brute force finds, with the same scores."""
    monkeypatch.chdir(tmp_path)
    client = MilvusClient("./file.db")
    try:
        client.create_collection("docs", dimension=tiny_embedder.dim, metric_type="IP", consistency_level="Strong")
        vectors = tiny_embedder.encode_documents(DOCUMENTS)
        client.insert(
            "docs", [{"id": i, "vector": v.tolist(), "text": t} for i, (v, t) in enumerate(zip(vectors, DOCUMENTS))]
        )
        rows = {row["id"]: row["vector"] for row in client.query("docs", filter="id >= 0", output_fields=["vector"])}
        stored = [rows[i] for i in range(4)]
        assert_same_vectors(stored, tiny_embedder.encode_documents(DOCUMENTS))
        assert_other_vectors(stored, tiny_embedder.encode_queries(DOCUMENTS))  # the broken pairing differs
        queries = tiny_embedder.encode_queries(QUERIES)
        results = client.search("docs", data=queries.tolist(), limit=2, output_fields=["text"])
        expected = brute_force(queries, vectors, k=2)
        for hits, best in zip(results, expected, strict=True):
            assert_ranked([(hit["id"], hit["distance"]) for hit in hits], best)
            assert [hit["entity"]["text"] for hit in hits] == [DOCUMENTS[i] for i, _ in best]
    finally:
        client.close()
    assert (tmp_path / "file.db").exists()


def test_milvus_example(
    tiny_model: Path,
    tiny_embedder: Embedder,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["milvus_lite_search.py", str(tiny_model)])
    example = runpy.run_path(str(ROOT / "examples" / "milvus_lite_search.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "./qwen_embed_demo.db: 3 rows of 64 dims"
    assert_printed_ranking(out, tiny_embedder, example["DOCUMENTS"], example["QUERY"], k=2)
