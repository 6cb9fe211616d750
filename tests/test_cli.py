"""The ``qwen-embed`` command line, run in-process and as ``python -m qwen_embed``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qwen_embed import __version__
from qwen_embed.interfaces.cli import main

from .hub_server import HubServer


def test_quants_lists_sizes_and_cache_state(hub: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quants", "0.6B", "--endpoint", hub.url, "--cache-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["quant", "size", "cached", "file"]
    assert lines[1].split()[0] == "F16" and lines[2].split()[0] == "Q8_0"
    assert lines[2].endswith("no      Qwen3-Embedding-0.6B-Q8_0.gguf")


def test_download_prints_the_path(hub: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["download", "0.6B", "--quant", "q8_0", "--endpoint", hub.url, "--cache-dir", str(tmp_path)]
    assert main([*args, "--no-progress"]) == 0
    captured = capsys.readouterr()
    path = Path(captured.out.strip())
    assert path.is_file() and path.name == "Qwen3-Embedding-0.6B-Q8_0.gguf"
    assert "Q8_0 was asked for" in captured.err
    assert main(["quants", "0.6B", "--offline", "--cache-dir", str(tmp_path)]) == 0
    assert "yes" in capsys.readouterr().out


def test_download_auto_with_a_budget(hub: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["download", "0.6B", "--quant", "auto", "--memory-budget", "1000GB", "--no-progress"]
    assert main([*args, "--endpoint", hub.url, "--cache-dir", str(tmp_path)]) == 0
    assert "auto chose F16" in capsys.readouterr().err


def test_errors_are_one_line_and_exit_1(hub: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", "0.6B", "--quant", "Q2_K", "--endpoint", hub.url, "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qwen-embed download: QuantNotFoundError:") and "Traceback" not in err


def test_python_dash_m_and_version() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    done = subprocess.run([sys.executable, "-m", "qwen_embed", "--version"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == f"qwen-embed {__version__}"


def test_embed_arguments_to_jsonl(tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qwen_embed import Embedder

    assert main(["embed", "What is GGUF?", "second", "--model-path", str(tiny_model), "--prompt", "query"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["index"] for r in rows] == [0, 1]
    with Embedder(tiny_model, n_threads=2) as emb:
        want = emb.encode_queries(["What is GGUF?", "second"])
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), want, atol=5e-4)


def test_embed_file_to_npy_with_dim(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("first line\nsecond line\n\nfourth after a blank\n", encoding="utf-8")
    out = tmp_path / "vectors.npy"
    args = ["embed", "-f", str(texts), "--model-path", str(tiny_model), "--dim", "32", "-o", str(out)]
    assert main(args) == 0
    vectors = np.load(out)
    assert vectors.shape == (4, 32)  # one row per line, the blank line included
    assert "4 vectors of 32 dims" in capsys.readouterr().err


def test_embed_stdin_and_long_text(tiny_model: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    long_line = "word " * 400
    done = subprocess.run(
        [sys.executable, "-m", "qwen_embed", "embed", "--model-path", str(tiny_model), "--max-length", "64"],
        input=f"short\n{long_line}\n",
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 1 and "InputTooLongError" in done.stderr and "Traceback" not in done.stderr
    command = [sys.executable, "-m", "qwen_embed", "embed", "--model-path", str(tiny_model), "--max-length", "64"]
    done = subprocess.run(
        [*command, "--long-text", "chunk", "-f", "-"],
        input=f"short\n{long_line}\n",
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2


def test_embed_bad_output_name(tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", "x", "--model-path", str(tiny_model), "-o", "vectors.csv"]) == 1
    assert "must end in .npy or .jsonl" in capsys.readouterr().err


def test_doctor_runs_the_whole_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in ("llama.cpp", "threads", "load", "tokenize + EOS", "batch", "Matryoshka dim", "quantized load"):
        assert f"[ok] {name}:" in out, out
    assert "build features:" in out and "workarounds:" in out and "checks passed" in out


def test_doctor_fails_loudly(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from qwen_embed import Embedder

    def broken(self: Embedder, text: str, **kwargs: object) -> np.ndarray:  # failure injection
        return np.array([1, 2, 3], dtype=np.int32)

    monkeypatch.setattr(Embedder, "tokenize", broken)
    assert main(["doctor"]) == 1
    assert "[FAIL] tokenize + EOS" in capsys.readouterr().out


def test_prompts_lists_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompts"]) == 0
    assert "code_search" in capsys.readouterr().out


def test_embed_on_the_torch_engine(tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["embed", "hello", "--model-path", str(tiny_model), "--backend", "torch", "--dtype", "float32"]
    assert main(args) == 0
    torch_row = json.loads(capsys.readouterr().out)["embedding"]
    assert main(["embed", "hello", "--model-path", str(tiny_model)]) == 0
    llama_row = json.loads(capsys.readouterr().out)["embedding"]
    assert float(np.dot(torch_row, llama_row)) >= 0.99999  # unit vectors from two engines
