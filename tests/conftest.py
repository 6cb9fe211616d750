from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qwen_embed import Embedder
from qwen_embed.testing import make_model

from .hub_server import HubServer

ROOT = Path(__file__).resolve().parents[1]
_SHARED_VOCAB = ROOT.parent / "shared" / "vocab" / "ggml-vocab-qwen2.gguf"


def real_vocab() -> Path | None:
    """The real Qwen2 vocabulary when ../shared is there (a newcomer's clone has none)."""
    env = os.environ.get("QWEN_EMBED_TEST_VOCAB")
    if env:  # a path, or "none" to run as a clone without ../shared would
        return None if env.lower() == "none" else Path(env)
    return _SHARED_VOCAB if _SHARED_VOCAB.exists() else None


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's caches, nor reaches a network hub."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")  # huggingface_hub 2.4 calls huggingface.co for its User-Agent
    monkeypatch.delenv("QWEN_EMBED_NUM_THREADS", raising=False)


ModelFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def model_factory(tmp_path_factory: pytest.TempPathFactory) -> ModelFactory:
    """Build (once per session and per option set) a GGUF with :func:`make_model`."""
    root = tmp_path_factory.mktemp("models")
    built: dict[tuple[tuple[str, Any], ...], Path] = {}

    def factory(**options: Any) -> Path:
        key = tuple(sorted((k, str(v)) for k, v in options.items()))
        if key not in built:
            path = root / f"model-{len(built)}.gguf"
            built[key] = make_model(path, **options)
        return built[key]

    return factory


@pytest.fixture(scope="session")
def tiny_model(model_factory: ModelFactory) -> Path:
    """f32, 2 layers, 64 wide, trained BPE vocabulary (no ../shared needed)."""
    return model_factory()


@pytest.fixture(scope="session")
def real_vocab_model(model_factory: ModelFactory) -> Path:
    """f32 tiny model with the real Qwen2 vocabulary when available, else the trained one."""
    vocab = real_vocab()
    return model_factory(vocab=vocab) if vocab else model_factory()


@pytest.fixture(scope="session")
def tiny_embedder(tiny_model: Path) -> Iterator[Embedder]:
    emb = Embedder(tiny_model, n_threads=2)
    yield emb
    emb.close()


OFFICIAL_06B = "Qwen/Qwen3-Embedding-0.6B-GGUF"


@pytest.fixture(scope="session")
def hub_models(model_factory: ModelFactory) -> dict[str, Path]:
    """The files a fake official 0.6B repo serves: a true Q8_0 and an f16 of the tiny model."""
    return {"Q8_0": model_factory(quant="Q8_0"), "F16": model_factory(dtype="f16")}


@pytest.fixture
def hub(hub_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A local Hub on 127.0.0.1 serving the official 0.6B repo's layout; the process is online for it."""
    import huggingface_hub.constants

    from qwen_embed.hub import download as hub_module

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_module, "_RETRY_DELAYS", (0.01, 0.01))
    with HubServer() as server:
        server.add_repo(
            OFFICIAL_06B,
            {
                "Qwen3-Embedding-0.6B-Q8_0.gguf": hub_models["Q8_0"],
                "Qwen3-Embedding-0.6B-f16.gguf": hub_models["F16"],
                "README.md": b"# Qwen3-Embedding-0.6B-GGUF\n",
            },
        )
        yield server


PARITY_REPORT: list[str] = []  # lines the parity tests report; shown at the end of the run


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if PARITY_REPORT:
        terminalreporter.section("parity with the official Transformers recipe")
        for line in PARITY_REPORT:
            terminalreporter.write_line(line)
