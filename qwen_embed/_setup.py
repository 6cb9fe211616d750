"""Checks and defaults for building a model from a GGUF file (used by the Embedder and the Reranker)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from . import _config
from ._pipeline import positive_int
from .engines.base import Engine, Pooling
from .engines.gguf_info import POOLING_NAMES, GGUFInfo
from .errors import ConfigurationError, UnsupportedModelError
from .text.chunking import ChunkConfig, chunk_preset
from .text.prompts import DEFAULT_REGISTRY, Prompt, PromptRegistry

__all__ = [
    "EOS_TEXT",
    "SUPPORTED_ARCHITECTURES",
    "as_chunk_config",
    "as_registry",
    "check_model_path",
    "check_supported",
    "find_eos",
    "resolve_max_length",
    "resolve_pooling",
]

logger = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("qwen3",)
EOS_TEXT = "<|endoftext|>"


def check_model_path(model_path: object) -> None:
    """A ConfigurationError unless ``model_path`` is a str or os.PathLike."""
    if isinstance(model_path, bool) or not isinstance(model_path, (str, os.PathLike)):
        raise ConfigurationError(
            f"model_path must be a path (str or os.PathLike) to a .gguf file, not {type(model_path).__name__}"
        )


def as_registry(prompts: PromptRegistry | Mapping[str, str | Prompt] | None) -> PromptRegistry:
    if prompts is None:
        return DEFAULT_REGISTRY
    if isinstance(prompts, PromptRegistry):
        return prompts
    if not isinstance(prompts, Mapping):
        raise ConfigurationError(
            f"prompts must be a PromptRegistry or a mapping of name -> instruction, not {prompts!r}"
        )
    registry = PromptRegistry(DEFAULT_REGISTRY)
    for name, value in prompts.items():
        if isinstance(value, Prompt):
            registry.register_prompt(
                name,
                value.query,
                passage_instruction=value.passage if not value.symmetric else None,
                symmetric=value.symmetric,
                template=value.template,
                description=value.description,
                overwrite=True,
            )
        else:
            registry.register_prompt(name, value, overwrite=True)
    return registry


def check_supported(info: GGUFInfo) -> None:
    arch = info.architecture
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{info.path.name} is a {arch or 'unknown'!s} model; qwen_embed supports Qwen3-Embedding GGUF "
            f"files (architecture {', '.join(SUPPORTED_ARCHITECTURES)}), such as Qwen3-Embedding-0.6B-Q8_0.gguf."
        )
    if not info.tensors:
        raise UnsupportedModelError(f"{info.path.name} has no weights (a vocabulary-only GGUF?).")
    if not info.embedding_length:
        raise UnsupportedModelError(f"{info.path.name} lacks {arch}.embedding_length; the file is incomplete.")


def resolve_pooling(info: GGUFInfo, pooling: str | None) -> Pooling:
    if pooling is not None:
        if pooling not in ("last", "mean"):
            raise ConfigurationError(
                f"pooling={pooling!r} is not supported; use 'last' or 'mean' (or None for the file's)."
            )
        return "last" if pooling == "last" else "mean"
    file_pooling = info.pooling_type
    name = POOLING_NAMES.get(file_pooling, "unknown") if file_pooling is not None else None
    if name in (None, "none", "last"):
        if name == "none":
            logger.debug("file says pooling_type NONE; using last-token pooling (Qwen3-Embedding)")
        return "last"
    if name == "mean":
        return "mean"
    if name == "rank":
        raise UnsupportedModelError(f"{info.path.name} is a reranker (pooling_type RANK), not an embedding model.")
    raise UnsupportedModelError(
        f"{info.path.name} asks for {name} pooling ({file_pooling}), which qwen_embed does not "
        "support for Qwen3; pass pooling='last' or 'mean' to override."
    )


def resolve_max_length(max_length: int | None, context_length: int) -> int:
    if max_length is None:
        return min(_config.DEFAULT_MAX_LENGTH, context_length)
    value = positive_int("max_length", max_length)
    if value < 2:
        raise ConfigurationError("max_length must be at least 2 (one text token and the EOS)")
    if value > context_length:
        raise ConfigurationError(f"max_length={value} exceeds the model's trained context of {context_length} tokens.")
    return value


def as_chunk_config(chunking: object) -> ChunkConfig:
    if isinstance(chunking, ChunkConfig):
        return chunking
    if isinstance(chunking, str):
        return chunk_preset(chunking)
    raise ConfigurationError(f"chunking must be a preset name or a ChunkConfig, not {chunking!r}")


def find_eos(engine: Engine, info: GGUFInfo) -> int:
    """``<|endoftext|>``'s id (the official terminator), else the file's EOS."""
    ids = engine.tokenize(EOS_TEXT, special=True)
    if len(ids) == 1:
        eos = int(ids[0])
        if info.eos_token_id is not None and info.eos_token_id != eos:
            logger.debug(
                "file's eos_token_id is %d; ending sequences with %s (%d) as the official recipe does",
                info.eos_token_id,
                EOS_TEXT,
                eos,
            )
        return eos
    if info.eos_token_id is None:
        raise UnsupportedModelError(
            f"{info.path.name} has no {EOS_TEXT} token and no eos_token_id; it is not a Qwen3-Embedding vocabulary."
        )
    return info.eos_token_id
