"""``POST /v1/rerank`` on a real uvicorn on 127.0.0.1: the Reranker's scores, its options, its errors, a server
with only the reranker, one with both models, a client that goes away, ``qwen-embed serve --reranker``, and long
documents (``long_text``: chunked windows with their span, reported cuts, the error mode, receipts, the budget)."""

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

from qwen_embed import Embedder, Receipt, RerankCall, Reranker
from qwen_embed.errors import ConfigurationError, InputTooLongError
from qwen_embed.interfaces import _server_rerank
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
        ({"long_text": "split"}, 400, "long_text", '\'long_text\' must be "truncate", "chunk" or "error", not "split"'),
        ({"long_text": 1}, 400, "long_text", 'not 1; leave it out for "truncate"'),
        ({"aggregate": "median"}, 400, "aggregate", '\'aggregate\' must be "max", "mean" or "first", not "median"'),
        ({"aggregate": ["max"]}, 400, "aggregate", 'not ["max"]; leave it out for "max"'),
        ({"return_receipts": "yes"}, 400, "return_receipts", "'return_receipts' must be true or false, not \"yes\""),
        ({"overlap": -1}, 400, "overlap", "'overlap' must be an integer of at least 0, not -1; at most 4,096"),
        ({"overlap": 5000}, 400, "overlap", "'overlap' must be at most 4,096 tokens, not 5000; leave it out for 32"),
        ({"overlap": 1.5}, 400, "overlap", "not 1.5"),
        ({"deterministic": "yes"}, 400, "deterministic", "'deterministic' must be true or false, not \"yes\""),
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


# ---------------------------------------------------------------- long documents

#: A document about 5x the short reranker's max_length, whose best window is in its middle (under the test model).
LONG = " ".join(
    ["yes"] * 10
    + ["Sourdough needs a lively starter."] * 60
    + ["yes yes yes GGUF GGUF"] * 30
    + ["Rivers flow to the sea."] * 40
)
LONG_DOCS = ["Sourdough needs a lively starter.", LONG, DOCS[0], LONG[:700]]
SHORT_MAX = 192  # tokens per pair: the prompt takes 76 of them for QUERY


@pytest.fixture(scope="module")
def short_rr(reranker_file: Path) -> Iterator[Reranker]:
    with Reranker(reranker_file, n_threads=2, max_length=SHORT_MAX) as reranker:
        yield reranker


@pytest.fixture(scope="module")
def chunky(short_rr: Reranker) -> Iterator[Running]:
    """The short reranker alone; two documents per engine call, so a request's scores come from several calls."""
    with Running(None, reranker=short_rr, reranker_name=RERANKER, max_inputs=8, batch_texts=2) as server:
        yield server


def _by_index(answer: httpx.Response) -> dict[int, dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return {r["index"]: r for r in answer.json()["results"]}


@pytest.mark.parametrize("aggregate", ["max", "mean", "first"])
def test_chunked_documents_equal_reranker_run(chunky: Running, short_rr: Reranker, aggregate: str) -> None:
    request = {"query": QUERY, "documents": LONG_DOCS, "long_text": "chunk", "aggregate": aggregate}
    answer = chunky.post({**request, "return_receipts": True}, path="/v1/rerank")
    results = _by_index(answer)
    expected = short_rr.run([(QUERY, d) for d in LONG_DOCS], RerankCall(long_text="chunk", aggregate=aggregate))
    assert expected.receipts[1].chunks >= 10 and expected.best_spans[1] not in (None, expected.receipts[1].spans[0])
    for i, result in results.items():
        assert abs(result["relevance_score"] - float(expected.scores[i])) <= ATOL, (i, result, expected.scores[i])
        span = expected.best_spans[i]
        assert result.get("span") == (None if span is None else list(span)), i
        assert result["receipt"] == expected.receipts[i].as_dict(), i
        assert "truncated" not in result
    assert results[1]["receipt"]["fusion"] == aggregate and results[0]["receipt"]["chunks"] == 1
    tokens = sum(r.tokens_used for r in expected.receipts)
    assert answer.json()["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}  # every window decoded
    # The twin: the same request under the default policy scores the long document from its first tokens only.
    cut = _by_index(chunky.post({**request, "long_text": None}, path="/v1/rerank"))
    assert abs(cut[1]["relevance_score"] - results[1]["relevance_score"]) > ATOL
    assert "span" not in cut[1] and "receipt" not in cut[1] and cut[1]["truncated"] is True


def test_cohere_v2_and_the_rerank_alias_take_the_same_options(chunky: Running, short_rr: Reranker) -> None:
    request = {"query": QUERY, "documents": LONG_DOCS, "long_text": "chunk", "top_n": 2, "return_receipts": True}
    v1 = _by_index(chunky.post(request, path="/v1/rerank"))
    alias = _by_index(chunky.post(request, path="/rerank"))
    answer = chunky.post(request, path="/v2/rerank")
    v2 = _by_index(answer)
    assert v1.keys() == v2.keys() == alias.keys() and len(v2) == 2
    for i in v2:
        assert abs(v2[i]["relevance_score"] - v1[i]["relevance_score"]) <= ATOL
        assert v2[i].get("span") == v1[i].get("span") == alias[i].get("span")
        assert v2[i]["receipt"] == v1[i]["receipt"]
    expected = short_rr.run([(QUERY, d) for d in LONG_DOCS], RerankCall(long_text="chunk"))
    tokens = sum(r.tokens_used for r in expected.receipts)  # every document's, whatever top_n keeps
    assert answer.json()["meta"]["tokens"] == {"input_tokens": tokens, "output_tokens": 0}


def test_a_document_cut_under_truncate_is_reported(chunky: Running, short_rr: Reranker) -> None:
    documents = ["Sourdough needs a lively starter.", LONG]
    answer = chunky.post({"query": QUERY, "documents": documents, "return_receipts": True}, path="/v1/rerank")
    results = _by_index(answer)
    expected = short_rr.run([(QUERY, d) for d in documents])
    cut = expected.receipts[1]
    assert cut.truncated and cut.dropped_tokens > 0 and cut.tokens_used == SHORT_MAX
    assert results[1]["truncated"] is True and results[1]["receipt"] == cut.as_dict()
    assert "truncated" not in results[0] and results[0]["receipt"] == expected.receipts[0].as_dict()  # the twin
    assert not results[0]["receipt"]["truncated"]
    for i in (0, 1):
        assert abs(results[i]["relevance_score"] - float(expected.scores[i])) <= ATOL
    tokens = sum(len(short_rr.tokenize(QUERY, d)) for d in documents)  # as before: the pairs as the model reads them
    assert answer.json()["usage"]["prompt_tokens"] == tokens == sum(r.tokens_used for r in expected.receipts)
    plain = chunky.post({"query": QUERY, "documents": documents}, path="/v1/rerank")
    assert all("receipt" not in r for r in plain.json()["results"])  # receipts only when asked


ERROR_400 = (
    "documents[{i}] does not fit the reranker's max_length (192 tokens with the prompt, instruction and query) and "
    "'long_text' is \"error\"."
)


def test_error_mode_refuses_a_long_document_before_any_decode(
    short_rr: Reranker, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = EngineGate(short_rr, monkeypatch)
    gate.open()
    with Running(None, reranker=short_rr, batch_texts=2) as server:
        documents = ["short", "another", LONG]
        answer = server.post({"query": QUERY, "documents": documents, "long_text": "error"}, path="/v1/rerank")
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["param"] == "documents" and error["message"].startswith(ERROR_400.format(i=2)), error
        assert gate.calls == []  # refused while counting
        fits = server.post({"query": QUERY, "documents": documents[:2], "long_text": "error"}, path="/v1/rerank")
        assert fits.status_code == 200, fits.text  # the twin: documents that fit are scored
        # The count's check skipped: the engine refuses the document itself, and the answer is the same 400.
        monkeypatch.setattr(
            _server_rerank, "count_tokens", lambda reranker, request, **kw: [1] * len(request.documents)
        )
        late = server.post({"query": QUERY, "documents": documents, "long_text": "error"}, path="/v1/rerank")
        assert late.status_code == 400 and late.json()["error"] == error
        assert [len(texts) for texts in gate.calls[1:]] == [2, 1]  # [LONG] refused by the engine before its decode


def test_an_engine_refusal_spares_the_other_documents_of_its_call(short_rr: Reranker) -> None:
    """Requests with equal work share engine calls: one's over-long document must not fail the others'."""
    documents = ["short", LONG, "another", LONG]
    rows = _server_rerank.RerankWork(short_rr, QUERY, RerankCall(long_text="error"))(documents)
    refused = [row.refused for row in rows.receipts]
    assert [type(r) for r in refused] == [type(None), InputTooLongError, type(None), InputTooLongError]
    assert refused[1] is not None and refused[1].param == "document"
    assert np.isnan(rows.values[[1, 3]]).all()
    expected = short_rr.run([(QUERY, "short"), (QUERY, "another")])
    assert np.allclose(rows.values[[0, 2]], expected.scores, atol=ATOL)
    assert [rows.receipts[i].receipt for i in (0, 2)] == list(expected.receipts)
    # The twin: truncated, every document is scored, the long ones with their cut in the receipt.
    whole = _server_rerank.RerankWork(short_rr, QUERY)(documents)
    assert np.isfinite(whole.values).all() and all(row.refused is None for row in whole.receipts)
    assert all(isinstance(row.receipt, Receipt) and row.receipt.truncated == (i % 2 == 1) for i, row in
               enumerate(whole.receipts))  # fmt: skip


def test_the_budget_counts_windows_and_stops_a_huge_document_before_any_decode(
    short_rr: Reranker, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_tokens = short_rr.run([(QUERY, LONG)], RerankCall(long_text="chunk")).receipts[0]
    assert long_tokens.n_tokens < 1_500 < long_tokens.tokens_used  # its tokens fit 1,500, its windows do not
    gate = EngineGate(short_rr, monkeypatch)
    gate.open()
    counted: list[int] = []
    real = short_rr.tokenize

    def counting(query: str, document: str, **kwargs: Any) -> Any:
        counted.append(len(document))
        return real(query, document, **kwargs)

    monkeypatch.setattr(short_rr, "tokenize", counting)
    huge = "word " * 2_000_000  # 10 MB
    with Running(None, reranker=short_rr, max_request_tokens=1_500) as server:
        for document in (LONG, huge):
            counted.clear()
            request = {"query": QUERY, "documents": ["short", document], "long_text": "chunk"}
            answer = server.post(request, path="/v1/rerank")
            assert answer.status_code == 400, answer.text[:300]
            error = answer.json()["error"]
            assert error["code"] == "request_too_large" and error["param"] == "documents"
            assert (
                "more than 1,500 tokens (--max-request-tokens; reached at documents[1], counting its windows)"
                in (error["message"])
            )
            blocks = [n for n in counted if n < len(document)]  # (tokenize(query, document) reads a bounded prefix)
            assert len(blocks) > 3 and sum(blocks) < 20_000  # counted in blocks, up to the limit
        assert gate.calls == []  # refused before any decode
        # The twin: truncated, each costs max_length, and the same requests are scored.
        for document in (LONG, huge):
            cut = server.post({"query": QUERY, "documents": ["short", document]}, path="/v1/rerank")
            assert _by_index(cut)[1]["truncated"] is True
        assert [len(texts) for texts in gate.calls] == [2, 2]


def test_deterministic_scores_equal_each_pair_scored_alone(chunky: Running, short_rr: Reranker) -> None:
    request = {"query": QUERY, "documents": LONG_DOCS, "long_text": "chunk", "deterministic": True}
    results = _by_index(chunky.post(request, path="/v1/rerank"))
    alone = [
        float(short_rr.run([(QUERY, d)], RerankCall(long_text="chunk", deterministic=True)).scores[0])
        for d in LONG_DOCS
    ]
    assert [results[i]["relevance_score"] for i in range(len(LONG_DOCS))] == alone  # bit for bit


def test_the_budget_is_the_exact_cost_of_the_windows(reranker_file: Path) -> None:
    """A request costs what Reranker.plan says its windows take: one that fits to the token is scored, one token
    less refused. (The count used to estimate the windows from the document's tokens: with a large overlap at a
    small max_length it counted up to 1.47x their tokens and refused requests that fit.)"""
    call = RerankCall(long_text="chunk", overlap=12)
    with Reranker(reranker_file, n_threads=2, max_length=96) as tight:
        exact = tight.plan([(QUERY, "short"), (QUERY, LONG)], call)
        cost = sum(r.tokens_used for r in exact)
        default = sum(
            r.tokens_used for r in tight.plan([(QUERY, "short"), (QUERY, LONG)], RerankCall(long_text="chunk"))
        )
        assert default != cost  # the body's overlap is the one planned
        request = {"query": QUERY, "documents": ["short", LONG], "long_text": "chunk", "overlap": 12}
        for budget, status in ((cost, 200), (cost - 1, 400)):
            with Running(None, reranker=tight, max_request_tokens=budget) as server:
                answer = server.post(request, path="/v1/rerank")
            assert answer.status_code == status, (budget, answer.text[:300])
            if status == 200:
                assert answer.json()["usage"]["prompt_tokens"] == cost
            else:
                assert answer.json()["error"]["code"] == "request_too_large"
                assert "reached at documents[1], counting its windows" in answer.json()["error"]["message"]


def test_health_answers_while_a_chunked_rerank_is_scored(short_rr: Reranker, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = EngineGate(short_rr, monkeypatch)
    with Running(None, reranker=short_rr) as server, ThreadPoolExecutor(1) as pool:
        big = pool.submit(server.post, {"query": QUERY, "documents": [LONG], "long_text": "chunk"}, path="/v1/rerank")
        try:
            gate.wait_entered()  # its windows are in the reranker's engine call, held there
            health = server.get("/health")
            assert health.status_code == 200 and health.json()["reranker"]["requests"] == 1
            assert not big.done()
        finally:
            gate.open()
        assert "span" in _by_index(big.result())[0]
    assert gate.calls == [[LONG]]  # one engine call: the document's windows together
