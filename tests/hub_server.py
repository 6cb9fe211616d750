"""A real HTTP server on 127.0.0.1 that speaks enough of the Hugging Face Hub's protocol.

``huggingface_hub`` itself talks to it (``endpoint=`` / ``HF_ENDPOINT``): the tree
listing API with LFS metadata, ``resolve`` with ``X-Repo-Commit``, ``ETag``,
``X-Linked-Etag``/``X-Linked-Size`` and range requests, and the Hub's error codes
(``X-Error-Code``). Faults are injected per test: error statuses (with extra headers
such as ``Retry-After``) for the next N matching requests, a connection cut mid-file
(clean close or TCP reset), a same-size corrupted body, a slow body, a trickling body,
and a request that is accepted but never answered. :func:`closed_port_url` gives an endpoint where nothing listens.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$")
_INFO = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    commit: str
    gated: bool = False

    def entry(self, path: str) -> dict[str, object]:
        data = self.files[path]
        git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        item: dict[str, object] = {"type": "file", "oid": git_oid, "size": len(data), "path": path}
        if _is_lfs(path):
            item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return item


@dataclass
class Fault:
    pattern: str  # substring of the request path
    status: int | None = None  # answer with this status ...
    times: int = 1  # ... for this many matching requests
    cut_after: int | None = None  # close the connection after this many body bytes
    corrupt: bool = False  # flip one byte of the body (same size)
    error_code: str | None = None
    method: str | None = None  # only requests of this method (default: any)
    reset_after: int | None = None  # send this many body bytes, then reset the connection (TCP RST)
    stall: bool = False  # read the request, never answer (until the server stops)
    trickle: float | None = None  # send the body one byte per this many seconds
    headers: dict[str, str] | None = None  # extra headers on an injected status (Retry-After, RateLimit)


@dataclass
class HubServer:
    """Start with ``with HubServer() as hub:``; ``hub.url`` is the endpoint."""

    repos: dict[str, FakeRepo] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    chunk_delay: float = 0.0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)

    def add_repo(self, repo_id: str, files: dict[str, bytes | Path], *, gated: bool = False) -> FakeRepo:
        data = {name: (Path(v).read_bytes() if isinstance(v, Path) else v) for name, v in files.items()}
        commit = hashlib.sha1(repr(sorted((k, len(v)) for k, v in data.items())).encode() + repo_id.encode())
        repo = FakeRepo(files=data, commit=commit.hexdigest(), gated=gated)
        self.repos[repo_id] = repo
        return repo

    def inject(self, pattern: str, **kwargs: object) -> Fault:
        fault = Fault(pattern, **kwargs)  # type: ignore[arg-type]
        self.faults.append(fault)
        return fault

    def requests(self, method: str | None = None, contains: str = "") -> list[tuple[str, str, str | None]]:
        with self._lock:
            return [r for r in self.log if (method is None or r[0] == method) and contains in r[1]]

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubServer:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._stopping.set()  # stalled and trickling handlers end
        self._server.shutdown()
        self._server.server_close()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.pattern in path and fault.times > 0 and fault.method in (None, method):
                    fault.times -= 1
                    return fault
        return None


def closed_port_url() -> str:
    """An endpoint on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _is_lfs(path: str) -> bool:
    return path.endswith(".gguf") or path.endswith(".bin")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: HubServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def do_GET(self) -> None:
        self._handle(body=True)

    # ------------------------------------------------------------------ routing

    def _handle(self, *, body: bool) -> None:
        hub = self.server_hub
        path = unquote(urlsplit(self.path).path)
        with hub._lock:
            hub.log.append((self.command, path, self.headers.get("Range")))
        fault = hub._take_fault(self.command, path)
        if fault is not None and fault.stall:
            hub._stopping.wait()
            self.close_connection = True
            return None
        if fault is not None and fault.status is not None:
            return self._error(fault.status, fault.error_code, "injected fault", headers=fault.headers)
        if match := _TREE.match(path):
            return self._tree(match.group(1), match.group(2), match.group(3) or "")
        if match := _INFO.match(path):
            return self._info(match.group(1), match.group(2) or "main")
        if match := _RESOLVE.match(path):
            return self._resolve(match.group(1), match.group(2), match.group(3), body=body, fault=fault)
        self._error(404, None, "no such route")

    def _repo(self, repo_id: str, revision: str) -> FakeRepo | None:
        repo = self.server_hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if repo.gated and not self.headers.get("Authorization"):
            self._error(401, "GatedRepo", "Access to this model is restricted")
            return None
        if revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return None
        return repo

    def _tree(self, repo_id: str, revision: str, under: str) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        entries = [repo.entry(p) for p in sorted(repo.files) if p.startswith(under)]
        self._json(entries)

    def _info(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        self._json({"id": repo_id, "sha": repo.commit, "siblings": [{"rfilename": p} for p in sorted(repo.files)]})

    def _resolve(self, repo_id: str, revision: str, filename: str, *, body: bool, fault: Fault | None) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        data = repo.files.get(filename)
        if data is None:
            return self._error(404, "EntryNotFound", "Entry not found", commit=repo.commit)
        etag = hashlib.sha256(data).hexdigest() if _is_lfs(filename) else repo.entry(filename)["oid"]
        start, status = 0, 200
        ranged = self.headers.get("Range")
        if ranged and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", ranged)):
            start, status = int(m.group(1)), 206
        payload = data[start:]
        if fault is not None and fault.corrupt:
            mid = len(payload) // 2
            payload = payload[:mid] + bytes([payload[mid] ^ 0xFF]) + payload[mid + 1 :]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", repo.commit)
        if _is_lfs(filename):
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(len(data)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        if fault is not None and fault.trickle is not None and body:
            return self._trickle(payload, fault.trickle)
        if fault is not None and fault.reset_after is not None and body:
            return self._reset(payload[: fault.reset_after])
        cut = fault is not None and fault.cut_after is not None and fault.cut_after < len(payload)
        if cut:
            assert fault is not None and fault.cut_after is not None
            payload = payload[: fault.cut_after]
        for chunk in _chunks(payload, 64 * 1024):
            if self.server_hub.chunk_delay:
                threading.Event().wait(self.server_hub.chunk_delay)
            self.wfile.write(chunk)
        if cut:  # the promised Content-Length is never reached: the client sees the connection drop
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)

    def _trickle(self, payload: bytes, delay: float) -> None:
        """One byte at a time: every read returns quickly, so no read timeout ever fires."""
        stopping = self.server_hub._stopping
        self.close_connection = True
        try:
            for i in range(len(payload)):
                if stopping.wait(delay):
                    return
                self.wfile.write(payload[i : i + 1])
                self.wfile.flush()
        except OSError:  # the client gave up
            return

    def _reset(self, head: bytes) -> None:
        """Send part of the body, then drop the connection with a TCP reset (SO_LINGER 0)."""
        self.wfile.write(head)
        self.wfile.flush()
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    # ------------------------------------------------------------------ answers

    def _json(self, value: object) -> None:
        raw = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    def _error(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        commit: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        raw = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
