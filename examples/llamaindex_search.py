"""Retrieval in LlamaIndex with QwenEmbedding: a VectorStoreIndex and its retriever (no LLM needed).

    python examples/llamaindex_search.py [path/to/model.gguf]      # pip install "qwen-embed[llamaindex]"

Without a model path a small random-weight model is built, which shows the mechanics, not
retrieval quality.
"""

from __future__ import annotations

import sys

from llama_index.core import Document, VectorStoreIndex

from qwen_embed.integrations.llama_index import QwenEmbedding
from qwen_embed.testing import demo_model

DOCUMENTS = [
    "GGUF is the single-file model format of llama.cpp.",
    "Qwen3-Embedding turns text into vectors for search and clustering.",
    "Sourdough needs a lively starter and a long proof.",
]
QUERY = "Which file format does llama.cpp use?"


def main(argv: list[str]) -> None:
    embed_model = QwenEmbedding(model=demo_model(argv[1] if len(argv) > 1 else None))
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCUMENTS], embed_model=embed_model)
    retriever = index.as_retriever(similarity_top_k=2)
    for hit in retriever.retrieve(QUERY):
        print(f"{hit.score:.3f}  {hit.node.get_content()}")
    print(f"model {embed_model.model_name}, batch size {embed_model.embed_batch_size}")


if __name__ == "__main__":
    main(sys.argv)
