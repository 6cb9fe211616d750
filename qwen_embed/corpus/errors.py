"""Errors of corpus jobs (all under :class:`~qwen_embed.QwenEmbedError`)."""

from __future__ import annotations

from ..errors import QwenEmbedError

__all__ = [
    "CorpusError",
    "CorpusSourceError",
    "CorpusWriteError",
    "DuplicateIdError",
    "ResumeMismatchError",
    "SourceNotFoundError",
]


class CorpusError(QwenEmbedError):
    """Root of the errors a corpus job raises on purpose."""


class CorpusSourceError(CorpusError, ValueError):
    """The corpus cannot be read: unknown format, missing field, bad JSON, invalid UTF-8 (with the line)."""


class SourceNotFoundError(CorpusSourceError, FileNotFoundError):
    """The corpus file does not exist (or is a folder where a file was expected)."""


class ResumeMismatchError(CorpusError, ValueError):
    """The output folder was made with other settings or another model file; the message lists the differences."""


class DuplicateIdError(CorpusSourceError):
    """Two rows of the corpus have the same id (the message names it and both rows)."""


class CorpusWriteError(CorpusError, OSError):
    """The output could not be written (disk full, no permission, ...).

    The message names the file and the reason; the shards finished before it are kept, so the
    same job run again resumes where this one stopped. ``errno`` is the operating system's code.
    """
