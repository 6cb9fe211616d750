"""LangChain: :class:`QwenEmbeddings`, a ``langchain_core`` ``Embeddings`` (``pip install "qwen-embed[langchain]"``).

>>> from qwen_embed.integrations.langchain import QwenEmbeddings
>>> embeddings = QwenEmbeddings(model="0.6B", quant="Q8_0")            # doctest: +SKIP
>>> from langchain_core.vectorstores import InMemoryVectorStore
>>> store = InMemoryVectorStore.from_texts(texts, embeddings)        # doctest: +SKIP

``embed_documents`` is one ``encode_documents`` call (real batching), ``embed_query`` one
``encode_queries`` call with the task's instruction; vectors come back as Python floats,
L2-normalized. The async methods run on a worker thread, never on the event loop.

:class:`QwenRerank` is a document compressor on a Qwen3-Reranker GGUF (for
``ContextualCompressionRetriever``): it keeps the ``top_n`` best documents, best first,
with the score in ``metadata["relevance_score"]``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from ._common import require

require("langchain_core", extra="langchain", what="qwen_embed.integrations.langchain")

from collections.abc import Sequence  # noqa: E402

from langchain_core.callbacks import Callbacks  # noqa: E402
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from pydantic import ConfigDict, PrivateAttr  # noqa: E402

from ..embedder import Embedder  # noqa: E402
from ..errors import InputTypeError  # noqa: E402
from ..reranker import Reranker  # noqa: E402
from ._common import ModelSource, Sides, one_text, positive_top_n, rank, text_list, to_floats  # noqa: E402

__all__ = ["QwenEmbeddings", "QwenRerank"]


class QwenEmbeddings(Embeddings):
    """Qwen3-Embedding vectors for LangChain.

    Args:
        model: A ``.gguf`` path, a catalog name (``"0.6B"``, ``"4B"``) or a Hub repo id.
        embedder: An existing :class:`~qwen_embed.Embedder` to use instead (share one model
            across adapters); excludes ``model`` and ``embedder_options``.
        quant: Quantization of a catalog or Hub model (default: the catalog entry's, ``Q8_0``); for a
            local file ``None`` (default) or the file's own, checked at load.
        task: Prompt name for both sides (``"qa"``, ``"code_search"``, ``"sts"``, ...); default:
            web-search queries, bare documents.
        query_instruction: Instruction for queries, replacing the task's.
        document_instruction: Instruction for documents (symmetric tasks), replacing the task's.
        dim: Output dimension (Matryoshka, 32 to the model's size).
        embedder_options: Options of :class:`~qwen_embed.Embedder` and ``from_pretrained``
            (``n_threads``, ``max_length``, ``long_text``, ``revision``, ...).

    The model is loaded (once per process, through the shared cache) when the object is made.
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
        embedder_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._sides = Sides(task, query_instruction, document_instruction, dim)
        self._source = ModelSource(Embedder, model=model, instance=embedder, quant=quant, options=embedder_options)
        self._sides.check(self._source.get())

    @property
    def embedder(self) -> Embedder:
        """The :class:`~qwen_embed.Embedder` in use."""
        return self._source.get()  # type: ignore[no-any-return]

    @property
    def dim(self) -> int:
        """Length of the vectors returned."""
        return self._sides.dim or self.embedder.dim

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (one ``encode_documents`` call); an empty list gives ``[]``."""
        items = text_list(texts, method="embed_documents", single="embed_query")
        return to_floats(self._sides.documents(self.embedder, items))

    def embed_query(self, text: str) -> list[float]:
        """Embed one query with the task's query instruction."""
        query = one_text(text, method="embed_query", many="embed_documents")
        return to_floats(self._sides.queries(self.embedder, [query])[0])

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` on a worker thread."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` on a worker thread."""
        return await asyncio.to_thread(self.embed_query, text)

    def __repr__(self) -> str:
        model = self._source.model or (self.embedder.model_path.name if self._source.loaded else None)
        return f"QwenEmbeddings(model={model!r}, task={self._sides.task!r}, dim={self.dim})"


class QwenRerank(BaseDocumentCompressor):
    """Rerank retrieved LangChain documents with a Qwen3-Reranker.

    Args:
        model: A reranker ``.gguf`` path, a reranker catalog size (``"0.6B"``) or a Hub repo id.
        reranker: An existing :class:`~qwen_embed.Reranker` instead.
        quant: Quantization of a catalog or Hub model (default: the catalog entry's).
        top_n: How many documents to keep (``None``: all, reordered).
        instruction: The reranking task's instruction (default: the reranker's).
        reranker_options: Options of :class:`~qwen_embed.Reranker` and ``from_pretrained``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    top_n: int | None = 3
    instruction: str | None = None

    _source: ModelSource = PrivateAttr()

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        reranker: Reranker | None = None,
        quant: str | None = None,
        top_n: int | None = 3,
        instruction: str | None = None,
        reranker_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(top_n=positive_top_n(top_n), instruction=instruction)  # type: ignore[call-arg]
        self._source = ModelSource(Reranker, model=model, instance=reranker, quant=quant, options=reranker_options)
        self._source.get()

    @property
    def reranker(self) -> Reranker:
        """The :class:`~qwen_embed.Reranker` in use."""
        return self._source.get()  # type: ignore[no-any-return]

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The ``top_n`` documents most relevant to ``query``, best first (one ``rank`` call)."""
        docs = list(documents)
        for i, doc in enumerate(docs):
            if not isinstance(doc, Document):
                raise InputTypeError(f"compress_documents: item #{i} is {type(doc).__name__}, not a Document.")
        texts = [d.page_content for d in docs]
        hits = rank(self.reranker, query, texts, top_n=self.top_n, instruction=self.instruction)
        return [
            docs[i].model_copy(update={"metadata": {**docs[i].metadata, "relevance_score": score}}) for i, score in hits
        ]

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """:meth:`compress_documents` on a worker thread."""
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)
