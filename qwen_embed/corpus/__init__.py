"""Corpus jobs: embed a corpus of any size in bounded memory, into a resumable Parquet dataset.

>>> from qwen_embed.corpus import embed_corpus
>>> embed_corpus("passages.jsonl", "vectors/", model="0.6B", id_field="doc_id")   # doctest: +SKIP

Needs pyarrow for the output (``pip install "qwen-embed[corpus]"``); importing this package
does not import it.
"""

from .errors import (
    CorpusError,
    CorpusSourceError,
    CorpusWriteError,
    DuplicateIdError,
    ResumeMismatchError,
    SourceNotFoundError,
)
from .job import CorpusResult, embed_corpus
from .sources import FORMATS, Source, open_source, text_lines
from .store import check_npy_path, prepare_output_folder

__all__ = [
    "FORMATS",
    "CorpusError",
    "CorpusResult",
    "CorpusSourceError",
    "CorpusWriteError",
    "DuplicateIdError",
    "ResumeMismatchError",
    "Source",
    "SourceNotFoundError",
    "check_npy_path",
    "embed_corpus",
    "open_source",
    "prepare_output_folder",
    "text_lines",
]
