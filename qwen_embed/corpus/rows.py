"""What a corpus job keeps for each row besides its id: the vector, the receipt and the text's SHA-256.

A :class:`RowBlock` holds them for consecutive rows, column by column, whether they were just
embedded (:meth:`RowBlock.from_result`), read from a shard, or taken from the cache; the shard
writer and the cache take and give blocks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..calls import EncodeResult

__all__ = ["FACTS", "FACT_FIELDS", "FACT_NAMES", "KEY_BYTES", "RowBlock", "Spans", "text_keys"]

#: Length of a row's cache key: the SHA-256 of its text.
KEY_BYTES = 32

#: The receipt's fixed-width fields, as the shards' columns name them (``n_chunks`` is the receipt's ``chunks``).
FACT_FIELDS: tuple[tuple[str, str], ...] = (
    ("n_tokens", "<i4"), ("tokens_used", "<i4"), ("truncated", "?"), ("dropped_tokens", "<i4"), ("n_chunks", "<i4"),
)  # fmt: skip
FACT_NAMES: tuple[str, ...] = tuple(name for name, _ in FACT_FIELDS)
FACTS = np.dtype(list(FACT_FIELDS))

Spans = tuple[tuple[int, int], ...]


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """The SHA-256 of each text's UTF-8 bytes: an ``(n, 32)`` uint8 array (lone surrogates kept as they are)."""
    digests = b"".join(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest() for text in texts)
    keys: np.ndarray = np.frombuffer(digests, dtype=np.uint8).reshape(len(texts), KEY_BYTES).copy()
    return keys


@dataclass(frozen=True)
class RowBlock:
    """Vectors, receipts and keys of consecutive rows.

    Attributes:
        keys: ``(n, 32)`` uint8: the SHA-256 of each row's text.
        vectors: ``(n, dim)`` float32.
        facts: ``(n,)`` of :data:`FACTS`: ``n_tokens``, ``tokens_used``, ``truncated``,
            ``dropped_tokens``, ``n_chunks``.
        fusion: The fusion that made each row's vector from its chunks, or ``None``.
        spans: Each row's chunk spans (empty unless it was chunked).
    """

    keys: np.ndarray
    vectors: np.ndarray
    facts: np.ndarray
    fusion: tuple[str | None, ...]
    spans: tuple[Spans, ...]

    def __len__(self) -> int:
        return len(self.facts)

    @classmethod
    def from_result(cls, keys: np.ndarray, result: EncodeResult) -> RowBlock:
        """The block of texts whose keys are ``keys``, from their :meth:`~qwen_embed.Embedder.run` result."""
        receipts = result.receipts
        facts = np.array(
            [(r.n_tokens, r.tokens_used, r.truncated, r.dropped_tokens, r.chunks) for r in receipts], dtype=FACTS
        )
        vectors = np.ascontiguousarray(result.vectors, dtype=np.float32).reshape(len(receipts), -1)
        return cls(keys, vectors, facts, tuple(r.fusion for r in receipts), tuple(tuple(r.spans) for r in receipts))

    @classmethod
    def empty(cls, dim: int) -> RowBlock:
        return cls(np.zeros((0, KEY_BYTES), np.uint8), np.zeros((0, dim), np.float32), np.zeros(0, FACTS), (), ())

    @classmethod
    def concat(cls, blocks: Sequence[RowBlock], dim: int) -> RowBlock:
        """The rows of ``blocks``, one after the other."""
        if not blocks:
            return cls.empty(dim)
        return cls(
            np.concatenate([b.keys for b in blocks]),
            np.concatenate([b.vectors for b in blocks]),
            np.concatenate([b.facts for b in blocks]),
            tuple(f for b in blocks for f in b.fusion),
            tuple(s for b in blocks for s in b.spans),
        )

    def take(self, rows: np.ndarray) -> RowBlock:
        """The rows at ``rows`` (positions into this block), in that order."""
        picked = [int(i) for i in rows]
        return RowBlock(
            self.keys[rows], self.vectors[rows], self.facts[rows],
            tuple(self.fusion[i] for i in picked), tuple(self.spans[i] for i in picked),
        )  # fmt: skip
