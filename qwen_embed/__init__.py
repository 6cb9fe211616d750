"""qwen_embed: Qwen3-Embedding vectors from GGUF models on llama.cpp.

>>> from qwen_embed import Embedder
>>> emb = Embedder("Qwen3-Embedding-0.6B-Q8_0.gguf")      # doctest: +SKIP
>>> emb.encode(["What is GGUF?"]).shape                    # doctest: +SKIP
(1, 1024)
"""

import logging as _logging

from ._version import __version__
from .embedder import Embedder
from .errors import (
    ConfigurationError,
    DimensionError,
    EmbedderClosedError,
    EngineError,
    InputTooLongError,
    InputTypeError,
    InvalidInputError,
    InvalidModelFileError,
    InvalidPromptError,
    ModelLoadError,
    ModelNotFoundError,
    QwenEmbedError,
    UnknownPromptError,
    UnsupportedModelError,
)
from .gguf_info import GGUFInfo, read_gguf_info
from .prompts import Prompt, PromptRegistry, get_prompt, list_prompts, load_prompts, register_prompt

# Quiet by default: records reach a handler only if the application configures logging.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    "ConfigurationError",
    "DimensionError",
    "Embedder",
    "EmbedderClosedError",
    "EngineError",
    "GGUFInfo",
    "InputTooLongError",
    "InputTypeError",
    "InvalidInputError",
    "InvalidModelFileError",
    "InvalidPromptError",
    "ModelLoadError",
    "ModelNotFoundError",
    "Prompt",
    "PromptRegistry",
    "QwenEmbedError",
    "UnknownPromptError",
    "UnsupportedModelError",
    "__version__",
    "get_prompt",
    "list_prompts",
    "load_prompts",
    "read_gguf_info",
    "register_prompt",
]
