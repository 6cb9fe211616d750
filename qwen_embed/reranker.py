"""The :class:`Reranker`: (query, document) pairs in, the official Qwen3-Reranker score out."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from . import _config
from ._model import GGUFModel
from ._pipeline import (
    TextTokenizer,
    as_text_iter,
    check_batch_size,
    check_batch_tokens,
    check_bool,
    check_gpu_layers,
    check_threads,
    plan_batches,
    positive_int,
    progress_bar,
)
from ._setup import check_model_path, resolve_max_length
from .calls import Receipt, RerankCall, RerankResult
from .engines.base import Engine, choose_backend
from .engines.gguf_info import read_gguf_info
from .engines.heads import RerankHead, check_reranker_file, read_rerank_head
from .errors import (
    ConfigurationError,
    EngineError,
    InputTooLongError,
    InputTypeError,
    UnsupportedModelError,
)
from .text.chunking import Chunker, Section
from .text.rerank_prompt import (
    DEFAULT_RERANK_INSTRUCTION,
    PREFIX,
    SUFFIX,
    as_pairs,
    check_instruction,
    head_body,
    tail_body,
)

__all__ = ["Reranker"]

logger = logging.getLogger(__name__)

#: How far past ``max_length`` (in multiples of it) a cut document is tokenized to count what the cut drops.
_COUNT_BEYOND = 4

_CHAT_MARKERS = ("<|im_start|>", "<|im_end|>")


@dataclass
class _Pair:
    """One pair, tokenized: the shared head (prefix + instruction + query) and its own tail."""

    key: tuple[str, str]  # (instruction, query): pairs with the same key share the head
    head: np.ndarray  # prefix + body head
    tail: np.ndarray  # body tail (cut to fit) + suffix


def _checked_call(call: object) -> RerankCall:
    """``call``, or the default :class:`~qwen_embed.RerankCall` for ``None``; anything else is refused."""
    if call is None:
        return RerankCall()
    if not isinstance(call, RerankCall):
        raise ConfigurationError(f"call must be a RerankCall, not {type(call).__name__}")
    return call


class Reranker(GGUFModel):
    """Qwen3-Reranker scores from a GGUF file, on llama.cpp (or PyTorch).

    >>> rr = Reranker("Qwen3-Reranker-0.6B-Q8_0.gguf")                       # doctest: +SKIP
    >>> rr.rank("What is GGUF?", ["A file format for models.", "A city."])  # doctest: +SKIP
    [{'corpus_id': 0, 'score': 0.93...}, {'corpus_id': 1, 'score': 0.01...}]

    The score is the official one, ``softmax([l_no, l_yes])[yes]`` at the last token of the
    README's prompt, computed as ``sigmoid(h · (w_yes - w_no))`` from the final-norm hidden
    state ``h``; the head ``w_yes - w_no`` is read from the file, whichever way it was
    converted (see :attr:`head`).

    Args:
        model_path: A Qwen3-Reranker ``.gguf`` file (reranker-mode or plain causal-LM conversion).
        instruction: Default task instruction (default: the README's
            ``"Given a web search query, retrieve relevant passages that answer the query"``).
        max_length: Most tokens per pair, prompt included (default 8192, Qwen's setting, capped
            at the file's context). A longer pair loses the end of its document (only the part
            that is kept is ever tokenized); the prompt's fixed parts are never cut, and a query
            or instruction that leaves no room for the document raises
            :class:`~qwen_embed.InputTooLongError`.
        backend: ``"auto"`` (default), ``"llama"`` or ``"torch"``, chosen as for the Embedder.
        n_threads: CPU threads (default: ``$QWEN_EMBED_NUM_THREADS`` or all this process may use).
        n_gpu_layers: Layers to offload to a GPU (llama.cpp).
        batch_size: Most pairs per decode.
        batch_tokens: Most tokens per decode (a longer pair is decoded alone).
        show_progress: Progress bar; ``None`` shows one only in a notebook.
        dtype, device: Torch engine only.
        share_prefix: Decode a query's head once for all its documents (llama.cpp engine).
        flash_attn: llama.cpp's flash attention (``None``: llama.cpp decides). Off by default: its
            CPU kernel sums values in float16, which moves log-odds by ~1e-3 depending on how the
            cache is laid out, so shared and unshared decodes would differ by more than float32 noise.

    Raises:
        ModelNotFoundError, InvalidModelFileError: The file is missing or not GGUF.
        UnsupportedModelError: Not a Qwen3 reranker (an embedding model, another
            architecture, no head, or "yes"/"no" not single tokens).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        instruction: str | None = None,
        max_length: int | None = None,
        backend: str = "auto",
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        batch_size: int = _config.DEFAULT_BATCH_SIZE,
        batch_tokens: int = _config.DEFAULT_BATCH_TOKENS,
        show_progress: bool | None = None,
        dtype: str | None = None,
        device: str | None = None,
        share_prefix: bool = True,
        flash_attn: bool | None = False,
    ) -> None:
        self._start(locals())  # the recipe this Reranker pickles as: its file and its options
        check_model_path(model_path)
        info = read_gguf_info(model_path)
        check_reranker_file(info)
        self._tokenizer = TextTokenizer(self._require_engine, pre_tokenizer=info.metadata.get("tokenizer.ggml.pre"))
        self._info = info
        self._path = info.path
        self._instruction = check_instruction(instruction, DEFAULT_RERANK_INSTRUCTION)
        self._context_length = int(info.context_length or _config.DEFAULT_MAX_LENGTH)
        self._max_length = resolve_max_length(max_length, self._context_length)
        self._batch_size = check_batch_size(batch_size)
        self._n_threads = check_threads(n_threads)
        n_gpu_layers = check_gpu_layers(n_gpu_layers)
        self._show_progress = check_bool("show_progress", show_progress, optional=True)
        self._share_prefix = check_bool("share_prefix", share_prefix)
        self._head_cache: dict[tuple[str, str], np.ndarray] = {}
        self._cache_lock = threading.Lock()
        self._backend, self._backend_reason = choose_backend(backend, device, info=info, dtype=dtype)
        self._batch_tokens = check_batch_tokens(
            batch_tokens,
            info=info,
            backend=self._backend,
            max_length=self._max_length,
            max_sequences=min(self._batch_size + 1, 256),
            shared_head=self._backend == "llama",
            gpu=n_gpu_layers != 0 or (device or "").startswith("cuda") or "CUDA" in self._backend_reason,
        )
        self._engine = self._make_engine(n_gpu_layers=n_gpu_layers, dtype=dtype, device=device, flash_attn=flash_attn)
        try:
            self._prefix = self._engine.tokenize(PREFIX, special=True)
            self._suffix = self._engine.tokenize(SUFFIX, special=True)
            self._check_vocabulary(self._engine)
            self._head: RerankHead = read_rerank_head(info, lambda: self._label_ids(self._engine))
        except BaseException:
            self.close()
            raise
        self._weight = self._head.weight
        self._chunker = Chunker(self._engine.tokenize, self._engine.token_bytes)  # long_text="chunk" windows
        fixed = len(self._prefix) + len(self._suffix)
        if self._max_length <= fixed:
            self.close()
            raise ConfigurationError(
                f"max_length={self._max_length} leaves no room for the pair: the prompt's fixed parts take "
                f"{fixed} tokens. Use at least {fixed + 16}."
            )
        logger.debug("ready: %r", self)

    def _make_engine(
        self, *, n_gpu_layers: int, dtype: str | None, device: str | None, flash_attn: bool | None
    ) -> Engine:
        if self._backend == "torch":
            return self._torch_engine(
                pooling="last",
                dtype=dtype,
                device=device,
                max_sequences=self._batch_size,
                batch_tokens=self._batch_tokens,
            )
        self._no_torch_options(dtype, device)
        from .engines.llama_prefix import SharedPrefixEngine

        return SharedPrefixEngine(
            self._path,
            pooling="last",
            n_threads=self._n_threads,
            n_gpu_layers=n_gpu_layers,
            max_sequences=self._batch_size + 1,  # sequence 0 holds a shared head
            batch_tokens=self._batch_tokens,
            max_context=self._max_length + self._batch_tokens,  # a head and a full batch of tails
            quantized=self.quantized,
            flash_attn=flash_attn,
        )

    catalog_kind = "reranker"  # from_pretrained looks names up in the reranker catalog

    @property
    def head(self) -> RerankHead:
        """The scoring head found in the file (tensor, rows, storage type)."""
        return self._head

    @property
    def instruction(self) -> str:
        return self._instruction

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def engine(self) -> str:
        if self._backend == "torch":
            return f"torch {self.compute_dtype or ''}".strip()
        return "llama.cpp, shared prefix" if self._share_prefix else "llama.cpp"

    def __repr__(self) -> str:
        default = self._instruction == DEFAULT_RERANK_INSTRUCTION
        instruction = "default" if default else repr(self._instruction)
        state = "" if self._engine is not None else ", closed"
        return (
            f"Reranker(model={self._path.name!r}, quant={self.quantization}, head={self._head.description}, "
            f"max_length={self._max_length}, context={self._context_length}, instruction={instruction}, "
            f"threads={self._n_threads}, engine={self.engine}{state})"
        )

    # ------------------------------------------------------------------ tokens

    def format(self, query: str, document: str, *, instruction: str | None = None) -> str:
        """The exact string the model reads for a pair (before any truncation)."""
        chosen = self._instruction if instruction is None else check_instruction(instruction)
        return PREFIX + head_body(chosen, query) + tail_body(document) + SUFFIX

    def tokenize(self, query: str, document: str, *, instruction: str | None = None) -> np.ndarray:
        """The token ids the model reads for a pair, truncated to ``max_length`` as the official recipe does.

        The prompt's fixed parts are tokenized with special tokens parsed; the query, document and
        instruction never are (a ``<|im_end|>`` written in a document stays text).
        """
        chosen = self._instruction if instruction is None else check_instruction(instruction)
        pair = self._pair(query, document, chosen, 0)
        return np.concatenate([pair.head, pair.tail]).astype(np.int32)

    # ------------------------------------------------------------------ scoring

    def run(self, pairs: Iterable[Sequence[str]] | Sequence[str], call: RerankCall | None = None) -> RerankResult:
        """Score (query, document) pairs as ``call`` says, with a :class:`~qwen_embed.Receipt` per pair.

        >>> result = rr.run([(query, long_report)], RerankCall(long_text="chunk"))  # doctest: +SKIP
        >>> result.scores[0], result.best_spans[0]                                   # doctest: +SKIP

        The one scoring path: :meth:`predict` and :meth:`rank` build a :class:`~qwen_embed.RerankCall`
        and come here. With ``long_text="chunk"`` a document over ``max_length`` is scored in
        token-exact windows (each with the whole prompt, instruction and query), the window log-odds
        are aggregated (``max`` by default), and ``best_spans`` gives the best window's character
        span in the document (in NFC, which most text already is) so an answer can cite it.
        """
        call = _checked_call(call)
        single, items = as_pairs(pairs)
        limit = self._batch_size if call.batch_size is None else min(call.batch_size, self._batch_size)
        units, receipts = self._plan(items, call)
        deterministic = bool(call.deterministic)
        logits = self._log_odds(units, 1 if deterministic else limit, call.show_progress, share=not deterministic)
        out = np.empty(len(items), dtype=np.float64)
        best: list[tuple[int, int] | None] = [None] * len(items)
        first = 0
        for i, receipt in enumerate(receipts):
            mine = logits[first : first + receipt.chunks]
            first += receipt.chunks
            if receipt.chunks == 1:
                out[i] = mine[0]
                continue
            top = int(np.argmax(mine))
            best[i] = receipt.spans[top]
            out[i] = {"max": mine[top], "mean": mine.mean(), "first": mine[0]}[call.aggregate]
        cut = [i for i, r in enumerate(receipts) if r.truncated]
        if cut:
            logger.warning(
                "%d of %d pairs were over max_length=%d and lost the end of their document (the official recipe's "
                "cut; first: pair #%d, %s%d tokens dropped); long_text='chunk' scores every window instead",
                len(cut), len(items), self._max_length, cut[0], "" if receipts[cut[0]].complete else "at least ",
                receipts[cut[0]].dropped_tokens,
            )  # fmt: skip
        scores = (out if call.raw else _sigmoid(out)).astype(np.float32)
        return RerankResult(scores.reshape(()) if single else scores, tuple(receipts), tuple(best), call)

    def plan(
        self, pairs: Iterable[Sequence[str]] | Sequence[str], call: RerankCall | None = None
    ) -> tuple[Receipt, ...]:
        """The receipts :meth:`run` would give for ``pairs`` under ``call``, without decoding anything.

        >>> [r.tokens_used for r in rr.plan([(query, report)], RerankCall(long_text="chunk"))]  # doctest: +SKIP

        What each pair will cost the engine (``tokens_used``: every window of a chunked document,
        each with its prompt), whether it would be cut and by how much, and a chunked document's
        window spans. The same tokenization and checks as :meth:`run`, so it raises what ``run``
        would for bad input (``InputTooLongError`` under ``long_text="error"``, for example).
        One pair in gives a one-receipt tuple too.
        """
        call = _checked_call(call)
        _, items = as_pairs(pairs)
        self._require_engine()
        return tuple(self._plan(items, call)[1])

    def _plan(self, items: Sequence[tuple[object, object]], call: RerankCall) -> tuple[list[_Pair], list[Receipt]]:
        """The sequences to score (a pair's windows consecutive: ``receipt.chunks`` of them) and a receipt per pair."""
        chosen = self._instruction if call.instruction is None else call.instruction
        units: list[_Pair] = []
        receipts: list[Receipt] = []
        for i, (query, document) in enumerate(items):
            windows, receipt = self._plan_pair(query, document, chosen, i, call)
            units.extend(windows)
            receipts.append(receipt)
        return units, receipts

    def predict(
        self,
        pairs: Iterable[Sequence[str]] | Sequence[str],
        *,
        instruction: str | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        raw: bool = False,
        long_text: str = "truncate",
        aggregate: str = "max",
        deterministic: bool | None = None,
    ) -> np.ndarray:
        """Score (query, document) pairs.

        Args:
            pairs: A list of ``(query, document)`` pairs (returns shape ``(n,)``), or one pair
                (returns a 0-d array).
            instruction: Task instruction for this call (default: the reranker's).
            batch_size: Most pairs per decode (at most the reranker's ``batch_size``).
            show_progress: Progress bar; default: the reranker's setting.
            raw: Return the log-odds ``l_yes - l_no`` instead of ``p(yes)``.
            long_text: A pair over ``max_length``: ``"truncate"`` (the official recipe: the end of the
                document is cut, and a warning says how much), ``"chunk"`` (every window of the
                document is scored; see :meth:`run`) or ``"error"``.
            aggregate: With ``"chunk"``: ``"max"``, ``"mean"`` or ``"first"`` of the window log-odds.
            deterministic: Bit-identical scores whatever the other pairs (each decoded alone).

        Returns:
            float32 ``p(yes)`` in [0, 1] (or log-odds), in input order. :meth:`run` returns them with
            a receipt per pair.
        """
        call = RerankCall(
            instruction=instruction, batch_size=batch_size, show_progress=show_progress, raw=raw,
            long_text=long_text, aggregate=aggregate, deterministic=deterministic,
        )  # fmt: skip
        return self.run(pairs, call).scores

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
        return_documents: bool = False,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        long_text: str = "truncate",
        aggregate: str = "max",
        deterministic: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Rank ``documents`` for ``query``, best first (sentence-transformers' ``CrossEncoder.rank`` shape).

        An empty document is a valid pair (the model reads an empty ``<Document>:`` field), as an
        empty text is for the Embedder. ``long_text``, ``aggregate`` and ``deterministic`` are
        :meth:`predict`'s.

        Returns:
            ``[{"corpus_id": index, "score": p_yes, "text"?: document, "span"?: (start, end)}, ...]``,
            sorted by score (ties keep input order), cut to ``top_k`` (a ``top_k`` over the number of
            documents returns them all). ``span`` (with ``long_text="chunk"``, for a document scored
            in windows) is the best window's character span in the document.
        """
        if not isinstance(query, str):
            raise InputTypeError(f"query must be a str, not {type(query).__name__}")
        docs = list(as_text_iter(documents, name="documents", takes="a list of str"))
        if top_k is not None:
            top_k = min(positive_int("top_k", top_k), max(1, len(docs)))
        return_documents = check_bool("return_documents", return_documents)
        call = RerankCall(
            instruction=instruction, batch_size=batch_size, show_progress=show_progress, long_text=long_text,
            aggregate=aggregate, deterministic=deterministic,
        )  # fmt: skip
        result = self.run([(query, cast(str, d)) for d in docs], call)  # run checks each document's type
        scores = result.scores
        order = np.argsort(-scores, kind="stable")[:top_k]
        results: list[dict[str, Any]] = []
        for i in order.tolist():
            entry: dict[str, Any] = {"corpus_id": int(i), "score": float(scores[i])}
            if return_documents:
                entry["text"] = docs[i]
            span = result.best_spans[i]
            if span is not None:
                entry["span"] = span
            results.append(entry)
        return results

    def _head_tokens(self, query: object, document: object, instruction: str, index: int) -> np.ndarray:
        """The body's shared start (instruction and query), cached per (instruction, query)."""
        for what, value in (("query", query), ("document", document)):
            if not isinstance(value, str):
                raise InputTypeError(f"Pair #{index}: the {what} is {type(value).__name__}, not str.")
        assert isinstance(query, str)
        key = (instruction, query)
        budget = self._max_length - len(self._prefix) - len(self._suffix)  # tokens for the body
        with self._cache_lock:
            body_head = self._head_cache.get(key)
        if body_head is None:
            # The head must leave the document at least one token: else every document would get the same score.
            body_head, over = self._tokenizer.tokens_prefix(
                head_body(instruction, query), budget - 1, index, label=f"Pair #{index}: the query"
            )
            if over:
                raise self._head_too_long(instruction, query, index, budget)
            with self._cache_lock:
                if len(self._head_cache) > 4096:
                    self._head_cache.clear()
                self._head_cache[key] = body_head
        return body_head

    def _pair(self, query: object, document: object, instruction: str, index: int) -> _Pair:
        """One pair as the official recipe reads it: the body cut from its right end (the document's) to fit."""
        windows, _ = self._plan_pair(query, document, instruction, index, RerankCall())
        return windows[0]

    def _plan_pair(
        self, query: object, document: object, instruction: str, index: int, call: RerankCall
    ) -> tuple[list[_Pair], Receipt]:
        """The sequences one pair is scored from (one, or a window each) and its receipt."""
        body_head = self._head_tokens(query, document, instruction, index)
        assert isinstance(query, str) and isinstance(document, str)
        key = (instruction, query)
        head = np.concatenate([self._prefix, body_head])
        fixed = len(head) + len(self._suffix)
        keep = self._max_length - fixed
        # Only what can be kept (and a bounded stretch beyond it, to count what a cut drops) is tokenized:
        # a 10 MB document costs what its first tokens do.
        body_tail, more = self._tokenizer.tokens_prefix(
            tail_body(document), keep + _COUNT_BEYOND * self._max_length, index, label=f"Pair #{index}: the document"
        )
        n_tokens = fixed + len(body_tail)
        if len(body_tail) <= keep:
            pair = _Pair(key, head, np.concatenate([body_tail, self._suffix]))
            return [pair], Receipt(n_tokens, n_tokens)
        if call.long_text == "error":
            amount = f"at least {n_tokens:,}" if more else f"{n_tokens:,}"
            raise InputTooLongError(
                f"Pair #{index}: the pair is {amount} tokens (prompt, instruction, query and document) but "
                f"max_length={self._max_length:,}. Pass long_text='chunk' to score every window of the document, "
                "long_text='truncate' to cut its end (the official recipe), or raise max_length.",
                index=index,
                n_tokens=n_tokens,
                limit=self._max_length,
                param="document",
            )
        if call.long_text == "truncate":
            pair = _Pair(key, head, np.concatenate([body_tail[:keep], self._suffix]))
            receipt = Receipt(
                n_tokens, self._max_length, truncated=True, dropped_tokens=len(body_tail) - keep, complete=not more
            )
            return [pair], receipt
        return self._windows(key, head, document, index, keep, call, n_tokens, complete=not more)

    def _windows(
        self,
        key: tuple[str, str],
        head: np.ndarray,
        document: str,
        index: int,
        keep: int,
        call: RerankCall,
        n_tokens: int,
        *,
        complete: bool,
    ) -> tuple[list[_Pair], Receipt]:
        """Token-exact windows of a long document, each with the whole head and suffix."""
        text = self._tokenizer.normalized(document, index, label=f"Pair #{index}: the document")
        window = keep - 1  # the body's leading space can take a token of its own
        if window < 1:
            raise ConfigurationError(
                f"max_length={self._max_length} leaves no room for a document window after the prompt and query"
            )
        chunks = self._chunker.split(
            text, Section((), 0, len(text)), window=window, overlap=min(call.overlap, window - 1), keep_blank=True
        )
        pairs: list[_Pair] = []
        for chunk in chunks:
            tail = self._tokenizer.tokens(tail_body(chunk.text), index, label=f"Pair #{index}: the document")
            if len(tail) > keep:  # cannot happen with a window one token short; never send an over-long pair
                raise EngineError(f"Pair #{index}: a document window tokenized to {len(tail)} tokens, over {keep}")
            pairs.append(_Pair(key, head, np.concatenate([tail, self._suffix])))
        used = sum(len(p.head) + len(p.tail) for p in pairs)
        spans = tuple((c.start, c.end) for c in chunks)
        receipt = Receipt(n_tokens, used, chunks=len(pairs), fusion=call.aggregate, spans=spans, complete=complete)
        return pairs, receipt

    def _head_too_long(self, instruction: str, query: str, index: int, budget: int) -> InputTooLongError:
        """InputTooLongError for a pair whose instruction (else query) leaves the document no token."""
        instruction_over = self._tokenizer.tokens_prefix(head_body(instruction, ""), budget - 1)[1]
        param = "instruction" if instruction_over else "query"
        fixed = len(self._prefix) + len(self._suffix)
        counted, more = self._tokenizer.tokens_prefix(head_body(instruction, query), 4 * self._max_length)
        n_tokens = fixed + len(counted) + int(more)
        amount = f"at least {n_tokens:,}" if more else f"{n_tokens:,}"
        return InputTooLongError(
            f"Pair #{index}: the {param} leaves no room for the document: the prompt, instruction and query take "
            f"{amount} tokens before any document token, and max_length={self._max_length:,} (the prompt's fixed "
            f"parts take {fixed}). Shorten the {param} or raise max_length (at most {self._context_length:,}).",
            index=index,
            n_tokens=n_tokens,
            limit=self._max_length,
            param=param,
        )

    def _log_odds(
        self, pairs: list[_Pair], limit: int, show_progress: bool | None, *, share: bool = True
    ) -> np.ndarray:
        engine = self._require_engine()
        hidden = np.empty((len(pairs), engine.n_embd), dtype=np.float32)
        groups: dict[tuple[str, str], list[int]] = {}
        alone: list[int] = []
        shared = share and self._share_prefix and hasattr(engine, "embed_shared")
        for i, pair in enumerate(pairs):
            (groups.setdefault(pair.key, []) if shared else alone).append(i)
        for key, members in list(groups.items()):
            if len(members) < 2:  # one document: sharing would only add a decode
                alone.extend(groups.pop(key))
        sequences = {i: np.concatenate([pairs[i].head, pairs[i].tail]) for i in alone}
        plain = plan_batches([len(sequences[i]) for i in alone], max_tokens=self._batch_tokens, max_sequences=limit)
        plans = []
        for members in groups.values():
            tails = [pairs[i].tail for i in members]
            max_tails = min(limit, engine.max_tails)  # type: ignore[attr-defined]
            plans.append(
                (
                    members,
                    tails,
                    plan_batches([len(t) for t in tails], max_tokens=self._batch_tokens, max_sequences=max_tails),
                )
            )
        total = sum(len(s) for s in sequences.values()) + sum(
            len(pairs[m[0]].head) + sum(len(t) for t in tails) for m, tails, _ in plans
        )
        n_batches = len(plain) + sum(len(b) for _, _, b in plans)
        show = self._show_progress if show_progress is None else show_progress
        bar = progress_bar(show, total=total, batches=n_batches, desc="Reranking")
        try:
            for batch in plain:
                rows = [alone[j] for j in batch.tolist()]
                hidden[rows] = engine.embed([sequences[i] for i in rows])
                if bar is not None:
                    bar.update(sum(len(sequences[i]) for i in rows))
            for members, tails, batches in plans:
                head = pairs[members[0]].head
                on_batch = bar.update if bar is not None else None
                hidden[members] = engine.embed_shared(head, tails, batches, on_batch=on_batch)  # type: ignore[attr-defined]
                if bar is not None:
                    bar.update(len(head))
        finally:
            if bar is not None:
                bar.close()
        if not np.isfinite(hidden).all():
            raise EngineError("the engine returned non-finite hidden states (NaN/inf); the model file may be corrupt")
        return np.asarray(hidden.astype(np.float64) @ self._weight)

    # ------------------------------------------------------------------ vocabulary

    def _check_vocabulary(self, engine: Engine) -> None:
        for marker in _CHAT_MARKERS:
            if len(engine.tokenize(marker, special=True)) != 1:
                raise UnsupportedModelError(
                    f"{self._path.name}: {marker} is not one token in this vocabulary; the Qwen3-Reranker prompt "
                    "needs the Qwen chat markers."
                )
        for marker in ("<think>", "</think>"):
            if len(engine.tokenize(marker, special=True)) != 1:
                logger.warning("%s: %s is not one token here; scores will differ from Qwen's", self._path.name, marker)

    def _label_ids(self, engine: Engine | None) -> tuple[int, int]:
        assert engine is not None
        ids = []
        for label in ("yes", "no"):
            tokens = engine.tokenize(label, special=False)
            if len(tokens) != 1:
                raise UnsupportedModelError(
                    f"{self._path.name}: {label!r} is {len(tokens)} tokens in this vocabulary, not one; the file has "
                    "no classifier head (cls.output) and its LM head cannot give a yes/no score. Not a Qwen3-Reranker?"
                )
            ids.append(int(tokens[0]))
        return ids[0], ids[1]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable ``1 / (1 + exp(-x))`` (= softmax([l_no, l_yes])[yes])."""
    out = np.empty_like(x, dtype=np.float64)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out
