"""Chroma: :class:`QwenEmbeddingFunction`, a registered embedding function (``pip install "qwen-embed[chroma]"``).

>>> import chromadb
>>> from qwen_embed.integrations.chroma import QwenEmbeddingFunction
>>> client = chromadb.PersistentClient(path="./db")                                   # doctest: +SKIP
>>> docs = client.create_collection("docs", embedding_function=QwenEmbeddingFunction(model="0.6B"))  # doctest: +SKIP

Documents (``add``, ``upsert``) go through ``__call__`` (the document side, bare for
retrieval) and query texts through ``embed_query`` (the task's instruction). The function
is registered under the name ``"qwen_embed"`` and saves its configuration (model, quant,
task, instructions, dim) with the collection, so a later process that has imported this
module reopens the collection with ``client.get_collection("docs")`` and gets the same
function back. A local file is saved as its absolute path with the quantization it holds.
If the file has moved since, Chroma's error names the missing path; pass the function with
``model=`` the new path (``get_collection("docs", embedding_function=QwenEmbeddingFunction(...))``)
each time you open the collection. Another quantization than the saved one is refused at load.
The vectors are L2-normalized and the default space is cosine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._common import require

require("chromadb", extra="chroma", what="qwen_embed.integrations.chroma")

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space  # noqa: E402
from chromadb.utils.embedding_functions import register_embedding_function  # noqa: E402

from ..embedder import Embedder  # noqa: E402
from ..errors import ConfigurationError  # noqa: E402
from ..hub.catalog import normalize_quant  # noqa: E402
from ._common import ModelSource, Sides, text_list  # noqa: E402

__all__ = ["QwenEmbeddingFunction"]

#: The name collections record; never change it, or saved collections stop reopening.
NAME = "qwen_embed"
_VECTOR_KEYS = ("task", "query_instruction", "document_instruction", "dim")


@register_embedding_function
class QwenEmbeddingFunction(EmbeddingFunction[Documents]):
    """Qwen3-Embedding vectors for Chroma collections.

    Args:
        model: A ``.gguf`` path, a catalog name (``"0.6B"``) or a Hub repo id.
        embedder: An existing :class:`~qwen_embed.Embedder` (saved as its file path).
        quant: Quantization of a catalog or Hub model (default: the catalog entry's, ``Q8_0``); for a
            local file ``None`` (default) or the file's own, checked at load.
        task: Prompt name for both sides (``"qa"``, ``"code_search"``, ``"sts"``, ...).
        query_instruction: Instruction for queries, replacing the task's.
        document_instruction: Instruction for documents (symmetric tasks).
        dim: Output dimension (Matryoshka).
        embedder_options: Options of :class:`~qwen_embed.Embedder` and ``from_pretrained``
            (saved with the collection when they are plain values; ``token`` never is).
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

    def __call__(self, input: Documents) -> Embeddings:  # Chroma requires the name `input`
        """Embed documents (one ``encode`` call)."""
        texts = text_list(input, method="QwenEmbeddingFunction", single="a one-item list")
        return list(self._sides.documents(self.embedder, texts))

    def embed_query(self, input: Documents) -> Embeddings:
        """Embed query texts with the task's query instruction (one ``encode`` call)."""
        texts = text_list(input, method="QwenEmbeddingFunction.embed_query", single="a one-item list")
        return list(np.asarray(self._sides.queries(self.embedder, texts), dtype=np.float32))

    @staticmethod
    def name() -> str:
        return NAME

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]  # unit vectors: all three rank alike

    def get_config(self) -> dict[str, Any]:
        """JSON-able configuration saved with the collection."""
        return {**self._source.config(), **self._sides.config()}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> QwenEmbeddingFunction:
        """The function a saved collection describes (the model comes from the shared cache)."""
        QwenEmbeddingFunction.validate_config(config)
        return QwenEmbeddingFunction(
            model=config.get("model"),
            quant=config.get("quant"),
            embedder_options=config.get("embedder_options") or None,
            **{key: config.get(key) for key in _VECTOR_KEYS},
        )

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        if not isinstance(config, Mapping):
            raise ConfigurationError(f"a qwen_embed config must be a dict, not {type(config).__name__}")
        known = {"model", "quant", "embedder_options", *_VECTOR_KEYS}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigurationError(f"unknown qwen_embed config keys {unknown}; known: {sorted(known)}")

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        """The model file may move; a change of quant, task, instructions or dim would mix incompatible vectors."""
        old_quant, new_quant = old_config.get("quant"), new_config.get("quant")
        if old_quant and new_quant and normalize_quant(str(old_quant)) != normalize_quant(str(new_quant)):
            raise ConfigurationError(
                f"cannot change the quant of a collection's qwen_embed function ({old_quant!r} -> {new_quant!r}): "
                "stored vectors would not match; re-embed into a new collection instead."
            )
        for key in _VECTOR_KEYS:
            if key in new_config and new_config.get(key) != old_config.get(key):
                raise ConfigurationError(
                    f"cannot change {key!r} of a collection's qwen_embed function "
                    f"({old_config.get(key)!r} -> {new_config.get(key)!r}): stored vectors would not match; "
                    "re-embed into a new collection instead."
                )

    def __repr__(self) -> str:
        config = self.get_config()
        return f"QwenEmbeddingFunction(model={config['model']!r}, task={config['task']!r}, dim={config['dim']!r})"
