"""Chroma: QwenEmbeddingFunction on a real on-disk PersistentClient, reopened in a fresh process by name."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
pytest.importorskip("chromadb")

import chromadb
from chromadb.utils.embedding_functions import known_embedding_functions

from qwen_embed import ConfigurationError, Embedder, InputTypeError
from qwen_embed.integrations import clear_cache
from qwen_embed.integrations.chroma import QwenEmbeddingFunction

from .integration_support import (
    DOCUMENTS,
    QUERIES,
    CountingEmbedder,
    assert_other_vectors,
    assert_printed_ranking,
    assert_ranked,
    assert_same_vectors,
    brute_force,
)

ROOT = Path(__file__).resolve().parents[1]

REOPEN = """
    import json, sys
    import chromadb
    import qwen_embed.integrations.chroma  # registers "qwen_embed" with Chroma

    client = chromadb.PersistentClient(path=sys.argv[1])
    docs = client.get_collection("docs")  # no embedding function given: the saved one is rebuilt
    ef = docs.configuration["embedding_function"]
    found = docs.query(query_texts=json.loads(sys.argv[2]), n_results=2)
    query_vectors = ef.embed_query(json.loads(sys.argv[2]))
    print(json.dumps({
        "function": type(ef).__name__,
        "config": ef.get_config(),
        "space": docs.configuration["hnsw"]["space"],
        "ids": found["ids"],
        "distances": found["distances"],
        "query_vectors": [[float(x) for x in v] for v in query_vectors],
        "count": docs.count(),
    }))
"""


def test_registered_with_cosine_space(tiny_model: Path) -> None:
    assert known_embedding_functions["qwen_embed"] is QwenEmbeddingFunction
    ef = QwenEmbeddingFunction(model=tiny_model, embedder_options={"n_threads": 2})
    assert ef.name() == "qwen_embed" and ef.default_space() == "cosine" and not ef.is_legacy()


def test_persisted_collection_reopens_in_a_fresh_process(tiny_model: Path, tmp_path: Path) -> None:
    """Default prompts: the collection holds ``encode_documents``' vectors; reopened by name in a fresh
    process, it embeds queries as ``encode_queries`` and finds what brute force finds (cosine distance)."""
    db = tmp_path / "chroma"
    ef = QwenEmbeddingFunction(model=tiny_model, embedder_options={"n_threads": 2})
    emb = ef.embedder
    docs = chromadb.PersistentClient(path=str(db)).create_collection("docs", embedding_function=ef)
    docs.add(ids=[f"d{i}" for i in range(4)], documents=DOCUMENTS)
    held = docs.get(ids=[f"d{i}" for i in range(4)], include=["embeddings"])
    stored = [held["embeddings"][held["ids"].index(f"d{i}")] for i in range(4)]
    assert_same_vectors(stored, emb.encode_documents(DOCUMENTS))
    assert_other_vectors(stored, emb.encode_queries(DOCUMENTS))  # the broken pairing stores other vectors
    del docs

    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(REOPEN), str(db), json.dumps(QUERIES)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["function"] == "QwenEmbeddingFunction" and report["space"] == "cosine"
    assert report["config"] == ef.get_config() and report["config"]["quant"] == "F32"
    assert report["count"] == 4
    assert_same_vectors(report["query_vectors"], emb.encode_queries(QUERIES))
    expected = brute_force(emb.encode_queries(QUERIES), emb.encode_documents(DOCUMENTS), k=2)
    for ids, distances, best in zip(report["ids"], report["distances"], expected, strict=True):
        assert_ranked([(int(i[1:]), 1.0 - d) for i, d in zip(ids, distances, strict=True)], best)


def test_an_equal_function_reopens_without_conflict(tiny_model: Path, tmp_path: Path) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    options = {"model": tiny_model, "embedder_options": {"n_threads": 2}}
    client.create_collection("docs", embedding_function=QwenEmbeddingFunction(**options)).add(
        ids=["a", "b"], documents=DOCUMENTS[:2]
    )
    again = client.get_collection("docs", embedding_function=QwenEmbeddingFunction(**options))
    emb = QwenEmbeddingFunction(**options).embedder
    ((best,),) = brute_force(emb.encode_queries(QUERIES[1:2]), emb.encode_documents(DOCUMENTS[:2]), k=1)
    assert again.query(query_texts=[QUERIES[1]], n_results=1)["ids"] == [["ab"[best[0]]]]


def test_a_moved_model_file_is_named_and_can_be_given_again(tiny_model: Path, tmp_path: Path) -> None:
    """A collection records the file's absolute path: reopened after the file moved, Chroma's error
    names the old path; the function given again with the new path reads the collection as before."""
    model = tmp_path / "models" / "qwen.gguf"
    model.parent.mkdir()
    model.write_bytes(tiny_model.read_bytes())
    db = str(tmp_path / "db")
    ef = QwenEmbeddingFunction(model=model, embedder_options={"n_threads": 2})
    chromadb.PersistentClient(path=db).create_collection("docs", embedding_function=ef).add(
        ids=[f"d{i}" for i in range(4)], documents=DOCUMENTS
    )
    assert ef.get_config()["model"] == str(model.resolve())
    moved = model.rename(tmp_path / "qwen-moved.gguf")
    clear_cache()
    with pytest.raises(ValueError, match=rf"Model file not found: {re.escape(str(model.resolve()))}\..*new path"):
        chromadb.PersistentClient(path=db).get_collection("docs").configuration  # noqa: B018 (builds the function)
    again = QwenEmbeddingFunction(model=moved, embedder_options={"n_threads": 2})
    docs = chromadb.PersistentClient(path=db).get_collection("docs", embedding_function=again)
    emb = again.embedder
    (best,) = brute_force(emb.encode_queries(QUERIES[:1]), emb.encode_documents(DOCUMENTS), k=2)
    found = docs.query(query_texts=QUERIES[:1], n_results=2)
    assert_ranked([(int(i[1:]), 1.0 - d) for i, d in zip(found["ids"][0], found["distances"][0])], best)


def test_sides_and_config(tiny_model: Path) -> None:
    emb = CountingEmbedder(tiny_model, n_threads=2)
    ef = QwenEmbeddingFunction(embedder=emb, task="qa", dim=32)
    assert_same_vectors(ef(DOCUMENTS), emb.encode_documents(DOCUMENTS, task="qa", dim=32))
    assert_same_vectors(ef.embed_query(["Who purrs?"]), emb.encode_queries(["Who purrs?"], task="qa", dim=32))
    emb.calls.clear()
    ef(DOCUMENTS)
    ef.embed_query(QUERIES)
    assert [c[:2] for c in emb.calls] == [("document", 4), ("query", 4)]  # one engine call per batch

    config = ef.get_config()
    assert config == {
        "model": str(tiny_model.resolve()),
        "quant": "F32",  # what the file holds
        "embedder_options": {},
        "task": "qa",
        "query_instruction": None,
        "document_instruction": None,
        "dim": 32,
    }
    json.dumps(config)
    rebuilt = QwenEmbeddingFunction.build_from_config(config)
    assert rebuilt.get_config() == config and len(rebuilt(["x"])[0]) == 32
    ef.validate_config_update(config, {**config, "model": "/moved/model.gguf"})  # a moved file is fine
    with pytest.raises(ConfigurationError, match="cannot change 'dim'"):
        ef.validate_config_update(config, {**config, "dim": 64})
    with pytest.raises(ConfigurationError, match=r"cannot change the quant .*\('F32' -> 'Q8_0'\)"):
        ef.validate_config_update(config, {**config, "quant": "Q8_0"})
    with pytest.raises(ConfigurationError, match=r"holds F32 weights, not quant='Q8_0'"):
        QwenEmbeddingFunction.build_from_config({**config, "quant": "Q8_0"})
    with pytest.raises(ConfigurationError, match=r"unknown qwen_embed config keys \['colour'\]"):
        QwenEmbeddingFunction.build_from_config({**config, "colour": "red"})


def test_bad_input_gives_clear_errors(tiny_model: Path) -> None:
    ef = QwenEmbeddingFunction(model=tiny_model, embedder_options={"n_threads": 2})
    with pytest.raises(InputTypeError, match="takes a list of str, not a single str"):
        ef("one text")  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="text #0 is int"):
        ef.embed_query([3])  # type: ignore[list-item]


def test_chroma_example(
    tiny_model: Path, tiny_embedder: Embedder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = runpy.run_path(str(ROOT / "examples" / "chroma_persistent.py"))
    example["main"](["chroma_persistent.py", str(tiny_model), str(tmp_path / "db")])
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"collection at {tmp_path / 'db'}: 3 documents, space cosine"
    assert_printed_ranking(out, tiny_embedder, example["DOCUMENTS"], example["QUERY"], k=2, distance=True)
