"""Native handles that survive any thread interleaving, and a clear error after ``fork``.

:class:`NativeGuard` counts the calls using an engine's native state. ``close()`` returns at
once: it refuses new calls, asks the running ones to stop (the engine's ``abort`` hook),
and the native state is freed by whichever of ``close()`` or the last running call finishes
last, so no thread ever touches freed memory. A call that was running when ``close()`` came
raises :class:`~qwen_embed.ModelClosedError`.

Fork: llama.cpp's OpenMP pool and PyTorch's intra-op pool do not survive ``fork()``. Once a
process has run either, any compute in a forked child hangs forever (in libgomp), with the
parent's engine or a fresh one. :func:`mark_threads_started` records that moment;
:func:`check_fork_safe` turns the hang into an :class:`~qwen_embed.UnsafeForkError`.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import ModelClosedError, UnsafeForkError

__all__ = ["EXIT_WAIT_SECONDS", "NativeGuard", "check_fork_safe", "mark_threads_started", "park_if_exiting"]

_threads_started_in: int | None = None  # the pid whose native thread pools have run
_exiting = False  # set at interpreter exit: calls from threads other than the main one are refused
_live: weakref.WeakSet[NativeGuard] = weakref.WeakSet()
#: Longest wait at exit for calls running in daemon threads to stop (each stops at its next step).
EXIT_WAIT_SECONDS = 30.0


def mark_threads_started() -> None:
    """Record that this process runs native thread pools (first decode / torch load)."""
    global _threads_started_in
    _threads_started_in = os.getpid()


def check_fork_safe(what: str) -> None:
    """Raise :class:`UnsafeForkError` in a child forked after its parent ran native thread pools."""
    parent = _threads_started_in
    if parent is not None and parent != os.getpid():
        raise UnsafeForkError(
            f"{what} in process {os.getpid()}, a fork of process {parent} after that process ran "
            "llama.cpp or PyTorch: their thread pools do not survive fork(), and the call would hang. "
            "Use a 'spawn' or 'forkserver' pool (multiprocessing.get_context('spawn'), "
            "ProcessPoolExecutor(mp_context=...)) and pass the Embedder to the workers (it pickles as "
            "its file and options and loads again there), or build one in each worker's initializer."
        )


class NativeGuard:
    """Reference-counted access to native state; see the module docstring.

    Args:
        name: What the errors call the owner (``"Qwen3-Embedding-0.6B-Q8_0.gguf"``).
        free: Frees the native state; called exactly once, with no call running.
        abort: Asks running calls to stop early (called by :meth:`close`); may be ``None``.
    """

    def __init__(self, name: str, *, free: Callable[[], None], abort: Callable[[], None] | None = None) -> None:
        self._name = name
        self._free = free
        self._abort = abort
        self._lock = threading.Lock()
        self._users = 0
        self._closed = False
        self._freed = False
        self._pid = os.getpid()
        self._idle = threading.Condition(self._lock)
        _live.add(self)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stopping(self) -> bool:
        """Whether a running call should stop at its next step: closed, or a daemon thread's at exit."""
        return self._closed or (_exiting and threading.current_thread() is not threading.main_thread())

    def check(self) -> None:
        """Raise if the state may not be used now (closed, or a fork child that would hang)."""
        if self._closed:
            raise ModelClosedError(f"{self._name}: this model was closed; create a new one.")
        check_fork_safe(f"{self._name} was used")

    @contextmanager
    def use(self) -> Iterator[None]:
        """Hold the native state for one call; the call raises ModelClosedError if closed meanwhile."""
        park_if_exiting()
        with self._lock:
            self.check()
            self._users += 1
        try:
            yield
        except BaseException as error:
            if self._closed and not isinstance(error, ModelClosedError):
                raise ModelClosedError(f"{self._name}: closed while this call was running.") from error
            raise
        finally:
            self._release()
            park_if_exiting()  # a daemon thread's call stopped at exit: parked, as Python parks the thread
        if self._closed:
            raise ModelClosedError(f"{self._name}: closed while this call was running.")

    def _release(self) -> None:
        with self._lock:
            self._users -= 1
            free_now = self._closed and self._users == 0 and not self._freed
            if free_now:
                self._freed = True
            if self._users == 0:
                self._idle.notify_all()
        if free_now:
            self._free()

    def stop_running(self, deadline: float) -> None:
        """Ask the running calls to stop (the engine's ``abort`` hook) and wait for them until ``deadline``."""
        with self._lock:
            if self._users == 0:
                return
        if self._abort is not None:
            self._abort()
        with self._lock:
            while self._users > 0 and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)

    def close(self) -> None:
        """Refuse new calls, stop running ones, free once nothing uses the state. Returns at once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if os.getpid() != self._pid and _threads_started_in not in (None, os.getpid()):
                self._freed = True  # a fork child: never touch the parent's native state
            free_now = self._users == 0 and not self._freed
            if free_now:
                self._freed = True
            running = self._users > 0
        if running and self._abort is not None:
            self._abort()
        if free_now:
            self._free()


_PARKED = threading.Event()  # never set


def park_if_exiting() -> None:
    """At interpreter exit, block a thread other than the main one for good (the process is ending)."""
    if _exiting and threading.current_thread() is not threading.main_thread():
        _PARKED.wait()


@atexit.register
def _stop_calls_at_exit() -> None:
    """At interpreter exit, stop the calls still running in daemon threads before the runtime goes away.

    Non-daemon threads have been joined when ``atexit`` runs, so a call still running is a daemon
    thread's. Left alone, it is killed inside PyTorch or llama.cpp while the interpreter and the
    libraries' static state are torn down: PyTorch's kernels then end in ``std::terminate``, and
    llama.cpp's terminate handler attaches ``gdb`` to print a native backtrace (seconds of it) before
    the process ends. Instead each running call stops at its next step (a llama.cpp graph node, a
    torch layer), and its thread, like any other than the main one that calls in from now on, waits
    on a lock until the process ends: what Python itself does to a daemon thread at exit, only
    outside native code. The main thread's own calls (later ``atexit`` handlers) still work.
    """
    global _exiting
    _exiting = True
    deadline = time.monotonic() + EXIT_WAIT_SECONDS
    for guard in list(_live):
        guard.stop_running(deadline)
