"""Long documents: encode_long from 1 to 100,000 tokens, against short-text throughput.

The baseline embeds independent texts as long as one chunk (the same decode shapes as
the chunks); the long-document rows report the document's own tokens per second (the
overlap is work on top) and the decoded tokens per second, with the peak RSS growth
during the call (Linux: VmHWM after resetting it through /proc/self/clear_refs).

    python benchmarks/bench_long.py                          # 0.6B-shaped Q8_0, 1 .. 100k tokens
    python benchmarks/bench_long.py --shape small --record   # faster; appends to RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

from bench_throughput import HERE, build_model, cpu_name, make_texts

PARAGRAPH_WORDS = 60


def rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def make_document(emb: object, n_tokens: int) -> str:
    """Paragraphs of random words under Markdown headings, cut to about ``n_tokens`` tokens."""
    paragraphs = make_texts(n_tokens // 40 + 2, PARAGRAPH_WORDS, seed=n_tokens)
    parts, total = [], 0
    for i, para in enumerate(paragraphs):
        block = (f"## Section {i // 32}\n\n" if i % 32 == 0 else "") + para.capitalize() + ".\n\n"
        parts.append(block)
        total += emb.count_tokens(block) - 1  # type: ignore[attr-defined]
        if total >= n_tokens:
            break
    doc = "".join(parts)
    while emb.count_tokens(doc) - 1 > n_tokens and len(doc) > 1:  # type: ignore[attr-defined]
        doc = doc[: max(1, int(len(doc) * n_tokens / (emb.count_tokens(doc) - 1)))]  # type: ignore[attr-defined]
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="0.6B")
    parser.add_argument("--quant", default="Q8_0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="1,1000,10000,100000", help="document sizes in tokens")
    parser.add_argument("--preset", default="technical", help="chunking preset (technical: 1024/128)")
    parser.add_argument("--baseline-texts", type=int, default=12)
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()

    import llama_cpp

    import qwen_embed
    from qwen_embed import Embedder
    from qwen_embed.text.chunking import chunk_preset

    config = chunk_preset(args.preset)
    model = build_model(args.shape, args.quant)
    emb = Embedder(model, n_threads=args.threads, chunking=config)
    emb.encode(["warm up"] * 4)

    # Baseline: independent texts of one chunk's length.
    texts = [make_document(emb, config.chunk_tokens - 1) for _ in range(args.baseline_texts)]
    base_tokens = sum(emb.count_tokens(t) for t in texts)
    start = time.perf_counter()
    emb.encode(texts)
    base_rate = base_tokens / (time.perf_counter() - start)
    print(f"baseline: {len(texts)} texts of ~{base_tokens // len(texts)} tokens: {base_rate:.1f} tok/s", flush=True)

    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        doc = make_document(emb, size)
        n_doc = emb.count_tokens(doc) - 1
        before = rss_mib("VmRSS")
        reset_peak()
        start = time.perf_counter()
        result = emb.encode_long(doc, return_chunks=False)
        seconds = time.perf_counter() - start
        growth = rss_mib("VmHWM") - before
        decoded = sum(c.n_tokens + 1 for c in result.chunks)
        rows.append((n_doc, len(result.chunks), seconds, n_doc / seconds, decoded / seconds, growth))
        print(
            f"{n_doc:>7} tokens: {len(result.chunks):>4} chunks, {seconds:7.1f} s, {n_doc / seconds:6.1f} doc tok/s, "
            f"{decoded / seconds:6.1f} decoded tok/s, peak RSS +{growth:.1f} MiB",
            flush=True,
        )

    lines = [
        f"### {dt.date.today()}: long documents (encode_long, {args.preset} {config.chunk_tokens}/{config.overlap}), "
        f"{args.shape}-shaped {args.quant}, {args.threads} threads",
        "",
        f"- Machine: {cpu_name()}, Linux {platform.machine()}, Python {platform.python_version()}",
        f"- Versions: qwen_embed {qwen_embed.__version__}, llama-cpp-python {llama_cpp.__version__}",
        f"- Model: `{model.name}`",
        f"- Command: `python benchmarks/bench_long.py --shape {args.shape} --quant {args.quant} "
        f"--threads {args.threads} --sizes {args.sizes} --preset {args.preset}`",
        f"- Baseline: {len(texts)} independent texts of ~{base_tokens // len(texts)} tokens (one chunk each) "
        f"in one `encode`: **{base_rate:.1f} tok/s**",
        "",
        "| document tokens | chunks | seconds | document tok/s | vs baseline | decoded tok/s | vs baseline "
        "| peak RSS growth |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n_doc, n_chunks, seconds, doc_rate, dec_rate, growth in rows:
        lines.append(
            f"| {n_doc:,} | {n_chunks} | {seconds:.2f} | {doc_rate:.1f} | {doc_rate / base_rate:.2f}x "
            f"| {dec_rate:.1f} | {dec_rate / base_rate:.2f}x | {growth:.1f} MiB |"
        )
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    if args.record:
        with open(HERE / "RESULTS.md", "a", encoding="utf-8") as handle:
            handle.write("\n" + table)
    emb.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
