"""Parts the framework-integration tests share: documents that differ completely, and an Embedder
that records its calls (a real Embedder on a real engine, only counting)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from qwen_embed import Embedder

#: Documents with no words in common. The round trips use the symmetric "sts" task, so a query
#: equal to a document's text gets that document's vector exactly (cosine 1) and every other
#: document scores lower: the right answer is unambiguous even with random weights.
DOCUMENTS = [
    "The cat sat on the mat and purred all afternoon.",
    "Quarterly revenue grew by twelve percent in Europe.",
    "Rust's borrow checker prevents data races at compile time.",
    "Sourdough needs a lively starter and a long proof.",
]


class CountingEmbedder(Embedder):
    """An Embedder that records each encode call: method, number of texts, thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, int, int]] = []
        self._calls_lock = threading.Lock()

    def _record(self, method: str, texts: object) -> None:
        n = 1 if isinstance(texts, str) else len(list(texts))  # type: ignore[arg-type]
        with self._calls_lock:
            self.calls.append((method, n, threading.get_ident()))

    def encode(self, texts: Any, **kwargs: Any) -> np.ndarray:  # type: ignore[override]
        self._record("encode", texts)
        return super().encode(texts, **kwargs)

    def encode_queries(self, texts: Any, **kwargs: Any) -> np.ndarray:  # type: ignore[override]
        self._record("encode_queries", texts)
        return super().encode_queries(texts, **kwargs)

    def encode_documents(self, texts: Any, **kwargs: Any) -> np.ndarray:  # type: ignore[override]
        self._record("encode_documents", texts)
        return super().encode_documents(texts, **kwargs)


def assert_same_vectors(got: Any, expected: np.ndarray) -> None:
    """``got`` (Python floats) holds the same unit vectors as ``expected``.

    Packing texts into other batches moves llama.cpp's float sums in the last digits (about
    1e-4 here); another prompt moves a vector far more (cosine 0.9 or less on these models).
    """
    a = np.atleast_2d(np.asarray(got, dtype=np.float64))
    b = np.atleast_2d(np.asarray(expected, dtype=np.float64))
    assert a.shape == b.shape
    cosines = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosines.min() > 0.99999, cosines
