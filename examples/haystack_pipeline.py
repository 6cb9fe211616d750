"""Haystack pipelines: index Documents with QwenDocumentEmbedder, search with QwenTextEmbedder.

    python examples/haystack_pipeline.py [path/to/model.gguf]      # pip install "qwen-embed[haystack]"

Both components share one loaded model. Without a model path a small random-weight model is
built, which shows the mechanics, not retrieval quality.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
from haystack.components.writers import DocumentWriter
from haystack.document_stores.in_memory import InMemoryDocumentStore

from qwen_embed.integrations.haystack import QwenDocumentEmbedder, QwenTextEmbedder
from qwen_embed.testing import demo_model

DOCUMENTS = [
    "GGUF is the single-file model format of llama.cpp.",
    "Qwen3-Embedding turns text into vectors for search and clustering.",
    "Sourdough needs a lively starter and a long proof.",
]


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
    result = search.run({"embedder": {"text": "Which file format does llama.cpp use?"}})
    for doc in result["retriever"]["documents"]:
        print(f"{doc.score:.3f}  {doc.content}")
    print(f"store holds {store.count_documents()} documents")


if __name__ == "__main__":
    main(sys.argv)
