"""The output folder of a corpus job: Parquet shards, a manifest, and their integrity checks.

Layout (readable as one table by pyarrow, pandas, DuckDB, Ray and Spark, which skip names
starting with ``_`` or ``.``)::

    vectors/
      _manifest.json          what is done: settings, model file hash, one entry per shard
      part-000000.parquet     id, embedding (fixed-size list of float32), the receipt, text_sha256
      part-000001.parquet
      .part-000002.parquet.tmp   the shard being written (renamed when complete)
      _cache/                 only while a run that changed rows is unfinished (see cache.py)

Every file is written under a temporary name, flushed to disk and renamed, so a crash at any
moment leaves either the old file or the new one. A shard is reused only if its size, its
SHA-256 and its row count match the manifest.

Columns of a shard (format 2): ``id``, ``embedding``, then the row's receipt, counted while it was
embedded (:class:`~qwen_embed.Receipt`): ``n_tokens``, ``tokens_used``, ``truncated``,
``dropped_tokens``, ``n_chunks`` (the receipt's ``chunks``), ``fusion``; with ``long_text="chunk"``,
``chunks`` (the chunk spans, null for a text embedded whole); and ``text_sha256``, the SHA-256 of
the text, by which a later run finds the row's vector again. Format 1 (qwen-embed 0.1) had
``id``, ``embedding``, ``n_tokens`` and ``chunks``; it is still read.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._files import fsync_dir, fsync_file
from ..errors import ConfigurationError
from .errors import CorpusSourceError, CorpusWriteError
from .rows import FACT_NAMES, FACTS, KEY_BYTES, RowBlock

__all__ = [
    "MANIFEST",
    "ShardRecord",
    "ShardWriter",
    "check_npy_path",
    "export_npy",
    "file_sha256",
    "model_fingerprint",
    "prepare_output_folder",
    "require_pyarrow",
]

logger = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
FORMAT = "qwen-embed corpus"
FORMAT_VERSION = 2
#: Manifest versions this module reads (format 1 lacks the receipt and text_sha256 columns).
READABLE_VERSIONS = (1, 2)
_SHARD = re.compile(r"part-(\d{6,})\.parquet")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_hash_cache: dict[tuple[str, int, int], str] = {}


def require_pyarrow(what: str) -> None:
    """Raise a :class:`~qwen_embed.ConfigurationError` with the install hint when pyarrow is missing."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as error:
        raise ConfigurationError(f'{what} needs pyarrow: pip install "qwen-embed[corpus]"') from error


def shard_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def prepare_output_folder(output: str | os.PathLike[str]) -> Path:
    """Check a corpus job's output folder, creating it if needed; returns it (``~`` expanded).

    Raises:
        ConfigurationError: ``output`` is a file, cannot be created, or is not writable.
    """
    folder = Path(os.path.expanduser(os.fspath(output)))
    if folder.exists() and not folder.is_dir():
        raise ConfigurationError(f"output {folder} is a file; embed_corpus writes a folder of Parquet files.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigurationError(f"cannot create the output folder {folder}: {error.strerror}") from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigurationError(f"the output folder {folder} is not writable.")
    return folder


def check_npy_path(npy: str | os.PathLike[str]) -> Path:
    """Check where a corpus job's ``.npy`` matrix is to go (a ``.npy`` name in a writable folder); returns it.

    Raises:
        ConfigurationError: Another suffix, or a folder that does not exist or is not writable.
    """
    path = Path(os.path.expanduser(os.fspath(npy)))
    if path.suffix.lower() != ".npy":
        raise ConfigurationError(f"npy= must name a .npy file, not {path.name!r}")
    parent = path.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigurationError(f"cannot write {path}: {parent} is not a writable folder.")
    return path


#: What a failed write leaves, in every :class:`CorpusWriteError` message about the dataset.
_KEPT = "The shards finished before it are kept: make room (or fix the folder), then run the same job again to resume."


def write_error(path: Path, error: OSError, *, kept: str = _KEPT) -> CorpusWriteError:
    """A one-line :class:`CorpusWriteError` for an ``OSError`` met while writing ``path``."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        reason += " (the disk or quota is full)"
    failure = CorpusWriteError(f"cannot write {path}: {reason}. {kept}")
    failure.errno = error.errno
    return failure


@contextlib.contextmanager
def writing(path: Path, *, kept: str = _KEPT) -> Iterator[None]:
    """Turn an ``OSError`` (disk full, permissions, ...) raised in the block into a :class:`CorpusWriteError`."""
    try:
        yield
    except CorpusWriteError:
        raise
    except OSError as error:
        raise write_error(path, error, kept=kept) from error


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(path: Path, known: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Identity of a model file: its SHA-256, hashed once per (path, size, mtime).

    The hash is taken from, in order: ``known`` (the manifest's record) when path, size and
    modification time all match; the file's name when it is a Hugging Face cache blob (blobs
    are named by their SHA-256, checked on download); this process's cache; else the file.
    """
    real = Path(path).resolve()
    stat = real.stat()
    record = {"file": real.name, "path": str(real), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    key = (str(real), stat.st_size, stat.st_mtime_ns)
    if known and all(known.get(k) == record[k] for k in ("path", "size", "mtime_ns")) and known.get("sha256"):
        sha = str(known["sha256"])
    elif real.parent.name == "blobs" and _HEX64.fullmatch(real.name):
        sha = real.name
    elif key in _hash_cache:
        sha = _hash_cache[key]
    else:
        logger.info("hashing the model file %s (%.1f GB) once to record it in the manifest", real, stat.st_size / 1e9)
        sha = file_sha256(real)
    _hash_cache[key] = sha
    if path != real:
        record["file"] = Path(path).name
    return {**record, "sha256": sha}


@dataclass(frozen=True)
class ShardRecord:
    """One finished shard, as the manifest records it."""

    index: int
    file: str
    start: int  # first row (0-based, in source order)
    stop: int  # one past the last row
    bytes: int
    sha256: str  # of the Parquet file
    source_sha256: str  # of the shard's ids and texts: detects a changed source on resume
    n_tokens: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def problem(self, folder: Path) -> str | None:
        """Why this shard cannot be reused, or ``None`` when it is intact."""
        path = folder / self.file
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return "missing"
        if size != self.bytes:
            return f"{size:,} bytes, the manifest says {self.bytes:,} (truncated or replaced)"
        if file_sha256(path) != self.sha256:
            return "its SHA-256 differs from the manifest's (corrupt or changed)"
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as error:
            return f"unreadable ({error})"
        if rows != self.rows:
            return f"{rows:,} rows, the manifest says {self.rows:,}"
        return None


def schema(dim: int, *, spans: bool, string_ids: bool) -> Any:
    """The Arrow schema of every shard (format 2)."""
    import pyarrow as pa

    fields = [
        pa.field("id", pa.string() if string_ids else pa.int64(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("tokens_used", pa.int32(), nullable=False),
        pa.field("truncated", pa.bool_(), nullable=False),
        pa.field("dropped_tokens", pa.int32(), nullable=False),
        pa.field("n_chunks", pa.int32(), nullable=False),
        pa.field("fusion", pa.string()),  # null: the text was embedded whole
    ]
    if spans:
        span = pa.struct([pa.field("start", pa.int64()), pa.field("end", pa.int64())])
        fields.append(pa.field("chunks", pa.list_(span)))  # null: the text was embedded whole
    fields.append(pa.field("text_sha256", pa.binary(KEY_BYTES), nullable=False))
    return pa.schema(fields)


def shard_schema(folder: Path, record: ShardRecord) -> Any:
    """The Arrow schema of a shard's file (its footer only)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(folder / record.file).schema_arrow


def has_keys(arrow_schema: Any) -> bool:
    """Whether a shard of this schema holds the columns the cache needs (format 2)."""
    return all(name in arrow_schema.names for name in ("text_sha256", "n_chunks"))


def read_keys(path: Path) -> np.ndarray:
    """The ``text_sha256`` column of a shard: ``(rows, 32)`` uint8."""
    import pyarrow.parquet as pq

    return _keys(pq.read_table(path, columns=["text_sha256"]).column(0).combine_chunks())


def read_block(path: Path, dim: int) -> RowBlock:
    """Everything but the ids of a format-2 shard, as a :class:`RowBlock` (one shard in memory)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    values = table.column("embedding").combine_chunks().values.to_numpy(zero_copy_only=False)
    facts = np.zeros(table.num_rows, FACTS)
    for name in FACT_NAMES:
        facts[name] = table.column(name).to_numpy()
    spans: tuple[tuple[tuple[int, int], ...], ...]
    if "chunks" in table.column_names:
        spans = tuple(tuple((s["start"], s["end"]) for s in row or ()) for row in table.column("chunks").to_pylist())
    else:
        spans = ((),) * table.num_rows
    return RowBlock(
        _keys(table.column("text_sha256").combine_chunks()),
        np.asarray(values, dtype=np.float32).reshape(-1, dim),
        facts,
        tuple(table.column("fusion").to_pylist()),
        spans,
    )


def _keys(column: Any) -> np.ndarray:
    data = np.frombuffer(column.buffers()[1], dtype=np.uint8)
    start = column.offset * KEY_BYTES
    keys: np.ndarray = data[start : start + len(column) * KEY_BYTES].reshape(-1, KEY_BYTES).copy()
    return keys


class ShardWriter:
    """Writes one shard window by window to a temporary file; :meth:`commit` renames it into place."""

    def __init__(self, folder: Path, index: int, arrow_schema: Any) -> None:
        import pyarrow.parquet as pq

        self.folder, self.index, self._schema = folder, index, arrow_schema
        self.name = shard_name(index)
        self._tmp = folder / f".{self.name}.tmp"
        with writing(folder / self.name):
            self._writer = pq.ParquetWriter(self._tmp, arrow_schema, compression="zstd")
        self.n_tokens = 0

    def write(self, ids: list[Any], block: RowBlock) -> None:
        """Append rows: their ids, and their vectors, receipts and keys."""
        import pyarrow as pa

        dim = block.vectors.shape[1]
        values = pa.array(np.ascontiguousarray(block.vectors, dtype=np.float32).reshape(-1), type=pa.float32())
        columns = [
            pa.array(ids, type=self._schema.field("id").type),
            pa.FixedSizeListArray.from_arrays(values, dim),
            *(pa.array(block.facts[name], type=self._schema.field(name).type) for name in FACT_NAMES),
            pa.array(block.fusion, type=pa.string()),
        ]
        if "chunks" in self._schema.names:
            columns.append(
                pa.array(
                    [[{"start": a, "end": b} for a, b in s] if s else None for s in block.spans],
                    type=self._schema.field("chunks").type,
                )
            )
        keys = pa.py_buffer(np.ascontiguousarray(block.keys, dtype=np.uint8).tobytes())
        columns.append(pa.FixedSizeBinaryArray.from_buffers(pa.binary(KEY_BYTES), len(block), [None, keys]))
        with writing(self.folder / self.name):
            self._writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self._schema))
        self.n_tokens += int(block.facts["n_tokens"].sum())

    def commit(self, *, start: int, stop: int, source_sha256: str) -> ShardRecord:
        """Close, flush to disk and rename the shard; returns its manifest record."""
        with writing(self.folder / self.name):
            self._writer.close()
            fsync_file(self._tmp)
            sha = file_sha256(self._tmp)
            size = self._tmp.stat().st_size
            os.replace(self._tmp, self.folder / self.name)
        fsync_dir(self.folder)
        return ShardRecord(self.index, self.name, start, stop, size, sha, source_sha256, self.n_tokens)

    def abort(self) -> None:
        """Drop the unfinished shard (its temporary file); a second failure to close it is not reported."""
        try:
            self._writer.close()
        except OSError:  # the disk is still full: the error that brought us here is the one to report
            pass
        finally:
            self._tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------- manifest


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigurationError(
            f"{path} is unreadable ({error}); pass resume=False (--no-resume) to start over in that folder."
        ) from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigurationError(f"{path} is not a qwen-embed corpus manifest; use another output folder.")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise ConfigurationError(
            f"{path} has format version {manifest.get('format_version')}; this qwen-embed reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. Pass resume=False (--no-resume) to embed the corpus again."
        )
    return manifest


def shard_records(manifest: Mapping[str, Any]) -> list[ShardRecord]:
    return [ShardRecord(**entry) for entry in manifest.get("shards", [])]


def write_manifest(folder: Path, manifest: Mapping[str, Any], shards: list[ShardRecord]) -> None:
    """Write the manifest atomically (temporary file, fsync, rename)."""
    body = {**manifest, "shards": [asdict(s) for s in sorted(shards, key=lambda s: s.index)]}
    body["rows_done"] = sum(s.rows for s in shards)
    write_atomic(folder / MANIFEST, json.dumps(body, indent=1).encode("utf-8"))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file: a failure (a :class:`CorpusWriteError`) leaves the old file."""
    tmp = path.with_name(f".{path.name}.tmp")  # one writer per folder; the mode follows the umask
    try:
        with writing(path):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def our_files(folder: Path) -> Iterator[Path]:
    """Shards, temporary files and the manifest this module writes (nothing else is touched)."""
    for path in folder.iterdir():
        name = path.name
        if (
            _SHARD.fullmatch(name)
            or name == MANIFEST
            or (name.startswith((".part-", f".{MANIFEST}.")) and name.endswith(".tmp"))
        ):
            yield path


def remove_temporary(folder: Path) -> None:
    for path in our_files(folder):
        if path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)


def remove_job_files(folder: Path) -> None:
    """Remove every file of a job that finished nothing (shards, temporary files, the manifest)."""
    for path in our_files(folder):
        path.unlink(missing_ok=True)


def remove_stale_shards(folder: Path, keep: set[str]) -> None:
    for path in our_files(folder):
        if _SHARD.fullmatch(path.name) and path.name not in keep:
            logger.info("removing %s: not part of this run's output", path.name)
            path.unlink(missing_ok=True)


def export_npy(folder: Path, path: Path, shards: list[ShardRecord], dim: int) -> None:
    """Copy the embeddings into one ``(rows, dim)`` float32 matrix, shard by shard (bounded memory).

    The matrix is written under a temporary name, its space reserved first where the system
    allows (a full disk is then an error up front, not a crash while writing the memory map).

    Raises:
        CorpusWriteError: The matrix could not be written (the dataset itself is complete).
    """
    import pyarrow.parquet as pq

    rows = sum(s.rows for s in shards)
    tmp = path.with_name(f".{path.name}.tmp")
    kept = f"The Parquet dataset in {folder} is complete; make room, then run the same job again to export it."
    try:
        with writing(path, kept=kept):
            matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, dim))
            _reserve(tmp)
            at = 0
            for shard in shards:
                for batch in pq.ParquetFile(folder / shard.file).iter_batches(columns=["embedding"]):
                    values = batch.column(0).values.to_numpy(zero_copy_only=False).reshape(-1, dim)
                    matrix[at : at + len(values)] = values
                    at += len(values)
            if at != rows:
                raise CorpusSourceError(f"{folder}: the shards hold {at} rows, the manifest says {rows}")
            matrix.flush()
            del matrix
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("wrote %s: %d x %d float32", path, rows, dim)


def _reserve(path: Path) -> None:
    """Allocate a (sparse) file's blocks now, where the system can (``posix_fallocate``)."""
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is None:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        allocate(fd, 0, os.fstat(fd).st_size)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        # EINVAL/EOPNOTSUPP: the file system cannot reserve space; write as before
    finally:
        os.close(fd)
