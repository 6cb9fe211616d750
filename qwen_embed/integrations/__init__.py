"""Adapters for the frameworks people build retrieval with.

One module per framework; each imports its framework only when you import the module,
and says which extra to install when the framework is missing:

- :mod:`qwen_embed.integrations.langchain`: ``QwenEmbeddings`` (``pip install "qwen-embed[langchain]"``)
- :mod:`qwen_embed.integrations.llama_index`: ``QwenEmbedding`` (``[llamaindex]``)
- :mod:`qwen_embed.integrations.haystack`: ``QwenTextEmbedder``, ``QwenDocumentEmbedder`` (``[haystack]``)
- :mod:`qwen_embed.integrations.chroma`: ``QwenEmbeddingFunction`` (``[chroma]``)
- :mod:`qwen_embed.integrations.mteb`: ``QwenEmbedEncoder`` (``[mteb]``)

Every adapter takes an existing :class:`~qwen_embed.Embedder` (``embedder=``) or the
options to build one (``model=``, ``quant=``, ``embedder_options=``). Models built from
options live in one process-wide cache, so a query-side and a document-side adapter of
the same model share one loaded copy; :func:`clear_cache` forgets them.

Importing this package imports no framework.
"""

from ._cache import cached_models, clear_cache, shared_embedder
from ._common import MissingExtraError

__all__ = ["MissingExtraError", "cached_models", "clear_cache", "shared_embedder"]
