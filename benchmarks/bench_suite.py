"""The benchmark suite: qwen_embed against its peers on the same random weights, same threads.

One command builds what it needs once (cached in benchmarks/models/), measures, and prints a
Markdown report (``--record`` appends it to benchmarks/RESULTS.md):

    bash benchmarks/build_llama_server.sh          # once: llama-server from the vendored sources
    python benchmarks/bench_suite.py --record

Models: a random-weight Qwen3 checkpoint of the real 0.6B shape in Hugging Face format (the real
vocabulary when ../shared/vocab is present), converted by llama.cpp's convert_hf_to_gguf.py to
f16 and quantized from it, so the Transformers peer and the GGUF engines share the weights.

Peers, in the same run: llama-cpp-python ``Llama.embed``; llama.cpp's ``llama-server``
(``/v1/embeddings`` over loopback, one request per client batch); Transformers on CPU in
float32 and bfloat16 (the official recipe, batches sorted by length as sentence-transformers
does). Then quantization rows (speed, file size, peak RSS, load time, cosine to f16; each in a
child process), a 4B-shaped row, and a roofline line (achieved GFLOP/s against a dense matmul
measured in the same run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = HERE / "models"
SHARED_VOCAB = ROOT.parent / "shared" / "vocab" / "ggml-vocab-qwen2.gguf"
sys.path.insert(0, str(ROOT))

from bench_throughput import cpu_name, make_texts  # noqa: E402

SHAPE_06B = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
}
CASES = [("short (~20 tok)", 32, 19), ("medium (~200 tok)", 8, 199), ("long (~2,000 tok)", 2, 1999)]
QUANTS = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M"]


# ----------------------------------------------------------------------------- models


def build_models(vocab_path: Path | None) -> tuple[Path, dict[str, Path]]:
    """The HF checkpoint (0.6B shape) and its GGUFs by quant, built once."""
    from qwen_embed.testing import load_vocabulary, quantize_model, train_vocabulary
    from tests.parity_support import convert, llama_cpp_source, make_hf_checkpoint

    tag = "qwen2vocab" if vocab_path else "bpevocab"
    hf_dir = MODELS / f"hf-0.6B-{tag}"
    if not (hf_dir / "model.safetensors").exists():
        vocab = load_vocabulary(vocab_path) if vocab_path else train_vocabulary()
        print("building the 0.6B-shaped HF checkpoint ...", file=sys.stderr, flush=True)
        make_hf_checkpoint(hf_dir, vocab, shape=SHAPE_06B)
    files = {"F16": MODELS / f"conv-0.6B-F16-{tag}.gguf"}
    if not files["F16"].exists():
        print("converting with convert_hf_to_gguf.py ...", file=sys.stderr, flush=True)
        convert(llama_cpp_source(MODELS / "cache"), hf_dir, files["F16"], outtype="f16", real_vocab=bool(vocab_path))
    for quant in QUANTS[1:]:
        files[quant] = MODELS / f"conv-0.6B-{quant}-{tag}.gguf"
        if not files[quant].exists():
            quantize_model(files["F16"], files[quant], quant)
    return hf_dir, files


# ----------------------------------------------------------------------------- engines


class Engine:
    name = ""

    def encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Ours(Engine):
    name = "qwen_embed"

    def __init__(self, path: Path, threads: int, **options: Any) -> None:
        from qwen_embed import Embedder

        self.emb = Embedder(path, n_threads=threads, **options)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.emb.encode(texts)

    def close(self) -> None:
        self.emb.close()


class LlamaEmbed(Engine):
    name = "Llama.embed"

    def __init__(self, path: Path, threads: int) -> None:
        import llama_cpp

        from qwen_embed.engines._native import install_log_router

        self.llm = llama_cpp.Llama(
            str(path),
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST,
            n_ctx=8192,
            n_batch=8192,
            n_ubatch=512,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        install_log_router(force=True)

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.llm.embed(texts, normalize=True, truncate=False), dtype=np.float32)

    def close(self) -> None:
        self.llm.close()


class LlamaServer(Engine):
    name = "llama-server"

    def __init__(self, binary: Path, path: Path, threads: int) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [str(binary), "-m", str(path), "--embeddings", "--pooling", "last", "-t", str(threads)]
        command += ["-tb", str(threads), "-c", "16384", "-np", "4", "-b", "4096", "-ub", "4096"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-disable"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("llama-server did not start")

    def encode(self, texts: list[str]) -> np.ndarray:
        body = json.dumps({"input": texts, "model": "m", "encoding_format": "float"}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/embeddings", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=3600) as response:
            data = json.loads(response.read())["data"]
        vectors = np.array([d["embedding"] for d in sorted(data, key=lambda d: d["index"])], dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Transformers(Engine):
    def __init__(self, hf_dir: Path, threads: int, dtype: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.dtype = getattr(torch, dtype)
        self.name = f"Transformers {dtype}"
        self.tokenizer = AutoTokenizer.from_pretrained(hf_dir, padding_side="left")
        self.model = AutoModel.from_pretrained(hf_dir, dtype=self.dtype).eval()

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        torch = self.torch
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # as sentence-transformers sorts
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state[:, -1].float()
            out[idx] = torch.nn.functional.normalize(hidden, dim=1).numpy()
        return out


# ----------------------------------------------------------------------------- measuring


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def latency(run: Callable[[], object], n: int = 15) -> tuple[float, float]:
    run()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def matmul_peak(threads: int) -> dict[str, float]:
    """Dense matmul GFLOP/s on this machine (torch, 2048^3), float32 and bfloat16."""
    import torch

    torch.set_num_threads(threads)
    n = 2048
    peaks = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)
        seconds = best_seconds(lambda a=a, b=b: torch.mm(a, b), 5)
        peaks[str(dtype).split(".")[-1]] = 2 * n**3 / seconds / 1e9
    return peaks


def flops_per_token(shape: dict[str, int], context: int) -> float:
    """Multiply-adds x2 of one token through the encoder (no output head), attention at ``context``."""
    d, f, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    q = shape["num_attention_heads"] * shape["head_dim"]
    kv = shape["num_key_value_heads"] * shape["head_dim"]
    per_layer = 2 * (d * q + 2 * d * kv + q * d + 3 * d * f) + 2 * 2 * q * context
    return float(layers * per_layer)


def child_quant_row(path: str, texts_file: str, threads: int) -> None:
    """Run in a child process: load time, throughput, peak RSS; vectors to ``path + .npy``."""
    texts = json.loads(Path(texts_file).read_text())
    start = time.perf_counter()
    engine = Ours(Path(path), threads)
    load = time.perf_counter() - start
    engine.encode(texts[:2])
    n_tokens = sum(engine.emb.count_tokens(t) for t in texts)
    seconds = best_seconds(lambda: engine.encode(texts), 2)
    vectors = engine.encode(texts)
    np.save(texts_file + f".{Path(path).stem}.npy", vectors)
    rss = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1]) / 1024
    print(json.dumps({"load_s": load, "tok_s": n_tokens / seconds, "peak_rss_mib": rss}))


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="thread counts to measure")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER", str(HERE / "build" / "llama-server")))
    parser.add_argument("--skip-4b", action="store_true")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--child-quant", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_quant:
        child_quant_row(args.child_quant[0], args.child_quant[1], int(args.child_quant[2]))
        return 0

    import llama_cpp
    import torch
    import transformers

    import qwen_embed

    vocab = SHARED_VOCAB if SHARED_VOCAB.exists() else None
    hf_dir, files = build_models(vocab)
    server_bin = Path(args.llama_server)
    if not server_bin.exists():
        found = shutil.which("llama-server")
        server_bin = Path(found) if found else server_bin
    threads_list = [int(t) for t in args.threads.split(",")]
    probe = Ours(files["Q8_0"], 1)
    cases = []
    for label, n, words in CASES:
        texts = make_texts(n, words, seed=words)
        cases.append((label, texts, sum(probe.emb.count_tokens(t) for t in texts)))
    query = "how do I run an embedding model on a laptop"
    probe.close()

    lines: list[str] = []
    summary: dict[str, list[float]] = {}
    for threads in threads_list:
        makers: list[tuple[str, Callable[[], Engine]]] = [
            ("qwen_embed", lambda t=threads: Ours(files["Q8_0"], t)),
            ("Llama.embed", lambda t=threads: LlamaEmbed(files["Q8_0"], t)),
        ]
        if server_bin.exists():
            makers.append(("llama-server", lambda t=threads: LlamaServer(server_bin, files["Q8_0"], t)))
        makers += [
            ("qwen_embed torch float32", lambda t=threads: Ours(files["F16"], t, backend="torch", dtype="float32")),
            ("qwen_embed torch bfloat16", lambda t=threads: Ours(files["F16"], t, backend="torch", dtype="bfloat16")),
            ("Transformers float32", lambda t=threads: Transformers(hf_dir, t, "float32")),
            ("Transformers bfloat16", lambda t=threads: Transformers(hf_dir, t, "bfloat16")),
        ]
        rows: dict[str, list[Any]] = {}
        for name, make in makers:
            print(f"[{threads} threads] {name} ...", file=sys.stderr, flush=True)
            engine = make()
            engine.encode(cases[0][1][:2])
            cells = []
            for _label, texts, n_tokens in cases:
                seconds = best_seconds(lambda e=engine, x=texts: e.encode(x), args.repeats)
                cells.append((n_tokens / seconds, len(texts) / seconds))
            p50, p95 = latency(lambda e=engine: e.encode([query]))
            rows[name] = [cells, p50, p95]
            engine.close()
            del engine
        lines += [
            f"#### {threads} thread{'s' if threads > 1 else ''}: tokens/s (texts/s); llama.cpp engines on Q8_0, "
            "the torch engine on the f16 GGUF, Transformers on the HF checkpoint",
            "",
            "| engine | " + " | ".join(c[0] for c in cases) + " | 1 query p50 / p95 ms |",
            "|---|" + "---|" * len(cases) + "---|",
        ]
        for name, (cells, p50, p95) in rows.items():
            body = " | ".join(f"{tok:.1f} ({txt:.1f})" for tok, txt in cells)
            lines.append(f"| {name} | {body} | {p50:.0f} / {p95:.0f} |")
        ours_cells = rows["qwen_embed"][0]
        for name, (cells, _, _) in rows.items():
            if name != "qwen_embed":
                ratios = [o[0] / c[0] for o, c in zip(ours_cells, cells)]
                summary.setdefault(f"{name} @{threads}t", ratios)
                lines.append(f"| *qwen_embed ÷ {name}* | " + " | ".join(f"{r:.2f}x" for r in ratios) + " | |")
        lines.append("")
        if threads == max(threads_list):
            medium_rate = ours_cells[1][0]

    # Quantization rows: each in a child process (clean peak RSS), medium texts, the most threads.
    threads = max(threads_list)
    texts_file = MODELS / "suite-medium-texts.json"
    texts_file.write_text(json.dumps(cases[1][1]))
    quant_rows = []
    for quant in QUANTS:
        done = subprocess.run(
            [sys.executable, __file__, "--child-quant", str(files[quant]), str(texts_file), str(threads)],
            capture_output=True,
            text=True,
            check=True,
        )
        quant_rows.append((quant, json.loads(done.stdout.strip().splitlines()[-1])))
    ref = np.load(f"{texts_file}.{files['F16'].stem}.npy")
    lines += [
        f"#### Quantizations: medium texts, {threads} threads, one child process each",
        "",
        "| quant | file MiB | load s | tokens/s | peak RSS MiB | min cosine to f16 |",
        "|---|---|---|---|---|---|",
    ]
    for quant, row in quant_rows:
        vectors = np.load(f"{texts_file}.{files[quant].stem}.npy")
        cos = float((vectors * ref).sum(axis=1).min())
        size = files[quant].stat().st_size / 2**20
        lines.append(
            f"| {quant} | {size:.0f} | {row['load_s']:.2f} | {row['tok_s']:.1f} | {row['peak_rss_mib']:.0f} "
            f"| {cos:.5f} |"
        )
    lines.append("")

    # 4B shape: qwen_embed and Llama.embed on a generated Q8_0 (no HF checkpoint: 16 GB in float32).
    if not args.skip_4b:
        from bench_throughput import build_model

        path4 = build_model("4B", "Q8_0")
        texts = cases[1][1][:4]
        row4 = []
        n_tokens = cases[1][2] * len(texts) // len(cases[1][1])
        for make in (lambda: Ours(path4, threads), lambda: LlamaEmbed(path4, threads)):
            engine = make()
            engine.encode(texts[:1])
            row4.append((engine.name, n_tokens / best_seconds(lambda e=engine: e.encode(texts), 1)))
            engine.close()
        lines += [
            f"#### 4B shape (generated Q8_0, {path4.stat().st_size / 2**30:.1f} GiB), 4 medium texts, "
            f"{threads} threads",
            "",
            "| engine | tokens/s |",
            "|---|---|",
            *[f"| {name} | {rate:.1f} |" for name, rate in row4],
            f"| *ratio* | {row4[0][1] / row4[1][1]:.2f}x |",
            "",
        ]

    peaks = matmul_peak(threads)
    flops = flops_per_token(SHAPE_06B, context=200)
    achieved = medium_rate * flops / 1e9
    lines += [
        f"Roofline ({threads} threads): qwen_embed on Q8_0, medium texts, does {flops / 1e9:.2f} GFLOP per token "
        f"(encoder only, attention at 200 tokens) at {medium_rate:.0f} tok/s = **{achieved:.0f} GFLOP/s**; a dense "
        f"2048x2048 matmul in torch on the same cores reaches {peaks['float32']:.0f} GFLOP/s in float32 and "
        f"{peaks['bfloat16']:.0f} GFLOP/s in bfloat16 ({achieved / peaks['float32']:.0%} of the float32 peak).",
        "",
    ]
    header = [
        f"### {dt.date.today().isoformat()}: benchmark suite, 0.6B shape (random weights, converted from HF)",
        "",
        f"- Machine: {cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}",
        f"- Versions: qwen_embed {qwen_embed.__version__}, llama-cpp-python {llama_cpp.__version__}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, llama-server "
        f"{'built from the vendored llama.cpp of the same llama-cpp-python' if server_bin.exists() else 'not built'}",
        f"- Models: `{hf_dir.name}` (HF, float32) and its conversions `{files['Q8_0'].name}` etc.",
        f"- Command: `python benchmarks/bench_suite.py --threads {args.threads} --repeats {args.repeats}` "
        "(all engines in one run; best of the repeats per cell)",
        "",
    ]
    report = "\n".join(header + lines)
    print(report)
    if args.record:
        with open(HERE / "RESULTS.md", "a", encoding="utf-8") as handle:
            handle.write("\n" + report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
