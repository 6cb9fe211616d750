"""Haystack: QwenTextEmbedder and QwenDocumentEmbedder in real pipelines with the in-memory store;
warm_up, run_async and serialization. Real packages, generated models."""

from __future__ import annotations

import asyncio
import os
import runpy
import sys
import threading
from pathlib import Path

import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
pytest.importorskip("haystack")

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
from haystack.components.writers import DocumentWriter
from haystack.document_stores.in_memory import InMemoryDocumentStore

from qwen_embed import InputTypeError
from qwen_embed.integrations.haystack import QwenDocumentEmbedder, QwenTextEmbedder

from .integration_support import DOCUMENTS, CountingEmbedder, assert_same_vectors

ROOT = Path(__file__).resolve().parents[1]
MODULE = "qwen_embed.integrations.haystack"


def test_pipeline_round_trip(tiny_model: Path) -> None:
    options = {"model": str(tiny_model), "task": "sts", "embedder_options": {"n_threads": 2}}
    store = InMemoryDocumentStore(embedding_similarity_function="cosine")
    indexing = Pipeline()
    indexing.add_component("embedder", QwenDocumentEmbedder(**options))
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("embedder.documents", "writer.documents")
    written = indexing.run(
        {"embedder": {"documents": [Document(content=t, id=str(i)) for i, t in enumerate(DOCUMENTS)]}}
    )
    assert written["writer"]["documents_written"] == 4

    search = Pipeline()
    search.add_component("embedder", QwenTextEmbedder(**options))
    search.add_component("retriever", InMemoryEmbeddingRetriever(document_store=store, top_k=2))
    search.connect("embedder.embedding", "retriever.query_embedding")
    for i, text in enumerate(DOCUMENTS):
        best, runner_up = search.run({"embedder": {"text": text}})["retriever"]["documents"]
        assert best.id == str(i) and best.score == pytest.approx(1.0, abs=1e-4) and runner_up.score < 0.999

    # Saved and loaded (the module must be allowed explicitly: Haystack's deserialization allowlist).
    loaded = Pipeline.loads(search.dumps(), allowed_modules=[MODULE])
    best = loaded.run({"embedder": {"text": DOCUMENTS[2]}})["retriever"]["documents"][0]
    assert best.id == "2"
    assert loaded.get_component("embedder").embedder is indexing.get_component("embedder").embedder  # one model


def test_components_embed_like_the_embedder(tiny_model: Path) -> None:
    emb = CountingEmbedder(tiny_model, n_threads=2)
    text_embedder = QwenTextEmbedder(embedder=emb, task="qa")
    doc_embedder = QwenDocumentEmbedder(embedder=emb, batch_size=3, meta_fields_to_embed=["title"])
    text_embedder.warm_up()
    text_embedder.warm_up()  # idempotent
    result = text_embedder.run("What purrs?")
    assert_same_vectors(result["embedding"], emb.encode_queries("What purrs?", task="qa"))
    assert result["meta"] == {"model": tiny_model.name, "dim": 64}
    assert all(type(x) is float for x in result["embedding"])

    docs = [Document(content=t, meta={"title": f"Doc {i}"}) for i, t in enumerate(DOCUMENTS)]
    emb.calls.clear()
    out = doc_embedder.run(docs)["documents"]
    assert [c[:2] for c in emb.calls] == [("encode_documents", 3), ("encode_documents", 1)]  # one per batch
    assert [d.id for d in out] == [d.id for d in docs] and all(d.embedding is None for d in docs)  # copies
    expected = emb.encode_documents([f"Doc {i}\n{t}" for i, t in enumerate(DOCUMENTS)])
    assert_same_vectors([d.embedding for d in out], expected)
    assert doc_embedder.run([])["documents"] == []


def test_run_async_runs_off_the_loop(tiny_model: Path) -> None:
    emb = CountingEmbedder(tiny_model, n_threads=2)
    text_embedder, doc_embedder = QwenTextEmbedder(embedder=emb), QwenDocumentEmbedder(embedder=emb)

    async def main() -> int:
        one = await text_embedder.run_async("q")
        many = await doc_embedder.run_async([Document(content=t) for t in DOCUMENTS])
        assert len(one["embedding"]) == 64 and len(many["documents"]) == 4
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(emb.calls) == 2 and all(thread != loop_thread for _, _, thread in emb.calls)


def test_serialization_round_trip(tiny_model: Path) -> None:
    doc_embedder = QwenDocumentEmbedder(
        model=str(tiny_model), dim=32, batch_size=8, meta_fields_to_embed=["title"], embedder_options={"n_threads": 2}
    )
    data = doc_embedder.to_dict()
    assert data["type"] == f"{MODULE}.QwenDocumentEmbedder"
    assert data["init_parameters"]["dim"] == 32 and data["init_parameters"]["embedder_options"] == {"n_threads": 2}
    again = QwenDocumentEmbedder.from_dict(data)
    assert again.to_dict() == data
    text_embedder = QwenTextEmbedder(embedder=again.embedder)  # an Embedder is saved as its path
    assert QwenTextEmbedder.from_dict(text_embedder.to_dict()).to_dict()["init_parameters"]["model"] == str(
        tiny_model.resolve()
    )
    assert len(QwenTextEmbedder.from_dict(text_embedder.to_dict()).run("x")["embedding"]) == 64


def test_bad_use_gives_clear_errors(tiny_model: Path) -> None:
    text_embedder = QwenTextEmbedder(model=tiny_model, embedder_options={"n_threads": 2})
    doc_embedder = QwenDocumentEmbedder(model=tiny_model, embedder_options={"n_threads": 2})
    with pytest.raises(InputTypeError, match="takes one str, not list; to embed Documents use QwenDocumentEmbedder"):
        text_embedder.run([Document(content="x")])  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="takes a list of Documents, not str; to embed a query string"):
        doc_embedder.run("x")  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="item #1 is str, not a Document"):
        doc_embedder.run([Document(content="x"), "y"])  # type: ignore[list-item]
    with pytest.raises(Exception, match="batch_size must be a positive int"):
        QwenDocumentEmbedder(model=tiny_model, batch_size=0)
    broken = QwenTextEmbedder(model=tiny_model.parent / "missing.gguf")  # light to build, fails at warm_up
    with pytest.raises(FileNotFoundError, match=r"missing\.gguf"):
        broken.warm_up()


def test_haystack_example(
    tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["haystack_pipeline.py", str(tiny_model)])
    runpy.run_path(str(ROOT / "examples" / "haystack_pipeline.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "store holds 3 documents" in out and out.count("  ") >= 2
