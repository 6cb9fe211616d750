"""Policies for texts longer than the model's limit (``long_text=``).

A policy turns one input (optional prompt tokens plus text tokens) into the token
sequences the engine decodes, and the pooled vectors of those sequences back into one
raw vector. ``"error"`` and ``"truncate"`` map one input to one sequence; a chunking
policy maps one input to several sequences and fuses their vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import ConfigurationError, InputTooLongError

__all__ = ["POLICIES", "ChunkPolicy", "ErrorPolicy", "LongTextPolicy", "TruncatePolicy", "get_policy"]


@dataclass(frozen=True)
class InputTokens:
    """One input as the model will see it, before the EOS is appended.

    ``tokens`` is the whole formatted input (prompt and text) tokenized at once, as the
    official tokenizer does; ``prefix_len`` and ``suffix`` tell which leading and
    trailing tokens belong to the prompt, for policies that must cut the text only.
    """

    index: int | None  # position in the caller's input (None for a single string)
    tokens: np.ndarray
    prefix_len: int = 0
    suffix: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))

    @property
    def n_tokens(self) -> int:
        """Tokens the model sees, EOS included."""
        return len(self.tokens) + 1


class LongTextPolicy(Protocol):
    """How an input becomes token sequences, and their vectors one vector."""

    name: str

    def plan(self, item: InputTokens, *, limit: int, eos: int) -> list[np.ndarray]:
        """Token sequences (each ending with ``eos``, none longer than ``limit``)."""
        ...

    def combine(self, vectors: np.ndarray) -> np.ndarray:
        """One raw vector from the pooled vectors of the planned sequences."""
        ...


def _with_eos(tokens: np.ndarray, eos: int) -> np.ndarray:
    out = np.empty(len(tokens) + 1, dtype=np.int32)
    out[:-1] = tokens
    out[-1] = eos
    return out


def _where(index: int | None) -> str:
    return "The text" if index is None else f"Text #{index}"


class ErrorPolicy:
    """Refuse inputs over the limit, before anything is decoded."""

    name = "error"

    def plan(self, item: InputTokens, *, limit: int, eos: int) -> list[np.ndarray]:
        if item.n_tokens > limit:
            raise InputTooLongError(
                f"{_where(item.index)} is {item.n_tokens:,} tokens (EOS and prompt included) but the "
                f"limit is max_length={limit:,}. Pass long_text='truncate' to keep what fits, "
                "or raise max_length.",
                index=item.index,
                n_tokens=item.n_tokens,
                limit=limit,
            )
        return [_with_eos(item.tokens, eos)]

    def combine(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors[0])


class TruncatePolicy:
    """Keep the prompt and as many leading text tokens as fit; the EOS is always kept."""

    name = "truncate"

    def plan(self, item: InputTokens, *, limit: int, eos: int) -> list[np.ndarray]:
        if item.n_tokens <= limit:
            return [_with_eos(item.tokens, eos)]
        room = limit - 1 - len(item.suffix)
        if room <= item.prefix_len:
            raise InputTooLongError(
                f"{_where(item.index)}: the prompt alone is {item.prefix_len + len(item.suffix) + 1:,} tokens "
                f"with the EOS, which leaves no room for text under max_length={limit:,}; shorten the "
                "instruction or raise max_length.",
                index=item.index,
                n_tokens=item.n_tokens,
                limit=limit,
            )
        return [_with_eos(np.concatenate([item.tokens[:room], item.suffix]), eos)]

    def combine(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors[0])


class ChunkPolicy(ErrorPolicy):
    """Split a text over the limit into token-exact chunks and fuse their vectors.

    A text that fits is embedded whole, exactly as under ``"error"``; the
    :class:`~qwen_embed.Embedder` does the chunking for the others (it needs the text,
    not only its tokens): see :meth:`~qwen_embed.Embedder.encode_long`.
    """

    name = "chunk"


POLICIES: dict[str, LongTextPolicy] = {"error": ErrorPolicy(), "truncate": TruncatePolicy(), "chunk": ChunkPolicy()}


def get_policy(name: str) -> LongTextPolicy:
    """The policy called ``name``; a :class:`ValueError` lists the choices."""
    try:
        return POLICIES[name]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f"Unknown long_text policy {name!r}. Choose one of: {', '.join(repr(p) for p in POLICIES)}."
        ) from None
