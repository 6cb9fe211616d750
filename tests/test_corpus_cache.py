"""The corpus job's row cache (only new or changed texts are embedded), exact reuse, and the receipt columns."""

from __future__ import annotations

import json
import logging
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwen_embed import Embedder, EncodeCall, EncodeResult
from qwen_embed.corpus import embed_corpus, store
from qwen_embed.corpus.cache import RowCache
from qwen_embed.corpus.rows import text_keys
from qwen_embed.interfaces.cli import main

pq = pytest.importorskip("pyarrow.parquet")

ATOL = 5e-4  # vectors of different packed decodes differ by ~1e-4 on llama.cpp
WORDS = ["gguf", "vector", "llama", "query", "passage", "token", "model", "search", "corpus", "shard", "检索", "🙂"]
RECEIPT = ["n_tokens", "tokens_used", "truncated", "dropped_tokens", "n_chunks", "fusion"]


class CountingEmbedder(Embedder):
    """Counts the texts that reach :meth:`Embedder.run` (every corpus-job embedding goes through it)."""

    texts = 0

    def run(self, texts: str | Iterable[str], call: EncodeCall | None = None, *, first_index: int = 0) -> EncodeResult:
        items: str | list[str] = texts if isinstance(texts, str) else list(texts)
        self.texts += 1 if isinstance(items, str) else len(items)
        return super().run(items, call, first_index=first_index)


@pytest.fixture(scope="module")
def counting(tiny_model: Path) -> Iterator[CountingEmbedder]:
    with CountingEmbedder(tiny_model, n_threads=2) as emb:
        yield emb


def records(n: int, seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {"id": f"d{i}", "text": f"{i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 14)))}
        for i in range(n)
    ]


def by_id(folder: Path) -> dict[str, dict[str, Any]]:
    """Each row of the dataset by id: its vector's bytes and its receipt columns."""
    table = pq.read_table(folder)
    dim = table.schema.field("embedding").type.list_size
    vectors = table["embedding"].combine_chunks().values.to_numpy().reshape(-1, dim)
    columns = {name: table[name].to_pylist() for name in RECEIPT}
    ids = [str(i) for i in table["id"].to_pylist()]
    return {i: {"vector": vectors[n].tobytes(), **{k: v[n] for k, v in columns.items()}} for n, i in enumerate(ids)}


def vectors(folder: Path) -> np.ndarray:
    table = pq.read_table(folder)
    dim = table.schema.field("embedding").type.list_size
    return table["embedding"].combine_chunks().values.to_numpy().reshape(-1, dim)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------- only what changed is embedded


def test_editing_one_percent_of_10k_rows_embeds_one_percent(counting: CountingEmbedder, tmp_path: Path) -> None:
    rows = records(10_000)
    out = tmp_path / "out"
    first = embed_corpus(rows, out, embedder=counting, id_field="id", shard_rows=1_000)
    assert first.embedded_rows == 10_000
    before = by_id(out)
    edited = set(random.Random(5).sample(range(10_000), 100))  # 1%, spread over every shard
    rows = [{"id": r["id"], "text": r["text"] + " edited" if i in edited else r["text"]} for i, r in enumerate(rows)]
    counting.texts = 0
    second = embed_corpus(rows, out, embedder=counting, id_field="id", shard_rows=1_000)
    print(f"1% edited: {counting.texts} texts reached the engine; {second}")
    assert counting.texts == second.embedded_rows == 100
    assert (second.reused_rows, second.cached_rows, second.rows) == (9_900, 9_900, 10_000)
    after = by_id(out)
    assert all(after[f"d{i}"]["vector"] == before[f"d{i}"]["vector"] for i in range(10_000) if i not in edited)
    changed = sorted(edited)
    got = np.stack([np.frombuffer(after[f"d{i}"]["vector"], np.float32) for i in changed])
    np.testing.assert_allclose(got, counting.encode_documents([rows[i]["text"] for i in changed]), atol=ATOL)
    assert not (out / "_cache").exists()
    # The twin: starting over embeds every row.
    counting.texts = 0
    assert (
        embed_corpus(rows, out, embedder=counting, id_field="id", shard_rows=1_000, resume=False).embedded_rows
        == 10_000
    )
    assert counting.texts == 10_000


def test_moved_resorted_renamed_and_deleted_rows_are_not_embedded(counting: CountingEmbedder, tmp_path: Path) -> None:
    rows = records(600)
    out = tmp_path / "out"
    embed_corpus(rows, out, embedder=counting, id_field="id", shard_rows=100, chunk_size=64)
    before = by_id(out)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    counting.texts = 0
    # Re-sorted, into shards of another size: every shard is written again, no text is embedded.
    result = embed_corpus(shuffled, out, embedder=counting, id_field="id", shard_rows=70, chunk_size=64)
    assert (counting.texts, result.embedded_rows, result.cached_rows, result.shards) == (0, 0, 600, 9)
    after = by_id(out)
    assert [str(i) for i in pq.read_table(out)["id"].to_pylist()] == [r["id"] for r in shuffled]
    assert after == before  # the same bytes for every id, receipts included
    # Renamed ids, then no ids at all: still nothing to embed.
    renamed = [{"id": f"x{n}", "text": r["text"]} for n, r in enumerate(shuffled)]
    assert embed_corpus(renamed, out, embedder=counting, id_field="id", shard_rows=70).embedded_rows == 0
    plain = [r["text"] for r in shuffled]
    assert embed_corpus(plain, out, embedder=counting, shard_rows=70).embedded_rows == 0
    assert pq.read_table(out).schema.field("id").type == "int64"
    # Deleted rows leave the output; the rest keep their vectors.
    kept = [r for n, r in enumerate(shuffled) if n % 10 != 3]
    result = embed_corpus(kept, out, embedder=counting, id_field="id", shard_rows=70)
    assert (result.embedded_rows, result.rows, counting.texts) == (0, 540, 0)
    final = by_id(out)
    assert sorted(final) == sorted(r["id"] for r in kept)
    assert all(final[i]["vector"] == before[i]["vector"] for i in final)
    # The twin: a changed text among moved rows is the one text embedded.
    kept[17] = {"id": kept[17]["id"], "text": "a text no earlier run saw"}
    assert embed_corpus(kept, out, embedder=counting, id_field="id", shard_rows=70).embedded_rows == 1
    assert counting.texts == 1


def test_a_text_repeated_in_a_window_is_embedded_once(counting: CountingEmbedder, tmp_path: Path) -> None:
    counting.texts = 0
    result = embed_corpus(["same", "other", "same", "same"], tmp_path / "a", embedder=counting)
    assert (result.embedded_rows, result.cached_rows, counting.texts) == (2, 2, 2)
    got = vectors(tmp_path / "a")
    assert got[0].tobytes() == got[2].tobytes() == got[3].tobytes()
    counting.texts = 0  # the twin: four texts, four embeddings
    assert embed_corpus(["a", "b", "c", "d"], tmp_path / "b", embedder=counting).embedded_rows == counting.texts == 4


# ---------------------------------------------------------------------- deterministic: exact reuse


def _reordered(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    moved = rows[::-1]
    for n in (3, 50, 111):
        moved[n] = {"id": moved[n]["id"], "text": f"new text {n} " + " ".join(WORDS[: n % 9])}
    return moved


@pytest.mark.parametrize("deterministic", [True, False])
def test_reuse_is_exact_with_deterministic(tiny_model: Path, tmp_path: Path, deterministic: bool) -> None:
    rows = records(240, seed=3)
    with Embedder(tiny_model, n_threads=2) as emb:
        options: dict[str, Any] = {"embedder": emb, "id_field": "id", "shard_rows": 100, "chunk_size": 48}
        embed_corpus(rows, tmp_path / "out", deterministic=deterministic, **options)
        again = embed_corpus(_reordered(rows), tmp_path / "out", deterministic=deterministic, **options)
        embed_corpus(_reordered(rows), tmp_path / "fresh", deterministic=deterministic, **options)
    assert (again.embedded_rows, again.cached_rows) == (3, 237)
    reused, fresh = pq.read_table(tmp_path / "out"), pq.read_table(tmp_path / "fresh")
    assert reused["id"].to_pylist() == fresh["id"].to_pylist()
    for name in RECEIPT:
        assert reused[name].to_pylist() == fresh[name].to_pylist(), name
    got, want = vectors(tmp_path / "out"), vectors(tmp_path / "fresh")
    if deterministic:
        assert got.tobytes() == want.tobytes()  # every reused vector is what a fresh run gives, bit for bit
    else:  # the twin: reused vectors come from other batches: within the packing tolerance, not the same bits
        np.testing.assert_allclose(got, want, atol=ATOL)
        assert got.tobytes() != want.tobytes()
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["settings"]["deterministic"] is deterministic and manifest["format_version"] == 2


def test_deterministic_runs_reuse_only_deterministic_vectors(
    counting: CountingEmbedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    texts = [r["text"] for r in records(120, seed=11)]
    out = tmp_path / "out"

    def run(source: list[str], deterministic: bool) -> int:
        return embed_corpus(source, out, embedder=counting, shard_rows=50, deterministic=deterministic).embedded_rows

    def flag() -> bool:
        return bool(json.loads((out / "_manifest.json").read_text())["settings"]["deterministic"])

    assert run(texts, False) == 120 and not flag()
    with caplog.at_level(logging.WARNING, logger="qwen_embed.corpus"):
        assert run(texts, True) == 120  # packed vectors are not what deterministic=True gives: all again
    assert "was not embedded with deterministic=True: embedding every row again" in caplog.text
    assert flag()
    assert run(texts[::-1], False) == 0 and flag()  # nothing embedded: every vector is still exact
    assert run(texts[::-1], True) == 0
    assert run([*texts, "one more"], False) == 1 and not flag()  # one packed vector: the folder is no longer exact
    assert run([*texts, "one more"], True) == 121


# ---------------------------------------------------------------------- a kill while rows move


KILL_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from qwen_embed import Embedder
    from qwen_embed.corpus import embed_corpus

    def rows():  # a slow reader (2 ms a row): the kill lands while later shards are still to come
        with open(sys.argv[2], encoding="utf-8") as lines:
            for line in lines:
                time.sleep(0.002)
                yield json.loads(line)

    with Embedder(sys.argv[1], n_threads=1, deterministic=True) as emb:
        embed_corpus(rows(), sys.argv[3], embedder=emb, id_field="id", shard_rows=150, chunk_size=50)
    print("done")
    """
)


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _kill_after_first_rewrite(command: list[str], manifest: Path) -> None:
    """Run ``command`` and SIGKILL it once it has replaced shard 0 (and before it finishes)."""
    original = json.loads(manifest.read_text())["shards"][0]["sha256"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        shards = json.loads(manifest.read_text())["shards"]
        if shards and shards[0]["sha256"] != original:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read() if process.stderr else ""


@pytest.mark.parametrize("keep_cache", [True, False])
def test_sigkill_while_rows_move_then_resume_embeds_nothing(tiny_model: Path, tmp_path: Path, keep_cache: bool) -> None:
    rows = records(1_200, seed=5)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    resorted = _write_jsonl(tmp_path / "b.jsonl", rows[::-1])
    with Embedder(tiny_model, n_threads=1, deterministic=True) as emb:
        embed_corpus(rows, out, embedder=emb, id_field="id", shard_rows=150, chunk_size=50)
        _kill_after_first_rewrite([sys.executable, "-c", KILL_SCRIPT, str(tiny_model), str(resorted), str(out)],
                                  out / "_manifest.json")  # fmt: skip
        meta = json.loads((out / "_cache" / "cache.json").read_text())
        # Shard 0's rows moved to the last shard; the killed run kept them (and those it read) in _cache/.
        assert len(meta["segments"]) >= 2 and meta["deterministic"]
        if not keep_cache:
            shutil.rmtree(out / "_cache")
        result = embed_corpus(resorted, out, embedder=emb, id_field="id", shard_rows=150, chunk_size=50)
        embed_corpus(resorted, fresh, embedder=emb, id_field="id", shard_rows=150, chunk_size=50)
    if keep_cache:
        assert result.embedded_rows == 0  # every row was found: in the shards left, or in _cache/
    else:  # the twin: without _cache/, the rows of the shards the killed run replaced are embedded again
        assert result.embedded_rows > 0 and result.embedded_rows % 150 == 0
    assert not (out / "_cache").exists()
    assert pq.read_table(out)["id"].to_pylist() == [r["id"] for r in rows[::-1]]
    assert vectors(out).tobytes() == vectors(fresh).tobytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in fresh.iterdir())


# ---------------------------------------------------------------------- the cache's own rules


def test_a_cache_of_other_settings_is_deleted(tiny_embedder: Embedder, tmp_path: Path) -> None:
    texts = [r["text"] for r in records(120, seed=2)]
    out = tmp_path / "out"
    embed_corpus(texts, out, embedder=tiny_embedder, shard_rows=50)
    shards = store.shard_records(store.read_manifest(out) or {})
    options: dict[str, Any] = {"dim": 64, "require_deterministic": False}
    cache = RowCache.open(out, key={"k": 1}, shards=shards, deterministic=False, **options)
    assert len(cache) == 120
    cache.preserve("part-000000.parquet")  # copied into _cache/ as if it were about to be replaced
    assert cache.copied_rows == 50 and (out / "_cache" / shards[0].sha256 / "rows.npy").exists()
    same = RowCache.open(out, key={"k": 1}, shards=[], deterministic=False, **options)
    positions = same.lookup(text_keys(texts))
    assert (positions[:50] >= 0).all() and (positions[50:] == -1).all()
    np.testing.assert_array_equal(same.fetch(positions[:50]).vectors, vectors(out)[:50])
    other = RowCache.open(out, key={"k": 2}, shards=[], deterministic=False, **options)  # the twin: other settings
    assert len(other) == 0 and not (out / "_cache").exists()
    RowCache.open(out, key={"k": 1}, shards=shards, deterministic=False, **options).preserve("part-000001.parquet")
    exact = RowCache.open(out, key={"k": 1}, shards=[], deterministic=False, dim=64, require_deterministic=True)
    assert len(exact) == 0 and not (out / "_cache").exists()  # packed vectors are no cache for deterministic=True


def test_a_format_1_folder_is_embedded_again(
    tiny_embedder: Embedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    embed_corpus(["a", "b"], out, embedder=tiny_embedder)
    manifest = json.loads((out / "_manifest.json").read_text())
    (out / "_manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    assert store.read_manifest(out) is not None  # still readable (qwen_embed.search reads it)
    with caplog.at_level(logging.WARNING, logger="qwen_embed.corpus"):
        assert embed_corpus(["a", "b"], out, embedder=tiny_embedder).embedded_rows == 2
    assert "(format 1, without text hashes): embedding every row again" in caplog.text
    assert json.loads((out / "_manifest.json").read_text())["format_version"] == 2


# ---------------------------------------------------------------------- the receipt in the Parquet columns


LONG_DOC = "# Title\n\n" + "\n\n".join(f"Paragraph {i}. " + "words and more words " * 12 for i in range(5))


@pytest.mark.parametrize("policy", ["truncate", "chunk"])
def test_receipt_columns_equal_count_tokens_and_the_chunk_plan(tiny_model: Path, tmp_path: Path, policy: str) -> None:
    texts = ["short one", LONG_DOC, "short two " * 3, LONG_DOC[:300]]
    with Embedder(tiny_model, n_threads=2, max_length=64) as emb:
        embed_corpus(texts, tmp_path / "out", embedder=emb, long_text=policy, shard_rows=2)
        counts = [emb.count_tokens(t) for t in texts]
        plans = [emb.encode_long(t) if n > 64 else None for t, n in zip(texts, counts)]
    table = pq.read_table(tmp_path / "out")
    got = {name: table[name].to_pylist() for name in [*RECEIPT, *(["chunks"] if policy == "chunk" else [])]}
    assert got["n_tokens"] == counts
    assert any(n > 64 for n in counts) and any(n <= 64 for n in counts)  # both kinds of rows are checked
    if policy == "truncate":
        assert got["tokens_used"] == [min(n, 64) for n in counts]
        assert got["truncated"] == [n > 64 for n in counts]
        assert got["dropped_tokens"] == [max(0, n - 64) for n in counts]
        assert got["n_chunks"] == [1] * 4 and got["fusion"] == [None] * 4
        return
    assert got["truncated"] == [False] * 4 and got["dropped_tokens"] == [0] * 4
    for row, (n, plan) in enumerate(zip(counts, plans)):
        if plan is None:
            assert (got["n_chunks"][row], got["fusion"][row], got["chunks"][row], got["tokens_used"][row]) == (
                1, None, None, n,
            )  # fmt: skip
            continue
        assert got["n_chunks"][row] == len(plan.chunks) > 1 and got["fusion"][row] == plan.fusion
        assert got["chunks"][row] == [{"start": c.start, "end": c.end} for c in plan.chunks]
        assert got["tokens_used"][row] == sum(c.n_tokens + 1 for c in plan.chunks)  # each chunk and its EOS


# ---------------------------------------------------------------------- the command line


def test_cli_deterministic(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _write_jsonl(tmp_path / "c.jsonl", records(60, seed=9))
    args = ["embed", "-f", str(source), "--id-field", "id", "--model-path", str(tiny_model), "--no-progress"]
    assert main([*args, "-o", f"{tmp_path / 'exact'}/", "--deterministic"]) == 0
    assert main([*args, "-o", f"{tmp_path / 'packed'}/"]) == 0  # the twin
    capsys.readouterr()
    flags = [json.loads((tmp_path / f / "_manifest.json").read_text())["settings"]["deterministic"]
             for f in ("exact", "packed")]  # fmt: skip
    assert flags == [True, False]
    texts = [r["text"] for r in records(60, seed=9)]
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert main(["embed", "-f", str(tmp_path / "t.txt"), "-o", str(tmp_path / "v.npy"), "--model-path",
                 str(tiny_model), "--deterministic", "--no-progress"]) == 0  # fmt: skip
    with Embedder(tiny_model, deterministic=True) as emb:
        want = emb.encode_documents(texts)
    assert np.load(tmp_path / "v.npy").tobytes() == want.tobytes() == vectors(tmp_path / "exact").tobytes()
