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


# ---------------------------------------------------------------------- embed: hardening (issue 12) and corpus jobs


def _cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}


def test_embed_output_is_checked_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("x")
    missing_model = str(tmp_path / "no-such-model.gguf")  # never reached: the output fails first
    for output, message in [
        (tmp_path / "a-file" / "v.npy", "does not exist"),
        (tmp_path / "nowhere" / "v.npy", "does not exist"),
        (tmp_path / "v.csv", "must end in .npy or .jsonl"),
    ]:
        assert main(["embed", "x", "--model-path", missing_model, "-o", str(output)]) == 1
        err = capsys.readouterr().err
        assert message in err and "no-such-model" not in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == [tmp_path / "a-file"]


def test_embed_uppercase_npy_and_bom(tiny_model: Path, tmp_path: Path) -> None:
    texts = tmp_path / "bom.txt"
    texts.write_bytes(b"\xef\xbb\xbfhello\r\nworld\n")
    out = tmp_path / "OUT.NPY"
    assert main(["embed", "-f", str(texts), "--model-path", str(tiny_model), "-o", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUT.NPY", "bom.txt"]  # no OUT.NPY.npy, no temp file
    from qwen_embed import Embedder

    with Embedder(tiny_model, n_threads=2) as emb:
        np.testing.assert_allclose(np.load(out), emb.encode(["hello", "world"]), atol=5e-4)  # BOM stripped


def test_embed_file_errors_are_one_line(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xc3\x28 broken\n")
    cases = [
        (str(tmp_path / "missing.txt"), "SourceNotFoundError: corpus file not found"),
        (str(tmp_path), "is a folder"),
        (str(bad), "line 2 is not valid UTF-8"),
    ]
    for path, message in cases:
        assert main(["embed", "-f", path, "--model-path", str(tiny_model)]) == 1
        captured = capsys.readouterr()
        assert message in captured.err and captured.err.count("\n") == 1 and "Traceback" not in captured.err
        assert captured.out == ""


def test_embed_jsonl_file_reads_the_text_field(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "c.jsonl"
    source.write_text('{"body": "first"}\n{"body": "second"}\n')
    assert main(["embed", "-f", str(source), "--text-field", "body", "--model-path", str(tiny_model)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    from qwen_embed import Embedder

    with Embedder(tiny_model, n_threads=2) as emb:
        np.testing.assert_allclose([r["embedding"] for r in rows], emb.encode(["first", "second"]), atol=5e-4)


def test_embed_broken_pipe_is_quiet(tiny_model: Path, tmp_path: Path) -> None:
    texts = tmp_path / "many.txt"
    texts.write_text("".join(f"line {i}\n" for i in range(3000)))  # ~2 MB of JSON Lines, more than a pipe holds
    command = [sys.executable, "-m", "qwen_embed", "embed", "-f", str(texts), "--model-path", str(tiny_model)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_cli_env())
    assert process.stdout is not None and process.stderr is not None
    assert json.loads(process.stdout.readline())["index"] == 0  # then the reader goes away, as `| head -1` does
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert err == ""


def test_embed_ctrl_c_keeps_the_previous_file(tiny_model: Path, tmp_path: Path) -> None:
    """SIGINT while the command reads its input: exit 130, one line, the old file intact, no temp file."""
    import signal
    import time

    out = tmp_path / "vectors.jsonl"
    out.write_text("previous results\n")
    command = [sys.executable, "-m", "qwen_embed", "embed", "-f", "-", "--model-path", str(tiny_model), "-o", str(out)]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_cli_env()
    )
    assert process.stdin is not None
    process.stdin.write(b"a text\n")
    process.stdin.flush()
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".vectors.jsonl.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.02)  # the temp file exists once the output is checked, before input is read
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert (
        err.decode().strip()
        == f"qwen-embed embed: interrupted; {out} was not written (an earlier file there is unchanged)"
    )
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.jsonl"]


def test_embed_interrupted_while_embedding(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from qwen_embed import Embedder

    def interrupted(self: Embedder, texts: object, **options: object) -> np.ndarray:  # failure injection
        raise KeyboardInterrupt

    monkeypatch.setattr(Embedder, "encode_documents", interrupted)
    out = tmp_path / "v.npy"
    np.save(out, np.ones((1, 3), dtype=np.float32))
    assert main(["embed", "x", "--model-path", str(tiny_model), "-o", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert np.load(out).tolist() == [[1.0, 1.0, 1.0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npy"]


def test_embed_to_a_folder_is_a_resumable_corpus_job(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps({"doc": f"d{i}", "body": f"passage {i}"}) + "\n" for i in range(250)))
    out = tmp_path / "vectors"
    args = ["embed", "-f", str(source), "-o", f"{out}/", "--text-field", "body", "--id-field", "doc"]
    args += ["--model-path", str(tiny_model), "--shard-rows", "100", "--npy", str(tmp_path / "m.npy")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "250 rows of 64 dims in 3 shards" in err and "(250 embedded now, 0 kept)" in err
    assert "part-000002.parquet: rows 200-249" in err  # a log line per shard when there is no progress bar
    table = pq.read_table(out)
    assert table["id"].to_pylist() == [f"d{i}" for i in range(250)]
    assert np.load(tmp_path / "m.npy").shape == (250, 64)
    assert main(args) == 0
    assert "(0 embedded now, 250 kept)" in capsys.readouterr().err
    assert main([*args, "--dim", "32"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qwen-embed embed: ResumeMismatchError:") and "dim: 64 then, 32 now" in err
    assert main([*args, "--dim", "32", "--no-resume"]) == 0
    assert pq.read_table(out).schema.field("embedding").type.list_size == 32


def test_embed_corpus_only_options_need_a_folder(tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", "x", "--model-path", str(tiny_model), "--id-field", "id"]) == 1
    assert "give -o a folder" in capsys.readouterr().err


def test_embed_corpus_disk_full_is_one_line(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    pq = pytest.importorskip("pyarrow.parquet")

    def write_batch(self: object, *args: object, **kwargs: object) -> None:  # failure injection: ENOSPC
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", write_batch)
    out = tmp_path / "vectors"
    assert main(["embed", "a", "b", "--model-path", str(tiny_model), "-o", f"{out}/", "--no-progress"]) == 1
    err = capsys.readouterr().err  # the log lines of the job (no progress bar), then one line for the error
    last = err.splitlines()[-1]
    assert last.startswith(f"qwen-embed embed: CorpusWriteError: cannot write {out / 'part-000000.parquet'}: No space")
    assert "Traceback" not in err and all(line.startswith("qwen-embed embed: ") for line in err.splitlines())
    assert list(out.iterdir()) == []  # a first run that finished nothing leaves nothing


def test_embed_corpus_refuses_duplicate_ids(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pyarrow")
    source = tmp_path / "c.jsonl"
    source.write_text('{"id": "x", "text": "one"}\n{"id": "y", "text": "two"}\n{"id": "x", "text": "three"}\n')
    args = ["embed", "-f", str(source), "--id-field", "id", "--model-path", str(tiny_model), "-o", f"{tmp_path}/v/"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("qwen-embed embed: DuplicateIdError:") and "id 'x' appears more than once: rows 0 and 2" in err
    )
    assert main([*args, "--allow-duplicate-ids"]) == 0
    assert "3 rows of 64 dims" in capsys.readouterr().err


# ---------------------------------------------------------------------- rerank: the hardening embed has (issue 21)


@pytest.fixture(scope="module")
def reranker_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qwen_embed.testing import make_reranker_model

    return make_reranker_model(tmp_path_factory.mktemp("reranker") / "reranker.gguf")


def test_rerank_file_errors_are_one_line(
    reranker_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xc3\x28 broken\n")
    cases = [
        (str(tmp_path / "missing.txt"), "SourceNotFoundError: corpus file not found"),
        (str(tmp_path), "is a folder"),
        (str(bad), "line 2 is not valid UTF-8"),
    ]
    for path, message in cases:
        assert main(["rerank", "q", "-f", path, "--model-path", str(reranker_file)]) == 1
        captured = capsys.readouterr()
        assert captured.err.startswith("qwen-embed rerank: ") and message in captured.err, captured.err
        assert captured.err.count("\n") == 1 and "Traceback" not in captured.err and captured.out == ""


def test_rerank_file_bom_and_blank_lines(
    reranker_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "docs.txt"
    listing.write_bytes("\ufeffA file format.\r\n\n   \nA city.\n".encode())
    common = ["--model-path", str(reranker_file), "--threads", "2"]
    assert main(["rerank", "What is GGUF?", "-f", str(listing), *common]) == 0
    captured = capsys.readouterr()
    from_file = {row["document"]: row["score"] for row in map(json.loads, captured.out.splitlines())}
    assert sorted(from_file) == ["A city.", "A file format."]  # no BOM, no blank documents
    assert captured.err == f"qwen-embed rerank: skipped 2 blank lines of {listing} (not documents)\n"
    assert main(["rerank", "What is GGUF?", "A file format.", "\ufeffA file format.", *common]) == 0
    from_args = {row["document"]: row["score"] for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert from_args["A file format."] == from_file["A file format."]
    assert from_args["\ufeffA file format."] != from_file["A file format."]  # the twin: a kept BOM changes the score


@pytest.mark.parametrize("query", ["", " \t "])
def test_rerank_refuses_an_empty_query(tmp_path: Path, query: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:  # argparse's usage error, before any model is loaded
        main(["rerank", query, "a document", "--model-path", str(tmp_path / "never-loaded.gguf")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "qwen-embed rerank: error: argument query: the query is empty; give the text to rank the documents" in err
    assert "never-loaded" not in err


def test_rerank_broken_pipe_is_quiet(reranker_file: Path, tmp_path: Path) -> None:
    listing = tmp_path / "many.txt"
    listing.write_text("".join(f"document number {i} " * 6 + "\n" for i in range(800)))  # ~150 kB of output
    command = [sys.executable, "-m", "qwen_embed", "rerank", "a query", "-f", str(listing)]
    command += ["--model-path", str(reranker_file), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_cli_env())
    assert process.stdout is not None and process.stderr is not None
    assert json.loads(process.stdout.readline())["rank"] == 1  # then the reader goes away, as `| head -1` does
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert err == ""


CTRL_C_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s: %(message)s")  # llama.cpp's log lines
from qwen_embed.interfaces.cli import main
sys.exit(main(["embed", "-f", sys.argv[1], "--model-path", sys.argv[2], "-o", sys.argv[3], "--no-progress"]))
"""


def _native_lines(stream: object) -> object:
    for line in stream:  # type: ignore[attr-defined]
        if line.startswith("qwen_embed.llama_cpp: "):
            yield line


def test_embed_ctrl_c_in_llama_cpps_log_callback_is_never_lost(tiny_model: Path, tmp_path: Path) -> None:
    """SIGINT right after the k-th native log line (k random, through loading, context creation and the first
    decodes): every run exits 130 with the earlier file intact. Before the fix, 11 of 12 runs ended with exit 0 and
    a replaced file ("Exception ignored on calling ctypes callback": ctypes swallowed the KeyboardInterrupt)."""
    import random
    import signal

    few, many = tmp_path / "few.txt", tmp_path / "many.txt"
    few.write_text("one text\nanother\n")
    many.write_text("".join(f"text number {i} about vectors\n" for i in range(5_000)))  # runs far past the signal
    out = tmp_path / "vectors.jsonl"
    command = [sys.executable, "-c", CTRL_C_SCRIPT]
    clean = subprocess.run([*command, str(few), str(tiny_model), str(out)], capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    assert len(out.read_text().splitlines()) == 2  # the twin: a run that is not interrupted replaces the file
    lines = clean.stderr.splitlines()
    decoding = next(i for i, line in enumerate(lines) if "set_abort_callback" in line)  # the first decode starts
    markers = len(list(_native_lines(lines[:decoding]))) + 10  # loading, the context, and ten decodes
    rng = random.Random(21)
    outcomes = []
    for _ in range(12):
        out.write_text("previous results\n")
        k = rng.randint(1, markers)
        process = subprocess.Popen(
            [*command, str(many), str(tiny_model), str(out)], stderr=subprocess.PIPE, text=True, env=_cli_env()
        )
        assert process.stderr is not None
        for seen, _line in enumerate(_native_lines(process.stderr), start=1):
            if seen == k:
                process.send_signal(signal.SIGINT)
                break
        rest = ""
        for line in process.stderr:
            rest += line
            if "Exception ignored" in line:  # the interrupt is lost: no need to wait for the whole run
                process.kill()
                break
        outcomes.append((k, process.wait(timeout=300), out.read_text() == "previous results\n", rest[-300:]))
        process.stderr.close()
    assert [o[1:3] for o in outcomes] == [(130, True)] * 12, outcomes
    assert all("interrupted; " in o[3] and "Exception ignored" not in o[3] for o in outcomes), outcomes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.txt", "many.txt", "vectors.jsonl"]
