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
does); sentence-transformers in float32 and bfloat16 (the model card's usage: left padding,
last-token pooling, ``prompt_name="query"`` for queries). Our rows: ``qwen_embed`` (llama.cpp
on Q8_0), ``qwen_embed auto`` (the default ``Embedder(path)`` on the Q8_0 file, whichever
engine ``auto`` picks here) and the torch engine on the f16 file (the same weights as
Transformers). Then the GEMM peaks of this machine on the model's own GEMM shapes (float32,
bfloat16, int8) and each engine as a fraction of its peak; start-up (imports + load) and
first-query latency, one child process per engine; torch-engine loading of the 0.6B and 4B
shapes (seconds, peak RSS against the weights); quantization rows; a 4B-shaped row.

``--quick`` runs the whole path on a small shape in a few minutes (a smoke test of the script;
its numbers are not the recorded ones).
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
SHAPE_QUICK = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 32,
}
CASES = [("short (~20 tok)", 32, 19), ("medium (~200 tok)", 8, 199), ("long (~2,000 tok)", 2, 1999)]
CASES_QUICK = [("short (~20 tok)", 8, 19), ("medium (~200 tok)", 4, 199), ("long (~2,000 tok)", 1, 1999)]
QUANTS = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M"]
QUERY = "how do I run an embedding model on a laptop"
QUERY_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


# ----------------------------------------------------------------------------- models


def build_models(vocab_path: Path | None, *, quick: bool = False) -> tuple[Path, dict[str, Path]]:
    """The HF checkpoint (0.6B shape, or a small one with ``quick``) and its GGUFs by quant, built once."""
    from qwen_embed.testing import load_vocabulary, quantize_model, train_vocabulary
    from tests.parity_support import convert, llama_cpp_source, make_hf_checkpoint

    tag = "qwen2vocab" if vocab_path else "bpevocab"
    size = "small" if quick else "0.6B"
    hf_dir = MODELS / f"hf-{size}-{tag}"
    if not (hf_dir / "model.safetensors").exists():
        vocab = load_vocabulary(vocab_path) if vocab_path else train_vocabulary()
        print(f"building the {size}-shaped HF checkpoint ...", file=sys.stderr, flush=True)
        make_hf_checkpoint(hf_dir, vocab, shape=SHAPE_QUICK if quick else SHAPE_06B)
    write_sentence_transformers_config(hf_dir)
    files = {"F16": MODELS / f"conv-{size}-F16-{tag}.gguf"}
    if not files["F16"].exists():
        print("converting with convert_hf_to_gguf.py ...", file=sys.stderr, flush=True)
        convert(llama_cpp_source(MODELS / "cache"), hf_dir, files["F16"], outtype="f16", real_vocab=bool(vocab_path))
    for quant in QUANTS[1:]:
        files[quant] = MODELS / f"conv-{size}-{quant}-{tag}.gguf"
        if not files[quant].exists():
            quantize_model(files["F16"], files[quant], quant)
    return hf_dir, files


def write_sentence_transformers_config(hf_dir: Path) -> None:
    """The module files the official Qwen3-Embedding repos ship for sentence-transformers."""
    config = json.loads((hf_dir / "config.json").read_text())
    files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        "1_Pooling/config.json": {
            "word_embedding_dimension": config["hidden_size"],
            "pooling_mode_lasttoken": True,
            "include_prompt": True,
        },
        "config_sentence_transformers.json": {
            "prompts": {"query": f"Instruct: {QUERY_INSTRUCTION}\nQuery:", "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
        "sentence_bert_config.json": {"max_seq_length": 8192, "do_lower_case": False},
    }
    for name, content in files.items():
        path = hf_dir / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content, indent=2))


# ----------------------------------------------------------------------------- engines


class Engine:
    name = ""

    def encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def query(self, text: str) -> np.ndarray:
        """One search query, with the instruction (the model card's query usage)."""
        return self.encode([f"Instruct: {QUERY_INSTRUCTION}\nQuery:{text}"])

    def close(self) -> None:
        pass


class Ours(Engine):
    name = "qwen_embed"

    def __init__(self, path: Path, threads: int, **options: Any) -> None:
        from qwen_embed import Embedder

        self.emb = Embedder(path, n_threads=threads, **options)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.emb.encode(texts)

    def query(self, text: str) -> np.ndarray:
        return self.emb.encode_queries([text])

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


class SentenceTransformers(Engine):
    def __init__(self, hf_dir: Path, threads: int, dtype: str) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.name = f"sentence-transformers {dtype}"
        self.model = SentenceTransformer(
            str(hf_dir),
            device="cpu",
            model_kwargs={"dtype": getattr(torch, dtype)},
            tokenizer_kwargs={"padding_side": "left"},
        )

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts, batch_size=32, normalize_embeddings=True), dtype=np.float32)

    def query(self, text: str) -> np.ndarray:
        return np.asarray(self.model.encode([text], prompt_name="query"), dtype=np.float32)


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


def gemm_peaks(shape: dict[str, int], tokens: int, threads: int, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of the model's own layer GEMMs at ``tokens`` rows, per dtype.

    The four GEMMs of a layer (q/k/v fused, attention output, gate/up fused, down), each timed
    best-of-``repeats``, summed: total work over total time. int8 is ``torch._int_mm`` (int32
    accumulation), the kernel an int8 path would run; float32 and bfloat16 are ``F.linear``.
    """
    import torch

    torch.set_num_threads(threads)
    d, f = shape["hidden_size"], shape["intermediate_size"]
    q = shape["num_attention_heads"] * shape["head_dim"]
    kv = shape["num_key_value_heads"] * shape["head_dim"]
    gemms = [(d, q + 2 * kv), (q, d), (d, 2 * f), (f, d)]  # (K, N)
    peaks: dict[str, float] = {}
    for dtype in ("float32", "bfloat16", "int8"):
        work = seconds = 0.0
        for k, n in gemms:
            if dtype == "int8":
                a = torch.randint(-127, 128, (tokens, k), dtype=torch.int8)
                w = torch.randint(-127, 128, (n, k), dtype=torch.int8)

                def run(a: Any = a, w: Any = w) -> object:
                    return torch._int_mm(a, w.t())
            else:
                a = torch.randn(tokens, k, dtype=getattr(torch, dtype))
                w = torch.randn(n, k, dtype=getattr(torch, dtype))

                def run(a: Any = a, w: Any = w) -> object:
                    return torch.nn.functional.linear(a, w)

            run()
            seconds += best_seconds(run, repeats)
            work += 2.0 * tokens * k * n
        peaks[dtype] = work / seconds / 1e9
    return peaks


def flops_per_token(shape: dict[str, int], context: int) -> float:
    """Multiply-adds x2 of one token through the encoder (no output head), attention at ``context``."""
    d, f, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    q = shape["num_attention_heads"] * shape["head_dim"]
    kv = shape["num_key_value_heads"] * shape["head_dim"]
    per_layer = 2 * (d * q + 2 * d * kv + q * d + 3 * d * f) + 2 * 2 * q * context
    return float(layers * per_layer)


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child_startup(kind: str, path: str, threads: int) -> None:
    """Run in a fresh child process: imports + load, first query, peak RSS (one JSON line).

    ``kind``: ``ours:<backend>[:<dtype>]`` on the GGUF ``path``; ``llama-embed``; or
    ``transformers:<dtype>`` / ``sentence-transformers:<dtype>`` on the HF folder ``path``.
    """
    start = time.perf_counter()
    name, _, rest = kind.partition(":")
    if name in ("ours", "llama-embed"):
        import qwen_embed  # noqa: F401
    if name != "llama-embed" and (name != "ours" or not rest.startswith("llama")):
        import torch  # noqa: F401
    if name == "sentence-transformers":
        import sentence_transformers  # noqa: F401
    imported, cpu = time.perf_counter(), time.process_time()
    engine: Engine
    weights_mib = 0.0
    if name == "ours":
        backend, _, dtype = rest.partition(":")
        options: dict[str, Any] = {"backend": backend}
        if dtype:
            options["dtype"] = dtype
        engine = Ours(Path(path), threads, **options)
        inner = getattr(engine.emb, "_engine", None)
        if getattr(inner, "_weights", None):  # matrices in their dtype, the embedding table as the file has it
            weights_mib = sum(t.nbytes for t in inner._weights.values()) / 2**20
    elif name == "llama-embed":
        engine = LlamaEmbed(Path(path), threads)
    elif name == "transformers":
        engine = Transformers(Path(path), threads, rest)
    else:
        engine = SentenceTransformers(Path(path), threads, rest)
    loaded, load_cpu = time.perf_counter(), time.process_time() - cpu
    engine.query(QUERY)
    first = time.perf_counter()
    row = {
        "import_s": imported - start,
        "load_s": loaded - imported,
        "load_cpu_s": load_cpu,
        "first_query_ms": (first - loaded) * 1000,
        "peak_rss_mib": peak_rss_mib(),
        "weights_mib": weights_mib,
        "engine": getattr(getattr(engine, "emb", None), "engine", ""),
    }
    print(json.dumps(row))


def run_child(*args: str) -> dict[str, Any]:
    """``bench_suite.py ARGS`` in a fresh interpreter; its last stdout line as JSON."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"child {' '.join(args[:2])} failed: {' | '.join(tail)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_quant_row(path: str, texts_file: str, threads: int) -> None:
    """Run in a child process: load time, throughput, peak RSS; vectors to ``path + .npy``."""
    texts = json.loads(Path(texts_file).read_text())
    start = time.perf_counter()
    engine = Ours(Path(path), threads, backend="llama")  # the row is labelled llama.cpp: pin it (auto may pick torch)
    load = time.perf_counter() - start
    assert engine.emb.backend == "llama", engine.emb.backend_reason
    engine.encode(texts[:2])
    n_tokens = sum(engine.emb.count_tokens(t) for t in texts)
    seconds = best_seconds(lambda: engine.encode(texts), 2)
    vectors = engine.encode(texts)
    np.save(texts_file + f".{Path(path).stem}.npy", vectors)
    print(json.dumps({"load_s": load, "tok_s": n_tokens / seconds, "peak_rss_mib": peak_rss_mib(),
                      "engine": engine.emb.engine}))  # fmt: skip


# ----------------------------------------------------------------------------- main


def machine_line() -> str:
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    have = [f for f in wanted if f in flags] or ["none of AVX-512/VNNI/BF16/AMX"]
    return f"{cpu_name()}, {os.cpu_count()} CPUs ({', '.join(have)}), {platform.system()} {platform.machine()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default=None, help="thread counts to measure (default: 1,2; --quick: 2)")
    parser.add_argument("--repeats", type=int, default=None, help="best of this many runs per cell (default: 2)")
    parser.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER", str(HERE / "build" / "llama-server")))
    parser.add_argument("--skip-4b", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a small shape and few texts: proves the script runs")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--child-quant", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--child-startup", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_quant:
        child_quant_row(args.child_quant[0], args.child_quant[1], int(args.child_quant[2]))
        return 0
    if args.child_startup:
        child_startup(args.child_startup[0], args.child_startup[1], int(args.child_startup[2]))
        return 0

    import llama_cpp
    import sentence_transformers
    import torch
    import transformers

    import qwen_embed

    quick = args.quick
    threads_arg = args.threads or ("2" if quick else "1,2")
    repeats = args.repeats or (1 if quick else 2)
    shape = SHAPE_QUICK if quick else SHAPE_06B
    vocab = SHARED_VOCAB if SHARED_VOCAB.exists() else None
    hf_dir, files = build_models(vocab, quick=quick)
    quants = QUANTS[:2] if quick else QUANTS
    server_bin = Path(args.llama_server)
    if not server_bin.exists():
        found = shutil.which("llama-server")
        server_bin = Path(found) if found else server_bin
    threads_list = [int(t) for t in threads_arg.split(",")]
    probe = Ours(files["Q8_0"], 1, backend="llama")
    cases = []
    for label, n, words in CASES_QUICK if quick else CASES:
        texts = make_texts(n, words, seed=words)
        cases.append((label, texts, sum(probe.emb.count_tokens(t) for t in texts)))
    probe.close()

    lines: list[str] = []
    medium: dict[str, float] = {}
    auto_name = "qwen_embed auto"
    for threads in threads_list:
        makers: list[tuple[str, Callable[[], Engine]]] = [
            ("qwen_embed", lambda t=threads: Ours(files["Q8_0"], t, backend="llama")),
            (auto_name, lambda t=threads: Ours(files["Q8_0"], t)),
            ("Llama.embed", lambda t=threads: LlamaEmbed(files["Q8_0"], t)),
        ]
        if server_bin.exists():
            makers.append(("llama-server", lambda t=threads: LlamaServer(server_bin, files["Q8_0"], t)))
        makers += [
            ("qwen_embed torch float32", lambda t=threads: Ours(files["F16"], t, backend="torch", dtype="float32")),
            ("qwen_embed torch bfloat16", lambda t=threads: Ours(files["F16"], t, backend="torch", dtype="bfloat16")),
            ("Transformers float32", lambda t=threads: Transformers(hf_dir, t, "float32")),
            ("Transformers bfloat16", lambda t=threads: Transformers(hf_dir, t, "bfloat16")),
            ("sentence-transformers float32", lambda t=threads: SentenceTransformers(hf_dir, t, "float32")),
            ("sentence-transformers bfloat16", lambda t=threads: SentenceTransformers(hf_dir, t, "bfloat16")),
        ]
        rows: dict[str, list[Any]] = {}
        for name, make in makers:
            print(f"[{threads} threads] {name} ...", file=sys.stderr, flush=True)
            engine = make()
            if name == auto_name:
                name = f"{auto_name} ({engine.emb.engine})"  # type: ignore[attr-defined]
                auto_name = name
            engine.encode(cases[0][1][:2])
            cells = []
            for _label, texts, n_tokens in cases:
                seconds = best_seconds(lambda e=engine, x=texts: e.encode(x), repeats)
                cells.append((n_tokens / seconds, len(texts) / seconds))
            p50, p95 = latency(lambda e=engine: e.query(QUERY), n=5 if quick else 15)
            rows[name] = [cells, p50, p95]
            engine.close()
            del engine
        lines += [
            f"#### {threads} thread{'s' if threads > 1 else ''}: tokens/s (texts/s); llama.cpp engines and "
            "`qwen_embed auto` on Q8_0, the torch engine on the f16 GGUF, Transformers and sentence-transformers "
            "on the HF checkpoint",
            "",
            "| engine | " + " | ".join(c[0] for c in cases) + " | 1 query p50 / p95 ms |",
            "|---|" + "---|" * len(cases) + "---|",
        ]
        for name, (cells, p50, p95) in rows.items():
            body = " | ".join(f"{tok:.1f} ({txt:.1f})" for tok, txt in cells)
            lines.append(f"| {name} | {body} | {p50:.0f} / {p95:.0f} |")
        pairs = [(auto_name, other) for other in rows if other != auto_name]
        pairs += [("qwen_embed torch bfloat16", "Transformers bfloat16")]
        pairs += [("qwen_embed torch bfloat16", "sentence-transformers bfloat16")]
        for ours, other in pairs:
            ratios = [o[0] / c[0] for o, c in zip(rows[ours][0], rows[other][0])]
            lines.append(f"| *{ours} ÷ {other}* | " + " | ".join(f"{r:.2f}x" for r in ratios) + " | |")
        lines.append("")
        if threads == max(threads_list):
            medium = {name: cells[1][0] for name, (cells, _, _) in rows.items()}

    # This machine's GEMM peaks on the model's own shapes, and each engine as a fraction of its peak.
    threads = max(threads_list)
    tokens = cases[1][2]
    print("GEMM peaks ...", file=sys.stderr, flush=True)
    peaks = gemm_peaks(shape, tokens, threads)
    flops = flops_per_token(shape, context=tokens // len(cases[1][1]))
    lines += [
        f"#### Against this machine's peaks: medium texts, {threads} threads",
        "",
        f"GEMM peaks on the model's layer GEMMs at {tokens} rows (torch, same run): float32 "
        f"{peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s, int8 (`torch._int_mm`) "
        f"{peaks['int8']:.0f} GOP/s. One token costs {flops / 1e9:.2f} GFLOP (encoder only, attention at "
        f"{tokens // len(cases[1][1])} tokens). llama.cpp on Q8_0 multiplies int8 quants, so its rows are set "
        "against the int8 peak.",
        "",
        "| engine | GFLOP/s | peak it is set against | fraction of that peak |",
        "|---|---|---|---|",
    ]
    for name, rate in medium.items():
        kind = "bfloat16" if "bfloat16" in name else "float32" if "float32" in name else "int8"
        achieved = rate * flops / 1e9
        lines.append(f"| {name} | {achieved:.0f} | {kind} {peaks[kind]:.0f} | {achieved / peaks[kind]:.0%} |")
    lines.append("")

    # Start-up and first query: each engine in a fresh process (imports included).
    startup_kinds = [
        ("qwen_embed", "ours:llama", files["Q8_0"]),
        ("qwen_embed auto", "ours:auto", files["Q8_0"]),
        ("qwen_embed torch float32 (Q8_0 file)", "ours:torch:float32", files["Q8_0"]),
        ("qwen_embed torch bfloat16 (Q8_0 file)", "ours:torch:bfloat16", files["Q8_0"]),
        ("Llama.embed", "llama-embed", files["Q8_0"]),
        ("Transformers float32", "transformers:float32", hf_dir),
        ("Transformers bfloat16", "transformers:bfloat16", hf_dir),
        ("sentence-transformers float32", "sentence-transformers:float32", hf_dir),
        ("sentence-transformers bfloat16", "sentence-transformers:bfloat16", hf_dir),
    ]
    lines += [
        f"#### Start-up and first query: one fresh process per engine, {threads} threads",
        "",
        "| engine | imports s | load s | first query ms | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for label, kind, path in startup_kinds:
        print(f"start-up: {label} ...", file=sys.stderr, flush=True)
        row = run_child("--child-startup", kind, str(path), str(threads))
        if kind == "ours:auto":
            label = f"{label} ({row['engine']})"
        lines.append(
            f"| {label} | {row['import_s']:.2f} | {row['load_s']:.2f} | {row['first_query_ms']:.0f} "
            f"| {row['peak_rss_mib']:.0f} |"
        )
    lines.append("")

    # Torch-engine loading on generated Q8_0 files of the real shapes (0.6B and 4B).
    from bench_throughput import build_model

    load_shapes = ["small"] if quick else (["0.6B"] if args.skip_4b else ["0.6B", "4B"])
    lines += [
        f"#### Torch engine loading a Q8_0 GGUF: fresh process, {threads} threads (load excludes imports)",
        "",
        "| shape | dtype | load s | load CPU s | weights MiB | peak RSS MiB | peak RSS ÷ weights |",
        "|---|---|---|---|---|---|---|",
    ]
    for load_shape in load_shapes:
        path = build_model(load_shape, "Q8_0")
        for dtype in ("bfloat16", "float32"):
            print(f"loading {path.name} as {dtype} ...", file=sys.stderr, flush=True)
            row = run_child("--child-startup", f"ours:torch:{dtype}", str(path), str(threads))
            lines.append(
                f"| {load_shape} | {dtype} | {row['load_s']:.2f} | {row['load_cpu_s']:.2f} | {row['weights_mib']:.0f} "
                f"| {row['peak_rss_mib']:.0f} | {row['peak_rss_mib'] / max(row['weights_mib'], 1):.2f} |"
            )
    lines.append("")

    # Quantization rows: each in a child process (clean peak RSS), medium texts, the most threads.
    texts_file = MODELS / "suite-medium-texts.json"
    texts_file.write_text(json.dumps(cases[1][1]))
    quant_rows = []
    for quant in quants:
        quant_rows.append((quant, run_child("--child-quant", str(files[quant]), str(texts_file), str(threads))))
    ref = np.load(f"{texts_file}.{files['F16'].stem}.npy")
    lines += [
        f"#### Quantizations (llama.cpp engine, pinned with backend='llama'): medium texts, {threads} threads, "
        "one child process each",
        "",
        "| quant | engine | file MiB | load s | tokens/s | peak RSS MiB | min cosine to f16 |",
        "|---|---|---|---|---|---|---|",
    ]
    for quant, row in quant_rows:
        vectors = np.load(f"{texts_file}.{files[quant].stem}.npy")
        cos = float((vectors * ref).sum(axis=1).min())
        size = files[quant].stat().st_size / 2**20
        lines.append(
            f"| {quant} | {row['engine']} | {size:.0f} | {row['load_s']:.2f} | {row['tok_s']:.1f} "
            f"| {row['peak_rss_mib']:.0f} | {cos:.5f} |"
        )
    lines.append("")

    # 4B shape: qwen_embed and Llama.embed on a generated Q8_0 (no HF checkpoint: 16 GB in float32).
    if not (args.skip_4b or quick):
        path4 = build_model("4B", "Q8_0")
        texts = cases[1][1][:4]
        row4 = []
        n_tokens = cases[1][2] * len(texts) // len(cases[1][1])
        for make in (lambda: Ours(path4, threads), lambda: LlamaEmbed(path4, threads)):
            engine = make()
            engine.encode(texts[:1])
            label = f"qwen_embed auto ({engine.emb.engine})" if isinstance(engine, Ours) else engine.name
            row4.append((label, n_tokens / best_seconds(lambda e=engine: e.encode(texts), 1)))
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

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU only)"
    command = "python benchmarks/bench_suite.py" + (" --quick" if quick else "")
    if args.threads:
        command += f" --threads {args.threads}"
    if args.repeats:
        command += f" --repeats {args.repeats}"
    if args.skip_4b:
        command += " --skip-4b"
    header = [
        f"### {dt.date.today().isoformat()}: benchmark suite, {'small shape (--quick)' if quick else '0.6B shape'} "
        "(random weights, converted from HF)",
        "",
        f"- Machine: {machine_line()}, Python {platform.python_version()}; GPU: {gpu}",
        f"- Versions: qwen_embed {qwen_embed.__version__}, llama-cpp-python {llama_cpp.__version__}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, sentence-transformers "
        f"{sentence_transformers.__version__}, llama-server "
        f"{'built from the vendored llama.cpp of the same llama-cpp-python' if server_bin.exists() else 'not built'}",
        f"- Models: `{hf_dir.name}` (HF, float32) and its conversions `{files['Q8_0'].name}` etc.",
        f"- Command: `{command}` (all engines in one run; best of {repeats} per cell)",
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
