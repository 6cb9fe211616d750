"""Timeouts, one retry budget and quiet retries for the Hub requests ``huggingface_hub`` makes for us.

Why this module exists (``huggingface_hub`` 1.x on httpx, 2.x on httpx2, read in their source):

- the shared HTTP client's default factory sets ``timeout=None``, and several calls pass
  ``timeout=None`` explicitly (the repository listing among them), so a Hub that accepts the
  connection and never answers keeps the caller waiting for ever;
- its retries (up to 5 per request, 1 to 8 s apart, nested in a second retry of the metadata
  call and a resume loop for the body) cannot be bounded from outside, and each one writes a
  warning to stderr.

The only public seam is the client factory (``huggingface_hub.set_client_factory``), and it is
process-global upstream. :func:`hub_session` is the one place that touches it: the first
operation in flight installs a factory whose client sends every request through a guarding
transport, and the last one restores the previous factory. The guard

- sets connect and read timeouts on every request, whatever ``huggingface_hub`` passed;
- counts requests and failures against the :class:`RetryBudget` of the current operation and,
  once it is spent, raises :class:`BudgetSpent`, which ``huggingface_hub`` does not retry;
- aborts a body that trickles in below a floor speed (a per-read timeout never fires on it);
- logs one line per retry through this library's logger, while ``huggingface_hub``'s own retry
  warnings are filtered out for the duration;
- caps every pause before a retry by the time left in the budget: an answer asking for a longer
  wait (``Retry-After``, or the ``RateLimit`` header's reset) ends the operation at once, with a
  message naming the wait; ``huggingface_hub``'s own pauses (``time.sleep`` in
  ``huggingface_hub.utils._http._http_backoff_base`` and in ``file_download.http_get``'s resume)
  go through a stand-in ``time`` module that refuses any pause longer than the time left.

Requests other threads make through ``huggingface_hub`` meanwhile only gain default timeouts.
The user's own client factory, if any, still builds the client that does the sending (proxies,
certificates). Transfers that ``hf_xet`` makes itself bypass this client; their failures still
count against the budget when they reach :func:`download._hub_call`.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..errors import ConfigurationError, QwenEmbedError

__all__ = [
    "LOCAL_WAYS",
    "OFFLINE_WAYS",
    "WAYS_OUT",
    "BudgetSpent",
    "NetworkSettings",
    "RetryBudget",
    "hub_session",
    "requested_wait",
]

logger = logging.getLogger(__name__)

ENV_ETAG_TIMEOUT = "HF_HUB_ETAG_TIMEOUT"
ENV_DOWNLOAD_TIMEOUT = "HF_HUB_DOWNLOAD_TIMEOUT"
ENV_ATTEMPTS = "QWEN_EMBED_HUB_ATTEMPTS"
ENV_RETRY_SECONDS = "QWEN_EMBED_HUB_RETRY_SECONDS"
ENV_MIN_SPEED = "QWEN_EMBED_HUB_MIN_SPEED"

#: Answers worth another try: timeouts, rate limits and server errors.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})

# huggingface_hub 2.x fetches an "agent harness" registry from huggingface.co while it builds its
# User-Agent header (once per process, best effort, its own 3 s timeout, errors swallowed; off with
# HF_HUB_DISABLE_TELEMETRY=1). It is no part of the operation: neither counted nor given our timeouts.
_BEST_EFFORT_PATHS = frozenset({"/api/agent-harnesses"})

#: What to do without a download (the end of every message that gives up on the Hub).
LOCAL_WAYS = (
    "pass the path of a local .gguf file instead of a model name, or try `qwen-embed demo` "
    "(a small random-weight model, no download)."
)
WAYS_OUT = f"To work without the Hub: set HF_HUB_OFFLINE=1 to use a copy already in the cache, {LOCAL_WAYS}"
OFFLINE_WAYS = f"Without a download: {LOCAL_WAYS}"


@dataclass(frozen=True)
class NetworkSettings:
    """How long to wait, and how often to try again, when talking to the Hub.

    Attributes:
        connect_timeout: Seconds to connect, and to wait for the answer to a metadata request
            (``HF_HUB_ETAG_TIMEOUT``).
        download_timeout: Seconds to wait for the next bytes of a file (``HF_HUB_DOWNLOAD_TIMEOUT``);
            also the window over which ``min_speed`` is measured.
        attempts: Failed requests tolerated per operation (one listing, or one file) before giving up
            (``QWEN_EMBED_HUB_ATTEMPTS``).
        retry_seconds: Seconds after a failure (with no file progress since) after which no new attempt
            starts (``QWEN_EMBED_HUB_RETRY_SECONDS``).
        min_speed: A file body slower than this many bytes per second over ``download_timeout`` seconds
            counts as a stalled attempt (``QWEN_EMBED_HUB_MIN_SPEED``).
    """

    connect_timeout: float = 10.0
    download_timeout: float = 10.0
    attempts: int = 3
    retry_seconds: float = 60.0
    min_speed: float = 1000.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NetworkSettings:
        """The settings from the environment (the one place this module reads it), defaults elsewhere."""
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            connect_timeout=_positive(env, ENV_ETAG_TIMEOUT, defaults.connect_timeout, "seconds"),
            download_timeout=_positive(env, ENV_DOWNLOAD_TIMEOUT, defaults.download_timeout, "seconds"),
            attempts=int(_positive(env, ENV_ATTEMPTS, defaults.attempts, "attempts", integer=True)),
            retry_seconds=_positive(env, ENV_RETRY_SECONDS, defaults.retry_seconds, "seconds"),
            min_speed=_positive(env, ENV_MIN_SPEED, defaults.min_speed, "bytes per second"),
        )

    def timeouts_for(self, method: str, path: str) -> dict[str, float]:
        """httpx's per-request timeout extension: metadata answers get the connect timeout."""
        metadata = method.upper() == "HEAD" or path.startswith("/api/")
        read = self.connect_timeout if metadata else self.download_timeout
        return {"connect": self.connect_timeout, "read": read, "write": read, "pool": self.connect_timeout}

    def describe(self) -> str:
        """The limits in force, for messages."""
        return (
            f"timeouts {self.connect_timeout:g} s connect / {self.download_timeout:g} s read, "
            f"at most {self.attempts} failed attempt(s) within {self.retry_seconds:g} s"
        )


def _positive(env: Mapping[str, str], name: str, default: float, unit: str, *, integer: bool = False) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = -1
    if value <= 0:
        kind = "a positive whole number of" if integer else "a positive number of"
        raise ConfigurationError(
            f"{name}={raw!r} is not {kind} {unit}; unset it (default {default:g}) or set e.g. {name}={default:g}."
        )
    return value


class BudgetSpent(QwenEmbedError):
    """Raised inside ``huggingface_hub``'s call stack once an operation's retry budget is spent.

    It subclasses neither an httpx error nor ``OSError``, so ``huggingface_hub`` neither retries it nor
    falls back on it; :func:`download._hub_call` turns it into :class:`~qwen_embed.errors.DownloadError`.
    """

    def __init__(self, budget: RetryBudget) -> None:
        super().__init__(budget.message())
        self.budget = budget


class RetryBudget:
    """What one operation (a listing, or one file) has tried so far, and whether it may try again.

    Thread-safe: the requests of one operation may come from ``huggingface_hub``'s worker threads.
    """

    def __init__(self, settings: NetworkSettings, *, endpoint: str, what: str) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.what = what
        self.requests = 0
        self.failures = 0
        self.last_error = ""
        #: The pause that ended the operation: (who asked for it, seconds), when one did.
        self.refused_wait: tuple[str, float] | None = None
        self._started = time.monotonic()
        self._first_failure: float | None = None
        self._lock = threading.Lock()

    @property
    def spent(self) -> bool:
        """No further attempt may start."""
        with self._lock:
            return self._spent()

    def _spent(self) -> bool:
        if self.failures >= self.settings.attempts or self.refused_wait is not None:
            return True
        return self._first_failure is not None and self.retry_seconds_left() <= 0

    def allow_wait(self, seconds: float, *, asked_by: str) -> bool:
        """Whether a pause of ``seconds`` before the next attempt fits the time left; if not, the budget is spent.

        Args:
            seconds: The pause.
            asked_by: Who wants it, for the message (``"the Hub asked"``, ``"huggingface_hub would"``).
        """
        with self._lock:
            if self.refused_wait is not None:
                return False
            if seconds < self.retry_seconds_left():
                return True
            self.refused_wait = (asked_by, seconds)
            return False

    def retry_seconds_left(self) -> float:
        """Seconds left before the time budget runs out (the full budget before any failure)."""
        if self._first_failure is None:
            return self.settings.retry_seconds
        return self.settings.retry_seconds - (time.monotonic() - self._first_failure)

    def record_progress(self) -> None:
        """A body kept above the speed floor for a whole window: the time budget starts again (not the attempts)."""
        with self._lock:
            self._first_failure = None

    def record_request(self) -> None:
        """Count one request sent."""
        with self._lock:
            self.requests += 1

    def record_failure(self, request: str, reason: str, *, wait: float | None = None) -> bool:
        """Count one failed attempt, log one line if there will be another, and return whether the budget is spent.

        Args:
            request: ``"METHOD URL"`` of the failed request (empty when unknown).
            reason: What went wrong.
            wait: Seconds the answer asked to pause before the next attempt (``Retry-After``); a pause
                that does not fit the time left spends the budget at once.
        """
        with self._lock:
            self.failures += 1
            self.last_error = f"{request}: {reason}" if request else reason
            if self._first_failure is None:
                self._first_failure = time.monotonic()
            if wait is not None and not self._spent() and wait >= self.retry_seconds_left():
                self.refused_wait = ("the Hub asked", wait)
            spent = self._spent()
            failures = self.failures
        if not spent:
            logger.warning(
                "Hub request failed (%s); retrying, %d of %d failed attempt(s) allowed",
                self.last_error,
                failures,
                self.settings.attempts,
            )
        return spent

    def message(self) -> str:
        """The one-line explanation for the final error: the endpoint, the attempts made, the ways out."""
        elapsed = time.monotonic() - self._started
        if self.refused_wait is not None:
            who, seconds = self.refused_wait
            left = max(self.retry_seconds_left(), 0.0)
            return (
                f"Could not {self.what} from the Hub at {self.endpoint}: {who} to wait {seconds:g} s before trying "
                f"again, more than the {left:.3g} s left of the {self.settings.retry_seconds:g} s retry budget, so "
                f"this library gave up at once ({self.failures} failed attempt(s), {self.requests} request(s) in "
                f"{elapsed:.1f} s; last: {self.last_error or 'no answer'}). To wait that long, set "
                f"{ENV_RETRY_SECONDS} above {seconds:g}. {WAYS_OUT}"
            )
        return (
            f"Could not {self.what} from the Hub at {self.endpoint} after {self.failures} failed attempt(s) "
            f"({self.requests} request(s) in {elapsed:.1f} s; last: {self.last_error or 'no answer'}; "
            f"{self.settings.describe()}). {WAYS_OUT} On a slow network, raise HF_HUB_DOWNLOAD_TIMEOUT or "
            f"{ENV_ATTEMPTS}."
        )


# ----------------------------------------------------------------------------- the session

_CURRENT: ContextVar[RetryBudget | None] = ContextVar("qwen_embed_hub_budget", default=None)
_install_lock = threading.Lock()
_users = 0
_previous_factory: Callable[[], Any] | None = None
_our_factory: Callable[[], Any] | None = None

# huggingface_hub's warnings for the retries the guard already reports (one line each, through our logger).
_HF_RETRY_LOGGERS = ("huggingface_hub.utils._http", "huggingface_hub.file_download")
_HF_RETRY_MARKS = ("thrown while requesting", "Retrying in", "Rate limited", "Error while downloading from")


class _DropHubRetryWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(mark in message for mark in _HF_RETRY_MARKS)


_FILTER = _DropHubRetryWarnings()


@contextmanager
def hub_session(budget: RetryBudget) -> Iterator[None]:
    """Make every ``huggingface_hub`` request in this context go through the guard, against ``budget``."""
    token = _CURRENT.set(budget)
    _acquire()
    try:
        yield
    finally:
        _release()
        _CURRENT.reset(token)


def _acquire() -> None:
    global _users, _previous_factory, _our_factory
    with _install_lock:
        _users += 1
        if _users > 1:
            return
        for name in _HF_RETRY_LOGGERS:
            logging.getLogger(name).addFilter(_FILTER)
        _cap_sleeps(True)
        hooks = _hf_client_hooks()
        if hooks is None:  # huggingface_hub < 1.0 (requests): its own timeouts and retries apply
            return
        httpx, get_factory, set_factory = hooks
        _previous_factory = get_factory()
        _our_factory = _guarded_factory(httpx, _previous_factory, NetworkSettings.from_env())
        set_factory(_our_factory)


def _release() -> None:
    global _users, _previous_factory, _our_factory
    with _install_lock:
        _users -= 1
        if _users > 0:
            return
        for name in _HF_RETRY_LOGGERS:
            logging.getLogger(name).removeFilter(_FILTER)
        _cap_sleeps(False)
        hooks = _hf_client_hooks()
        if hooks is not None and _previous_factory is not None:
            _, get_factory, set_factory = hooks
            if get_factory() is _our_factory:  # someone else may have set theirs meanwhile: keep it
                set_factory(_previous_factory)  # also closes our client
        _previous_factory = _our_factory = None


def _hf_client_hooks() -> tuple[Any, Callable[[], Any], Callable[[Any], None]] | None:
    """(the httpx module huggingface_hub uses, a getter and a setter of its client factory), or None."""
    try:
        import huggingface_hub
        from huggingface_hub.utils import _http
    except ImportError:
        return None
    httpx = getattr(_http, "httpx2", None) or getattr(_http, "httpx", None)
    setter = getattr(huggingface_hub, "set_client_factory", None)
    if httpx is None or setter is None or not hasattr(_http, "_GLOBAL_CLIENT_FACTORY"):
        return None
    # No public getter upstream: the factory in force is read from the module that holds it.
    return httpx, lambda: _http._GLOBAL_CLIENT_FACTORY, setter


def _guarded_factory(httpx: Any, inner_factory: Callable[[], Any], defaults: NetworkSettings) -> Callable[[], Any]:
    transport_class, _ = _guard_classes(httpx)

    def factory() -> Any:
        inner = inner_factory()  # the client huggingface_hub (or the user) would have used: it does the sending
        # trust_env=False: proxies from the environment are the inner client's business; an outer proxy mount
        # would bypass the guard.
        return httpx.Client(transport=transport_class(inner, defaults), follow_redirects=True, trust_env=False)

    return factory


@cache
def _guard_classes(httpx: Any) -> tuple[type, type]:
    """The guarding transport and stream, built on the httpx module huggingface_hub uses (imported lazily)."""

    class GuardedStream(httpx.SyncByteStream):  # type: ignore[misc]
        def __init__(self, response: Any, budget: RetryBudget | None, label: str) -> None:
            self._response = response
            self._budget = budget
            self._label = label

        def __iter__(self) -> Iterator[bytes]:
            budget = self._budget
            window_start, window_bytes = time.monotonic(), 0
            try:
                for chunk in self._response.iter_raw():
                    if budget is not None:
                        window_bytes += len(chunk)
                        now = time.monotonic()
                        window = now - window_start
                        if window >= budget.settings.download_timeout:
                            if window_bytes < budget.settings.min_speed * window:
                                raise httpx.ReadTimeout(
                                    f"the body trickled in at {window_bytes / window:.0f} B/s, below "
                                    f"{budget.settings.min_speed:g} B/s over {window:.1f} s",
                                    request=self._response.request,
                                )
                            budget.record_progress()
                            window_start, window_bytes = now, 0
                    yield chunk
            except httpx.TransportError as error:
                if budget is not None and budget.record_failure(self._label, _describe(error)):
                    raise BudgetSpent(budget) from error
                raise

        def close(self) -> None:
            self._response.close()

    class GuardedTransport(httpx.BaseTransport):  # type: ignore[misc]
        def __init__(self, inner: Any, defaults: NetworkSettings) -> None:
            self._inner = inner
            self._defaults = defaults

        def handle_request(self, request: Any) -> Any:
            budget = _CURRENT.get()
            label = f"{request.method} {str(request.url).split('?', 1)[0]}"
            if budget is None or request.url.path in _BEST_EFFORT_PATHS:  # not ours: only fill in missing timeouts
                given = dict(request.extensions.get("timeout") or {})
                wanted = self._defaults.timeouts_for(request.method, request.url.path)
                timeouts = {key: value if given.get(key) is None else given[key] for key, value in wanted.items()}
                request.extensions = {**request.extensions, "timeout": timeouts}
                return self._forward(request, None, label)
            if budget.spent:
                raise BudgetSpent(budget)
            timeouts = budget.settings.timeouts_for(request.method, request.url.path)
            request.extensions = {**request.extensions, "timeout": timeouts}
            budget.record_request()
            return self._forward(request, budget, label)

        def _forward(self, request: Any, budget: RetryBudget | None, label: str) -> Any:
            try:
                response = self._inner.send(request, stream=True, follow_redirects=False)
            except httpx.TransportError as error:
                if budget is not None and budget.record_failure(label, _describe(error)):
                    raise BudgetSpent(budget) from error
                raise
            if budget is not None and response.status_code in RETRY_STATUS:
                wait = requested_wait(response.status_code, response.headers)
                reason = f"HTTP {response.status_code}" + (f", asked to wait {wait:g} s" if wait is not None else "")
                if budget.record_failure(label, reason, wait=wait):
                    response.close()
                    raise BudgetSpent(budget)
            return httpx.Response(
                response.status_code,
                headers=response.headers,
                stream=GuardedStream(response, budget, label),
                extensions=response.extensions,
            )

        def close(self) -> None:
            self._inner.close()

    return GuardedTransport, GuardedStream


def requested_wait(status: int, headers: Mapping[str, str]) -> float | None:
    """Seconds an answer asks the client to wait before trying again, read as ``huggingface_hub`` reads them.

    A 429 whose ``RateLimit`` header says no request is left gives its reset time; otherwise a
    ``Retry-After`` in seconds (``huggingface_hub`` ignores the HTTP-date form, and so does this).
    """
    if status == 429:
        import huggingface_hub.utils

        parse = getattr(huggingface_hub.utils, "parse_ratelimit_headers", None)  # public since huggingface_hub 1.2
        info = parse(headers) if parse is not None else None
        if info is not None and info.remaining == 0:
            return float(info.reset_in_seconds)
    for key, value in headers.items():
        if key.lower() == "retry-after" and value.strip().isdigit():
            return float(value.strip())
    return None


class _CappedTime:
    """Stands in for the ``time`` module inside ``huggingface_hub``'s retry code: a pause longer than the time
    left in the current operation's budget raises :class:`BudgetSpent` instead of sleeping."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        budget = _CURRENT.get()
        if budget is not None and not budget.allow_wait(seconds, asked_by="huggingface_hub would have had"):
            raise BudgetSpent(budget)
        time.sleep(seconds)


_CAPPED_TIME = _CappedTime()


def _hf_sleeping_modules() -> list[Any]:
    """The ``huggingface_hub`` modules that pause with ``time.sleep`` between attempts (read in its source)."""
    modules = []
    for name in ("huggingface_hub.utils._http", "huggingface_hub.file_download"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:  # pragma: no cover - a layout this library does not know
            continue
    return modules


def _cap_sleeps(on: bool) -> None:
    for module in _hf_sleeping_modules():
        if on and getattr(module, "time", None) is time:
            module.time = _CAPPED_TIME
        elif not on and getattr(module, "time", None) is _CAPPED_TIME:
            module.time = time


def _describe(error: BaseException) -> str:
    text = str(error).strip() or "no details"
    return f"{type(error).__name__}: {text}"
