"""How much a text's vector moves with what it is batched with (both engines).

    python benchmarks/batch_composition.py --shape small [--quant Q8_0] [--record]

Each probe text is embedded alone, then inside batches of other texts of different lengths
(packed differently, so the engines pick other kernels and tile shapes). The table reports the
largest per-component difference and the smallest cosine between the two, for each engine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import tempfile
from pathlib import Path

import numpy as np

from qwen_embed import Embedder, __version__
from qwen_embed.testing import make_model

SHARED_VOCAB = Path(__file__).resolve().parents[2] / "shared" / "vocab" / "ggml-vocab-qwen2.gguf"


def measure(emb: Embedder, rng: np.random.Generator) -> tuple[float, float]:
    words = "alpha beta gamma delta embedding vector search query document llama token batch".split()
    probes = [" ".join(rng.choice(words, size=n)) for n in (3, 20, 120, 400)]
    alone = np.stack([emb.encode(p) for p in probes])
    worst_abs, worst_cos = 0.0, 1.0
    for trial in range(6):
        fillers = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 500, size=12 + 8 * trial)]
        texts = fillers + probes
        order = rng.permutation(len(texts))
        out = emb.encode([texts[i] for i in order])
        back = out[np.argsort(order)][len(fillers) :]
        worst_abs = max(worst_abs, float(np.abs(back - alone).max()))
        worst_cos = min(worst_cos, float((back * alone).sum(axis=1).min()))
    return worst_abs, worst_cos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="small")
    parser.add_argument("--quant", default=None, help="Q8_0, Q4_K_M, ... (default: f32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    vocab = SHARED_VOCAB if SHARED_VOCAB.exists() else None
    path = make_model(folder / "m.gguf", shape=args.shape, vocab=vocab, quant=args.quant)
    rows = []
    for backend, dtype in (("llama", None), ("torch", "float32"), ("torch", "bfloat16")):
        try:
            emb = Embedder(path, backend=backend, dtype=dtype, n_threads=args.threads)
        except Exception as error:  # torch missing: say so in the table
            rows.append(f"| {backend} {dtype or ''} | n/a ({type(error).__name__}) | |")
            continue
        with emb:
            worst_abs, worst_cos = measure(emb, np.random.default_rng(0))
        rows.append(f"| {backend} {dtype or ''} | {worst_abs:.2e} | {worst_cos:.7f} |")
    table = "\n".join(
        [
            f"### {dt.date.today()}: batch composition, {args.shape} shape, {args.quant or 'f32'} file",
            "",
            f"- Machine: {platform.processor() or platform.machine()}, {args.threads} threads; "
            f"qwen_embed {__version__}",
            f"- Command: `python benchmarks/batch_composition.py --shape {args.shape}"
            + (f" --quant {args.quant}" if args.quant else "")
            + "`",
            "",
            "| engine | max abs difference per component | min cosine |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )
    print(table)
    if args.record:
        with open(Path(__file__).with_name("RESULTS.md"), "a", encoding="utf-8") as results:
            results.write("\n" + table)


if __name__ == "__main__":
    main()
