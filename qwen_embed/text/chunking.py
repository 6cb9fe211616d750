"""Token-exact chunking of long texts, with Markdown structure.

A text is tokenized once with the model's own tokenizer; every token's byte length
gives exact character offsets, so each chunk knows its span (``text[start:end]``
gives it back for any Unicode). Windows end at the best natural boundary in their
second half: a blank line, else a sentence end, else whitespace, else (a single
"word" longer than the window, such as a base64 line) between two tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigurationError, EngineError

__all__ = [
    "CHUNK_PRESETS",
    "Chunk",
    "ChunkConfig",
    "Chunker",
    "LongEmbedding",
    "Section",
    "SectionEmbedding",
    "chunk_preset",
    "markdown_sections",
    "sections_from_pairs",
]

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")
_SENTENCE_END = set(".!?;。！？；…")
_CLOSERS = set("\"')]}”’»」』）")


@dataclass(frozen=True)
class ChunkConfig:
    """How long texts are split and fused.

    Args:
        chunk_tokens: Most text tokens per chunk (the prompt, context prefix and EOS
            come on top, and the whole never exceeds ``max_length``).
        overlap: Tokens shared by consecutive chunks; must be below ``chunk_tokens``.
        fusion: Name of the fusion strategy (see :mod:`qwen_embed.fusion`).
        context_prefix: Prefix each chunk with its section path (``"Title > Section"``).
        title_weight: With ``fusion="hierarchical"`` and a title, the share of the
            title's vector in the document vector (0 to 1).
    """

    chunk_tokens: int = 1024
    overlap: int = 128
    fusion: str = "weighted"
    context_prefix: bool = False
    title_weight: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.chunk_tokens, bool) or not isinstance(self.chunk_tokens, int) or self.chunk_tokens < 8:
            raise ConfigurationError(f"chunk_tokens must be an int of at least 8, not {self.chunk_tokens!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or self.overlap < 0:
            raise ConfigurationError(f"overlap must be an int >= 0, not {self.overlap!r}")
        if self.overlap >= self.chunk_tokens:
            raise ConfigurationError(
                f"overlap ({self.overlap}) must be smaller than chunk_tokens ({self.chunk_tokens}): "
                "each chunk must move the window forward."
            )
        if not 0.0 <= float(self.title_weight) <= 1.0:
            raise ConfigurationError(f"title_weight must be between 0 and 1, not {self.title_weight!r}")


# Starting points by content type (chunk tokens, overlap); tune on your own data.
CHUNK_PRESETS: dict[str, ChunkConfig] = {
    "general": ChunkConfig(1024, 128),
    "technical": ChunkConfig(1024, 128),
    "paper": ChunkConfig(2048, 256),
    "fiction": ChunkConfig(512, 64),
    "legal": ChunkConfig(1536, 192),
    "code": ChunkConfig(768, 96),
}


def chunk_preset(name: str) -> ChunkConfig:
    """The preset called ``name`` (``general``, ``technical``, ``paper``, ``fiction``, ``legal``, ``code``)."""
    try:
        return CHUNK_PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f"Unknown chunking preset {name!r}. Choose one of: {', '.join(CHUNK_PRESETS)}, or pass a ChunkConfig."
        ) from None


@dataclass(frozen=True)
class Section:
    """A span of the document with its path of titles (``("Title", "Section", "Subsection")``)."""

    path: tuple[str, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Chunk:
    """One chunk: ``text == document[start:end]``; ``n_tokens`` counts its text tokens alone."""

    index: int
    text: str
    start: int
    end: int
    n_tokens: int
    section: tuple[str, ...]
    section_index: int
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)


def markdown_sections(text: str, *, title: str | None = None) -> list[Section]:
    """Split ``text`` at Markdown ATX headings (``#`` to ``######``, outside code fences).

    Each section runs from its heading line to the next heading; text before the first
    heading is a section of its own (path ``(title,)`` or ``()``). A ``title`` heads every path.
    """
    root: tuple[str, ...] = (title,) if title else ()
    heads: list[tuple[int, int, str]] = []  # (char offset, level, heading)
    offset, fenced = 0, False
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line.rstrip("\r\n"))):
            heads.append((offset, len(match.group(1)), match.group(2).strip()))
        offset += len(line)
    sections: list[Section] = []
    if not heads or heads[0][0] > 0:
        sections.append(Section(root, 0, heads[0][0] if heads else len(text)))
    stack: list[tuple[int, str]] = []
    for i, (start, level, heading) in enumerate(heads):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        end = heads[i + 1][0] if i + 1 < len(heads) else len(text)
        sections.append(Section(root + tuple(h for _, h in stack), start, end))
    return sections


def sections_from_pairs(
    pairs: Sequence[tuple[str, str]], *, title: str | None = None, separator: str = "\n\n"
) -> tuple[str, list[Section]]:
    """Join user-given ``(title, text)`` sections into one document text and its sections."""
    root: tuple[str, ...] = (title,) if title else ()
    parts: list[str] = []
    sections: list[Section] = []
    offset = 0
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise ConfigurationError(f"sections[{i}] must be a (title, text) pair of str, not {pair!r}")
        heading, body = pair
        if parts:
            parts.append(separator)
            offset += len(separator)
        sections.append(Section((*root, heading) if heading else root, offset, offset + len(body)))
        parts.append(body)
        offset += len(body)
    return "".join(parts), sections


@dataclass(frozen=True)
class SectionEmbedding:
    """A section of a long document: its path, span, text tokens and fused vector."""

    path: tuple[str, ...]
    start: int
    end: int
    n_tokens: int
    vector: np.ndarray = field(compare=False, repr=False)


@dataclass(frozen=True)
class LongEmbedding:
    """What :meth:`Embedder.encode_long` returns.

    ``vector`` is the fused document vector; ``chunks`` hold their text, span into
    ``text`` (the document, or the user-given sections joined by blank lines), token
    count, section path and (with ``return_chunks=True``) vector; ``sections`` hold
    the token-weighted section vectors.
    """

    vector: np.ndarray = field(repr=False)
    chunks: tuple[Chunk, ...]
    sections: tuple[SectionEmbedding, ...]
    text: str = field(repr=False)
    fusion: str

    @property
    def n_tokens(self) -> int:
        """Text tokens embedded (overlaps counted once per chunk)."""
        return sum(c.n_tokens for c in self.chunks)


class Chunker:
    """Token-exact splitter over one model's tokenizer.

    Args:
        tokenize: Text to token ids (no BOS/EOS), the model's own tokenizer.
        token_bytes: Token id to the exact bytes it stands for.
    """

    def __init__(self, tokenize: Callable[[str], np.ndarray], token_bytes: Callable[[int], bytes]) -> None:
        self._tokenize = tokenize
        self._token_bytes = token_bytes
        self._lengths: dict[int, int] = {}

    def count(self, text: str) -> int:
        return len(self._tokenize(text))

    def split(self, text: str, section: Section, *, window: int, overlap: int, keep_blank: bool = False) -> list[Chunk]:
        """Chunks of ``text[section.start:section.end]``, each at most ``window`` tokens, offsets into ``text``.

        A whitespace-only section gives no chunk unless ``keep_blank``.
        """
        if window < 1:
            raise ConfigurationError(f"chunk window must be at least 1 token, not {window}")
        overlap = max(0, min(overlap, window - 1))
        piece = text[section.start : section.end]
        if not piece.strip() and not keep_blank:
            return []
        ids = self._tokenize(piece)
        n = len(ids)
        chars = self._char_offsets(piece, ids)  # chars[j]: char offset where token j starts (-1 mid-character)
        scores = _boundary_scores(piece, chars)
        chunks: list[Chunk] = []
        start = 0
        while start < n:
            end = n if n - start <= window else _best_cut(scores, start, start + window)
            while True:  # the chunk's own tokenization must fit too (BPE can differ at a cut)
                lo, hi = chars[start], chars[end]
                count = self.count(piece[lo:hi])
                if count <= window or end - start <= 1:
                    break
                end = _whole_character_cut(scores, end - max(1, count - window), start)
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=piece[lo:hi],
                    start=section.start + lo,
                    end=section.start + hi,
                    n_tokens=count,
                    section=section.path,
                    section_index=-1,
                )
            )
            if end >= n:
                break
            nxt = max(end - overlap, start + 1)
            if overlap:  # start the overlap at a word boundary when one is near
                ahead = np.flatnonzero(scores[nxt:end] >= 1)
                if len(ahead) and ahead[0] <= overlap // 2:
                    nxt += int(ahead[0])
            while chars[nxt] < 0:  # never start inside a character
                nxt += 1
            start = nxt
        return chunks

    def _char_offsets(self, piece: str, ids: np.ndarray) -> np.ndarray:
        raw = piece.encode("utf-8")
        lengths = np.fromiter((self._length(int(t)) for t in ids), dtype=np.int64, count=len(ids))
        byte_at = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=byte_at[1:])
        if byte_at[-1] != len(raw):
            raise EngineError(
                f"the tokenizer does not round-trip this text ({byte_at[-1]} bytes from tokens, {len(raw)} in the "
                "text), so chunk offsets cannot be exact"
            )
        data = np.frombuffer(raw, dtype=np.uint8)
        is_start = np.ones(len(raw) + 1, dtype=bool)
        is_start[:-1] = (data & 0xC0) != 0x80
        chars_before = np.zeros(len(raw) + 1, dtype=np.int64)
        np.cumsum(is_start[:-1], out=chars_before[1:])
        out = chars_before[byte_at]
        out[~is_start[byte_at]] = -1
        return out

    def _length(self, token: int) -> int:
        length = self._lengths.get(token)
        if length is None:
            length = self._lengths[token] = len(self._token_bytes(token))
        return length


def _boundary_scores(piece: str, chars: np.ndarray) -> np.ndarray:
    """Score of cutting before token j: 3 blank line, 2 sentence end, 1 whitespace, 0 other, -1 mid-character."""
    scores = np.full(len(chars), -1, dtype=np.int8)
    for j, c in enumerate(chars.tolist()):
        if c < 0:
            continue
        if c == 0 or c >= len(piece):
            scores[j] = 3
            continue
        before, after = piece[max(0, c - 2) : c], piece[c]
        if before.endswith("\n\n") or (before.endswith("\n") and after == "\n"):
            scores[j] = 3
        elif _sentence_end(piece, c):
            scores[j] = 2
        elif before[-1:].isspace() or after.isspace():
            scores[j] = 1
        else:
            scores[j] = 0
    return scores


def _sentence_end(piece: str, c: int) -> bool:
    i = c - 1
    while i >= 0 and piece[i].isspace():
        i -= 1
    while i >= 0 and piece[i] in _CLOSERS:
        i -= 1
    if i < 0 or piece[i] not in _SENTENCE_END:
        return False
    return piece[i] in "。！？；…" or i < c - 1 or piece[c].isspace()


def _best_cut(scores: np.ndarray, start: int, limit: int) -> int:
    """The cut in the second half of (start, limit] with the best score, the latest among equals."""
    lo = start + max(1, (limit - start) // 2)
    window = scores[lo : limit + 1]
    best = int(window.max()) if len(window) else -1
    if best >= 0:
        return lo + int(np.flatnonzero(window == best)[-1])
    return _whole_character_cut(scores, limit, start)


def _whole_character_cut(scores: np.ndarray, end: int, start: int) -> int:
    """The latest cut in (start, end] that falls between characters, else the first one after ``end``."""
    end = max(end, start + 1)
    for j in range(end, start, -1):
        if scores[j] >= 0:  # -1 marks a token boundary inside a character
            return j
    for j in range(end + 1, len(scores)):
        if scores[j] >= 0:
            return j
    return len(scores) - 1
