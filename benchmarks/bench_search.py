"""Search at scale: qwen_embed.search (usearch) against FAISS and exact numpy, float32 / int8 / binary.

For each vector set and size, every configuration is built in one fresh subprocess (build time,
peak RSS of the build, bytes on disk) and searched in another (peak RSS of serving, queries/s
one query at a time and in one batch, recall@10 against exact float32 search):

- ``numpy``: exact float32 search (the reference; the matrix in memory);
- ``faiss-flat``, ``faiss-hnsw`` (``IndexHNSWFlat``, M=16, efConstruction=128, efSearch=64),
  ``faiss-hnsw-sq8`` (``IndexHNSWSQ`` 8-bit, no rescoring);
- ``qwen-<precision>``: :class:`qwen_embed.search.SearchIndex` as built by default (exact below
  ``exact_max_values``; above, an HNSW graph tuned until it finds ``graph_recall`` of the top 10, or
  exact search when no graph can), ``qwen-<precision>-hnsw`` (a graph kept whatever it finds:
  ``graph_recall=0``, searched with 64, 256 and 1024 candidates) and ``-exact`` (no graph; skipped where
  the default is exact); graphs are searched with the ``expansion_search`` tuned at build time, then
  with 64, 256 and 1024; for
  int8 and binary each is searched three ways: rescoring the ``k x 4`` candidates against the
  stored float32 vectors (``float``, the default), against the codes (``quantized``), or not (``none``).

Vector sets: ``random`` (unit Gaussian vectors of width 1024: no structure, the hardest case for
HNSW and binary codes) and ``model`` (``encode_documents`` of random texts by a random-weight model
of the 0.6B shape, queries by ``encode_queries``; cached in ~/.cache/qwen-embed/bench-search).

    python benchmarks/bench_search.py --sizes 10000                       # minutes
    python benchmarks/bench_search.py --sizes 100000,1000000 --json search.json   # hours on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
#: Where model vectors are kept between runs (embedding them is the slow part).
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qwen-embed" / "bench-search"
sys.path.insert(0, str(HERE))
K = 10
DIM = 1024
EFS = [64, 256, 1024]  # HNSW candidates per search (usearch expansion_search, FAISS efSearch)
QWEN = [(p, variant) for p in ("float32", "int8", "binary") for variant in ("", "-hnsw", "-exact")]
DEFAULT_EXACT_MAX_VALUES = 16 * 2**20  # IndexOptions().exact_max_values


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------- vector sets


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def write_random(folder: Path, n: int, queries: int) -> None:
    rng = np.random.default_rng(n)
    out = np.lib.format.open_memmap(folder / "corpus.npy", mode="w+", dtype=np.float32, shape=(n, DIM))
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        out[start:stop] = unit_rows(rng, stop - start, DIM)
    out.flush()
    np.save(folder / "queries.npy", unit_rows(rng, queries, DIM))


def write_model(folder: Path, n: int, queries: int, shape: str) -> None:
    """Vectors of a random-weight model of ``shape`` (cached: embedding is the slow part)."""
    from bench_throughput import make_texts

    from qwen_embed import Embedder

    CACHE.mkdir(parents=True, exist_ok=True)
    cache = CACHE / f"vectors-{shape}-{n}.npy"
    qcache = CACHE / f"queries-{shape}-{queries}.npy"
    if not cache.exists() or not qcache.exists():
        path = model_file(shape)
        with Embedder(path, backend="llama", show_progress=False) as emb:
            started = time.perf_counter()
            blocks = []
            rng = np.random.default_rng(0)
            for start in range(0, n, 4096):
                count = min(4096, n - start)
                lengths = rng.integers(4, 17, count)
                texts = [" ".join(t) for t in _words(rng, lengths)]
                blocks.append(emb.encode_documents(texts))
                print(f"  model vectors: {start + count}/{n} ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
            tmp = cache.with_suffix(".tmp.npy")
            np.save(tmp, np.concatenate(blocks))
            os.replace(tmp, cache)
            np.save(qcache, emb.encode_queries(make_texts(queries, 8, seed=99)))
    shutil.copyfile(cache, folder / "corpus.npy")
    shutil.copyfile(qcache, folder / "queries.npy")


def model_file(shape: str) -> Path:
    """A random-weight Q8_0 model of ``shape`` (``0.6B``: the real shape)."""
    from bench_throughput import build_model

    return build_model(shape, "Q8_0")


def _words(rng: np.random.Generator, lengths: np.ndarray) -> list[list[str]]:
    from bench_throughput import WORDS

    return [[WORDS[int(i)] for i in rng.integers(0, len(WORDS), int(n))] for n in lengths]


def exact_top(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact float32 top-k by dot product, reading the corpus in blocks."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(corpus), 65_536):
        block = np.asarray(corpus[start : start + 65_536])
        scores = queries @ block.T
        rows = np.arange(start, start + len(block))[None, :].repeat(len(queries), 0)
        scores = np.concatenate([best_scores, scores], axis=1)
        rows = np.concatenate([best_rows, rows], axis=1)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(scores, top, axis=1)
        best_rows = np.take_along_axis(rows, top, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_rows, order, axis=1)


# ---------------------------------------------------------------------- children


def child_build(config: str, data: Path, out: Path) -> dict[str, Any]:
    corpus = np.load(data / "corpus.npy", mmap_mode="r")
    started = time.perf_counter()
    if config == "numpy":
        np.save(out / "matrix.npy", np.asarray(corpus))
    elif config.startswith("faiss"):
        import faiss

        dim = corpus.shape[1]
        if config == "faiss-flat":
            index = faiss.IndexFlatIP(dim)
        elif config == "faiss-hnsw":
            index = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 128
        else:
            index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, 16, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 128
            index.train(np.asarray(corpus[: min(len(corpus), 100_000)]))
        for start in range(0, len(corpus), 65_536):
            index.add(np.ascontiguousarray(corpus[start : start + 65_536]))
        faiss.write_index(index, str(out / "faiss.index"))
    else:
        from qwen_embed.search import IndexOptions, SearchIndex

        precision, variant = _qwen(config)
        threshold = {"": {}, "hnsw": {"exact_max_values": 0, "graph_recall": 0},
                     "exact": {"exact_max_values": 2**62}}[variant]  # fmt: skip
        options = IndexOptions(precision=precision, **threshold)
        index = SearchIndex.create(out / "qwen", corpus.shape[1], options=options)
        index.upsert([str(i) for i in range(len(corpus))], corpus)
        index.close()
    seconds = time.perf_counter() - started
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"build_s": seconds, "build_rss_mb": peak_rss_mb(), "disk_bytes": disk}


def child_search(config: str, data: Path, out: Path, *, view: bool = False) -> list[dict[str, Any]]:
    queries = np.load(data / "queries.npy")
    truth = np.load(data / "truth.npy")
    rows: list[dict[str, Any]] = []

    def measure(mode: str, search_one: Any, search_batch: Any, memory: int, ef: int | str | None = None) -> None:
        singles = queries[: min(200, len(queries))]
        search_one(singles[0])
        started = time.perf_counter()
        for q in singles:
            search_one(q)
        single_qps = len(singles) / (time.perf_counter() - started)
        started = time.perf_counter()
        found = search_batch(queries)
        batch_qps = len(queries) / (time.perf_counter() - started)
        hits = sum(len(set(f[:K]) & set(t[:K])) for f, t in zip(found, truth))
        rows.append({"mode": mode, "ef": ef, "single_qps": single_qps, "batch_qps": batch_qps,
                     "recall": hits / (K * len(queries)), "memory_bytes": memory})  # fmt: skip

    if config == "numpy":
        matrix = np.load(out / "matrix.npy")
        measure("-", lambda q: exact_top(matrix, q[None, :], K), lambda qs: exact_top(matrix, qs, K),
                matrix.nbytes)  # fmt: skip
    elif config.startswith("faiss"):
        import faiss

        index = faiss.read_index(str(out / "faiss.index"))
        memory = (out / "faiss.index").stat().st_size
        for ef in EFS if hasattr(index, "hnsw") else [None]:
            if ef is not None:
                index.hnsw.efSearch = ef
            measure("-", lambda q: index.search(q[None, :], K), lambda qs: index.search(qs, K)[1], memory, ef)
    else:
        from qwen_embed.search import SearchIndex

        precision, _ = _qwen(config)
        opened = SearchIndex.open(out / "qwen")
        tuned = [s["expansion_search"] for s in opened.segment_info() if s["hnsw"]]
        opened.close()
        for ef in [None] if view or not tuned else [None, *EFS]:
            index = SearchIndex.open(out / "qwen", expansion_search=ef, view=view)
            modes = ["float", "quantized", "none"] if precision != "float32" else ["float"]
            for mode in modes if ef is None and not view else modes[:1]:
                measure(
                    (mode if precision != "float32" else "-") + (" (view)" if view else ""),
                    lambda q, m=mode, i=index: i.search(q, K, rescore=m),
                    lambda qs, m=mode, i=index: [[int(h.id) for h in hits] for hits in i.search(qs, K, rescore=m)],
                    index.memory_bytes(),
                    ef if ef is not None or not tuned else f"tuned {max(tuned)}",
                )
            index.close()
    for row in rows:
        row["serve_rss_mb"] = peak_rss_mb()
    return rows


def _qwen(config: str) -> tuple[str, str]:
    """``(precision, variant)``: variant ``""`` (as built by default), ``"hnsw"`` or ``"exact"``."""
    parts = config.split("-")
    return parts[1], parts[2] if len(parts) > 2 else ""


def redundant(config: str, size: int) -> bool:
    """``-exact`` where the default is exact anyway (below 16Mi values). ``-hnsw`` never is: the default keeps
    only a graph that reaches ``graph_recall``, the forced one keeps it whatever it finds."""
    if not config.startswith("qwen"):
        return False
    return _qwen(config)[1] == "exact" and size * DIM < DEFAULT_EXACT_MAX_VALUES


def run_child(args: list[str]) -> Any:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- driver


def configs(selected: str | None) -> list[str]:
    every = ["numpy", "faiss-flat", "faiss-hnsw", "faiss-hnsw-sq8"]
    every += [f"qwen-{p}{v}" for p, v in QWEN]
    return every if not selected else [c for c in every if c in selected.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="corpus sizes (comma-separated)")
    parser.add_argument("--vectors", default="random,model", help="random, model, or both")
    parser.add_argument("--queries", type=int, default=1000, help="queries per measurement")
    parser.add_argument("--model-shape", default="0.6B", help="random-weight model for --vectors model")
    parser.add_argument("--model-max", type=int, default=100_000, help="largest size embedded by the model")
    parser.add_argument("--configs", default=None, help="only these (comma-separated names)")
    parser.add_argument("--workdir", default=None, help="where the vectors and indexes go (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--child", nargs=4, metavar=("PHASE", "CONFIG", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        phase, config, data, out = args.child
        if phase == "build":
            result: Any = child_build(config, Path(data), Path(out))
        else:
            result = child_search(config, Path(data), Path(out), view=phase == "view")
        print(json.dumps(result))
        return 0

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    try:
        for kind in args.vectors.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                if kind == "model" and size > args.model_max:
                    print(f"skip model vectors at {size:,} (> --model-max)", file=sys.stderr)
                    continue
                data = work / f"{kind}-{size}"
                data.mkdir(exist_ok=True)
                print(f"== {kind} vectors, {size:,} x {DIM}", file=sys.stderr, flush=True)
                if kind == "random":
                    write_random(data, size, args.queries)
                else:
                    write_model(data, size, args.queries, args.model_shape)
                corpus = np.load(data / "corpus.npy", mmap_mode="r")
                np.save(data / "truth.npy", exact_top(corpus, np.load(data / "queries.npy"), K))
                cos = _spread(corpus)
                for config in configs(args.configs):
                    if redundant(config, size):
                        continue
                    out = work / f"{kind}-{size}-{config}"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    built = run_child(["--child", "build", config, str(data), str(out)])
                    rows = run_child(["--child", "search", config, str(data), str(out)])
                    if any(r["ef"] for r in rows) and config.startswith("qwen"):  # graphs: served memory-mapped too
                        rows += run_child(["--child", "view", config, str(data), str(out)])
                    for row in rows:
                        row.update(built, vectors=kind, size=size, config=config, **cos)
                        results.append(row)
                        print(_line(row), flush=True)
                    shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(data, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print()
    print(table(results))
    return 0


def _spread(corpus: np.ndarray) -> dict[str, float]:
    """Mean and std of the cosine between random pairs of rows (how spread out the vectors are)."""
    rng = np.random.default_rng(0)
    first, second = rng.choice(len(corpus), 2000), rng.choice(len(corpus), 2000)
    other = first != second
    cos = (np.asarray(corpus[first[other]]) * np.asarray(corpus[second[other]])).sum(axis=1)
    return {"pair_cos_mean": float(cos.mean()), "pair_cos_std": float(cos.std())}


def _line(row: dict[str, Any]) -> str:
    return (f"{row['vectors']:<6} {row['size']:>9,} {row['config']:<20} {row['mode']:<9} ef {row['ef']!s:<5} "
            f"recall@10 {row['recall']:.4f}  build {row['build_s']:8.1f}s  mem {row['memory_bytes'] / 2**20:9.1f}MiB  "
            f"disk {row['disk_bytes'] / 2**20:9.1f}MiB  rss build {row['build_rss_mb']:7.0f} serve "
            f"{row['serve_rss_mb']:7.0f}MB  qps 1x {row['single_qps']:8.1f} batch {row['batch_qps']:8.1f}")  # fmt: skip


def table(results: list[dict[str, Any]]) -> str:
    head = ("| vectors | rows | index | rescore | ef | recall@10 | build s | index bytes (in memory) | bytes on disk "
            "| peak RSS build / serve MB | queries/s (1 at a time) | queries/s (batch) |")  # fmt: skip
    lines = [head, "|" + "---|" * 12]
    for r in results:
        lines.append(
            f"| {r['vectors']} | {r['size']:,} | {r['config']} | {r['mode']} | {r['ef'] or '-'} | {r['recall']:.4f} "
            f"| {r['build_s']:.1f} "
            f"| {r['memory_bytes'] / 2**20:,.1f} MiB | {r['disk_bytes'] / 2**20:,.1f} MiB "
            f"| {r['build_rss_mb']:,.0f} / {r['serve_rss_mb']:,.0f} | {r['single_qps']:,.1f} | {r['batch_qps']:,.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
