"""``Retriever``: embed a query as the index's documents expect, search, and (optionally) rerank."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._pipeline import positive_int
from ..errors import ConfigurationError, InputTypeError
from .index import Hit, SearchIndex

if TYPE_CHECKING:
    from ..embedder import Embedder
    from ..reranker import Reranker

__all__ = ["Retriever"]


class Retriever:
    """Queries in, the best stored rows out: embed (as a query), search the index, rerank.

    >>> retriever = Retriever(embedder, "vectors/", reranker=reranker)   # doctest: +SKIP
    >>> retriever.search("What is GGUF?", k=5)                           # doctest: +SKIP
    [Hit(id='doc-17', score=0.98, text='GGUF is ...', ...), ...]

    Args:
        embedder: The Embedder that embeds the queries. It must match the index's recipe (model
            file, quantization, pooling, dim, normalize, query prompt), else
            :class:`~qwen_embed.search.EmbedderMismatchError` lists each difference.
        index: A :class:`SearchIndex`, an index folder, or a corpus folder indexed by
            ``qwen-embed index`` (its ``_index``).
        reranker: A :class:`~qwen_embed.Reranker` for a second stage (needs stored texts).
        view: Memory-map the index's graphs (an index larger than memory).
        rescore, rescore_multiplier: The defaults of :meth:`SearchIndex.search`.

    Queries are embedded with the prompt the index records (``encode_queries(task=...)`` or the
    instruction); documents were embedded as documents.
    """

    def __init__(
        self,
        embedder: Embedder,
        index: SearchIndex | str | os.PathLike[str],
        reranker: Reranker | None = None,
        *,
        view: bool = False,
        rescore: str | None = None,
        rescore_multiplier: int | None = None,
    ) -> None:
        self._owns_index = not isinstance(index, SearchIndex)
        self._index = index if isinstance(index, SearchIndex) else SearchIndex.open(index, view=view)
        try:
            recipe = self._index.recipe
            if recipe is None:
                raise ConfigurationError(
                    f"{self._index.path} records no embedding recipe, so this Embedder cannot be checked against "
                    "its documents; search it with SearchIndex.search(vectors), or build it with a recipe"
                )
            recipe.check(embedder, where=str(self._index.path))
            if reranker is not None and not self._index.stores_documents:
                raise ConfigurationError(
                    f"reranking needs the documents' texts, and {self._index.path} keeps none; build the index with "
                    "texts (qwen-embed index DIR finds the corpus source, or pass --source FILE)"
                )
        except BaseException:
            if self._owns_index:
                self._index.close()
            raise
        self._recipe = recipe
        self._embedder = embedder
        self._reranker = reranker
        self._rescore = rescore
        self._multiplier = rescore_multiplier

    @property
    def index(self) -> SearchIndex:
        return self._index

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        """The query vectors, embedded as the index expects."""
        call = self._recipe.query_call()
        if "instruction" in call:
            return self._embedder.encode(list(queries), instruction=call["instruction"])
        return self._embedder.encode_queries(list(queries), task=call["task"])

    def search(
        self, queries: str | Sequence[str], k: int = 10, rerank_top: int = 50, *, exact: bool | None = None
    ) -> Any:
        """The ``k`` best rows for each query, best first.

        Args:
            queries: One query (returns a list of :class:`~qwen_embed.search.Hit`) or a list
                (returns a list per query).
            k: Results per query.
            rerank_top: With a reranker: how many vector-search candidates it scores
                (at least ``k``); the ``k`` it scores highest are returned.
            exact: See :meth:`SearchIndex.search`.

        Returns:
            Hits with ``id``, ``score`` (the reranker's when one reranked), ``vector_score``,
            ``rerank_score``, and the stored ``text`` and ``metadata``.
        """
        single = isinstance(queries, str)
        if not single and (isinstance(queries, (bytes, dict)) or not isinstance(queries, Sequence)):
            raise InputTypeError(f"queries must be a str or a list of str, not {type(queries).__name__}")
        texts: list[str] = [queries] if isinstance(queries, str) else list(queries)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputTypeError(f"query #{i} is {type(text).__name__}, not str")
        k = positive_int("k", k)
        rerank_top = positive_int("rerank_top", rerank_top)
        if not texts:
            return []
        depth = max(k, rerank_top) if self._reranker is not None else k
        vectors = self.embed_queries(texts)
        found = self._index.search(
            vectors, depth, rescore=self._rescore, rescore_multiplier=self._multiplier, exact=exact
        )
        results = self._rerank(texts, found, k) if self._reranker is not None else [hits[:k] for hits in found]
        return results[0] if single else results

    def _rerank(self, queries: list[str], found: list[list[Hit]], k: int) -> list[list[Hit]]:
        assert self._reranker is not None
        pairs = []
        for query, hits in zip(queries, found):
            for hit in hits:
                if hit.text is None:
                    raise ConfigurationError(f"row {hit.id!r} keeps no text, so the reranker cannot score it")
                pairs.append((query, hit.text))
        scores = self._reranker.predict(pairs) if pairs else np.zeros(0, dtype=np.float32)
        out, at = [], 0
        for hits in found:
            mine = scores[at : at + len(hits)]
            at += len(hits)
            order = np.argsort(-mine, kind="stable")[:k]
            out.append([
                Hit(hits[i].id, float(mine[i]), hits[i].text, hits[i].metadata, vector_score=hits[i].score,
                    rerank_score=float(mine[i]))
                for i in order.tolist()
            ])  # fmt: skip
        return out

    def close(self) -> None:
        """Close the index if this Retriever opened it (the models are the caller's)."""
        if self._owns_index:
            self._index.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
