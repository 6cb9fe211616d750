"""The first tokens of a long text without tokenizing all of it.

A reranker keeps only the first few thousand tokens of a document, and an embedder under
``long_text="error"`` only needs to know that a text is over its limit; tokenizing a 10 MB
text for that costs seconds (and the ``tokenizers`` BPE holds the GIL meanwhile). This module
finds a *piece* of the text, a prefix a little longer than the tokens asked for, whose
tokenization starts with exactly the tokens of the whole text.

Why a plain cut is not enough: llama.cpp and the official tokenizer split text with the Qwen2
pre-tokenizer regex (FACTS.md; ``QWEN2_SPLIT`` in :mod:`qwen_embed.engines.torch`)::

    (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\\r\\n\\p{L}\\p{N}]?\\p{L}+ | \\p{N} | ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*
    | \\s*[\\r\\n]+ | \\s+(?!\\S) | \\s+

and run BPE inside each piece. Cutting the text can change the piece that holds the cut
(``"word"`` cut to ``"wo"``), and through ``\\s*[\\r\\n]+``, which reaches for the *last* newline
of a whitespace run, a piece that starts far before the cut: ``"\\n" + " " * 10**6 + "\\n"`` is
one piece, but cut anywhere inside the spaces it becomes ``"\\n"`` and a run of spaces.

So the cut is placed where the regex provably ends a piece whatever follows (each rule is read
off the regex: no alternative matches across such a position, and no alternative that ends
there looked further than the character after it):

* after a number character (``\\p{N}`` is always a piece of its own);
* after a letter followed by a non-letter (``\\p{L}+`` stops there);
* after a symbol followed by whitespace other than CR/LF (`` ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*`` stops there);
* after CR or LF followed by a non-space (every alternative that takes newlines stops there);

and never inside a user-defined token (llama.cpp splits those out before the regex). A prefix
ending at such a position tokenizes to exactly the first tokens of the whole text.

A text can go on for megabytes without any such position: a run of one letter, of symbols or
of whitespace. There the piece ends at the cut (a whitespace run that holds a newline later on
gets a newline appended, so that its piece still reaches the cut), the piece that holds the
cut is then a prefix of the whole text's piece, and only the last :data:`MARGIN_TOKENS` tokens,
which BPE merges near the cut can change, are dropped. ``tests/test_reranker.py`` checks both
against the whole text's tokens on adversarial texts, on llama.cpp and on ``tokenizers``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

__all__ = ["MARGIN_TOKENS", "SEARCH_CHARS", "WHITESPACE", "is_boundary", "prefix_piece"]

#: Tokens dropped before the cut when it had to fall inside a run (BPE merges near it may differ).
MARGIN_TOKENS = 32
#: How far back from the cut a provable piece boundary is looked for.
SEARCH_CHARS = 256
#: ``\s`` of the tokenizers' regex engines: the Unicode White_Space property.
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)
_NEWLINES = frozenset("\r\n")
_SPACES_NO_NEWLINE = re.compile("[" + re.escape("".join(sorted(WHITESPACE - _NEWLINES))) + "]*")


def _kind(ch: str) -> str:
    """``"W"`` whitespace, ``"L"`` letter, ``"N"`` number, ``"P"`` anything else (as the regex sees it)."""
    if ch in WHITESPACE:
        return "W"
    major = unicodedata.category(ch)[0]
    return major if major in ("L", "N") else "P"


def is_boundary(text: str, j: int) -> bool:
    """Whether the Qwen2 regex ends a piece at ``j`` (0 < j < len(text)) whatever follows ``text[j]``."""
    before, after = _kind(text[j - 1]), _kind(text[j])
    if before == "N":
        return True
    if before == "L":
        return after != "L"
    if before == "P":
        return after == "W" and text[j] not in _NEWLINES
    return text[j - 1] in _NEWLINES and after != "W"


def _straddled(text: str, j: int, protected: Sequence[str]) -> int | None:
    """Start of a user-defined token's occurrence that spans position ``j``, if any."""
    for token in protected:
        n = len(token)
        if n < 2:
            continue
        start = text.find(token, max(0, j - n + 1), j + n - 1)
        while start != -1 and start < j:
            if start + n > j:
                return start
            start = text.find(token, start + 1, j + n - 1)
    return None


def prefix_piece(text: str, cut: int, protected: Sequence[str] = ()) -> tuple[str, bool]:
    """A prefix of ``text`` near ``cut`` (a character index, ``0 < cut < len(text)``) to tokenize.

    Returns:
        ``(piece, exact)``: with ``exact`` the piece's tokens are exactly the first tokens of
        ``text``; without it, all but its last :data:`MARGIN_TOKENS` tokens are.
    """
    low = max(1, cut - SEARCH_CHARS)
    j = cut
    while j >= low:
        if is_boundary(text, j):
            start = _straddled(text, j, protected)
            if start is None:
                return text[:j], True
            if start > 0 and _straddled(text, start, protected) is None:
                return text[:start], True  # an occurrence's start ends a fragment
            j = start
        j -= 1
    piece = text[:cut]
    if text[cut - 1] in WHITESPACE and text[cut] in WHITESPACE:
        match = _SPACES_NO_NEWLINE.match(text, cut)
        assert match is not None
        if match.end() < len(text) and text[match.end()] in _NEWLINES:
            piece += "\n"  # the whole run's piece reaches a later newline: let the cut one reach the cut
    return piece, False
