"""Parts the framework-integration tests share: documents and queries, an Embedder that records its
calls (a real Embedder on a real engine, only counting), and a brute-force ranking to hold stores to.

The round trips embed with the default, asymmetric prompts (instructed queries, bare documents), pin
the vectors a store holds to ``encode_documents`` and its scores to a brute-force ranking of
``encode_queries`` against them. A symmetric task would prove little: under it a query equal to a
document's text scores 1.0 for any deterministic function.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from qwen_embed import Embedder, EncodeCall, EncodeResult

#: Documents with no words in common.
DOCUMENTS = [
    "The cat sat on the mat and purred all afternoon.",
    "Quarterly revenue grew by twelve percent in Europe.",
    "Rust's borrow checker prevents data races at compile time.",
    "Sourdough needs a lively starter and a long proof.",
]

#: Queries that are none of the documents (the model has random weights: the right answer is whatever
#: brute force over the embedder's own vectors says, which the tests check holds no near tie).
QUERIES = [
    "Which pet was purring?",
    "How did sales in Europe change?",
    "What stops data races?",
    "How do I bake bread?",
]

#: How far a store's score may be from brute force's: the store's vectors come from other batches
#: (llama.cpp's sums move in the last digits, about 1e-4 on a score); another prompt moves it by 1e-2.
SCORE_TOLERANCE = 3e-4
#: Smallest gap between neighbouring brute-force scores a test relies on (wider than two tolerances,
#: so the order cannot flip).
MIN_GAP = 1e-3


class CountingEmbedder(Embedder):
    """An Embedder that records each :meth:`~qwen_embed.Embedder.run` call: side, number of texts, thread.

    Every encode method (``encode``, ``encode_queries``, ``encode_documents``, ...) is one ``run``
    call, so this counts what reaches the engine, whichever method an adapter uses.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str | None, int, int]] = []
        self._calls_lock = threading.Lock()

    def run(self, texts: str | Iterable[str], call: EncodeCall | None = None, *, first_index: int = 0) -> EncodeResult:
        items: str | list[str] = texts if isinstance(texts, str) else list(texts)
        n = 1 if isinstance(items, str) else len(items)
        with self._calls_lock:
            self.calls.append((call.side if call is not None else None, n, threading.get_ident()))
        return super().run(items, call, first_index=first_index)


def _rows(vectors: Any) -> np.ndarray:
    return np.atleast_2d(np.asarray(vectors, dtype=np.float64))


def cosines(got: Any, expected: Any) -> np.ndarray:
    """Row-wise cosine similarity of two equal-shaped stacks of vectors."""
    a, b = _rows(got), _rows(expected)
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)  # type: ignore[no-any-return]


def assert_same_vectors(got: Any, expected: np.ndarray) -> None:
    """``got`` (Python floats) holds the same unit vectors as ``expected``.

    Packing texts into other batches moves llama.cpp's float sums in the last digits (about
    1e-4 here); another prompt moves a vector far more (cosine 0.9 or less on these models).
    """
    found = cosines(got, expected)
    assert found.min() > 0.99999, found


def assert_other_vectors(got: Any, expected: np.ndarray) -> None:
    """The negative twin of :func:`assert_same_vectors`: every row clearly differs."""
    found = cosines(got, expected)
    assert found.max() < 0.999, found


def brute_force(queries: Any, documents: Any, k: int) -> list[list[tuple[int, float]]]:
    """Per query, the ``k`` best ``(document index, cosine)``, best first: what an exact store must return.

    Fails when neighbouring scores (down to the first one left out) are closer than :data:`MIN_GAP`:
    then the order would not be a fair thing to test.
    """
    q, d = _rows(queries), _rows(documents)
    scores = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (d / np.linalg.norm(d, axis=1, keepdims=True)).T
    ranked: list[list[tuple[int, float]]] = []
    for row in scores:
        order = np.argsort(-row, kind="stable")
        gaps = -np.diff(row[order][: k + 1])
        assert (gaps > MIN_GAP).all(), f"near tie in the test data: {row[order]}"
        ranked.append([(int(i), float(row[i])) for i in order[:k]])
    return ranked


def assert_ranked(hits: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    """A store's ``(document index, score)`` hits are the brute-force ones: same order, same scores."""
    assert [i for i, _ in hits] == [i for i, _ in expected], (hits, expected)
    got = np.array([s for _, s in hits])
    want = np.array([s for _, s in expected])
    assert np.abs(got - want).max() < SCORE_TOLERANCE, (hits, expected)


def printed_hits(out: str) -> list[tuple[float, str]]:
    """The ``"{score:.3f}  {text}"`` lines an example prints, as ``(score, text)``."""
    hits = []
    for line in out.splitlines():
        score, sep, text = line.partition("  ")
        if sep and score.replace(".", "", 1).lstrip("-").isdigit():
            hits.append((float(score), text))
    return hits


def assert_printed_ranking(
    out: str, emb: Embedder, documents: list[str], query: str, *, k: int, distance: bool = False
) -> None:
    """The example printed brute force's ``k`` best documents for ``query``, best first, each with
    its cosine (or cosine distance, ``1 - cosine``) to three decimals."""
    (expected,) = brute_force(emb.encode_queries([query]), emb.encode_documents(documents), k=k)
    hits = printed_hits(out)
    assert [text for _, text in hits] == [documents[i] for i, _ in expected], out
    want = [1.0 - s if distance else s for _, s in expected]
    assert np.abs(np.array([s for s, _ in hits]) - np.array(want)).max() <= 5e-4 + SCORE_TOLERANCE, (hits, want)
