"""Chroma: QwenEmbeddingFunction on a real on-disk PersistentClient, reopened in a fresh process by name."""

from __future__ import annotations

import json
import os
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

from qwen_embed import ConfigurationError, InputTypeError
from qwen_embed.integrations.chroma import QwenEmbeddingFunction

from .integration_support import DOCUMENTS, CountingEmbedder, assert_same_vectors

ROOT = Path(__file__).resolve().parents[1]

REOPEN = """
    import json, sys
    import chromadb
    import qwen_embed.integrations.chroma  # registers "qwen_embed" with Chroma

    client = chromadb.PersistentClient(path=sys.argv[1])
    docs = client.get_collection("docs")  # no embedding function given: the saved one is rebuilt
    ef = docs.configuration["embedding_function"]
    found = docs.query(query_texts=json.loads(sys.argv[2]), n_results=2)
    print(json.dumps({
        "function": type(ef).__name__,
        "config": ef.get_config(),
        "space": docs.configuration["hnsw"]["space"],
        "ids": [row[0] for row in found["ids"]],
        "distances": found["distances"],
        "count": docs.count(),
    }))
"""


def test_registered_with_cosine_space(tiny_model: Path) -> None:
    assert known_embedding_functions["qwen_embed"] is QwenEmbeddingFunction
    ef = QwenEmbeddingFunction(model=tiny_model, embedder_options={"n_threads": 2})
    assert ef.name() == "qwen_embed" and ef.default_space() == "cosine" and not ef.is_legacy()


def test_persisted_collection_reopens_in_a_fresh_process(tiny_model: Path, tmp_path: Path) -> None:
    db = tmp_path / "chroma"
    ef = QwenEmbeddingFunction(model=tiny_model, task="sts", embedder_options={"n_threads": 2})
    docs = chromadb.PersistentClient(path=str(db)).create_collection("docs", embedding_function=ef)
    docs.add(ids=[f"d{i}" for i in range(4)], documents=DOCUMENTS)
    assert docs.query(query_texts=[DOCUMENTS[1]], n_results=1)["ids"] == [["d1"]]
    del docs

    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(REOPEN), str(db), json.dumps(DOCUMENTS)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["function"] == "QwenEmbeddingFunction" and report["space"] == "cosine"
    assert report["config"] == ef.get_config() and report["config"]["task"] == "sts"
    assert report["count"] == 4
    assert report["ids"] == ["d0", "d1", "d2", "d3"]  # each document's own text finds it
    for best, runner_up in report["distances"]:
        assert best == pytest.approx(0.0, abs=1e-4) and runner_up > 1e-3


def test_an_equal_function_reopens_without_conflict(tiny_model: Path, tmp_path: Path) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    options = {"model": tiny_model, "task": "sts", "embedder_options": {"n_threads": 2}}
    client.create_collection("docs", embedding_function=QwenEmbeddingFunction(**options)).add(
        ids=["a", "b"], documents=DOCUMENTS[:2]
    )
    again = client.get_collection("docs", embedding_function=QwenEmbeddingFunction(**options))
    assert again.query(query_texts=[DOCUMENTS[1]], n_results=1)["ids"] == [["b"]]


def test_sides_and_config(tiny_model: Path) -> None:
    emb = CountingEmbedder(tiny_model, n_threads=2)
    ef = QwenEmbeddingFunction(embedder=emb, task="qa", dim=32)
    assert_same_vectors(ef(DOCUMENTS), emb.encode_documents(DOCUMENTS, task="qa", dim=32))
    assert_same_vectors(ef.embed_query(["Who purrs?"]), emb.encode_queries(["Who purrs?"], task="qa", dim=32))
    emb.calls.clear()
    ef(DOCUMENTS)
    assert [c[:2] for c in emb.calls] == [("encode_documents", 4)]

    config = ef.get_config()
    assert config == {
        "model": str(tiny_model.resolve()),
        "quant": "Q8_0",
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
    with pytest.raises(ConfigurationError, match=r"unknown qwen_embed config keys \['colour'\]"):
        QwenEmbeddingFunction.build_from_config({**config, "colour": "red"})


def test_bad_input_gives_clear_errors(tiny_model: Path) -> None:
    ef = QwenEmbeddingFunction(model=tiny_model, embedder_options={"n_threads": 2})
    with pytest.raises(InputTypeError, match="takes a list of str, not a single str"):
        ef("one text")  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="text #0 is int"):
        ef.embed_query([3])  # type: ignore[list-item]


def test_chroma_example(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = runpy.run_path(str(ROOT / "examples" / "chroma_persistent.py"))
    module["main"](["chroma_persistent.py", str(tiny_model), str(tmp_path / "db")])
    out = capsys.readouterr().out
    assert f"collection at {tmp_path / 'db'}: 3 documents, space cosine" in out
