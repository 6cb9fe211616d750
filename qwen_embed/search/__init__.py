"""Search: a persistent vector index on disk, and a retriever that embeds, searches and reranks.

>>> from qwen_embed.search import Retriever
>>> retriever = Retriever(embedder, "vectors/")        # a corpus folder indexed by `qwen-embed index`  # doctest: +SKIP
>>> retriever.search("What is GGUF?", k=5)                                                         # doctest: +SKIP

Needs usearch (``pip install "qwen-embed[search]"``); importing this package does not import it.
"""

from .corpus import CorpusIndexResult, index_corpus
from .errors import EmbedderMismatchError, IndexFormatError, IndexNotFoundError, IndexSourceError, SearchIndexError
from .index import CORPUS_INDEX, Hit, SearchIndex, UpdateResult, resolve_index_path
from .options import INDEX_PRECISIONS, RESCORE_MODES, IndexOptions
from .recipe import EmbeddingRecipe, default_query_side
from .retriever import Retriever

__all__ = [
    "CORPUS_INDEX",
    "INDEX_PRECISIONS",
    "RESCORE_MODES",
    "CorpusIndexResult",
    "EmbedderMismatchError",
    "EmbeddingRecipe",
    "Hit",
    "IndexFormatError",
    "IndexNotFoundError",
    "IndexOptions",
    "IndexSourceError",
    "Retriever",
    "SearchIndex",
    "SearchIndexError",
    "UpdateResult",
    "default_query_side",
    "index_corpus",
    "resolve_index_path",
]
