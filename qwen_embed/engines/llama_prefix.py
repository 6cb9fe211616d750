"""Prefix-shared decoding on llama.cpp: one query's head decoded once for all its documents.

A reranker reads ``prefix + instruction + query`` (the *head*, ~70 tokens) before every
document of a query. :meth:`SharedPrefixEngine.embed_shared` decodes the head once into
sequence 0 of the KV cache, then, for each packed batch of documents, gives sequences
``1..k`` the head's cells with ``llama_memory_seq_cp`` (with the unified cache the engine
uses, the cells are shared, not copied) and decodes each document's *tail* in its own
sequence at positions continuing after the head. Only each tail's last token is an output,
and its final-norm hidden state is read through the eval callback exactly as
:class:`~qwen_embed.engines.llama.LlamaCppEngine` reads it for embeddings; the vocabulary
projection never runs.

The result equals decoding ``head + tail`` as one sequence (tested to float tolerance): the
attention of a tail token sees the head's keys and values, which are the same numbers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import EngineError
from ._native import llama_cpp
from .llama import LlamaCppEngine

__all__ = ["SharedPrefixEngine"]

logger = logging.getLogger(__name__)


class SharedPrefixEngine(LlamaCppEngine):
    """:class:`LlamaCppEngine` plus :meth:`embed_shared` (sequence 0 holds the shared head)."""

    @property
    def max_tails(self) -> int:
        """Most tails one decode holds (sequence 0 is the head's)."""
        return max(1, self.max_sequences - 1)

    def embed_shared(
        self,
        head: np.ndarray,
        tails: Sequence[np.ndarray],
        batches: Sequence[np.ndarray],
        *,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Final-norm hidden state at the last token of ``head + tail``, for every tail.

        Args:
            head: Token ids every sequence starts with (decoded once).
            tails: Each sequence's remaining tokens (at least one each).
            batches: Indices into ``tails``, one array per decode (see
                :func:`qwen_embed._pipeline.plan_batches`); each at most :attr:`max_tails` long.
            on_batch: Called with the tokens of each batch once it is decoded (progress).

        Returns:
            ``(len(tails), n_embd)`` float32, in the order of ``tails``.
        """
        n_head = len(head)
        if n_head < 1:
            raise EngineError("the shared head is empty")
        lengths = np.fromiter((len(t) for t in tails), dtype=np.int64, count=len(tails))
        if len(tails) and lengths.min() < 1:
            raise EngineError("cannot decode an empty tail")
        batch_tokens = [int(lengths[b].sum()) for b in batches]
        if any(len(b) > self.max_tails for b in batches):
            raise EngineError(f"a batch holds more than {self.max_tails} tails")
        need = n_head + max(batch_tokens, default=0)
        if need > self._max_context:
            raise EngineError(f"{need} tokens (head {n_head} + one batch) exceed the context limit {self._max_context}")
        out = np.empty((len(tails), self.n_embd), dtype=np.float32)
        if not len(tails):
            return out

        with self._guard.use(), self._lock:
            self._ensure_context(need)  # before the head: a new context would lose its cache
            memory = llama_cpp.llama_get_memory(self._ctx)
            arrays = self._batch_arrays
            arrays["token"][:n_head] = head
            arrays["pos"][:n_head] = np.arange(n_head, dtype=np.int32)
            arrays["seq"][:n_head] = 0
            arrays["n_seq_id"][:n_head] = 1
            arrays["logits"][:n_head] = 0
            arrays["logits"][n_head - 1] = 1  # one output row: the graph runs as for any decode
            self._decode_marked(n_head, 1, self._clear_memory)

            for batch, n_tokens in zip(batches, batch_tokens):
                k = len(batch)
                seqs = np.arange(1, k + 1, dtype=np.int32)
                share_head = functools.partial(_share_head, memory, seqs.tolist())
                parts = [tails[i] for i in batch]
                sizes = lengths[batch]
                ends = np.cumsum(sizes)
                starts = ends - sizes
                arrays["token"][:n_tokens] = np.concatenate(parts)
                arrays["pos"][:n_tokens] = (
                    n_head + np.arange(n_tokens, dtype=np.int64) - np.repeat(starts, sizes)
                ).astype(np.int32)
                arrays["seq"][:n_tokens] = np.repeat(seqs, sizes)
                arrays["n_seq_id"][:n_tokens] = 1
                arrays["logits"][:n_tokens] = 0
                arrays["logits"][ends - 1] = 1
                out[batch] = self._decode_marked(n_tokens, k, share_head)
                for seq in seqs.tolist():  # drop the tails; sequence 0 keeps the head's cells
                    llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
                if on_batch is not None:
                    on_batch(n_tokens)
        return out


def _share_head(memory: object, seqs: list[int]) -> None:
    """Give sequences ``seqs`` the head's cells (sequence 0), dropping what a stopped decode left in them."""
    for seq in seqs:
        llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
        llama_cpp.llama_memory_seq_cp(memory, 0, seq, -1, -1)
