"""One immutable segment of an index: its rows' ids, vectors, optional HNSW graph and documents.

Layout of ``seg-NNNNNN/`` (written as ``.seg-NNNNNN.tmp/``, flushed, then renamed)::

    segment.json       rows, dim, precision, which files are there
    ids.bin            the rows' ids, UTF-8, back to back; ids.offsets.npy: int64 (rows + 1)
    hashes.npy         uint64 per row: a hash of the float32 vector (what an update compares)
    vectors.npy        the searched vectors: float32, float16, int8 codes or packed sign bits
    float32.npy        the float32 vectors, when kept beside quantized ones (rescoring)
    hnsw.usearch       the HNSW graph (usearch), for a segment too large to search exactly
    docs.bin           per row, JSON {"text": ..., "metadata": ...} or nothing; docs.offsets.npy

Every array is memory-mapped when read, so a segment costs little memory until searched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._files import fsync_dir, fsync_file
from ..quantization import QuantizationRanges, quantize_embeddings
from .errors import IndexFormatError
from .options import IndexOptions, require_usearch

__all__ = [
    "EXACT_BLOCK_VALUES",
    "Segment",
    "SegmentWriter",
    "best_first",
    "block_rows",
    "exact_search",
    "fsync_dir",
    "keep_best",
    "vector_hashes",
]

logger = logging.getLogger(__name__)

_BLOCK = 65_536  # rows per step when copying or adding to the graph
#: (query, row) scores or distances exact search holds at once, whatever the segment's size.
EXACT_BLOCK_VALUES = 2**22
#: Rows of the sample a large segment's graph is tried on before it is built in full.
SAMPLE_ROWS = 16_384


def vector_hashes(vectors: np.ndarray) -> np.ndarray:
    """uint64 per row: the first 8 bytes of the BLAKE2b of the row's float32 bytes."""
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    out = np.empty(len(rows), dtype=np.uint64)
    for i, row in enumerate(rows):
        out[i] = int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
    return out


def usearch_spec(options: IndexOptions, dim: int) -> dict[str, Any]:
    """The usearch ``Index`` arguments for ``options``' precision."""
    kinds = {"float32": ("ip", "f32", dim), "float16": ("ip", "f16", dim), "int8": ("ip", "i8", dim),
             "binary": ("hamming", "b1", ((dim + 7) // 8) * 8)}  # fmt: skip
    metric, dtype, ndim = kinds[options.precision]
    return {"ndim": ndim, "metric": metric, "dtype": dtype, "connectivity": options.connectivity,
            "expansion_add": options.expansion_add, "expansion_search": options.expansion_search}  # fmt: skip


def represent(vectors: np.ndarray, options: IndexOptions, ranges: QuantizationRanges | None) -> np.ndarray:
    """The searched form of float32 ``vectors``: float32, float16, int8 codes or packed bits (uint8)."""
    if options.precision == "float32":
        return np.ascontiguousarray(vectors, dtype=np.float32)
    if options.precision == "float16":
        return vectors.astype(np.float16)
    if options.precision == "int8":
        return quantize_embeddings(vectors, "int8", ranges=ranges)  # type: ignore[no-any-return]
    return quantize_embeddings(vectors, "ubinary")  # type: ignore[no-any-return]


class SegmentWriter:
    """Writes one segment of a known number of rows, block by block, into a temporary folder."""

    def __init__(
        self,
        root: Path,
        name: str,
        rows: int,
        dim: int,
        options: IndexOptions,
        ranges: QuantizationRanges | None,
        *,
        documents: bool,
    ) -> None:
        self.root, self.name, self.rows, self.dim = root, name, rows, dim
        self.options, self.ranges = options, ranges
        self.tmp = root / f".{name}.tmp"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        width = {"float32": dim, "float16": dim, "int8": dim, "binary": (dim + 7) // 8}[options.precision]
        dtype = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "binary": np.uint8}[options.precision]
        self.vectors = _open_array(self.tmp / "vectors.npy", (rows, width), dtype)
        self.floats = None
        if options.precision != "float32" and options.keep_float:
            self.floats = _open_array(self.tmp / "float32.npy", (rows, dim), np.float32)
        self.hashes = np.empty(rows, dtype=np.uint64)
        self.ids = _BlobWriter(self.tmp / "ids")
        self.docs = _BlobWriter(self.tmp / "docs") if documents else None
        self.at = 0

    def add(
        self,
        ids: Sequence[str],
        floats: np.ndarray | None,
        *,
        vectors: np.ndarray | None = None,
        hashes: np.ndarray | None = None,
        docs: Sequence[bytes] | None = None,
    ) -> None:
        """Append rows: their float32 vectors (quantized here), or their searched form and hashes (a merge)."""
        n = len(ids)
        stop = self.at + n
        if stop > self.rows:
            raise ValueError(f"segment {self.name}: {stop} rows written, {self.rows} announced")
        if vectors is None:
            assert floats is not None
            vectors = represent(floats, self.options, self.ranges)
        self.vectors[self.at : stop] = vectors
        if self.floats is not None:
            if floats is None:
                raise ValueError("a merge into a segment that keeps float32 vectors needs them")
            self.floats[self.at : stop] = floats
        if hashes is None:
            assert floats is not None
            hashes = vector_hashes(floats)
        self.hashes[self.at : stop] = hashes
        for record_id in ids:
            self.ids.add(record_id.encode("utf-8", "surrogatepass"))
        if self.docs is not None:
            for doc in docs if docs is not None else [b""] * n:
                self.docs.add(doc)
        self.at = stop

    def finish(self) -> dict[str, Any]:
        """Build the graph if the segment is large, flush everything, rename into place; returns its record."""
        if self.at != self.rows:
            raise ValueError(f"segment {self.name}: {self.at} rows written, {self.rows} announced")
        hnsw = self.rows * self.dim >= self.options.exact_max_values and self.rows > 0
        for array in (self.vectors, self.floats):
            if isinstance(array, np.memmap):
                array.flush()
        np.save(self.tmp / "hashes.npy", self.hashes)
        self.ids.close()
        if self.docs is not None:
            self.docs.close()
        graph: dict[str, Any] = {}
        if hnsw:
            graph = self._sample_refusal() or self._build_graph()
            if "refused" in graph:
                hnsw = False
                logger.info(
                    "segment %s (%d rows): no HNSW graph, searched exactly: %s", self.name, self.rows, graph["refused"]
                )
        meta = {"rows": self.rows, "dim": self.dim, "precision": self.options.precision, "hnsw": hnsw,
                "float32": self.floats is not None, "docs": self.docs is not None, **graph}  # fmt: skip
        (self.tmp / "segment.json").write_text(json.dumps(meta), encoding="utf-8")
        del self.vectors, self.floats
        for path in self.tmp.iterdir():
            fsync_file(path)
        fsync_dir(self.tmp)
        final = self.root / self.name
        os.replace(self.tmp, final)
        fsync_dir(self.root)
        return {"name": self.name, "rows": self.rows, "hnsw": hnsw}

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _build_graph(self) -> dict[str, Any]:
        """Build, tune and save the graph: its ``expansion_search`` and ``graph_recall``, or why it was not kept."""
        usearch = require_usearch()
        spec = usearch_spec(self.options, self.dim)
        graph = usearch.Index(**spec)
        for start in range(0, self.rows, _BLOCK):
            block = np.ascontiguousarray(self.vectors[start : start + _BLOCK])
            graph.add(np.arange(start, start + len(block), dtype=np.uint64), block)
        expansion, recall = tune_expansion(graph, self.vectors, spec, self.options)
        if _short(recall, self.options):
            return {"refused": _refusal(recall, expansion, self.rows, self.options)}
        if _dearer(expansion, self.rows, self.options):
            return {"refused": _dearer_reason(expansion, recall, self.rows, self.options)}
        graph.save(str(self.tmp / "hnsw.usearch"))
        return {"expansion_search": expansion, "graph_recall": recall}

    def _sample_refusal(self) -> dict[str, Any] | None:
        """Why a graph of a large segment is not worth building, judged on a sample of its rows (None: build it).

        On data of one kind a graph needs at least as many candidates for more rows, so a sample's graph
        that cannot reach ``graph_recall`` means the whole segment's would not either.
        """
        if self.options.graph_recall <= 0 or self.rows < 4 * SAMPLE_ROWS:
            return None
        usearch = require_usearch()
        spec = usearch_spec(self.options, self.dim)
        pick = np.sort(np.random.default_rng(1).choice(self.rows, SAMPLE_ROWS, replace=False))
        sample = np.ascontiguousarray(self.vectors[pick])
        graph = usearch.Index(**spec)
        graph.add(np.arange(len(sample), dtype=np.uint64), sample)
        expansion, recall = tune_expansion(graph, sample, spec, self.options)
        if _short(recall, self.options):
            return {"refused": _refusal(recall, expansion, len(sample), self.options)}
        if _dearer(expansion, self.rows, self.options):  # the whole segment's graph needs at least as many
            return {"refused": _dearer_reason(expansion, recall, self.rows, self.options, sample=len(sample))}
        return None


def _short(recall: float, options: IndexOptions) -> bool:
    """Whether a tuned graph's recall misses ``graph_recall`` (never when tuning is off)."""
    return options.graph_recall > 0 and not recall >= options.graph_recall


def _dearer(expansion: int, rows: int, options: IndexOptions) -> bool:
    """Whether a graph search of ``expansion`` candidates costs more than exact search of ``rows`` rows.

    Float vectors only: on int8 codes and sign bits the measured graphs answered one query faster than
    exact search at the same size (benchmarks/RESULTS.md), so the rule would drop graphs that pay.
    """
    if options.graph_recall <= 0 or options.graph_visit_cost <= 0 or options.quantized:
        return False
    return expansion * options.connectivity * options.graph_visit_cost >= rows


def _dearer_reason(expansion: int, recall: float, rows: int, options: IndexOptions, *, sample: int = 0) -> str:
    measured = f"a graph of a {sample:,}-row sample" if sample else "the graph"
    visits = expansion * options.connectivity
    return (
        f"{measured} needs expansion_search={expansion:,} to find {recall:.1%} of the exact top 10: {visits:,} "
        f"candidate visits x graph_visit_cost={options.graph_visit_cost:g} cost more than exact search of "
        f"{rows:,} rows, which finds them all"
    )


def _refusal(recall: float, expansion: int, rows: int, options: IndexOptions) -> str:
    return (
        f"a graph of {rows:,} rows found {recall:.1%} of the exact top 10 at expansion_search={expansion:,} "
        f"(graph_recall={options.graph_recall}, max_expansion_search={options.max_expansion_search:,}): "
        "the vectors have no near neighbours a graph can follow, and exact search finds them all"
    )


def keep_best(
    best: tuple[np.ndarray, np.ndarray], rows: np.ndarray, values: np.ndarray, want: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, values)`` per query: ``best`` merged with a block's candidates, the ``want`` smallest values kept."""
    merged_rows = np.concatenate([best[0], rows], axis=1)
    merged_values = np.concatenate([best[1], values], axis=1)
    if merged_rows.shape[1] > want:
        keep = np.argpartition(merged_values, want - 1, axis=1)[:, :want]
        return np.take_along_axis(merged_rows, keep, axis=1), np.take_along_axis(merged_values, keep, axis=1)
    return merged_rows, merged_values


def best_first(best: tuple[np.ndarray, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """``best`` sorted by value, then by row (``-1`` for the padding, whose value is inf)."""
    rows, values = best
    order = np.lexsort((np.where(rows < 0, n, rows), values), axis=1)
    rows, values = np.take_along_axis(rows, order, axis=1), np.take_along_axis(values, order, axis=1)
    rows[values == np.inf] = -1
    return rows, values


def block_rows(queries: int) -> int:
    """Rows per block of exact search: at most :data:`EXACT_BLOCK_VALUES` (query, row) values held at once."""
    return min(_BLOCK, max(1024, EXACT_BLOCK_VALUES // max(queries, 1)))


def exact_search(
    vectors: np.ndarray, probe: np.ndarray, fetch: int, metric: str, dtype: str
) -> tuple[np.ndarray, np.ndarray]:
    """usearch's exact search, a block of rows at a time: ``(keys, distances)``, nearest first (``-1``/inf pad).

    usearch keeps a distance for every (query, row) of one call, so the rows go in blocks and the best
    ``fetch`` of each block are merged: memory stays bounded whatever the segment's size.
    """
    usearch = require_usearch()
    m, n = len(probe), len(vectors)
    best = (np.zeros((m, 0), dtype=np.int64), np.zeros((m, 0), dtype=np.float64))
    step = block_rows(m)
    for start in range(0, n, step):
        block = vectors[start : start + step]
        matches = usearch.search(block, probe, min(fetch, len(block)), metric, exact=True, dtype=dtype)
        keys = np.asarray(matches.keys, dtype=np.int64).reshape(m, -1)
        distances = np.asarray(matches.distances, dtype=np.float64).reshape(m, -1)
        counts = np.reshape(getattr(matches, "counts", keys.shape[1]), (-1, 1))
        missing = np.arange(keys.shape[1])[None, :] >= counts
        distances[missing] = np.inf
        best = keep_best(best, np.where(missing, -1, keys + start), distances, fetch)
    return best_first(best, n)


_TUNING_QUERIES = 100


def tune_expansion(graph: Any, vectors: np.ndarray, spec: dict[str, Any], options: IndexOptions) -> tuple[int, float]:
    """The smallest ``expansion_search`` (doubling from the option's) whose recall@10 reaches ``graph_recall``.

    The queries are midpoints of pairs of the segment's rows (a fixed sample: points between the
    data, as queries are); recall counts the graph's results whose distance is within the exact
    search's 10th (so that ties of binary distances count fairly).
    """
    rows = len(vectors)
    expansion = options.expansion_search
    if options.graph_recall <= 0 or rows < 2:
        return expansion, float("nan")
    rng = np.random.default_rng(0)
    queries = _midpoints(vectors, rng.integers(0, rows, _TUNING_QUERIES), rng.integers(0, rows, _TUNING_QUERIES),
                         options.precision, rng)  # fmt: skip
    k = min(10, rows)
    kth = exact_search(np.asarray(vectors), queries, k, spec["metric"], spec["dtype"])[1][:, -1:]
    while True:
        graph.expansion_search = expansion
        found = graph.search(queries, k)
        distances = np.asarray(found.distances, dtype=np.float64).reshape(len(queries), k)
        counts = np.reshape(found.counts, (-1, 1))
        valid = np.arange(k)[None, :] < counts
        recall = float(((distances <= kth + 1e-6 * np.abs(kth) + 1e-9) & valid).sum() / (k * len(queries)))
        if recall >= options.graph_recall or expansion >= options.max_expansion_search:
            return expansion, recall
        expansion = min(options.max_expansion_search, expansion * 2)


def _midpoints(vectors: np.ndarray, a: np.ndarray, b: np.ndarray, precision: str, rng: np.random.Generator) -> Any:
    """Queries between two rows each, in the segment's own form."""
    first, second = np.asarray(vectors[np.sort(a)]), np.asarray(vectors[np.sort(b)])
    if precision == "binary":  # each bit from one of the two
        mask = rng.integers(0, 256, first.shape, dtype=np.uint8)
        return np.ascontiguousarray((first & mask) | (second & ~mask))
    mid = (first.astype(np.float32) + second.astype(np.float32)) / 2
    if precision == "int8":
        return np.ascontiguousarray(np.rint(mid).astype(np.int8))
    return np.ascontiguousarray(mid.astype(first.dtype))


class Segment:
    """A written segment, memory-mapped."""

    def __init__(self, root: Path, name: str, options: IndexOptions, *, view: bool) -> None:
        self.name = name
        folder = root / name
        self.folder = folder
        try:
            self.meta = json.loads((folder / "segment.json").read_text(encoding="utf-8"))
            self.rows = int(self.meta["rows"])
            self.vectors = np.load(folder / "vectors.npy", mmap_mode="r")
            self.hashes = np.load(folder / "hashes.npy", mmap_mode="r")
            self.floats = np.load(folder / "float32.npy", mmap_mode="r") if self.meta["float32"] else None
            self.ids = _Blob(folder / "ids")
            self.docs = _Blob(folder / "docs") if self.meta["docs"] else None
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError) as error:
            raise IndexFormatError(f"segment {folder} is unreadable ({error})") from error
        if len(self.vectors) != self.rows or len(self.ids) != self.rows:
            raise IndexFormatError(f"segment {folder}: its files disagree on the number of rows")
        self.graph: Any = None
        self.expansion_search = options.expansion_search
        if self.meta["hnsw"]:
            usearch = require_usearch()
            self.graph = usearch.Index.restore(str(folder / "hnsw.usearch"), view=view)
            if self.graph is None or len(self.graph) != self.rows:
                raise IndexFormatError(f"segment {folder}: the HNSW graph is unreadable or incomplete")
            self.expansion_search = int(self.meta.get("expansion_search", options.expansion_search))
            self.graph.expansion_search = self.expansion_search

    def id(self, row: int) -> str:
        return self.ids.get(row).decode("utf-8", "surrogatepass")

    def all_ids(self) -> list[str]:
        return [self.id(i) for i in range(self.rows)]

    def document(self, row: int) -> tuple[str | None, Any]:
        if self.docs is None:
            return None, None
        raw = self.docs.get(row)
        if not raw:
            return None, None
        record = json.loads(raw)
        return record.get("text"), record.get("metadata")

    def raw_document(self, row: int) -> bytes:
        return b"" if self.docs is None else self.docs.get(row)

    def nbytes(self) -> int:
        """Bytes a loaded segment holds: the graph with its own copy of the vectors, else the vectors."""
        if self.graph is not None:
            return int(self.graph.memory_usage)
        return int(self.vectors.nbytes)

    def close(self) -> None:
        self.graph = None


def encode_document(text: str | None, metadata: Any) -> bytes:
    """The stored form of a row's text and metadata (empty for neither)."""
    if text is None and metadata is None:
        return b""
    record: dict[str, Any] = {}
    if text is not None:
        record["text"] = text
    if metadata is not None:
        record["metadata"] = metadata
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------- files


class _BlobWriter:
    """Byte strings back to back in ``<stem>.bin``, their offsets in ``<stem>.offsets.npy``."""

    def __init__(self, stem: Path) -> None:
        self.stem = stem
        self.handle = open(stem.with_suffix(".bin"), "wb")
        self.offsets = [0]

    def add(self, data: bytes) -> None:
        self.handle.write(data)
        self.offsets.append(self.offsets[-1] + len(data))

    def close(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        np.save(self.stem.with_suffix(".offsets.npy"), np.asarray(self.offsets, dtype=np.int64))


class _Blob:
    def __init__(self, stem: Path) -> None:
        self.offsets = np.load(stem.with_suffix(".offsets.npy"), mmap_mode="r")
        path = stem.with_suffix(".bin")
        self.data = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, row: int) -> bytes:
        return self.data[int(self.offsets[row]) : int(self.offsets[row + 1])].tobytes()


def _open_array(path: Path, shape: tuple[int, int], dtype: Any) -> np.ndarray:
    if shape[0] == 0:
        np.save(path, np.zeros(shape, dtype=dtype))
        return np.zeros(shape, dtype=dtype)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
