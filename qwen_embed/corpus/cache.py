"""The row cache of a corpus job: an earlier run's vectors, found again by the SHA-256 of their text.

A row's vector depends on its text and on the folder's vector settings (the model file's
SHA-256, quant, engine and dtype, pooling, max_length, dim, normalize, the prompt's text before
and after, the long-text policy and chunking, the precision); a resumed run refuses other
settings (:class:`~qwen_embed.corpus.ResumeMismatchError`), so inside one output folder the
cache key is the text's SHA-256 alone, and the settings are recorded once (``cache.json``'s
``key``). Neither the row's position nor its id is part of the key: a row moved, re-sorted or
renamed is found again.

Where the entries are:

- in the output's own shards (their ``text_sha256`` column): at rest the output *is* the cache,
  so nothing is stored twice and nothing is kept that the current output does not reference;
- while a run rewrites shards, in ``_cache/<shard sha256>/``: before a run replaces a shard that
  holds entries (or reads an entry from one), the shard is copied there as a memory-mapped
  record array (``rows.npy``: key, vector, receipt; ``spans.npy``), so that rows moved to a later
  shard are still found, at random, at the cost of one read. ``_cache/cache.json`` (written
  atomically, after the segment it names is renamed into place) lists the segments; a folder it
  does not list is an unfinished copy and is deleted.

``_cache/`` survives a run that fails or is killed (the next run finds the rows of the shards the
failed run replaced there), and is deleted when a run finishes, or when a run starts and finds a
finished job (its shards hold every entry the output references) or other settings.

Memory: 16 bytes a cached row (a 64-bit prefix of the key and a position); a hit is checked
against the whole key when it is read.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import fsync_dir
from . import store
from .rows import FACT_FIELDS, FACT_NAMES, FACTS, KEY_BYTES, RowBlock

__all__ = ["CACHE_DIR", "RowCache", "remove_cache"]

logger = logging.getLogger(__name__)

CACHE_DIR = "_cache"
_META = "cache.json"
_FORMAT = "qwen-embed corpus cache"
_VERSION = 1


def remove_cache(folder: Path) -> None:
    """Delete ``folder/_cache`` (nothing else)."""
    shutil.rmtree(folder / CACHE_DIR, ignore_errors=True)


def _record_dtype(dim: int) -> np.dtype:
    fields: list[tuple[Any, ...]] = [("key", "u1", (KEY_BYTES,)), ("vector", "<f4", (dim,))]
    fields += list(FACT_FIELDS)
    fields += [("fusion", "i1"), ("span_start", "<i8"), ("span_count", "<i4")]
    return np.dtype(fields)


@dataclass
class _Source:
    """Rows of one earlier shard: still in the output (``shard``) or copied to a segment (``records``)."""

    name: str  # the shard file's SHA-256: the segment's folder name
    rows: int
    shard: store.ShardRecord | None = None
    records: np.ndarray | None = field(default=None, repr=False)  # memory-mapped
    spans: np.ndarray | None = field(default=None, repr=False)
    fusions: tuple[str, ...] = ()

    def block(self, rows: np.ndarray) -> RowBlock:
        assert self.records is not None and self.spans is not None
        records = np.asarray(self.records[rows])
        facts = np.zeros(len(records), FACTS)
        for name in FACT_NAMES:
            facts[name] = records[name]
        spans = tuple(
            tuple((int(a), int(b)) for a, b in self.spans[start : start + count])
            for start, count in zip(records["span_start"].tolist(), records["span_count"].tolist())
        )
        fusion = tuple(self.fusions[code] if code >= 0 else None for code in records["fusion"].tolist())
        return RowBlock(records["key"].copy(), records["vector"].copy(), facts, fusion, spans)


class RowCache:
    """The rows of earlier runs in one output folder, by text SHA-256 (see the module docs).

    Attributes:
        copied_shards: Shards copied into ``_cache/`` by this process.
        copied_rows: Rows in them.
    """

    def __init__(self, folder: Path, *, key: Mapping[str, Any], dim: int, deterministic: bool) -> None:
        self.folder, self.root = folder, folder / CACHE_DIR
        self.key, self.dim, self.deterministic = dict(key), dim, deterministic
        self._sources: list[_Source] = []
        self._offsets = np.zeros(1, np.int64)
        self._prefix = np.zeros(0, np.uint64)  # sorted
        self._position = np.zeros(0, np.int64)  # of each prefix
        self.copied_shards = self.copied_rows = 0

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        folder: Path,
        *,
        key: Mapping[str, Any],
        dim: int,
        shards: Sequence[store.ShardRecord],
        deterministic: bool,
        require_deterministic: bool,
    ) -> RowCache:
        """The cache of ``folder``: its ``_cache/`` segments and the earlier run's ``shards`` (intact, format 2).

        Args:
            key: The vector settings; ``_cache/`` made with others is deleted.
            dim: Vector length.
            shards: The earlier run's shards that hold ``text_sha256``.
            deterministic: Whether ``shards`` were embedded with ``deterministic=True``.
            require_deterministic: Delete a ``_cache/`` whose vectors were not all made so.
        """
        cache = cls(folder, key=key, dim=dim, deterministic=deterministic)
        meta = cache._read_meta()
        if meta is not None and (
            _jsonish(meta.get("key")) != _jsonish(cache.key)
            or meta.get("dim") != dim
            or (require_deterministic and not meta.get("deterministic"))
        ):
            logger.info("%s was made with other settings: deleting it", cache.root)
            remove_cache(folder)
            meta = None
        segments = list(meta.get("segments", [])) if meta is not None else []
        if meta is not None:
            cache.deterministic = cache.deterministic and bool(meta.get("deterministic"))
        cache._remove_orphans({s["name"] for s in segments})
        keys: list[np.ndarray] = []
        for entry in segments:
            source = _Source(str(entry["name"]), int(entry["rows"]), fusions=tuple(entry.get("fusions", ())))
            cache._map(source)
            assert source.records is not None
            keys.append(_prefixes(source.records["key"]))
            cache._sources.append(source)
        copied = {s.name for s in cache._sources}
        for record in shards:
            if record.sha256 in copied:
                continue
            keys.append(_prefixes(store.read_keys(folder / record.file)))
            cache._sources.append(_Source(record.sha256, record.rows, shard=record))
        cache._offsets = np.cumsum([0] + [s.rows for s in cache._sources], dtype=np.int64)
        prefix = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
        order = np.argsort(prefix, kind="stable")  # a key in a segment and a shard: the segment's comes first
        cache._prefix, cache._position = prefix[order], order.astype(np.int64)
        if len(cache):
            logger.info("%s: %d earlier rows to reuse by text (%d in %s)", folder, len(cache),
                        sum(s.rows for s in cache._sources if s.shard is None), CACHE_DIR)  # fmt: skip
        return cache

    def __len__(self) -> int:
        return int(self._offsets[-1])

    # ------------------------------------------------------------------ use

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """The cache position of each key (``(n, 32)`` uint8), or -1 where it is not cached.

        A position is a candidate: :meth:`fetch` gives the row, whose ``keys`` the caller compares.
        """
        found = np.full(len(keys), -1, np.int64)
        if not len(self._prefix) or not len(keys):
            return found
        wanted = _prefixes(keys)
        at = np.searchsorted(self._prefix, wanted).clip(max=len(self._prefix) - 1)
        hit = self._prefix[at] == wanted
        found[hit] = self._position[at[hit]]
        return found

    def fetch(self, positions: np.ndarray) -> RowBlock:
        """The rows at ``positions`` (from :meth:`lookup`, none -1), in that order."""
        if not len(positions):
            return RowBlock.empty(self.dim)
        source = np.searchsorted(self._offsets, positions, side="right") - 1
        order = np.argsort(source, kind="stable")
        blocks = []
        for index in np.unique(source).tolist():
            picked = order[source[order] == index]
            item = self._sources[index]
            if item.records is None:
                self._copy(item)
            blocks.append(item.block(positions[picked] - self._offsets[index]))
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return RowBlock.concat(blocks, self.dim).take(inverse)

    def preserve(self, file: str) -> None:
        """Copy the earlier shard named ``file`` into ``_cache/`` if it holds entries: it is about to be replaced."""
        for item in self._sources:
            if item.shard is not None and item.shard.file == file and item.records is None:
                self._copy(item)

    def clear(self) -> None:
        """Delete ``_cache/`` (the run finished: its shards hold every entry the output references)."""
        for item in self._sources:
            item.records = item.spans = None
        remove_cache(self.folder)

    # ------------------------------------------------------------------ segments

    def _copy(self, item: _Source) -> None:
        assert item.shard is not None
        block = store.read_block(self.folder / item.shard.file, self.dim)
        if len(block) != item.rows:  # pragma: no cover - the shard was checked (size, SHA-256, rows) at the start
            raise store.write_error(self.folder / item.shard.file, OSError(0, "changed while the job ran"))
        fusions = tuple(sorted({f for f in block.fusion if f is not None}))
        codes = {name: i for i, name in enumerate(fusions)}
        records = np.zeros(len(block), _record_dtype(self.dim))
        records["key"], records["vector"] = block.keys, block.vectors
        for name in FACT_NAMES:
            records[name] = block.facts[name]
        records["fusion"] = [codes[f] if f is not None else -1 for f in block.fusion]
        counts = np.array([len(s) for s in block.spans], dtype=np.int64)
        records["span_count"] = counts
        records["span_start"] = np.cumsum(counts) - counts
        spans = np.array([pair for s in block.spans for pair in s], dtype=np.int64).reshape(-1, 2)
        target = self.root / item.name
        tmp = self.root / f".{item.name}.tmp"
        with store.writing(target):
            self.root.mkdir(exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)  # not listed in cache.json, or it would be mapped
            tmp.mkdir()
            for name, array in (("rows.npy", records), ("spans.npy", spans)):
                with open(tmp / name, "wb") as handle:
                    np.save(handle, array)
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, target)
        fsync_dir(self.root)
        item.fusions, item.shard = fusions, None
        self._map(item)
        self._write_meta()
        self.copied_shards += 1
        self.copied_rows += item.rows
        logger.info("copied %d rows into %s before their shard is replaced", item.rows, target)

    def _map(self, item: _Source) -> None:
        path = self.root / item.name
        item.records = np.load(path / "rows.npy", mmap_mode="r")
        item.spans = np.load(path / "spans.npy")

    def _read_meta(self) -> dict[str, Any] | None:
        path = self.root / _META
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            logger.warning("%s is unreadable: deleting the cache", path)
            remove_cache(self.folder)
            return None
        return meta

    def _write_meta(self) -> None:
        copied = [s for s in self._sources if s.shard is None]
        segments = [{"name": s.name, "rows": s.rows, "fusions": list(s.fusions)} for s in copied]
        body = {"format": _FORMAT, "version": _VERSION, "key": self.key, "dim": self.dim,
                "deterministic": self.deterministic, "segments": segments}  # fmt: skip
        store.write_atomic(self.root / _META, json.dumps(body, indent=1).encode("utf-8"))

    def _remove_orphans(self, listed: set[str]) -> None:
        if not self.root.is_dir():
            return
        for path in self.root.iterdir():
            if path.name != _META and path.name not in listed:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _prefixes(keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each key as one uint64 (the index's sort key)."""
    return np.ascontiguousarray(keys[:, :8]).view(np.uint64).reshape(-1)


def _jsonish(value: Any) -> Any:
    return json.loads(json.dumps(value))
