"""Corpus scale: peak RSS and throughput of embed_corpus, streaming against one-shot encode, Ray.

Each measurement runs in a fresh subprocess (its own peak RSS, read from VmHWM) on the same
short texts (4-16 random words, ids in a JSON Lines file written beforehand):

- ``corpus``: ``embed_corpus`` from the .jsonl to Parquet shards, at each ``--sizes`` (small model),
  and one row of the 0.6B shape at ``--big-rows`` texts (hours on 2 cores; ``--skip-big`` omits it);
- ``encode`` against ``stream``: one ``encode`` call on the list of all texts, then ``encode_iter``
  over a generator reading the file, at ``--compare-rows`` texts (the corpus job at that size too);
- ``ray``: ``embed_dataset`` with 2 actors x 1 thread on ``ray.init(num_cpus=2)``, against one
  process with 2 threads (the ``encode`` row);
- ``incremental``: the row cache at ``--incremental-rows`` texts: a first run, the same source
  again, 1% of the rows edited, then the rows re-sorted (seconds and texts embedded for each).

    python benchmarks/bench_corpus.py --quick                # tiny model, small sizes: proves it runs
    python benchmarks/bench_corpus.py --json corpus.json     # the recorded rows (long)
    python benchmarks/bench_corpus.py --only-incremental --incremental-rows 100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_throughput import WORDS, build_model, cpu_name

HERE = Path(__file__).resolve().parent


def write_corpus(path: Path, n: int, seed: int = 0) -> None:
    """``n`` JSON Lines ``{"id": ..., "text": ...}`` of 4-16 random words, written in blocks."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for start in range(0, n, 10_000):
            lines = []
            for i in range(start, min(n, start + 10_000)):
                words = rng.integers(0, len(WORDS), int(rng.integers(4, 17)))
                lines.append(json.dumps({"id": f"p{i}", "text": " ".join(WORDS[int(w)] for w in words)}))
            handle.write("\n".join(lines) + "\n")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def read_texts(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)["text"]


# ---------------------------------------------------------------------- workers (one per subprocess)


def worker(kind: str, model: Path, source: Path, threads: int, workdir: Path) -> dict[str, Any]:
    from qwen_embed import Embedder

    if kind == "ray":
        return ray_worker(model, source)
    if kind == "incremental":
        return incremental_worker(model, source, threads, workdir)
    with Embedder(model, n_threads=threads) as emb:
        emb.encode(["warm up"])
        start = time.perf_counter()
        if kind == "corpus":
            from qwen_embed.corpus import embed_corpus

            result = embed_corpus(source, workdir / "vectors", embedder=emb, id_field="id", resume=False)
            rows, tokens = result.rows, result.n_tokens
        elif kind == "encode":
            texts = list(read_texts(source))
            tokens = sum(emb.count_tokens(t) for t in texts)
            start = time.perf_counter()  # the tokens count is not part of the call
            rows = len(emb.encode(texts))
        elif kind == "stream":
            rows = sum(len(block) for block in emb.encode_iter(read_texts(source)))
            seconds = time.perf_counter() - start
            tokens = sum(emb.count_tokens(t) for t in read_texts(source))
            return report(rows, tokens, seconds)
        else:
            raise SystemExit(f"unknown worker {kind!r}")
        return report(rows, tokens, time.perf_counter() - start)


def ray_worker(model: Path, source: Path) -> dict[str, Any]:
    import ray

    from qwen_embed import Embedder
    from qwen_embed.integrations.ray import embed_dataset

    texts = list(read_texts(source))
    with Embedder(model, n_threads=1) as emb:
        tokens = sum(emb.count_tokens(t) for t in texts)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items([{"text": t} for t in texts], override_num_blocks=8)
    ds = ds.materialize()
    embed_dataset(ray.data.from_items([{"text": "warm up"}]), model=model, num_actors=2).take_all()
    start = time.perf_counter()
    rows = embed_dataset(ds, model=model, num_actors=2, cpus_per_actor=1, batch_size=256).count()
    seconds = time.perf_counter() - start
    ray.shutdown()
    return report(rows, tokens, seconds)


def incremental_worker(model: Path, source: Path, threads: int, workdir: Path) -> dict[str, Any]:
    """The row cache: the same job run again on the same, a 1%-edited and a re-sorted source."""
    import random

    from qwen_embed import Embedder
    from qwen_embed.corpus import embed_corpus

    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    edited = [dict(r) for r in rows]
    for i in random.Random(1).sample(range(len(rows)), max(1, len(rows) // 100)):
        edited[i]["text"] += " edited"
    resorted = edited[:]
    random.Random(2).shuffle(resorted)
    out: dict[str, Any] = {"rows": len(rows)}
    with Embedder(model, n_threads=threads) as emb:
        emb.encode(["warm up"])
        for name, source_rows in (("first", rows), ("same", rows), ("edit 1%", edited), ("re-sorted", resorted)):
            start = time.perf_counter()
            result = embed_corpus(source_rows, workdir / "vectors", embedder=emb, id_field="id")
            out[name] = {"seconds": round(time.perf_counter() - start, 2), "embedded": result.embedded_rows,
                         "cached": result.cached_rows}  # fmt: skip
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def report(rows: int, tokens: int, seconds: float) -> dict[str, Any]:
    return {
        "rows": rows,
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "rows_s": round(rows / seconds, 1),
        "tok_s": round(tokens / seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def run(kind: str, model: Path, source: Path, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as workdir:
        command = [sys.executable, __file__, "--worker", kind, str(model), str(source), str(threads), workdir]
        done = subprocess.run(command, capture_output=True, text=True, cwd=HERE)
    if done.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {kind:<7} {source.stem:<10} {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


# ---------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model and small sizes: proves the script runs")
    parser.add_argument("--shape", default="small", help="model shape of the size rows (default: small)")
    parser.add_argument("--quant", default="Q8_0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="corpus job sizes")
    parser.add_argument("--big-rows", type=int, default=100_000, help="texts for the 0.6B-shaped row")
    parser.add_argument("--skip-big", action="store_true", help="omit the 0.6B-shaped row")
    parser.add_argument("--compare-rows", type=int, default=100_000, help="texts for encode vs stream vs corpus")
    parser.add_argument("--ray-rows", type=int, default=20_000, help="texts for the Ray comparison")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--incremental-rows", type=int, default=100_000, help="texts for the row-cache runs")
    parser.add_argument("--only-incremental", action="store_true", help="run only the row-cache runs")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, model, source, threads, workdir = args.worker
        print(json.dumps(worker(kind, Path(model), Path(source), int(threads), Path(workdir))))
        return 0
    if args.quick:
        args.shape, args.sizes, args.compare_rows, args.ray_rows, args.skip_big = "tiny", "1000,5000", 2000, 1000, True
        args.incremental_rows = 2000
    sizes = [int(s) for s in args.sizes.split(",") if s]
    model = build_model(args.shape, args.quant)
    results: dict[str, Any] = {"machine": f"{cpu_name()}, {os.cpu_count()} CPUs, {platform.python_version()}"}
    with tempfile.TemporaryDirectory(prefix="bench-corpus-src-") as tmp:
        sources: dict[int, Path] = {}

        def source(n: int) -> Path:
            if n not in sources:
                sources[n] = Path(tmp) / f"{n}.jsonl"
                write_corpus(sources[n], n)
            return sources[n]

        results["incremental"] = run("incremental", model, source(args.incremental_rows), args.threads)
        if args.only_incremental:
            print_incremental(results, args)
            return 0
        results["corpus"] = {n: run("corpus", model, source(n), args.threads) for n in sizes}
        if not args.skip_big:
            results["corpus_0.6B"] = run("corpus", build_model("0.6B", args.quant), source(args.big_rows), args.threads)
        n = args.compare_rows
        results["compare"] = {k: run(k, model, source(n), args.threads) for k in ("encode", "stream", "corpus")}
        if not args.skip_ray:
            results["ray"] = {
                "1 process x 2 threads": run("encode", model, source(args.ray_rows), 2),
                "2 actors x 1 thread": run("ray", model, source(args.ray_rows), 1),
            }
    print_table(results, args)
    print_incremental(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def print_table(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n{results['machine']}; {args.shape} {args.quant}, {args.threads} threads\n")
    print("| run | texts | rows/s | tokens/s | peak RSS MB |")
    print("|---|---|---|---|---|")
    rows = [(f"corpus job ({args.shape})", r) for r in results["corpus"].values()]
    if "corpus_0.6B" in results:
        rows.append(("corpus job (0.6B shape)", results["corpus_0.6B"]))
    rows += [(f"{k} ({args.shape})", r) for k, r in results["compare"].items()]
    rows += [(f"ray: {k}", r) for k, r in results.get("ray", {}).items()]
    for name, r in rows:
        print(f"| {name} | {r['rows']:,} | {r['rows_s']:,.0f} | {r['tok_s']:,.0f} | {r['peak_rss_mb']:,.0f} |")
    base = results["compare"]["encode"]["tok_s"]
    for kind in ("stream", "corpus"):
        print(f"\n{kind} / one-shot encode throughput: {results['compare'][kind]['tok_s'] / base:.3f}", end="")
    sizes = sorted(results["corpus"])
    if len(sizes) > 1:
        grow = results["corpus"][sizes[-1]]["peak_rss_mb"] - results["corpus"][sizes[0]]["peak_rss_mb"]
        print(f"\ncorpus job peak RSS, {sizes[-1]:,} vs {sizes[0]:,} texts: {grow:+.0f} MB")
    print()


def print_incremental(results: dict[str, Any], args: argparse.Namespace) -> None:
    inc = results["incremental"]
    print(f"\nRow cache, {inc['rows']:,} texts ({args.shape} {args.quant}, {args.threads} threads):\n")
    print("| run | seconds | texts embedded | rows found by text |")
    print("|---|---|---|---|")
    for name in ("first", "same", "edit 1%", "re-sorted"):
        r = inc[name]
        print(f"| {name} | {r['seconds']:,.2f} | {r['embedded']:,} | {r['cached']:,} |")
    print()


if __name__ == "__main__":
    sys.exit(main())
