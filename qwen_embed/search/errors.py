"""Errors of search indexes (all under :class:`~qwen_embed.QwenEmbedError`)."""

from __future__ import annotations

from ..errors import QwenEmbedError

__all__ = ["EmbedderMismatchError", "IndexFormatError", "IndexNotFoundError", "IndexSourceError", "SearchIndexError"]


class SearchIndexError(QwenEmbedError):
    """Root of the errors a search index raises on purpose."""


class IndexNotFoundError(SearchIndexError, FileNotFoundError):
    """No index at that path (nor in a corpus folder's ``_index``)."""


class IndexFormatError(SearchIndexError, ValueError):
    """The folder holds files this version cannot read (another format version, or damaged files)."""


class EmbedderMismatchError(SearchIndexError, ValueError):
    """The Embedder would embed queries unlike the index's documents; the message lists each difference."""


class IndexSourceError(SearchIndexError, ValueError):
    """A corpus folder cannot be indexed: unfinished job, changed source, or settings unlike the index's."""
