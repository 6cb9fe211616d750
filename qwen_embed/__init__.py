"""qwen_embed: Qwen3-Embedding vectors from GGUF models on llama.cpp.

>>> from qwen_embed import Embedder
>>> emb = Embedder("Qwen3-Embedding-0.6B-Q8_0.gguf")      # doctest: +SKIP
>>> emb.encode(["What is GGUF?"]).shape                    # doctest: +SKIP
(1, 1024)
"""

import logging as _logging

from ._version import __version__
from .calls import EncodeCall, EncodeResult, Receipt, RerankCall, RerankResult
from .embedder import Embedder
from .engines.gguf_info import GGUFInfo, read_gguf_info
from .errors import (
    AmbiguousFileError,
    CacheNotWritableError,
    ChecksumMismatchError,
    ConfigurationError,
    DimensionError,
    DownloadError,
    EmbedderClosedError,
    EngineError,
    GatedRepoError,
    HubError,
    InputTooLongError,
    InputTypeError,
    InvalidInputError,
    InvalidModelFileError,
    InvalidPromptError,
    MemoryBudgetError,
    ModelClosedError,
    ModelLoadError,
    ModelNotFoundError,
    NoGGUFFilesError,
    NotCachedError,
    QuantNotFoundError,
    QwenEmbedError,
    RepoNotFoundError,
    UnknownModelError,
    UnknownPromptError,
    UnsafeForkError,
    UnsupportedModelError,
)
from .hub.catalog import CATALOG, RERANKER_CATALOG, CatalogModel, KnownQuant, RerankerModel
from .hub.download import ModelResolution, QuantFile, download_model, list_quants, resolve_model
from .hub.options import HubOptions
from .quantization import QuantizationRanges, quantize_embeddings
from .reranker import Reranker
from .text.chunking import CHUNK_PRESETS, Chunk, ChunkConfig, LongEmbedding, SectionEmbedding
from .text.fusion import FUSIONS, FusionInput, register_fusion
from .text.prompts import Prompt, PromptRegistry, get_prompt, list_prompts, load_prompts, register_prompt
from .verification import VerifyOptions, VerifyReport, verify

# Quiet by default: records reach a handler only if the application configures logging.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    "CATALOG",
    "CHUNK_PRESETS",
    "FUSIONS",
    "RERANKER_CATALOG",
    "AmbiguousFileError",
    "CacheNotWritableError",
    "CatalogModel",
    "ChecksumMismatchError",
    "Chunk",
    "ChunkConfig",
    "ConfigurationError",
    "DimensionError",
    "DownloadError",
    "Embedder",
    "EmbedderClosedError",
    "EncodeCall",
    "EncodeResult",
    "EngineError",
    "FusionInput",
    "GGUFInfo",
    "GatedRepoError",
    "HubError",
    "HubOptions",
    "InputTooLongError",
    "InputTypeError",
    "InvalidInputError",
    "InvalidModelFileError",
    "InvalidPromptError",
    "KnownQuant",
    "LongEmbedding",
    "MemoryBudgetError",
    "ModelClosedError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelResolution",
    "NoGGUFFilesError",
    "NotCachedError",
    "Prompt",
    "PromptRegistry",
    "QuantFile",
    "QuantNotFoundError",
    "QuantizationRanges",
    "QwenEmbedError",
    "Receipt",
    "RepoNotFoundError",
    "RerankCall",
    "RerankResult",
    "Reranker",
    "RerankerModel",
    "SectionEmbedding",
    "UnknownModelError",
    "UnknownPromptError",
    "UnsafeForkError",
    "UnsupportedModelError",
    "VerifyOptions",
    "VerifyReport",
    "__version__",
    "download_model",
    "get_prompt",
    "list_prompts",
    "list_quants",
    "load_prompts",
    "quantize_embeddings",
    "read_gguf_info",
    "register_fusion",
    "register_prompt",
    "resolve_model",
    "verify",
]
