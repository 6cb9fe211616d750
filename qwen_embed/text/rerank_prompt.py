"""The Qwen3-Reranker input format, exactly as the official Transformers recipe builds it.

Source: QwenLM/Qwen3-Embedding README, "Reranker Model → Transformers Usage". A pair becomes

    PREFIX + "<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {document}" + SUFFIX

where the middle part (the *body*) is the only part truncation may cut, from its right end;
the prefix and the suffix (with the empty think block) always survive.

For prefix sharing the body is split after ``"<Document>:"``: the *head* (prefix, instruction,
query) is the same for every document of a query, the *tail* is ``" " + document``. The Qwen2
pre-tokenizer always breaks between that colon and the following space, so the two halves
tokenized apart give the same tokens as the body tokenized whole.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence

from ..errors import InputTypeError, InvalidPromptError

__all__ = [
    "DEFAULT_RERANK_INSTRUCTION",
    "PREFIX",
    "SUFFIX",
    "as_pairs",
    "check_instruction",
    "format_pair",
    "head_body",
    "tail_body",
]

#: The system turn and the opening of the user turn (tokenized with special tokens parsed).
PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
#: The end of the user turn and the assistant's empty think block (tokenized with special tokens parsed).
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
#: The instruction the README's recipe uses when none is given.
DEFAULT_RERANK_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def head_body(instruction: str, query: str) -> str:
    """The body's shared start: ``"<Instruct>: …\\n<Query>: …\\n<Document>:"``."""
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>:"


def tail_body(document: str) -> str:
    """The body's per-document end: a space, then the document."""
    return f" {document}"


def format_pair(query: str, document: str, instruction: str = DEFAULT_RERANK_INSTRUCTION) -> str:
    """The whole string the model reads for one pair (before any truncation)."""
    return PREFIX + head_body(instruction, query) + tail_body(document) + SUFFIX


def as_pairs(pairs: object) -> tuple[bool, list[tuple[object, object]]]:
    """``(single, pairs)``: one ``(query, document)`` pair or a list of them, checked."""
    if isinstance(pairs, (set, frozenset)):
        raise InputTypeError(
            f"pairs is a {type(pairs).__name__}, which has no order, so the scores could not be matched to the "
            "pairs; pass a list."
        )
    if pairs is None or isinstance(pairs, (str, bytes, bytearray, Mapping)) or not isinstance(pairs, Iterable):
        raise InputTypeError(
            f"pairs must be a list of (query, document) pairs, not {type(pairs).__name__}; "
            "for one query and many documents use rank(query, documents)."
        )
    items = list(pairs)
    if len(items) == 2 and all(isinstance(x, str) for x in items):
        return True, [(items[0], items[1])]
    out = []
    for i, item in enumerate(items):
        if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2:
            raise InputTypeError(f"Pair #{i} is {item!r:.60}; every pair must be a (query, document) tuple of two str.")
        out.append((item[0], item[1]))
    return False, out


def check_instruction(value: object, default: str = "") -> str:
    """An instruction in NFC, or ``default`` for ``None``; a non-str or blank one is refused."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidPromptError(f"instruction must be a str, not {type(value).__name__}")
    if not value.strip():
        raise InvalidPromptError(f"instruction is empty; pass None for the default ({DEFAULT_RERANK_INSTRUCTION!r}).")
    return unicodedata.normalize("NFC", value)
