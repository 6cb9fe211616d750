"""Repeated ids in a corpus stream, found in about 16 bytes a row.

Every id is remembered as a 64-bit hash and its row number, in a few sorted numpy runs
(merged like a binary counter, so adding ``n`` ids costs ``O(n log n)`` and looking one up
``O(log² n)``). A hash match is reported as a repeat: with 64-bit hashes a false report needs
billions of rows to become likely.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from .errors import DuplicateIdError

__all__ = ["IdRegistry", "unique_ids"]

Row = tuple[str | None, str]
_BATCH = 1024


class IdRegistry:
    """The ids seen so far; :meth:`add` raises on the first repeat."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows = 0
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted hashes, their rows), largest first

    def add(self, ids: list[str]) -> None:
        """Remember the ids of the next ``len(ids)`` rows.

        Raises:
            DuplicateIdError: One of them repeats an earlier id (the first such row is named).
        """
        if not ids:
            return
        first = self.rows
        hashes = np.fromiter((hash(i) for i in ids), dtype=np.int64, count=len(ids))
        rows = np.arange(first, first + len(ids), dtype=np.int64)
        order = np.argsort(hashes, kind="stable")  # equal hashes keep their row order
        hashes, rows = hashes[order], rows[order]
        repeats: list[tuple[int, int]] = []  # (later row, earlier row)
        same = np.flatnonzero(hashes[1:] == hashes[:-1])
        if same.size:
            heads = np.searchsorted(hashes, hashes[same + 1], side="left")
            repeats += zip(rows[same + 1].tolist(), rows[heads].tolist())
        unique = np.ones(len(hashes), dtype=bool)
        unique[same + 1] = False
        hashes, rows = hashes[unique], rows[unique]
        for run_hashes, run_rows in self._runs:
            at = np.searchsorted(run_hashes, hashes).clip(max=len(run_hashes) - 1)
            hit = np.flatnonzero(run_hashes[at] == hashes)
            repeats += zip(rows[hit].tolist(), run_rows[at[hit]].tolist())
        if repeats:
            later, earlier = min(repeats)
            raise DuplicateIdError(
                f"{self.name}: id {ids[later - first]!r} appears more than once: rows {earlier} and {later} "
                "(counting from 0, as the output does). Ids must be unique for each vector to be found by its id; "
                "fix the source, or pass allow_duplicate_ids=True (--allow-duplicate-ids) to keep every row."
            )
        self.rows += len(ids)
        self._runs.append((hashes, rows))
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= 2 * len(self._runs[-1][0]):
            (h1, r1), (h2, r2) = self._runs.pop(), self._runs.pop()
            merged = np.concatenate([h2, h1])
            order = np.argsort(merged, kind="stable")
            self._runs.append((merged[order], np.concatenate([r2, r1])[order]))

    @property
    def nbytes(self) -> int:
        """Memory held by the remembered ids."""
        return sum(h.nbytes + r.nbytes for h, r in self._runs)


def unique_ids(rows: Iterator[Row], name: str) -> Iterator[Row]:
    """``rows`` unchanged, read ahead a batch at a time; raises :class:`DuplicateIdError` at a repeated id."""
    registry = IdRegistry(name)
    while batch := list(itertools.islice(rows, _BATCH)):
        registry.add([str(record_id) for record_id, _ in batch])
        yield from batch
