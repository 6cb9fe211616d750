"""One test per server finding of the hardening issue: responsiveness, fairness, limits, security, logs.

Everything runs a real uvicorn on 127.0.0.1 and talks to it with real clients (httpx, openai,
raw sockets). Ordering is asserted with events and gates, never with durations.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qwen_embed import Embedder
from qwen_embed.interfaces import _server_embeddings
from qwen_embed.interfaces import server as server_module
from qwen_embed.interfaces.server import ServerOptions, create_app

from .server_support import HANG, MODEL, EngineGate, Running, read_all, wait_until

ATOL = 5e-4


@pytest.fixture(scope="module")
def emb(tiny_model: Path) -> Iterator[Embedder]:
    with Embedder(tiny_model, n_threads=2, max_length=64) as e:
        yield e


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def _embeddings(metrics: Any, status: int) -> float:
    return metrics.value("qwen_embed_requests_total", {"path": "/v1/embeddings", "status": str(status)})


# ---------------------------------------------------------------- responsive and fair


def test_health_and_small_requests_answer_while_a_big_request_is_tokenized(
    emb: Embedder, monkeypatch: pytest.MonkeyPatch, pool: ThreadPoolExecutor
) -> None:
    """Token counting runs on worker threads: a request stuck in it blocks nobody else."""
    entered, release = threading.Event(), threading.Event()
    real = emb.count_tokens

    def slow_count(text: str, **kwargs: Any) -> int:
        if text.startswith("BIG"):
            entered.set()
            release.wait(HANG)
        return real(text, **kwargs)

    monkeypatch.setattr(emb, "count_tokens", slow_count)
    with Running(emb) as server:
        big: Future[httpx.Response] = pool.submit(server.post, {"input": ["BIG text"] * 8})
        assert entered.wait(HANG)
        assert server.get("/health").status_code == 200
        small = server.post({"input": "a small one"})
        assert small.status_code == 200 and not big.done()
        release.set()
        assert big.result().status_code == 200


def test_responses_are_rendered_off_the_event_loop(
    emb: Embedder, monkeypatch: pytest.MonkeyPatch, pool: ThreadPoolExecutor
) -> None:
    entered, release = threading.Event(), threading.Event()
    real = _server_embeddings.render_embeddings

    def slow_render(vectors: np.ndarray, **kwargs: Any) -> bytes:
        if len(vectors) == 3:
            entered.set()
            release.wait(HANG)
        return real(vectors, **kwargs)

    monkeypatch.setattr(_server_embeddings, "render_embeddings", slow_render)
    with Running(emb) as server:
        big = pool.submit(server.post, {"input": ["a", "b", "c"]})
        assert entered.wait(HANG)
        assert server.get("/health").status_code == 200
        assert server.post({"input": "single"}).status_code == 200
        release.set()
        assert len(big.result().json()["data"]) == 3


def test_a_small_request_overtakes_a_large_one_after_one_sub_batch(
    emb: Embedder, monkeypatch: pytest.MonkeyPatch, pool: ThreadPoolExecutor
) -> None:
    gate = EngineGate(emb, monkeypatch)
    big_texts = [f"big {i}" for i in range(40)]
    with Running(emb, batch_texts=4) as server:
        big = pool.submit(server.post, {"input": big_texts, "encoding_format": "float"})
        gate.wait_entered()  # the first sub-batch of the large request is in the engine
        small = pool.submit(server.post, {"input": "small", "encoding_format": "float"})
        wait_until(lambda: server.metrics.value("qwen_embed_queue_requests") == 2, "both requests queued")
        gate.open()
        assert small.result().status_code == 200 and big.result().status_code == 200
    assert len(gate.calls) == 11
    assert gate.calls[0] == big_texts[:4] and gate.calls[1] == ["small"]  # not after the other 9 sub-batches
    got = np.array([item["embedding"] for item in big.result().json()["data"]])
    np.testing.assert_allclose(got, emb.encode(big_texts), atol=ATOL)


def test_two_large_requests_take_turns(
    emb: Embedder, monkeypatch: pytest.MonkeyPatch, pool: ThreadPoolExecutor
) -> None:
    gate = EngineGate(emb, monkeypatch)
    first, second = [f"first {i}" for i in range(12)], [f"second {i}" for i in range(12)]
    with Running(emb, batch_texts=4) as server:
        a = pool.submit(server.post, {"input": first})
        gate.wait_entered()
        b = pool.submit(server.post, {"input": second})
        wait_until(lambda: server.metrics.value("qwen_embed_queue_requests") == 2, "both requests queued")
        gate.open()
        assert a.result().status_code == 200 and b.result().status_code == 200
    owners = [call[0].split()[0] for call in gate.calls]
    assert owners == ["first", "second", "first", "second", "first", "second"]


def test_work_of_a_disconnected_client_is_dropped(emb: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = EngineGate(emb, monkeypatch)
    with Running(emb, batch_texts=4) as server:
        body = json.dumps({"input": [f"abandoned {i}" for i in range(40)]}).encode()
        conn = server.raw(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        gate.wait_entered()
        conn.close()  # the client gives up while its first sub-batch runs
        wait_until(lambda: _embeddings(server.metrics, 499) == 1, "the server noticed the client left")
        gate.open()
        assert server.post({"input": "next"}).status_code == 200
        wait_until(lambda: server.metrics.value("qwen_embed_dropped_inputs_total") == 36, "36 inputs dropped")
    assert gate.calls == [[f"abandoned {i}" for i in range(4)], ["next"]]


def test_openai_client_timeouts_and_retries_do_not_multiply_the_work(
    emb: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's case: a client timeout plus 2 retries used to embed the same texts 3 times."""
    gate = EngineGate(emb, monkeypatch)
    with Running(emb, batch_texts=4) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="EMPTY", timeout=1.0, max_retries=2)
        with pytest.raises(openai.APITimeoutError):
            client.embeddings.create(model=MODEL, input=[f"t {i}" for i in range(40)])
        wait_until(lambda: _embeddings(server.metrics, 499) == 3, "all three attempts seen as abandoned")
        gate.open()
        assert server.post({"input": "after"}).status_code == 200
    assert len(gate.calls) == 2 and gate.calls[-1] == ["after"]  # one sub-batch of the first attempt, then ours


def test_max_request_tokens(emb: Embedder) -> None:
    text = "word " * 10
    n = emb.count_tokens(text)
    with Running(emb, max_request_tokens=3 * n) as server:
        assert server.post({"input": [text] * 3}).status_code == 200
        answer = server.post({"input": [text] * 4})
        assert answer.status_code == 400 and "--max-request-tokens" in answer.json()["error"]["message"]
        assert answer.json()["error"]["code"] == "request_too_large"


def test_body_over_the_limit_is_413_by_content_length_and_while_streaming(emb: Embedder) -> None:
    body = json.dumps({"input": ["x" * 100] * 20}).encode()
    with Running(emb, max_body_bytes=1000) as server:
        declared = server.post(body)
        assert declared.status_code == 413 and "--max-body-bytes" in declared.json()["error"]["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
            for start in range(0, len(body), 100):
                yield body[start : start + 100]

        streamed = httpx.post(
            server.url + "/v1/embeddings", content=chunks(), timeout=HANG, headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        assert server.post({"input": "small"}).status_code == 200


def test_half_sent_headers_get_408_and_the_connection_closes(emb: Embedder) -> None:
    with Running(emb, header_timeout=0.2) as server:
        conn = server.raw(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        reply = read_all(conn)
        assert reply.startswith(b"HTTP/1.1 408") and b"headers did not arrive" in reply
        assert server.get("/health").status_code == 200


def test_half_sent_body_gets_408_and_the_connection_closes(emb: Embedder) -> None:
    with Running(emb, body_timeout=0.2) as server:
        conn = server.raw(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"input": '
        )
        reply = read_all(conn)
        assert reply.startswith(b"HTTP/1.1 408") and b"--body-timeout" in reply
        assert _embeddings(server.metrics, 408) == 1


def test_shutdown_drain_is_bounded(
    emb: Embedder, monkeypatch: pytest.MonkeyPatch, pool: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    """Past the shutdown timeout the request still gets an answer in JSON (503), and the log no traceback."""
    entered, release = threading.Event(), threading.Event()
    real = emb.count_tokens

    def stuck(text: str, **kwargs: Any) -> int:
        entered.set()
        release.wait(HANG)
        return real(text, **kwargs)

    monkeypatch.setattr(emb, "count_tokens", stuck)
    server = Running(emb, shutdown_timeout=0.2)
    with server, caplog.at_level(logging.INFO):
        request = pool.submit(lambda: httpx.post(server.url + "/v1/embeddings", json={"input": "x"}, timeout=HANG))
        assert entered.wait(HANG)
        server.stop()  # the request never finishes: the drain gives up after shutdown_timeout
        assert not server.thread.is_alive()
        release.set()
        answer = request.result()
    assert answer.status_code == 503 and answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert error["code"] == "shutting_down" and "--shutdown-timeout" in error["message"]
    assert any("cancelled by the shutdown" in r.getMessage() for r in caplog.records)
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]
    assert not any("Exception in ASGI application" in r.getMessage() for r in caplog.records)


def test_a_request_in_flight_finishes_during_a_clean_drain(
    emb: Embedder, monkeypatch: pytest.MonkeyPatch, pool: ThreadPoolExecutor
) -> None:
    gate = EngineGate(emb, monkeypatch)
    server = Running(emb)
    with server:
        request = pool.submit(server.post, {"input": ["drained"] * 3})
        gate.wait_entered()
        server.server.should_exit = True
        gate.open()
        assert request.result().status_code == 200
        server.thread.join(HANG)
        assert not server.thread.is_alive()


# ---------------------------------------------------------------- security


def test_api_key(emb: Embedder) -> None:
    with Running(emb, api_key="s3cret") as server:
        wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="EMPTY", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.embeddings.create(model=MODEL, input="x")
        assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
        right = openai.OpenAI(base_url=server.url + "/v1", api_key="s3cret", max_retries=0)
        assert len(right.embeddings.create(model=MODEL, input="x").data) == 1
        missing = server.post({"input": "x"})
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in missing.json()["error"]["message"]
        assert server.get("/health").status_code == 200  # open for probes
        assert server.get("/metrics").status_code == 401
        assert server.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert server.get("/v1/models", headers={"Authorization": "Basic s3cret"}).status_code == 401


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_only_json_bodies_are_accepted(emb: Embedder, content_type: str | None) -> None:
    """A web page can POST text/plain cross-origin without asking; JSON needs a preflight we never grant."""
    with Running(emb) as server:
        headers = {"Content-Type": content_type} if content_type else {}
        answer = httpx.post(server.url + "/v1/embeddings", content=b'{"input": "x"}', headers=headers, timeout=HANG)
        assert answer.status_code == 415 and "application/json" in answer.json()["error"]["message"]
        ok = server.post({"input": "x"}, headers={"Content-Type": "application/json; charset=utf-8"})
        assert ok.status_code == 200


def test_no_cors_unless_asked(emb: Embedder) -> None:
    origin = {"Origin": "http://app.example"}
    preflight = {**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    with Running(emb) as server:
        assert "access-control-allow-origin" not in server.post({"input": "x"}, headers=origin).headers
        assert (
            "access-control-allow-origin" not in httpx.options(server.url + "/v1/embeddings", headers=preflight).headers
        )
    with Running(emb, cors_origins=("http://app.example",), api_key="k") as server:
        answer = httpx.options(server.url + "/v1/embeddings", headers=preflight)
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "http://app.example"
        other = httpx.options(server.url + "/v1/embeddings", headers={**preflight, "Origin": "http://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "http://evil.example"


@pytest.mark.parametrize(
    ("host", "options", "status"),
    [
        ("evil.example", {}, 400),  # DNS rebinding: the attacker's name, pointing at 127.0.0.1
        ("evil.example:8000", {}, 400),
        ("localhost", {}, 200),
        ("LOCALHOST:8000", {}, 200),
        ("127.0.0.1:8000", {}, 200),
        ("[::1]:8000", {}, 200),
        ("192.168.1.20", {}, 200),  # an address literal cannot carry a rebinding attack
        ("embed.lan", {"allowed_hosts": ("embed.lan",)}, 200),
        ("myhost", {"host": "myhost"}, 200),
        ("evil.example", {"check_host": False}, 200),
        ("evil.example", {"allowed_hosts": ("*",)}, 200),
    ],
)
def test_host_header_is_checked(emb: Embedder, host: str, options: dict[str, Any], status: int) -> None:
    with Running(emb, **options) as server:
        answer = server.post({"input": "x"}, headers={"Host": host})
        assert answer.status_code == status
        if status == 400:
            assert answer.json()["error"]["code"] == "invalid_host" and "--allowed-host" in answer.text


def test_binding_a_public_address_without_a_key_warns(
    emb: Embedder, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve`` with host 0.0.0.0 warns; the test hands it a socket bound to 127.0.0.1 (no traffic leaves)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    ready = threading.Event()
    holder: dict[str, Any] = {}
    real_build = server_module.build_server

    def keep(*args: Any, **kwargs: Any) -> Any:
        holder["server"] = real_build(*args, **kwargs)
        return holder["server"]

    monkeypatch.setattr(server_module, "build_server", keep)
    options = ServerOptions(host="0.0.0.0", model_name=MODEL)
    thread = threading.Thread(
        target=server_module.serve,
        args=(emb, options),
        kwargs={"sock": sock, "configure_logging": False, "on_ready": lambda url: ready.set()},
    )
    with caplog.at_level(logging.WARNING, logger="qwen_embed"):
        thread.start()
        assert ready.wait(HANG)
        holder["server"].should_exit = True
        thread.join(HANG)
    sock.close()
    assert any("without an API key" in r.getMessage() and "0.0.0.0" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- observability and clean 4xx


def test_a_500_is_logged_with_its_traceback_and_never_leaks_it(
    emb: Embedder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*args: object, **kwargs: object) -> None:  # failure injection
        raise RuntimeError("secret internal detail")

    with Running(emb) as server, caplog.at_level(logging.ERROR, logger="qwen_embed"):
        monkeypatch.setattr(emb, "run", boom)
        answer = server.post({"input": "x"})
        monkeypatch.undo()
        assert answer.status_code == 500 and answer.json()["error"]["type"] == "server_error"
        assert "secret" not in answer.text and "Traceback" not in answer.text
        request_id = answer.headers["x-request-id"]
        assert request_id in answer.json()["error"]["message"]
        assert server.post({"input": "x"}).status_code == 200  # the server keeps serving
    logged = [r for r in caplog.records if r.exc_info and request_id in r.getMessage()]
    assert logged and "secret internal detail" in logging.Formatter().formatException(logged[0].exc_info)


def test_an_unexpected_error_in_a_route_is_logged_and_answered_500(
    emb: Embedder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:  # failure injection outside the library's errors
        raise KeyError("unexpected")

    monkeypatch.setattr(_server_embeddings, "render_embeddings", broken)
    with Running(emb) as server, caplog.at_level(logging.ERROR, logger="qwen_embed"):
        answer = server.post({"input": "x"})
    assert answer.status_code == 500 and "unexpected" not in answer.text
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


def test_access_log_lines(emb: Embedder, caplog: pytest.LogCaptureFixture) -> None:
    with Running(emb) as server, caplog.at_level(logging.INFO, logger="qwen_embed.access"):
        server.post({"input": ["a", "b"]})
        server.get("/nowhere")
    lines = [r.getMessage() for r in caplog.records if r.name == "qwen_embed.access"]
    assert any('"POST /v1/embeddings" 200' in line and "2 inputs" in line for line in lines)
    assert any('"GET /nowhere" 404' in line for line in lines)


def test_metrics_in_prometheus_format(emb: Embedder) -> None:
    with Running(emb) as server:
        server.post({"input": ["one", "two", "three"]})
        server.post({"input": []})
        answer = server.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    for name in (
        "qwen_embed_requests",
        "qwen_embed_request_duration_seconds",
        "qwen_embed_inputs",
        "qwen_embed_tokens",
        "qwen_embed_queue_requests",
        "qwen_embed_queue_inputs",
        "qwen_embed_batch_texts",
        "qwen_embed_batch_tokens",
        "qwen_embed_batch_duration_seconds",
        "qwen_embed_dropped_inputs",
        "qwen_embed_requests_in_flight",
    ):
        assert name in families, name
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("qwen_embed_inputs_total", ())] == 3
    assert samples[("qwen_embed_requests_total", (("path", "/v1/embeddings"), ("status", "400")))] == 1
    assert samples[("qwen_embed_tokens_total", ())] == sum(emb.count_tokens(t) for t in ("one", "two", "three"))


def test_each_app_has_its_own_metrics_registry(emb: Embedder) -> None:
    first, second = create_app(emb), create_app(emb)  # the global registry would refuse the second
    assert first.state.metrics.registry is not second.state.metrics.registry


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": [], "input": "x"}, "'model' must be a string, not an array"),
        ({"model": {"a": 1}, "input": "x"}, "'model' must be a string"),
        ({"input": "x", "encoding_format": []}, "'encoding_format' must be"),
        ({"input": "x", "encoding_format": 0}, "'encoding_format' must be"),
        ({"input": "x", "encoding_format": False}, "'encoding_format' must be"),
        ({"input": "x", "encoding_format": "FLOAT"}, "'encoding_format' must be"),
        ({"input": "x", "dimensions": True}, "'dimensions' must be an integer"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"input": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested too deeply"),
    ],
)
def test_malformed_fields_are_400_not_500(emb: Embedder, body: Any, needle: str) -> None:
    with Running(emb) as server:
        answer = server.post(body)
    assert answer.status_code == 400 and needle in answer.json()["error"]["message"]


@pytest.mark.parametrize("ids", [[15339, 1917], [[15339, 1917], [40]]])
def test_token_ids_are_refused_with_the_langchain_fix(emb: Embedder, ids: Any) -> None:
    with Running(emb) as server:
        answer = server.post({"input": ids, "model": MODEL})
    error = answer.json()["error"]
    assert answer.status_code == 400 and error["code"] == "token_ids_not_supported"
    assert "check_embedding_ctx_length=False" in error["message"]


def test_405_names_the_allowed_methods(emb: Embedder) -> None:
    with Running(emb) as server:
        get = server.get("/v1/embeddings")
        post = server.post({}, path="/health")
    assert get.status_code == 405 and get.headers["allow"] == "POST" and "use POST" in get.json()["error"]["message"]
    assert post.status_code == 405 and "GET" in post.headers["allow"].split(", ")
