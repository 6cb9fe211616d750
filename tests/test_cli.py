"""The ``qwen-embed`` command line, run in-process and as ``python -m qwen_embed``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_embed import __version__
from qwen_embed.cli import main

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
