"""The OpenAI-compatible server on 127.0.0.1, driven by the real `openai` client."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import openai  # test dependencies (the "test" extra): a missing one fails, it does not skip
import pytest
import uvicorn

from qwen_embed import Embedder
from qwen_embed.interfaces.server import create_app

BATCH_ATOL = 5e-4  # vectors decoded in different batches differ by llama.cpp's rounding
MODEL = "qwen3-embedding-test"


class Running:
    def __init__(self, emb: Embedder, **options: Any) -> None:
        self.app = create_app(emb, model_name=MODEL, **options)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Running:
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            threading.Event().wait(0.02)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="module")
def emb(tiny_model: Path) -> Iterator[Embedder]:
    with Embedder(tiny_model, n_threads=2, max_length=64) as e:
        yield e


@pytest.fixture(scope="module")
def running(emb: Embedder) -> Iterator[Running]:
    with Running(emb, max_inputs=16) as server:
        yield server


@pytest.fixture
def client(running: Running) -> Any:
    return openai.OpenAI(base_url=running.url + "/v1", api_key="EMPTY", max_retries=0)


def post(running: Running, body: bytes | dict[str, Any], path: str = "/v1/embeddings") -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(running.url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_seed_article_client_code_works_unchanged(client: Any, emb: Embedder) -> None:
    texts = ["What is GGUF?", "GGUF is llama.cpp's file format."]
    response = client.embeddings.create(model=MODEL, input=texts)  # the client asks for base64 by default
    got = np.array([item.embedding for item in response.data])
    np.testing.assert_allclose(got, emb.encode(texts), atol=BATCH_ATOL)
    assert response.model == MODEL
    tokens = sum(emb.count_tokens(t) for t in texts)
    assert response.usage.prompt_tokens == tokens and response.usage.total_tokens == tokens


def test_float_format_dimensions_and_prompts(client: Any, emb: Embedder) -> None:
    response = client.embeddings.create(model=MODEL, input="a query", encoding_format="float", dimensions=32)
    assert len(response.data[0].embedding) == 32
    np.testing.assert_allclose(response.data[0].embedding, emb.encode("a query", dim=32), atol=BATCH_ATOL)
    queried = client.embeddings.create(model=MODEL, input=["a query"], extra_body={"prompt_name": "query"})
    np.testing.assert_allclose(queried.data[0].embedding, emb.encode_queries(["a query"])[0], atol=BATCH_ATOL)
    assert queried.usage.prompt_tokens == emb.count_tokens("a query", prompt_name="query")
    told = client.embeddings.create(model=MODEL, input=["x"], extra_body={"instruction": "Find code"})
    np.testing.assert_allclose(told.data[0].embedding, emb.encode("x", instruction="Find code"), atol=BATCH_ATOL)


def test_models_and_health(client: Any, running: Running) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]
    with urllib.request.urlopen(running.url + "/health") as response:
        health = json.loads(response.read())
    assert health["status"] == "ok" and health["model"] == MODEL and health["dim"] == 64


def test_concurrent_clients_are_batched_and_get_their_own_vectors(running: Running, emb: Embedder) -> None:
    client = openai.OpenAI(base_url=running.url + "/v1", api_key="EMPTY", max_retries=0)
    requests = [[f"client {i} text {j} " + "word " * (i % 5) for j in range(1 + i % 3)] for i in range(24)]
    before = running.app.state.stats.batches, running.app.state.stats.requests
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda texts: client.embeddings.create(model=MODEL, input=texts), requests))
    for texts, response in zip(requests, responses):
        got = np.array([item.embedding for item in sorted(response.data, key=lambda d: d.index)])
        np.testing.assert_allclose(got, emb.encode(texts), atol=BATCH_ATOL)
    batches = running.app.state.stats.batches - before[0]
    served = running.app.state.stats.requests - before[1]
    assert served == 24 and batches < served  # several requests shared a decode


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        ({"model": MODEL}, 400, "'input' is required"),
        ({"model": MODEL, "input": []}, 400, "non-empty"),
        ({"model": MODEL, "input": ""}, 400, "input[0] is empty"),
        ({"model": MODEL, "input": ["ok", 3]}, 400, "token ids are not supported"),
        ({"model": MODEL, "input": ["x"] * 17}, 400, "Too many inputs: 17"),
        ({"model": MODEL, "input": "word " * 200}, 400, "the limit is 64"),
        ({"model": "gpt-4", "input": "x"}, 404, "does not exist here"),
        ({"model": MODEL, "input": "x", "dimensions": 8}, 400, "dim"),
        ({"model": MODEL, "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"model": MODEL, "input": "x", "prompt_name": "nope"}, 400, "nope"),
    ],
)
def test_bad_requests_get_clear_4xx(running: Running, body: Any, status: int, needle: str) -> None:
    code, answer = post(running, body)
    assert code == status
    assert needle in answer["error"]["message"] and answer["error"]["type"] == "invalid_request_error"


def test_openai_client_sees_the_errors(client: Any) -> None:
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="other", input="x")
    with pytest.raises(openai.BadRequestError, match="the limit is 64"):
        client.embeddings.create(model=MODEL, input="word " * 200)


def test_a_500_never_leaks_a_traceback(emb: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:  # failure injection
        raise RuntimeError("secret internal detail")

    with Running(emb) as server:
        monkeypatch.setattr(emb, "encode", boom)
        code, answer = post(server, {"model": MODEL, "input": "x"})
        monkeypatch.undo()
        assert code == 500 and answer["error"]["type"] == "server_error"
        assert "secret" not in json.dumps(answer) and "Traceback" not in json.dumps(answer)
        code, answer = post(server, {"model": MODEL, "input": "x"})
        assert code == 200  # the server keeps serving
        code, answer = post(server, {}, path="/v1/nothing")
        assert code == 404 and "No route" in answer["error"]["message"]
