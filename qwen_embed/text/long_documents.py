"""Long documents: plan token-exact chunks, fuse their vectors, assemble the result.

:meth:`Embedder.encode_long <qwen_embed.Embedder.encode_long>` and the ``long_text="chunk"``
policy of :meth:`~qwen_embed.Embedder.encode` both come here. The planner splits a text at its
Markdown sections (or given ones), each section into windows that fit ``max_length`` with the
prompt, the optional ``"Title > Section"`` prefix and the EOS; each chunk becomes one token
sequence. After the engine has pooled them, :func:`fuse` makes one vector and
:func:`assemble` the :class:`~qwen_embed.LongEmbedding`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .._pipeline import TextTokenizer, check_utf8
from ..errors import ConfigurationError, EngineError, InputTooLongError, InputTypeError
from .chunking import (
    Chunk,
    ChunkConfig,
    Chunker,
    LongEmbedding,
    Section,
    SectionEmbedding,
    chunk_preset,
    markdown_sections,
    sections_from_pairs,
)
from .fusion import FusionInput, get_fusion, section_vectors

__all__ = ["LongPlan", "LongPlanner", "assemble", "chunk_config", "document_text", "fuse"]

_CHUNK_SLACK = 2  # tokens: a prompt and a chunk tokenized together can merge or split at the seam


@dataclass(frozen=True)
class LongPlan:
    """The chunks of one document and the token sequences (prompt, chunk, EOS) the engine decodes."""

    chunks: list[Chunk]
    sequences: list[np.ndarray]
    config: ChunkConfig
    has_title: bool  # the last sequence is the title's (hierarchical fusion)


def chunk_config(base: ChunkConfig, preset: str | None, **overrides: Any) -> ChunkConfig:
    """``preset`` (or ``base``) with the given fields replaced (``None`` keeps a field)."""
    config = base if preset is None else chunk_preset(preset)
    changes = {key: value for key, value in overrides.items() if value is not None}
    if changes:
        config = ChunkConfig(**{**config.__dict__, **changes})
    get_fusion(config.fusion)  # an unknown fusion fails before any work
    return config


def document_text(
    text: object, *, title: str | None, sections: Sequence[tuple[str, str]] | None
) -> tuple[str, list[Section] | None]:
    """The document's text and its user-given sections (``None``: find Markdown structure)."""
    if title is not None and not isinstance(title, str):
        raise InputTypeError(f"title must be a str, not {type(title).__name__}")
    if sections is not None:
        joined, spans = sections_from_pairs(sections, title=title)
        check_utf8(joined, None)
        return joined, spans
    if not isinstance(text, str):
        raise InputTypeError(f"The input is {type(text).__name__}, not str; encode_long takes one str.")
    check_utf8(text, None)  # before the chunker hands it to the engine
    return text, None


class LongPlanner:
    """Plans chunk sequences for one model: its tokenizer, chunker, ``max_length`` and EOS."""

    def __init__(self, tokenizer: TextTokenizer, chunker: Chunker, *, max_length: int, eos: int) -> None:
        self._tok = tokenizer
        self._chunker = chunker
        self._max_length = max_length
        self._eos = eos

    def plan(
        self,
        text: str,
        index: int | None,
        before: str,
        after: str,
        config: ChunkConfig,
        *,
        title: str | None = None,
        sections: list[Section] | None = None,
    ) -> LongPlan:
        """Chunks of ``text`` and their token sequences; no sequence is over ``max_length``."""
        spans = sections if sections is not None else markdown_sections(text, title=title)
        suffix = self._tok.piece(after).size
        chunks: list[Chunk] = []
        prefixes: list[str] = []
        for section_index, section in enumerate(spans):
            prefix = " > ".join(section.path) + "\n\n" if config.context_prefix and section.path else ""
            window = self._window(before + prefix, suffix, config, index)
            overlap = (
                config.overlap if window == config.chunk_tokens else config.overlap * window // config.chunk_tokens
            )
            for chunk in self._chunker.split(text, section, window=window, overlap=overlap):
                chunks.append(replace(chunk, index=len(chunks), section_index=section_index))
                prefixes.append(prefix)
        if not chunks:  # empty or whitespace-only: embed it as it is
            whole = Section(spans[0].path if spans else (), 0, len(text))
            window = self._window(before, suffix, config, index)
            found = self._chunker.split(text, whole, window=window, overlap=config.overlap, keep_blank=True)
            chunks = [replace(c, index=i, section_index=0) for i, c in enumerate(found)]
            chunks = chunks or [Chunk(0, "", 0, 0, 0, whole.path, 0)]
            prefixes = [""] * len(chunks)
        sequences = [self._sequence(before + prefix + c.text + after, c, index, len(before + prefix))
                     for c, prefix in zip(chunks, prefixes)]  # fmt: skip
        has_title = bool(title) and config.fusion == "hierarchical" and config.title_weight > 0
        if has_title:
            title_tokens = self._tok.tokens(before + str(title) + after, index)
            sequences.append(self._with_eos(title_tokens[: self._max_length - 1]))
        return LongPlan(chunks, sequences, config, has_title)

    def _sequence(self, formatted: str, chunk: Chunk, index: int | None, offset: int) -> np.ndarray:
        tokens = self._tok.tokens(formatted, index, text_offset=offset)
        if len(tokens) + 1 > self._max_length:  # the windows leave slack for this; never silently cut
            raise EngineError(f"chunk {chunk.index} is {len(tokens) + 1} tokens, over max_length={self._max_length}")
        return self._with_eos(tokens)

    def _with_eos(self, tokens: np.ndarray) -> np.ndarray:
        return np.append(tokens, np.int32(self._eos)).astype(np.int32)

    def _window(self, before: str, suffix: int, config: ChunkConfig, index: int | None) -> int:
        overhead = self._tok.piece(before).size + suffix + 1 + _CHUNK_SLACK
        window = min(config.chunk_tokens, self._max_length - overhead)
        if window < 8:
            raise InputTooLongError(
                f"{'The text' if index is None else f'Text #{index}'}: the prompt and context prefix take "
                f"{overhead} of max_length={self._max_length} tokens, which leaves no room for chunks; shorten "
                "them or raise max_length.",
                index=index,
                n_tokens=overhead,
                limit=self._max_length,
            )
        return window


def fuse(plan: LongPlan, rows: np.ndarray, native_dim: int) -> tuple[np.ndarray, np.ndarray, tuple[Any, Any, Any]]:
    """``(fused raw vector, unit chunk vectors, (section ids, unit section vectors, section tokens))``."""
    rows = rows.astype(np.float64)
    units = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    n = len(plan.chunks)
    data = FusionInput(
        vectors=units[:n],
        tokens=np.array([c.n_tokens for c in plan.chunks]),
        sections=np.array([c.section_index for c in plan.chunks]),
        title=units[n] if plan.has_title else None,
        title_weight=plan.config.title_weight,
    )
    fused = np.asarray(get_fusion(plan.config.fusion)(data), dtype=np.float64)
    if fused.shape != (native_dim,):
        raise ConfigurationError(
            f"fusion {plan.config.fusion!r} returned shape {fused.shape}, expected ({native_dim},)"
        )
    return fused, units, section_vectors(data)


def assemble(
    plan: LongPlan,
    rows: np.ndarray,
    *,
    text: str,
    native_dim: int,
    finish: Callable[[np.ndarray], np.ndarray],
    return_chunks: bool,
) -> LongEmbedding:
    """The :class:`LongEmbedding` of a planned document from its pooled rows.

    ``finish`` slices rows to the output dimension and normalizes them.
    """
    fused, units, (section_ids, section_units, section_tokens) = fuse(plan, rows, native_dim)
    vector = finish(fused[None, :])[0]
    chunk_vectors = finish(units[: len(plan.chunks)])
    section_out = finish(section_units)
    chunks = tuple(
        replace(chunk, vector=chunk_vectors[i] if return_chunks else None) for i, chunk in enumerate(plan.chunks)
    )
    by_section: dict[int, list[Chunk]] = {}
    for chunk in plan.chunks:
        by_section.setdefault(chunk.section_index, []).append(chunk)
    sections = tuple(
        SectionEmbedding(
            path=by_section[int(sid)][0].section,
            start=by_section[int(sid)][0].start,
            end=by_section[int(sid)][-1].end,
            n_tokens=int(section_tokens[row]),
            vector=section_out[row],
        )
        for row, sid in enumerate(section_ids)
    )
    return LongEmbedding(vector=vector, chunks=chunks, sections=sections, text=text, fusion=plan.config.fusion)
