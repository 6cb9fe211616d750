"""The output folder of a corpus job: Parquet shards, a manifest, and their integrity checks.

Layout (readable as one table by pyarrow, pandas, DuckDB, Ray and Spark, which skip names
starting with ``_`` or ``.``)::

    vectors/
      _manifest.json          what is done: settings, model file hash, one entry per shard
      part-000000.parquet     id, embedding (fixed-size list of float32), n_tokens[, chunks]
      part-000001.parquet
      .part-000002.parquet.tmp   the shard being written (renamed when complete)

Every file is written under a temporary name, flushed to disk and renamed, so a crash at any
moment leaves either the old file or the new one. A shard is reused only if its size, its
SHA-256 and its row count match the manifest.
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

from ..errors import ConfigurationError
from .errors import CorpusSourceError, CorpusWriteError

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
FORMAT_VERSION = 1
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
    """The Arrow schema of every shard."""
    import pyarrow as pa

    fields = [
        pa.field("id", pa.string() if string_ids else pa.int64(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
    ]
    if spans:
        span = pa.struct([pa.field("start", pa.int64()), pa.field("end", pa.int64())])
        fields.append(pa.field("chunks", pa.list_(span)))  # null: the text was embedded whole
    return pa.schema(fields)


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

    def write(
        self, ids: list[Any], vectors: np.ndarray, n_tokens: list[int], spans: list[list[tuple[int, int]] | None] | None
    ) -> None:
        import pyarrow as pa

        dim = vectors.shape[1]
        values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
        columns = [
            pa.array(ids, type=self._schema.field("id").type),
            pa.FixedSizeListArray.from_arrays(values, dim),
            pa.array(n_tokens, type=pa.int32()),
        ]
        if spans is not None:
            columns.append(
                pa.array(
                    [None if s is None else [{"start": a, "end": b} for a, b in s] for s in spans],
                    type=self._schema.field("chunks").type,
                )
            )
        with writing(self.folder / self.name):
            self._writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self._schema))
        self.n_tokens += int(sum(n_tokens))

    def commit(self, *, start: int, stop: int, source_sha256: str) -> ShardRecord:
        """Close, flush to disk and rename the shard; returns its manifest record."""
        with writing(self.folder / self.name):
            self._writer.close()
            _fsync(self._tmp)
            sha = file_sha256(self._tmp)
            size = self._tmp.stat().st_size
            os.replace(self._tmp, self.folder / self.name)
        _fsync_dir(self.folder)
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
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ConfigurationError(
            f"{path} has format version {manifest.get('format_version')}; this qwen-embed writes version "
            f"{FORMAT_VERSION}. Pass resume=False (--no-resume) to embed the corpus again."
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
    _fsync_dir(path.parent)


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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        _fsync(folder)
    except OSError:  # not every file system lets a folder be synced
        pass
