"""Milvus Lite: index and search qwen_embed vectors in a local database file (inner product on unit vectors)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from qwen_embed import Embedder

from .integration_support import DOCUMENTS

try:  # milvus-lite ships for Linux and macOS only; say why when it is not there
    import milvus_lite  # noqa: F401
    from pymilvus import MilvusClient
except ImportError as error:
    pytest.skip(
        f"Milvus Lite is not installed here ({error}): pip install 'qwen-embed[milvus]'", allow_module_level=True
    )

ROOT = Path(__file__).resolve().parents[1]


def test_milvus_lite_round_trip(tiny_embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    client = MilvusClient("./file.db")
    try:
        client.create_collection("docs", dimension=tiny_embedder.dim, metric_type="IP", consistency_level="Strong")
        vectors = tiny_embedder.encode_documents(DOCUMENTS, task="sts")
        client.insert(
            "docs", [{"id": i, "vector": v.tolist(), "text": t} for i, (v, t) in enumerate(zip(vectors, DOCUMENTS))]
        )
        queries = tiny_embedder.encode_queries(DOCUMENTS, task="sts")
        results = client.search("docs", data=queries.tolist(), limit=2, output_fields=["text"])
        for i, (best, runner_up) in enumerate(results):
            assert best["id"] == i and best["entity"]["text"] == DOCUMENTS[i]
            assert best["distance"] == pytest.approx(1.0, abs=1e-4) and runner_up["distance"] < 0.999
    finally:
        client.close()
    assert (tmp_path / "file.db").exists()


def test_milvus_example(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["milvus_lite_search.py", str(tiny_model)])
    runpy.run_path(str(ROOT / "examples" / "milvus_lite_search.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "./qwen_embed_demo.db: 3 rows of 64 dims" in out and out.count("  ") >= 2
