"""Haystack: QwenTextEmbedder and QwenDocumentEmbedder in real pipelines with the in-memory store;
warm_up, run_async and serialization. Real packages, generated models."""

from __future__ import annotations

import asyncio
import os
import re
import runpy
import sys
import threading
from pathlib import Path

import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
pytest.importorskip("haystack")

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever, InMemoryEmbeddingRetriever
from haystack.components.writers import DocumentWriter
from haystack.document_stores.in_memory import InMemoryDocumentStore

from qwen_embed import (
    ConfigurationError,
    Embedder,
    InputTypeError,
    InvalidPromptError,
    ModelNotFoundError,
    Reranker,
)
from qwen_embed.integrations.haystack import QwenDocumentEmbedder, QwenRanker, QwenTextEmbedder

from .conftest import ModelFactory, real_vocab
from .integration_support import (
    DOCUMENTS,
    QUERIES,
    CountingEmbedder,
    assert_other_vectors,
    assert_printed_ranking,
    assert_ranked,
    assert_same_vectors,
    brute_force,
)
from .reranker_support import make_reranker_gguf, reranker_vocabulary

ROOT = Path(__file__).resolve().parents[1]
MODULE = "qwen_embed.integrations.haystack"


def test_pipeline_round_trip(tiny_model: Path) -> None:
    """Default prompts (instructed queries, bare documents): the store holds ``encode_documents``'
    vectors, each search embeds ``encode_queries``' vector, and the hits are brute force's."""
    options = {"model": str(tiny_model), "embedder_options": {"n_threads": 2}}
    store = InMemoryDocumentStore(embedding_similarity_function="cosine")
    indexing = Pipeline()
    indexing.add_component("embedder", QwenDocumentEmbedder(**options))
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("embedder.documents", "writer.documents")
    written = indexing.run(
        {"embedder": {"documents": [Document(content=t, id=str(i)) for i, t in enumerate(DOCUMENTS)]}}
    )
    assert written["writer"]["documents_written"] == 4
    emb = indexing.get_component("embedder").embedder
    held = {doc.id: doc.embedding for doc in store.filter_documents()}
    stored = [held[str(i)] for i in range(4)]
    assert_same_vectors(stored, emb.encode_documents(DOCUMENTS))
    assert_other_vectors(stored, emb.encode_queries(DOCUMENTS))  # the broken pairing stores other vectors
    expected = brute_force(emb.encode_queries(QUERIES), emb.encode_documents(DOCUMENTS), k=2)

    search = Pipeline()
    search.add_component("embedder", QwenTextEmbedder(**options))
    search.add_component("retriever", InMemoryEmbeddingRetriever(document_store=store, top_k=2))
    search.connect("embedder.embedding", "retriever.query_embedding")
    for query, best in zip(QUERIES, expected, strict=True):
        out = search.run({"embedder": {"text": query}}, include_outputs_from={"embedder"})
        assert_same_vectors(out["embedder"]["embedding"], emb.encode_queries(query))
        assert_ranked([(int(d.id), d.score) for d in out["retriever"]["documents"]], best)

    # Saved and loaded (the module must be allowed explicitly: Haystack's deserialization allowlist).
    loaded = Pipeline.loads(search.dumps(), allowed_modules=[MODULE])
    found = loaded.run({"embedder": {"text": QUERIES[2]}})["retriever"]["documents"]
    assert_ranked([(int(d.id), d.score) for d in found], expected[2])
    assert loaded.get_component("embedder").embedder is emb  # one model


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
    assert [c[:2] for c in emb.calls] == [("document", 3), ("document", 1)]  # one engine call per batch
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
    assert [c[:2] for c in emb.calls] == [("query", 1), ("document", 4)]
    assert all(thread != loop_thread for _, _, thread in emb.calls)


def test_serialization_round_trip(tiny_model: Path) -> None:
    doc_embedder = QwenDocumentEmbedder(
        model=str(tiny_model), dim=32, batch_size=8, meta_fields_to_embed=["title"], embedder_options={"n_threads": 2}
    )
    data = doc_embedder.to_dict()
    assert data["type"] == f"{MODULE}.QwenDocumentEmbedder"
    params = data["init_parameters"]
    assert params["dim"] == 32 and params["embedder_options"] == {"n_threads": 2}
    assert params["model"] == str(tiny_model.resolve()) and params["quant"] == "F32"  # the file's own, before loading
    again = QwenDocumentEmbedder.from_dict(data)
    assert again.to_dict() == data
    text_embedder = QwenTextEmbedder(embedder=again.embedder)  # an Embedder is saved as its path and quant
    saved = text_embedder.to_dict()["init_parameters"]
    assert (saved["model"], saved["quant"]) == (str(tiny_model.resolve()), "F32")
    assert len(QwenTextEmbedder.from_dict(text_embedder.to_dict()).run("x")["embedding"]) == 64


def test_saved_components_record_the_real_file(
    model_factory: ModelFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path is saved absolute (another working directory loads the same file), with the
    quantization the file holds; a moved file and another quantization are named at warm_up."""
    q8 = model_factory(quant="Q8_0")
    home = (tmp_path / "project").resolve()
    home.mkdir()
    (home / "model.gguf").write_bytes(q8.read_bytes())
    monkeypatch.chdir(home)
    data = QwenTextEmbedder(model="model.gguf", embedder_options={"n_threads": 2}).to_dict()
    assert data["init_parameters"]["model"] == str(home / "model.gguf") and data["init_parameters"]["quant"] == "Q8_0"
    monkeypatch.chdir(tmp_path)
    loaded = QwenTextEmbedder.from_dict(data)
    loaded.warm_up()
    assert loaded.embedder.quantization == "Q8_0" and loaded.embedder.model_path == home / "model.gguf"

    f32 = dict(data, init_parameters={**data["init_parameters"], "quant": "F32"})  # a file replaced by another quant
    with pytest.raises(ConfigurationError, match=r"model\.gguf holds Q8_0 weights, not quant='F32'"):
        QwenTextEmbedder.from_dict(f32).warm_up()

    (home / "model.gguf").rename(home / "elsewhere.gguf")
    with pytest.raises(
        ModelNotFoundError, match=rf"Model file not found: {re.escape(str(home / 'model.gguf'))}\..*new path"
    ):
        QwenTextEmbedder.from_dict(data).warm_up()


def test_bad_use_gives_clear_errors(tiny_model: Path) -> None:
    text_embedder = QwenTextEmbedder(model=tiny_model, embedder_options={"n_threads": 2})
    doc_embedder = QwenDocumentEmbedder(model=tiny_model, embedder_options={"n_threads": 2})
    with pytest.raises(InputTypeError, match="takes one str, not list; to embed Documents use QwenDocumentEmbedder"):
        text_embedder.run([Document(content="x")])  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="takes a list of Documents, not str; to embed a query string"):
        doc_embedder.run("x")  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="item #1 is str, not a Document"):
        doc_embedder.run([Document(content="x"), "y"])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="batch_size must be a positive int"):
        QwenDocumentEmbedder(model=tiny_model, batch_size=0)
    broken = QwenTextEmbedder(model=tiny_model.parent / "missing.gguf")  # light to build, fails at warm_up
    with pytest.raises(ModelNotFoundError, match=r"missing\.gguf"):
        broken.warm_up()


@pytest.fixture(scope="module")
def reranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reranker_gguf(tmp_path_factory.mktemp("rr") / "rr.gguf", reranker_vocabulary(real_vocab()))


def _scored(documents: list[Document]) -> list[tuple[int, float]]:
    return [(int(d.id), d.score) for d in documents]


def test_ranker_in_a_pipeline_follows_the_reranker(reranker_path: Path) -> None:
    """BM25 retrieval, then QwenRanker: the order and scores are ``Reranker.rank``'s on the same texts."""
    store = InMemoryDocumentStore()
    store.write_documents([Document(content=t, id=str(i), meta={"title": f"Doc {i}"}) for i, t in enumerate(DOCUMENTS)])
    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=4))
    pipeline.add_component("ranker", QwenRanker(model=reranker_path, top_k=3, reranker_options={"n_threads": 2}))
    pipeline.connect("retriever.documents", "ranker.documents")
    query = "Which language has a borrow checker?"
    out = pipeline.run({"retriever": {"query": query}, "ranker": {"query": query}}, include_outputs_from={"retriever"})
    retrieved = out["retriever"]["documents"]
    ranker = pipeline.get_component("ranker")
    assert isinstance(ranker.reranker, Reranker)
    expected = ranker.reranker.rank(query, [d.content for d in retrieved], top_k=3)
    ranked = out["ranker"]["documents"]
    assert [d.id for d in ranked] == [retrieved[hit["corpus_id"]].id for hit in expected]
    assert [d.score for d in ranked] == pytest.approx([hit["score"] for hit in expected], abs=1e-6)
    assert [d.score for d in ranked] != pytest.approx([d.score for d in retrieved][:3])  # BM25's scores replaced
    assert {d.id: d.score for d in store.filter_documents()} == {str(i): None for i in range(4)}  # inputs untouched

    # Saved and loaded: the same file, its real quantization, one model for both.
    loaded = Pipeline.loads(pipeline.dumps(), allowed_modules=[MODULE])
    again = loaded.run({"retriever": {"query": query}, "ranker": {"query": query}})["ranker"]["documents"]
    assert _scored(again) == pytest.approx(_scored(ranked))
    assert loaded.get_component("ranker").reranker is ranker.reranker


def test_ranker_options_and_serialization(reranker_path: Path) -> None:
    ranker = QwenRanker(model=str(reranker_path), top_k=2, reranker_options={"n_threads": 2})
    data = ranker.to_dict()  # before warm_up: nothing loaded, the quant read from the file
    assert data["type"] == f"{MODULE}.QwenRanker"
    assert data["init_parameters"] == {
        "model": str(reranker_path.resolve()),
        "quant": "F32",
        "reranker_options": {"n_threads": 2},
        "top_k": 2,
        "instruction": None,
        "score_threshold": None,
        "meta_fields_to_embed": [],
        "embedding_separator": "\n",
    }
    assert QwenRanker.from_dict(data).to_dict() == data
    ranker.warm_up()
    ranker.warm_up()  # idempotent
    docs = [Document(content=t, id=str(i), meta={"title": f"Doc {i}"}) for i, t in enumerate(DOCUMENTS)]
    query = "Who purred on the mat?"
    every = ranker.reranker.rank(query, DOCUMENTS)
    best = [(hit["corpus_id"], hit["score"]) for hit in every]
    assert _scored(ranker.run(query, docs)["documents"]) == pytest.approx(best[:2])
    assert _scored(ranker.run(query, docs, top_k=4)["documents"]) == pytest.approx(best)
    cut = best[1][1]  # a threshold at the second score keeps exactly the first two
    assert _scored(ranker.run(query, docs, top_k=4, score_threshold=cut)["documents"]) == pytest.approx(best[:2])
    assert _scored(asyncio.run(ranker.run_async(query, docs, top_k=4))["documents"]) == pytest.approx(best)
    assert ranker.run(query, [])["documents"] == []
    assert all(d.score is None for d in docs)

    # Meta fields are ranked with the content: the reranker's scores on "title\ncontent", not on the bare text.
    titled = QwenRanker(reranker=ranker.reranker, top_k=4, meta_fields_to_embed=["title"])
    with_title = ranker.reranker.rank(query, [f"Doc {i}\n{t}" for i, t in enumerate(DOCUMENTS)])
    got = _scored(titled.run(query, docs)["documents"])
    assert got == pytest.approx([(hit["corpus_id"], hit["score"]) for hit in with_title])
    assert [s for _, s in sorted(got)] != pytest.approx([s for _, s in sorted(best)])  # the broken twin differs
    saved = titled.to_dict()["init_parameters"]  # a Reranker object is saved as its path and quant
    assert (saved["model"], saved["quant"], saved["reranker_options"]) == (str(reranker_path.resolve()), "F32", {})


def test_ranker_bad_use_gives_clear_errors(reranker_path: Path) -> None:
    ranker = QwenRanker(model=reranker_path, reranker_options={"n_threads": 2})
    with pytest.raises(InputTypeError, match="QwenRanker takes a list of Documents, not str"):
        ranker.run("q", "a document")  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="QwenRanker: item #1 is str, not a Document"):
        ranker.run("q", [Document(content="x"), "y"])  # type: ignore[list-item]
    with pytest.raises(InputTypeError, match="takes the query as a str, not list"):
        ranker.run(["q"], [Document(content="x")])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="top_k must be a positive int, not 0"):
        QwenRanker(model=reranker_path, top_k=0)
    with pytest.raises(ConfigurationError, match="top_k must be a positive int, not -1"):
        ranker.run("q", [Document(content="x")], top_k=-1)
    with pytest.raises(ConfigurationError, match="score_threshold must be a number"):
        QwenRanker(model=reranker_path, score_threshold="high")  # type: ignore[arg-type]
    with pytest.raises(InvalidPromptError, match="instruction is empty"):
        QwenRanker(model=reranker_path, instruction=" ")
    with pytest.raises(InputTypeError, match=r"reranker= must be a qwen_embed\.Reranker, not str"):
        QwenRanker(reranker="rr.gguf")  # type: ignore[arg-type]
    with pytest.raises(ModelNotFoundError, match=r"missing\.gguf"):
        QwenRanker(model=reranker_path.parent / "missing.gguf").warm_up()  # light to build, fails at warm_up


def test_haystack_example(
    tiny_model: Path,
    tiny_embedder: Embedder,
    reranker_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "argv", ["haystack_pipeline.py", str(tiny_model), str(reranker_path)])
    example = runpy.run_path(str(ROOT / "examples" / "haystack_pipeline.py"), run_name="__main__")
    out = capsys.readouterr().out
    docs, query = example["DOCUMENTS"], example["QUERY"]
    assert "store holds 3 documents" in out
    assert_printed_ranking(out.split("store holds")[0], tiny_embedder, docs, query, k=2)
    reranked = [
        line.removeprefix("reranked ").split("  ", 1) for line in out.splitlines() if line.startswith("reranked ")
    ]
    with Reranker(reranker_path, n_threads=2) as reranker:
        expected = reranker.rank(query, docs, top_k=2)
    assert [text for _, text in reranked] == [docs[hit["corpus_id"]] for hit in expected]
    assert [float(score) for score, _ in reranked] == pytest.approx([hit["score"] for hit in expected], abs=6e-4)
