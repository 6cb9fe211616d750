"""LlamaIndex: :class:`QwenEmbedding`, a ``BaseEmbedding`` (``pip install "qwen-embed[llamaindex]"``).

>>> from llama_index.core import Settings, VectorStoreIndex
>>> from qwen_embed.integrations.llama_index import QwenEmbedding
>>> Settings.embed_model = QwenEmbedding(model="0.6B", quant="Q8_0")     # doctest: +SKIP
>>> index = VectorStoreIndex.from_documents(documents)                  # doctest: +SKIP

All six embedding methods are overridden: a batch of texts is one ``encode_documents``
call (LlamaIndex's default would embed one text per call), queries get the task's
instruction (LlamaIndex's HuggingFace wrapper drops Qwen3's), and the async methods run
on a worker thread instead of blocking the event loop.

:class:`QwenRerank` is a node postprocessor on a Qwen3-Reranker GGUF
(``index.as_query_engine(node_postprocessors=[QwenRerank(...)])``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from ._common import require

require("llama_index.core", extra="llamaindex", what="qwen_embed.integrations.llama_index")

from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.bridge.pydantic import Field, PrivateAttr  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle  # noqa: E402

from .._config import DEFAULT_BATCH_SIZE  # noqa: E402
from ..embedder import Embedder  # noqa: E402
from ..errors import ConfigurationError, InputTypeError  # noqa: E402
from ..reranker import Reranker  # noqa: E402
from ._common import ModelSource, Sides, one_text, positive_top_n, rank, text_list, to_floats  # noqa: E402

__all__ = ["QwenEmbedding", "QwenRerank"]


class QwenEmbedding(BaseEmbedding):
    """Qwen3-Embedding vectors for LlamaIndex.

    Args:
        model: A ``.gguf`` path, a catalog name (``"0.6B"``) or a Hub repo id.
        embedder: An existing :class:`~qwen_embed.Embedder` to use instead (excludes
            ``embedder_options``).
        quant: Quantization of a catalog or Hub model (default: the catalog entry's, ``Q8_0``); for a
            local file ``None`` (default) or the file's own, checked at load.
        task: Prompt name for both sides (``"qa"``, ``"sts"``, ...); default: web-search
            queries, bare documents.
        query_instruction: Instruction for queries, replacing the task's.
        document_instruction: Instruction for documents (symmetric tasks).
        dim: Output dimension (Matryoshka).
        embedder_options: Options of :class:`~qwen_embed.Embedder` and ``from_pretrained``.
        embed_batch_size: Texts per ``encode`` call (LlamaIndex's default of 10 is raised to
            the Embedder's batch size).
        **kwargs: Other :class:`BaseEmbedding` fields (``callback_manager``, ``num_workers``, ...).
    """

    model: str | None = Field(default=None, description="A .gguf file's absolute path, catalog name or Hub repo id.")
    quant: str | None = Field(default=None, description="Quantization (a local file's own, as read from it).")
    task: str | None = Field(default=None, description="Prompt name for both sides.")
    query_instruction: str | None = Field(default=None, description="Instruction for queries.")
    document_instruction: str | None = Field(default=None, description="Instruction for documents.")
    dim: int | None = Field(default=None, description="Output dimension (Matryoshka).")
    embedder_options: dict[str, Any] = Field(default_factory=dict, description="Embedder options.")

    _source: ModelSource = PrivateAttr()
    _sides: Sides = PrivateAttr()

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
        embed_batch_size: int = DEFAULT_BATCH_SIZE,
        **kwargs: Any,
    ) -> None:
        sides = Sides(task, query_instruction, document_instruction, dim)
        source = ModelSource(Embedder, model=model, instance=embedder, quant=quant, options=embedder_options)
        loaded: Embedder = source.get()
        sides.check(loaded)
        saved = source.config()  # a local file: its absolute path and the quantization it holds
        kwargs.setdefault("model_name", os.path.basename(str(saved["model"])))
        super().__init__(  # type: ignore[call-arg]
            model=saved["model"],
            quant=saved["quant"],
            task=task,
            query_instruction=query_instruction,
            document_instruction=document_instruction,
            dim=dim,
            embedder_options=saved["embedder_options"],
            embed_batch_size=embed_batch_size,
            **kwargs,
        )
        self._source = source
        self._sides = sides

    @classmethod
    def class_name(cls) -> str:
        return "QwenEmbedding"

    @property
    def embedder(self) -> Embedder:
        """The :class:`~qwen_embed.Embedder` in use."""
        return self._source.get()  # type: ignore[no-any-return]

    def _get_query_embedding(self, query: str) -> list[float]:
        text = one_text(query, method="get_query_embedding", many="get_text_embedding_batch")
        return to_floats(self._sides.queries(self.embedder, [text])[0])

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> list[float]:
        one = one_text(text, method="get_text_embedding", many="get_text_embedding_batch")
        return to_floats(self._sides.documents(self.embedder, [one])[0])

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        items = text_list(texts, method="get_text_embedding_batch", single="get_text_embedding")
        return to_floats(self._sides.documents(self.embedder, items))

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


class QwenRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes with a Qwen3-Reranker; scores become the reranker's probabilities.

    Args:
        model: A reranker ``.gguf`` path, a reranker catalog size (``"0.6B"``) or a Hub repo id.
        reranker: An existing :class:`~qwen_embed.Reranker` instead.
        quant: Quantization of a catalog or Hub model (default: the catalog entry's).
        top_n: How many nodes to keep (``None``: all, reordered).
        instruction: The reranking task's instruction (default: the reranker's).
        reranker_options: Options of :class:`~qwen_embed.Reranker` and ``from_pretrained``.
    """

    model: str | None = Field(default=None, description="A reranker .gguf's absolute path, catalog size or repo id.")
    quant: str | None = Field(default=None, description="Quantization (a local file's own, as read from it).")
    top_n: int | None = Field(default=3, description="How many nodes to keep (None: all).")
    instruction: str | None = Field(default=None, description="The reranking instruction.")

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
        **kwargs: Any,
    ) -> None:
        source = ModelSource(Reranker, model=model, instance=reranker, quant=quant, options=reranker_options)
        source.get()
        saved = source.config("reranker_options")
        super().__init__(  # type: ignore[call-arg]
            model=saved["model"], quant=saved["quant"], top_n=positive_top_n(top_n), instruction=instruction, **kwargs
        )
        self._source = source

    @classmethod
    def class_name(cls) -> str:
        return "QwenRerank"

    @property
    def reranker(self) -> Reranker:
        """The :class:`~qwen_embed.Reranker` in use."""
        return self._source.get()  # type: ignore[no-any-return]

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ConfigurationError("QwenRerank needs the query: pass query_str= or query_bundle=.")
        for i, node in enumerate(nodes):
            if not isinstance(node, NodeWithScore):
                raise InputTypeError(f"QwenRerank: item #{i} is {type(node).__name__}, not a NodeWithScore.")
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        hits = rank(self.reranker, query_bundle.query_str, texts, top_n=self.top_n, instruction=self.instruction)
        return [NodeWithScore(node=nodes[i].node, score=score) for i, score in hits]

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._postprocess_nodes, nodes, query_bundle)
