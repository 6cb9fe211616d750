"""Examples run on a generated model so they cannot rot."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from .hub_server import HubServer, closed_port_url

ROOT = Path(__file__).resolve().parents[1]


def _run_quickstart() -> None:
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    assert done.value.code == 0


def test_quickstart_runs(tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["quickstart.py", str(tiny_model)])
    _run_quickstart()
    out = capsys.readouterr().out
    assert "queries (2, 64), documents (3, 64), dtype float32" in out
    assert "What is GGUF?" in out


def test_quickstart_demo_builds_its_own_model(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["quickstart.py", "--demo"])
    _run_quickstart()
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
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"  # huggingface_hub 2.x would ask huggingface.co for a registry
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


@pytest.mark.parametrize("network", ["unreachable", "stalled", "offline"])
def test_readme_main_command_without_the_hub_ends_with_one_line(hub: HubServer, tmp_path: Path, network: str) -> None:
    """No Hub (a closed port, a Hub that never answers, HF_HUB_OFFLINE=1) and an empty cache: one line, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "QWEN_EMBED_"))}
    env.update(
        HF_HOME=str(tmp_path / "home"),
        HF_HUB_CACHE=str(tmp_path / "hub"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_ETAG_TIMEOUT="1",
        HF_HUB_DOWNLOAD_TIMEOUT="1",
    )
    if network == "unreachable":
        env["HF_ENDPOINT"] = closed_port_url()
    elif network == "stalled":
        hub.inject("", stall=True, times=100)  # accepts every connection, never answers
        env["HF_ENDPOINT"] = hub.url
    else:
        env.update(HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="1")
    done = subprocess.run(  # the timeout only guards against a hang; the run ends long before
        [sys.executable, str(ROOT / "examples" / "quickstart.py")], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # no traceback, no retry chatter
    line = lines[0]
    assert line.startswith("quickstart: ") and "Qwen/Qwen3-Embedding-0.6B-GGUF" in line
    assert "local .gguf file" in line and "`qwen-embed demo`" in line
    if network == "offline":
        assert "HF_HUB_OFFLINE is set" in line and "not in the cache" in line
    else:
        assert f"the Hub at {env['HF_ENDPOINT']} after 3 failed attempt(s)" in line and "HF_HUB_OFFLINE=1" in line
        assert ("ConnectError" if network == "unreachable" else "ReadTimeout") in line
    if network != "unreachable":
        assert not hub.requests("GET", "/resolve/")  # nothing was downloaded


def test_long_documents_example(
    tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["long_documents.py", str(tiny_model)])
    runpy.run_path(str(ROOT / "examples" / "long_documents.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "Running llama.cpp on a laptop: " in out and "7 sections" in out  # the title heading and six parts
    assert "encode(long_text='chunk') shape: (3, 64)" in out
    assert "best chunk: " in out


def test_faiss_example(tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["faiss_search.py", str(tiny_model)])
    runpy.run_path(str(ROOT / "examples" / "faiss_search.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "query 0:" in out and "index holds 5 vectors of 64 dims" in out


def test_openai_client_example_against_qwen_embed_serve(tiny_model: Path, tmp_path: Path) -> None:
    """`qwen-embed serve` as a real process, the example as another."""
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    server = subprocess.Popen(
        [sys.executable, "-m", "qwen_embed", "serve", "--model-path", str(tiny_model), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(150):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"server did not come up: {server.stderr.read() if server.poll() is not None else ''}")
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "openai_client.py"), f"http://127.0.0.1:{port}/v1"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        assert "2 documents, 64 dims" in done.stdout and "dimensions=32 -> 32 values" in done.stdout
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_quickstart_notebook_executes(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("QWEN_EMBED_MODEL", str(tiny_model))
    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(
        out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert "(2, 64) (3, 64) float32" in outputs and "Instruct: " in outputs and "chunks in" in outputs
