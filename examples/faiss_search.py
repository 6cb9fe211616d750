"""Semantic search with FAISS: normalized vectors in an inner-product index (cosine similarity).

    python examples/faiss_search.py [path/to/model.gguf]      # pip install faiss-cpu

Documents are embedded bare, queries with the official instruction; both are L2-normalized,
so `IndexFlatIP` (inner product) ranks by cosine. Without a model path a small random-weight
model is built, which shows the mechanics, not retrieval quality.
"""

from __future__ import annotations

import sys

import faiss

from qwen_embed import Embedder
from qwen_embed.testing import demo_model

DOCUMENTS = [
    "GGUF is the single-file model format of llama.cpp.",
    "Qwen3-Embedding turns text into vectors for search and clustering.",
    "Matryoshka embeddings can be cut to fewer dimensions.",
    "FAISS searches millions of vectors quickly.",
    "Sourdough needs a lively starter and a long proof.",
]


def main(argv: list[str]) -> None:
    with Embedder(demo_model(argv[1] if len(argv) > 1 else None)) as emb:
        vectors = emb.encode_documents(DOCUMENTS)  # (n, dim) float32, unit length
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        queries = emb.encode_queries(["Which file format does llama.cpp use?", "How do I bake bread?"])
        scores, ids = index.search(queries, 3)
        for q, (row_scores, row_ids) in enumerate(zip(scores, ids)):
            print(f"query {q}:")
            for score, i in zip(row_scores, row_ids):
                print(f"  {score:.3f}  {DOCUMENTS[i]}")
        print(f"index holds {index.ntotal} vectors of {index.d} dims")


if __name__ == "__main__":
    main(sys.argv)
