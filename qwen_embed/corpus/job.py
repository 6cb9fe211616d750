"""``embed_corpus``: embed a corpus of any size into a Parquet dataset, resumably.

The source is streamed a window of ``chunk_size`` rows at a time; each window is embedded
(sorted by length into packed decodes, as :meth:`~qwen_embed.Embedder.encode` does) and
appended to the current shard of ``shard_rows`` rows. A finished shard is renamed into place
and recorded in the manifest, so a killed run loses at most the shard in flight, and running
the same call again embeds exactly the rows that are missing.

A shard whose source rows are unchanged is kept as it is; any other row is looked up by the
SHA-256 of its text in the rows earlier runs embedded into the same folder (:mod:`.cache`), so an
edited, grown, shrunk or re-sorted source costs the embedding of its new or changed texts only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._pipeline import in_notebook, positive_int
from .._version import __version__
from ..calls import EncodeCall
from ..errors import ConfigurationError, InputTooLongError
from ..hub.catalog import DEFAULT_MODEL
from ..text.long_text import get_policy
from . import store
from .cache import RowCache, remove_cache
from .errors import ResumeMismatchError
from .rows import RowBlock, text_keys
from .sources import Row, Source, open_source

if TYPE_CHECKING:
    from ..embedder import Embedder

__all__ = ["CorpusResult", "embed_corpus"]

logger = logging.getLogger(__name__)

#: Settings that change a vector beyond the packing tolerance: with the model file's SHA-256, the
#: row cache's key (besides each text's SHA-256). The device (CPU or a GPU offload) is not among
#: them: see docs/guides/corpus-jobs.md.
VECTOR_SETTINGS = (
    "quant", "engine", "dtype", "pooling", "max_length", "dim", "normalize", "prompt", "long_text", "chunking",
    "precision",
)  # fmt: skip
#: Settings a resumed run must match (the fields, shard size and ``deterministic`` may change).
_COMPARED = (*VECTOR_SETTINGS, "side", "task", "instruction")


@dataclass(frozen=True)
class CorpusResult:
    """What :func:`embed_corpus` did.

    Attributes:
        output: The output folder (a Parquet dataset plus ``_manifest.json``).
        rows: Rows in the dataset.
        shards: Parquet files in the dataset.
        embedded_rows: Texts embedded by this run (a text repeated in one window counts once).
        reused_rows: Rows whose vector this run did not embed: ``rows - embedded_rows`` (kept
            shards, rows found in the cache, repeats).
        n_tokens: Tokens decoded by this run (prompt and EOS included; each chunk counted).
        seconds: Wall time of this run.
        dim: Length of each vector.
        npy: The ``.npy`` matrix written, if one was asked for.
        cached_rows: Rows of rewritten shards whose vector was found by their text's SHA-256
            (from an earlier run, or a repeat of a text in the same window).
    """

    output: Path
    rows: int
    shards: int
    embedded_rows: int
    reused_rows: int
    n_tokens: int
    seconds: float
    dim: int
    npy: Path | None = None
    cached_rows: int = 0


def embed_corpus(
    source: str | os.PathLike[str] | Iterable[str | Mapping[str, Any]],
    output: str | os.PathLike[str],
    *,
    embedder: Embedder | None = None,
    model: str | os.PathLike[str] | None = None,
    quant: str | None = None,
    embedder_options: Mapping[str, Any] | None = None,
    text_field: str = "text",
    id_field: str | None = None,
    source_format: str | None = None,
    side: str = "document",
    task: str | None = None,
    instruction: str | None = None,
    dim: int | None = None,
    normalize: bool | None = None,
    long_text: str | None = None,
    resume: bool = True,
    shard_rows: int = 10_000,
    chunk_size: int = 1_024,
    npy: str | os.PathLike[str] | None = None,
    show_progress: bool | None = None,
    allow_duplicate_ids: bool = False,
    deterministic: bool | None = None,
) -> CorpusResult:
    """Embed every text of a corpus into a Parquet dataset; a second call resumes where the first stopped.

    >>> embed_corpus("passages.jsonl", "vectors/", model="0.6B", id_field="doc_id")   # doctest: +SKIP
    >>> pyarrow.parquet.read_table("vectors/")                                         # doctest: +SKIP

    Each shard ``part-NNNNNN.parquet`` holds ``id`` (the ``id_field`` as a string, else the
    0-based row number), ``embedding`` (fixed-size list of float32), the row's receipt
    (:class:`~qwen_embed.Receipt`, counted while it was embedded): ``n_tokens`` (tokens the model
    sees for the row, prompt and EOS included, before any truncation or chunking),
    ``tokens_used``, ``truncated``, ``dropped_tokens``, ``n_chunks``, ``fusion``, and, with
    ``long_text="chunk"``, ``chunks`` (the character spans of a chunked text; null for a text
    embedded whole); and ``text_sha256``. Rows keep the source's order. ``_manifest.json``
    records the settings, the model file's SHA-256 and every shard's row range, size and SHA-256.

    A later run into the same folder keeps the shards whose source rows are unchanged and finds
    every other row's vector by the SHA-256 of its text among the rows the folder holds, so it
    embeds only new or changed texts (moved, re-sorted or renamed rows are not embedded again;
    deleted rows leave the output).

    Args:
        source: A ``.txt`` (one text per line), ``.jsonl``, ``.csv``/``.tsv`` or ``.parquet``
            file (or a folder of Parquet files), ``"-"`` for stdin, or an iterable of ``str``
            or dicts.
        output: The output folder (created if needed).
        embedder: An open :class:`~qwen_embed.Embedder` to use (not closed here); or:
        model, quant, embedder_options: What to load instead (a ``.gguf`` path, catalog
            name or repo id; options of :class:`~qwen_embed.Embedder` and of
            ``from_pretrained``). Default: the catalog's default model.
        text_field: Field with the text (JSON key, CSV or Parquet column, dict key).
        id_field: Field with each row's id; ``None`` numbers the rows.
        source_format: ``"txt"``, ``"jsonl"``, ``"csv"``, ``"tsv"`` or ``"parquet"``; default: by suffix.
        side: ``"document"`` (as :meth:`~qwen_embed.Embedder.encode_documents`) or ``"query"``.
        task: A prompt name for that side (default: ``"document"`` or ``"query"``).
        instruction: An instruction in the official query format instead of the task.
        dim, normalize, long_text: As in :meth:`~qwen_embed.Embedder.encode`
            (default: the embedder's). ``long_text="chunk"`` embeds long texts with
            :meth:`~qwen_embed.Embedder.encode_long` and records their chunk spans.
        resume: Keep the shards an earlier run with the same settings finished (each is
            checked: size, SHA-256, row count, and the source rows it came from). ``False``
            starts over, deleting this job's files in ``output``.
        shard_rows: Rows per Parquet file (a crash loses at most one shard's work).
        chunk_size: Rows embedded together (memory: one window of texts and vectors).
        npy: Also write the vectors as one float32 ``.npy`` matrix here, in row order.
        show_progress: A progress bar (rows/s, tokens/s, ETA); default: only in a notebook.
        allow_duplicate_ids: Keep rows whose ``id_field`` repeats an earlier row's. By default
            a repeated id stops the job (remembering the ids costs about 16 bytes a row).
        deterministic: Embed each text alone, so that its vector is bit-identical whatever
            batch it would be packed with (slower; default: the embedder's setting). Vectors
            reused from the folder are then exactly what a fresh run gives: a folder not made
            with ``deterministic=True`` is embedded again. Without it, a reused vector is within
            the packing tolerance (about 1e-4 per component on llama.cpp) of a fresh one.

    Raises:
        ResumeMismatchError: ``output`` holds a job with other settings or another model.
        CorpusSourceError: The source cannot be read (the message names the line or row).
        DuplicateIdError: Two rows have the same id (the message names it and both rows).
        CorpusWriteError: The output cannot be written (disk full, ...); finished shards are kept.
        InputTooLongError: A text is over ``max_length`` under ``long_text="error"``.

    A run that fails before finishing a shard of a new folder leaves no manifest behind.
    """
    store.require_pyarrow("embed_corpus")
    if side not in ("document", "query"):
        raise ConfigurationError(f"side={side!r} is not one of 'document', 'query'.")
    shard_rows = positive_int("shard_rows", shard_rows)
    chunk_size = positive_int("chunk_size", chunk_size)
    corpus = open_source(
        source, text_field=text_field, id_field=id_field, format=source_format, unique_ids=not allow_duplicate_ids
    )
    folder = store.prepare_output_folder(output)
    npy_path = store.check_npy_path(npy) if npy is not None else None
    if embedder is not None and (model is not None or embedder_options):
        raise ConfigurationError("give either embedder= or model=/embedder_options=, not both")
    owned = embedder is None
    emb = embedder if embedder is not None else _load(model, quant, embedder_options)
    try:
        job = _Job(emb, corpus, folder, side=side, task=task, instruction=instruction, dim=dim,
                   normalize=normalize, long_text=long_text, shard_rows=shard_rows, chunk_size=chunk_size,
                   deterministic=deterministic)  # fmt: skip
        result = job.run(resume=resume, show_progress=show_progress)
        if npy_path is not None:
            store.export_npy(folder, npy_path, job.shards, result.dim)
            result = dataclasses.replace(result, npy=npy_path)
        return result
    finally:
        if owned:
            emb.close()


@dataclass
class _Start:
    """What :meth:`_Job._prepare` found in the folder."""

    reuse: dict[int, store.ShardRecord]  # intact shards of the same schema: kept when their source rows are the same
    previous: dict[int, store.ShardRecord]  # every intact shard of the earlier run
    header: dict[str, Any]
    fresh: bool  # the folder held no job, or one that finished no shard
    cache: RowCache


class _Job:
    def __init__(
        self,
        emb: Embedder,
        corpus: Source,
        folder: Path,
        *,
        side: str,
        task: str | None,
        instruction: str | None,
        dim: int | None,
        normalize: bool | None,
        long_text: str | None,
        shard_rows: int,
        chunk_size: int,
        deterministic: bool | None = None,
    ) -> None:
        self.emb, self.corpus, self.folder = emb, corpus, folder
        self.shard_rows, self.chunk_size = shard_rows, chunk_size
        self.policy = get_policy(long_text if long_text is not None else emb.long_text).name
        self.dim = int(emb.encode([], dim=dim).shape[1])  # checks dim against the model
        self.normalize = emb.normalize if normalize is None else bool(normalize)
        self.call = EncodeCall(
            side="document" if side == "document" else "query", task=task, instruction=instruction,
            dim=self.dim, normalize=self.normalize, long_text=self.policy, show_progress=False,
            deterministic=deterministic,
        )  # fmt: skip
        self.deterministic = emb.deterministic if self.call.deterministic is None else self.call.deterministic
        # The exact text before and after each row: recorded in the manifest.
        self.before, self.after = emb.prompt_parts(self.call)
        chunking = emb.chunking
        self.settings: dict[str, Any] = {
            "quant": emb.quantization, "engine": emb.backend, "dtype": emb.compute_dtype,
            "pooling": emb.pooling, "max_length": emb.max_length, "dim": self.dim, "normalize": self.normalize,
            "side": side, "task": task, "instruction": instruction, "prompt": [self.before, self.after],
            "long_text": self.policy,
            "chunking": dataclasses.asdict(chunking) if self.policy == "chunk" and chunking is not None else None,
            "precision": "float32", "deterministic": self.deterministic,
            "text_field": corpus.text_field, "id_field": corpus.id_field, "shard_rows": shard_rows,
        }  # fmt: skip
        self.schema = store.schema(self.dim, spans=self.policy == "chunk", string_ids=corpus.id_field is not None)
        self.shards: list[store.ShardRecord] = []
        self.embedded = self.cached = self.tokens = 0
        self.inherited_deterministic = False  # whether every vector this run may reuse was made deterministically

    # ------------------------------------------------------------------ the run

    def run(self, *, resume: bool, show_progress: bool | None) -> CorpusResult:
        started = time.perf_counter()
        start = self._prepare(resume)
        reuse, header, cache = start.reuse, start.header, start.cache
        kept: dict[int, store.ShardRecord] = {}
        show = in_notebook() if show_progress is None else show_progress
        bar = _bar(self.corpus, initial=sum(r.rows for r in reuse.values())) if show else None
        rows = self.corpus.rows()
        try:
            for index in itertools.count():
                first_row = index * self.shard_rows
                windows = self._windows_to_embed(rows, index, first_row, reuse.get(index))
                if windows is None:  # an intact shard from an earlier run, for the same source rows
                    kept[index] = reuse[index]
                    continue
                first = next(windows, None)
                if first is None:
                    break
                before = (self.embedded, self.cached)
                record = self._write_shard(index, first_row, itertools.chain([first], windows), bar, started, cache)
                kept[index] = record
                self._mark_deterministic()
                store.write_manifest(self.folder, header, list(kept.values()) + _after(start.previous, index))
                seconds = time.perf_counter() - started
                logger.info(
                    "%s: rows %d-%d, %d embedded, %d found by text; this run: %d embedded, %.0f rows/s, %.0f tokens/s",
                    record.file, record.start, record.stop - 1, self.embedded - before[0], self.cached - before[1],
                    self.embedded, self.embedded / seconds, self.tokens / seconds,
                )  # fmt: skip
        except BaseException:
            if start.fresh and not kept:  # a new folder and nothing finished: leave no manifest to trip the next run
                store.remove_job_files(self.folder)
                remove_cache(self.folder)
            raise
        finally:
            if bar is not None:
                bar.close()
        self.shards = [kept[i] for i in sorted(kept)]
        self._mark_deterministic()
        store.write_manifest(self.folder, {**header, "complete": True}, self.shards)
        cache.clear()  # the shards now hold every entry the output references
        store.remove_stale_shards(self.folder, {s.file for s in self.shards})
        total = sum(s.rows for s in self.shards)
        logger.info("%s: %d rows in %d shards (%d embedded now, %d found by text, %d in kept shards)",
                    self.folder, total, len(self.shards), self.embedded, self.cached,
                    total - self.embedded - self.cached)  # fmt: skip
        return CorpusResult(self.folder, total, len(self.shards), self.embedded, total - self.embedded, self.tokens,
                            time.perf_counter() - started, self.dim, cached_rows=self.cached)  # fmt: skip

    def _mark_deterministic(self) -> None:
        """Record whether every vector in the folder was made with ``deterministic=True``."""
        self.settings["deterministic"] = self.deterministic or (self.inherited_deterministic and self.embedded == 0)

    def _prepare(self, resume: bool) -> _Start:
        """Check the folder against the manifest; find the reusable shards and open the row cache."""
        manifest = store.read_manifest(self.folder)
        known = manifest.get("model") if manifest and resume else None
        model = store.model_fingerprint(self.emb.model_path, known)
        previous: dict[int, store.ShardRecord] = {}
        discard = False  # an earlier job whose shards cannot be reused
        old_deterministic = False
        if manifest is None:
            if any(p.suffix == ".parquet" for p in store.our_files(self.folder)):
                raise ConfigurationError(
                    f"{self.folder} holds part-*.parquet files but no {store.MANIFEST}, so they were not written by "
                    "a run this folder can resume; choose an empty folder, or delete those files."
                )
        elif not resume:
            logger.info("resume=False: starting %s over", self.folder)
            discard = True
        elif not store.shard_records(manifest):
            logger.info("%s holds no finished shard: starting over", self.folder)
        elif manifest.get("format_version") != store.FORMAT_VERSION:
            logger.warning("%s was written by qwen-embed %s (format %s, without text hashes): embedding every "
                           "row again", self.folder, manifest.get("library_version"),
                           manifest.get("format_version"))  # fmt: skip
            discard = True
        else:
            _check_same(self.folder, manifest, self.settings, model)
            old_deterministic = bool((manifest.get("settings") or {}).get("deterministic"))
            if self.deterministic and not old_deterministic:
                logger.warning("%s was not embedded with deterministic=True: embedding every row again, so that "
                               "each vector is exactly what deterministic=True gives", self.folder)  # fmt: skip
                discard = True
            else:
                previous = self._intact(manifest)
        schemas = {i: store.shard_schema(self.folder, r) for i, r in previous.items()}
        reuse = {i: r for i, r in previous.items() if schemas[i].equals(self.schema)}
        if discard or manifest is None or manifest.get("complete"):
            remove_cache(self.folder)  # a finished job's shards hold every entry its output references
        key = {"model_sha256": model["sha256"], **{name: self.settings[name] for name in VECTOR_SETTINGS}}
        sources = [previous[i] for i in sorted(previous) if store.has_keys(schemas[i])]
        cache = RowCache.open(self.folder, key=key, dim=self.dim, shards=sources, deterministic=old_deterministic,
                              require_deterministic=self.deterministic)  # fmt: skip
        self.inherited_deterministic = cache.deterministic
        self._mark_deterministic()
        header = {
            "format": store.FORMAT, "format_version": store.FORMAT_VERSION, "library_version": __version__,
            "source": self.corpus.name, "settings": self.settings, "model": model, "complete": False,
        }  # fmt: skip
        store.remove_temporary(self.folder)
        store.write_manifest(self.folder, header, list(previous.values()))
        if discard:
            store.remove_stale_shards(self.folder, set())
        fresh = manifest is None or not store.shard_records(manifest)
        return _Start(reuse, previous, header, fresh, cache)

    def _intact(self, manifest: Mapping[str, Any]) -> dict[int, store.ShardRecord]:
        if manifest.get("library_version") != __version__:
            logger.warning("%s was started by qwen-embed %s; this is %s", self.folder,
                           manifest.get("library_version"), __version__)  # fmt: skip
        intact: dict[int, store.ShardRecord] = {}
        for record in store.shard_records(manifest):
            problem = record.problem(self.folder)
            if problem is None:
                intact[record.index] = record
            else:
                logger.warning("%s: %s; embedding its rows %d-%d again", record.file, problem,
                               record.start, record.stop - 1)  # fmt: skip
        return intact

    def _windows_to_embed(
        self, rows: Iterator[Row], index: int, start: int, candidate: store.ShardRecord | None
    ) -> Iterator[list[Row]] | None:
        """The windows of shard ``index`` to embed, or ``None`` when ``candidate`` holds exactly these rows."""
        if candidate is None:
            return _windows(rows, self.shard_rows, self.chunk_size)
        block = list(itertools.islice(rows, self.shard_rows))  # hashed before deciding: held for one shard
        if candidate.stop == start + len(block) and candidate.source_sha256 == _digest(block, hashlib.sha256()):
            return None
        if block:
            logger.info("%s: the source rows %d-%d changed since it was written; writing it again",
                        candidate.file, start, start + len(block) - 1)  # fmt: skip
        return _windows(iter(block), self.shard_rows, self.chunk_size)

    def _write_shard(
        self, index: int, start: int, windows: Iterable[list[Row]], bar: Any, started: float, cache: RowCache
    ) -> store.ShardRecord:
        writer = store.ShardWriter(self.folder, index, self.schema)
        digest = hashlib.sha256()
        row = start
        try:
            for window in windows:
                _digest(window, digest)
                block = self._rows(window, row, cache)
                ids: list[Any] = [i for i, _ in window] if self.corpus.id_field else list(range(row, row + len(window)))
                writer.write(ids, block)
                row += len(window)
                if bar is not None:
                    bar.update(len(window))
                    rate = self.tokens / max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
            cache.preserve(writer.name)  # the earlier shard of that name is replaced next: keep its rows findable
        except BaseException:
            writer.abort()
            raise
        return writer.commit(start=start, stop=row, source_sha256=digest.hexdigest())

    def _too_long(self, window: list[Row], first_row: int, row: int, n: int) -> InputTooLongError:
        limit = self.emb.max_length
        return InputTooLongError(
            f"{self.corpus.name}: row {row}{_id_note(window[row - first_row][0])} is {n:,} tokens (prompt and "
            f"EOS included), over max_length={limit:,}; pass long_text='truncate' or 'chunk' "
            "(--long-text), or raise max_length.",
            index=row,
            n_tokens=n,
            limit=limit,
        )

    def _rows(self, window: list[Row], first_row: int, cache: RowCache) -> RowBlock:
        """Vectors, receipts and keys of one window of rows: found by text, else embedded (one encode call)."""
        texts = [text for _, text in window]
        keys = text_keys(texts)
        positions = cache.lookup(keys)
        hit = np.flatnonzero(positions >= 0)
        found = cache.fetch(positions[hit])
        same = (found.keys == keys[hit]).all(axis=1)  # a 64-bit prefix shared by two texts: embed this one
        hit, found = hit[same], found.take(np.flatnonzero(same))
        missing = np.setdiff1d(np.arange(len(window)), hit)
        slots: dict[bytes, int] = {}
        slot = np.array([slots.setdefault(keys[i].tobytes(), len(slots)) for i in missing.tolist()], dtype=np.int64)
        unique = missing[np.unique(slot, return_index=True)[1]] if len(missing) else missing  # first of each text
        embedded = self._embed(window, first_row, unique, keys)
        where = np.empty(len(window), np.int64)
        where[hit] = np.arange(len(hit))
        where[missing] = len(hit) + slot
        self.embedded += len(unique)
        self.cached += len(window) - len(unique)
        return RowBlock.concat([found, embedded], self.dim).take(where)

    def _embed(self, window: list[Row], first_row: int, rows: np.ndarray, keys: np.ndarray) -> RowBlock:
        """Embed the window's rows at ``rows`` (positions in the window): one :meth:`~qwen_embed.Embedder.run`."""
        if not len(rows):
            return RowBlock.empty(self.dim)
        whole = len(rows) == len(window)  # rows is sorted and unique: the window as it is
        texts = [window[i][1] for i in rows.tolist()]
        try:
            result = self.emb.run(texts, self.call, first_index=first_row if whole else 0)
        except InputTooLongError as error:
            at = 0 if error.index is None else error.index - (first_row if whole else 0)
            raise self._too_long(window, first_row, first_row + int(rows[at]), error.n_tokens) from None
        self.tokens += sum(r.tokens_used for r in result.receipts)
        return RowBlock.from_result(keys[rows], result)


# ---------------------------------------------------------------------- helpers


def _windows(rows: Iterator[Row], limit: int, size: int) -> Iterator[list[Row]]:
    taken = 0
    while taken < limit:
        window = list(itertools.islice(rows, min(size, limit - taken)))
        if not window:
            return
        taken += len(window)
        yield window


def _digest(rows: list[Row], digest: Any) -> str:
    for record_id, text in rows:
        digest.update(f"{record_id}\x1f{text}\x1e".encode("utf-8", "surrogatepass"))
    return str(digest.hexdigest())


def _after(previous: dict[int, store.ShardRecord], index: int) -> list[store.ShardRecord]:
    """Earlier shards past ``index``: still recorded, so a crash now does not forget them (nor their rows)."""
    return [r for i, r in previous.items() if i > index]


def _id_note(record_id: str | None) -> str:
    return "" if record_id is None else f" (id {record_id!r})"


def _check_same(
    folder: Path, manifest: Mapping[str, Any], settings: Mapping[str, Any], model: Mapping[str, Any]
) -> None:
    old_model = manifest.get("model") or {}
    problems = []
    if old_model.get("sha256") != model["sha256"]:
        problems.append(
            f"model: {old_model.get('file')} (sha256 {str(old_model.get('sha256'))[:12]}...) then, "
            f"{model['file']} (sha256 {model['sha256'][:12]}...) now"
        )
    old = manifest.get("settings") or {}
    for key in _COMPARED:
        if _jsonish(old.get(key)) != _jsonish(settings.get(key)):
            problems.append(f"{key}: {old.get(key)!r} then, {settings.get(key)!r} now")
    if problems:
        raise ResumeMismatchError(
            f"{folder} was written with other settings, so resuming would mix two kinds of vectors: "
            + "; ".join(problems)
            + ". Use the same settings, another output folder, or resume=False (--no-resume) to start over."
        )


def _jsonish(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value))


def _load(model: str | os.PathLike[str] | None, quant: str | None, options: Mapping[str, Any] | None) -> Embedder:
    from ..embedder import Embedder

    if options is not None and not isinstance(options, Mapping):
        raise ConfigurationError(f"embedder_options must be a dict, not {type(options).__name__}")
    return Embedder.from_pretrained(os.fspath(model) if model is not None else DEFAULT_MODEL, quant=quant,
                                    **dict(options or {}))  # fmt: skip


def _bar(corpus: Source, *, initial: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=corpus.count(), initial=initial, unit="row", desc="Embedding corpus", dynamic_ncols=True)
