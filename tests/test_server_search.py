"""``POST /v1/search`` (``serve --index``) on 127.0.0.1: a corpus job's output, indexed, searched over HTTP, answers
equal to ``Retriever.search`` and to brute-force float search of the stored vectors; reranked answers in the
reranker's own order; the server's rules (auth, limits, off-loop work, metrics, errors); the startup refusal."""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from qwen_embed import ConfigurationError, Embedder, EncodeCall, Reranker
from qwen_embed.corpus import embed_corpus
from qwen_embed.interfaces.cli import main
from qwen_embed.interfaces.server import ServerOptions, create_app
from qwen_embed.search import EmbedderMismatchError, EmbeddingRecipe, Retriever, SearchIndex, index_corpus
from qwen_embed.testing import make_reranker_model

from .server_support import HANG, MODEL, Running, ServeProcess, wait_until

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("usearch")

QUERIES = ["gguf vector search", "llama token", "corpus shard model"]
RERANKER = "qwen3-reranker-test"


def corpus_texts(n: int) -> list[str]:
    rng = random.Random(7)
    words = ["gguf", "vector", "llama", "query", "passage", "token", "model", "search", "corpus", "shard"]
    return [f"{i} " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 10))) for i in range(n)]


@pytest.fixture(scope="module")
def emb(tiny_model: Path) -> Iterator[Embedder]:
    with Embedder(tiny_model, n_threads=2) as e:
        yield e


@pytest.fixture(scope="module")
def rr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reranker]:
    with Reranker(make_reranker_model(tmp_path_factory.mktemp("rr") / "reranker.gguf"), n_threads=2) as r:
        yield r


@pytest.fixture(scope="module")
def folder(emb: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus job's output folder (120 rows in 3 shards), indexed by ``index_corpus`` (what ``qwen-embed index``
    runs), with a metadata field kept."""
    root = tmp_path_factory.mktemp("corpus")
    texts = corpus_texts(120)
    source = root / "corpus.jsonl"
    source.write_text("".join(json.dumps({"doc_id": f"doc-{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    out = root / "vectors"
    embed_corpus(source, out, embedder=emb, id_field="doc_id", shard_rows=40)
    index_corpus(out)
    return out


def stored(folder: Path) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """The corpus job's ids and float32 vectors (its Parquet shards), and the source texts by id."""
    table = pq.read_table(folder)
    dim = table.schema.field("embedding").type.list_size
    ids = [str(i) for i in table["id"].to_pylist()]
    texts = {f"doc-{i}": t for i, t in enumerate(corpus_texts(120))}
    return ids, table["embedding"].combine_chunks().values.to_numpy().reshape(-1, dim), texts


def brute_force(vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> list[tuple[str, float]]:
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [(ids[i], float(scores[i])) for i in order]


def pairs(hits: list[dict[str, Any]]) -> list[tuple[str, float]]:
    return [(hit["id"], hit["score"]) for hit in hits]


def same(got: list[tuple[str, float]], expected: list[tuple[str, float]], atol: float = 1e-5) -> bool:
    return [i for i, _ in got] == [i for i, _ in expected] and bool(
        np.allclose([s for _, s in got], [s for _, s in expected], rtol=0, atol=atol)
    )


@pytest.fixture(scope="module")
def server(emb: Embedder, folder: Path) -> Iterator[Running]:
    with Running(emb, index=folder, max_inputs=64) as running:
        yield running


@pytest.fixture(scope="module")
def reranking(emb: Embedder, rr: Reranker, folder: Path) -> Iterator[Running]:
    with Running(emb, reranker=rr, reranker_name=RERANKER, index=folder, max_inputs=64) as running:
        yield running


def search(server: Running, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    answer = server.post(body, path="/v1/search", **kwargs)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


# ---------------------------------------------------------------------- answers


def test_search_equals_the_retriever_and_brute_force_float_search(server: Running, emb: Embedder, folder: Path) -> None:
    answer = search(server, {"queries": QUERIES, "top_k": 5})
    assert answer["object"] == "list" and answer["model"] == MODEL and "reranker" not in answer
    assert [d["query"] for d in answer["data"]] == QUERIES and [d["index"] for d in answer["data"]] == [0, 1, 2]
    with Retriever(emb, folder) as retriever:
        expected = retriever.search(QUERIES, k=5)
    ids, vectors, texts = stored(folder)
    for result, hits, query in zip(answer["data"], expected, emb.encode_queries(QUERIES)):
        assert pairs(result["hits"]) == [(h.id, h.score) for h in hits]  # the same vectors: the same floats
        assert same(pairs(result["hits"]), brute_force(vectors, ids, query, 5))
        assert [h["text"] for h in result["hits"]] == [texts[h["id"]] for h in result["hits"]]
        assert all(h["vector_score"] == h["score"] and "rerank_score" not in h for h in result["hits"])
    tokens = sum(emb.count_tokens(q, side="query") for q in QUERIES)
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    # the twin: queries embedded as documents find other neighbours, so the checks above can fail
    as_documents = emb.encode_documents(QUERIES)
    assert any(
        not same(pairs(result["hits"]), brute_force(vectors, ids, q, 5))
        for q, result in zip(as_documents, answer["data"])
    )
    one = search(server, {"query": QUERIES[0], "top_k": 5})
    with Retriever(emb, folder) as retriever:  # decoded alone, as the server does: the same floats again
        assert [pairs(d["hits"]) for d in one["data"]] == [[(h.id, h.score) for h in retriever.search(QUERIES[0], 5)]]
    assert len(search(server, {"query": QUERIES[0]})["data"][0]["hits"]) == 10  # top_k's default


def test_reranked_search_is_the_rerankers_own_order(
    reranking: Running, emb: Embedder, rr: Reranker, folder: Path
) -> None:
    answer = search(reranking, {"query": QUERIES[0], "top_k": 3, "rerank": 10})
    assert answer["reranker"] == RERANKER
    hits = answer["data"][0]["hits"]
    with Retriever(emb, folder) as plain, Retriever(emb, folder, rr) as retriever:
        candidates = plain.search(QUERIES[0], k=10)
        expected = retriever.search(QUERIES[0], k=3, rerank_top=10)
    ranked = rr.rank(QUERIES[0], [h.text for h in candidates], top_k=3)
    assert [h["id"] for h in hits] == [candidates[r["corpus_id"]].id for r in ranked] == [h.id for h in expected]
    # (llama.cpp's rounding varies a little with what the reranker's shared-prefix cache held before)
    assert [h["rerank_score"] for h in hits] == pytest.approx([h.rerank_score for h in expected], abs=1e-5)
    assert [h["score"] for h in hits] == [h["rerank_score"] for h in hits]
    assert [h["vector_score"] for h in hits] == [candidates[r["corpus_id"]].score for r in ranked]
    pair_tokens = sum(len(rr.tokenize(QUERIES[0], h.text)) for h in candidates)
    tokens = emb.count_tokens(QUERIES[0], side="query") + pair_tokens
    assert answer["usage"]["prompt_tokens"] == tokens
    # the twin: without the reranker the same request answers the vector order, which differs here
    vector_order = search(reranking, {"query": QUERIES[0], "top_k": 3, "rerank": False})
    assert "reranker" not in vector_order
    assert [h["id"] for h in vector_order["data"][0]["hits"]] == [h.id for h in candidates[:3]]
    assert [h["id"] for h in vector_order["data"][0]["hits"]] != [h["id"] for h in hits]


def test_a_server_with_a_reranker_reranks_by_default_as_the_retriever_does(
    reranking: Running, emb: Embedder, rr: Reranker, folder: Path
) -> None:
    answer = search(reranking, {"queries": QUERIES[:1], "top_k": 4})  # rerank_top 50, as Retriever.search
    with Retriever(emb, folder, rr) as retriever:
        expected = retriever.search(QUERIES[0], k=4)
    assert [h["id"] for h in answer["data"][0]["hits"]] == [h.id for h in expected]
    assert [h["rerank_score"] for h in answer["data"][0]["hits"]] == pytest.approx(
        [h.rerank_score for h in expected], abs=1e-5
    )
    for flag in (True, {"rerank_top": 50}):
        body = {"query": QUERIES[0], "top_k": 4, **(flag if isinstance(flag, dict) else {"rerank": flag})}
        assert search(reranking, body)["data"] == answer["data"]
    many = search(reranking, {"queries": QUERIES, "top_k": 2, "rerank": 5})  # one rerank call per query
    with Retriever(emb, folder, rr) as retriever:
        expected_many = retriever.search(QUERIES, k=2, rerank_top=5)
    for result, hits in zip(many["data"], expected_many):
        assert [h["id"] for h in result["hits"]] == [h.id for h in hits]
        assert [h["rerank_score"] for h in result["hits"]] == pytest.approx([h.rerank_score for h in hits], abs=1e-5)


def test_instruction_and_task_follow_what_the_index_allows(
    server: Running, emb: Embedder, folder: Path, tmp_path: Path
) -> None:
    ids, vectors, _ = stored(folder)
    # The corpus' documents were embedded bare (the retrieval recipe): the query instruction is the caller's choice.
    told = search(server, {"query": QUERIES[1], "top_k": 5, "instruction": "Find code"})
    query = emb.encode(QUERIES[1], instruction="Find code")
    assert same(pairs(told["data"][0]["hits"]), brute_force(vectors, ids, query, 5))
    qa = search(server, {"query": QUERIES[1], "top_k": 5, "task": "qa"})
    assert same(pairs(qa["data"][0]["hits"]), brute_force(vectors, ids, emb.encode_queries(QUERIES[1], task="qa"), 5))
    assert qa["usage"]["prompt_tokens"] == emb.count_tokens(QUERIES[1], side="query", task="qa")
    default = search(server, {"query": QUERIES[1], "top_k": 5})
    assert pairs(told["data"][0]["hits"]) != pairs(default["data"][0]["hits"])  # the twin: the field is used

    # An index of instructed documents (a symmetric task) takes only the query prompt it records.
    texts = corpus_texts(30)
    index = SearchIndex.create(tmp_path / "sts", emb.dim, recipe=EmbeddingRecipe.from_embedder(emb, task="sts"))
    index.upsert([f"s{i}" for i in range(30)], emb.encode_documents(texts, task="sts"), texts=texts)
    with Running(emb, index=index) as sts:
        refused = sts.post({"query": "x", "instruction": "Find code"}, path="/v1/search")
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "instruction"
        assert (
            "This index's documents were embedded with the prompt ('Instruct: Retrieve semantically similar "
            in (refused.json()["error"]["message"])
        )
        assert "Leave 'instruction' out, or rebuild the index for that task." in refused.json()["error"]["message"]
        assert sts.post({"query": "x", "task": "qa"}, path="/v1/search").json()["error"]["param"] == "task"
        same_task = search(sts, {"query": "x", "task": "sts", "top_k": 3})
        recorded = search(sts, {"query": "x", "top_k": 3})
        assert same_task["data"] == recorded["data"]
        expected = index.search(emb.encode_queries("x", task="sts"), k=3)
        assert pairs(recorded["data"][0]["hits"]) == [(h.id, h.score) for h in expected]
    index.close()


def test_search_receipts_equal_embedder_run(server: Running, emb: Embedder) -> None:
    answer = search(server, {"queries": QUERIES, "top_k": 2, "return_receipts": True})
    receipts = emb.run(QUERIES, EncodeCall(side="query", task="query")).receipts
    assert [d["receipt"] for d in answer["data"]] == [r.as_dict() for r in receipts]
    assert "receipt" not in search(server, {"queries": QUERIES, "top_k": 2})["data"][0]


# ---------------------------------------------------------------------- the server's rules


def test_the_api_key_guards_search(emb: Embedder, folder: Path) -> None:
    with Running(emb, index=folder, api_key="sekrit") as guarded:
        missing = guarded.post({"query": "x"}, path="/v1/search")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
        wrong = guarded.post({"query": "x"}, path="/v1/search", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        good = guarded.post({"query": "x"}, path="/v1/search", headers={"Authorization": "Bearer sekrit"})
        assert good.status_code == 200 and len(good.json()["data"][0]["hits"]) == 10


BAD_BODIES = [
    ({}, "query", r"^'query' \(a string\) or 'queries' \(a list of strings\) is required\.$"),
    ({"query": "  "}, "query", r"^'query' must be a non-empty string \(it is blank\)\.$"),
    ({"query": 3}, "query", r"^'query' must be a non-empty string \(it is a number\)\.$"),
    ({"query": "a", "queries": ["b"]}, "queries", r"^Send 'query' \(one string\) or 'queries' \(a list\), not both\.$"),
    ({"queries": []}, "queries", r"^'queries' must be a non-empty array of strings \(it is empty\)\.$"),
    ({"queries": "a"}, "queries", r"^'queries' must be a non-empty array of strings \(it is a string\)\.$"),
    ({"queries": ["a", None]}, "queries", r"^queries\[1\] must be a non-empty string \(it is null\)\.$"),
    ({"queries": ["a"] * 65}, "queries", r"^Too many queries: 65 \(at most 64 per request, --max-inputs\)"),
    ({"query": "a", "top_k": 0}, "top_k", r"^'top_k' must be an integer from 1 to 64 \(results per query;"),
    ({"query": "a", "top_k": "5"}, "top_k", r"^'top_k' must be an integer from 1 to 64 .* not \"5\"\.$"),
    ({"query": "a", "top_k": True}, "top_k", r"^'top_k' must be an integer"),
    ({"query": "a", "rerank": True}, "rerank", r"^This server has no reranker; start it with --reranker MODEL"),
    ({"query": "a", "rerank": 5}, "rerank", r"^This server has no reranker"),
    ({"query": "a", "rerank": "yes"}, "rerank", r"^'rerank' must be an integer from 1 to 64 \(true, false, or the"),
    ({"query": "a", "rerank": False, "rerank_top": 5}, "rerank", r"^'rerank' is false but 'rerank_top' is given"),
    ({"query": "a", "return_receipts": "yes"}, "return_receipts", r"^'return_receipts' must be true or false, not"),
    ({"query": "a", "task": "nope"}, "task", r"nope"),
    ({"query": "a", "instruction": ""}, "instruction", r"^'instruction' must be a non-empty string\.$"),
]


@pytest.mark.parametrize(("body", "param", "message"), BAD_BODIES, ids=lambda v: json.dumps(v)[:40])
def test_bad_bodies_are_400s_naming_the_field(server: Running, body: dict[str, Any], param: str, message: str) -> None:
    answer = server.post(body, path="/v1/search")
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert re.search(message, error["message"]), error["message"]


def test_other_refusals(server: Running, reranking: Running) -> None:
    assert server.post(b"[1]", path="/v1/search").status_code == 400
    assert server.post(b"{", path="/v1/search").json()["error"]["message"].startswith("The request body is not valid")
    unknown = server.post({"query": "a", "model": "nope"}, path="/v1/search")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert search(server, {"query": "a", "model": MODEL + "-query", "top_k": 1})["model"] == MODEL + "-query"
    too_many = reranking.post({"queries": QUERIES, "top_k": 2, "rerank": 30}, path="/v1/search")
    assert too_many.status_code == 400 and too_many.json()["error"]["message"].startswith(
        "Reranking 30 candidates for each of 3 queries is 90 documents; at most 64 per request (--max-inputs)."
    )
    typed = server.post(b'{"query": "a"}', path="/v1/search", headers={"Content-Type": "text/plain"})
    assert typed.status_code == 415


def test_the_token_budget_counts_queries_and_reranked_pairs(emb: Embedder, rr: Reranker, folder: Path) -> None:
    query_tokens = emb.count_tokens(QUERIES[0], side="query")
    with Running(emb, reranker=rr, index=folder, max_request_tokens=query_tokens + 5) as tight:
        assert tight.post({"query": QUERIES[0], "rerank": False}, path="/v1/search").status_code == 200
        over = tight.post({"query": QUERIES[0], "rerank": 3}, path="/v1/search")
        assert over.status_code == 400 and over.json()["error"]["code"] == "request_too_large"
        assert over.json()["error"]["param"] == "rerank"


def test_no_index_and_no_texts(emb: Embedder, rr: Reranker, folder: Path, tmp_path: Path) -> None:
    with Running(emb) as plain:
        answer = plain.post({"query": "a"}, path="/v1/search")
        assert answer.status_code == 404 and "--index INDEX_OR_FOLDER" in answer.json()["error"]["message"]
        assert "search" not in plain.get("/health").json()
    x = emb.encode_documents(corpus_texts(12))
    bare = SearchIndex.create(tmp_path / "bare", emb.dim, recipe=EmbeddingRecipe.from_embedder(emb))
    bare.upsert([str(i) for i in range(12)], x)
    with Running(emb, reranker=rr, reranker_name=RERANKER, index=bare) as textless:
        answer = search(textless, {"query": "a", "top_k": 3})  # not reranked: nothing to score
        assert "reranker" not in answer and all("text" not in h for h in answer["data"][0]["hits"])
        refused = textless.post({"query": "a", "rerank": True}, path="/v1/search")
        assert (
            refused.status_code == 400
            and "keeps no texts, so the reranker cannot score its rows" in (refused.json()["error"]["message"])
        )
        assert textless.get("/health").json()["search"]["reranks"] is False
    bare.close()


def test_health_and_metrics_report_searches(emb: Embedder, folder: Path) -> None:
    with Running(emb, index=folder) as running:
        search(running, {"queries": QUERIES[:2], "top_k": 1})
        health = running.get("/health").json()["search"]
        assert health["rows"] == 120 and health["dim"] == emb.dim and health["precision"] == "float32"
        assert (health["requests"], health["queries"], health["reranks"]) == (1, 2, False)
        assert running.metrics.value("qwen_embed_search_queries_total") == 2
        assert running.metrics.value("qwen_embed_search_duration_seconds_count") == 1
        tokens = sum(emb.count_tokens(q, side="query") for q in QUERIES[:2])
        assert running.metrics.value("qwen_embed_search_tokens_total") == tokens
        assert running.metrics.value("qwen_embed_requests_total", {"path": "/v1/search", "status": "200"}) == 1
        text = running.get("/metrics").text
        assert "qwen_embed_search_queries_total 2.0" in text


def test_index_lookups_run_on_their_own_lane_off_the_event_loop(
    emb: Embedder, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup held in the index's lane leaves /health and /v1/embeddings answering."""
    entered, release = threading.Event(), threading.Event()
    with Running(emb, index=folder) as running:
        index = running.app.state.index
        real = index.search

        def held(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            release.wait(HANG)
            return real(*args, **kwargs)

        monkeypatch.setattr(index, "search", held)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(running.post, {"query": QUERIES[0], "top_k": 2}, "/v1/search")
            assert entered.wait(HANG)
            assert running.get("/health").status_code == 200
            assert running.post({"input": "still embedding"}).status_code == 200
            assert not pending.done()
            release.set()
            assert pending.result().status_code == 200


def test_a_mismatched_embedder_is_refused_at_startup_listing_each_difference(
    tiny_model: Path, model_factory: Any, folder: Path, rr: Reranker, capsys: pytest.CaptureFixture[str]
) -> None:
    with Embedder(tiny_model, n_threads=1, dim=32, normalize=False) as other:
        with pytest.raises(EmbedderMismatchError, match=r"dim: index 64, embedder 32; normalize: index True, embedder"):
            create_app(other, ServerOptions(), index=folder)
    with pytest.raises(ConfigurationError, match=r"^searching an index needs the embedding model"):
        create_app(None, ServerOptions(), reranker=rr, index=folder)
    another = model_factory(seed=5)
    code = main(["serve", "--index", str(folder), "--model-path", str(another), "--threads", "1", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "qwen-embed serve: EmbedderMismatchError: this Embedder would embed queries unlike" in err
    assert "model: index " in err and "serving" not in err
    assert main(["serve", "--index", str(folder), "--no-embedder", "--reranker", "x"]) == 1
    assert "--index needs the embedding model that embeds the queries; drop --no-embedder" in capsys.readouterr().err


def test_serve_index_process_end_to_end(emb: Embedder, rr: Reranker, folder: Path) -> None:
    """``qwen-embed serve --index FOLDER --reranker M``: the index's own model file, found from the index."""
    process = ServeProcess("--index", str(folder), "--reranker", str(rr.model_path), "--threads", "2", "--port", "0")
    try:
        banner = process.wait_for("serving")
        assert banner is not None and f"index {folder / '_index'}" in banner, process.seen
        url = banner.split(" on ")[-1].strip().removesuffix("/v1")
        answer = httpx.post(url + "/v1/search", json={"query": QUERIES[2], "top_k": 3, "rerank": 10}, timeout=HANG)
        assert answer.status_code == 200, answer.text
        with Retriever(emb, folder, rr) as retriever:
            expected = retriever.search(QUERIES[2], k=3, rerank_top=10)
        assert [h["id"] for h in answer.json()["data"][0]["hits"]] == [h.id for h in expected]
    finally:
        process.stop()


def test_a_client_that_goes_away_drops_its_lookups_and_is_never_reranked(
    emb: Embedder, rr: Reranker, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[int] = []
    reranked: list[int] = []
    entered, release = threading.Event(), threading.Event()
    real_run = rr.run
    monkeypatch.setattr(rr, "run", lambda pairs, *a, **kw: reranked.append(len(pairs)) or real_run(pairs, *a, **kw))
    with Running(emb, reranker=rr, index=folder, batch_texts=2) as running:
        index = running.app.state.index
        real_search = index.search

        def held(queries: Any, *args: Any, **kwargs: Any) -> Any:
            lookups.append(len(queries))
            entered.set()
            release.wait(HANG)
            return real_search(queries, *args, **kwargs)

        monkeypatch.setattr(index, "search", held)
        body = json.dumps({"queries": [*QUERIES, "gguf", "shard"], "rerank": 5}).encode()  # 5 queries: 3 lookups
        head = "POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        conn = running.raw(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert entered.wait(HANG), "the first lookup never started"
        conn.close()  # the client goes away while its first two queries are looked up
        dropped = "qwen_embed_search_dropped_queries_total"
        wait_until(lambda: running.metrics.value(dropped) == 3, "the three waiting queries dropped")
        release.set()
        after = running.post({"query": QUERIES[0], "top_k": 2, "rerank": False}, path="/v1/search")
        assert after.status_code == 200
        assert lookups == [2, 1]  # the dropped request's other lookups never ran
        assert reranked == []  # and its candidates were never scored
        assert running.metrics.value("qwen_embed_requests_total", {"path": "/v1/search", "status": "499"}) == 1
