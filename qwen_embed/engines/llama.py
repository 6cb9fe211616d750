"""The llama.cpp engine: everything that touches llama.cpp lives here and in :mod:`._native`.

How :class:`LlamaCppEngine` gets the hidden states cheaply
-----------------------------------------------------------
A llama.cpp context created with ``embeddings=True`` marks *every* token as an output
(``llama_context::decode``: ``output_all = cparams.embeddings``), so the last layer's
FFN and the 151k-row vocabulary projection run on every token, although last-token
pooling needs one row per sequence. The projection alone is about a quarter of a
0.6B token's FLOPs, and the logits buffer holds ``n_vocab`` floats per token.

This engine instead creates the context with ``embeddings=False``, marks only the
tokens pooling needs (the last of each sequence, or all of them for mean pooling),
and reads the final-norm hidden state (the graph node ``result_norm``, which is what
llama.cpp itself pools) through the scheduler's eval callback. When that node has
been read, the callback stops the graph, so the vocabulary projection never runs.
Each decode checks that exactly one row per marked token arrived; anything else is an
:class:`~qwen_embed.errors.EngineError`, never a wrong vector.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError, EngineError, ModelLoadError
from . import _native
from ._guard import NativeGuard, check_fork_safe, mark_threads_started
from ._native import build_features, ggml, llama_cpp, recent_native_errors
from .base import Pooling

__all__ = ["DeferredSigint", "LlamaCppEngine", "build_features", "needs_amx_workaround", "quantize_gguf"]

logger = logging.getLogger(__name__)


_RESULT_NODE = b"result_norm"
_LLAMA_MAX_SEQ = 256  # llama.cpp's LLAMA_MAX_SEQ: sequences per context
_UBATCH = 512  # physical batch: bounds the attention scratch buffer
_ABORTED = 2  # llama_decode's return code when the abort callback said stop


def _flag_reader() -> Any:
    """A native ``bool (*)(void *)`` that reads a flag byte without Python or the GIL.

    ggml calls the abort callback after every graph node from the decoding thread. A Python
    callback there needs the GIL hundreds of times per decode, and waits for it whenever
    another thread runs Python (a server's event loop); so off the main thread the callback
    is libc's ``strlen`` on a 2-byte buffer ``[flag, 0]``: it returns exactly 0 or 1.
    """
    name = ctypes.util.find_library("c") if os.name != "nt" else "msvcrt"
    try:
        address = ctypes.cast(ctypes.CDLL(name).strlen, ctypes.c_void_p).value
    except (OSError, AttributeError, TypeError):
        return None
    return None if address is None else llama_cpp.ggml_abort_callback(address)


_FLAG_READER = _flag_reader()


class DeferredSigint:
    """While a native call runs on the main thread, a SIGINT is recorded instead of handled; :meth:`deliver` runs
    the handler afterwards, from plain Python.

    Python runs signal handlers between bytecodes, and during a llama.cpp call the only Python running
    on the main thread is its callbacks (abort, eval, log). An exception raised there, such as the
    KeyboardInterrupt of Python's default handler or of an application's own, is swallowed by ctypes
    ("Exception ignored on calling ctypes callback"): the interrupt was lost, or the decode failed with
    code 2. Here the handler that was installed (the default one or the application's) runs once the
    call is over, where its exception propagates. Off the main thread, with SIGINT ignored, or with a
    handler not installed from Python, nothing changes.

    Args:
        on_signal: Called when the SIGINT comes (the decode sets its abort flag: it stops at the next node).
    """

    def __init__(self, on_signal: Callable[[], None] | None = None) -> None:
        self._on_signal = on_signal
        self._previous: Any = None
        self.caught: tuple[int, Any] | None = None

    def __enter__(self) -> DeferredSigint:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not None and previous is not signal.SIG_IGN:
                self._previous = previous
                signal.signal(signal.SIGINT, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _record(self, signum: int, frame: Any) -> None:
        if self.caught is None:
            self.caught = (signum, frame)
        if self._on_signal is not None:
            self._on_signal()

    def deliver(self) -> None:
        """Run the deferred handler, if a SIGINT came: Python's default raises KeyboardInterrupt."""
        if self.caught is None:
            return
        (signum, frame), self.caught = self.caught, None
        if callable(self._previous):
            self._previous(signum, frame)
        elif self._previous is signal.SIG_DFL:  # the default action: end the process, as the signal would have
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.raise_signal(signum)


def needs_amx_workaround(features: dict[str, bool], *, quantized: bool) -> bool:
    """Whether to load without llama.cpp's extra (AMX) weight buffers.

    On CPUs with AMX, a llama.cpp build with AMX support puts quantized weights in the
    AMX buffer type, and the first decode can segfault in ``ggml_backend_amx_mul_mat``
    (ggml-org/llama.cpp#20824; seen on this project's Sapphire Rapids machines for Q8_0
    and Q4_K_M, not for f16). Loading with ``use_extra_bufts=False`` avoids it.
    """
    return quantized and features.get("AMX_INT8", False)


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python's low-level API.

    Not thread-safe by itself beyond :meth:`embed`, which holds a lock: a llama.cpp
    context must not be used from two threads at once.
    """

    def __init__(
        self,
        path: Path,
        *,
        pooling: Pooling,
        n_threads: int,
        n_gpu_layers: int = 0,
        max_sequences: int = 64,
        batch_tokens: int = 2048,
        max_context: int,
        quantized: bool,
        use_extra_bufts: bool | None = None,
        flash_attn: bool | None = None,
    ) -> None:
        check_fork_safe(f"Loading {Path(path).name}")
        self._model = None
        self._lock = threading.RLock()
        self._guard = NativeGuard(Path(path).name, free=self._free_native, abort=self._request_abort)
        # Abort flag [flag, 0]: close() and Ctrl-C set it; ggml polls it between graph nodes.
        self._abort_flag = (ctypes.c_uint8 * 2)()
        self._py_abort = llama_cpp.ggml_abort_callback(self._should_abort)
        self._pooling: Pooling = pooling
        self._n_threads = n_threads
        self._max_sequences = max(1, min(max_sequences, _LLAMA_MAX_SEQ))
        self._default_capacity = max(32, min(batch_tokens, max_context))
        self._max_context = max_context
        self._flash_attn = flash_attn
        self._ctx: ctypes.c_void_p | None = None
        self._capacity = 0
        self._batch_arrays: dict[str, np.ndarray] = {}
        self._batch: llama_cpp.llama_batch | None = None
        self._seq_ptrs: np.ndarray | None = None
        self._capture: np.ndarray | None = None
        self._captured = 0
        self._capture_error: str | None = None
        # Keep a reference: llama.cpp holds only the raw function pointer.
        self._eval_cb = llama_cpp.ggml_backend_sched_eval_callback(self._on_eval)

        notes: list[str] = []
        if use_extra_bufts is None:
            use_extra_bufts = not needs_amx_workaround(build_features(), quantized=quantized)
            if not use_extra_bufts:
                notes.append(
                    "AMX weight buffer disabled (use_extra_bufts=False): quantized models crash "
                    "in ggml_backend_amx_mul_mat on AMX CPUs (ggml-org/llama.cpp#20824)"
                )
        self._workarounds = tuple(notes)
        for note in notes:
            logger.debug("workaround: %s", note)

        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.use_extra_bufts = use_extra_bufts
        with _native.sigint_deferred():  # Ctrl-C while llama.cpp logs is raised after the load, not lost
            model = llama_cpp.llama_model_load_from_file(os.fsencode(path), params)
            if not model:
                details = "; ".join(recent_native_errors()) or "no reason logged"
                raise ModelLoadError(f"llama.cpp could not load {path}: {details}")
            self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._n_embd = int(llama_cpp.llama_model_n_embd_out(model))
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        logger.debug(
            "loaded %s: n_embd=%d n_vocab=%d threads=%d gpu_layers=%d extra_bufts=%s",
            path,
            self._n_embd,
            self._n_vocab,
            n_threads,
            n_gpu_layers,
            use_extra_bufts,
        )

    # ------------------------------------------------------------------ properties

    @property
    def n_embd(self) -> int:
        return self._n_embd

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    @property
    def workarounds(self) -> tuple[str, ...]:
        return self._workarounds

    @property
    def max_sequences(self) -> int:
        return self._max_sequences

    # ------------------------------------------------------------------ tokenize

    def token_bytes(self, token: int) -> bytes:
        with self._guard.use():
            cap = 64
            while True:
                buf = ctypes.create_string_buffer(cap)
                n = llama_cpp.llama_token_to_piece(self._vocab, int(token), buf, cap, 0, False)
                if n >= 0:
                    return buf.raw[:n]
                cap = -n

    def tokenize(self, text: str, *, special: bool = False) -> np.ndarray:
        raw = text.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError before any native call
        with self._guard.use():
            try:
                return _native.tokenize(self._vocab, raw, special=special)
            except RuntimeError as error:
                raise EngineError(str(error)) from error

    def token_facts(self) -> tuple[int, tuple[str, ...]]:
        """``(longest token in bytes, user-defined token texts)``: one scan of the vocabulary, then cached.

        User-defined tokens are split out of user text before the pre-tokenizer runs, so a cut inside
        one changes the tokens (:mod:`qwen_embed.text.token_prefix`).
        """
        facts = getattr(self, "_token_facts", None)
        if facts is None:
            with self._guard.use():
                get_text, get_attr, vocab = llama_cpp.llama_vocab_get_text, llama_cpp.llama_vocab_get_attr, self._vocab
                longest, user_defined = 0, []
                for token in range(self._n_vocab):
                    raw = get_text(vocab, token) or b""
                    attr = int(get_attr(vocab, token))
                    if attr & llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED:
                        user_defined.append(raw.decode("utf-8", errors="replace"))
                        longest = max(longest, len(raw))
                    elif len(raw) > longest and not attr & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL:
                        longest = max(longest, len(self.token_bytes(token)))  # byte-level text overstates
            facts = self._token_facts = (longest, tuple(sorted(user_defined, key=len, reverse=True)))
        return facts

    def token_text(self, token: int) -> str:
        with self._guard.use():
            raw = llama_cpp.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    # ------------------------------------------------------------------ embed

    def embed(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        n = len(sequences)
        if n == 0:
            return np.zeros((0, self._n_embd), dtype=np.float32)
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=n)
        if lengths.min() < 1:
            raise EngineError("cannot embed an empty token sequence")
        if n > self._max_sequences:
            raise EngineError(f"{n} sequences in one decode; at most {self._max_sequences}")
        total = int(lengths.sum())
        if total > self._max_context:
            raise EngineError(f"{total} tokens in one decode exceed the context limit {self._max_context}")
        ends = np.cumsum(lengths)
        starts = ends - lengths
        n_out = n if self._pooling == "last" else total

        with self._guard.use(), self._lock:
            self._ensure_context(total)
            arrays = self._batch_arrays
            arrays["token"][:total] = np.concatenate(sequences)
            arrays["pos"][:total] = np.arange(total, dtype=np.int32) - np.repeat(starts, lengths).astype(np.int32)
            arrays["seq"][:total] = np.repeat(np.arange(n, dtype=np.int32), lengths)
            arrays["n_seq_id"][:total] = 1
            logits = arrays["logits"]
            if self._pooling == "last":
                logits[:total] = 0
                logits[ends - 1] = 1
            else:
                logits[:total] = 1
            out = self._decode_marked(total, n_out, self._clear_memory)

        if self._pooling == "last":
            return out
        sums = np.add.reduceat(out, starts, axis=0)
        return (sums / lengths[:, None]).astype(np.float32, copy=False)

    def _clear_memory(self) -> None:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)

    def _decode_marked(self, n_tokens: int, n_out: int, prepare: Callable[[], None]) -> np.ndarray:
        """Decode the first ``n_tokens`` of the batch arrays; the final-norm rows of the ``n_out`` marked tokens.

        The caller holds the guard and the lock and has filled the batch arrays; ``prepare`` sets the KV
        cache up for this decode (it runs again when a SIGINT stopped the decode and the application's
        handler chose to go on). Every engine on this context (embeddings, the reranker's shared prefix)
        decodes here.
        """
        assert self._batch is not None
        while True:
            prepare()
            self._batch.n_tokens = n_tokens
            self._capture = np.empty((n_out, self._n_embd), dtype=np.float32)
            self._captured = 0
            self._capture_error = None
            deferred = DeferredSigint(self._request_abort)
            try:
                rc = self._decode(deferred)
                captured, rows, error = self._captured, self._capture, self._capture_error
            finally:
                self._capture = None
            if deferred.caught is not None:
                deferred.deliver()  # the application's SIGINT handler; the default raises KeyboardInterrupt
                if rc == _ABORTED and not self._guard.closed:
                    continue  # the handler let the program go on: decode again
            break
        if rc == _ABORTED and self._guard.closed:
            raise EngineError("decode stopped: the model is being closed")  # the guard reports it
        if rc != 0:
            raise EngineError(f"llama_decode failed with code {rc} ({n_tokens} tokens, {n_out} outputs)")
        if error is not None or captured != n_out:
            raise EngineError(
                error
                or f"llama.cpp produced {captured} hidden-state rows for {n_out} outputs; this "
                "llama.cpp build computes the graph differently than qwen_embed expects"
            )
        return rows

    def _decode(self, deferred: DeferredSigint) -> int:
        """One ``llama_decode`` that close() can stop, and a SIGINT too on the main thread (:class:`DeferredSigint`)."""
        flag = self._abort_flag
        flag[0] = 0
        if self._guard.closed:  # close() may have come just before the reset
            flag[0] = 1
        main = threading.current_thread() is threading.main_thread()
        callback = self._py_abort if main or _FLAG_READER is None else _FLAG_READER
        mark_threads_started()
        with deferred:
            llama_cpp.llama_set_abort_callback(self._ctx, callback, ctypes.cast(flag, ctypes.c_void_p))  # it logs
            return int(llama_cpp.llama_decode(self._ctx, self._batch))

    def _should_abort(self, _data: int) -> bool:
        """Abort callback on the main thread (Python, so that the SIGINT handler gets to run)."""
        try:
            return self._abort_flag[0] != 0
        except BaseException:  # nothing may escape into ctypes; stop the decode instead
            return True

    def _request_abort(self) -> None:
        self._abort_flag[0] = 1

    def _on_eval(self, tensor: int, ask: bool, _user_data: int) -> bool:
        """Scheduler callback: read ``result_norm``, then stop before the vocab projection."""
        try:
            if ask:
                return bool(ggml.get_name(tensor) == _RESULT_NODE)
            capture = self._capture
            if capture is None:
                return True
            rows = int(ggml.nrows(tensor))
            nbytes = int(ggml.nbytes(tensor))
            if not ggml.is_contiguous(tensor) or nbytes != rows * self._n_embd * 4:
                self._capture_error = f"unexpected layout of {_RESULT_NODE.decode()}: {rows} rows, {nbytes} bytes"
                return False
            start = self._captured
            if start + rows > capture.shape[0]:
                self._capture_error = f"llama.cpp produced more output rows than the {capture.shape[0]} marked"
                return False
            if rows:
                ggml.tensor_get(tensor, capture[start : start + rows].ctypes.data, 0, nbytes)
            self._captured = start + rows
            return False  # skip the rest of the graph: the vocabulary projection
        except BaseException as exc:  # nothing may escape into ctypes: the decode reports it
            self._capture_error = f"error while reading hidden states: {exc!r}"
            return False

    # ------------------------------------------------------------------ context

    def _ensure_context(self, n_tokens: int) -> None:
        if self._ctx is not None and n_tokens <= self._capacity:
            return
        capacity = self._default_capacity
        while capacity < n_tokens:
            capacity *= 2
        capacity = min(max(capacity, n_tokens), self._max_context)
        self._free_context()

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = capacity
        params.n_batch = capacity
        params.n_ubatch = min(capacity, _UBATCH)
        params.n_seq_max = self._max_sequences
        params.kv_unified = True
        params.n_outputs_max = self._max_sequences if self._pooling == "last" else capacity
        params.embeddings = False  # see the module docstring
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_NONE
        params.n_threads = self._n_threads
        params.n_threads_batch = self._n_threads
        params.no_perf = True
        params.cb_eval = self._eval_cb
        if self._flash_attn is not None:
            params.flash_attn_type = (
                llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
                if self._flash_attn
                else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        with _native.sigint_deferred():  # llama.cpp logs while it builds a context
            ctx = llama_cpp.llama_init_from_model(self._model, params)
            if not ctx:
                details = "; ".join(recent_native_errors()) or "out of memory?"
                raise ModelLoadError(
                    f"llama.cpp could not create a context of {capacity} tokens ({details}). "
                    "Try a smaller max_length or batch_tokens."
                )
            self._ctx = ctx
            self._capacity = capacity
            self._allocate_batch(capacity)
        logger.debug("context ready: %d tokens, %d sequences, pooling=%s", capacity, self._max_sequences, self._pooling)

    def _allocate_batch(self, capacity: int) -> None:
        arrays: dict[str, np.ndarray] = {
            "token": np.zeros(capacity, dtype=np.int32),
            "pos": np.zeros(capacity, dtype=np.int32),
            "seq": np.zeros(capacity, dtype=np.int32),
            "n_seq_id": np.ones(capacity, dtype=np.int32),
            "logits": np.zeros(capacity, dtype=np.int8),
        }
        # seq_id is int32**: one pointer per token, each into the contiguous "seq" array.
        seq_ptrs = arrays["seq"].ctypes.data + 4 * np.arange(capacity, dtype=np.uint64)
        batch = llama_cpp.llama_batch()
        batch.n_tokens = 0
        batch.token = arrays["token"].ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token))  # type: ignore[assignment]
        batch.embd = ctypes.POINTER(ctypes.c_float)()  # type: ignore[assignment]
        batch.pos = arrays["pos"].ctypes.data_as(ctypes.POINTER(llama_cpp.llama_pos))  # type: ignore[assignment]
        batch.n_seq_id = arrays["n_seq_id"].ctypes.data_as(ctypes.POINTER(ctypes.c_int32))  # type: ignore[assignment]
        batch.seq_id = seq_ptrs.ctypes.data_as(ctypes.POINTER(ctypes.POINTER(llama_cpp.llama_seq_id)))  # type: ignore[assignment]
        batch.logits = arrays["logits"].ctypes.data_as(ctypes.POINTER(ctypes.c_int8))  # type: ignore[assignment]
        self._batch_arrays = arrays
        self._seq_ptrs = seq_ptrs
        self._batch = batch

    def _free_context(self) -> None:
        if self._ctx is not None:
            with _native.sigint_deferred():  # llama_free logs
                llama_cpp.llama_free(self._ctx)
                self._ctx = None
                self._capacity = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        return self._guard.closed

    def close(self) -> None:
        """Free the model and context once no call uses them; running decodes stop early. Returns at once."""
        guard = getattr(self, "_guard", None)
        if guard is not None:
            guard.close()

    def _free_native(self) -> None:
        with _native.sigint_deferred():  # llama.cpp logs as it frees
            self._free_context()
            if self._model is not None:
                llama_cpp.llama_model_free(self._model)
                self._model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def quantize_gguf(src: Path, dst: Path, quant: str, *, n_threads: int | None = None) -> Path:
    """Write a quantized copy of ``src`` with llama.cpp's ``llama_model_quantize``."""
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}", None)
    if ftype is None:
        prefix = "LLAMA_FTYPE_MOSTLY_"
        known = sorted(n.removeprefix(prefix) for n in dir(llama_cpp) if n.startswith(prefix))
        raise ConfigurationError(f"Unknown quantization {quant!r}. Known: {', '.join(known)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = n_threads or 0
    rc = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(dst), params)
    if rc != 0:
        details = "; ".join(recent_native_errors())
        raise EngineError(f"llama_model_quantize failed with code {rc} for {src} -> {quant}. {details}".strip())
    return dst
