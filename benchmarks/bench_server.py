"""Load test of ``qwen-embed serve``: small-request latency beside a large request, throughput, RSS.

The server runs as its own process (``python -m qwen_embed serve`` on 127.0.0.1, a free port,
with a reranker too), so its memory is measured alone. Four phases:

1. **alone**: latency of ``GET /health`` and of a 1-text ``POST /v1/embeddings``, nothing else running;
2. **loaded**: the same probes while one large request (10 MB of text, 2,048 inputs) and 50
   concurrent clients (1-text requests in a loop, from another process) run;
3. **rerank**: the same probes while one ``POST /v1/rerank`` whose first document is 10 MB (and
   a few short ones) and the 50 embedding clients run (issue 21: it used to freeze the server);
4. **memory**: 10,000 small requests from 50 concurrent clients, the server's RSS sampled every 1,000.

The models are random-weight Qwen3 GGUFs built by ``qwen_embed.testing.make_model`` and
``make_reranker_model`` (``--shape tiny`` by default: the server's own overhead is what is measured;
``--shape 0.6B`` gives the real shape, where one engine sub-batch takes seconds on a CPU and the
latency of a small request is bounded by that sub-batch instead). Only 127.0.0.1 is contacted;
every loop is bounded.

    python benchmarks/bench_server.py --quick                        # a minute or two: 1 MB, 8 clients, 500 requests
    python benchmarks/bench_server.py --threads 1                    # the figures for RESULTS.md (engine on 1 core)
    python benchmarks/bench_server.py --threads 1 --case rerank      # only the rerank phase
    python benchmarks/bench_server.py --json out.json                # and the numbers as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
WORDS = (
    "the model reads a document and returns one vector that places similar meanings close together "
    "so that search retrieval clustering and classification work across many languages and domains"
).split()


@dataclass
class Scale:
    large_bytes: int
    large_inputs: int
    clients: int
    memory_requests: int
    probes_alone: int
    max_probes: int
    rerank_bytes: int = 10 * 2**20
    rerank_short_documents: int = 16


FULL = Scale(
    large_bytes=10 * 2**20, large_inputs=2048, clients=50, memory_requests=10_000, probes_alone=200, max_probes=5_000
)
QUICK = Scale(
    large_bytes=2**20,
    large_inputs=256,
    clients=8,
    memory_requests=500,
    probes_alone=40,
    max_probes=500,
    rerank_bytes=2**20,
    rerank_short_documents=4,
)
SMOKE = Scale(  # seconds: checks that every phase runs, measures nothing
    large_bytes=2**16,
    large_inputs=16,
    clients=2,
    memory_requests=20,
    probes_alone=5,
    max_probes=50,
    rerank_bytes=2**16,
    rerank_short_documents=2,
)
CASES = ("all", "embeddings", "rerank")


@dataclass
class Report:
    scale: dict[str, Any]
    machine: str
    shape: str
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    large_request: dict[str, Any] = field(default_factory=dict)
    rerank_request: dict[str, Any] = field(default_factory=dict)
    throughput: dict[str, float] = field(default_factory=dict)
    rss_mb: list[tuple[int, float]] = field(default_factory=list)
    errors: int = 0
    server_alive: bool = True


# ---------------------------------------------------------------- the server process


def build_model(shape: str) -> Path:
    from qwen_embed.testing import make_model

    path = MODELS / f"random-{shape}-server-bench.gguf"
    if not path.exists():
        MODELS.mkdir(parents=True, exist_ok=True)
        print(f"building {path.name} ...", file=sys.stderr, flush=True)
        make_model(path, shape=shape, dtype="f16" if shape != "tiny" else "f32")
    return path


def build_reranker(shape: str) -> Path:
    from qwen_embed.testing import make_reranker_model

    path = MODELS / f"random-{shape}-server-bench-reranker.gguf"
    if not path.exists():
        MODELS.mkdir(parents=True, exist_ok=True)
        print(f"building {path.name} ...", file=sys.stderr, flush=True)
        make_reranker_model(path, shape=shape)
    return path


class Server:
    """``qwen-embed serve`` on a free port of 127.0.0.1; the URL comes from its banner (printed after the bind)."""

    def __init__(self, model: Path, *, max_length: int, threads: int | None, reranker: Path | None = None) -> None:
        args = [
            sys.executable,
            "-m",
            "qwen_embed",
            "serve",
            "--model-path",
            str(model),
            "--port",
            "0",
            "--log-level",
            "warning",
            "--no-access-log",
            "--long-text",
            "truncate",
            "--max-length",
            str(max_length),
            "--max-request-tokens",
            "100000000",
            "--max-body-bytes",
            "64MiB",
        ]
        if threads:
            args += ["--threads", str(threads)]
        if reranker is not None:
            args += ["--reranker", str(reranker)]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        self.url = ""
        for _ in range(1000):  # bounded: the banner is among the first lines
            line = self.process.stderr.readline()
            if not line:
                raise RuntimeError("the server exited before it was ready")
            found = re.search(r"serving .+ on (http://\S+)/v1", line)
            if found:
                self.url = found.group(1)
                break
        if not self.url:
            raise RuntimeError("no banner from the server")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            sys.stderr.write("server: " + line)

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


# ---------------------------------------------------------------- clients


def small_body(i: int) -> dict[str, Any]:
    return {"input": f"query number {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(8))}


def large_body(n_bytes: int, n_inputs: int) -> bytes:
    per_text = max(1, n_bytes // n_inputs)
    sentence = " ".join(WORDS) + " "
    text = (sentence * (per_text // len(sentence) + 1))[:per_text]
    return json.dumps({"input": [f"{i} {text}" for i in range(n_inputs)], "encoding_format": "base64"}).encode()


async def small_clients(
    url: str, *, concurrency: int, total: int | None, stop: Any | None, on_done: Any = None
) -> tuple[int, int]:
    """``concurrency`` clients sending 1-text requests until ``total`` are done or ``stop`` is set."""
    done = errors = 0
    issued = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:

        async def one_client() -> None:
            nonlocal done, errors, issued
            while (total is None or issued < total) and not (stop is not None and stop.is_set()):
                issued += 1
                try:
                    answer = await client.post("/v1/embeddings", json=small_body(issued))
                    errors += answer.status_code != 200
                except httpx.HTTPError:
                    errors += 1
                done += 1
                if on_done is not None:
                    on_done(done)

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return done, errors


def rerank_body(n_bytes: int, n_short: int) -> bytes:
    """A rerank request whose first document is ``n_bytes`` of text (then ``n_short`` short ones)."""
    sentence = " ".join(WORDS) + " "
    huge = (sentence * (n_bytes // len(sentence) + 1))[:n_bytes]
    documents = [huge] + [f"short document {i}: " + " ".join(WORDS[i : i + 12]) for i in range(n_short)]
    return json.dumps({"query": "what does the model return for a document?", "documents": documents}).encode()


def load_process(url: str, scale: dict[str, Any], kind: str, started: Any, stop: Any, out: Any) -> None:
    """Another process: the large request (``kind``: embeddings or rerank) and the concurrent clients (their GIL
    is not the probe's)."""
    if kind == "rerank":
        path, body = "/v1/rerank", rerank_body(scale["rerank_bytes"], scale["rerank_short_documents"])
        inputs = 1 + scale["rerank_short_documents"]
    else:
        path, body = "/v1/embeddings", large_body(scale["large_bytes"], scale["large_inputs"])
        inputs = scale["large_inputs"]
    result: dict[str, Any] = {}

    def send_large() -> None:
        began = time.perf_counter()
        answer = httpx.post(url + path, content=body, headers={"Content-Type": "application/json"}, timeout=3600)
        result.update(
            status=answer.status_code,
            seconds=time.perf_counter() - began,
            bytes=len(body),
            inputs=inputs,
            tokens=answer.json().get("usage", {}).get("prompt_tokens"),
        )
        if answer.status_code != 200:
            result["error"] = answer.text[:300]
        stop.set()

    began = time.perf_counter()
    sender = threading.Thread(target=send_large)
    sender.start()
    started.set()
    done, errors = asyncio.run(small_clients(url, concurrency=scale["clients"], total=None, stop=stop))
    sender.join()
    seconds = time.perf_counter() - began
    out.put({"large": result, "small_done": done, "small_errors": errors, "seconds": seconds})


def probe(client: httpx.Client, path: str, i: int) -> float:
    began = time.perf_counter()
    if path == "/health":
        answer = client.get(path)
    else:
        answer = client.post(path, json=small_body(i))
    elapsed = (time.perf_counter() - began) * 1000
    if answer.status_code != 200:
        raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:200]}")
    return elapsed


def summary(samples: list[float]) -> dict[str, float]:
    values = np.asarray(samples)
    return {
        "n": len(values),
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
    }


# ---------------------------------------------------------------- phases


def loaded_phase(
    client: httpx.Client, url: str, scale: Scale, kind: str
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Probe /health and a 1-text embedding while the load process runs its large ``kind`` request and clients."""
    print(f"loaded phase ({kind}) ...", file=sys.stderr, flush=True)
    ctx = mp.get_context("spawn")
    started, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    loader = ctx.Process(target=load_process, args=(url, asdict(scale), kind, started, stop, out))
    loader.start()
    started.wait(600)
    loaded: dict[str, list[float]] = {"/health": [], "/v1/embeddings": []}
    for i in range(scale.max_probes):
        if stop.is_set():
            break
        for path in loaded:
            loaded[path].append(probe(client, path, i))
    stop.set()
    load = out.get(timeout=3600)
    loader.join(600)
    return loaded, load


def run(scale: Scale, *, shape: str, max_length: int, threads: int | None, case: str = "all") -> Report:
    report = Report(
        scale=asdict(scale), machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", shape=shape
    )
    reranker = build_reranker(shape) if case in ("all", "rerank") else None
    server = Server(build_model(shape), max_length=max_length, threads=threads, reranker=reranker)
    try:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            for i in range(5):  # warm up
                probe(client, "/v1/embeddings", i)
            alone: dict[str, list[float]] = {"/health": [], "/v1/embeddings": []}
            for i in range(scale.probes_alone):
                for path in alone:
                    alone[path].append(probe(client, path, i))
            report.latency_ms["health alone"] = summary(alone["/health"])
            report.latency_ms["1-text alone"] = summary(alone["/v1/embeddings"])

            if case in ("all", "embeddings"):
                loaded, load = loaded_phase(client, server.url, scale, "embeddings")
                report.latency_ms["health beside large + clients"] = summary(loaded["/health"])
                report.latency_ms["1-text beside large + clients"] = summary(loaded["/v1/embeddings"])
                report.large_request = load["large"]
                report.throughput["small requests/s beside the large one"] = load["small_done"] / load["seconds"]
                report.errors += load["small_errors"] + (load["large"].get("status") != 200)

            if case in ("all", "rerank"):
                loaded, load = loaded_phase(client, server.url, scale, "rerank")
                report.latency_ms["health beside big rerank + clients"] = summary(loaded["/health"])
                report.latency_ms["1-text beside big rerank + clients"] = summary(loaded["/v1/embeddings"])
                report.rerank_request = load["large"]
                report.throughput["small requests/s beside the rerank"] = load["small_done"] / load["seconds"]
                report.errors += load["small_errors"] + (load["large"].get("status") != 200)

        if case in ("all", "embeddings"):
            print("memory phase ...", file=sys.stderr, flush=True)
            every = max(1, scale.memory_requests // 10)
            report.rss_mb.append((0, server.rss_mb()))

            def sample(done: int) -> None:
                if done % every == 0:
                    report.rss_mb.append((done, server.rss_mb()))

            began = time.perf_counter()
            done, errors = asyncio.run(
                small_clients(
                    server.url, concurrency=scale.clients, total=scale.memory_requests, stop=None, on_done=sample
                )
            )
            report.throughput["small requests/s (memory phase)"] = done / (time.perf_counter() - began)
            report.errors += errors
        report.server_alive = server.alive()
    finally:
        server.stop()
    return report


def print_report(report: Report) -> None:
    print(f"\nqwen-embed serve load test ({report.shape} model, {report.machine})")
    print(f"scale: {report.scale}")
    print(f"\n{'latency (ms)':<34} {'n':>6} {'p50':>9} {'p99':>9} {'max':>9}")
    for name, s in report.latency_ms.items():
        print(f"{name:<34} {s['n']:>6.0f} {s['p50']:>9.1f} {s['p99']:>9.1f} {s['max']:>9.1f}")
    for what, large in (("large request", report.large_request), ("rerank request", report.rerank_request)):
        if large:
            print(
                f"\n{what}: {large.get('bytes', 0) / 2**20:.1f} MB, {large.get('inputs')} inputs, "
                f"{large.get('tokens')} tokens, status {large.get('status')}, {large.get('seconds', 0):.1f} s"
                + (f" ({large['error']})" if "error" in large else "")
            )
    for name, value in report.throughput.items():
        print(f"{name}: {value:.0f}")
    if report.rss_mb:
        first, last = report.rss_mb[0][1], report.rss_mb[-1][1]
        print("RSS (MB) by requests done: " + ", ".join(f"{n}: {mb:.0f}" for n, mb in report.rss_mb))
        print(f"RSS growth over {report.rss_mb[-1][0]} requests: {last - first:+.1f} MB")
    print(f"errors: {report.errors}; server alive at the end: {report.server_alive}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small scale (1 MB, 8 clients, 500 requests)")
    parser.add_argument("--smoke", action="store_true", help="tiny scale: checks every phase runs (no figures)")
    parser.add_argument(
        "--case", choices=CASES, default="all", help="all phases, or only the embeddings or the rerank one"
    )
    parser.add_argument("--shape", default="tiny", help="model shape for make_model (default: tiny)")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per text the server embeds (truncate)")
    parser.add_argument(
        "--threads", type=int, default=None, help="engine threads (default: serve's, every CPU but one)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    scale = SMOKE if args.smoke else QUICK if args.quick else FULL
    report = run(scale, shape=args.shape, max_length=args.max_length, threads=args.threads, case=args.case)
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    return 0 if report.errors == 0 and report.server_alive else 1


if __name__ == "__main__":
    sys.exit(main())
