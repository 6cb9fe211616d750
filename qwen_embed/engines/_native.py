"""Process-wide glue to llama-cpp-python's native libraries.

* routes llama.cpp's native log into :mod:`logging` (logger ``qwen_embed.llama_cpp``),
  silent unless the application configures logging;
* loads the few ``ggml`` functions the engine needs to read a tensor during a decode;
* reports the build's CPU features (AVX-512, AMX, BLAS) for the AMX workaround and
  for diagnostics.

Only :mod:`qwen_embed.backend` and this module import ``llama_cpp``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import signal
import threading
from collections import deque
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

__all__ = [
    "build_features",
    "cpu_has_amx",
    "ggml",
    "install_log_router",
    "llama_cpp",
    "recent_native_errors",
    "sigint_deferred",
    "system_info",
]

_native_log = logging.getLogger("qwen_embed.llama_cpp")

# ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (ggml.h). llama-cpp-python's
# own table predates this numbering. Native chatter, warnings included, goes to DEBUG (a
# context smaller than the trained one is a warning there, and normal here); errors go to
# WARNING, and the recent warnings/errors are kept for the messages of our exceptions.
_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.DEBUG, 4: logging.WARNING}
_NOTABLE = (3, 4)

_log_lock = threading.Lock()
_log_state: dict[str, object] = {"level": logging.DEBUG, "native_level": 0, "pending": ""}
_recent: deque[str] = deque(maxlen=8)


def recent_native_errors(clear: bool = True) -> list[str]:
    """The last few warning/error lines llama.cpp logged (for exception messages)."""
    with _log_lock:
        lines = list(_recent)
        if clear:
            _recent.clear()
    return lines


def _on_native_log(level: int, text: bytes | None, _user_data: ctypes.c_void_p) -> None:
    try:
        message = (text or b"").decode("utf-8", errors="replace")
        with _log_lock:
            if level != 5:  # not a continuation: a new record starts
                _log_state["level"] = _LEVELS.get(level, logging.DEBUG)
                _log_state["native_level"] = level
            pending = str(_log_state["pending"]) + message
            *lines, rest = pending.split("\n")
            _log_state["pending"] = rest
            record_level = int(_log_state["level"])  # type: ignore[call-overload]
            if _log_state["native_level"] in _NOTABLE:
                _recent.extend(line.strip() for line in lines if line.strip())
        for line in lines:
            if line.strip():
                _native_log.log(record_level, "%s", line.rstrip())
    except Exception:
        pass


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Ctrl-C during the block (native calls that log) is handled when the block ends, never lost.

    llama.cpp calls back into Python for every log line (hundreds while a model loads); an exception
    raised inside that callback, ``KeyboardInterrupt`` from Python's default SIGINT handler or from an
    application's own, is swallowed by ctypes ("Exception ignored on calling ctypes callback") and
    the interrupt is lost. On the main thread, while a Python handler is installed, the block runs
    under one that only records the signal; when the block ends the handler that was there is
    called with it (the default one raises ``KeyboardInterrupt``, in place of any error the block
    raised). Elsewhere (another thread, ``SIG_IGN``, ``SIG_DFL``) it changes nothing; an enclosing
    block records the signal and handles it when it ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):
        yield
        return
    caught: list[tuple[int, Any]] = []

    def record(signum: int, frame: Any) -> None:
        caught.append((signum, frame))

    signal.signal(signal.SIGINT, record)
    try:
        yield
    except BaseException:
        signal.signal(signal.SIGINT, previous)
        if caught:
            previous(*caught[0])  # raises in place of the block's error, or returns and lets it through
        raise
    signal.signal(signal.SIGINT, previous)
    if caught:
        previous(*caught[0])


# Keep a module-level reference: the C library holds only a raw pointer to it.
_LOG_CALLBACK = llama_cpp.llama_log_callback(_on_native_log)
_log_installed = False


def install_log_router(*, force: bool = False) -> None:
    """Send llama.cpp's native log to :mod:`logging` (process-wide).

    Args:
        force: Install again even if done before (``llama_cpp.Llama`` replaces it).
    """
    global _log_installed
    if force or not _log_installed:
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        _log_installed = True


install_log_router()


def _native_no_log() -> object | None:
    """A native ``void (*)(int, const char *, void *)`` that does nothing: libc's ``abs`` (it reads only the level)."""
    name = ctypes.util.find_library("c") if os.name != "nt" else "msvcrt"
    try:
        address = ctypes.cast(ctypes.CDLL(name).abs, ctypes.c_void_p).value
    except (OSError, AttributeError, TypeError):
        return None
    return None if address is None else llama_cpp.llama_log_callback(address)


_NO_LOG = _native_no_log()


@atexit.register
def _silence_native_log() -> None:
    """At exit, point llama.cpp's log at a native no-op before modules are torn down.

    llama.cpp holds only the raw address of :data:`_LOG_CALLBACK`. Once the interpreter clears this
    module that callback is freed, yet a ``llama_cpp.Llama`` (or any llama.cpp handle) freed later in
    the teardown still logs through it: a segfault at exit (rc 139) whenever such a handle outlives
    this module (llama-cpp-python frees its handles in ``__del__`` at interpreter exit:
    abetlen/llama-cpp-python#2002, #1610). ``atexit`` runs before any module is cleared; after it
    every native log line goes to a function that needs no Python.
    """
    if _NO_LOG is not None:
        llama_cpp.llama_log_set(_NO_LOG, ctypes.c_void_p(0))


class _Ggml:
    """The handful of ggml functions used to read a graph tensor from Python."""

    def __init__(self) -> None:
        lib_dir = Path(llama_cpp.__file__).resolve().parent / "lib"
        lib = None
        for name in ("ggml-base", "ggml"):
            candidates = [lib_dir / f"lib{name}.so", lib_dir / f"lib{name}.dylib", lib_dir / f"{name}.dll"]
            for candidate in candidates:
                if candidate.exists():
                    lib = ctypes.CDLL(str(candidate))
                    break
            if lib is not None and hasattr(lib, "ggml_get_name"):
                break
        if lib is None or not hasattr(lib, "ggml_get_name"):
            raise ImportError(f"cannot find ggml's library next to llama_cpp in {lib_dir}")
        self.get_name = lib.ggml_get_name
        self.get_name.argtypes = [ctypes.c_void_p]
        self.get_name.restype = ctypes.c_char_p
        self.nelements = lib.ggml_nelements
        self.nelements.argtypes = [ctypes.c_void_p]
        self.nelements.restype = ctypes.c_int64
        self.nrows = lib.ggml_nrows
        self.nrows.argtypes = [ctypes.c_void_p]
        self.nrows.restype = ctypes.c_int64
        self.nbytes = lib.ggml_nbytes
        self.nbytes.argtypes = [ctypes.c_void_p]
        self.nbytes.restype = ctypes.c_size_t
        self.is_contiguous = lib.ggml_is_contiguous
        self.is_contiguous.argtypes = [ctypes.c_void_p]
        self.is_contiguous.restype = ctypes.c_bool
        self.tensor_get = lib.ggml_backend_tensor_get
        self.tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
        self.tensor_get.restype = None


ggml = _Ggml()


@cache
def system_info() -> str:
    """llama.cpp's build/CPU feature string (``llama_print_system_info``)."""
    raw = llama_cpp.llama_print_system_info()
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)


@cache
def build_features() -> dict[str, bool]:
    """CPU/accelerator features compiled into this llama.cpp build and usable here."""
    features = {key: value == "1" for key, value in re.findall(r"([A-Z][A-Z0-9_]*) = (\d)", system_info())}
    features["GPU_OFFLOAD"] = bool(llama_cpp.llama_supports_gpu_offload())
    return features


def cpu_has_amx() -> bool:
    """Whether this llama.cpp build runs AMX kernels here (the crash-prone weight buffer)."""
    return build_features().get("AMX_INT8", False)


def tokenize(vocab: object, text: str | bytes, *, special: bool) -> np.ndarray:
    """``llama_tokenize`` of a text (or its UTF-8) into int32 ids (no BOS/EOS added), growing the buffer as asked."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    cap = len(raw) + 8
    while True:
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(vocab, raw, len(raw), buf, cap, False, special)
        if n >= 0:
            return np.ctypeslib.as_array(buf)[:n].astype(np.int32, copy=True)
        if -n <= cap:
            raise RuntimeError(f"llama_tokenize failed ({n}) on a text of {len(raw)} bytes")
        cap = -n
