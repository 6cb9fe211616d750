"""The built-in probe set of ``qwen-embed verify``, shipped as package data (``probes.json``).

Queries and documents in several languages and scripts (Latin, CJK, Cyrillic, Arabic,
Devanagari), code, JSON, a long text (over 1,024 tokens, so it is decoded alone and crosses
llama.cpp's 512-token micro-batch), texts with control-token look-alikes (a literal
``<|endoftext|>``), decomposed Unicode, odd whitespace and the empty text. Each query names its
relevant documents (the probe retrieval task) and the candidates the reranker scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = ["Probe", "ProbeQuery", "ProbeSet", "load_probes"]


@dataclass(frozen=True)
class Probe:
    """One document of the probe set.

    Attributes:
        id: A stable name (``"d-zh-tea"``) used in reports.
        lang: The language or kind of text (``"zh"``, ``"code"``, ``"none"`` for the empty text).
        text: The text itself.
        tags: What the text exercises (``"long"``, ``"look-alike"``, ``"unicode"``, ...).
    """

    id: str
    lang: str
    text: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProbeQuery:
    """One query of the probe set: its text, its relevant documents and its reranker candidates."""

    id: str
    lang: str
    text: str
    relevant: tuple[str, ...]
    candidates: tuple[str, ...]


@dataclass(frozen=True)
class ProbeSet:
    """Queries, documents and the task instruction the queries are asked under."""

    version: int
    task: str
    queries: tuple[ProbeQuery, ...]
    documents: tuple[Probe, ...]

    def document(self, doc_id: str) -> Probe:
        """The document named ``doc_id``."""
        for doc in self.documents:
            if doc.id == doc_id:
                return doc
        raise KeyError(doc_id)

    def pairs(self) -> list[tuple[ProbeQuery, Probe]]:
        """Every (query, candidate) pair the reranker scores, query by query."""
        return [(q, self.document(d)) for q in self.queries for d in q.candidates]


@cache
def load_probes() -> ProbeSet:
    """The probe set shipped with the package."""
    raw = resources.files(__package__).joinpath("probes.json").read_text(encoding="utf-8")
    data = json.loads(raw)
    documents = tuple(Probe(d["id"], d["lang"], d["text"], tuple(d.get("tags", ()))) for d in data["documents"])
    queries = tuple(
        ProbeQuery(q["id"], q["lang"], q["text"], tuple(q["relevant"]), tuple(q["candidates"])) for q in data["queries"]
    )
    return ProbeSet(version=int(data["version"]), task=str(data["task"]), queries=queries, documents=documents)
