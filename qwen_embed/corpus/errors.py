"""Errors of corpus jobs (all under :class:`~qwen_embed.QwenEmbedError`)."""

from __future__ import annotations

from ..errors import QwenEmbedError

__all__ = ["CorpusError", "CorpusSourceError", "ResumeMismatchError", "SourceNotFoundError"]


class CorpusError(QwenEmbedError):
    """Root of the errors a corpus job raises on purpose."""


class CorpusSourceError(CorpusError, ValueError):
    """The corpus cannot be read: unknown format, missing field, bad JSON, invalid UTF-8 (with the line)."""


class SourceNotFoundError(CorpusSourceError, FileNotFoundError):
    """The corpus file does not exist (or is a folder where a file was expected)."""


class ResumeMismatchError(CorpusError, ValueError):
    """The output folder was made with other settings or another model file; the message lists the differences."""
