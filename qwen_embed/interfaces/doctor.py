"""``qwen-embed doctor``: run the whole path on a tiny generated model and report what works."""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

__all__ = ["Check", "run_checks"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def run_checks(out: TextIO) -> list[Check]:
    """Run every check, printing one line each to ``out``; return them."""
    from .. import __version__, _config

    checks: list[Check] = []

    def check(name: str, fn: Callable[[], str]) -> None:
        start = time.perf_counter()
        try:
            detail, ok = fn(), True
        except Exception as error:  # a doctor reports, it does not crash
            detail, ok = f"{type(error).__name__}: {error}", False
        checks.append(Check(name, ok, detail))
        seconds = time.perf_counter() - start
        print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail} ({seconds:.2f} s)", file=out, flush=True)

    print(f"qwen-embed {__version__} on Python {platform.python_version()}, {platform.machine()}", file=out)

    def engine() -> str:
        import llama_cpp

        from ..engines.llama import build_features

        features = build_features()
        names = ("AVX2", "AVX512", "AVX512_BF16", "AVX512_VNNI", "AMX_INT8", "BLAS", "GPU_OFFLOAD")
        on = [k for k in names if features.get(k)]
        return f"llama-cpp-python {llama_cpp.__version__}; build features: {', '.join(on) or 'none of note'}"

    check("llama.cpp", engine)
    check("threads", lambda: f"{_config.default_threads()} (set QWEN_EMBED_NUM_THREADS or n_threads= to change)")

    def backend() -> str:
        from ..engines.base import AUTO_TORCH_MIN_WIDTH, choose_backend

        chosen, reason = choose_backend("auto", None)
        why = reason.removeprefix("auto: ")
        if chosen == "llama":
            return f"backend='auto' (the default) uses llama.cpp: {why}"
        return (
            f"backend='auto' (the default) uses PyTorch for models {AUTO_TORCH_MIN_WIDTH} wide or more (0.6B and up) "
            f"whose weights fit in memory ({why}); llama.cpp for narrower ones or when memory is short"
        )

    check("backend", backend)

    with tempfile.TemporaryDirectory(prefix="qwen-embed-doctor-") as tmp:
        _path_checks(Path(tmp), check)

    failed = [c.name for c in checks if not c.ok]
    summary = f"{len(checks) - len(failed)}/{len(checks)} checks passed"
    print(summary + (f"; failed: {', '.join(failed)}" if failed else ""), file=out)
    return checks


def _path_checks(tmp: Path, check: Callable[[str, Callable[[], str]], None]) -> None:
    from ..embedder import Embedder
    from ..testing import make_model, quantize_model

    state: dict[str, object] = {}

    def build() -> str:
        state["f32"] = make_model(tmp / "doctor-f32.gguf", seed=7)
        state["no_eos"] = make_model(tmp / "doctor-noeos.gguf", seed=7, add_eos_token=None)
        return "tiny Qwen3 GGUFs written (random weights)"

    check("build a test model", build)
    if "f32" not in state:
        return

    def load() -> str:
        emb = Embedder(state["f32"], n_threads=None)  # type: ignore[arg-type]
        state["emb"] = emb
        notes = "; ".join(emb.workarounds) or "none needed"
        return f"{emb!r}; workarounds: {notes}"

    check("load", load)
    emb = state.get("emb")
    if not isinstance(emb, Embedder):
        return
    try:

        def eos() -> str:
            ids = emb.tokenize("hello world")
            plain = Embedder(state["no_eos"], n_threads=1)  # type: ignore[arg-type]
            try:
                other = plain.tokenize("hello world")
            finally:
                plain.close()
            for seq in (ids, other):
                if seq[-1] != emb.eos_token_id or int((seq == emb.eos_token_id).sum()) != 1:
                    raise AssertionError(f"sequence {seq.tolist()} does not end with exactly one EOS")
            return f"exactly one EOS ({emb.eos_token_id}) with and without add_eos_token in the file"

        check("tokenize + EOS", eos)

        def batch() -> str:
            texts = ["short", "a somewhat longer text about embeddings", "x " * 40]
            together = emb.encode(texts)
            worst = min(_cos(together[i], emb.encode(t)) for i, t in enumerate(texts))
            if worst < 0.9999:
                raise AssertionError(f"batched and single vectors differ (cosine {worst:.6f})")
            return f"batched = one at a time (min cosine {worst:.7f})"

        check("batch", batch)

        def mrl() -> str:
            raw = emb.encode("matryoshka", normalize=False)
            small = emb.encode("matryoshka", dim=32)
            expected = raw[:32] / np.linalg.norm(raw[:32])
            if not np.allclose(small, expected, atol=1e-5):
                raise AssertionError("dim=32 is not slice-then-normalize")
            return "dim=32 is slice-then-normalize"

        check("Matryoshka dim", mrl)

        def long_text() -> str:
            doc = "A paragraph about search. " * 400
            result = emb.encode_long(doc, chunk_tokens=128, overlap=16)
            if not all(doc[c.start : c.end] == c.text for c in result.chunks):
                raise AssertionError("chunk spans do not reconstruct the text")
            return f"{len(result.chunks)} chunks fused"

        check("long text", long_text)

        def quantized() -> str:
            q8 = quantize_model(state["f32"], tmp / "doctor-q8_0.gguf", "Q8_0")  # type: ignore[arg-type]
            with Embedder(q8, n_threads=None) as qemb:
                cos = _cos(qemb.encode("quantized"), emb.encode("quantized"))
                notes = "; ".join(qemb.workarounds) or "none needed"
            if cos < 0.99:
                raise AssertionError(f"Q8_0 is far from f32 (cosine {cos:.4f})")
            return f"Q8_0 loads and runs (cosine to f32 {cos:.5f}); workarounds: {notes}"

        check("quantized load", quantized)
    finally:
        emb.close()
