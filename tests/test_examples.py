"""Examples run on a generated model so they cannot rot."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs(tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["quickstart.py", str(tiny_model)])
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "queries (2, 64), documents (3, 64), dtype float32" in out
    assert "What is GGUF?" in out


def test_quickstart_builds_its_own_model(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["quickstart.py"])
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
