"""Close from any thread, Ctrl-C, fork and pickling: nothing crashes, hangs or is lost.

Crash-prone interleavings run in subprocesses that assert the exit code (a SIGSEGV is -11).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest

from qwen_embed import Embedder, EmbedderClosedError, InputTooLongError

from .conftest import ModelFactory

ROOT = Path(__file__).resolve().parents[1]


def run_script(code: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; a hang fails the test at ``timeout`` instead of blocking CI."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def small_model(model_factory: ModelFactory) -> Path:
    """Big enough that a decode takes a while: closes and signals land in the middle of one."""
    return model_factory(shape="small")


# ---------------------------------------------------------------- close from another thread


CLOSE_RACE = """
import sys, threading, time
from qwen_embed import Embedder, EmbedderClosedError
path, what = sys.argv[1], sys.argv[2]
text = ("word " * 400 + "\\n\\n") * 30
for round in range(12):
    emb = Embedder(path, n_threads=2, max_length=512, batch_tokens=512)
    errors, started = [], threading.Event()
    def work():
        started.set()
        try:
            while True:
                if what == "tokenize":
                    emb.count_tokens(text)
                elif what == "chunk":
                    emb.encode_long(text, chunk_tokens=128, overlap=16)
                else:
                    emb.encode([text[:2000]] * 8, long_text="truncate")
        except EmbedderClosedError as error:
            errors.append(error)
    worker = threading.Thread(target=work)
    worker.start()
    started.wait()
    time.sleep(0.002 * round)
    emb.close()
    worker.join(120)
    assert not worker.is_alive(), "worker still running after close"
    assert len(errors) == 1, errors
print("ok")
"""


@pytest.mark.parametrize("what", ["tokenize", "chunk", "decode"])
def test_close_from_another_thread_never_crashes(small_model: Path, what: str) -> None:
    done = run_script(CLOSE_RACE, str(small_model), what)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"


def test_close_returns_while_a_long_encode_runs_and_the_call_gets_closed_error(small_model: Path) -> None:
    emb = Embedder(small_model, n_threads=2, batch_tokens=256)
    texts = ["many words in a row " * 40] * 64  # dozens of decodes
    outcome: list[BaseException | np.ndarray] = []
    in_decode, release = threading.Event(), threading.Event()

    engine = emb._engine
    original = engine.embed

    def held_embed(sequences):  # failure injection: hold the call inside the engine until released
        result = original(sequences)
        in_decode.set()
        release.wait(120)
        return result

    engine.embed = held_embed  # type: ignore[method-assign]

    def work() -> None:
        try:
            outcome.append(emb.encode(texts))
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=work)
    worker.start()
    assert in_decode.wait(120)
    closer = threading.Thread(target=emb.close)
    closer.start()
    closer.join(60)  # close() must not wait for the running call: that call is held until we release it
    assert not closer.is_alive(), "close() waited for the running encode"
    assert worker.is_alive() and not outcome  # the encode was still running when close() returned
    release.set()
    worker.join(120)
    assert isinstance(outcome[0], EmbedderClosedError), outcome
    with pytest.raises(EmbedderClosedError):
        emb.encode_long("after close")
    with pytest.raises(EmbedderClosedError):
        emb.count_tokens("after close")


def test_close_is_idempotent_and_threads_share_one_embedder(tiny_model: Path) -> None:
    emb = Embedder(tiny_model, n_threads=1)
    expected = emb.encode(["alpha", "beta gamma"])
    results: list[np.ndarray] = []

    def work() -> None:
        for _ in range(20):
            results.append(emb.encode(["alpha", "beta gamma"]))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 80
    for r in results:
        np.testing.assert_allclose(r, expected, atol=5e-4)
    emb.close()
    emb.close()


# ---------------------------------------------------------------- Ctrl-C

CTRL_C = """
import sys, time, threading, os, signal
from qwen_embed import Embedder
emb = Embedder(sys.argv[1], n_threads=2, backend=sys.argv[2], batch_tokens=2048, max_length=2048)
text = "many words in a row " * 400
decoding = threading.Event()
engine = emb._engine
original = engine.embed
def noting_embed(sequences):  # the interrupt is sent once decoding is under way: a gate, not a sleep
    decoding.set()
    return original(sequences)
engine.embed = noting_embed
def interrupt():
    decoding.wait()
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=interrupt, daemon=True).start()
try:
    emb.encode([text] * 200, long_text="truncate")
    print("finished before the interrupt")
except KeyboardInterrupt:
    print("interrupted")
vec = emb.encode(["still usable"])
print("usable", vec.shape)
"""


@pytest.mark.parametrize("backend", ["llama", "torch"])
def test_ctrl_c_is_a_keyboard_interrupt_and_leaves_the_embedder_usable(small_model: Path, backend: str) -> None:
    pytest.importorskip("torch") if backend == "torch" else None
    done = run_script(CTRL_C, str(small_model), backend)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.split("\n")
    assert lines[0] == "interrupted", done.stdout
    assert lines[1].startswith("usable"), done.stdout
    assert "Exception ignored" not in done.stderr


OWN_HANDLER = """
import os, signal, sys, threading
import numpy as np
from qwen_embed import Embedder
from qwen_embed.engines.llama import LlamaCppEngine

in_decode, sent = threading.Event(), threading.Event()
original = LlamaCppEngine._on_eval
def on_eval(self, tensor, ask, user_data):  # the SIGINT lands while llama.cpp runs its callbacks
    if not in_decode.is_set():
        in_decode.set()
        sent.wait(60)
    return original(self, tensor, ask, user_data)
LlamaCppEngine._on_eval = on_eval

def own_handler(signum, frame):
    raise KeyboardInterrupt("the application's own handler")
signal.signal(signal.SIGINT, own_handler)

def interrupt():
    in_decode.wait(60)
    os.kill(os.getpid(), signal.SIGINT)
    sent.set()

emb = Embedder(sys.argv[1], n_threads=2, backend="llama", max_length=512, batch_tokens=512)
in_decode.set(); sent.set()
expected = emb.encode(["still usable"])
outcomes = []
for round in range(6):
    in_decode.clear(); sent.clear()
    killer = threading.Thread(target=interrupt)
    killer.start()
    try:
        emb.encode(["many words in a row " * 20] * 8)
        outcomes.append("not interrupted")
    except KeyboardInterrupt as error:
        outcomes.append(str(error))
    except Exception as error:
        outcomes.append(f"{type(error).__name__}: {error}")
    killer.join()
    in_decode.set(); sent.set()
    assert np.allclose(emb.encode(["still usable"]), expected, atol=1e-5)
assert signal.getsignal(signal.SIGINT) is own_handler
print("\\n".join(outcomes))
"""


def test_an_applications_own_sigint_handler_interrupts_a_decode_every_time(small_model: Path) -> None:
    done = run_script(OWN_HANDLER, str(small_model))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:6] == ["the application's own handler"] * 6, done.stdout
    assert "Exception ignored" not in done.stderr, done.stderr[-2000:]


OWN_HANDLER_AT_LOAD = """
import logging, os, signal, sys
from qwen_embed import Embedder

def own_handler(signum, frame):
    raise KeyboardInterrupt("the application's own handler")
signal.signal(signal.SIGINT, own_handler)

class InterruptOnce(logging.Handler):  # the SIGINT lands inside llama.cpp's log callback, mid-load
    sent = False
    def emit(self, record):
        if not InterruptOnce.sent:
            InterruptOnce.sent = True
            os.kill(os.getpid(), signal.SIGINT)
native = logging.getLogger("qwen_embed.llama_cpp")
native.setLevel(logging.DEBUG)
native.addHandler(InterruptOnce())
try:
    Embedder(sys.argv[1], n_threads=2, backend="llama")
    print("not interrupted")
except KeyboardInterrupt as error:
    print(error)
print(InterruptOnce.sent, signal.getsignal(signal.SIGINT) is own_handler)
"""


def test_an_applications_own_sigint_handler_interrupts_a_model_load(small_model: Path) -> None:
    """A handler that raises, called inside a ctypes callback, had its KeyboardInterrupt swallowed ("Exception
    ignored on calling ctypes callback") and the load went on; the handler now runs when the native call returns."""
    done = run_script(OWN_HANDLER_AT_LOAD, str(small_model))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == ["the application's own handler", "True True"], done.stdout
    assert "Exception ignored" not in done.stderr, done.stderr[-2000:]


NO_RAISE_HANDLER = """
import os, signal, sys, threading
import numpy as np
from qwen_embed import Embedder
from qwen_embed.engines.llama import LlamaCppEngine

seen = []
in_decode, sent = threading.Event(), threading.Event()
original = LlamaCppEngine._on_eval
def on_eval(self, tensor, ask, user_data):
    if not in_decode.is_set():
        in_decode.set()
        sent.wait(60)
    return original(self, tensor, ask, user_data)
LlamaCppEngine._on_eval = on_eval
emb = Embedder(sys.argv[1], n_threads=2, backend="llama")
in_decode.set(); sent.set()
expected = emb.encode(["a text", "another one"])
signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))  # counts, never raises
in_decode.clear(); sent.clear()
def interrupt():
    in_decode.wait(60)
    os.kill(os.getpid(), signal.SIGINT)
    sent.set()
threading.Thread(target=interrupt).start()
got = emb.encode(["a text", "another one"])
print(seen == [signal.SIGINT], bool(np.allclose(got, expected, atol=1e-5)))
"""


def test_a_sigint_handler_that_does_not_raise_runs_and_the_decode_completes(small_model: Path) -> None:
    done = run_script(NO_RAISE_HANDLER, str(small_model))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "True True", done.stdout + done.stderr[-2000:]


# ---------------------------------------------------------------- fork

FORK_POOL = """
import multiprocessing as mp, sys
from qwen_embed import Embedder, UnsafeForkError
emb = Embedder(sys.argv[1], n_threads=2, backend=sys.argv[2])
if sys.argv[3] == "used":
    emb.encode(["the parent ran the engine"])
def work(text):
    return emb.encode([text]).shape
with mp.get_context("fork").Pool(2) as pool:
    try:
        print(pool.map(work, ["a", "b", "c"], chunksize=1))
    except UnsafeForkError as error:
        print("UnsafeForkError:", str(error)[:60])
"""


@pytest.mark.parametrize("backend", ["llama", "torch"])
def test_fork_pool_after_use_fails_clearly_instead_of_hanging(small_model: Path, backend: str) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
    done = run_script(FORK_POOL, str(small_model), backend, "used", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("UnsafeForkError: "), done.stdout + done.stderr[-2000:]
    assert "spawn" in done.stdout or "process" in done.stdout


@pytest.fixture(scope="module")
def reranker_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .conftest import real_vocab
    from .reranker_support import make_reranker_gguf, reranker_vocabulary

    return make_reranker_gguf(tmp_path_factory.mktemp("rr") / "rr.gguf", reranker_vocabulary(real_vocab()))


FORK_POOL_PICKLED = """
import multiprocessing as mp, sys
from qwen_embed import Embedder, Reranker, UnsafeForkError
kind, path, backend = sys.argv[1:4]
if kind == "embedder":
    model = Embedder(path, n_threads=1, backend=backend)
    model.encode(["the parent ran the engine"])
else:
    model = Reranker(path, n_threads=1, backend=backend)
    model.predict([("a query", "the parent ran the engine")])
def work(task):
    m, text = task  # the model travels pickled, as a task argument
    return m.encode([text]).shape if kind == "embedder" else m.predict([(text, text)]).shape
with mp.get_context("fork").Pool(1) as pool:
    try:
        print(pool.map(work, [(model, "a")]))
    except UnsafeForkError as error:
        print("UnsafeForkError:", error)
"""


@pytest.mark.parametrize("backend", ["llama", "torch"])
@pytest.mark.parametrize("kind", ["embedder", "reranker"])
def test_a_model_passed_to_a_fork_pool_after_use_fails_in_the_task_instead_of_hanging(
    small_model: Path, reranker_file: Path, kind: str, backend: str
) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
    path = small_model if kind == "embedder" else reranker_file
    done = run_script(FORK_POOL_PICKLED, kind, str(path), backend, timeout=180)  # the pool used to wait forever
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("UnsafeForkError: "), done.stdout + done.stderr[-2000:]
    assert "'spawn'" in done.stdout


def test_an_unsafe_fork_unpickles_a_placeholder_that_pickles_on(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qwen_embed import UnsafeForkError
    from qwen_embed._model import ForkedModel
    from qwen_embed.engines import _guard

    emb = Embedder(tiny_model, n_threads=1, dim=32)
    data = pickle.dumps(emb)
    monkeypatch.setattr(_guard, "_threads_started_in", -1)  # as in a child forked after its parent decoded
    clone = pickle.loads(data)
    assert isinstance(clone, ForkedModel)
    assert "not loaded in this forked process" in repr(clone)
    with pytest.raises(UnsafeForkError, match="spawn"):
        clone.encode(["x"])
    with pytest.raises(UnsafeForkError, match="spawn"), clone:
        pass
    clone.close()
    monkeypatch.undo()
    again = pickle.loads(pickle.dumps(clone))  # it still pickles as the recipe: a spawn worker loads it
    assert isinstance(again, Embedder) and again.dim == 32
    again.close()
    emb.close()


def test_fork_pool_before_any_compute_works_on_llama(small_model: Path) -> None:
    done = run_script(FORK_POOL, str(small_model), "llama", "fresh", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[(1, 256), (1, 256), (1, 256)]", done.stdout


# ---------------------------------------------------------------- interpreter exit

BESIDE_LLAMA_CPP_PYTHON = """
import sys
import llama_cpp
from qwen_embed import Embedder
path, backend, order = sys.argv[1:4]
def ours():
    global emb
    emb = Embedder(path, backend=backend, n_threads=1)
    emb.encode(["hello world"])
def theirs():  # the application's own llama-cpp-python model (a RAG app's generator, say)
    global llm
    llm = llama_cpp.Llama(path, embedding=True, verbose=False, n_threads=1)
    llm.embed(["hello world"])
for step in (ours, theirs) if order == "ours-first" else (theirs, ours):
    step()
print("done")
"""


@pytest.mark.parametrize("order", ["ours-first", "theirs-first"])
@pytest.mark.parametrize("backend", ["llama", "torch"])
def test_exit_beside_llama_cpp_pythons_own_model_is_clean(small_model: Path, backend: str, order: str) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
    done = run_script(BESIDE_LLAMA_CPP_PYTHON, str(small_model), backend, order)  # was a segfault (rc 139)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert done.stdout.strip() == "done"


DAEMON_AT_EXIT = """
import sys, threading
from qwen_embed import Embedder
from qwen_embed.engines.llama import LlamaCppEngine
from qwen_embed.engines.torch import TorchEngine
path, backend = sys.argv[1:3]
emb = Embedder(path, backend=backend, n_threads=2, max_length=2048, batch_tokens=2048)
inside = threading.Event()
engine_class, step = (TorchEngine, "_forward") if backend == "torch" else (LlamaCppEngine, "_decode")
original = getattr(engine_class, step)
def noting(self, *args):  # note when the daemon thread is inside the engine
    inside.set()
    return original(self, *args)
setattr(engine_class, step, noting)
def work():
    while True:
        emb.encode(["many words in a row " * 400] * 8, long_text="truncate")
threading.Thread(target=work, daemon=True).start()
inside.wait(120)
print("exiting", flush=True)
"""


@pytest.mark.parametrize("backend", ["llama", "torch"])
def test_exit_while_a_daemon_thread_encodes_is_clean_and_quiet(small_model: Path, backend: str) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
    done = run_script(DAEMON_AT_EXIT, str(small_model), backend)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert done.stdout.strip() == "exiting", done.stdout[-3000:]  # no native backtrace (llama.cpp ran gdb on it)
    assert done.stderr == "", done.stderr[-3000:]


# ---------------------------------------------------------------- pickling


def _encode_with(emb: Embedder, texts: list[str]) -> np.ndarray:
    with emb:
        return emb.encode(texts)


def test_pickles_as_a_recipe(tiny_model: Path) -> None:
    emb = Embedder(tiny_model, n_threads=1, dim=32, normalize=True, long_text="truncate", prompts={"mine": "Do it"})
    clone = pickle.loads(pickle.dumps(emb))
    assert clone is not emb and clone.model_path == emb.model_path
    assert (clone.dim, clone.long_text, clone.n_threads) == (32, "truncate", 1)
    assert "mine" in clone.list_prompts()
    np.testing.assert_allclose(
        clone.encode(["x y"], prompt_name="mine"), emb.encode(["x y"], prompt_name="mine"), atol=5e-4
    )
    emb.close()
    clone.close()
    assert pickle.loads(pickle.dumps(emb)).encode("closed ones pickle too").shape == (32,)


def test_spawn_pool_and_process_pool_executor_receive_a_working_embedder(tiny_model: Path) -> None:
    emb = Embedder(tiny_model, n_threads=1)
    texts = ["first text", "second one", "a third"]
    expected = emb.encode(texts)
    with get_context("spawn").Pool(2) as pool:
        results = pool.starmap_async(_encode_with, [(emb, texts)] * 2).get(timeout=180)  # fail, never hang
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as executor:
        results.append(executor.submit(_encode_with, emb, texts).result(timeout=180))
    for result in results:
        np.testing.assert_allclose(result, expected, atol=5e-4)
    emb.close()


def test_from_pretrained_embedder_unpickles_through_the_hub_when_the_file_is_gone(hub: object, tmp_path: Path) -> None:
    import shutil

    emb = Embedder.from_pretrained(
        "0.6B",
        quant="Q8_0",
        endpoint=hub.url,  # type: ignore[attr-defined]
        cache_dir=tmp_path / "cache",
        download_progress=False,
        token="hf_not_in_the_pickle",
    )
    data = pickle.dumps(emb)
    assert b"hf_not_in_the_pickle" not in data
    emb.close()
    shutil.rmtree(tmp_path / "cache")
    clone = pickle.loads(data)
    assert clone.resolution is not None and clone.resolution.quant == "Q8_0"
    assert clone.encode("back").shape == (clone.dim,)
    clone.close()


def test_errors_survive_pickling() -> None:
    error = InputTooLongError("too long", index=3, n_tokens=9000, limit=8192)
    back = pickle.loads(pickle.dumps(error))
    assert (str(back), back.index, back.n_tokens, back.limit) == ("too long", 3, 9000, 8192)


RAY_TASK = """
import sys, pickle
import ray
from qwen_embed import Embedder
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
emb = Embedder(sys.argv[1], n_threads=1)
@ray.remote
def work(e, texts):
    return e.encode(texts)
import numpy as np
out = ray.get(work.remote(emb, ["ray text"]))
print("close" if np.allclose(out, emb.encode(["ray text"]), atol=5e-4) else "differ")
ray.shutdown()
"""


def test_a_ray_task_receives_a_working_embedder(tiny_model: Path) -> None:
    pytest.importorskip("ray")
    done = run_script(RAY_TASK, str(tiny_model), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("close"), done.stdout


def test_signal_module_state_is_restored_after_a_decode(tiny_embedder: Embedder) -> None:
    tiny_embedder.encode(["restore the handler"])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
