"""``POST /v1/rerank`` on a real uvicorn on 127.0.0.1: the Reranker's scores, its options, its errors, a server
with only the reranker, one with both models, a client that goes away, and ``qwen-embed serve --reranker``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from qwen_embed import Embedder, Reranker
from qwen_embed.errors import ConfigurationError
from qwen_embed.interfaces.cli import main
from qwen_embed.interfaces.server import ServerOptions, create_app

from .conftest import real_vocab
from .reranker_support import make_reranker_gguf, reranker_vocabulary
from .server_support import HANG, MODEL, EngineGate, Running, wait_until
from .test_server_cli import ServeProcess

RERANKER = "qwen3-reranker-test"
QUERY = "What is GGUF?"
DOCS = [
    "GGUF is the single-file model format of llama.cpp.",
    "Sourdough needs a lively starter.",
    "Qwen3 rerankers judge whether a document answers a query. " * 3,
    " ",
    "A document with a literal <|im_end|> marker.",
    "Déjà vu — “quotes”, 中文, Привет!",
    "yes",
]
ATOL = 1e-5


@pytest.fixture(scope="module")
def reranker_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("server-reranker")
    return make_reranker_gguf(root / "Qwen3-Reranker-Test-F32.gguf", reranker_vocabulary(real_vocab()))


@pytest.fixture(scope="module")
def rr(reranker_file: Path) -> Iterator[Reranker]:
    with Reranker(reranker_file, n_threads=2) as reranker:
        yield reranker


@pytest.fixture(scope="module")
def emb(tiny_model: Path) -> Iterator[Embedder]:
    with Embedder(tiny_model, n_threads=2, max_length=64) as e:
        yield e


@pytest.fixture(scope="module")
def both(emb: Embedder, rr: Reranker) -> Iterator[Running]:
    """Both models; three documents per engine call, so a request's scores come from several calls."""
    with Running(emb, reranker=rr, reranker_name=RERANKER, max_inputs=8, batch_texts=3) as server:
        yield server


def _scores(answer: dict[str, Any]) -> dict[int, float]:
    return {r["index"]: r["relevance_score"] for r in answer["results"]}


def _check_ranked(answer: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    got = [r["relevance_score"] for r in answer["results"]]
    assert got == sorted(got, reverse=True)  # best first
    want = {e["corpus_id"]: e["score"] for e in expected}
    assert set(_scores(answer)) == set(want)
    for index, score in _scores(answer).items():
        assert abs(score - want[index]) <= ATOL, (index, score, want[index])


def test_scores_equal_reranker_rank(both: Running, rr: Reranker) -> None:
    answer = both.post({"model": RERANKER, "query": QUERY, "documents": DOCS}, path="/v1/rerank")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "list" and body["model"] == RERANKER
    _check_ranked(body, rr.rank(QUERY, DOCS))
    assert all("document" not in r for r in body["results"])  # return_documents defaults to false
    tokens = sum(len(rr.tokenize(QUERY, d)) for d in DOCS)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    plain = both.post({"query": QUERY, "documents": DOCS}, path="/rerank").json()  # no model: the reranker
    assert _scores(plain).keys() == _scores(body).keys()


def test_top_n_return_documents_objects_and_instruction(both: Running, rr: Reranker) -> None:
    task = "Given a question, find the passage about file formats"
    request = {
        "query": QUERY,
        "documents": [{"text": d} for d in DOCS[:5]],
        "top_n": 2,
        "return_documents": True,
        "instruction": task,
    }
    body = both.post(request, path="/v1/rerank").json()
    expected = rr.rank(QUERY, DOCS[:5], instruction=task, top_k=2)
    assert [r["index"] for r in body["results"]] == [e["corpus_id"] for e in expected]
    _check_ranked(body, expected)
    assert [r["document"] for r in body["results"]] == [{"text": DOCS[e["corpus_id"]]} for e in expected]
    everything = both.post({"query": QUERY, "documents": DOCS[:3], "top_n": 50}, path="/v1/rerank").json()
    assert len(everything["results"]) == 3


@pytest.mark.parametrize(
    ("change", "status", "param", "needle"),
    [
        ({"query": None}, 400, "query", "'query' must be a non-empty string (it is missing)"),
        ({"query": " "}, 400, "query", "(it is blank)"),
        ({"query": ["q"]}, 400, "query", "(it is an array)"),
        ({"documents": None}, 400, "documents", "(it is missing)"),
        ({"documents": "one text"}, 400, "documents", "(it is a string)"),
        ({"documents": []}, 400, "documents", "(it is empty)"),
        ({"documents": ["a", 3]}, 400, "documents", "documents[1] is a number"),
        ({"documents": [""]}, 400, "documents", "documents[0] is empty"),  # as embeddings refuse ""
        ({"documents": ["a", {"text": ""}]}, 400, "documents", "documents[1] is empty"),
        ({"documents": [{"title": "a"}]}, 400, "documents", "documents[0] is an object whose 'text' is null"),
        ({"documents": ["d"] * 9}, 400, "documents", "Too many documents: 9 (at most 8"),
        ({"query": "q\ud800"}, 400, "query", "'query' holds a lone surrogate at character 1"),
        ({"documents": ["a", "\ud800"]}, 400, "documents", "documents[1] holds a lone surrogate at character 0"),
        ({"top_n": 0}, 400, "top_n", "'top_n' must be a positive integer, not 0"),
        ({"top_n": "2"}, 400, "top_n", 'not "2"'),
        ({"top_n": True}, 400, "top_n", "not true"),
        ({"return_documents": "yes"}, 400, "return_documents", "must be true or false"),
        ({"instruction": ""}, 400, "instruction", "'instruction' must be a non-empty string"),
        ({"model": "nope"}, 404, "model", f"The model 'nope' does not exist here; this server has '{RERANKER}'"),
        ({"model": MODEL}, 404, "model", "does not exist here"),  # the embedding model does not rerank
    ],
)
def test_bad_requests_get_openai_errors(
    both: Running, change: dict[str, Any], status: int, param: str, needle: str
) -> None:
    request = {"query": QUERY, "documents": DOCS[:2], **change}
    answer = both.post({k: v for k, v in request.items() if v is not None}, path="/v1/rerank")
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and needle in error["message"], error
    assert error["code"] == ("model_not_found" if status == 404 else None)


def test_not_json_and_wrong_content_type(both: Running) -> None:
    assert both.post(b"{query", path="/v1/rerank").status_code == 400
    answer = both.post(b"{}", path="/v1/rerank", headers={"Content-Type": "text/plain"})
    assert answer.status_code == 415


def test_both_models_listed_in_models_health_and_metrics(both: Running, emb: Embedder) -> None:
    assert [m["id"] for m in both.get("/v1/models").json()["data"]] == [MODEL, MODEL + "-query", RERANKER]
    before = both.metrics.value("qwen_embed_rerank_documents_total")
    assert both.post({"query": QUERY, "documents": DOCS[:4]}, path="/v1/rerank").status_code == 200
    assert both.post({"input": ["x"]}).status_code == 200  # embeddings still served
    health = both.get("/health").json()
    assert health["model"] == MODEL and health["dim"] == emb.dim
    assert health["reranker"]["model"] == RERANKER and health["reranker"]["documents"] >= 4
    assert both.metrics.value("qwen_embed_rerank_documents_total") == before + 4
    assert both.metrics.value("qwen_embed_requests_total", {"path": "/v1/rerank", "status": "200"}) >= 1
    assert "qwen_embed_rerank_tokens_total" in both.get("/metrics").text


def test_reranker_only_server(rr: Reranker) -> None:
    budget = sum(len(rr.tokenize(QUERY, d)) for d in DOCS[:2])
    with Running(None, reranker=rr, max_request_tokens=budget) as server:
        name = server.app.state.reranker_name
        assert name == "Qwen3-Reranker-Test"  # the file name without the quant
        assert [m["id"] for m in server.get("/v1/models").json()["data"]] == [name]
        health = server.get("/health").json()
        assert "model" not in health and health["reranker"]["model"] == name
        missing = server.post({"input": "x"})
        assert missing.status_code == 404
        error = missing.json()["error"]
        assert error["code"] == "model_not_found" and "no embedding model" in error["message"]
        assert f"reranker '{name}' at POST /v1/rerank" in error["message"]
        ok = server.post({"model": name, "query": QUERY, "documents": DOCS[:1]}, path="/v1/rerank")
        assert ok.status_code == 200, ok.text
        over = server.post({"query": QUERY, "documents": DOCS[:4]}, path="/v1/rerank")
        assert over.status_code == 400 and over.json()["error"]["code"] == "request_too_large"
        assert "reached at documents[" in over.json()["error"]["message"]
        assert "this server has POST /v1/rerank." in server.get("/v1/nothing").json()["error"]["message"]


def test_embedder_only_server_says_how_to_get_a_reranker(emb: Embedder) -> None:
    with Running(emb) as server:
        answer = server.post({"query": QUERY, "documents": DOCS[:1]}, path="/v1/rerank")
        assert answer.status_code == 404 and "--reranker MODEL" in answer.json()["error"]["message"]
        assert [m["id"] for m in server.get("/v1/models").json()["data"]] == [MODEL, MODEL + "-query"]
        assert "reranker" not in server.get("/health").json()


def test_create_app_needs_a_model_and_distinct_names(emb: Embedder, rr: Reranker) -> None:
    with pytest.raises(ConfigurationError, match="needs a model"):
        create_app(None)
    with pytest.raises(ConfigurationError, match="both named 'x'"):
        create_app(emb, ServerOptions(model_name="x", reranker_name="x"), reranker=rr)


def test_a_client_that_goes_away_drops_its_remaining_documents(rr: Reranker, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    entered, release = threading.Event(), threading.Event()
    real = rr.run

    def gated(pairs: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(pairs))
        entered.set()
        release.wait(HANG)
        return real(pairs, *args, **kwargs)

    monkeypatch.setattr(rr, "run", gated)
    with Running(None, reranker=rr, batch_texts=3) as server:
        body = json.dumps({"query": QUERY, "documents": [*DOCS, "more", "and more"]}).encode()  # 9: three calls
        head = "POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        conn = server.raw(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert entered.wait(HANG), "the first engine call never started"
        conn.close()  # the client goes away while its first three documents are scored
        dropped = "qwen_embed_rerank_dropped_documents_total"
        wait_until(lambda: server.metrics.value(dropped) == 6, "the six waiting documents dropped")
        release.set()
        after = server.post({"query": QUERY, "documents": DOCS[:2]}, path="/v1/rerank")  # queued behind it
        assert after.status_code == 200
        assert calls == [3, 2]  # the dropped request's other two calls never ran
        assert server.metrics.value("qwen_embed_requests_total", {"path": "/v1/rerank", "status": "499"}) == 1


def test_serve_no_embedder_without_reranker_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--no-embedder", "--model-path", "never-loaded.gguf"]) == 1
    assert "--no-embedder leaves nothing to serve; add --reranker" in capsys.readouterr().err


@pytest.mark.parametrize("embedder", [True, False], ids=["with-embedder", "reranker-only"])
def test_serve_reranker_process(tiny_model: Path, reranker_file: Path, rr: Reranker, embedder: bool) -> None:
    models = ["--model-path", str(tiny_model)] if embedder else ["--no-embedder"]
    server = ServeProcess(*models, "--reranker", str(reranker_file), "--threads", "2", "--port", "0")
    try:
        banner = server.wait_for("qwen-embed: serving")
        assert banner is not None, "".join(server.seen)
        assert "reranker Qwen3-Reranker-Test" in banner
        url = banner.rsplit(" on ", 1)[1].strip()
        answer = httpx.post(url + "/rerank", json={"query": QUERY, "documents": DOCS[:3]}, timeout=HANG)
        assert answer.status_code == 200, answer.text
        _check_ranked(answer.json(), rr.rank(QUERY, DOCS[:3]))
        embeddings = httpx.post(url + "/embeddings", json={"input": "x"}, timeout=HANG)
        assert embeddings.status_code == (200 if embedder else 404)
    finally:
        server.stop()
    assert any("Finished server process" in line for line in server.seen)


# ---------------------------------------------------------------- one scheduler for both models


def test_a_small_rerank_is_served_while_a_big_one_is_in_progress(rr: Reranker, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reranks go through the fair scheduler: a small one waits for at most one engine call of a big one."""
    gate = EngineGate(rr, monkeypatch)
    big_docs = [f"big document {i}" for i in range(30)]
    with Running(None, reranker=rr, batch_texts=3, max_inputs=64) as server, ThreadPoolExecutor(2) as pool:
        big = pool.submit(server.post, {"query": QUERY, "documents": big_docs}, path="/v1/rerank")
        gate.wait_entered()  # the big rerank's first three documents are in the engine
        small_docs = ["small one", "small two"]
        small = pool.submit(server.post, {"query": "another query", "documents": small_docs}, path="/v1/rerank")
        wait_until(lambda: server.metrics.value("qwen_embed_queue_requests") == 2, "both reranks queued")
        gate.open()
        assert small.result().status_code == 200 and big.result().status_code == 200
    assert len(gate.calls) == 11
    assert gate.calls[0] == big_docs[:3] and gate.calls[1] == small_docs  # not after the other 9 calls
    assert [d for call in gate.calls if call != small_docs for d in call] == big_docs  # in order, each once
    _check_ranked(small.result().json(), rr.rank("another query", small_docs))
    scored = np.concatenate([rr.predict([(QUERY, d) for d in big_docs[i : i + 3]]) for i in range(0, 30, 3)])
    _check_ranked(big.result().json(), [{"corpus_id": i, "score": float(v)} for i, v in enumerate(scored)])


def test_health_and_a_small_embedding_answer_while_a_huge_rerank_runs(
    emb: Embedder, rr: Reranker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21 #1: a huge rerank document is parsed and tokenized on a worker, and scored on the reranker's own
    engine thread: /health and a 1-text embedding request are answered while it is tokenized and while it is
    scored (both held there by gates)."""
    huge = "word " * 50_000
    tokenizing, release = threading.Event(), threading.Event()
    real = rr.tokenize

    def slow(query: str, document: str, **kwargs: Any) -> Any:
        if len(document) == len(huge) and not release.is_set():
            tokenizing.set()
            release.wait(HANG)
        return real(query, document, **kwargs)

    monkeypatch.setattr(rr, "tokenize", slow)
    log: list[tuple[str, Any]] = []
    scoring = EngineGate(rr, monkeypatch, name="rerank", log=log)
    EngineGate(emb, monkeypatch, name="embed", log=log).open()
    documents = [huge, "short one", "short two", "short three"]
    with (
        Running(emb, reranker=rr, reranker_name=RERANKER, batch_texts=1) as server,
        ThreadPoolExecutor(2) as pool,
    ):
        big = pool.submit(server.post, {"query": QUERY, "documents": documents}, path="/v1/rerank")
        try:
            assert tokenizing.wait(HANG), "the huge document was never tokenized"
            assert server.get("/health").status_code == 200
            assert server.post({"input": "while tokenizing"}).status_code == 200
            assert not big.done()
            release.set()
            scoring.wait_entered()  # the huge document is in the reranker's engine call, held there
            assert server.get("/health").status_code == 200
            assert server.post({"input": "while scoring"}).status_code == 200
            assert not big.done()
        finally:
            release.set()
            scoring.open()
        assert big.result().status_code == 200
    assert log[:3] == [("embed", ["while tokenizing"]), ("rerank", [huge]), ("embed", ["while scoring"])]
    assert [texts for name, texts in log[3:]] == [["short one"], ["short two"], ["short three"]]


# ---------------------------------------------------------------- limits and shapes


def test_a_query_or_instruction_that_alone_fills_max_length_is_a_400(reranker_file: Path) -> None:
    long = "word " * 100
    with Reranker(reranker_file, n_threads=2, max_length=128) as short, Running(None, reranker=short) as server:
        query = server.post({"query": long, "documents": ["a", "b"]}, path="/v1/rerank")
        assert query.status_code == 400, query.text
        assert query.json()["error"]["param"] == "query"
        assert query.json()["error"]["message"].startswith(
            "The query alone fills the reranker's max_length (128 tokens"
        )
        told = server.post({"query": "q", "documents": ["a"], "instruction": long}, path="/v1/rerank")
        assert told.status_code == 400 and told.json()["error"]["param"] == "instruction", told.text
        assert told.json()["error"]["message"].startswith("The instruction alone fills the reranker's max_length")
        # The twin: a long document is cut to max_length and scored, as the official recipe does.
        document = server.post({"query": "q", "documents": [long, "b"]}, path="/v1/rerank")
        assert document.status_code == 200, document.text
        assert server.post({"query": long, "documents": ["a"]}, path="/v2/rerank").status_code == 400


def test_cohere_v2_rerank_shape(both: Running, rr: Reranker) -> None:
    """What ``cohere.ClientV2(base_url=...).rerank(model=, query=, documents=, top_n=)`` sends and reads."""
    request = {"model": RERANKER, "query": QUERY, "documents": DOCS[:5], "top_n": 3, "max_tokens_per_doc": 4096}
    answer = both.post(request, path="/v2/rerank")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"id", "results", "meta"} and body["id"] == answer.headers["x-request-id"]
    assert all(set(r) == {"index", "relevance_score"} for r in body["results"])
    _check_ranked(body, rr.rank(QUERY, DOCS[:5], top_k=3))
    tokens = sum(len(rr.tokenize(QUERY, d)) for d in DOCS[:5])
    assert body["meta"]["api_version"]["version"] == "2" and body["meta"]["tokens"]["input_tokens"] == tokens
    bad = both.post({**request, "max_tokens_per_doc": 0}, path="/v2/rerank")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_tokens_per_doc"
    assert both.metrics.value("qwen_embed_requests_total", {"path": "/v2/rerank", "status": "200"}) == 1
