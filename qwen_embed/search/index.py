"""``SearchIndex``: a persistent vector index on disk, updated by id, searched exactly or with HNSW.

Layout of an index folder (a corpus folder keeps its index in ``_index/``)::

    index.json              the manifest, and the commit point: generation, settings, segments
    seg-000001/             immutable segments (see :mod:`qwen_embed.search.segment`)
    seg-000004/
    deleted-000007.npz      rows of each segment deleted or replaced since it was written
    .lock                   held by the one process writing

An update writes its new rows as a new segment and the deleted rows as a new tombstone file,
then renames a new ``index.json`` into place; only then are files no manifest names removed.
A crash (even SIGKILL) at any moment leaves the previous ``index.json`` and every file it names.
Segments of one size tier are merged (the graph of the merged segment is built anew), so an
update costs about the size of what changed, not of the index.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import ConfigurationError, DimensionError, InputTypeError, InvalidInputError
from ..quantization import QuantizationRanges, dequantize_embeddings
from .errors import IndexFormatError, IndexNotFoundError
from .options import RESCORE_MODES, IndexOptions, require_usearch
from .recipe import EmbeddingRecipe
from .segment import (
    Segment,
    SegmentWriter,
    best_first,
    block_rows,
    encode_document,
    exact_search,
    fsync_dir,
    keep_best,
    vector_hashes,
)

__all__ = ["CORPUS_INDEX", "INDEX_FILE", "Hit", "SearchIndex", "UpdateResult", "resolve_index_path"]

logger = logging.getLogger(__name__)

INDEX_FILE = "index.json"
#: Where a corpus folder keeps its index (readers of the Parquet dataset skip names starting with ``_``).
CORPUS_INDEX = "_index"
FORMAT = "qwen-embed search index"
FORMAT_VERSION = 1
_OURS = re.compile(
    r"(seg-\d{6,}|\.seg-\d{6,}\.tmp|deleted-\d{6,}\.npz|\.deleted-\d{6,}\.npz\.tmp|\.index\.json\.tmp"
    r"|\.staging-\d+\.npy\.tmp)"
)
_COPY_BLOCK = 65_536
_QUERY_BLOCK = 128


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        id: The row's id.
        score: The final score: the reranker's when one reranked, else ``vector_score``.
        text: The stored text, if the index keeps texts.
        metadata: The stored metadata, if any.
        vector_score: The vector similarity: the dot product of query and document vectors (cosine
            similarity for normalized vectors); for binary search without rescoring, the agreement
            of the sign bits ``1 - 2 * hamming / dim``.
        rerank_score: The reranker's ``p(yes)``, when one reranked.
    """

    id: str
    score: float
    text: str | None = None
    metadata: Any = None
    vector_score: float = math.nan
    rerank_score: float | None = None


@dataclass(frozen=True)
class UpdateResult:
    """What an update did.

    Attributes:
        added: Rows whose id was not in the index.
        replaced: Rows whose id was (the old row is deleted).
        unchanged: Rows skipped because their vector and document were already there (``skip_unchanged``).
        deleted: Ids deleted (those absent from the index are not counted).
        merged: Segments merged into a new one.
        generation: The index's generation after the update.
        rows: Rows in the index after the update.
        seconds: Wall time.
    """

    added: int
    replaced: int
    unchanged: int
    deleted: int
    merged: int
    generation: int
    rows: int
    seconds: float


def resolve_index_path(path: str | os.PathLike[str]) -> Path:
    """The index folder of ``path``: itself, or its ``_index`` for a corpus folder.

    Raises:
        IndexNotFoundError: Neither holds an index (a corpus folder without one says how to build it).
    """
    folder = Path(os.path.expanduser(os.fspath(path)))
    if (folder / INDEX_FILE).is_file():
        return folder
    if (folder / CORPUS_INDEX / INDEX_FILE).is_file():
        return folder / CORPUS_INDEX
    if (folder / "_manifest.json").is_file():
        raise IndexNotFoundError(
            f"{folder} is a corpus folder without an index; build it with: qwen-embed index {path}"
        )
    raise IndexNotFoundError(f"no search index at {folder} (no {INDEX_FILE}, nor {CORPUS_INDEX}/{INDEX_FILE})")


class SearchIndex:
    """A persistent vector index: rows with a string id, a vector and (optionally) a text and metadata.

    >>> index = SearchIndex.create("my-index", dim=1024, options=IndexOptions(precision="int8"))  # doctest: +SKIP
    >>> index.upsert(["a", "b"], vectors, texts=["first", "second"])                              # doctest: +SKIP
    >>> index.search(query_vector, k=5)                                                           # doctest: +SKIP

    Open one with :meth:`open` (``view=True`` memory-maps the graphs too, for an index larger
    than memory) or make one with :meth:`create`. Each :meth:`update` is one atomic commit. One
    process writes at a time (a lock file); any number read, each seeing the generation it opened.
    """

    def __init__(
        self, root: Path, manifest: dict[str, Any], *, view: bool, pending: bool = False,
        expansion_search: int | None = None,
    ) -> None:  # fmt: skip
        self._root = root
        self._view = view
        self._expansion_search = expansion_search
        self._manifest = manifest
        self._pending = pending  # create(overwrite=True): the old index stays until the first commit
        self._segments: list[Segment] = []
        self._dead: list[np.ndarray] = []
        self._id_map: dict[str, tuple[int, int]] | None = None
        self._options = IndexOptions.from_json(manifest["options"])
        self._ranges = QuantizationRanges.from_json(manifest["ranges"]) if manifest.get("ranges") else None
        self._recipe = EmbeddingRecipe.from_json(manifest["embedding"]) if manifest.get("embedding") else None
        if not pending:
            self._open_segments(manifest)

    # ------------------------------------------------------------------ making and opening

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        dim: int,
        *,
        options: IndexOptions | None = None,
        recipe: EmbeddingRecipe | None = None,
        ranges: QuantizationRanges | np.ndarray | None = None,
        overwrite: bool = False,
    ) -> SearchIndex:
        """A new, empty index at ``path`` (a folder, created if needed).

        Args:
            path: The index folder.
            dim: Vector length.
            options: How vectors are stored and searched (default: float32, see :class:`IndexOptions`).
            recipe: How the vectors were made; queries through a
                :class:`~qwen_embed.search.Retriever` are then checked against it.
            ranges: ``int8`` only: the quantization ranges. Default: the per-dimension min and
                max of the first vectors added (recorded in the manifest, used for every later row).
            overwrite: Replace an index already at ``path``. The old one stays readable until this
                one's first update commits (it replaces the old one in the same rename).

        Raises:
            ConfigurationError: ``path`` holds an index and ``overwrite`` is false, or is a file.
            DimensionError: ``dim`` differs from the recipe's or the ranges'.
        """
        require_usearch()
        options = options if options is not None else IndexOptions()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise DimensionError(f"dim must be a positive int, not {dim!r}")
        if recipe is not None and recipe.dim != dim:
            raise DimensionError(f"dim={dim}, but the recipe's vectors have {recipe.dim} dimensions")
        chosen = None
        if ranges is not None:
            if options.precision != "int8":
                raise ConfigurationError(f"ranges= is for int8 indexes, not {options.precision}")
            chosen = QuantizationRanges.from_array(ranges)
            if chosen.dim != dim:
                raise DimensionError(f"the quantization ranges have {chosen.dim} dimensions, the index {dim}")
        root = Path(os.path.expanduser(os.fspath(path)))
        if root.exists() and not root.is_dir():
            raise ConfigurationError(f"{root} is a file; an index is a folder")
        root.mkdir(parents=True, exist_ok=True)
        old = _read_manifest(root) if (root / INDEX_FILE).exists() else None
        if old is not None and not overwrite:
            raise ConfigurationError(
                f"{root} already holds an index; open it with SearchIndex.open, or pass overwrite=True to replace it"
            )
        now = _now()
        manifest: dict[str, Any] = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
            "created": now, "updated": now, "generation": old["generation"] if old else 0,
            "next_segment": old["next_segment"] if old else 1, "dim": dim, "precision": options.precision,
            "options": options.to_json(), "ranges": chosen.to_json() if chosen else None,
            "embedding": recipe.to_json() if recipe else None, "corpus": None,
            "segments": [], "deleted": None, "rows": 0,
        }  # fmt: skip
        index = cls(root, manifest, view=False, pending=old is not None)
        if old is None:
            with index._writing(fresh=True):
                _write_json(root / INDEX_FILE, manifest)
        return index

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, view: bool = False, expansion_search: int | None = None
    ) -> SearchIndex:
        """Open the index at ``path`` (or in the corpus folder ``path``).

        Args:
            path: An index folder, or a corpus folder with an ``_index``.
            view: Memory-map the HNSW graphs instead of loading them (an index larger than
                memory answers; each search reads the pages it needs). Vectors are always mapped.
            expansion_search: HNSW candidates per search for this reader (default: each segment's,
                tuned when its graph was built); higher finds more of the true neighbours, more slowly.

        Raises:
            IndexNotFoundError: No index there.
            IndexFormatError: Another format version, or damaged files.
        """
        require_usearch()
        if expansion_search is not None:
            expansion_search = _positive("expansion_search", expansion_search)
        root = resolve_index_path(path)
        for _attempt in range(5):  # a writer may remove the files of the generation just read
            manifest = _read_manifest(root)
            try:
                return cls(root, manifest, view=view, expansion_search=expansion_search)
            except FileNotFoundError:
                continue
        raise IndexFormatError(f"{root}: the files its manifest names keep disappearing (a writer is busy?)")

    # ------------------------------------------------------------------ facts

    @property
    def path(self) -> Path:
        """The index folder."""
        return self._root

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def options(self) -> IndexOptions:
        return self._options

    @property
    def precision(self) -> str:
        return self._options.precision

    @property
    def ranges(self) -> QuantizationRanges | None:
        """The int8 quantization ranges (``None`` before the first rows of an int8 index, and for others)."""
        return self._ranges

    @property
    def recipe(self) -> EmbeddingRecipe | None:
        """How the vectors were made, if the index was told."""
        return self._recipe

    @property
    def generation(self) -> int:
        """How many commits made this index (each update adds one)."""
        return int(self._manifest["generation"])

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the manifest this object reads."""
        copy: dict[str, Any] = json.loads(json.dumps(self._manifest))
        return copy

    @property
    def stores_documents(self) -> bool:
        """Whether some rows keep a text or metadata."""
        return any(s.docs is not None for s in self._segments)

    @property
    def segments(self) -> int:
        return len(self._segments)

    def __len__(self) -> int:
        return sum(s.rows - int(d.sum()) for s, d in zip(self._segments, self._dead))

    def __contains__(self, record_id: object) -> bool:
        return isinstance(record_id, str) and record_id in self._ids()

    def __repr__(self) -> str:
        return f"SearchIndex({str(self._root)!r}, rows={len(self)}, dim={self.dim}, precision={self.precision!r})"

    def ids(self) -> Iterator[str]:
        """The ids in the index (segment by segment)."""
        for segment, dead in zip(self._segments, self._dead):
            for row in range(segment.rows):
                if not dead[row]:
                    yield segment.id(row)

    def segment_info(self) -> list[dict[str, Any]]:
        """Per segment: ``name``, ``rows``, ``live`` rows, ``hnsw``, and for a graph its tuned
        ``expansion_search`` and the ``graph_recall`` measured with it; for a segment large enough for a
        graph that was not kept (see :attr:`IndexOptions.graph_recall`), ``graph_refused``: why."""
        info = []
        for segment, dead in zip(self._segments, self._dead):
            entry = {"name": segment.name, "rows": segment.rows, "live": segment.rows - int(dead.sum()),
                     "hnsw": segment.graph is not None}  # fmt: skip
            if segment.graph is not None:
                entry.update(expansion_search=segment.expansion_search, graph_recall=segment.meta.get("graph_recall"))
            elif "refused" in segment.meta:
                entry.update(graph_refused=segment.meta["refused"])
            info.append(entry)
        return info

    def memory_bytes(self) -> int:
        """Bytes of the searched vectors and graphs: what a fully loaded index holds in memory."""
        return sum(s.nbytes() for s in self._segments)

    def disk_bytes(self) -> int:
        """Bytes of every file of the current generation on disk."""
        total = (self._root / INDEX_FILE).stat().st_size
        for segment in self._segments:
            total += sum(p.stat().st_size for p in segment.folder.iterdir())
        if self._manifest.get("deleted"):
            total += (self._root / self._manifest["deleted"]).stat().st_size
        return total

    def get(self, record_id: str) -> tuple[np.ndarray, str | None, Any]:
        """``(vector, text, metadata)`` of one row: the float32 vector (dequantized if none is kept)."""
        where = self._ids().get(record_id)
        if where is None:
            raise InvalidInputError(f"no row with id {record_id!r} in {self._root}")
        segment, row = self._segments[where[0]], where[1]
        if segment.floats is not None:
            vector = np.array(segment.floats[row])
        else:
            vector = self._dequantize(segment.vectors[row : row + 1])[0]
        text, metadata = segment.document(row)
        return vector, text, metadata

    def close(self) -> None:
        for segment in self._segments:
            segment.close()
        self._segments, self._dead, self._id_map = [], [], None

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ updates

    def upsert(
        self,
        ids: Sequence[str],
        vectors: Any,
        *,
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[Any] | None = None,
        skip_unchanged: bool = False,
    ) -> UpdateResult:
        """Add rows; a row whose id is in the index replaces it. One commit (see :meth:`update`)."""
        return self.update(ids, vectors, texts=texts, metadata=metadata, skip_unchanged=skip_unchanged)

    def delete(self, ids: Iterable[str]) -> UpdateResult:
        """Delete rows by id (ids not in the index are ignored). One commit."""
        return self.update(delete=ids)

    def update(
        self,
        ids: Sequence[str] = (),
        vectors: Any = None,
        *,
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[Any] | None = None,
        delete: Iterable[str] = (),
        skip_unchanged: bool = False,
        corpus: dict[str, Any] | None = None,
    ) -> UpdateResult:
        """Add or replace rows and delete others, in one atomic commit.

        Args:
            ids: The rows' ids (str, unique).
            vectors: ``(len(ids), dim)`` float vectors (float32 is what is stored and hashed).
            texts: A text per row (or ``None``), kept for :class:`~qwen_embed.search.Retriever`
                results and reranking.
            metadata: A JSON-serializable value per row (or ``None``).
            delete: Ids to delete; an id absent from the index is ignored.
            skip_unchanged: Leave a row alone when the index holds the same id with the same
                vector and document (what re-indexing an edited corpus wants).
            corpus: What a corpus folder's index records about the shards it has read.

        Raises:
            InputTypeError: An id is not a str.
            InvalidInputError: An id repeats, is both added and deleted, or a vector is not finite.
            DimensionError: The vectors' width is not the index's.
        """
        started = time.perf_counter()
        upsert_ids = _id_list(ids, "ids")
        delete_ids = _id_list(delete, "delete")
        floats = self._check_vectors(vectors, len(upsert_ids))
        docs = _documents(len(upsert_ids), texts, metadata)
        both = set(upsert_ids).intersection(delete_ids)
        if both:
            raise InvalidInputError(f"id {sorted(both)[0]!r} is both added and deleted in one update")
        with self._writing(), self._keeping_ranges():
            current = self._ids()
            if self._options.precision == "int8" and self._ranges is None and len(floats):
                self._ranges = QuantizationRanges.from_embeddings(floats)
                logger.info("%s: int8 ranges computed from the first %d vectors", self._root, len(floats))
            hashes = vector_hashes(floats)
            keep = np.ones(len(upsert_ids), dtype=bool)
            if skip_unchanged:
                for i, record_id in enumerate(upsert_ids):
                    where = current.get(record_id)
                    if where is not None:
                        segment, row = self._segments[where[0]], where[1]
                        same_doc = docs is None or segment.raw_document(row) == docs[i]
                        keep[i] = not (int(segment.hashes[row]) == int(hashes[i]) and same_doc)
            dead = [d.copy() for d in self._dead]
            replaced = 0
            for i, record_id in enumerate(upsert_ids):
                where = current.get(record_id)
                if where is not None and keep[i]:
                    dead[where[0]][where[1]] = True
                    replaced += 1
            deleted = 0
            for record_id in delete_ids:
                where = current.get(record_id)
                if where is not None:
                    dead[where[0]][where[1]] = True
                    deleted += 1
            rows = np.flatnonzero(keep)
            new: list[dict[str, Any]] = []
            if len(rows) == len(upsert_ids) and len(rows):  # all of them: no copy of the vectors
                new.append(self._write_new_segment(upsert_ids, floats, hashes, docs))
            elif len(rows):
                new.append(self._write_new_segment([upsert_ids[i] for i in rows], floats[rows], hashes[rows],
                                                   None if docs is None else [docs[i] for i in rows]))  # fmt: skip
            merged = self._commit(new, dead, corpus)
        unchanged = int(len(upsert_ids) - len(rows))
        return UpdateResult(
            added=len(rows) - replaced, replaced=replaced, unchanged=unchanged, deleted=deleted, merged=merged,
            generation=self.generation, rows=len(self), seconds=time.perf_counter() - started,
        )  # fmt: skip

    def compact(self) -> UpdateResult:
        """Merge every segment into one, dropping deleted rows (one commit; the graph is built anew)."""
        started = time.perf_counter()
        with self._writing():
            merged = self._commit([], [d.copy() for d in self._dead], None, merge_all=True)
        return UpdateResult(0, 0, 0, 0, merged, self.generation, len(self), time.perf_counter() - started)

    # ------------------------------------------------------------------ search

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        rescore: str | None = None,
        rescore_multiplier: int | None = None,
        exact: bool | None = None,
    ) -> Any:
        """The ``k`` nearest rows of each query vector, best first.

        Args:
            queries: A ``(dim,)`` query vector (returns one list of hits) or ``(m, dim)``
                (returns ``m`` lists), float; embedded as the index's recipe says.
            k: Results per query (fewer when the index holds fewer rows).
            rescore: For int8, binary and float16 indexes: ``"float"`` scores the
                ``k * rescore_multiplier`` candidates against the stored float32 vectors (the
                default where they are kept), ``"quantized"`` against the dequantized codes
                (int8) or sign vectors (binary), ``"none"`` keeps the first ``k`` candidates.
            rescore_multiplier: Candidates per result (default: the index's option, 4).
            exact: ``True``: brute force everywhere; ``False``: HNSW wherever a segment has a
                graph; ``None``: each segment as built (exact below ``exact_max_values``).

        Returns:
            A list of :class:`Hit` (or a list of them per query), with text and metadata when kept.
        """
        matrix, single = self._check_queries(queries)
        k = _positive("k", k)
        mode = self._rescore_mode(rescore)
        multiplier = (
            self._options.rescore_multiplier
            if rescore_multiplier is None
            else _positive("rescore_multiplier", rescore_multiplier)
        )
        if exact is not None and not isinstance(exact, bool):
            raise ConfigurationError(f"exact must be True, False or None, not {exact!r}")
        if len(matrix) > _QUERY_BLOCK:  # bounded memory: candidates and their vectors, a block of queries at a time
            blocks = [matrix[s : s + _QUERY_BLOCK] for s in range(0, len(matrix), _QUERY_BLOCK)]
            return [hits for b in blocks for hits in self.search(b, k, rescore=mode, rescore_multiplier=multiplier,
                                                                 exact=exact)]  # fmt: skip
        m = len(matrix)
        oversample = k * multiplier if self.precision != "float32" and mode != "none" else k
        found_rows, found_scores, found_segments = [], [], []
        for si, segment in enumerate(self._segments):
            live = segment.rows - int(self._dead[si].sum())
            if live == 0 or m == 0:
                continue
            rows = self._candidates(si, matrix, min(oversample, live), exact)
            scores = self._score(segment, matrix, rows, mode)
            found_rows.append(rows)
            found_scores.append(scores)
            found_segments.append(np.full(rows.shape, si, dtype=np.int64))
        if not found_rows:
            results: list[list[Hit]] = [[] for _ in range(m)]
            return results[0] if single else results
        rows = np.concatenate(found_rows, axis=1)
        scores = np.concatenate(found_scores, axis=1)
        segs = np.concatenate(found_segments, axis=1)
        results = []
        for qi in range(m):
            valid = np.flatnonzero(rows[qi] >= 0)
            order = valid[np.lexsort((rows[qi][valid], segs[qi][valid], -scores[qi][valid]))][:k]
            hits = []
            for j in order.tolist():
                segment, row = self._segments[int(segs[qi, j])], int(rows[qi, j])
                text, metadata = segment.document(row)
                score = float(scores[qi, j])
                hits.append(Hit(segment.id(row), score, text, metadata, vector_score=score))
            results.append(hits)
        return results[0] if single else results

    def _candidates(self, si: int, queries: np.ndarray, want: int, exact: bool | None) -> np.ndarray:
        """``(m, want)`` row numbers of segment ``si``'s best live rows per query (``-1`` pads)."""
        segment, dead = self._segments[si], self._dead[si]
        use_graph = segment.graph is not None and exact is not True
        if self.precision in ("float32", "float16") and not use_graph:
            return _exact_float(segment.vectors, queries, dead, want)
        fetch = min(segment.rows, want + int(dead.sum()) if not use_graph else want)
        while True:
            rows = self._raw_search(segment, queries, fetch, use_graph)
            alive = rows >= 0
            alive[alive] = ~dead[rows[alive]]
            enough = alive.sum(axis=1) >= want
            if bool(enough.all()) or fetch >= segment.rows:
                break
            fetch = min(segment.rows, fetch * 2)
        out = np.full((len(queries), want), -1, dtype=np.int64)
        for qi in range(len(queries)):
            kept = rows[qi][alive[qi]][:want]
            out[qi, : len(kept)] = kept
        return out

    def _raw_search(self, segment: Segment, queries: np.ndarray, fetch: int, use_graph: bool) -> np.ndarray:
        """Row numbers by the segment's own metric, best first, dead rows included (``-1`` pads)."""
        precision = self.precision
        if precision == "int8":
            probe = self._int8_probe(queries)
            metric, dtype = "ip", "i8"
        elif precision == "binary":
            probe = np.packbits(queries > 0, axis=-1)
            metric, dtype = "hamming", "b1"
        else:
            probe = queries.astype(np.float16) if precision == "float16" else queries
            metric, dtype = "ip", "f16" if precision == "float16" else "f32"
        if use_graph:
            matches = segment.graph.search(probe, fetch)
        else:
            return exact_search(np.asarray(segment.vectors), probe, fetch, metric, dtype)[0]
        keys = np.asarray(matches.keys, dtype=np.int64).reshape(len(queries), -1)
        counts = np.reshape(getattr(matches, "counts", keys.shape[1]), (-1, 1))
        keys[np.arange(keys.shape[1])[None, :] >= counts] = -1
        return keys

    def _int8_probe(self, queries: np.ndarray) -> np.ndarray:
        """int8 queries whose dot product with the codes ranks rows as ``query . dequantize(codes)`` does."""
        assert self._ranges is not None
        _, steps = self._ranges.steps()
        weighted = queries * steps
        scale = np.abs(weighted).max(axis=1, keepdims=True)
        scale[scale == 0] = 1
        probe: np.ndarray = np.rint(weighted / scale * 127).astype(np.int8)
        return probe

    def _score(self, segment: Segment, queries: np.ndarray, rows: np.ndarray, mode: str) -> np.ndarray:
        """Scores of the candidate rows (``-inf`` for padding)."""
        scores = np.full(rows.shape, -np.inf, dtype=np.float32)
        valid = rows >= 0
        if not valid.any():
            return scores
        flat = rows[valid]
        query_of = np.nonzero(valid)[0]
        if self.precision == "float32" or (mode == "float" and segment.floats is not None):
            source = segment.vectors if self.precision == "float32" else segment.floats
            assert source is not None
            vectors = np.asarray(source[flat], dtype=np.float32)
        elif self.precision == "binary" and mode == "none":
            bits = np.unpackbits(np.asarray(segment.vectors[flat]), axis=-1)[:, : self.dim]
            mine = (queries[query_of] > 0).astype(np.uint8)
            agree = (bits == mine).sum(axis=1)
            scores[valid] = (2.0 * agree - self.dim) / self.dim
            return scores
        else:
            vectors = self._dequantize(np.asarray(segment.vectors[flat]))
            if self.precision == "binary":
                vectors /= math.sqrt(self.dim)
        scores[valid] = np.einsum("ij,ij->i", queries[query_of], vectors)
        return scores

    def _dequantize(self, codes: np.ndarray) -> np.ndarray:
        if self.precision == "int8":
            return dequantize_embeddings(codes, "int8", self._ranges)
        if self.precision == "binary":
            return dequantize_embeddings(codes, "ubinary", dim=self.dim)
        return codes.astype(np.float32)

    def _rescore_mode(self, rescore: str | None) -> str:
        if rescore is None:
            return "float" if self._options.stores_float else "quantized"
        if rescore not in RESCORE_MODES:
            raise ConfigurationError(f"rescore={rescore!r} is not one of {', '.join(map(repr, RESCORE_MODES))}")
        if rescore == "float" and not self._options.stores_float:
            raise ConfigurationError(
                f"rescore='float' needs the float32 vectors, which {self._root} does not keep "
                "(IndexOptions(keep_float=False)); use rescore='quantized'"
            )
        return rescore

    # ------------------------------------------------------------------ checks

    def _check_vectors(self, vectors: Any, n: int) -> np.ndarray:
        if vectors is None:
            if n:
                raise InvalidInputError(f"{n} ids but no vectors")
            return np.zeros((0, self.dim), dtype=np.float32)
        array = np.asarray(vectors)
        if array.dtype.kind != "f":
            raise InputTypeError(f"vectors must be float, not {array.dtype}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise DimensionError(f"vectors must have shape ({n}, {self.dim}), not {array.shape}")
        if len(array) != n:
            raise InvalidInputError(f"{n} ids but {len(array)} vectors")
        for start in range(0, len(array), _COPY_BLOCK):  # in blocks: no temporary the size of the input
            if not bool(np.isfinite(array[start : start + _COPY_BLOCK]).all()):
                raise InvalidInputError("a vector holds a NaN or an infinity")
        return array

    def _check_queries(self, queries: Any) -> tuple[np.ndarray, bool]:
        array = np.asarray(queries)
        if array.dtype.kind != "f":
            raise InputTypeError(f"query vectors must be float, not {array.dtype}")
        single = array.ndim == 1
        matrix = np.ascontiguousarray(array.reshape(1, -1) if single else array, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise DimensionError(f"query vectors must have {self.dim} dimensions, not shape {array.shape}")
        return matrix, single

    # ------------------------------------------------------------------ state

    def _ids(self) -> dict[str, tuple[int, int]]:
        if self._id_map is None:
            mapping: dict[str, tuple[int, int]] = {}
            for si, (segment, dead) in enumerate(zip(self._segments, self._dead)):
                for row in np.flatnonzero(~dead).tolist():
                    mapping[segment.id(row)] = (si, row)
            self._id_map = mapping
        return self._id_map

    def _open_segments(self, manifest: dict[str, Any]) -> None:
        known = {s.name: s for s in self._segments}
        segments = [known.get(r["name"]) or Segment(self._root, r["name"], self._options, view=self._view)
                    for r in manifest["segments"]]  # fmt: skip
        tombstones: dict[str, np.ndarray] = {}
        if manifest.get("deleted"):
            try:
                with np.load(self._root / manifest["deleted"]) as archive:
                    tombstones = {name: archive[name] for name in archive.files}
            except FileNotFoundError:
                raise
            except (OSError, ValueError) as error:
                raise IndexFormatError(f"{self._root / manifest['deleted']} is unreadable ({error})") from error
        dead = []
        for segment in segments:
            mask = np.zeros(segment.rows, dtype=bool)
            mask[tombstones.get(segment.name, np.zeros(0, dtype=np.int64))] = True
            dead.append(mask)
        self._segments, self._dead, self._id_map = segments, dead, None
        self._manifest = manifest
        self._options = IndexOptions.from_json(manifest["options"])
        for segment in segments:
            if segment.graph is not None:
                segment.graph.expansion_search = self._expansion_search or segment.expansion_search
        self._ranges = QuantizationRanges.from_json(manifest["ranges"]) if manifest.get("ranges") else None
        self._recipe = EmbeddingRecipe.from_json(manifest["embedding"]) if manifest.get("embedding") else None

    @contextlib.contextmanager
    def _writing(self, *, fresh: bool = False) -> Iterator[None]:
        """Hold the writer's lock; bring this object to the committed generation; clean up after a crash."""
        lock = open(self._root / ".lock", "a+b")
        try:
            _flock(lock)
            if not fresh:
                on_disk = _read_manifest(self._root) if (self._root / INDEX_FILE).exists() else None
                if self._pending:
                    if on_disk is not None and on_disk["generation"] != self._manifest["generation"]:
                        raise ConfigurationError(f"{self._root} was updated by another writer during create()")
                elif on_disk is None:
                    raise IndexNotFoundError(f"{self._root}/{INDEX_FILE} disappeared")
                elif on_disk["generation"] != self.generation:
                    self._open_segments(on_disk)
                self._collect_garbage(on_disk if on_disk is not None and not self._pending else self._manifest,
                                      also=on_disk if self._pending else None)  # fmt: skip
            yield
        finally:
            lock.close()  # releases the lock

    @contextlib.contextmanager
    def _keeping_ranges(self) -> Iterator[None]:
        """Forget int8 ranges computed by an update that failed before its commit."""
        before = self._ranges
        try:
            yield
        except BaseException:
            if self._manifest.get("ranges") is None:
                self._ranges = before
            raise

    def _next_name(self) -> str:
        number = int(self._manifest["next_segment"])
        self._manifest["next_segment"] = number + 1
        return f"seg-{number:06d}"

    def _write_new_segment(
        self, ids: list[str], floats: np.ndarray, hashes: np.ndarray, docs: list[bytes] | None
    ) -> dict[str, Any]:
        writer = SegmentWriter(self._root, self._next_name(), len(ids), self.dim, self._options, self._ranges,
                               documents=docs is not None)  # fmt: skip
        try:
            for start in range(0, len(ids), _COPY_BLOCK):
                stop = start + _COPY_BLOCK
                writer.add(ids[start:stop], floats[start:stop], hashes=hashes[start:stop],
                           docs=None if docs is None else docs[start:stop])  # fmt: skip
            return writer.finish()
        except BaseException:
            writer.abort()
            raise

    def _merge(self, indexes: list[int], dead: list[np.ndarray]) -> dict[str, Any]:
        """One new segment holding the live rows of segments ``indexes``."""
        parts = [(self._segments[i], np.flatnonzero(~dead[i])) for i in indexes]
        total = sum(len(rows) for _, rows in parts)
        documents = any(segment.docs is not None for segment, _ in parts)
        writer = SegmentWriter(self._root, self._next_name(), total, self.dim, self._options, self._ranges,
                               documents=documents)  # fmt: skip
        try:
            for segment, live in parts:
                for start in range(0, len(live), _COPY_BLOCK):
                    rows = live[start : start + _COPY_BLOCK]
                    floats = None
                    if self.precision == "float32":
                        floats = np.asarray(segment.vectors[rows], dtype=np.float32)
                    elif segment.floats is not None:
                        floats = np.asarray(segment.floats[rows])
                    writer.add([segment.id(r) for r in rows.tolist()], floats,
                               vectors=np.asarray(segment.vectors[rows]), hashes=np.asarray(segment.hashes[rows]),
                               docs=[segment.raw_document(r) for r in rows.tolist()])  # fmt: skip
            return writer.finish()
        except BaseException:
            writer.abort()
            raise

    def _plan_merges(self, sizes: list[int], dead: list[np.ndarray], merge_all: bool) -> list[list[int]]:
        """Groups of segment positions to merge: a tier with ``merge_factor`` segments, or mostly-dead ones."""
        live = [n - int(d.sum()) for n, d in zip(sizes, dead)]
        candidates = [i for i in range(len(sizes)) if live[i] > 0]
        if merge_all:
            return [candidates] if len(candidates) > 1 or any(dead[i].any() for i in candidates) else []
        factor = self._options.merge_factor
        tiers: dict[int, list[int]] = {}
        for i in candidates:
            tiers.setdefault(_tier(live[i], factor), []).append(i)
        groups = [members for _, members in sorted(tiers.items()) if len(members) >= factor]
        grouped = {i for g in groups for i in g}
        for i in candidates:  # more than half deleted: rewrite alone
            if i not in grouped and live[i] * 2 < sizes[i]:
                groups.append([i])
        return groups

    def _commit(
        self, new: list[dict[str, Any]], dead: list[np.ndarray], corpus: dict[str, Any] | None, *,
        merge_all: bool = False,
    ) -> int:  # fmt: skip
        """Write the merges, the tombstones and the manifest (the commit point); returns segments merged."""
        records = [] if self._pending else [dict(r) for r in self._manifest["segments"]]
        if self._pending:
            dead = []
        # New segments are not open yet: open them to merge them like the others.
        opened = [Segment(self._root, r["name"], self._options, view=self._view) for r in new]
        self._segments = ([] if self._pending else self._segments) + opened
        dead = dead + [np.zeros(s.rows, dtype=bool) for s in opened]
        records += new
        groups = self._plan_merges([s.rows for s in self._segments], dead, merge_all)
        drop: set[int] = set()
        for group in groups:
            records.append(self._merge(group, dead))
            drop.update(group)
            self._segments.append(Segment(self._root, records[-1]["name"], self._options, view=self._view))
            dead.append(np.zeros(self._segments[-1].rows, dtype=bool))
        live = [n - int(d.sum()) for n, d in zip((s.rows for s in self._segments), dead)]
        keep = [i for i in range(len(records)) if i not in drop and live[i] > 0]
        manifest = dict(self._manifest)
        generation = int(manifest["generation"]) + 1
        tombstones = {records[i]["name"]: np.flatnonzero(dead[i]) for i in keep if dead[i].any()}
        deleted_name = None
        if tombstones:
            deleted_name = f"deleted-{generation:06d}.npz"
            tmp = self._root / f".{deleted_name}.tmp"
            with open(tmp, "wb") as handle:
                np.savez(handle, **tombstones)  # type: ignore[arg-type]
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._root / deleted_name)
        manifest.update(
            generation=generation, updated=_now(), library_version=__version__, segments=[records[i] for i in keep],
            deleted=deleted_name, rows=int(sum(live[i] for i in keep)),
            ranges=self._ranges.to_json() if self._ranges is not None else None,
        )  # fmt: skip
        if corpus is not None:
            manifest["corpus"] = corpus
        _write_json(self._root / INDEX_FILE, manifest)  # the commit point
        self._pending = False
        previous = self._segments
        self._open_segments(manifest)  # reuses the segments already open
        current = {s.name for s in self._segments}
        for segment in previous:
            if segment.name not in current:
                segment.close()
        self._collect_garbage(manifest)
        return sum(len(g) for g in groups)

    def _collect_garbage(self, manifest: dict[str, Any], also: dict[str, Any] | None = None) -> None:
        """Remove the files of ours no manifest names (old generations, a crashed writer's temporaries)."""
        import shutil

        keep = {INDEX_FILE, ".lock"}
        for m in (manifest, also):
            if m is not None:
                keep.update(r["name"] for r in m["segments"])
                if m.get("deleted"):
                    keep.add(m["deleted"])
        for path in self._root.iterdir():
            if path.name in keep or not _OURS.fullmatch(path.name):
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


# ---------------------------------------------------------------------- helpers


def _exact_float(vectors: np.ndarray, queries: np.ndarray, dead: np.ndarray, want: int) -> np.ndarray:
    """Brute-force top ``want`` live rows by dot product (float32 or float16 vectors, read in blocks).

    Memory stays bounded whatever the segment's size: a block of scores and the running best ``want``
    per query, never a ``queries x rows`` matrix (a memory-mapped index larger than RAM must answer).
    """
    m, n = len(queries), len(vectors)
    want = min(want, n - int(dead.sum()))
    if want <= 0:
        return np.full((m, 0), -1, dtype=np.int64)
    best = (np.zeros((m, 0), dtype=np.int64), np.zeros((m, 0), dtype=np.float32))
    step = block_rows(m)
    for start in range(0, n, step):
        block = np.asarray(vectors[start : start + step], dtype=np.float32)
        negated = -(queries @ block.T)  # smaller is better, as keep_best keeps
        negated[:, dead[start : start + len(block)]] = np.inf
        rows = np.broadcast_to(np.arange(start, start + len(block)), negated.shape)
        best = keep_best(best, rows, negated, want)
    return best_first(best, n)[0]


def _tier(rows: int, factor: int) -> int:
    """``floor(log(rows, factor))``, in integers."""
    tier = 0
    while rows >= factor:
        rows //= factor
        tier += 1
    return tier


def _id_list(ids: Any, what: str) -> list[str]:
    if isinstance(ids, (str, bytes)):
        raise InputTypeError(f"{what} must be a list of str ids, not a single {type(ids).__name__}")
    out = list(ids)
    for i, value in enumerate(out):
        if not isinstance(value, str):
            raise InputTypeError(f"{what}[{i}] is {type(value).__name__}, not str; ids are strings")
    if len(set(out)) != len(out):
        seen: set[str] = set()
        repeat = next(v for v in out if v in seen or seen.add(v))  # type: ignore[func-returns-value]
        raise InvalidInputError(f"{what}: id {repeat!r} appears more than once")
    return out


def _documents(n: int, texts: Sequence[str | None] | None, metadata: Sequence[Any] | None) -> list[bytes] | None:
    if texts is None and metadata is None:
        return None
    if isinstance(texts, str):
        raise InputTypeError("texts must be a list with a text per row, not a single str")
    for what, values in (("texts", texts), ("metadata", metadata)):
        if values is not None and len(values) != n:
            raise InvalidInputError(f"{n} ids but {len(values)} {what}")
    out = []
    for i in range(n):
        text = None if texts is None else texts[i]
        if text is not None and not isinstance(text, str):
            raise InputTypeError(f"texts[{i}] is {type(text).__name__}, not str")
        try:
            out.append(encode_document(text, None if metadata is None else metadata[i]))
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"metadata[{i}] is not JSON-serializable ({error})") from error
    return out


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigurationError(f"{name} must be a positive int, not {value!r}")
    return int(value)


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / INDEX_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise IndexNotFoundError(f"no search index at {root} (no {INDEX_FILE})") from error
    except (OSError, ValueError) as error:
        raise IndexFormatError(f"{path} is unreadable ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path} is not a qwen-embed search index manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} has format version {manifest.get('format_version')}; this qwen-embed reads version "
            f"{FORMAT_VERSION}. Build the index again (qwen-embed index DIR --rebuild)."
        )
    return manifest


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Write ``path`` atomically: a temporary file, flushed, renamed over it, the folder flushed."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(json.dumps(value, indent=1).encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _flock(handle: Any) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one writer is the caller's business
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
