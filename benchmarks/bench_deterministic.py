"""What ``deterministic=True`` costs: texts decoded one by one vs packed, on both engines.

    python benchmarks/bench_deterministic.py --shape small --texts 128 [--quant Q8_0] [--record]

Each engine embeds the same mixed-length texts with the default packing and with
``deterministic=True`` (each sequence alone, so its vector is bit-identical whatever batch it
comes in); the table gives CPU seconds (``time.process_time``, steadier than wall time on a
shared machine), texts per CPU-second and the ratio, all measured in one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from qwen_embed import Embedder, EncodeCall, __version__
from qwen_embed.testing import make_model

SHARED_VOCAB = Path(__file__).resolve().parents[2] / "shared" / "vocab" / "ggml-vocab-qwen2.gguf"


def texts(n: int, rng: np.random.Generator) -> list[str]:
    words = "alpha beta gamma delta embedding vector search query document llama token batch".split()
    return [" ".join(rng.choice(words, size=int(k))) for k in rng.integers(5, 200, size=n)]


def cpu_seconds(emb: Embedder, items: list[str], call: EncodeCall, repeats: int) -> float:
    emb.run(items[:4], call)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        emb.run(items, call)
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="small")
    parser.add_argument("--quant", default=None, help="Q8_0, Q4_K_M, ... (default: f32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    vocab = SHARED_VOCAB if SHARED_VOCAB.exists() else None
    path = make_model(folder / "m.gguf", shape=args.shape, vocab=vocab, quant=args.quant)
    items = texts(args.texts, np.random.default_rng(0))
    rows = []
    for backend in ("llama", "torch"):
        try:
            emb = Embedder(path, backend=backend, n_threads=args.threads)
        except Exception as error:  # torch missing: say so in the table
            rows.append(f"| {backend} | n/a ({type(error).__name__}) | | | |")
            continue
        with emb:
            packed = cpu_seconds(emb, items, EncodeCall(deterministic=False), args.repeats)
            alone = cpu_seconds(emb, items, EncodeCall(deterministic=True), args.repeats)
            rows.append(
                f"| {emb.engine} | {packed:.2f} s ({len(items) / packed:.0f} texts/CPU-s) | "
                f"{alone:.2f} s ({len(items) / alone:.0f} texts/CPU-s) | {alone / packed:.2f}x |"
            )
    header = [
        f"### deterministic=True cost ({dt.date.today()}, {platform.processor() or platform.machine()}, "
        f"qwen_embed {__version__})",
        "",
        f"`python benchmarks/bench_deterministic.py --shape {args.shape} --texts {args.texts}"
        f"{' --quant ' + args.quant if args.quant else ''} --threads {args.threads}`; CPU seconds, best of "
        f"{args.repeats}, texts of 5-200 words.",
        "",
        "| engine | packed (default) | deterministic=True | cost |",
        "|---|---|---|---|",
    ]
    table = "\n".join(header + rows)
    print(table)
    if args.record:
        results = Path(__file__).with_name("RESULTS.md")
        results.write_text(results.read_text() + "\n" + table + "\n")


if __name__ == "__main__":
    main()
