"""Reranker throughput: qwen_embed against llama-server --rerank and the Transformers recipe, same weights.

    bash benchmarks/build_llama_server.sh          # once: llama-server from the vendored sources
    python benchmarks/bench_rerank.py              # 0.6B shape: 1 query x 100 docs, 20 queries x 20 docs
    python benchmarks/bench_rerank.py --quick      # a tiny model and few pairs: proves the script runs

A random-weight ``Qwen3ForCausalLM`` (0.6B shape, tied head, the real vocabulary when ../shared/vocab
is there) is converted by llama.cpp's own convert_hf_to_gguf.py in reranker mode (``cls.output``,
RANK pooling, the rerank template), to f16 and then Q8_0, so every peer reads the same weights:
qwen_embed on llama.cpp (prefix sharing on and off) and on PyTorch (bfloat16), llama-server
``/v1/rerank`` on the same Q8_0 file (one request per query), and the Qwen3-Reranker README's
Transformers recipe in float32 and bfloat16. Documents are ~100 tokens. Rates are pairs per second,
best of ``--repeats``; each engine also reports its largest |score - Transformers float32|.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
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

SHAPE_06B = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
}
WORDS = (
    "model vector search query document index memory token layer weight quantize batch thread cache river "
    "mountain garden kitchen bread coffee music guitar planet ocean forest winter summer city contract court "
    "patent medicine protein enzyme market price order invoice train station ticket"
).split()

Pairs = list[tuple[str, str]]


def build_models(quick: bool) -> tuple[Path, Path]:
    """(HF checkpoint, reranker-mode Q8_0 GGUF), built once into benchmarks/models/."""
    from qwen_embed.testing import quantize_model
    from tests.parity_support import convert, llama_cpp_source
    from tests.reranker_support import RERANK_SHAPE, make_causal_lm_checkpoint, reranker_vocabulary

    vocab_path = SHARED_VOCAB if SHARED_VOCAB.exists() else None
    tag = ("tiny" if quick else "0.6B") + ("-qwen2vocab" if vocab_path else "-bpevocab")
    hf_dir = MODELS / f"hf-reranker-{tag}"
    if not (hf_dir / "model.safetensors").exists():
        print(f"building the {tag} Qwen3ForCausalLM checkpoint ...", file=sys.stderr, flush=True)
        shape = RERANK_SHAPE if quick else SHAPE_06B
        make_causal_lm_checkpoint(hf_dir, reranker_vocabulary(vocab_path), tied=True, seed=5, shape=shape)
    named = MODELS / f"qwen3-reranker-{tag}"  # llama.cpp's converter detects a reranker by the folder name
    if not named.exists():
        named.symlink_to(hf_dir.resolve(), target_is_directory=True)
    f16 = MODELS / f"reranker-{tag}-F16.gguf"
    if not f16.exists():
        print("converting with convert_hf_to_gguf.py (reranker mode) ...", file=sys.stderr, flush=True)
        convert(llama_cpp_source(MODELS / "cache"), named, f16, outtype="f16", real_vocab=vocab_path is not None)
    q8 = MODELS / f"reranker-{tag}-Q8_0.gguf"
    if not q8.exists():
        quantize_model(f16, q8, "Q8_0")
    return hf_dir, q8


def make_cases(quick: bool) -> dict[str, list[tuple[str, list[str]]]]:
    rng = np.random.default_rng(0)

    def text(n: int) -> str:
        return " ".join(WORDS[int(i)] for i in rng.integers(0, len(WORDS), n))

    n_docs, n_queries, per_query, words = (10, 3, 4, 40) if quick else (100, 20, 20, 90)  # ~100 tokens a document
    return {
        f"1 query x {n_docs} docs": [(text(7) + "?", [text(words) for _ in range(n_docs)])],
        f"{n_queries} queries x {per_query} docs": [
            (text(7) + "?", [text(words) for _ in range(per_query)]) for _ in range(n_queries)
        ],
    }


# ----------------------------------------------------------------------------- peers


class Peer:
    name = ""

    def scores(self, query: str, documents: list[str]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Ours(Peer):
    def __init__(self, path: Path, threads: int, name: str, **options: Any) -> None:
        from qwen_embed import Reranker

        self.name = name
        self.rr = Reranker(path, n_threads=threads, **options)

    def scores(self, query: str, documents: list[str]) -> np.ndarray:
        return self.rr.predict([(query, d) for d in documents])

    def close(self) -> None:
        self.rr.close()


class LlamaServerRerank(Peer):
    name = "llama-server --rerank"

    def __init__(self, binary: Path, path: Path, threads: int) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [str(binary), "-m", str(path), "--rerank", "-t", str(threads), "-tb", str(threads)]
        command += ["-c", "16384", "-np", "4", "-b", "4096", "-ub", "4096", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--log-disable"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("llama-server did not start")

    def scores(self, query: str, documents: list[str]) -> np.ndarray:
        body = json.dumps({"model": "m", "query": query, "documents": documents}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/rerank", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=3600) as response:
            results = json.loads(response.read())["results"]
        out = np.zeros(len(documents))
        for r in results:
            out[r["index"]] = r["relevance_score"]
        return out

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Transformers(Peer):
    def __init__(self, hf_dir: Path, threads: int, dtype: str) -> None:
        from tests.reranker_support import OfficialReranker

        self.name = f"Transformers recipe {dtype}"
        self.recipe = OfficialReranker(hf_dir, dtype=dtype, threads=threads)

    def scores(self, query: str, documents: list[str]) -> np.ndarray:
        return self.recipe.scores([(query, d) for d in documents], batch_size=16)[0]


# ----------------------------------------------------------------------------- measuring


def measure(peer: Peer, case: list[tuple[str, list[str]]], repeats: int) -> tuple[float, np.ndarray]:
    """(pairs per second, best of ``repeats``; the scores)."""
    n_pairs = sum(len(docs) for _, docs in case)
    peer.scores(case[0][0], case[0][1][:2])  # warm-up: context allocation, first-call costs
    best, scores = float("inf"), np.zeros(0)
    for _ in range(repeats):
        start = time.perf_counter()
        scores = np.concatenate([peer.scores(q, docs) for q, docs in case])
        best = min(best, time.perf_counter() - start)
    return n_pairs / best, scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, few pairs: check that the script runs")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=None, help="runs per measurement (default 3; quick 1)")
    parser.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER", str(HERE / "build" / "llama-server")))
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    parser.add_argument(
        "--torch-dtypes", default="float32,bfloat16", help="dtypes of the PyTorch rows (ours and Transformers)"
    )
    parser.add_argument("--only-first-case", action="store_true", help="just the 1 query x 100 documents case")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    hf_dir, gguf = build_models(args.quick)
    cases = make_cases(args.quick)
    if args.only_first_case:
        cases = dict(list(cases.items())[:1])
    dtypes = [d for d in args.torch_dtypes.split(",") if d]
    threads = args.threads

    makers: list[tuple[str, Callable[[], Peer]]] = [
        ("ours", lambda: Ours(gguf, threads, "qwen_embed llama.cpp, shared prefix")),
        ("ours", lambda: Ours(gguf, threads, "qwen_embed llama.cpp, no sharing", share_prefix=False)),
    ]
    if not args.no_torch:
        makers += [
            ("ours", lambda d=d: Ours(gguf, threads, f"qwen_embed torch {d}", backend="torch", dtype=d)) for d in dtypes
        ]
    server = Path(args.llama_server)
    if server.exists():
        makers.append(("peer", lambda: LlamaServerRerank(server, gguf, threads)))
    else:
        print(f"no llama-server at {server}: run benchmarks/build_llama_server.sh for that row", file=sys.stderr)
    if not args.no_torch:
        makers += [("peer", lambda d=d: Transformers(hf_dir, threads, d)) for d in dtypes]

    reference: dict[str, np.ndarray] = {}
    if not args.no_torch:
        recipe = Transformers(hf_dir, threads, "float32")
        reference = {name: np.concatenate([recipe.scores(q, docs) for q, docs in case]) for name, case in cases.items()}
        recipe.close()
    rows = []
    for _, make in makers:
        peer = make()
        try:
            cells = []
            worst = 0.0
            for name, case in cases.items():
                rate, scores = measure(peer, case, repeats)
                cells.append(rate)
                if name in reference:
                    worst = max(worst, float(np.abs(scores - reference[name]).max()))
            rows.append((peer.name, cells, worst))
            print(f"{peer.name}: {', '.join(f'{c:.1f}' for c in cells)} pairs/s", file=sys.stderr, flush=True)
        finally:
            peer.close()

    import llama_cpp

    print(f"\n### Reranker throughput ({'quick, tiny model' if args.quick else '0.6B shape, Q8_0'})\n")
    print(f"{platform.node()}, {threads} threads, llama-cpp-python {llama_cpp.__version__}, repeats {repeats}\n")
    print("| engine | " + " | ".join(f"{name} (pairs/s)" for name in cases) + " | max abs diff vs Transformers f32 |")
    print("|---|" + "---:|" * (len(cases) + 1))
    for name, cells, worst in rows:
        diff = f"{worst:.1e}" if reference else "n/a"
        print(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + f" | {diff} |")
    print(f"\ncommand: python benchmarks/bench_rerank.py {' '.join(sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
