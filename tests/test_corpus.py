"""Streaming (encode_iter) and resumable corpus jobs (qwen_embed.corpus), on real tiny models."""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from qwen_embed import ConfigurationError, Embedder, InputTooLongError, InputTypeError
from qwen_embed.corpus import (
    CorpusSourceError,
    CorpusWriteError,
    DuplicateIdError,
    ResumeMismatchError,
    SourceNotFoundError,
    embed_corpus,
    open_source,
)
from qwen_embed.corpus.ids import IdRegistry

pq = pytest.importorskip("pyarrow.parquet")

ATOL = 5e-4  # vectors of different packed decodes differ by ~1e-4 on llama.cpp
ROOT = Path(__file__).resolve().parents[1]


def corpus_texts(n: int) -> list[str]:
    rng = random.Random(7)
    words = ["gguf", "vector", "llama", "query", "passage", "token", "model", "search", "corpus", "shard"]
    return [f"{i} " + " ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) for i in range(n)]


def read_table(folder: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(folder)
    dim = table.schema.field("embedding").type.list_size
    return {
        "id": np.array(table["id"].to_pylist()),
        "embedding": table["embedding"].combine_chunks().values.to_numpy().reshape(-1, dim),
        "n_tokens": np.array(table["n_tokens"].to_pylist()),
    }


# ---------------------------------------------------------------------- encode_iter


def test_encode_iter_equals_encode_in_order(tiny_embedder: Embedder) -> None:
    texts = corpus_texts(700)
    blocks = list(tiny_embedder.encode_iter((t for t in texts), chunk_size=256))
    assert [len(b) for b in blocks] == [256, 256, 188]
    assert all(b.dtype == np.float32 for b in blocks)
    np.testing.assert_allclose(np.concatenate(blocks), tiny_embedder.encode(texts), atol=ATOL)


@pytest.mark.parametrize(
    ("side", "method"), [("query", "encode_queries"), ("document", "encode_documents"), (None, "encode")]
)
def test_encode_iter_sides_match_the_methods(tiny_embedder: Embedder, side: str | None, method: str) -> None:
    texts = corpus_texts(40)
    got = np.concatenate(list(tiny_embedder.encode_iter(texts, side=side, chunk_size=16, dim=32)))
    want = getattr(tiny_embedder, method)(texts, dim=32)
    np.testing.assert_allclose(got, want, atol=ATOL)
    named = np.concatenate(list(tiny_embedder.encode_iter(texts, side="query", prompt_name="sts")))
    np.testing.assert_allclose(named, tiny_embedder.encode_queries(texts, task="sts"), atol=ATOL)


def test_encode_iter_checks_options_before_reading(tiny_embedder: Embedder) -> None:
    def never() -> object:
        raise AssertionError("read")
        yield  # pragma: no cover

    with pytest.raises(ConfigurationError, match="side='both'"):
        tiny_embedder.encode_iter(never(), side="both")
    with pytest.raises(ConfigurationError, match="chunk_size"):
        tiny_embedder.encode_iter(never(), chunk_size=0)
    with pytest.raises(InputTypeError, match="iterable of str"):
        tiny_embedder.encode_iter("one text")
    assert list(tiny_embedder.encode_iter([])) == []


def test_encode_iter_errors_name_the_position_in_the_stream(tiny_model: Path) -> None:
    with Embedder(tiny_model, n_threads=2, max_length=64) as emb:
        with pytest.raises(InputTypeError, match="#25 is int"):
            list(emb.encode_iter([*["ok"] * 25, 3], chunk_size=10))
        with pytest.raises(InputTooLongError, match="#12") as info:
            list(emb.encode_iter([*["short"] * 12, "word " * 400], chunk_size=5))
    assert info.value.index == 12


RSS_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from qwen_embed import Embedder
    from qwen_embed.testing import ModelShape, make_model

    path = make_model(sys.argv[1], shape=ModelShape(n_layer=1, n_embd=32, n_head=2, n_head_kv=1, head_dim=16, n_ff=64))
    emb = Embedder(path, n_threads=2, batch_size=256, batch_tokens=4096)
    n = int(sys.argv[2])

    def texts():
        for i in range(n):
            yield "abcdefghijklmnopqrstuvwxyz"[i % 26]

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rows, early = 0, None
    for block in emb.encode_iter(texts(), chunk_size=4096):
        rows += len(block)
        if early is None and rows >= n // 10:
            early = peak_mb()
    print(rows, early, peak_mb())
    """
)


@pytest.mark.slow
def test_encode_iter_a_million_texts_in_flat_memory(tmp_path: Path) -> None:
    """1,000,000 texts from a generator: peak RSS after 10% of them and at the end stay together."""
    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(tmp_path / "micro.gguf"), "1000000"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    rows, early, final = done.stdout.split()
    growth = float(final) - float(early)
    print(f"encode_iter, 1M texts: peak RSS {float(early):.0f} MB at 100k, {float(final):.0f} MB at 1M")
    assert int(rows) == 1_000_000
    # Holding every vector would add 128 MB (1M x 32 float32), every token array far more.
    assert growth < 40, f"peak RSS grew {growth:.0f} MB between 100k and 1M texts"


# ---------------------------------------------------------------------- sources


def write_sources(folder: Path, texts: list[str]) -> dict[str, Path]:
    import pyarrow as pa

    paths = {}
    paths["txt"] = folder / "c.txt"
    paths["txt"].write_bytes(b"\xef\xbb\xbf" + "\n".join(texts).encode("utf-8") + b"\n")
    paths["jsonl"] = folder / "c.jsonl"
    paths["jsonl"].write_text("".join(json.dumps({"id": f"d{i}", "body": t}) + "\n" for i, t in enumerate(texts)))
    paths["csv"] = folder / "c.csv"
    with open(paths["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "body"])
        writer.writerows([f"d{i}", t] for i, t in enumerate(texts))
    paths["parquet"] = folder / "c.parquet"
    table = pa.table({"id": [f"d{i}" for i in range(len(texts))], "body": texts})
    pq.write_table(table, paths["parquet"], row_group_size=50)
    return paths


@pytest.mark.parametrize("kind", ["txt", "jsonl", "csv", "parquet", "list", "dicts"])
def test_every_source_format(tiny_embedder: Embedder, tmp_path: Path, kind: str) -> None:
    texts = [*corpus_texts(230), 'quote " and, comma', "multi\tfield"]
    paths = write_sources(tmp_path, texts)
    fields: dict[str, object] = {"text_field": "body", "id_field": "id"}
    source: object
    if kind == "list":
        source, fields = texts, {}
    elif kind == "dicts":
        source = ({"id": f"d{i}", "body": t} for i, t in enumerate(texts))
    elif kind == "txt":
        source, fields = paths["txt"], {}
    else:
        source = paths[kind]
    result = embed_corpus(source, tmp_path / "out", embedder=tiny_embedder, shard_rows=100, chunk_size=40, **fields)
    assert (result.rows, result.shards, result.embedded_rows) == (len(texts), 3, len(texts))
    got = read_table(tmp_path / "out")
    want_ids = list(range(len(texts))) if not fields else [f"d{i}" for i in range(len(texts))]
    assert got["id"].tolist() == want_ids
    np.testing.assert_allclose(got["embedding"], tiny_embedder.encode_documents(texts), atol=ATOL)
    assert got["n_tokens"].tolist() == [tiny_embedder.count_tokens(t) for t in texts]


def test_source_errors_name_the_line(tiny_embedder: Embedder, tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(CorpusSourceError, match="line 3 is not valid UTF-8"):
        embed_corpus(bad, tmp_path / "o1", embedder=tiny_embedder)
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(CorpusSourceError, match=r"line 2 has no 'text' field \(its fields: 'txt'\)"):
        embed_corpus(jsonl, tmp_path / "o2", embedder=tiny_embedder)
    jsonl.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(CorpusSourceError, match="line 2 is not valid JSON"):
        embed_corpus(jsonl, tmp_path / "o3", embedder=tiny_embedder)
    with pytest.raises(SourceNotFoundError, match="not found"):
        embed_corpus(tmp_path / "missing.jsonl", tmp_path / "o4", embedder=tiny_embedder)
    (tmp_path / "x.docx").write_text("x")
    with pytest.raises(CorpusSourceError, match=r"unknown corpus format '\.docx'"):
        embed_corpus(tmp_path / "x.docx", tmp_path / "o5", embedder=tiny_embedder)
    table = write_sources(tmp_path, ["a"])["csv"]
    with pytest.raises(CorpusSourceError, match="has no column 'text'; its header is 'id', 'body'"):
        embed_corpus(table, tmp_path / "o6", embedder=tiny_embedder)
    with pytest.raises(InputTooLongError, match=r"row 1 \(id 'b'\) is .* tokens"):
        records = [{"id": "a", "text": "short"}, {"id": "b", "text": "word " * 9000}]
        embed_corpus(records, tmp_path / "o7", embedder=tiny_embedder, id_field="id", long_text="error")


# ---------------------------------------------------------------------- resume, mismatch, corruption


def test_resume_refuses_other_settings_or_model(tiny_embedder: Embedder, model_factory, tmp_path: Path) -> None:
    texts = corpus_texts(120)
    out = tmp_path / "out"
    embed_corpus(texts, out, embedder=tiny_embedder, shard_rows=50)
    with pytest.raises(ResumeMismatchError, match=r"dim: 64 then, 32 now.*--no-resume"):
        embed_corpus(texts, out, embedder=tiny_embedder, shard_rows=50, dim=32)
    with pytest.raises(ResumeMismatchError, match="side: 'document' then, 'query' now"):
        embed_corpus(texts, out, embedder=tiny_embedder, shard_rows=50, side="query")
    with Embedder(model_factory(seed=1), n_threads=2) as other:
        with pytest.raises(ResumeMismatchError, match=r"model: .*sha256"):
            embed_corpus(texts, out, embedder=other, shard_rows=50)
        result = embed_corpus(texts, out, embedder=other, shard_rows=50, resume=False)
        assert result.embedded_rows == 120
        np.testing.assert_allclose(read_table(out)["embedding"], other.encode_documents(texts), atol=ATOL)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["complete"] and manifest["rows_done"] == 120 and len(manifest["model"]["sha256"]) == 64
    assert manifest["settings"]["dim"] == 64 and manifest["library_version"]


def test_a_finished_job_is_reused_and_a_grown_source_only_adds(tiny_embedder: Embedder, tmp_path: Path) -> None:
    texts = corpus_texts(130)
    out = tmp_path / "out"
    embed_corpus(texts[:110], out, embedder=tiny_embedder, shard_rows=50)
    again = embed_corpus(texts[:110], out, embedder=tiny_embedder, shard_rows=50)
    assert (again.embedded_rows, again.reused_rows) == (0, 110)
    grown = embed_corpus(texts, out, embedder=tiny_embedder, shard_rows=50)
    # The short last shard is written again: its 10 earlier rows found by text, the 20 new ones embedded.
    assert (grown.embedded_rows, grown.reused_rows, grown.cached_rows) == (20, 110, 10)
    changed = [*texts[:60], "an edited row", *texts[61:]]
    edited = embed_corpus(changed, out, embedder=tiny_embedder, shard_rows=50)
    assert (edited.embedded_rows, edited.reused_rows, edited.cached_rows) == (1, 129, 49)
    shrunk = embed_corpus(changed[:40], out, embedder=tiny_embedder, shard_rows=50)
    assert (shrunk.embedded_rows, shrunk.cached_rows) == (0, 40)
    assert shrunk.rows == 40 and sorted(p.name for p in out.glob("*.parquet")) == ["part-000000.parquet"]
    assert not (out / "_cache").exists()  # the cache lives in the shards once a run finishes
    np.testing.assert_allclose(read_table(out)["embedding"], tiny_embedder.encode_documents(changed[:40]), atol=ATOL)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "replace"])
def test_a_damaged_shard_is_detected_and_redone(tiny_embedder: Embedder, tmp_path: Path, damage: str) -> None:
    texts = corpus_texts(150)
    out = tmp_path / "out"
    embed_corpus(texts, out, embedder=tiny_embedder, shard_rows=50)
    clean = read_table(out)
    shard = out / "part-000001.parquet"
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # same size, one byte changed inside the vectors
        middle = len(data) // 2
        shard.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    elif damage == "delete":
        shard.unlink()
    else:  # a valid Parquet file of other rows, by hand
        pq.write_table(pq.read_table(out / "part-000000.parquet"), shard)
    result = embed_corpus(texts, out, embedder=tiny_embedder, shard_rows=50)
    assert (result.embedded_rows, result.reused_rows) == (50, 100)
    again = read_table(out)
    assert again["id"].tolist() == clean["id"].tolist()
    np.testing.assert_allclose(again["embedding"], clean["embedding"], atol=ATOL)


def test_chunked_long_texts_record_their_spans(tiny_model: Path, tmp_path: Path) -> None:
    long_doc = "# Title\n\n" + "\n\n".join(f"Paragraph {i}. " + "words and more words " * 20 for i in range(6))
    texts = ["short one", long_doc, "short two"]
    with Embedder(tiny_model, n_threads=2, max_length=128) as emb:
        embed_corpus(texts, tmp_path / "out", embedder=emb, long_text="chunk")
        want = emb.encode_documents(texts, long_text="chunk")
    table = pq.read_table(tmp_path / "out")
    chunks = table["chunks"].to_pylist()
    assert chunks[0] is None and chunks[2] is None and len(chunks[1]) > 1
    assert chunks[1][0]["start"] == 0 and chunks[1][-1]["end"] <= len(long_doc)
    got = table["embedding"].combine_chunks().values.to_numpy().reshape(3, -1)
    np.testing.assert_allclose(got, want, atol=ATOL)


def test_npy_export_and_output_checks(tiny_embedder: Embedder, tmp_path: Path) -> None:
    texts = corpus_texts(90)
    result = embed_corpus(texts, tmp_path / "out", embedder=tiny_embedder, shard_rows=40, npy=tmp_path / "m.NPY")
    assert result.npy == tmp_path / "m.NPY"
    np.testing.assert_allclose(np.load(tmp_path / "m.NPY"), read_table(tmp_path / "out")["embedding"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="is a file"):
        embed_corpus(texts, tmp_path / "file", embedder=tiny_embedder)
    with pytest.raises(ConfigurationError, match=r"must name a \.npy file"):
        embed_corpus(texts, tmp_path / "o", embedder=tiny_embedder, npy=tmp_path / "m.csv")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "part-000000.parquet").write_bytes(b"not ours")
    with pytest.raises(ConfigurationError, match=r"no _manifest\.json"):
        embed_corpus(texts, foreign, embedder=tiny_embedder)


# ---------------------------------------------------------------------- SIGKILL + resume

KILL_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from qwen_embed import Embedder
    from qwen_embed.corpus import embed_corpus

    def rows():  # a slow reader (2 ms a row), so that the kills land mid-run even on a fast machine
        with open(sys.argv[2], encoding="utf-8") as lines:
            for line in lines:
                time.sleep(0.002)
                yield json.loads(line)

    with Embedder(sys.argv[1], n_threads=1) as emb:
        embed_corpus(rows(), sys.argv[3], embedder=emb, text_field="body", id_field="id",
                     shard_rows=150, chunk_size=50)
    print("done")
    """
)


def test_sigkill_at_random_points_then_resume_equals_a_clean_run(tiny_model: Path, tmp_path: Path) -> None:
    texts = corpus_texts(1200)
    source = write_sources(tmp_path, texts)["jsonl"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    command = [sys.executable, "-c", KILL_SCRIPT, str(tiny_model), str(source)]
    done = subprocess.run([*command, str(clean)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rng = random.Random(13)
    manifest = killed / "_manifest.json"
    kills, partial = 0, []
    for _ in range(4):  # each run is killed at a random moment after a random number of finished shards
        start = _rows_done(manifest)
        target = start + rng.choice([0, 150, 300])
        process = subprocess.Popen([*command, str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if _rows_done(manifest) >= target:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=60)
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL
        partial.append(_rows_done(manifest))
    print(f"SIGKILL {kills} times; rows done at each kill: {partial}")
    assert kills >= 2 and any(0 < rows < 1200 for rows in partial)
    done = subprocess.run([*command, str(killed)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    a, b = read_table(clean), read_table(killed)
    assert b["id"].tolist() == a["id"].tolist() == [f"d{i}" for i in range(1200)]  # no gap, no duplicate
    assert b["n_tokens"].tolist() == a["n_tokens"].tolist()
    np.testing.assert_allclose(b["embedding"], a["embedding"], atol=ATOL)
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in clean.iterdir())


def _rows_done(manifest: Path) -> int:
    return int(json.loads(manifest.read_text())["rows_done"]) if manifest.exists() else 0


def test_import_qwen_embed_corpus_imports_no_pyarrow() -> None:
    code = "import sys, qwen_embed, qwen_embed.corpus; assert 'pyarrow' not in sys.modules, 'pyarrow imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------- hardening (issue 21): sources


def test_an_unterminated_csv_quote_names_its_line(tmp_path: Path) -> None:
    table = tmp_path / "c.csv"
    table.write_text('id,text\na,first\nb,"opened and never closed\nc,third\nd,fourth\n', encoding="utf-8")
    with pytest.raises(CorpusSourceError, match=r"c\.csv: line 3: a quoted field starts there and is never closed"):
        list(open_source(table, id_field="id").rows())
    table.write_text('id,text\na,first\nb,"closed over\ntwo lines"\nc,third\n', encoding="utf-8")  # the twin
    assert list(open_source(table, id_field="id").rows()) == [
        ("a", "first"),
        ("b", "closed over\ntwo lines"),
        ("c", "third"),
    ]
    tsv = tmp_path / "c.tsv"
    tsv.write_text('id\ttext\na\tfirst\nb\t"never closed\n', encoding="utf-8")
    with pytest.raises(CorpusSourceError, match=r"c\.tsv: line 3: a quoted field starts there"):
        list(open_source(tsv, id_field="id").rows())


def test_blank_jsonl_lines_are_skipped_and_reported_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "c.jsonl"
    source.write_text('\n{"text": "a"}\n  \n{"text": "b"}\n\n{"text": "c"}\n\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="qwen_embed.corpus"):
        rows = list(open_source(source).rows())
    assert [text for _, text in rows] == ["a", "b", "c"]
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("qwen_embed.corpus")]
    assert warnings == [f"{source}: skipped 4 blank lines (the first: line 1); blank lines are not rows"]
    caplog.clear()
    source.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")  # the twin: nothing to report
    with caplog.at_level(logging.WARNING, logger="qwen_embed.corpus"):
        assert len(list(open_source(source).rows())) == 2
    assert caplog.records == []


def _first_repeat(ids: list[str]) -> tuple[int, int] | None:
    seen: dict[str, int] = {}
    for row, record_id in enumerate(ids):
        if record_id in seen:
            return seen[record_id], row
        seen[record_id] = row
    return None


def test_id_registry_finds_the_first_repeat_like_a_dict() -> None:
    rng = random.Random(3)
    for trial in range(40):
        n = rng.choice([1, 5, 700, 3000])
        ids = [f"id-{rng.randrange(4 * n if trial % 2 else 10**9)}" for _ in range(n)]
        registry = IdRegistry("ids")
        want = _first_repeat(ids)
        found = None
        try:
            for start in range(0, n, 97):  # batches of another size than the reader's
                registry.add(ids[start : start + 97])
        except DuplicateIdError as error:
            found = tuple(int(x) for x in re.search(r"rows (\d+) and (\d+)", str(error)).groups())  # type: ignore[union-attr]
        assert found == want, (trial, n)
    registry = IdRegistry("ids")
    registry.add([str(i) for i in range(10_000)])
    assert registry.nbytes == 16 * 10_000  # a hash and a row number per id


def test_duplicate_ids_are_refused_with_both_rows(tiny_embedder: Embedder, tmp_path: Path) -> None:
    source = tmp_path / "c.jsonl"
    ids = [f"d{i}" for i in range(2600)]
    ids[2500] = "d7"
    source.write_text("".join(json.dumps({"id": i, "text": f"t{n}"}) + "\n" for n, i in enumerate(ids)))
    with pytest.raises(DuplicateIdError, match=r"c\.jsonl: id 'd7' appears more than once: rows 7 and 2500 "):
        list(open_source(source, id_field="id", unique_ids=True).rows())
    assert len(list(open_source(source, id_field="id").rows())) == 2600  # not asked: not checked
    records = [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}, {"id": "a", "text": "three"}]
    out = tmp_path / "out"
    with pytest.raises(DuplicateIdError, match=r"id 'a' appears more than once: rows 0 and 2 .*--allow-duplicate-ids"):
        embed_corpus(records, out, embedder=tiny_embedder, id_field="id")
    assert list(out.iterdir()) == []  # a failed first run leaves nothing behind
    result = embed_corpus(records, out, embedder=tiny_embedder, id_field="id", allow_duplicate_ids=True)
    assert result.rows == 3 and read_table(out)["id"].tolist() == ["a", "b", "a"]


# ---------------------------------------------------------------------- hardening (issue 21): the output


def test_a_failed_first_run_leaves_no_manifest(tiny_embedder: Embedder, tmp_path: Path) -> None:
    out = tmp_path / "out"
    records: list[object] = ["short", "word " * 9000]
    with pytest.raises(InputTooLongError, match="row 1 is"):
        embed_corpus(records, out, embedder=tiny_embedder, long_text="error")
    assert list(out.iterdir()) == []
    # So the next run may change a setting without --no-resume: nothing was finished to mix with.
    result = embed_corpus(records, out, embedder=tiny_embedder, long_text="truncate", shard_rows=1)
    assert (result.embedded_rows, result.shards) == (2, 2)
    # The twin: a later run that fails keeps what was finished (and resumes from it).
    with pytest.raises(CorpusSourceError, match="item #3 is int"):
        embed_corpus([*records, "third", 4], out, embedder=tiny_embedder, long_text="truncate", shard_rows=1)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows_done"] == 3 and not manifest["complete"]
    again = embed_corpus([*records, "third"], out, embedder=tiny_embedder, long_text="truncate", shard_rows=1)
    assert (again.embedded_rows, again.reused_rows) == (0, 3)


def test_a_job_that_finished_no_shard_is_not_a_mismatch(tiny_embedder: Embedder, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert embed_corpus([], out, embedder=tiny_embedder).rows == 0  # a finished job with no rows
    assert json.loads((out / "_manifest.json").read_text())["complete"]
    result = embed_corpus(["a", "b"], out, embedder=tiny_embedder, dim=32)  # other settings, nothing to mix
    assert result.embedded_rows == 2 and result.dim == 32


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")


@pytest.mark.parametrize("where", ["shard", "manifest"])
def test_disk_full_is_one_error_and_loses_nothing(
    tiny_embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """ENOSPC (injected: the one use of mocks) while the third shard, or the second shard's manifest, is written."""
    texts = corpus_texts(150)
    out = tmp_path / "out"
    if where == "shard":
        real_write = pq.ParquetWriter.write_batch
        calls = []

        def write_batch(self: object, *args: object, **kwargs: object) -> None:  # failure injection
            calls.append(1)
            if len(calls) == 3:
                raise _enospc()
            real_write(self, *args, **kwargs)

        monkeypatch.setattr(pq.ParquetWriter, "write_batch", write_batch)
        message, kept = r"part-000002\.parquet", 100
    else:
        real_replace = os.replace
        manifests = []

        def replace(src: object, dst: object) -> None:  # failure injection
            if str(dst).endswith("_manifest.json"):
                manifests.append(1)
                if len(manifests) == 3:  # the start, shard 0, then shard 1
                    raise OSError(errno.ENOSPC, "No space left on device")
            real_replace(src, dst)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "replace", replace)
        message, kept = r"_manifest\.json", 50
    full = rf"^cannot write \S*{message}: No space left on device \(the disk or quota is full\)\. "
    with pytest.raises(CorpusWriteError, match=full + "The shards finished before it are kept: make room") as info:
        embed_corpus(texts, out, embedder=tiny_embedder, shard_rows=50)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    monkeypatch.undo()
    assert json.loads((out / "_manifest.json").read_text())["rows_done"] == kept
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    result = embed_corpus(texts, out, embedder=tiny_embedder, shard_rows=50)
    assert (result.embedded_rows, result.reused_rows) == (150 - kept, kept)
    np.testing.assert_allclose(read_table(out)["embedding"], tiny_embedder.encode_documents(texts), atol=ATOL)


def test_disk_full_for_the_npy_matrix(tiny_embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate here")

    def full(fd: int, offset: int, length: int) -> None:  # failure injection
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(CorpusWriteError, match=r"cannot write \S*m\.npy: No space left on device .*The Parquet "
                       r"dataset in \S*out is complete"):  # fmt: skip
        embed_corpus(["a", "b"], tmp_path / "out", embedder=tiny_embedder, npy=tmp_path / "m.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no matrix, no temporary file
    monkeypatch.undo()
    embed_corpus(["a", "b"], tmp_path / "out", embedder=tiny_embedder, npy=tmp_path / "m.npy")
    assert np.load(tmp_path / "m.npy").shape == (2, 64)
