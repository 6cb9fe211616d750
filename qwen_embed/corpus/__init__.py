"""Corpus jobs: embed a corpus of any size in bounded memory, into a resumable Parquet dataset.

>>> from qwen_embed.corpus import embed_corpus
>>> embed_corpus("passages.jsonl", "vectors/", model="0.6B", id_field="doc_id")   # doctest: +SKIP

Needs pyarrow for the output (``pip install "qwen-embed[corpus]"``); importing this package
does not import it.
"""

from .errors import CorpusError, CorpusSourceError, ResumeMismatchError, SourceNotFoundError
from .job import CorpusResult, embed_corpus
from .sources import FORMATS, Source, open_source

__all__ = [
    "FORMATS",
    "CorpusError",
    "CorpusResult",
    "CorpusSourceError",
    "ResumeMismatchError",
    "Source",
    "SourceNotFoundError",
    "embed_corpus",
    "open_source",
]
