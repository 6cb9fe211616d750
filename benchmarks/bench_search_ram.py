"""An index larger than the memory it may use still answers (issue 22): search under a memory cgroup.

Builds a :class:`qwen_embed.search.SearchIndex` of random unit vectors whose files are several times a
memory limit, evicts its files from the page cache, then searches it in a child process placed in a
fresh memory cgroup with that limit (``memory.limit_in_bytes`` on cgroup v1, ``memory.max`` on v2):

- ``view``: ``SearchIndex.open(path, view=True)``, queries one at a time and in one batch; the top 10
  must equal exact numpy search of the same vectors (computed by the parent, in blocks);
- ``control``: the same child reading the vectors file into memory, which the limit must kill (so the
  limit is real, not a number the kernel ignored).

It needs a writable cgroup (root, or a delegated cgroup); without one it says so and exits 2.

    python benchmarks/bench_search_ram.py --rows 500000 --limit-mib 512                 # exact, float32
    python benchmarks/bench_search_ram.py --rows 500000 --limit-mib 512 --precision int8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DIM = 1024
K = 10
BLOCK = 50_000


def cgroup_root() -> tuple[str, Path] | None:
    """``("v1"|"v2", folder)`` where a child memory cgroup can be made, or None."""
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").exists() and os.access(v1, os.W_OK):
        return "v1", v1
    v2 = Path("/sys/fs/cgroup")
    if (v2 / "cgroup.controllers").exists() and os.access(v2, os.W_OK):
        return "v2", v2
    return None


def make_cgroup(limit: int) -> tuple[str, Path]:
    found = cgroup_root()
    if found is None:
        raise SystemExit(2)
    kind, root = found
    group = root / f"qwen-embed-bench-{os.getpid()}"
    group.mkdir()
    if kind == "v1":
        (group / "memory.limit_in_bytes").write_text(str(limit))
        if (group / "memory.memsw.limit_in_bytes").exists():
            (group / "memory.memsw.limit_in_bytes").write_text(str(limit))  # no swap around the limit
    else:
        (group / "memory.max").write_text(str(limit))
        if (group / "memory.swap.max").exists():
            (group / "memory.swap.max").write_text("0")
    return kind, group


def group_peak(kind: str, group: Path) -> int | None:
    name = "memory.max_usage_in_bytes" if kind == "v1" else "memory.peak"
    path = group / name
    return int(path.read_text()) if path.exists() else None


def evict(folder: Path) -> None:
    """Drop the index's files from the page cache, so the child reads them from disk under its limit."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def build(work: Path, rows: int, precision: str, queries: int) -> Path:
    from qwen_embed.search import IndexOptions, SearchIndex

    rng = np.random.default_rng(0)
    source = np.lib.format.open_memmap(work / "source.npy", mode="w+", dtype=np.float32, shape=(rows, DIM))
    for start in range(0, rows, BLOCK):
        x = rng.standard_normal((min(BLOCK, rows - start), DIM)).astype(np.float32)
        source[start : start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    source.flush()
    q = rng.standard_normal((queries, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    np.save(work / "queries.npy", q)
    best = np.full((queries, 0), -np.inf, np.float32)
    best_rows = np.zeros((queries, 0), np.int64)
    for start in range(0, rows, BLOCK):  # exact truth, a block at a time
        scores = q @ np.asarray(source[start : start + BLOCK]).T
        best = np.concatenate([best, scores], axis=1)
        best_rows = np.concatenate(
            [best_rows, np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)], axis=1
        )
        keep = np.argsort(-best, axis=1, kind="stable")[:, :K]
        best, best_rows = np.take_along_axis(best, keep, axis=1), np.take_along_axis(best_rows, keep, axis=1)
    np.save(work / "truth.npy", best_rows)
    options = IndexOptions(precision=precision, exact_max_values=2**62)  # exact: no graph to build for hours
    index = SearchIndex.create(work / "index", DIM, options=options)
    index.upsert([str(i) for i in range(rows)], source)
    del source
    (work / "source.npy").unlink()
    return work / "index"


def child(mode: str, work: Path) -> dict[str, Any]:
    queries = np.load(work / "queries.npy")
    truth = np.load(work / "truth.npy")
    if mode == "control":
        held = [np.load(p) for p in sorted((work / "index").rglob("*.npy"))]  # what loading into memory means
        return {"mode": mode, "held_bytes": sum(a.nbytes for a in held)}
    from qwen_embed.search import SearchIndex

    started = time.perf_counter()
    index = SearchIndex.open(work / "index", view=True)
    opened = time.perf_counter() - started
    started = time.perf_counter()
    one = [index.search(q, k=K) for q in queries[:5]]
    one_s = (time.perf_counter() - started) / 5
    started = time.perf_counter()
    batch = index.search(queries, k=K)
    batch_s = time.perf_counter() - started
    found = [[int(h.id) for h in hits] for hits in batch]
    hits = sum(len(set(f) & set(t.tolist())) for f, t in zip(found, truth))
    same_one = all([int(h.id) for h in a] == b for a, b in zip(one, found))
    return {
        "mode": mode,
        "open_s": round(opened, 3),
        "one_query_s": round(one_s, 2),
        "batch_s": round(batch_s, 2),
        "recall": hits / truth.size,
        "one_equals_batch": same_one,
        **status_mib("VmHWM", "RssAnon", "RssFile"),  # not ru_maxrss: it keeps the forking parent's peak
    }


def status_mib(*names: str) -> dict[str, float]:
    """Lines of /proc/self/status, in MiB.

    VmHWM: peak resident set since exec (shared libraries included); RssFile: mapped file pages resident
    now, which the kernel drops under the limit.
    """
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in names:
            out[name] = round(int(value.split()[0]) / 1024, 1)
    return out


def run_child(mode: str, work: Path, limit: int) -> dict[str, Any]:
    kind, group = make_cgroup(limit)
    try:
        procs = group / "cgroup.procs"
        command = [sys.executable, __file__, "--child", mode, str(work)]
        # The child joins the cgroup before it imports anything, so every page it touches is charged there.
        prelude = f"import os; open({str(procs)!r}, 'w').write(str(os.getpid()))"
        done = subprocess.run([sys.executable, "-c", f"{prelude}; os.execv({sys.executable!r}, {command!r})"],
                              capture_output=True, text=True, timeout=3600)  # fmt: skip
        result: dict[str, Any] = {"mode": mode, "returncode": done.returncode, "group_peak_mib": None}
        peak = group_peak(kind, group)
        if peak is not None:
            result["group_peak_mib"] = round(peak / 2**20, 1)
        if done.returncode == 0:
            result.update(json.loads(done.stdout.strip().splitlines()[-1]))
        else:
            result["stderr_tail"] = done.stderr[-400:]
        return result
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500_000, help="vectors of width 1024 in the index")
    parser.add_argument("--limit-mib", type=int, default=512, help="the child's memory limit")
    parser.add_argument("--precision", default="float32", help="float32, float16, int8 or binary")
    parser.add_argument("--queries", type=int, default=100, help="queries searched in one batch")
    parser.add_argument("--workdir", default=None, help="where the index goes (default: a temp dir)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return 0
    if cgroup_root() is None:
        print("no writable memory cgroup here (run as root, or in a delegated cgroup)", file=sys.stderr)
        return 2
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-search-ram-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        index = build(work, args.rows, args.precision, args.queries)
        built = time.perf_counter() - started
        size = sum(p.stat().st_size for p in index.rglob("*") if p.is_file())
        limit = args.limit_mib * 2**20
        rows = []
        for mode in ("view", "control"):
            evict(index)
            rows.append(run_child(mode, work, limit))
        report = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "date": time.strftime("%Y-%m-%d"),
            "rows": args.rows,
            "precision": args.precision,
            "index_mib": round(size / 2**20, 1),
            "limit_mib": args.limit_mib,
            "build_s": round(built, 1),
            "children": rows,
        }
        print(json.dumps(report, indent=2))
        view = rows[0]
        ok = view.get("returncode") == 0 and view.get("recall") == 1.0 and rows[1].get("returncode") != 0
        print("PASS: the mapped index answered exactly under the limit; loading it was killed" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
