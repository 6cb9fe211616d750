"""What every framework adapter shares: light imports, the install hint, the process-wide model cache,
and clear errors for bad use."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from qwen_embed import (
    ConfigurationError,
    DimensionError,
    Embedder,
    EmbedderClosedError,
    InputTypeError,
    InvalidPromptError,
    ModelNotFoundError,
    UnknownPromptError,
)
from qwen_embed.integrations import MissingExtraError, cached_models, clear_cache, shared_embedder
from qwen_embed.integrations._cache import is_closed
from qwen_embed.integrations._common import ModelSource, Sides

from .conftest import OFFICIAL_06B, ModelFactory
from .hub_server import HubServer

FRAMEWORKS = {  # adapter module -> (framework module, extra)
    "langchain": ("langchain_core", "langchain"),
    "llama_index": ("llama_index", "llamaindex"),
    "haystack": ("haystack", "haystack"),
    "chroma": ("chromadb", "chroma"),
    "mteb": ("mteb", "mteb"),
}


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )


def test_importing_the_package_imports_no_framework() -> None:
    done = _run(
        """
        import sys
        import qwen_embed, qwen_embed.integrations
        heavy = ["langchain_core", "llama_index", "haystack", "chromadb", "mteb", "pymilvus", "torch", "ray"]
        print(sorted(m for m in heavy if m in sys.modules))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_missing_framework_gives_the_pip_command() -> None:
    """Failure injection: each framework made unimportable (``sys.modules[name] = None``)."""
    done = _run(
        f"""
        import importlib, sys
        from qwen_embed.integrations import MissingExtraError
        for adapter, (framework, extra) in {FRAMEWORKS!r}.items():
            sys.modules[framework] = None
            try:
                importlib.import_module("qwen_embed.integrations." + adapter)
            except MissingExtraError as error:
                assert isinstance(error, ImportError)
                assert f'pip install "qwen-embed[{{extra}}]"' in str(error), str(error)
                print(adapter, "ok")
            else:
                raise SystemExit(adapter + " imported without its framework")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [w for a in FRAMEWORKS for w in (a, "ok")]
    assert issubclass(MissingExtraError, ImportError)


def test_one_model_per_path_and_load_options(model_factory: ModelFactory) -> None:
    path = model_factory(seed=11)
    clear_cache()
    first = shared_embedder(path, options={"n_threads": 2})
    assert shared_embedder(str(path), options={"n_threads": 2}) is first  # str or Path, same file
    assert shared_embedder(path.parent / ".." / path.parent.name / path.name, options={"n_threads": 2}) is first
    other = shared_embedder(path, options={"n_threads": 2, "max_length": 256})  # another load option
    assert other is not first and other.max_length == 256
    assert {id(m) for m in cached_models()} >= {id(first), id(other)}
    clear_cache()
    assert cached_models() == []
    assert shared_embedder(path, options={"n_threads": 2}) is not first  # loaded afresh
    assert first.encode("still usable").shape == (64,)  # clearing the cache closes nothing


def test_concurrent_first_use_loads_once(model_factory: ModelFactory) -> None:
    path = model_factory(seed=12)
    clear_cache()
    got: list[Embedder] = []
    barrier = threading.Barrier(6)

    def load() -> None:
        barrier.wait()
        got.append(shared_embedder(path, options={"n_threads": 1}))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(got) == 6 and all(g is got[0] for g in got)
    assert sum(1 for m in cached_models() if m.model_path == path.resolve()) == 1


def test_a_closed_cached_model_is_replaced(model_factory: ModelFactory) -> None:
    path = model_factory(seed=13)
    first = shared_embedder(path, options={"n_threads": 2})
    first.close()
    second = shared_embedder(path, options={"n_threads": 2})
    assert second is not first and second.encode("x").shape == (64,)


def test_bad_options_name_the_choices(tiny_model: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown option 'n_thread'.*n_threads"):
        shared_embedder(tiny_model, options={"n_thread": 2})
    with pytest.raises(ConfigurationError, match="must be a dict"):
        shared_embedder(tiny_model, options=[("n_threads", 2)])  # type: ignore[arg-type]
    with pytest.raises(ModelNotFoundError, match=r"missing\.gguf"):
        shared_embedder(tiny_model.parent / "missing.gguf")
    with pytest.raises(ConfigurationError, match="model must be"):
        shared_embedder(42)  # type: ignore[arg-type]


def test_model_source_rejects_bad_use(tiny_model: Path) -> None:
    with pytest.raises(InputTypeError, match=r"embedder= must be a qwen_embed\.Embedder, not str"):
        ModelSource(Embedder, instance="model.gguf")
    emb = Embedder(tiny_model, n_threads=2)
    with pytest.raises(ConfigurationError, match="not both"):
        ModelSource(Embedder, instance=emb, model=tiny_model)
    emb.close()
    with pytest.raises(EmbedderClosedError, match="was closed"):
        ModelSource(Embedder, instance=emb)


def test_sides_check_their_values(tiny_embedder: Embedder) -> None:
    with pytest.raises(ConfigurationError, match="dim must be a positive int"):
        Sides(dim=0)
    with pytest.raises(ConfigurationError, match="task must be a prompt name"):
        Sides(task="")
    with pytest.raises(InvalidPromptError, match="query_instruction must be a str, not int"):
        Sides(query_instruction=3)  # type: ignore[arg-type]
    with pytest.raises(UnknownPromptError, match=r"Unknown prompt 'qaa'.*Did you mean 'qa'"):
        Sides(task="qaa").check(tiny_embedder)
    with pytest.raises(DimensionError, match=r"dim=4096 .*64"):
        Sides(dim=4096).check(tiny_embedder)


def test_copies_and_pickles_share_the_model(tiny_model: Path) -> None:
    import copy
    import pickle

    source = ModelSource(Embedder, model=tiny_model, options={"n_threads": 2})
    model = source.get()
    assert copy.deepcopy(source).get() is model  # a deep copy never loads a second model
    assert pickle.loads(pickle.dumps(source)).get() is model  # unpickled: from the cache, by path and options


def test_a_local_file_is_recorded_by_absolute_path_and_real_quant(
    model_factory: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    q8 = model_factory(quant="Q8_0")
    monkeypatch.chdir(q8.parent)
    source = ModelSource(Embedder, model=q8.name, options={"n_threads": 2})  # relative, not loaded yet
    expected = {"model": str(q8.resolve()), "quant": "Q8_0", "embedder_options": {"n_threads": 2}}
    assert source.config() == expected and not source.loaded  # the quant read from the file's header
    assert source.get().quantization == "Q8_0" and source.config() == expected
    with Embedder(q8, n_threads=2) as emb:
        assert ModelSource(Embedder, instance=emb).config("reranker_options") == {
            "model": str(q8.resolve()),
            "quant": "Q8_0",
            "reranker_options": {},
        }
    assert ModelSource(Embedder, model="0.6B").config()["quant"] is None  # a catalog name: as given
    assert shared_embedder(q8, quant="q8_0", options={"n_threads": 2}).quantization == "Q8_0"  # any spelling
    with pytest.raises(ConfigurationError, match=r"holds Q8_0 weights, not quant='F16'.*pass quant=None"):
        shared_embedder(q8, quant="F16", options={"n_threads": 2})


def test_a_model_from_the_hub_is_recorded_by_repo_quant_and_revision(hub: HubServer) -> None:
    emb = Embedder.from_pretrained("0.6B", endpoint=hub.url, n_threads=2, download_progress=False)
    assert emb.resolution is not None
    config = ModelSource(Embedder, instance=emb).config()
    assert config == {
        "model": OFFICIAL_06B,
        "quant": "Q8_0",
        "embedder_options": {"revision": emb.resolution.revision},
    }  # not the cache's snapshot path, which another machine does not have
    options = {**config["embedder_options"], "endpoint": hub.url, "n_threads": 2}  # the endpoint is this machine's
    again = shared_embedder(config["model"], quant=config["quant"], options=options)
    assert again.model_path.resolve() == emb.model_path.resolve() and again.quantization == "Q8_0"
    emb.close()


def test_closed_is_read_from_the_public_property(tiny_model: Path) -> None:
    emb = Embedder(tiny_model, n_threads=2)
    assert not emb.closed and not is_closed(emb)
    emb.close()
    assert emb.closed and is_closed(emb)
