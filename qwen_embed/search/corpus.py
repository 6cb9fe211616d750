"""``index_corpus``: build or update the search index of a corpus job's output folder.

The index lives in the folder's ``_index/`` (readers of the Parquet dataset skip it). A second
run reads only the shards whose SHA-256 changed since the index recorded them, replaces the
rows whose vector (or text) changed, adds the new ids and deletes the ids no longer in the
corpus, in one commit: an edit of 1% of the corpus rewrites about 1% of the index.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..corpus import store
from ..errors import QwenEmbedError
from .errors import IndexSourceError
from .index import CORPUS_INDEX, INDEX_FILE, SearchIndex, UpdateResult
from .options import IndexOptions
from .recipe import EmbeddingRecipe

__all__ = ["CorpusIndexResult", "index_corpus"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusIndexResult:
    """What :func:`index_corpus` did.

    Attributes:
        index: The index folder (``<corpus>/_index``).
        update: The commit's counts (added, replaced, unchanged, deleted, ...).
        shards_read: Shards whose vectors were read (new or changed since the last run).
        shards_skipped: Shards unchanged since the last run (only their ids were read).
        texts: Whether the index keeps the texts (read from the corpus source).
    """

    index: Path
    update: UpdateResult
    shards_read: int
    shards_skipped: int
    texts: bool


def index_corpus(
    folder: str | os.PathLike[str],
    *,
    options: IndexOptions | None = None,
    texts: bool = True,
    source: str | os.PathLike[str] | None = None,
    source_format: str | None = None,
    query_task: str | None = None,
    query_instruction: str | None = None,
    rebuild: bool = False,
) -> CorpusIndexResult:
    """Build, or bring up to date, the index of a corpus folder written by :func:`~qwen_embed.corpus.embed_corpus`.

    Args:
        folder: The corpus job's output folder (Parquet shards and ``_manifest.json``).
        options: How the index stores and searches vectors (default: float32); a different
            choice than the existing index's needs ``rebuild=True``.
        texts: Keep each row's text (for results and reranking), read from the corpus source.
        source: The corpus source, when it is no longer where the job read it.
        source_format: The source's format, when its suffix does not say.
        query_task, query_instruction: How queries are to be embedded (default: the query side
            of the documents' task, see :func:`~qwen_embed.search.default_query_side`).
        rebuild: Build the index anew (other options or settings); the old one answers until
            the new one is committed.

    Raises:
        IndexSourceError: No finished corpus job in ``folder``, a source that changed since the
            job read it, or an index made with other settings (the message lists them).
    """
    store.require_pyarrow("index_corpus")
    root = Path(os.path.expanduser(os.fspath(folder)))
    manifest = store.read_manifest(root) if root.is_dir() else None
    if manifest is None:
        raise IndexSourceError(
            f"{root} holds no corpus job ({store.MANIFEST}); run `qwen-embed embed -f FILE -o {root}`"
        )
    if not manifest.get("complete"):
        raise IndexSourceError(
            f"the corpus job in {root} has not finished ({manifest.get('rows_done', 0)} rows so far); run it again "
            "to finish it, then index"
        )
    recipe = EmbeddingRecipe.from_corpus_manifest(manifest, query_task=query_task, query_instruction=query_instruction)
    path = root / CORPUS_INDEX
    index = _open_or_create(path, recipe, options, rebuild, query_task, query_instruction)
    try:
        return _sync(root, manifest, index, texts=texts, source=source, source_format=source_format)
    finally:
        index.close()


def _open_or_create(
    path: Path,
    recipe: EmbeddingRecipe,
    options: IndexOptions | None,
    rebuild: bool,
    query_task: str | None,
    query_instruction: str | None,
) -> SearchIndex:
    if rebuild or not (path / INDEX_FILE).exists():
        return SearchIndex.create(path, recipe.dim, options=options, recipe=recipe, overwrite=rebuild)
    index = SearchIndex.open(path)
    problems = ["the index records no recipe"] if index.recipe is None else index.recipe.vector_differences(recipe)
    if options is not None and options != index.options:
        problems.append(f"options: {index.options} then, {options} now")
    if index.recipe is not None and (query_task, query_instruction) != (None, None):
        if (recipe.query_task, recipe.query_instruction) != (index.recipe.query_task, index.recipe.query_instruction):
            problems.append(
                f"query side: task {index.recipe.query_task!r} / instruction {index.recipe.query_instruction!r} "
                f"then, {recipe.query_task!r} / {recipe.query_instruction!r} now"
            )
    if problems:
        index.close()
        raise IndexSourceError(
            f"{path} was built from other vectors or with other options: "
            + "; ".join(problems)
            + ". Build it anew with rebuild=True (qwen-embed index DIR --rebuild)."
        )
    return index


def _sync(
    root: Path,
    manifest: dict[str, Any],
    index: SearchIndex,
    *,
    texts: bool,
    source: str | os.PathLike[str] | None,
    source_format: str | None,
) -> CorpusIndexResult:
    import pyarrow.parquet as pq

    shards = store.shard_records(manifest)
    dim = index.dim
    before = (index.manifest.get("corpus") or {}).get("shards") or {}
    had_texts = bool((index.manifest.get("corpus") or {}).get("texts"))
    if index.generation and texts != had_texts:  # a change of mind re-reads every shard
        before = {}
    changed = [s for s in shards if before.get(s.file) != s.sha256]
    all_ids: list[str] = []
    upsert_ids: list[str] = []
    # The vectors to add go to a memory-mapped file beside the index, not into memory.
    staging = index.path / f".staging-{os.getpid()}.npy.tmp"
    vectors = np.lib.format.open_memmap(staging, mode="w+", dtype=np.float32,
                                        shape=(sum(s.rows for s in changed), dim))  # fmt: skip
    try:
        for shard in shards:
            path = root / shard.file
            try:
                if shard in changed:
                    table = pq.read_table(path, columns=["id", "embedding"])
                    ids = [str(v) for v in table.column("id").to_pylist()]
                    values = table.column("embedding").combine_chunks().values.to_numpy(zero_copy_only=False)
                    if len(values) != len(ids) * dim or len(upsert_ids) + len(ids) > len(vectors):
                        raise IndexSourceError(f"{path} does not hold {shard.rows} vectors of width {dim}")
                    vectors[len(upsert_ids) : len(upsert_ids) + len(ids)] = values.reshape(-1, dim)
                    upsert_ids.extend(ids)
                else:
                    ids = [str(v) for v in pq.read_table(path, columns=["id"]).column("id").to_pylist()]
            except (OSError, ValueError) as error:
                raise IndexSourceError(f"{path} is unreadable ({error}); run the corpus job again") from error
            if len(ids) != shard.rows:
                raise IndexSourceError(f"{path} holds {len(ids)} rows, the manifest says {shard.rows}")
            all_ids.extend(ids)
        return _commit(root, manifest, index, shards, changed, all_ids, upsert_ids, vectors, texts=texts,
                       source=source, source_format=source_format)  # fmt: skip
    finally:
        del vectors
        staging.unlink(missing_ok=True)


def _commit(
    root: Path,
    manifest: dict[str, Any],
    index: SearchIndex,
    shards: list[store.ShardRecord],
    changed: list[store.ShardRecord],
    all_ids: list[str],
    upsert_ids: list[str],
    vectors: np.ndarray,
    *,
    texts: bool,
    source: str | os.PathLike[str] | None,
    source_format: str | None,
) -> CorpusIndexResult:
    row_texts = _texts(manifest, root, shards, changed, len(upsert_ids), source, source_format) if texts else None
    present = set(all_ids)
    gone = [i for i in index.ids() if i not in present]
    corpus = {"folder": str(root), "source": manifest.get("source"), "texts": texts,
              "shards": {s.file: s.sha256 for s in shards}}  # fmt: skip
    logger.info("%s: %d of %d shards to read, %d ids gone", root, len(changed), len(shards), len(gone))
    result = index.update(upsert_ids, vectors, texts=row_texts, delete=gone, skip_unchanged=True, corpus=corpus)
    return CorpusIndexResult(index.path, result, len(changed), len(shards) - len(changed), texts)


def _texts(
    manifest: dict[str, Any],
    root: Path,
    shards: list[store.ShardRecord],
    changed: list[store.ShardRecord],
    expected: int,
    source: str | os.PathLike[str] | None,
    source_format: str | None,
) -> list[str | None]:
    """The texts of the changed shards' rows, read from the source and checked against the job's record."""
    from ..corpus.sources import open_source

    settings = manifest.get("settings") or {}
    where = source if source is not None else manifest.get("source")
    if where is None or str(where).startswith("<"):
        raise IndexSourceError(
            f"the corpus in {root} was read from {where or 'an unnamed source'}, so its texts cannot be read again; "
            "pass the source file (--source FILE) or index without texts (--no-text)"
        )
    try:
        corpus = open_source(where, text_field=settings.get("text_field", "text"), id_field=settings.get("id_field"),
                             format=source_format)  # fmt: skip
    except QwenEmbedError as error:
        raise IndexSourceError(
            f"cannot read the corpus source {where} for the texts ({error}); pass --source FILE, or --no-text"
        ) from error
    wanted = {s.index: s for s in changed}
    out: list[str | None] = []
    rows = corpus.rows()
    for shard in shards:
        block = _take(rows, shard.rows)
        if shard.index not in wanted:
            continue
        if len(block) != shard.rows or _digest(block) != shard.source_sha256:
            raise IndexSourceError(
                f"the source {where} changed since the corpus job embedded its rows {shard.start}-{shard.stop - 1}; "
                "run the corpus job again (it embeds only what changed), then index"
            )
        out.extend(text for _, text in block)
    if len(out) != expected:  # pragma: no cover - the digests above make this unreachable
        raise IndexSourceError(f"the source gave {len(out)} texts for {expected} rows")
    return out


def _take(rows: Iterator[tuple[str | None, str]], n: int) -> list[tuple[str | None, str]]:
    block = []
    for row in rows:
        block.append(row)
        if len(block) == n:
            break
    return block


def _digest(rows: list[tuple[str | None, str]]) -> str:
    """The corpus job's ``source_sha256`` of a shard's rows (ids and texts), computed the same way."""
    digest = hashlib.sha256()
    for record_id, text in rows:
        digest.update(f"{record_id}\x1f{text}\x1e".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()
