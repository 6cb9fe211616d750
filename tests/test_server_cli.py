"""`qwen-embed serve` as a real process: flags checked by argparse, the banner after the bind, stderr logs, the key."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest

from qwen_embed.interfaces.cli import main

from .server_support import HANG, ServeProcess, read_all, wait_until


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--port", "99999", "not a port: '99999'"),
        ("--port", "http", "not a port"),
        ("--max-inputs", "0", "not a whole number of at least 1: '0'"),
        ("--max-request-tokens", "-5", "at least 1"),
        ("--body-timeout", "0", "seconds above 0"),
        ("--header-timeout", "inf", "seconds above 0"),
        ("--max-body-bytes", "lots", "not a size"),
        ("--log-level", "loud", "invalid choice"),
    ],
)
def test_bad_serve_flags_are_one_line_argparse_errors(
    flag: str, value: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--model-path", "never-loaded.gguf", flag, value])
    assert exited.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("qwen-embed serve: error: argument") and needle in last


def test_banner_after_the_bind_logs_on_stderr_and_the_env_api_key(tiny_model: Path) -> None:
    server = ServeProcess("--model-path", str(tiny_model), "--port", "0", env={"QWEN_EMBED_API_KEY": "from-env"})
    try:
        banner = server.wait_for("qwen-embed: serving")
        assert banner is not None, "".join(server.seen)
        assert any("Uvicorn running on" in line for line in server.seen)  # uvicorn had bound the port
        url = banner.split(" on ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert httpx.get(url.removesuffix("/v1") + "/health", timeout=HANG).status_code == 200
        body = {"input": "x"}
        assert httpx.post(url + "/embeddings", json=body, timeout=HANG).status_code == 401
        auth = {"Authorization": "Bearer from-env"}
        assert httpx.post(url + "/embeddings", json=body, headers=auth, timeout=HANG).status_code == 200
        assert server.wait_for('"POST /v1/embeddings" 200') is not None  # the access log, on stderr
    finally:
        code = server.stop()
    assert code == -signal.SIGTERM  # uvicorn drains, then re-raises the signal: the shell sees 143
    assert any("Finished server process" in line for line in server.seen)  # the drain ran to its end
    assert server.process.stdout is not None and server.process.stdout.read() == ""


def test_no_banner_when_the_port_is_taken(tiny_model: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ServeProcess("--model-path", str(tiny_model), "--port", str(port))
        assert server.wait_for("qwen-embed: serving") is None
        code = server.stop()
    assert code != 0
    assert any("address already in use" in line.lower() for line in server.seen), "".join(server.seen)


@pytest.mark.parametrize(("cpus", "env", "expected"), [(2, "", 1), (1, "", 1), (16, "", 15), (2, "2", 2)])
def test_serve_leaves_the_server_a_core_by_default(
    cpus: int, env: str, expected: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On 2 cores the load test measured a small request's p99 at 44 ms with the engine on one, 329 ms on both."""
    from qwen_embed.interfaces._server_options import default_engine_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.setenv("QWEN_EMBED_NUM_THREADS", env)
    assert default_engine_threads() == expected
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    assert "every CPU this process may use but one, at least 1" in " ".join(capsys.readouterr().out.split())


def test_serve_starts_the_engine_on_the_default_threads(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen_embed.interfaces import server as server_module

    seen: dict[str, int] = {}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.delenv("QWEN_EMBED_NUM_THREADS", raising=False)

    def fake_serve(emb: object, *args: object, **kwargs: object) -> None:
        seen["threads"] = emb.n_threads  # type: ignore[attr-defined]

    monkeypatch.setattr(server_module, "serve", fake_serve)
    assert main(["serve", "--model-path", str(tiny_model), "--port", "0"]) == 0
    assert seen == {"threads": 2}
    assert main(["serve", "--model-path", str(tiny_model), "--port", "0", "--threads", "3"]) == 0
    assert seen == {"threads": 3}


def test_past_the_shutdown_timeout_a_request_gets_json_503_and_the_log_no_traceback(tiny_model: Path) -> None:
    """Issue 21 #9: uvicorn cancels what is still running after --shutdown-timeout; that used to answer a
    plain-text 500 and log two CancelledError tracebacks."""
    server = ServeProcess("--model-path", str(tiny_model), "--port", "0", "--shutdown-timeout", "0.3")
    try:
        banner = server.wait_for("qwen-embed: serving")
        assert banner is not None, "".join(server.seen)
        base = banner.split(" on ", 1)[1].strip().removesuffix("/v1")
        host, port = base.removeprefix("http://").rsplit(":", 1)
        conn = socket.create_connection((host, int(port)), timeout=HANG)
        head = b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        conn.sendall(head + b'Content-Length: 100\r\n\r\n{"input": ')  # the body never finishes

        def in_flight() -> float:
            text = httpx.get(base + "/metrics", timeout=HANG).text
            return float(text.split("\nqwen_embed_requests_in_flight ")[1].split()[0])

        wait_until(lambda: in_flight() == 2, "the half-sent request in the app (and this /metrics call)")
        server.process.send_signal(signal.SIGTERM)
        reply = read_all(conn)
        conn.close()
    finally:
        server.stop()
    status, _, rest = reply.partition(b"\r\n")
    assert status == b"HTTP/1.1 503 Service Unavailable", "".join(server.seen)
    assert b"content-type: application/json" in rest.lower()
    error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "shutting_down" and "--shutdown-timeout" in error["message"]
    log = "".join(server.seen)
    assert "cancelled by the shutdown" in log
    assert "Traceback" not in log and "CancelledError" not in log, log
