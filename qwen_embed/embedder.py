"""The :class:`Embedder`: text in, the official Qwen3-Embedding vector out."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any

import numpy as np

from . import _config
from ._model import GGUFModel
from ._pipeline import (
    TextTokenizer,
    as_text_list,
    check_batch_size,
    check_batch_tokens,
    check_bool,
    check_gpu_layers,
    check_threads,
    check_window,
    embed_sequences,
    in_notebook,
    positive_int,
    unwrap_scalar,
)
from ._setup import (
    as_chunk_config,
    as_registry,
    check_model_path,
    check_supported,
    find_eos,
    resolve_max_length,
    resolve_pooling,
)
from .calls import EncodeCall, EncodeResult, Receipt, Side
from .engines.base import Engine, Pooling, choose_backend
from .engines.gguf_info import read_gguf_info
from .errors import ConfigurationError, DimensionError, EngineError, InputTooLongError, InputTypeError
from .quantization import QuantizationRanges, quantize_embeddings
from .text.chunking import ChunkConfig, Chunker, LongEmbedding
from .text.long_documents import LongPlan, LongPlanner, assemble, chunk_config, document_text, fuse
from .text.long_text import ChunkPolicy, ErrorPolicy, InputTokens, get_policy
from .text.prompts import DEFAULT_REGISTRY, OFFICIAL_TEMPLATE, Prompt, PromptRegistry

__all__ = ["Embedder"]

logger = logging.getLogger(__name__)


def _receipt(n_tokens: int, planned: list[np.ndarray], plan: LongPlan | None) -> Receipt:
    """The receipt of one input from the sequences its policy planned (no second tokenization)."""
    used = sum(len(seq) for seq in planned)
    if plan is not None:
        spans = tuple((chunk.start, chunk.end) for chunk in plan.chunks)
        return Receipt(n_tokens, used, chunks=len(plan.chunks), fusion=plan.config.fusion, spans=spans)
    dropped = max(0, n_tokens - used)
    return Receipt(n_tokens, used, truncated=dropped > 0, dropped_tokens=dropped)


class Embedder(GGUFModel):
    """Qwen3-Embedding vectors from a GGUF file, on llama.cpp.

    Args:
        model_path: Path to a Qwen3-Embedding ``.gguf`` file.
        max_length: Most tokens the model sees per text, EOS (and prompt) included.
            Default: 8192 (Qwen's own setting), capped at the file's trained context.
        pooling: ``"last"`` or ``"mean"``; ``None`` uses the file's ``pooling_type``
            (last-token pooling for Qwen3 when the key is absent).
        normalize: L2-normalize the output vectors (the official recipe does).
        dim: Default output dimension (Matryoshka): the raw vector is sliced to ``dim``,
            then normalized. ``None`` keeps the native dimension.
        n_threads: CPU threads; default ``$QWEN_EMBED_NUM_THREADS`` or all CPUs this
            process may use.
        n_gpu_layers: Layers to offload to a GPU (llama.cpp built with GPU support).
        long_text: What to do with a text over ``max_length``: ``"error"`` (raise
            :class:`~qwen_embed.InputTooLongError` before decoding anything),
            ``"truncate"`` (keep the first tokens, and the EOS) or ``"chunk"`` (split it
            into token-exact chunks and fuse their vectors; see :meth:`encode_long`).
        show_progress: Progress bar for :meth:`encode`; ``None`` shows one only in a
            notebook.
        batch_size: Most texts packed into one decode.
        batch_tokens: Most tokens packed into one decode (a longer text is decoded alone).
        prompts: The prompt registry to use (default: :data:`qwen_embed.prompts.DEFAULT_REGISTRY`,
            live), or a mapping of extra names to instructions (or :class:`Prompt`) added to a
            copy of the built-ins.
        default_prompt_name: Prompt applied by :meth:`encode` when the call names none
            (default: none, texts are embedded as given).
        chunking: How ``long_text="chunk"`` splits and fuses: a preset name (``"general"``,
            ``"technical"``, ``"paper"``, ``"fiction"``, ``"legal"``, ``"code"``) or a
            :class:`~qwen_embed.ChunkConfig`.
        backend: ``"auto"`` (the default: torch where it is installed, the machine has AMX,
            AVX512-BF16 or CUDA, the model is 0.6B-sized or larger and its weights fit in memory;
            else llama.cpp; see :attr:`backend_reason`), ``"llama"`` or ``"torch"`` (extra ``torch``).
        dtype: Torch engine only: ``"bfloat16"``, ``"float32"`` or ``"float16"`` (default:
            bfloat16 on CUDA and on CPUs with AMX or AVX512-BF16, else float32).
        device: Torch engine only: ``"cpu"`` or ``"cuda"`` (default: CUDA when ``auto`` chose it).
        deterministic: Default of every call's ``deterministic``: the same text gives a bit-identical
            vector whatever batch it is packed with, its position and the thread count (each
            sequence is decoded alone, which costs the packing speed-up; see benchmarks/RESULTS.md).

    Raises:
        ModelNotFoundError: ``model_path`` does not exist.
        InvalidModelFileError: The file is not GGUF, or is truncated.
        UnsupportedModelError: The GGUF is not a supported embedding model.
        ModelLoadError: llama.cpp refused to load it.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        max_length: int | None = None,
        pooling: Pooling | None = None,
        normalize: bool = True,
        dim: int | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        long_text: str = "error",
        show_progress: bool | None = None,
        batch_size: int = _config.DEFAULT_BATCH_SIZE,
        batch_tokens: int = _config.DEFAULT_BATCH_TOKENS,
        prompts: PromptRegistry | Mapping[str, str | Prompt] | None = None,
        default_prompt_name: str | None = None,
        chunking: str | ChunkConfig = "general",
        backend: str = "auto",
        dtype: str | None = None,
        device: str | None = None,
        deterministic: bool = False,
    ) -> None:
        self._start(locals())  # the recipe this Embedder pickles as: its file and its options
        if self._options["prompts"] is DEFAULT_REGISTRY:
            self._options["prompts"] = None
        check_model_path(model_path)
        self._chunking = as_chunk_config(chunking)
        self._prompts = as_registry(prompts)
        if default_prompt_name is not None:
            self._prompts.get_prompt(default_prompt_name)
        self._default_prompt_name = default_prompt_name
        info = read_gguf_info(model_path)
        check_supported(info)
        self._tokenizer = TextTokenizer(self._require_engine, pre_tokenizer=info.metadata.get("tokenizer.ggml.pre"))
        self._info = info
        self._path = info.path
        self._native_dim = int(info.embedding_length or 0)
        self._context_length = int(info.context_length or _config.DEFAULT_MAX_LENGTH)
        self._pooling: Pooling = resolve_pooling(info, pooling)
        self._max_length = resolve_max_length(max_length, self._context_length)
        self._dim = self._check_dim(dim)
        self._normalize: bool = check_bool("normalize", normalize)
        self._policy = get_policy(long_text)
        self._show_progress = check_bool("show_progress", show_progress, optional=True)
        self._deterministic: bool = check_bool("deterministic", deterministic)
        self._batch_size = check_batch_size(batch_size)
        self._n_threads = check_threads(n_threads)
        n_gpu_layers = check_gpu_layers(n_gpu_layers)

        self._backend, self._backend_reason = choose_backend(backend, device, info=info, dtype=dtype)
        logger.debug("backend %s: %s", self._backend, self._backend_reason)
        # Bounded by what one decode can hold and by the memory it would take (never a 10^9-token context).
        self._batch_tokens = check_batch_tokens(
            batch_tokens,
            info=info,
            backend=self._backend,
            max_length=self._max_length,
            max_sequences=self._batch_size,
            pooling=self._pooling,
            gpu=n_gpu_layers != 0 or (device or "").startswith("cuda") or "CUDA" in self._backend_reason,
        )
        self._engine = self._make_engine(n_gpu_layers=n_gpu_layers, dtype=dtype, device=device)
        # llama.cpp holds at most 256 sequences per context: the planner never asks for more.
        self._batch_size = min(self._batch_size, self._engine.max_sequences)
        self._eos = find_eos(self._engine, info)
        self._chunker = Chunker(self._engine.tokenize, self._engine.token_bytes)
        self._planner = LongPlanner(self._tokenizer, self._chunker, max_length=self._max_length, eos=self._eos)
        logger.debug("ready: %r", self)

    def _make_engine(self, *, n_gpu_layers: int, dtype: str | None, device: str | None) -> Engine:
        if self._backend == "torch":
            return self._torch_engine(
                pooling=self._pooling,
                dtype=dtype,
                device=device,
                max_sequences=self._batch_size,
                batch_tokens=self._batch_tokens,
            )
        self._no_torch_options(dtype, device)
        from .engines.llama import LlamaCppEngine  # imports llama_cpp: keep `import qwen_embed` light

        return LlamaCppEngine(
            self._path,
            pooling=self._pooling,
            n_threads=self._n_threads,
            n_gpu_layers=n_gpu_layers,
            max_sequences=self._batch_size,
            batch_tokens=self._batch_tokens,
            max_context=max(self._max_length, self._batch_tokens),  # one decode holds a whole batch
            quantized=self.quantized,
        )

    @property
    def native_dim(self) -> int:
        """The model's hidden size: the longest vector it produces."""
        return self._native_dim

    @property
    def dim(self) -> int:
        """Default output dimension of :meth:`encode`."""
        return self._dim

    @property
    def max_length(self) -> int:
        """Most tokens the model sees per text (EOS included)."""
        return self._max_length

    @property
    def context_length(self) -> int:
        """The context the model was trained with (from the file)."""
        return self._context_length

    @property
    def pooling(self) -> Pooling:
        return self._pooling

    @property
    def normalize(self) -> bool:
        return self._normalize

    @property
    def long_text(self) -> str:
        return self._policy.name

    @property
    def deterministic(self) -> bool:
        """Whether calls default to bit-identical vectors whatever the batch (each text decoded alone)."""
        return self._deterministic

    @property
    def chunking(self) -> ChunkConfig:
        """How ``long_text="chunk"`` splits and fuses texts for this embedder."""
        return self._chunking

    @property
    def eos_token_id(self) -> int:
        """The token every sequence ends with (``<|endoftext|>``)."""
        return self._eos

    @property
    def add_eos_token(self) -> bool | None:
        """What the file says about ``tokenizer.ggml.add_eos_token`` (the library always appends one EOS)."""
        return self._info.add_eos_token

    @property
    def engine(self) -> str:
        """The engine in words, for ``repr`` and ``qwen-embed doctor``."""
        if self._backend == "torch":
            return f"torch {self.compute_dtype or ''}".strip()
        return "llama.cpp"

    def __repr__(self) -> str:
        dim = f"{self._dim}" if self._dim == self._native_dim else f"{self._dim} of {self._native_dim}"
        state = "" if self._engine is not None else ", closed"
        return (
            f"Embedder(model={self._path.name!r}, quant={self.quantization}, dim={dim}, "
            f"pooling={self._pooling}, max_length={self._max_length}, context={self._context_length}, "
            f"long_text={self._policy.name!r}, threads={self._n_threads}, engine={self.engine}{state})"
        )

    # ------------------------------------------------------------------ tokens

    @property
    def prompts(self) -> PromptRegistry:
        """The prompt registry this embedder resolves names in."""
        return self._prompts

    @property
    def default_prompt_name(self) -> str | None:
        return self._default_prompt_name

    def list_prompts(self) -> list[str]:
        """Names :meth:`encode` accepts as ``prompt_name`` (and the ``task=`` of the wrappers)."""
        return self._prompts.list_prompts()

    def format(
        self,
        text: str,
        *,
        side: Side | None = None,
        task: str | None = None,
        prompt_name: str | None = None,
        instruction: str | None = None,
    ) -> str:
        """The exact string the model sees for ``text`` under that prompt (before the EOS)."""
        call = EncodeCall.from_options(dict(side=side, task=task, prompt_name=prompt_name, instruction=instruction))
        before, after = self.prompt_parts(call)
        return before + text + after

    def tokenize(
        self,
        text: str,
        *,
        side: Side | None = None,
        task: str | None = None,
        prompt_name: str | None = None,
        instruction: str | None = None,
    ) -> np.ndarray:
        """The token ids the model sees for ``text``: prompt and text, then one EOS.

        Control tokens written in the text (``<|endoftext|>``) stay plain text.
        """
        call = EncodeCall.from_options(dict(side=side, task=task, prompt_name=prompt_name, instruction=instruction))
        item = self._input_tokens(text, None, *self.prompt_parts(call))
        return np.append(item.tokens, np.int32(self._eos)).astype(np.int32)

    def count_tokens(
        self,
        text: str,
        *,
        side: Side | None = None,
        task: str | None = None,
        prompt_name: str | None = None,
        instruction: str | None = None,
    ) -> int:
        """How many tokens the model sees for ``text`` (prompt and EOS included), before any truncation."""
        call = EncodeCall.from_options(dict(side=side, task=task, prompt_name=prompt_name, instruction=instruction))
        return self._input_tokens(text, None, *self.prompt_parts(call)).n_tokens

    def prompt_parts(self, call: EncodeCall | None = None) -> tuple[str, str]:
        """The exact text before and after each input under ``call``'s prompt options (``("", "")`` for none)."""
        call = EncodeCall() if call is None else call
        if call.instruction is not None:
            if call.task is not None:
                logger.warning("both instruction and task=%r given; the instruction wins", call.task)
            before, _, after = OFFICIAL_TEMPLATE.format(instruction=call.instruction, text="\x00").partition("\x00")
            return before, after
        name = call.prompt_name(self._default_prompt_name)
        if name is None:
            return "", ""
        return self._prompts.get_prompt(name).split(call.prompt_side())

    def _refuse_if_surely_long(self, text: object, index: int | None, before: str, after: str) -> None:
        """InputTooLongError before tokenizing a text whose size alone proves it over ``max_length``.

        A token covers at most as many bytes as the vocabulary's longest, so a 30 MB text is refused
        in the time it takes to count its bytes, not to tokenize it.
        """
        if not isinstance(text, str) or len(text) <= self._max_length:  # short texts: tokenizing is cheap
            return
        nfc = self._tokenizer.normalized(text, index, text_offset=len(before))
        at_least = self._tokenizer.min_tokens(nfc) + 1  # the EOS
        if at_least > self._max_length:
            where = "The text" if index is None else f"Text #{index}"
            raise InputTooLongError(
                f"{where} is at least {at_least:,} tokens (EOS included; {len(nfc.encode('utf-8')):,} bytes) but the "
                f"limit is max_length={self._max_length:,}. Pass long_text='truncate' to keep what fits, "
                "long_text='chunk' to embed all of it, or raise max_length.",
                index=index,
                n_tokens=at_least,
                limit=self._max_length,
            )

    def _input_tokens(self, text: object, index: int | None, before: str, after: str) -> InputTokens:
        if not isinstance(text, str):
            self._tokenizer.tokens(text, index)  # raises InputTypeError naming the index
        tokens = self._tokenizer.tokens(before + str(text) + after, index, text_offset=len(before))
        if not before and not after:
            return InputTokens(index, tokens)
        return InputTokens(index, tokens, self._tokenizer.piece(before).size, self._tokenizer.piece(after))

    # ------------------------------------------------------------------ encode

    def run(
        self,
        texts: str | Iterable[str],
        call: EncodeCall | None = None,
        *,
        first_index: int = 0,
    ) -> EncodeResult:
        """Embed texts as ``call`` says, with a :class:`~qwen_embed.Receipt` per input: the one encode path.

        >>> result = emb.run(docs, EncodeCall(side="document", long_text="chunk"))  # doctest: +SKIP
        >>> result.vectors.shape, result.receipts[0].chunks                        # doctest: +SKIP

        Every ``encode*`` method builds an :class:`~qwen_embed.EncodeCall` and comes here; so do the
        corpus job, Ray, the framework adapters, the server and the CLI.

        Args:
            texts: A ``str`` (vectors of shape ``(dim,)``) or an iterable of ``str`` (``(n, dim)``,
                in input order).
            call: The options (default: ``EncodeCall()``, the embedder's defaults).
            first_index: Position of the first text in the caller's whole input (errors name it).

        Returns:
            The vectors, a receipt per input (tokens, truncation, chunks) and the call.
        """
        if call is None:
            call = EncodeCall()
        elif not isinstance(call, EncodeCall):
            raise ConfigurationError(f"call must be an EncodeCall, not {type(call).__name__}")
        before, after = self.prompt_parts(call)
        given = unwrap_scalar(texts)
        single = isinstance(given, str)
        items = as_text_list(given, first_index=first_index)
        out_dim, do_normalize, max_batch = self._call_options(call.dim, call.normalize, call.batch_size)
        policy = self._policy if call.long_text is None else get_policy(call.long_text)

        # 1. Tokenize and plan everything first: bad input fails before any decode.
        sequences: list[np.ndarray] = []
        groups: list[tuple[int, int, LongPlan | None]] = []  # (first row, rows, chunk plan)
        receipts: list[Receipt] = []
        refuse_early = type(policy) is ErrorPolicy  # "chunk" and "truncate" need the text's tokens anyway
        for i, text in enumerate(items):
            index = None if single else first_index + i
            if refuse_early:
                self._refuse_if_surely_long(text, index, before, after)
            item = self._input_tokens(text, index, before, after)
            plan: LongPlan | None = None
            if isinstance(policy, ChunkPolicy) and item.n_tokens > self._max_length:
                plan = self._planner.plan(text, index, before, after, self._chunking)
                planned = plan.sequences
            else:
                planned = policy.plan(item, limit=self._max_length, eos=self._eos)
            receipts.append(_receipt(item.n_tokens, planned, plan))
            groups.append((len(sequences), len(planned), plan))
            sequences.extend(planned)

        # 2. Decode in packed batches (the chunks of every long text share them).
        deterministic = self._deterministic if call.deterministic is None else call.deterministic
        raw = self._embed_sequences(
            sequences, batch_size=1 if deterministic else max_batch, show_progress=call.show_progress
        )

        # 3. Back to one vector per input (fusing chunks), Matryoshka slice, normalize.
        if len(groups) == len(sequences):
            vectors = raw
        else:
            vectors = np.empty((len(items), self._native_dim), dtype=np.float32)
            for i, (first, count, plan) in enumerate(groups):
                rows = raw[first : first + count]
                vectors[i] = fuse(plan, rows, self._native_dim)[0] if plan is not None else policy.combine(rows)
        out = self._finish(vectors, out_dim, do_normalize, single)
        if call.precision != "float32":
            out = quantize_embeddings(out, call.precision, ranges=call.ranges)
        return EncodeResult(out, tuple(receipts), call)

    def encode(
        self,
        texts: str | Iterable[str],
        *,
        side: Side | None = None,
        task: str | None = None,
        prompt_name: str | None = None,
        instruction: str | None = None,
        dim: int | None = None,
        normalize: bool | None = None,
        long_text: str | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        precision: str = "float32",
        ranges: QuantizationRanges | np.ndarray | None = None,
        deterministic: bool | None = None,
    ) -> np.ndarray:
        """Embed one text or many.

        Args:
            texts: A ``str`` (returns shape ``(dim,)``) or a sequence of ``str``
                (returns ``(n, dim)``, in input order; an empty list gives ``(0, dim)``).
                The empty string is embedded as the EOS alone, as the official
                tokenizer does.
            side: ``"query"`` (as :meth:`encode_queries`), ``"document"`` (as
                :meth:`encode_documents`) or ``None``: ``task``'s query side, if any.
            task: A registered prompt (see :meth:`list_prompts`); default:
                ``default_prompt_name``, else none. ``prompt_name`` is the same option under
                sentence-transformers' name.
            instruction: A task instruction applied in the official format
                ``Instruct: {instruction}\nQuery:{text}``; wins over ``task``.
            dim: Output dimension (Matryoshka, 32 to the native size); default: the
                embedder's ``dim``.
            normalize: L2-normalize; default: the embedder's setting.
            long_text: ``"error"``, ``"truncate"`` or ``"chunk"``; default: the embedder's policy.
                Prompt tokens count towards ``max_length``.
            batch_size: Most texts per decode (at most the embedder's ``batch_size``).
            show_progress: Progress bar; default: the embedder's setting.
            precision: ``"float32"`` (default), ``"float16"``, ``"int8"``, ``"uint8"``, ``"binary"`` or
                ``"ubinary"``: sentence-transformers' :func:`~qwen_embed.quantize_embeddings` of the vectors.
            ranges: Calibration ranges for ``int8``/``uint8`` (required there).
            deterministic: Bit-identical vectors whatever the batch, position and thread count
                (each text decoded alone); default: the embedder's setting.

        Returns:
            The vectors (float32 unless ``precision`` says otherwise). :meth:`run` returns them with
            a receipt per input.
        """
        call = EncodeCall.from_options(
            dict(side=side, task=task, prompt_name=prompt_name, instruction=instruction, dim=dim,
                 normalize=normalize, long_text=long_text, batch_size=batch_size, show_progress=show_progress,
                 precision=precision, ranges=ranges, deterministic=deterministic)
        )  # fmt: skip
        return self.run(texts, call).vectors

    def encode_queries(
        self,
        texts: str | Iterable[str],
        *,
        task: str | None = None,
        instruction: str | None = None,
        prompt_name: str | None = None,
        dim: int | None = None,
        normalize: bool | None = None,
        long_text: str | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        precision: str = "float32",
        ranges: QuantizationRanges | np.ndarray | None = None,
        deterministic: bool | None = None,
    ) -> np.ndarray:
        """Embed search queries with their task's instruction (default task: ``"query"``, web search).

        ``instruction`` gives the task in words instead; the other options are :meth:`encode`'s.
        """
        return self.encode(
            texts, side="query", task=task, prompt_name=prompt_name, instruction=instruction, dim=dim,
            normalize=normalize, long_text=long_text, batch_size=batch_size, show_progress=show_progress,
            precision=precision, ranges=ranges, deterministic=deterministic,
        )  # fmt: skip

    def encode_documents(
        self,
        texts: str | Iterable[str],
        *,
        task: str | None = None,
        instruction: str | None = None,
        prompt_name: str | None = None,
        dim: int | None = None,
        normalize: bool | None = None,
        long_text: str | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        precision: str = "float32",
        ranges: QuantizationRanges | np.ndarray | None = None,
        deterministic: bool | None = None,
    ) -> np.ndarray:
        """Embed documents: bare for retrieval; instructed for symmetric or two-sided tasks.

        ``instruction`` instructs the documents in the official format (symmetric tasks); the
        other options are :meth:`encode`'s.
        """
        return self.encode(
            texts, side="document", task=task, prompt_name=prompt_name, instruction=instruction, dim=dim,
            normalize=normalize, long_text=long_text, batch_size=batch_size, show_progress=show_progress,
            precision=precision, ranges=ranges, deterministic=deterministic,
        )  # fmt: skip

    def encode_query(self, texts: str | Iterable[str], **options: Any) -> np.ndarray:
        """sentence-transformers' name for :meth:`encode_queries` (same options)."""
        return self.encode_queries(texts, **options)

    def encode_document(self, texts: str | Iterable[str], **options: Any) -> np.ndarray:
        """sentence-transformers' name for :meth:`encode_documents` (same options)."""
        return self.encode_documents(texts, **options)

    def encode_iter(
        self,
        texts: Iterable[str],
        *,
        side: Side | None = None,
        task: str | None = None,
        prompt_name: str | None = None,
        instruction: str | None = None,
        chunk_size: int = 1024,
        dim: int | None = None,
        normalize: bool | None = None,
        long_text: str | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        precision: str = "float32",
        ranges: QuantizationRanges | np.ndarray | None = None,
        deterministic: bool | None = None,
    ) -> Iterator[np.ndarray]:
        """Embed a stream of texts in bounded memory, yielding vectors as each window is done.

        >>> for block in emb.encode_iter(open("corpus.txt"), side="document"):  # doctest: +SKIP
        ...     index.add(block)

        Texts are read ``chunk_size`` at a time and each window is embedded as :meth:`encode`
        would (sorted by length into packed decodes, order restored), so one window of texts,
        tokens and vectors is held at a time, whatever the length of the stream. The vectors
        equal :meth:`encode`'s on the same texts (within the ~1e-4 that packing a text beside
        other neighbours makes on llama.cpp). Options are checked before the first text is read.

        Args:
            texts: Any iterable of ``str`` (a list, an open file, a generator of millions).
            side, task, prompt_name, instruction, dim, normalize, long_text, batch_size, precision, ranges,
                deterministic: As in :meth:`encode`.
            chunk_size: Texts per window; one array is yielded per window (the last may be shorter).
            show_progress: A progress bar counting texts; default: the embedder's setting.

        Yields:
            float32 arrays of shape ``(k, dim)``: consecutive rows, in input order.
        """
        call = EncodeCall.from_options(
            dict(side=side, task=task, prompt_name=prompt_name, instruction=instruction, dim=dim,
                 normalize=normalize, long_text=long_text, batch_size=batch_size, show_progress=show_progress,
                 precision=precision, ranges=ranges, deterministic=deterministic)
        )  # fmt: skip
        return (result.vectors for result in self.run_iter(texts, call, chunk_size=chunk_size))

    def run_iter(
        self, texts: Iterable[str], call: EncodeCall | None = None, *, chunk_size: int = 1024
    ) -> Iterator[EncodeResult]:
        """:meth:`run` over a stream, one :class:`~qwen_embed.EncodeResult` per window of ``chunk_size`` texts.

        The streaming form of :meth:`run` (see :meth:`encode_iter`); the call's ``show_progress``
        counts texts. Options are checked before the first text is read.
        """
        if isinstance(texts, (str, bytes, bytearray, Mapping, set, frozenset)) or not isinstance(texts, Iterable):
            what = "a set, which has no order" if isinstance(texts, (set, frozenset)) else type(texts).__name__
            raise InputTypeError(
                f"encode_iter takes an ordered iterable of str (a list, a file, a generator), not {what}; "
                "encode takes one str."
            )
        call = EncodeCall() if call is None else call
        window = check_window("chunk_size", chunk_size)
        self.prompt_parts(call)  # bad options fail here, not at the first next()
        self._call_options(call.dim, call.normalize, call.batch_size)
        show = self._show_progress if call.show_progress is None else call.show_progress
        return self._windows(texts, window, call.replace(show_progress=False), show)

    def _windows(
        self, texts: Iterable[str], window: int, call: EncodeCall, show: bool | None
    ) -> Iterator[EncodeResult]:
        items, start = iter(texts), 0
        bar = None
        if in_notebook() if show is None else show:
            from tqdm.auto import tqdm

            bar = tqdm(unit="text", desc="Embedding", total=len(texts) if isinstance(texts, Sized) else None)
        try:
            while block := list(itertools.islice(items, window)):
                yield self.run(block, call, first_index=start)
                start += len(block)
                if bar is not None:
                    bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()

    def _call_options(self, dim: int | None, normalize: bool | None, batch_size: int | None) -> tuple[int, bool, int]:
        """A call's ``(output dim, normalize, most texts per decode)``, defaults from the embedder."""
        out_dim = self._check_dim(dim) if dim is not None else self._dim
        do_normalize = self._normalize if normalize is None else check_bool("normalize", normalize)
        if batch_size is None:
            return out_dim, do_normalize, self._batch_size
        return out_dim, do_normalize, min(positive_int("batch_size", batch_size), self._batch_size)

    def _finish(self, vectors: np.ndarray, out_dim: int, do_normalize: bool, single: bool) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors[:, :out_dim], dtype=np.float32)
        if not np.isfinite(vectors).all():
            raise EngineError("the engine returned non-finite values (NaN/inf); the model file may be corrupt")
        if do_normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            np.divide(vectors, np.maximum(norms, np.finfo(np.float32).tiny), out=vectors)
        return vectors[0] if single else vectors

    # ------------------------------------------------------------------ long documents

    def encode_long(
        self,
        text: str,
        *,
        preset: str | None = None,
        chunk_tokens: int | None = None,
        overlap: int | None = None,
        fusion: str | None = None,
        title: str | None = None,
        sections: Sequence[tuple[str, str]] | None = None,
        context_prefix: bool | None = None,
        title_weight: float | None = None,
        task: str | None = None,
        instruction: str | None = None,
        dim: int | None = None,
        normalize: bool | None = None,
        return_chunks: bool = True,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> LongEmbedding:
        """Embed a long document as token-exact chunks fused into one vector.

        >>> doc = emb.encode_long(report, preset="technical", fusion="hierarchical")  # doctest: +SKIP
        >>> doc.vector.shape, len(doc.chunks), doc.chunks[0].section            # doctest: +SKIP

        The text is split at its Markdown headings (or at the given ``sections``), each
        section into chunks of at most ``chunk_tokens`` text tokens overlapping by
        ``overlap``, cut at a blank line, else a sentence end, else whitespace. Every
        chunk's vector equals :meth:`encode` of its text (with the same prompt and, with
        ``context_prefix``, its ``"Title > Section"`` line first). The chunk vectors
        (unit length, native dimension) are fused, then the result is sliced to ``dim``
        and normalized. A text that fits in one chunk gives the same vector as
        :meth:`encode`.

        Args:
            text: The document (ignored with ``sections``: pass ``""``).
            preset: Chunking preset (default: the embedder's ``chunking``); the options
                below override its fields.
            chunk_tokens, overlap, fusion, context_prefix, title_weight: see
                :class:`~qwen_embed.ChunkConfig`; ``fusion`` is one of ``"weighted"``,
                ``"mean"``, ``"positional"``, ``"max"``, ``"hierarchical"`` or a registered name.
            title: Document title: heads every section path, and under ``"hierarchical"``
                its vector is mixed in with ``title_weight``.
            sections: ``(title, text)`` pairs instead of Markdown structure; spans then
                refer to the sections joined by blank lines (``result.text``).
            task: A prompt whose document side applies (default: none, as for retrieval).
            instruction: An instruction in the official query format instead.
            return_chunks: Keep each chunk's vector in the result.
        """
        config = chunk_config(
            self._chunking,
            preset,
            chunk_tokens=chunk_tokens,
            overlap=overlap,
            fusion=fusion,
            context_prefix=context_prefix,
            title_weight=title_weight,
        )
        text, spans = document_text(text, title=title, sections=sections)
        before, after = self.prompt_parts(EncodeCall(side="document", task=task, instruction=instruction))
        out_dim, do_normalize, max_batch = self._call_options(dim, normalize, batch_size)
        plan = self._planner.plan(text, None, before, after, config, title=title, sections=spans)
        max_batch = 1 if self._deterministic else max_batch
        rows = self._embed_sequences(plan.sequences, batch_size=max_batch, show_progress=show_progress)
        return assemble(
            plan,
            rows,
            text=text,
            native_dim=self._native_dim,
            finish=lambda vectors: self._finish(vectors, out_dim, do_normalize, single=False),
            return_chunks=return_chunks,
        )

    def _embed_sequences(
        self, sequences: list[np.ndarray], *, batch_size: int, show_progress: bool | None
    ) -> np.ndarray:
        show = self._show_progress if show_progress is None else show_progress
        return embed_sequences(
            self._require_engine(),
            sequences,
            batch_size=batch_size,
            batch_tokens=self._batch_tokens,
            show_progress=show,
        )

    # ------------------------------------------------------------------ helpers

    def _check_dim(self, dim: int | None) -> int:
        if dim is None:
            return self._native_dim
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise DimensionError(f"dim must be an int, not {type(dim).__name__}")
        low = min(_config.MIN_DIM, self._native_dim)
        if not low <= int(dim) <= self._native_dim:
            raise DimensionError(
                f"dim={dim} is outside what this model supports: {low} to {self._native_dim} "
                "(Matryoshka dimensions slice the native vector)."
            )
        return int(dim)
