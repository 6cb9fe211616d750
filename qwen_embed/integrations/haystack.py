"""Haystack components: :class:`QwenTextEmbedder`, :class:`QwenDocumentEmbedder` and :class:`QwenRanker`.

Install with ``pip install "qwen-embed[haystack]"``.

>>> from qwen_embed.integrations.haystack import QwenDocumentEmbedder, QwenRanker, QwenTextEmbedder
>>> indexing.add_component("embedder", QwenDocumentEmbedder(model="0.6B"))     # doctest: +SKIP
>>> query.add_component("embedder", QwenTextEmbedder(model="0.6B"))            # doctest: +SKIP
>>> query.add_component("ranker", QwenRanker(model="0.6B", top_k=5))          # doctest: +SKIP

The text embedder is the query side (the task's instruction), the document embedder the
document side (bare for retrieval); the ranker reorders retrieved Documents with a
Qwen3-Reranker and sets each one's ``score`` to the reranker's probability of relevance.
All three are light to build and JSON-serializable (a local file is saved as its absolute
path and the quantization it holds); the model loads in ``warm_up`` (``Pipeline.run`` calls
it), once per process for every component through the shared cache. ``run_async`` runs on
a worker thread.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from typing import Any

from ._common import require

require("haystack", extra="haystack", what="qwen_embed.integrations.haystack")

from haystack import Document, component, default_from_dict, default_to_dict  # noqa: E402

from .._config import DEFAULT_BATCH_SIZE  # noqa: E402
from .._pipeline import positive_int  # noqa: E402
from ..embedder import Embedder  # noqa: E402
from ..errors import ConfigurationError, InputTypeError  # noqa: E402
from ..reranker import Reranker  # noqa: E402
from ..text.prompts import check_instruction  # noqa: E402
from ._common import ModelSource, Sides, rank, text_list, to_floats  # noqa: E402

__all__ = ["QwenDocumentEmbedder", "QwenRanker", "QwenTextEmbedder"]


class _QwenComponent:
    """Options, model loading and serialization shared by both components."""

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        embedder: Embedder | None = None,
        quant: str | None = None,
        task: str | None = None,
        query_instruction: str | None = None,
        document_instruction: str | None = None,
        dim: int | None = None,
        embedder_options: dict[str, Any] | None = None,
    ) -> None:
        self._sides = Sides(task, query_instruction, document_instruction, dim)
        self._source = ModelSource(Embedder, model=model, instance=embedder, quant=quant, options=embedder_options)
        self._checked = False

    def warm_up(self) -> None:
        """Load the model (once per process, shared with the other component); idempotent."""
        embedder = self._source.get()
        if not self._checked:
            self._sides.check(embedder)
            self._checked = True

    @property
    def embedder(self) -> Embedder:
        """The :class:`~qwen_embed.Embedder` in use (loads it if needed)."""
        self.warm_up()
        return self._source.get()  # type: ignore[no-any-return]

    def _meta(self) -> dict[str, Any]:
        embedder = self.embedder
        return {"model": embedder.model_path.name, "dim": self._sides.dim or embedder.dim}

    def _init_parameters(self) -> dict[str, Any]:
        source = self._source.config()
        return {**source, **self._sides.config()}

    def to_dict(self) -> dict[str, Any]:
        """The component as a JSON-able dict (an ``embedder=`` object is saved as its file path, a local
        file as its absolute path with the quantization it holds)."""
        return default_to_dict(self, **self._init_parameters())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Rebuild a component saved by :meth:`to_dict`."""
        return default_from_dict(cls, data)


@component
class QwenTextEmbedder(_QwenComponent):
    """Embeds one query string (the query side: the task's instruction applies).

    Args:
        model: A ``.gguf`` path, a catalog name (``"0.6B"``) or a Hub repo id.
        embedder: An existing :class:`~qwen_embed.Embedder` (saved as its path by ``to_dict``).
        quant: Quantization of a catalog or Hub model (default: the catalog entry's, ``Q8_0``); for a
            local file ``None`` (default) or the file's own, checked at load.
        task: Prompt name (``"qa"``, ``"code_search"``, ``"sts"``, ...); default: web search.
        query_instruction: Instruction for queries, replacing the task's.
        document_instruction: Unused on this side; accepted so both components take the same options.
        dim: Output dimension (Matryoshka).
        embedder_options: Options of :class:`~qwen_embed.Embedder` and ``from_pretrained``.
    """

    @component.output_types(embedding=list[float], meta=dict[str, Any])
    def run(self, text: str) -> dict[str, Any]:
        """Embed ``text`` as a query: ``{"embedding": list[float], "meta": {...}}``."""
        if not isinstance(text, str):
            raise InputTypeError(
                f"QwenTextEmbedder takes one str, not {type(text).__name__}; "
                "to embed Documents use QwenDocumentEmbedder."
            )
        self.warm_up()
        vector = self._sides.queries(self.embedder, [text])[0]
        return {"embedding": to_floats(vector), "meta": self._meta()}

    @component.output_types(embedding=list[float], meta=dict[str, Any])
    async def run_async(self, text: str) -> dict[str, Any]:
        """:meth:`run` on a worker thread."""
        return await asyncio.to_thread(self.run, text)


@component
class QwenDocumentEmbedder(_QwenComponent):
    """Embeds Documents (the document side) and returns copies with ``embedding`` set.

    Args:
        model, embedder, quant, task, query_instruction, document_instruction, dim, embedder_options:
            As for :class:`QwenTextEmbedder` (``document_instruction`` applies here).
        batch_size: Documents per ``encode`` call.
        meta_fields_to_embed: Meta fields whose values are embedded before the content.
        embedding_separator: Joins those values and the content.
    """

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        embedder: Embedder | None = None,
        quant: str | None = None,
        task: str | None = None,
        query_instruction: str | None = None,
        document_instruction: str | None = None,
        dim: int | None = None,
        embedder_options: dict[str, Any] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
    ) -> None:
        _QwenComponent.__init__(  # @component rebuilds the class, so zero-argument super() cannot be used
            self,
            model=model,
            embedder=embedder,
            quant=quant,
            task=task,
            query_instruction=query_instruction,
            document_instruction=document_instruction,
            dim=dim,
            embedder_options=embedder_options,
        )
        self.batch_size = positive_int("batch_size", batch_size)
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator

    def _init_parameters(self) -> dict[str, Any]:
        return {
            **_QwenComponent._init_parameters(self),
            "batch_size": self.batch_size,
            "meta_fields_to_embed": self.meta_fields_to_embed,
            "embedding_separator": self.embedding_separator,
        }

    def _text_of(self, doc: Document) -> str:
        values = [str(doc.meta[k]) for k in self.meta_fields_to_embed if doc.meta.get(k) is not None]
        return self.embedding_separator.join([*values, doc.content or ""])

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        """Embed ``documents``: ``{"documents": copies with embeddings, "meta": {...}}``."""
        _check_documents(documents, "QwenDocumentEmbedder", "to embed a query string use QwenTextEmbedder")
        self.warm_up()
        texts = text_list([self._text_of(d) for d in documents], method="run", single="QwenTextEmbedder")
        embedded: list[Document] = []
        for start in range(0, len(texts), self.batch_size):
            vectors = to_floats(self._sides.documents(self.embedder, texts[start : start + self.batch_size]))
            batch = documents[start : start + self.batch_size]
            embedded.extend(replace(doc, embedding=vec) for doc, vec in zip(batch, vectors, strict=True))
        return {"documents": embedded, "meta": self._meta()}

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    async def run_async(self, documents: list[Document]) -> dict[str, Any]:
        """:meth:`run` on a worker thread."""
        return await asyncio.to_thread(self.run, documents)


def _check_documents(documents: object, who: str, hint: str) -> list[Document]:
    if isinstance(documents, str) or not isinstance(documents, list):
        raise InputTypeError(f"{who} takes a list of Documents, not {type(documents).__name__}; {hint}.")
    for i, doc in enumerate(documents):
        if not isinstance(doc, Document):
            raise InputTypeError(f"{who}: item #{i} is {type(doc).__name__}, not a Document.")
    return documents


def _score_threshold(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"score_threshold must be a number (a probability from 0 to 1) or None, not {value!r}")
    return float(value)


@component
class QwenRanker:
    """Ranks Documents by their relevance to a query with a Qwen3-Reranker (a Haystack ranker).

    ``run`` returns copies of the Documents, best first, at most ``top_k``, each with ``score``
    set to the reranker's ``p(yes)`` in [0, 1] (the score a retriever gave is replaced); the
    input Documents are not changed. One :meth:`~qwen_embed.Reranker.rank` call per run.

    Args:
        model: A reranker ``.gguf`` path, a reranker catalog size (``"0.6B"``) or a Hub repo id.
        reranker: An existing :class:`~qwen_embed.Reranker` (saved as its file path by ``to_dict``).
        quant: Quantization of a catalog or Hub model (default: the catalog entry's); for a local
            file ``None`` (default) or the file's own, checked at load.
        top_k: How many Documents to return (at most).
        instruction: The reranking task's instruction (default: the reranker's).
        score_threshold: Drop Documents scoring below it (``None``: keep all ``top_k``).
        meta_fields_to_embed: Meta fields whose values are put before the content.
        embedding_separator: Joins those values and the content.
        reranker_options: Options of :class:`~qwen_embed.Reranker` and ``from_pretrained``.
    """

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        reranker: Reranker | None = None,
        quant: str | None = None,
        top_k: int = 10,
        instruction: str | None = None,
        score_threshold: float | None = None,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        reranker_options: dict[str, Any] | None = None,
    ) -> None:
        self.top_k = positive_int("top_k", top_k)
        self.instruction = check_instruction(instruction)
        self.score_threshold = _score_threshold(score_threshold)
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator
        self._source = ModelSource(Reranker, model=model, instance=reranker, quant=quant, options=reranker_options)

    def warm_up(self) -> None:
        """Load the reranker (once per process, through the shared cache); idempotent."""
        self._source.get()

    @property
    def reranker(self) -> Reranker:
        """The :class:`~qwen_embed.Reranker` in use (loads it if needed)."""
        return self._source.get()  # type: ignore[no-any-return]

    def to_dict(self) -> dict[str, Any]:
        """The component as a JSON-able dict (a ``reranker=`` object is saved as its file path)."""
        return default_to_dict(
            self,
            **self._source.config("reranker_options"),
            top_k=self.top_k,
            instruction=self.instruction,
            score_threshold=self.score_threshold,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QwenRanker:
        """Rebuild a component saved by :meth:`to_dict`."""
        return default_from_dict(cls, data)

    def _text_of(self, doc: Document) -> str:
        values = [str(doc.meta[k]) for k in self.meta_fields_to_embed if doc.meta.get(k) is not None]
        return self.embedding_separator.join([*values, doc.content or ""])

    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, list[Document]]:
        """Rank ``documents`` for ``query``: ``{"documents": copies, best first, with score set}``.

        Args:
            query: The query.
            documents: The Documents to rank (an empty list gives an empty list).
            top_k: Overrides the component's ``top_k`` for this run.
            score_threshold: Overrides the component's ``score_threshold`` for this run.
        """
        if not isinstance(query, str):
            raise InputTypeError(f"QwenRanker takes the query as a str, not {type(query).__name__}.")
        docs = _check_documents(documents, "QwenRanker", "pass the retriever's documents")
        limit = self.top_k if top_k is None else positive_int("top_k", top_k)
        threshold = self.score_threshold if score_threshold is None else _score_threshold(score_threshold)
        if not docs:
            return {"documents": []}
        texts = [self._text_of(d) for d in docs]
        hits = rank(self.reranker, query, texts, top_n=limit, instruction=self.instruction)
        ranked = [replace(docs[i], score=score) for i, score in hits if threshold is None or score >= threshold]
        return {"documents": ranked}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, list[Document]]:
        """:meth:`run` on a worker thread."""
        return await asyncio.to_thread(self.run, query, documents, top_k, score_threshold)
