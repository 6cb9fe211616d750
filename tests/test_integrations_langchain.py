"""LangChain: QwenEmbeddings against LangChain's own standard tests and an in-memory vector store;
QwenRerank as a document compressor. Real packages, generated models."""

from __future__ import annotations

import asyncio
import runpy
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from qwen_embed import ConfigurationError, Embedder, EmbedderClosedError, InputTypeError, Reranker
from qwen_embed.integrations.langchain import QwenEmbeddings, QwenRerank

from .conftest import real_vocab
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

# The standard async tests are plain `async def`; pytest-asyncio (strict mode) runs them when marked.
for _name in ("test_aembed_query", "test_aembed_documents"):
    pytest.mark.asyncio(getattr(EmbeddingsIntegrationTests, _name))


class _Params:
    model_path: Path

    @pytest.fixture(autouse=True)
    def _model(self, tiny_model: Path) -> None:
        type(self).model_path = tiny_model

    @property
    def embeddings_class(self) -> type[QwenEmbeddings]:
        return QwenEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": str(self.model_path), "embedder_options": {"n_threads": 2}}


class TestQwenEmbeddingsStandardUnit(_Params, EmbeddingsUnitTests):
    """LangChain's standard unit tests, unchanged."""


class TestQwenEmbeddingsStandardIntegration(_Params, EmbeddingsIntegrationTests):
    """LangChain's standard integration tests, unchanged."""


def test_vectors_are_the_embedders_own(tiny_model: Path) -> None:
    emb = CountingEmbedder(tiny_model, n_threads=2)
    embeddings = QwenEmbeddings(embedder=emb)
    assert_same_vectors(embeddings.embed_documents(DOCUMENTS), emb.encode_documents(DOCUMENTS))
    assert_same_vectors(embeddings.embed_query("What purrs?"), emb.encode_queries("What purrs?"))
    qa = QwenEmbeddings(embedder=emb, task="qa", dim=32)
    assert_same_vectors(qa.embed_query("What purrs?"), emb.encode_queries("What purrs?", task="qa", dim=32))
    custom = QwenEmbeddings(embedder=emb, query_instruction="Find recipes")
    assert_same_vectors(custom.embed_query("bread"), emb.encode("bread", instruction="Find recipes"))
    emb.calls.clear()
    vectors = embeddings.embed_documents(DOCUMENTS)
    embeddings.embed_query("What purrs?")
    assert [c[:2] for c in emb.calls] == [("document", 4), ("query", 1)]  # one engine call per batch
    assert all(type(x) is float for row in vectors for x in row)
    assert embeddings.embed_documents([]) == []


def test_in_memory_vector_store_round_trip(tiny_model: Path) -> None:
    """Default prompts: the store holds ``encode_documents``' vectors and ranks as brute force over
    ``encode_queries``' vectors does (same order, same scores)."""
    embeddings = QwenEmbeddings(model=tiny_model, embedder_options={"n_threads": 2})
    emb = embeddings.embedder
    store = InMemoryVectorStore.from_texts(DOCUMENTS, embeddings, metadatas=[{"i": i} for i in range(4)])
    held = {entry["metadata"]["i"]: entry["vector"] for entry in store.store.values()}
    stored = [held[i] for i in range(4)]
    assert_same_vectors(stored, emb.encode_documents(DOCUMENTS))
    assert_other_vectors(stored, emb.encode_queries(DOCUMENTS))  # the broken pairing stores other vectors
    assert_same_vectors([embeddings.embed_query(q) for q in QUERIES], emb.encode_queries(QUERIES))
    expected = brute_force(emb.encode_queries(QUERIES), emb.encode_documents(DOCUMENTS), k=2)
    for query, best in zip(QUERIES, expected, strict=True):
        found = store.similarity_search_with_score(query, k=2)
        assert_ranked([(doc.metadata["i"], score) for doc, score in found], best)
        assert [doc.page_content for doc, _ in found] == [DOCUMENTS[i] for i, _ in best]


def test_query_and_document_adapters_share_one_model(tiny_model: Path) -> None:
    a = QwenEmbeddings(model=tiny_model, embedder_options={"n_threads": 2})
    b = QwenEmbeddings(model=str(tiny_model), task="qa", dim=32, embedder_options={"n_threads": 2})
    assert a.embedder is b.embedder and b.dim == 32 and a.dim == 64


def test_async_runs_off_the_event_loop(tiny_model: Path) -> None:
    emb = CountingEmbedder(tiny_model, n_threads=2)
    embeddings = QwenEmbeddings(embedder=emb)

    async def main() -> tuple[int, list[list[float]], list[float]]:
        docs, query = await asyncio.gather(embeddings.aembed_documents(DOCUMENTS), embeddings.aembed_query("q"))
        return threading.get_ident(), docs, query

    loop_thread, docs, query = asyncio.run(main())
    assert len(docs) == 4 and len(query) == 64
    assert sorted(c[:2] for c in emb.calls) == [("document", 4), ("query", 1)]
    assert all(thread != loop_thread for _, _, thread in emb.calls)


def test_bad_use_gives_clear_errors(tiny_model: Path) -> None:
    embeddings = QwenEmbeddings(model=tiny_model, embedder_options={"n_threads": 2})
    with pytest.raises(InputTypeError, match="not a single str; for one text use embed_query"):
        embeddings.embed_documents("one text")  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="text #1 is int"):
        embeddings.embed_documents(["a", 1])  # type: ignore[list-item]
    with pytest.raises(InputTypeError, match="embed_query takes one str, not list; for several texts"):
        embeddings.embed_query(["a"])  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match=r"must be a qwen_embed\.Embedder"):
        QwenEmbeddings(embedder="model.gguf")  # type: ignore[arg-type]
    own = CountingEmbedder(tiny_model, n_threads=2)
    closing = QwenEmbeddings(embedder=own)
    own.close()
    with pytest.raises(EmbedderClosedError):
        closing.embed_query("after close")
    with pytest.raises(EmbedderClosedError):
        QwenEmbeddings(embedder=own)


@pytest.fixture(scope="module")
def reranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reranker_gguf(tmp_path_factory.mktemp("rr") / "rr.gguf", reranker_vocabulary(real_vocab()))


def test_rerank_compressor_follows_the_reranker(reranker_path: Path) -> None:
    compressor = QwenRerank(model=reranker_path, top_n=2, reranker_options={"n_threads": 2})
    docs = [Document(page_content=t, metadata={"i": i}) for i, t in enumerate(DOCUMENTS)]
    query = "Which language has a borrow checker?"
    kept = compressor.compress_documents(docs, query)
    expected = compressor.reranker.rank(query, DOCUMENTS, top_k=2)
    assert [d.metadata["i"] for d in kept] == [hit["corpus_id"] for hit in expected]
    assert [d.metadata["relevance_score"] for d in kept] == pytest.approx([hit["score"] for hit in expected])
    assert "relevance_score" not in docs[0].metadata  # the input documents are untouched
    assert len(asyncio.run(compressor.acompress_documents(docs, query))) == 2
    assert compressor.compress_documents([], query) == []
    every = QwenRerank(reranker=compressor.reranker, top_n=None)
    assert len(every.compress_documents(docs, query)) == 4
    with pytest.raises(InputTypeError, match="item #0 is str, not a Document"):
        compressor.compress_documents(["text"], query)  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="top_n must be a positive int"):
        QwenRerank(reranker=compressor.reranker, top_n=0)
    with pytest.raises(InputTypeError, match=r"must be a qwen_embed\.Reranker"):
        QwenRerank(reranker=object())  # type: ignore[arg-type]
    assert isinstance(compressor.reranker, Reranker)


def test_langchain_example(
    tiny_model: Path, tiny_embedder: Embedder, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["langchain_search.py", str(tiny_model)])
    example = runpy.run_path(str(ROOT / "examples" / "langchain_search.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "3 documents of 64 dims"
    assert_printed_ranking(out, tiny_embedder, example["DOCUMENTS"], example["QUERY"], k=2)
