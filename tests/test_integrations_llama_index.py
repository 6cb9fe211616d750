"""LlamaIndex: QwenEmbedding in a VectorStoreIndex and an ingestion pipeline; QwenRerank as a node
postprocessor. Real packages, generated models, no LLM."""

from __future__ import annotations

import asyncio
import runpy
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.schema import NodeWithScore, TextNode

from qwen_embed import ConfigurationError, Embedder, EmbedderClosedError, InputTypeError, UnknownPromptError
from qwen_embed.integrations.llama_index import QwenEmbedding, QwenRerank

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
SIX = (
    "_get_query_embedding",
    "_aget_query_embedding",
    "_get_text_embedding",
    "_aget_text_embedding",
    "_get_text_embeddings",
    "_aget_text_embeddings",
)


def test_all_six_methods_are_ours() -> None:
    assert all(name in QwenEmbedding.__dict__ for name in SIX)
    assert QwenEmbedding.class_name() == "QwenEmbedding"


def test_vector_store_index_round_trip(tiny_model: Path) -> None:
    """Default prompts: the index holds ``encode_documents``' vectors and retrieves as brute force over
    ``encode_queries``' vectors does (same order, same scores)."""
    embed_model = QwenEmbedding(model=tiny_model, embedder_options={"n_threads": 2})
    emb = embed_model.embedder
    docs = [Document(text=t, metadata={"i": i}, excluded_embed_metadata_keys=["i"]) for i, t in enumerate(DOCUMENTS)]
    index = VectorStoreIndex.from_documents(docs, embed_model=embed_model)
    held = {node.metadata["i"]: index.vector_store.get(node_id) for node_id, node in index.docstore.docs.items()}
    stored = [held[i] for i in range(4)]
    assert_same_vectors(stored, emb.encode_documents(DOCUMENTS))
    assert_other_vectors(stored, emb.encode_queries(DOCUMENTS))  # the broken pairing stores other vectors
    assert_same_vectors([embed_model.get_query_embedding(q) for q in QUERIES], emb.encode_queries(QUERIES))
    expected = brute_force(emb.encode_queries(QUERIES), emb.encode_documents(DOCUMENTS), k=2)
    retriever = index.as_retriever(similarity_top_k=2)
    for query, best in zip(QUERIES, expected, strict=True):
        assert_ranked([(hit.node.metadata["i"], hit.score) for hit in retriever.retrieve(query)], best)


def test_vectors_batches_and_ingestion(tiny_model: Path) -> None:
    emb = CountingEmbedder(tiny_model, n_threads=2)
    embed_model = QwenEmbedding(embedder=emb, embed_batch_size=3)
    assert embed_model.model_name == tiny_model.name and embed_model.embed_batch_size == 3
    assert_same_vectors(embed_model.get_query_embedding("What purrs?"), emb.encode_queries("What purrs?"))
    assert_same_vectors(embed_model.get_text_embedding(DOCUMENTS[0]), emb.encode_documents(DOCUMENTS[0]))
    emb.calls.clear()
    vectors = embed_model.get_text_embedding_batch(DOCUMENTS)
    assert [c[:2] for c in emb.calls] == [("document", 3), ("document", 1)]  # one engine call per batch
    assert_same_vectors(vectors, emb.encode_documents(DOCUMENTS))
    assert all(type(x) is float for row in vectors for x in row)
    assert QwenEmbedding(model=tiny_model, embedder_options={"n_threads": 2}).embed_batch_size == 64

    nodes = IngestionPipeline(transformations=[embed_model]).run(nodes=[TextNode(text=t) for t in DOCUMENTS])
    assert len(nodes) == 4 and all(len(n.embedding) == 64 for n in nodes)


def test_async_methods_run_off_the_loop(tiny_model: Path) -> None:
    emb = CountingEmbedder(tiny_model, n_threads=2)
    embed_model = QwenEmbedding(embedder=emb)

    async def main() -> int:
        query = await embed_model.aget_query_embedding("q")
        one = await embed_model.aget_text_embedding("d")
        many = await embed_model.aget_text_embedding_batch(DOCUMENTS)
        assert len(query) == len(one) == 64 and len(many) == 4
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert [c[:2] for c in emb.calls] == [("query", 1), ("document", 1), ("document", 4)]
    assert all(thread != loop_thread for _, _, thread in emb.calls)


def test_serialization_round_trip(tiny_model: Path, model_factory: ModelFactory) -> None:
    embed_model = QwenEmbedding(model=tiny_model, task="qa", dim=32, embedder_options={"n_threads": 2})
    data = embed_model.to_dict()
    assert data["model"] == str(tiny_model.resolve()) and data["quant"] == "F32"  # the file's own quantization
    again = QwenEmbedding.from_dict(data)
    assert again.to_dict() == data and again.embedder is embed_model.embedder
    assert len(again.get_query_embedding("q")) == 32
    q8 = model_factory(quant="Q8_0")
    assert QwenEmbedding(model=q8, embedder_options={"n_threads": 2}).to_dict()["quant"] == "Q8_0"
    with pytest.raises(ConfigurationError, match=r"holds F32 weights, not quant='Q8_0'"):
        QwenEmbedding.from_dict({**data, "quant": "Q8_0"})


def test_bad_use_gives_clear_errors(tiny_model: Path) -> None:
    embed_model = QwenEmbedding(model=tiny_model, embedder_options={"n_threads": 2})
    with pytest.raises(InputTypeError, match="get_query_embedding takes one str, not int"):
        embed_model.get_query_embedding(3)  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="text #0 is bytes"):
        embed_model.get_text_embedding_batch([b"bytes"])  # type: ignore[list-item]
    with pytest.raises(UnknownPromptError, match="Unknown prompt 'no-such-task'"):
        QwenEmbedding(model=tiny_model, task="no-such-task", embedder_options={"n_threads": 2})
    own = CountingEmbedder(tiny_model, n_threads=2)
    adapter = QwenEmbedding(embedder=own)
    own.close()
    with pytest.raises(EmbedderClosedError):
        adapter.get_query_embedding("after close")


@pytest.fixture(scope="module")
def reranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reranker_gguf(tmp_path_factory.mktemp("rr") / "rr.gguf", reranker_vocabulary(real_vocab()))


def test_rerank_postprocessor_follows_the_reranker(reranker_path: Path) -> None:
    post = QwenRerank(model=reranker_path, top_n=3, reranker_options={"n_threads": 2})
    assert (post.model, post.quant) == (str(reranker_path.resolve()), "F32")  # the file's path and quantization
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(DOCUMENTS)]
    query = "Which language has a borrow checker?"
    kept = post.postprocess_nodes(nodes, query_str=query)
    expected = post.reranker.rank(query, DOCUMENTS, top_k=3)
    assert [int(n.node.node_id) for n in kept] == [hit["corpus_id"] for hit in expected]
    assert [n.score for n in kept] == pytest.approx([hit["score"] for hit in expected])
    assert len(asyncio.run(post.apostprocess_nodes(nodes, query_str=query))) == 3
    with pytest.raises(ConfigurationError, match="needs the query"):
        post.postprocess_nodes(nodes)
    with pytest.raises(InputTypeError, match="not a NodeWithScore"):
        post.postprocess_nodes([TextNode(text="x")], query_str=query)  # type: ignore[list-item]


def test_llamaindex_example(
    tiny_model: Path, tiny_embedder: Embedder, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["llamaindex_search.py", str(tiny_model)])
    example = runpy.run_path(str(ROOT / "examples" / "llamaindex_search.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"model {tiny_model.name}, batch size 64"
    assert_printed_ranking(out, tiny_embedder, example["DOCUMENTS"], example["QUERY"], k=2)
