"""Semantic search in LangChain with QwenEmbeddings and an in-memory vector store.

    python examples/langchain_search.py [path/to/model.gguf]      # pip install "qwen-embed[langchain]"

Documents go through `embed_documents` (one batched encode, no instruction), the query
through `embed_query` (the web-search instruction). Without a model path a small
random-weight model is built, which shows the mechanics, not retrieval quality.
"""

from __future__ import annotations

import sys

from langchain_core.vectorstores import InMemoryVectorStore

from qwen_embed.integrations.langchain import QwenEmbeddings
from qwen_embed.testing import demo_model

DOCUMENTS = [
    "GGUF is the single-file model format of llama.cpp.",
    "Qwen3-Embedding turns text into vectors for search and clustering.",
    "Sourdough needs a lively starter and a long proof.",
]
QUERY = "Which file format does llama.cpp use?"


def main(argv: list[str]) -> None:
    embeddings = QwenEmbeddings(model=demo_model(argv[1] if len(argv) > 1 else None))
    store = InMemoryVectorStore.from_texts(DOCUMENTS, embeddings)
    for doc, score in store.similarity_search_with_score(QUERY, k=2):
        print(f"{score:.3f}  {doc.page_content}")
    print(f"{len(store.store)} documents of {embeddings.dim} dims")


if __name__ == "__main__":
    main(sys.argv)
