"""Semantic search with Milvus Lite: a local database file, inner product on unit vectors.

    python examples/milvus_lite_search.py [path/to/model.gguf] [file.db]   # pip install "qwen-embed[milvus]"

qwen_embed's vectors are L2-normalized, so Milvus's inner product (`metric_type="IP"`) ranks
by cosine similarity. Without a model path a small random-weight model is built, which shows
the mechanics, not retrieval quality.
"""

from __future__ import annotations

import sys

from pymilvus import MilvusClient

from qwen_embed import Embedder
from qwen_embed.testing import demo_model

DOCUMENTS = [
    "GGUF is the single-file model format of llama.cpp.",
    "Qwen3-Embedding turns text into vectors for search and clustering.",
    "Sourdough needs a lively starter and a long proof.",
]
QUERY = "Which file format does llama.cpp use?"


def main(argv: list[str]) -> None:
    db = argv[2] if len(argv) > 2 else "./qwen_embed_demo.db"
    with Embedder(demo_model(argv[1] if len(argv) > 1 else None)) as emb:
        client = MilvusClient(db)
        if client.has_collection("docs"):
            client.drop_collection("docs")
        client.create_collection("docs", dimension=emb.dim, metric_type="IP", consistency_level="Strong")
        vectors = emb.encode_documents(DOCUMENTS)  # (n, dim) float32, unit length
        rows = [{"id": i, "vector": v.tolist(), "text": t} for i, (v, t) in enumerate(zip(vectors, DOCUMENTS))]
        client.insert("docs", rows)
        query = emb.encode_queries([QUERY])
        hits = client.search("docs", data=query.tolist(), limit=2, output_fields=["text"])[0]
        for hit in hits:
            print(f"{hit['distance']:.3f}  {hit['entity']['text']}")
        print(f"{db}: {client.get_collection_stats('docs')['row_count']} rows of {emb.dim} dims")
        client.close()


if __name__ == "__main__":
    main(sys.argv)
