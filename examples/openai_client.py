"""Call `qwen-embed serve` with the official `openai` client, as the seed article does.

    qwen-embed serve --model 0.6B --quant Q8_0 --port 8000        # in one terminal
    python examples/openai_client.py [http://127.0.0.1:8000/v1]   # in another

The server speaks OpenAI's `/v1/embeddings`; `prompt_name` (or `instruction`) in `extra_body`
applies the official query format, and `dimensions` gives Matryoshka vectors.
"""

from __future__ import annotations

import sys

import numpy as np
from openai import OpenAI


def main(argv: list[str]) -> None:
    base_url = argv[1] if len(argv) > 1 else "http://127.0.0.1:8000/v1"
    client = OpenAI(base_url=base_url, api_key="EMPTY")
    model = client.models.list().data[0].id

    docs = ["GGUF is llama.cpp's model file format.", "The Great Wall is in China."]
    d = client.embeddings.create(model=model, input=docs)
    q = client.embeddings.create(model=model, input=["What is GGUF?"], extra_body={"prompt_name": "query"})
    doc_vectors = np.array([item.embedding for item in d.data])
    query_vector = np.array(q.data[0].embedding)
    scores = doc_vectors @ query_vector
    print(f"model {model}: {len(d.data)} documents, {doc_vectors.shape[1]} dims, {d.usage.prompt_tokens} tokens")
    print(f"best match: {docs[int(scores.argmax())]!r} ({scores.max():.3f})")
    small = client.embeddings.create(model=model, input="What is GGUF?", dimensions=32)
    print(f"dimensions=32 -> {len(small.data[0].embedding)} values")


if __name__ == "__main__":
    main(sys.argv)
