"""Two-stage retrieval: Qwen3-Embedding finds 50 candidates with FAISS, Qwen3-Reranker keeps the best 5.

    python examples/two_stage_retrieval.py                              # downloads both 0.6B models
    python examples/two_stage_retrieval.py EMBEDDER.gguf RERANKER.gguf  # local files

The embedder is fast and sees each text alone; the reranker reads the query and a document
together, which is slower but more accurate, so it only sees the first stage's candidates. The
reranker decodes the query's part of its prompt once for all 50 candidates.
"""

from __future__ import annotations

import sys

import faiss  # pip install faiss-cpu

from qwen_embed import Embedder, Reranker

CORPUS = [
    "GGUF is the single-file model format of llama.cpp.",
    "llama.cpp runs quantized language models on CPUs and GPUs.",
    "Qwen3-Embedding turns text into vectors for search and clustering.",
    "Qwen3-Reranker scores how well a document answers a query.",
    "A reranker reads the query and the document together, a bi-encoder reads them apart.",
    "Matryoshka embeddings can be cut to fewer dimensions.",
    "FAISS searches millions of vectors quickly.",
    "Q8_0 stores weights in 8 bits with one scale per block of 32.",
    "Sourdough needs a lively starter and a long proof.",
    "A French press makes coffee by steeping the grounds.",
    "The Rhine flows from the Alps to the North Sea.",
    "Tomatoes ripen faster next to bananas.",
] * 5  # 60 documents: more than the 50 candidates the first stage keeps
QUERIES = ["Which file format does llama.cpp use?", "How do I make coffee?"]
CANDIDATES, TOP = 50, 5


def main(argv: list[str]) -> None:
    if len(argv) == 3:
        embedder, reranker = Embedder(argv[1]), Reranker(argv[2])
    else:
        embedder, reranker = Embedder.from_pretrained("0.6B"), Reranker.from_pretrained("0.6B")
    with embedder, reranker:
        vectors = embedder.encode_documents(CORPUS)  # unit length: inner product = cosine
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        _, ids = index.search(embedder.encode_queries(QUERIES), CANDIDATES)
        for query, row in zip(QUERIES, ids):
            candidates = [int(i) for i in row if i >= 0]
            ranked = reranker.rank(query, [CORPUS[i] for i in candidates], top_k=TOP)
            print(f"{query}  ({len(candidates)} candidates -> top {len(ranked)})")
            for hit in ranked:
                doc_id = candidates[hit["corpus_id"]]
                print(f"  {hit['score']:.3f}  #{doc_id:<3} {CORPUS[doc_id]}")
        print(f"reranker: {reranker!r}")


if __name__ == "__main__":
    main(sys.argv)
