"""Haystack pipelines: index Documents with QwenDocumentEmbedder, search with QwenTextEmbedder,
optionally rerank with QwenRanker.

    python examples/haystack_pipeline.py [path/to/model.gguf] [path/to/reranker.gguf]
    # pip install "qwen-embed[haystack]"

Both embedding components share one loaded model. With a reranker file (a Qwen3-Reranker
GGUF) the search pipeline retrieves all three documents and QwenRanker keeps the best two,
scored by the reranker. Without a model path a small random-weight model is built, which
shows the mechanics, not retrieval quality.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
from haystack.components.writers import DocumentWriter
from haystack.document_stores.in_memory import InMemoryDocumentStore

from qwen_embed.integrations.haystack import QwenDocumentEmbedder, QwenRanker, QwenTextEmbedder
from qwen_embed.testing import demo_model

DOCUMENTS = [
    "GGUF is the single-file model format of llama.cpp.",
    "Qwen3-Embedding turns text into vectors for search and clustering.",
    "Sourdough needs a lively starter and a long proof.",
]
QUERY = "Which file format does llama.cpp use?"


def main(argv: list[str]) -> None:
    model = str(demo_model(argv[1] if len(argv) > 1 else None))
    store = InMemoryDocumentStore(embedding_similarity_function="cosine")

    indexing = Pipeline()
    indexing.add_component("embedder", QwenDocumentEmbedder(model=model))
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("embedder.documents", "writer.documents")
    indexing.run({"embedder": {"documents": [Document(content=t) for t in DOCUMENTS]}})

    search = Pipeline()
    search.add_component("embedder", QwenTextEmbedder(model=model))
    search.add_component("retriever", InMemoryEmbeddingRetriever(document_store=store, top_k=2))
    search.connect("embedder.embedding", "retriever.query_embedding")
    result = search.run({"embedder": {"text": QUERY}})
    for doc in result["retriever"]["documents"]:
        print(f"{doc.score:.3f}  {doc.content}")
    print(f"store holds {store.count_documents()} documents")

    if len(argv) > 2:  # rerank: retrieve every document, keep the reranker's best two
        rerank = Pipeline()
        rerank.add_component("embedder", QwenTextEmbedder(model=model))
        rerank.add_component("retriever", InMemoryEmbeddingRetriever(document_store=store, top_k=3))
        rerank.add_component("ranker", QwenRanker(model=argv[2], top_k=2))
        rerank.connect("embedder.embedding", "retriever.query_embedding")
        rerank.connect("retriever.documents", "ranker.documents")
        reranked = rerank.run({"embedder": {"text": QUERY}, "ranker": {"query": QUERY}})
        for doc in reranked["ranker"]["documents"]:
            print(f"reranked {doc.score:.3f}  {doc.content}")


if __name__ == "__main__":
    main(sys.argv)
