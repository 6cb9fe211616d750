"""Haystack: :class:`QwenTextEmbedder` and :class:`QwenDocumentEmbedder` (``pip install "qwen-embed[haystack]"``).

>>> from qwen_embed.integrations.haystack import QwenDocumentEmbedder, QwenTextEmbedder
>>> indexing.add_component("embedder", QwenDocumentEmbedder(model="0.6B"))     # doctest: +SKIP
>>> query.add_component("embedder", QwenTextEmbedder(model="0.6B"))            # doctest: +SKIP

The text embedder is the query side (the task's instruction), the document embedder the
document side (bare for retrieval). Both are light to build and JSON-serializable; the
model loads in ``warm_up`` (``Pipeline.run`` calls it), once per process for both
components through the shared cache. ``run_async`` runs on a worker thread.
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
from ..errors import InputTypeError  # noqa: E402
from ..hub.catalog import DEFAULT_QUANT  # noqa: E402
from ._common import ModelSource, Sides, text_list, to_floats  # noqa: E402

__all__ = ["QwenDocumentEmbedder", "QwenTextEmbedder"]


class _QwenComponent:
    """Options, model loading and serialization shared by both components."""

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        embedder: Embedder | None = None,
        quant: str = DEFAULT_QUANT,
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
        """The component as a JSON-able dict (an ``embedder=`` object is saved as its file path)."""
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
        quant: Quantization of a catalog or Hub model.
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
        quant: str = DEFAULT_QUANT,
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
        if isinstance(documents, str) or not isinstance(documents, list):
            raise InputTypeError(
                f"QwenDocumentEmbedder takes a list of Documents, not {type(documents).__name__}; "
                "to embed a query string use QwenTextEmbedder."
            )
        for i, doc in enumerate(documents):
            if not isinstance(doc, Document):
                raise InputTypeError(f"QwenDocumentEmbedder: item #{i} is {type(doc).__name__}, not a Document.")
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
