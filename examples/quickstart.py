"""Quickstart: embed queries and documents, rank documents for each query.

    python examples/quickstart.py                      # builds a small random-weight model
    python examples/quickstart.py path/to/Qwen3-Embedding-0.6B-Q8_0.gguf

Without a model path the script writes a tiny random-weight Qwen3 GGUF first (no
download needed), so the numbers show the mechanics, not real retrieval quality.
"""

from __future__ import annotations

import sys

from qwen_embed import Embedder
from qwen_embed.testing import demo_model


def main(argv: list[str]) -> None:
    model_path = demo_model(argv[1] if len(argv) > 1 else None)

    queries = ["What is GGUF?", "How do I make embeddings faster on a CPU?"]
    documents = [
        "GGUF is the single-file model format of llama.cpp, holding weights and metadata.",
        "Packing many texts into one batch and skipping unused outputs speeds up embedding.",
        "The Great Wall of China is visible from many places.",
    ]

    with Embedder(model_path) as emb:
        print(emb)
        q = emb.encode_queries(queries)  # "Instruct: {task}\nQuery:{text}", the official format
        d = emb.encode_documents(documents)  # documents: no instruction
        print(f"queries {q.shape}, documents {d.shape}, dtype {q.dtype}")
        scores = q @ d.T  # vectors are L2-normalized: dot product = cosine
        for query, row in zip(queries, scores):
            best = int(row.argmax())
            print(f"{query!r} -> {documents[best]!r} (score {row[best]:.3f})")
        print("256-dim Matryoshka vectors:", emb.encode(documents, dim=256).shape if emb.native_dim >= 256 else "n/a")


if __name__ == "__main__":
    main(sys.argv)
