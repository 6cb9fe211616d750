"""``qwen-embed demo``: random-weight models built from the installed package, usable by rerank, embed and serve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from qwen_embed import Embedder, Reranker
from qwen_embed.interfaces._cli_demo import EMBEDDING_FILE, RERANKER_FILE
from qwen_embed.interfaces.cli import main

# What an installed wheel has not: the source checkout's folders, and every optional extra.
BLOCKED = ("tests", "examples", "benchmarks", "torch", "pyarrow", "transformers", "starlette", "uvicorn", "faiss")

DEMO_SCRIPT = textwrap.dedent(
    """
    import sys
    for name in sys.argv[2].split(","):
        sys.modules[name] = None  # importing it now fails, as it would without the checkout or the extra
    from qwen_embed.interfaces.cli import main
    sys.exit(main(["demo", "--save", sys.argv[1], "--threads", "2"]))
    """
)


def test_demo_needs_only_the_base_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "demo-models"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", DEMO_SCRIPT, str(saved), ",".join(BLOCKED)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    embedding, reranker = saved / EMBEDDING_FILE, saved / RERANKER_FILE
    assert sorted(p.name for p in saved.iterdir()) == sorted([EMBEDDING_FILE, RERANKER_FILE])  # no staging left
    out = done.stdout
    assert f"embedding model: {embedding}" in out and f"reranker model:  {reranker}" in out
    assert "encode_queries: 2 queries -> 2 x 256 float32" in out and "rank('What is GGUF?', 3 documents)" in out
    assert f"--model {reranker}" in out and f"--reranker {reranker}" in out

    # qwen-embed rerank --model DIR/... : a local file through from_pretrained, as serve --reranker loads it
    docs = ["A file format.", "A city."]
    assert main(["rerank", "What is GGUF?", *docs, "--model", str(reranker), "--threads", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    with Reranker.from_pretrained(str(reranker), n_threads=2) as rr:
        want = rr.rank("What is GGUF?", docs)
    assert [r["index"] for r in rows] == [w["corpus_id"] for w in want]
    assert [r["score"] for r in rows] == pytest.approx([w["score"] for w in want], abs=1e-6)
    assert rows[0]["score"] != rows[1]["score"]  # the twin: two documents, two scores
    assert main(["embed", "some text", "--model-path", str(embedding), "--threads", "2"]) == 0
    vector = np.array(json.loads(capsys.readouterr().out)["embedding"])
    with Embedder.from_pretrained(str(embedding), n_threads=2) as emb:
        np.testing.assert_allclose(vector, emb.encode_documents(["some text"])[0], atol=5e-4)
        assert emb.native_dim == 256


def test_demo_without_save_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the temporary folder it builds in
    assert main(["demo", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "p(yes)" in out and "not retrieval quality" in out and "The models are kept" not in out
    assert list(tmp_path.iterdir()) == []
