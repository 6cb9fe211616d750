"""The OpenAI-compatible server on 127.0.0.1, driven by the real `openai` client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import openai  # test dependencies (the "test" extra): a missing one fails, it does not skip
import pytest

from qwen_embed import Embedder
from qwen_embed.errors import ConfigurationError
from qwen_embed.interfaces.server import ServerOptions

from .server_support import MODEL, Running

BATCH_ATOL = 5e-4  # vectors decoded in different batches differ by llama.cpp's rounding


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
    assert [m.id for m in client.models.list().data] == [MODEL, MODEL + "-query"]
    health = running.get("/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL and health["dim"] == 64


QUERIES = ["What is GGUF?", "a query", "Déjà vu?"]


def _vectors(response: Any) -> np.ndarray:
    return np.array([item.embedding for item in sorted(response.data, key=lambda d: d.index)], dtype=np.float32)


def test_the_query_model_name_gives_exactly_encode_queries(client: Any, emb: Embedder) -> None:
    """OpenAI clients that send bare text (LangChain's OpenAIEmbeddings) pick the query side by the model name."""
    queried = client.embeddings.create(model=MODEL + "-query", input=QUERIES)  # base64: exact float32
    np.testing.assert_array_equal(_vectors(queried), emb.encode_queries(QUERIES))
    assert queried.model == MODEL + "-query"
    assert queried.usage.prompt_tokens == sum(emb.count_tokens(q, side="query") for q in QUERIES)
    # The twin: the plain name embeds the same texts as documents, which are not the query vectors.
    plain = client.embeddings.create(model=MODEL, input=QUERIES)
    np.testing.assert_array_equal(_vectors(plain), emb.encode_documents(QUERIES))
    assert np.abs(_vectors(plain) - _vectors(queried)).max() > 100 * BATCH_ATOL


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"side": "query"}, lambda emb, t: emb.encode_queries(t)),
        ({"side": "document"}, lambda emb, t: emb.encode_documents(t)),
        ({"side": "query", "task": "qa"}, lambda emb, t: emb.encode_queries(t, task="qa")),
        ({"side": "document", "task": "sts"}, lambda emb, t: emb.encode_documents(t, task="sts")),
        ({"task": "qa"}, lambda emb, t: emb.encode(t, task="qa")),
        ({"instruction": "Find code"}, lambda emb, t: emb.encode(t, instruction="Find code")),
        ({"side": "query", "instruction": "Find code"}, lambda emb, t: emb.encode_queries(t, instruction="Find code")),
        # The field names the server took before, still accepted:
        ({"prompt_name": "query"}, lambda emb, t: emb.encode_queries(t)),
        ({"prompt_name": "document"}, lambda emb, t: emb.encode_documents(t)),
        ({"prompt_name": "passage"}, lambda emb, t: emb.encode_documents(t)),
        ({"prompt_name": "qa"}, lambda emb, t: emb.encode(t, prompt_name="qa")),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else "",
)
def test_the_prompt_options_are_the_library_vocabulary(
    client: Any, emb: Embedder, extra: dict[str, str], expected: Any
) -> None:
    answer = client.embeddings.create(model=MODEL, input=QUERIES, extra_body=extra)
    np.testing.assert_array_equal(_vectors(answer), expected(emb, QUERIES))


def test_the_query_name_with_a_task_and_its_conflicts(client: Any, running: Running, emb: Embedder) -> None:
    told = client.embeddings.create(model=MODEL + "-query", input=QUERIES, extra_body={"task": "qa"})
    np.testing.assert_array_equal(_vectors(told), emb.encode_queries(QUERIES, task="qa"))
    clash = running.post({"model": MODEL + "-query", "input": "x", "side": "document"})
    assert clash.status_code == 400 and clash.json()["error"]["param"] == "side"
    assert "the model 'qwen3-embedding-test-query' is the query side" in clash.json()["error"]["message"]
    both = running.post({"input": "x", "task": "qa", "prompt_name": "sts"})
    assert both.status_code == 400 and "name the same option" in both.json()["error"]["message"]
    unknown = running.post({"input": "x", "task": "nope"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "task"
    assert "Unknown prompt 'nope'" in unknown.json()["error"]["message"]


def test_an_instruction_that_alone_is_too_long_is_named(running: Running, emb: Embedder) -> None:
    instruction = "word " * 100  # over max_length=64 on its own
    answer = running.post({"input": ["short"], "instruction": instruction})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "instruction" and error["message"].startswith("The instruction alone takes ")
    assert "input[0]" not in error["message"]
    # The twin: a short instruction and a long input blame the input.
    long_input = running.post({"input": ["word " * 100], "instruction": "Find code"})
    assert long_input.json()["error"]["param"] == "input" and "input[0] is" in long_input.json()["error"]["message"]


def test_concurrent_clients_are_batched_and_get_their_own_vectors(running: Running, emb: Embedder) -> None:
    client = openai.OpenAI(base_url=running.url + "/v1", api_key="EMPTY", max_retries=0)
    requests = [[f"client {i} text {j} " + "word " * (i % 5) for j in range(1 + i % 3)] for i in range(24)]
    before = running.get("/health").json()
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda texts: client.embeddings.create(model=MODEL, input=texts), requests))
    for texts, response in zip(requests, responses):
        got = np.array([item.embedding for item in sorted(response.data, key=lambda d: d.index)])
        np.testing.assert_allclose(got, emb.encode(texts), atol=BATCH_ATOL)
    after = running.get("/health").json()
    served, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert served == 24 and batches < served  # several requests shared a decode
    assert after["texts"] - before["texts"] == sum(len(texts) for texts in requests)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe{}", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object, not an array"),
        ({"model": MODEL}, 400, "'input' is required"),
        ({"model": MODEL, "input": []}, 400, "non-empty"),
        ({"model": MODEL, "input": ""}, 400, "input[0] is empty"),
        ({"model": MODEL, "input": ["ok", 3]}, 400, "input[1] is a number, not a string"),
        ({"model": MODEL, "input": ["ok", None]}, 400, "input[1] is null, not a string"),
        ({"model": MODEL, "input": ["x"] * 17}, 400, "Too many inputs: 17"),
        ({"model": MODEL, "input": "word " * 200}, 400, "the limit is 64"),
        ({"model": "gpt-4", "input": "x"}, 404, "does not exist here"),
        ({"model": MODEL, "input": "x", "dimensions": 8}, 400, "'dimensions' is 8; this model gives 32 to 64"),
        ({"model": MODEL, "input": "x", "dimensions": "32"}, 400, "'dimensions' must be an integer"),
        ({"model": MODEL, "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"model": MODEL, "input": "x", "prompt_name": "nope"}, 400, "nope"),
        ({"model": MODEL, "input": "x", "side": "queries"}, 400, '\'side\' must be "query" or "document"'),
        ({"model": MODEL, "input": "x", "task": ""}, 400, "'task' must be a non-empty string"),
        ({"model": MODEL + "-document", "input": "x"}, 404, "this server has 'qwen3-embedding-test' (documents)"),
        ({"model": MODEL, "input": "x", "instruction": " "}, 400, "'instruction' must be a non-empty string"),
        ({"model": MODEL, "input": "bad \ud800 surrogate"}, 400, "UTF-8"),
    ],
)
def test_bad_requests_get_clear_4xx(running: Running, body: Any, status: int, needle: str) -> None:
    answer = running.post(body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"


def test_openai_client_sees_the_errors(client: Any) -> None:
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="other", input="x")
    with pytest.raises(openai.BadRequestError, match="the limit is 64"):
        client.embeddings.create(model=MODEL, input="word " * 200)


def test_a_large_request_is_split_into_sub_batches_in_order(emb: Embedder) -> None:
    texts = [f"text number {i} " + "word " * (i % 7) for i in range(50)]
    with Running(emb, batch_texts=4, batch_tokens=40) as server:
        answer = server.post({"input": texts, "encoding_format": "float"})
        assert answer.status_code == 200
        got = np.array([item["embedding"] for item in answer.json()["data"]])
        assert [item["index"] for item in answer.json()["data"]] == list(range(50))
        np.testing.assert_allclose(got, emb.encode(texts), atol=BATCH_ATOL)
        assert server.get("/health").json()["batches"] >= 50 // 4


def test_truncate_and_chunk_policies_through_the_server(tiny_model: Path) -> None:
    long = "word " * 200
    with Embedder(tiny_model, n_threads=2, max_length=64, long_text="truncate") as emb, Running(emb) as server:
        answer = server.post({"input": [long, "short"]})
        assert answer.status_code == 200
        assert answer.json()["usage"]["prompt_tokens"] == 64 + emb.count_tokens("short")  # tokens actually read
    with Embedder(tiny_model, n_threads=2, max_length=64, long_text="chunk") as emb, Running(emb) as server:
        answer = server.post({"input": [long], "encoding_format": "float"})
        assert answer.status_code == 200
        np.testing.assert_allclose(answer.json()["data"][0]["embedding"], emb.encode(long), atol=BATCH_ATOL)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_inputs", 0),
        ("max_request_tokens", -1),
        ("max_body_bytes", True),
        ("batch_texts", 1.5),
        ("body_timeout", -1),
        ("body_timeout", float("nan")),
        ("api_key", "  "),
        ("allowed_hosts", "example.com"),
    ],
)
def test_server_options_are_checked(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=field if field != "api_key" else "API key is empty"):
        ServerOptions(**{field: value})
