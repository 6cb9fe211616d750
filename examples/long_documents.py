"""Long-document retrieval: one fused vector per document, and the best chunk inside it.

    python examples/long_documents.py [path/to/model.gguf] [docs/*.md ...]

Without files it makes three long Markdown documents. Each document is split at its
headings into token-exact chunks (the "technical" preset: 1024 tokens, 128 overlap),
embedded in shared batches, and fused hierarchically (chunks -> sections -> document).
A query ranks the documents by their fused vectors, then the chunks of the best one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from qwen_embed import Embedder
from qwen_embed.testing import demo_model

TOPICS = {
    "Running llama.cpp on a laptop": "Quantized GGUF weights keep memory small. Threads should match the cores.",
    "Contract law basics": "A contract needs an offer, an acceptance and consideration. Breach allows remedies.",
    "Baking sourdough bread": "Feed the starter the day before. A long cold proof gives a more open crumb.",
}


def make_document(title: str, sentence: str, sections: int = 6, repeats: int = 15) -> str:
    body = [f"# {title}\n"]
    for i in range(sections):
        body.append(f"## Part {i + 1}\n\n" + " ".join([sentence] * repeats) + "\n")
    return "\n".join(body)


def main(argv: list[str]) -> None:
    model = argv[1] if len(argv) > 1 and argv[1].endswith(".gguf") else None
    files = [Path(p) for p in argv[2 if model else 1 :]]
    docs = {p.name: p.read_text(encoding="utf-8") for p in files} or {
        title: make_document(title, sentence) for title, sentence in TOPICS.items()
    }

    with Embedder(demo_model(model), chunking="technical", n_threads=None) as emb:
        names = list(docs)
        results = [emb.encode_long(docs[name], fusion="hierarchical") for name in names]
        for name, result in zip(names, results):
            print(f"{name}: {result.n_tokens:,} tokens, {len(result.chunks)} chunks, {len(result.sections)} sections")

        # The same vectors in one call (all chunks of all documents share batches):
        fused = emb.encode([docs[name] for name in names], long_text="chunk")
        print("encode(long_text='chunk') shape:", fused.shape)

        query = emb.encode_queries("How do I run an embedding model with little memory?")
        doc_vectors = np.stack([r.vector for r in results])
        best = int(np.argmax(doc_vectors @ query))
        chunks = results[best].chunks
        scores = np.stack([c.vector for c in chunks]) @ query
        top = chunks[int(np.argmax(scores))]
        print(f"best document: {names[best]!r}")
        print(f"best chunk: {' > '.join(top.section)} [{top.start}:{top.end}] {top.text[:70]!r}...")


if __name__ == "__main__":
    main(sys.argv)
