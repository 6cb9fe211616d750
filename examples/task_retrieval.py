"""Query/document retrieval with a task preset, and symmetric similarity (STS).

python examples/task_retrieval.py [path/to/model.gguf]
"""

from __future__ import annotations

import sys

from qwen_embed import Embedder
from qwen_embed.testing import demo_model


def main(argv: list[str]) -> None:
    model_path = demo_model(argv[1] if len(argv) > 1 else None)

    with Embedder(model_path) as emb:
        # Asymmetric retrieval: queries get the task's instruction, documents none.
        docs = ["def add(a, b):\n    return a + b", "SELECT * FROM users;", "print('hello')"]
        q = emb.encode_queries(["function that sums two numbers"], task="code_search")
        d = emb.encode_documents(docs, task="code_search")
        print("code_search prompt:", repr(emb.format("...", prompt_name="code_search")))
        print("best snippet:", repr(docs[int((q @ d.T).argmax())]))

        # Symmetric STS: both sentences carry the same instruction.
        a, b = emb.encode_documents(["A man is playing a guitar.", "Someone plays an instrument."], task="sts")
        print(f"STS similarity: {float(a @ b):.3f}")


if __name__ == "__main__":
    main(sys.argv)
