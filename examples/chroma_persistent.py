"""A persistent Chroma collection embedded with QwenEmbeddingFunction, reopened by name.

    python examples/chroma_persistent.py [path/to/model.gguf] [db folder]   # pip install "qwen-embed[chroma]"

The collection records the function's name and configuration, so any later process that
imports `qwen_embed.integrations.chroma` reopens it with `client.get_collection("docs")`
and embeds its queries the same way. Without a model path a small random-weight model is
built, which shows the mechanics, not retrieval quality.
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import chromadb

from qwen_embed.integrations.chroma import QwenEmbeddingFunction
from qwen_embed.testing import demo_model

DOCUMENTS = [
    "GGUF is the single-file model format of llama.cpp.",
    "Qwen3-Embedding turns text into vectors for search and clustering.",
    "Sourdough needs a lively starter and a long proof.",
]
QUERY = "Which file format does llama.cpp use?"


def main(argv: list[str]) -> None:
    model = str(demo_model(argv[1] if len(argv) > 1 else None))
    path = argv[2] if len(argv) > 2 else tempfile.mkdtemp(prefix="chroma-")
    client = chromadb.PersistentClient(path=path)
    docs = client.get_or_create_collection("docs", embedding_function=QwenEmbeddingFunction(model=model))
    docs.upsert(ids=[f"doc{i}" for i in range(len(DOCUMENTS))], documents=DOCUMENTS)

    reopened = chromadb.PersistentClient(path=path).get_collection("docs")  # the function comes back by name
    found = reopened.query(query_texts=[QUERY], n_results=2)
    for doc, distance in zip(found["documents"][0], found["distances"][0]):
        print(f"{distance:.3f}  {doc}")
    print(f"collection at {path}: {reopened.count()} documents, space {reopened.configuration['hnsw']['space']}")


if __name__ == "__main__":
    main(sys.argv)
