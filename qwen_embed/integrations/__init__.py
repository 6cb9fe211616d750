"""Adapters for the frameworks people build retrieval with.

One module per framework; each imports its framework only when you import the module,
and says which extra to install when the framework is missing:

- :mod:`qwen_embed.integrations.langchain`: ``QwenEmbeddings``, ``QwenRerank`` (``pip install "qwen-embed[langchain]"``)
- :mod:`qwen_embed.integrations.llama_index`: ``QwenEmbedding``, ``QwenRerank`` (``[llamaindex]``)
- :mod:`qwen_embed.integrations.haystack`: ``QwenTextEmbedder``, ``QwenDocumentEmbedder``, ``QwenRanker``
  (``[haystack]``)
- :mod:`qwen_embed.integrations.chroma`: ``QwenEmbeddingFunction`` (``[chroma]``)
- :mod:`qwen_embed.integrations.mteb`: ``QwenEmbedEncoder`` (``[mteb]``)

Every adapter takes an existing :class:`~qwen_embed.Embedder` (``embedder=``; a reranker
adapter a :class:`~qwen_embed.Reranker`, ``reranker=``) or the options to build one
(``model=``, ``quant=``, ``embedder_options=`` or ``reranker_options=``). Models built from
options live in one process-wide cache, so a query-side and a document-side adapter of
the same model share one loaded copy; :func:`clear_cache` forgets them.

What an adapter saves (``to_dict``, a Chroma collection's configuration) names a local file
by its absolute path and the quantization it really holds, and a model fetched from the Hub
by its repo, quantization and revision. Loading a saved adapter whose file has moved raises
:class:`~qwen_embed.ModelNotFoundError` naming the path; a file holding another quantization
than the saved one raises :class:`~qwen_embed.ConfigurationError`.

Importing this package imports no framework.
"""

from ._cache import cached_models, clear_cache, shared_embedder
from ._common import MissingExtraError

__all__ = ["MissingExtraError", "cached_models", "clear_cache", "shared_embedder"]
