"""Quickstart: embed queries and documents, rank documents for each query.

    python examples/quickstart.py                      # downloads Qwen3-Embedding-0.6B Q8_0 (once, ~640 MB)
    python examples/quickstart.py 4B Q4_K_M            # another size and quant from the catalog
    python examples/quickstart.py path/to/model.gguf   # a local file
    python examples/quickstart.py --demo               # no download: a small random-weight model

The download goes into the Hugging Face cache (HF_HOME / HF_HUB_CACHE) and is reused
offline afterwards. ``--demo`` shows the mechanics only, not retrieval quality. Without a
network (or with HF_HUB_OFFLINE=1 and nothing cached) it stops with one line saying what to do.
"""

from __future__ import annotations

import sys

from qwen_embed import Embedder, QwenEmbedError
from qwen_embed.testing import demo_model


def load(args: list[str]) -> Embedder:
    if args[:1] == ["--demo"]:
        return Embedder(demo_model())
    model = args[0] if args else "0.6B"
    quant = args[1] if len(args) > 1 else None  # None: the catalog's default (Q8_0), or a local file's own
    return Embedder.from_pretrained(model, quant=quant)  # a local .gguf path works too


def main(argv: list[str]) -> int:
    queries = ["What is GGUF?", "How do I make embeddings faster on a CPU?"]
    documents = [
        "GGUF is the single-file model format of llama.cpp, holding weights and metadata.",
        "Packing many texts into one batch and skipping unused outputs speeds up embedding.",
        "The Great Wall of China is visible from many places.",
    ]

    try:
        emb = load(argv[1:])
    except QwenEmbedError as error:  # no network, nothing cached, an unknown name: the message says what to do
        print(f"quickstart: {error}", file=sys.stderr)
        return 1
    with emb:
        print(emb)
        q = emb.encode_queries(queries)  # "Instruct: {task}\nQuery:{text}", the official format
        d = emb.encode_documents(documents)  # documents: no instruction
        print(f"queries {q.shape}, documents {d.shape}, dtype {q.dtype}")
        scores = q @ d.T  # vectors are L2-normalized: dot product = cosine
        for query, row in zip(queries, scores):
            best = int(row.argmax())
            print(f"{query!r} -> {documents[best]!r} (score {row[best]:.3f})")
        print("256-dim Matryoshka vectors:", emb.encode(documents, dim=256).shape if emb.native_dim >= 256 else "n/a")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
