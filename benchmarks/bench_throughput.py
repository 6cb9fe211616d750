"""Throughput of ``Embedder.encode`` against llama-cpp-python's ``Llama.embed``.

Both run in this process, on the same GGUF file, with the same threads and the same
texts. The model has random weights of the real Qwen3-Embedding-0.6B shape (weights'
values do not change the cost), quantized to Q8_0 by llama.cpp, with the real Qwen2
vocabulary when ``../shared/vocab`` is present.

    python benchmarks/bench_throughput.py                # prints the table
    python benchmarks/bench_throughput.py --record       # and appends it to RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = HERE / "models"
SHARED_VOCAB = ROOT.parent / "shared" / "vocab" / "ggml-vocab-qwen2.gguf"

WORDS = (
    "the model reads a document and returns one vector that places similar meanings close together "
    "so that search retrieval clustering and classification work across many languages and domains "
    "with quantized weights on an ordinary laptop processor"
).split()


def build_model(shape: str, quant: str) -> Path:
    from qwen_embed.testing import make_model

    vocab = SHARED_VOCAB if SHARED_VOCAB.exists() else None
    tag = "qwen2vocab" if vocab else "bpevocab"
    path = MODELS / f"random-{shape}-{quant}-{tag}.gguf"
    if not path.exists():
        MODELS.mkdir(parents=True, exist_ok=True)
        print(f"building {path.name} ...", file=sys.stderr, flush=True)
        make_model(path, shape=shape, vocab=vocab, dtype="f16", quant=quant)
    return path


def make_texts(n: int, n_words: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(WORDS[int(i)] for i in rng.integers(0, len(WORDS), n_words)) for _ in range(n)]


def best_rate(run: Callable[[], object], n_tokens: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return n_tokens / min(times)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="0.6B")
    parser.add_argument("--quant", default="Q8_0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()

    import llama_cpp

    import qwen_embed
    from qwen_embed import Embedder
    from qwen_embed.engines._native import install_log_router

    path = build_model(args.shape, args.quant)
    emb = Embedder(path, n_threads=args.threads)
    peer = llama_cpp.Llama(
        str(path),
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST,
        n_ctx=8192,
        n_batch=8192,
        n_ubatch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    install_log_router(force=True)  # Llama() installs its own printer; keep the run quiet

    # (label, texts, words per text): about 20, 200 and 2,000 tokens with the EOS.
    cases = [("short (~20 tok)", 64, 19), ("medium (~200 tok)", 16, 199), ("long (~2,000 tok)", 4, 1999)]
    rows = []
    for label, n, n_words in cases:
        texts = make_texts(n, n_words, seed=n_words)
        n_tokens = sum(emb.count_tokens(t) for t in texts)
        peer_tokens = sum(len(peer.tokenize(t.encode(), add_bos=True, special=False)) for t in texts)
        if peer_tokens != n_tokens:
            print(f"warning: Llama.embed sees {peer_tokens} tokens, Embedder {n_tokens}", file=sys.stderr)
        emb.encode(texts[:2])
        peer.embed(texts[:2])
        ours = best_rate(lambda texts=texts: emb.encode(texts), n_tokens, args.repeats)
        theirs = best_rate(
            lambda texts=texts: peer.embed(texts, normalize=True, truncate=False), n_tokens, args.repeats
        )
        # Same vectors? (Llama.embed pools the last token too, when the file adds the EOS.)
        a = emb.encode(texts[:2])
        b = np.asarray(peer.embed(texts[:2], normalize=True), dtype=np.float32)
        cos = float(np.min(np.sum(a * b, axis=1)))
        rows.append((label, n, n_tokens / n, ours, theirs, ours / theirs, cos))
        print(
            f"{label}: Embedder {ours:.1f} tok/s, Llama.embed {theirs:.1f} tok/s, {ours / theirs:.2f}x, cos {cos:.5f}",
            file=sys.stderr,
            flush=True,
        )
    emb.close()

    ratio = statistics.geometric_mean(r[5] for r in rows)
    command = (
        f"python benchmarks/bench_throughput.py --shape {args.shape} --quant {args.quant} --threads {args.threads}"
    )
    lines = [
        f"### {dt.date.today().isoformat()}: Embedder.encode vs Llama.embed, {args.shape}-shaped {args.quant}, "
        f"{args.threads} threads",
        "",
        f"- Machine: {cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}",
        f"- Versions: qwen_embed {qwen_embed.__version__}, llama-cpp-python {llama_cpp.__version__}",
        f"- Model: `{path.name}` (random weights, real shape; {path.stat().st_size / 2**20:.0f} MiB)",
        f"- Command: `{command}` (best of {args.repeats} runs per cell, both engines in one process)",
        "",
        "| texts | n | tokens/text | Embedder tok/s | Llama.embed tok/s | ratio | min cosine |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, n, per, ours, theirs, r, cos in rows:
        lines.append(f"| {label} | {n} | {per:.0f} | {ours:.1f} | {theirs:.1f} | {r:.2f}x | {cos:.5f} |")
    lines += ["", f"Geometric mean ratio: **{ratio:.2f}x**.", ""]
    table = "\n".join(lines)
    print(table)
    if args.record:
        results = HERE / "RESULTS.md"
        if not results.exists():
            results.write_text("# Benchmark results\n\nNewest last. Each section names its command and machine.\n\n")
        with results.open("a") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
