"""Helpers for the server tests: a real uvicorn on 127.0.0.1 in a thread, ``qwen-embed serve`` as a process, raw
HTTP, an engine gate."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import httpx

from qwen_embed import Embedder, Reranker
from qwen_embed.interfaces._server_run import build_server
from qwen_embed.interfaces.server import ServerOptions, create_app

MODEL = "qwen3-embedding-test"
HANG = 60.0  # seconds after which a wait counts as a hang (a failure detector, not a performance threshold)


class Running:
    """``create_app`` + ``build_server`` (the same protocol and timeouts as ``qwen-embed serve``) on 127.0.0.1."""

    def __init__(
        self,
        emb: Embedder | None,
        *,
        reranker: Reranker | None = None,
        index: Any = None,
        header_timeout: float = 10.0,
        shutdown_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        options.setdefault("model_name", MODEL)
        self.app = create_app(emb, ServerOptions(**options), reranker=reranker, index=index)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.ready = threading.Event()
        self.server = build_server(
            self.app,
            host="127.0.0.1",
            port=0,
            header_timeout=header_timeout,
            shutdown_timeout=shutdown_timeout,
            on_ready=lambda url: self.ready.set(),
        )
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics(self) -> Any:
        return self.app.state.metrics

    def __enter__(self) -> Running:
        self.thread.start()
        if not self.ready.wait(HANG):
            raise RuntimeError("server did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=HANG)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.sock.close()

    def post(self, body: bytes | dict[str, Any], path: str = "/v1/embeddings", **kwargs: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        return httpx.post(self.url + path, content=content, headers=headers, timeout=HANG, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=HANG, **kwargs)

    def raw(self, data: bytes) -> socket.socket:
        """A socket that has sent ``data`` (maybe half a request) and stays open."""
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=HANG)
        conn.sendall(data)
        return conn


class ServeProcess:
    """``python -m qwen_embed serve`` with its stderr read line by line on a thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        environment = {**os.environ, **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qwen_embed", "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.ended = False
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, needle: str) -> str | None:
        """The first stderr line holding ``needle``; ``None`` if the process ended first."""
        while True:
            line = self.lines.get(timeout=HANG)
            if line is None:
                self.ended = True
                return None
            self.seen.append(line)
            if needle in line:
                return line

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=HANG)
        while not self.ended:
            line = self.lines.get(timeout=HANG)
            self.ended = line is None
            if line is not None:
                self.seen.append(line)
        return code


def read_all(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; failing only after :data:`HANG` seconds (a hang)."""
    done = threading.Event()
    for _ in range(int(HANG / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError(f"never happened: {what}")


class EngineGate:
    """Wraps a model's engine entry (``Embedder.run``, ``Reranker.run``) so the test decides when each
    engine call may run, and records them.

    ``calls`` lists the texts of each call (the documents of a rerank) in the order the engine thread
    started them; ``log``, shared between gates, records ``(name, texts)`` across models.
    """

    def __init__(
        self, model: Embedder | Reranker, monkeypatch: Any, *, name: str = "", log: list[tuple[str, Any]] | None = None
    ) -> None:
        self.calls: list[list[str]] = []
        self.log = log if log is not None else []
        self.entered = threading.Semaphore(0)
        self._permits = threading.Semaphore(0)
        self._open = threading.Event()
        pairs = isinstance(model, Reranker)
        real = model.run

        def gated(items: Any, *args: Any, **kwargs: Any) -> Any:
            texts = [pair[1] for pair in items] if pairs else list(items)
            self.calls.append(texts)
            self.log.append((name, texts))
            self.entered.release()
            while not self._open.is_set() and not self._permits.acquire(timeout=0.05):
                pass
            return real(items, *args, **kwargs)

        monkeypatch.setattr(model, "run", gated)

    def wait_entered(self) -> None:
        if not self.entered.acquire(timeout=HANG):
            raise AssertionError("no engine call started")

    def allow(self, n: int = 1) -> None:
        for _ in range(n):
            self._permits.release()

    def open(self) -> None:
        self._open.set()
