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

__all__ = [
    "DEFAULT_RERANK_INSTRUCTION",
    "PREFIX",
    "SUFFIX",
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
