"""Examples run on a generated model so they cannot rot."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from .hub_server import HubServer

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs(tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["quickstart.py", str(tiny_model)])
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "queries (2, 64), documents (3, 64), dtype float32" in out
    assert "What is GGUF?" in out


def test_quickstart_demo_builds_its_own_model(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["quickstart.py", "--demo"])
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "built a random-weight model" in out and "(3, 256)" in out


def test_task_retrieval_example(
    tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["task_retrieval.py", str(tiny_model)])
    runpy.run_path(str(ROOT / "examples" / "task_retrieval.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "code_search prompt: 'Instruct: Given a natural language description" in out
    assert "STS similarity:" in out


def test_readme_main_command_downloads_the_default_model(hub: HubServer, tmp_path: Path) -> None:
    """`python examples/quickstart.py` as the README runs it, with the Hub at 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "home"), HF_HUB_CACHE=str(tmp_path / "hub"))
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Qwen3-Embedding-0.6B-Q8_0.gguf" in done.stdout and "queries (2, 64)" in done.stdout
    assert hub.requests("GET", "/resolve/main/Qwen3-Embedding-0.6B-Q8_0.gguf")
    again = subprocess.run(  # the second run is offline-proof: the cache answers
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        env={**env, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr


def test_long_documents_example(
    tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["long_documents.py", str(tiny_model)])
    runpy.run_path(str(ROOT / "examples" / "long_documents.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "Running llama.cpp on a laptop: " in out and "7 sections" in out  # the title heading and six parts
    assert "encode(long_text='chunk') shape: (3, 64)" in out
    assert "best chunk: " in out
