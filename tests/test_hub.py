"""The downloader against a real HTTP server on 127.0.0.1 that speaks the Hub's protocol."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwen_embed import (
    AmbiguousFileError,
    CacheNotWritableError,
    ChecksumMismatchError,
    ConfigurationError,
    DownloadError,
    Embedder,
    GatedRepoError,
    HubOptions,
    MemoryBudgetError,
    NoGGUFFilesError,
    NotCachedError,
    QuantNotFoundError,
    RepoNotFoundError,
    Reranker,
    UnknownModelError,
    download_model,
    list_quants,
    resolve_model,
)
from qwen_embed.hub.download import fetch_model

from .conftest import OFFICIAL_06B
from .hub_server import HubServer, closed_port_url

Q8 = "Qwen3-Embedding-0.6B-Q8_0.gguf"
F16 = "Qwen3-Embedding-0.6B-f16.gguf"


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub 2.x would fetch a registry from huggingface.co while building its User-Agent."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file() and ".locks" not in p.parts)


def test_list_quants_reads_the_live_file_list(hub: HubServer, hub_models: dict[str, Path], tmp_path: Path) -> None:
    quants = list_quants("0.6B", endpoint=hub.url, cache_dir=tmp_path)
    assert [q.quant for q in quants] == ["F16", "Q8_0"]  # best quality first
    assert quants[1].filename == Q8 and quants[1].size == hub_models["Q8_0"].stat().st_size
    assert quants[1].sha256 == (_sha(hub_models["Q8_0"]),)
    assert not any(q.cached for q in quants)


def test_download_then_embed_end_to_end(hub: HubServer, hub_models: dict[str, Path], tmp_path: Path) -> None:
    with Embedder.from_pretrained(
        "Qwen/Qwen3-Embedding-0.6B-GGUF", quant="Q8_0", endpoint=hub.url, cache_dir=tmp_path, n_threads=2
    ) as emb:
        assert emb.model_path.name == Q8 and str(tmp_path) in str(emb.model_path)
        assert emb.resolution is not None and emb.resolution.quant == "Q8_0"
        got = emb.encode_queries(["What is GGUF?"])
    with Embedder(hub_models["Q8_0"], n_threads=2) as local:
        want = local.encode_queries(["What is GGUF?"])
    np.testing.assert_array_equal(got, want)
    assert _sha(tmp_path / "models--Qwen--Qwen3-Embedding-0.6B-GGUF" / "snapshots" / emb.model_path.parent.name / Q8)


def test_cached_file_needs_no_network(hub: HubServer, tmp_path: Path) -> None:
    first = download_model("0.6B", quant="Q8_0", endpoint=hub.url, cache_dir=tmp_path)
    seen = len(hub.log)
    assert hub.requests("GET", "/resolve/") and hub.requests("GET", "/tree/")
    again = download_model("qwen3-embedding-0.6b", quant="q8_0", endpoint=hub.url, cache_dir=tmp_path)
    assert again == first
    assert len(hub.log) == seen  # not one request


@pytest.mark.parametrize(("quant", "name"), [("q8_0", Q8), ("Q8_0", Q8), ("f16", F16), ("F16", F16), ("fp16", F16)])
def test_quant_names_are_case_insensitive(hub: HubServer, tmp_path: Path, quant: str, name: str) -> None:
    assert download_model("0.6B", quant=quant, endpoint=hub.url, cache_dir=tmp_path, progress=False).name == name


def test_missing_quant_lists_the_available_ones(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(QuantNotFoundError, match=r"no Q4_K_M file.*F16 .*Q8_0 "):
        download_model("0.6B", quant="Q4_K_M", endpoint=hub.url, cache_dir=tmp_path)


def test_auto_picks_the_best_quant_that_fits(hub: HubServer, hub_models: dict[str, Path], tmp_path: Path) -> None:
    big = resolve_model("0.6B", quant="auto", endpoint=hub.url, cache_dir=tmp_path, memory_budget=10**12)
    assert big.quant == "F16" and "auto chose F16" in big.reason and "memory_budget" in big.reason
    f16_need = hub_models["F16"].stat().st_size + (big.catalog.kv_cache_bytes() if big.catalog else 0) + 512 * 2**20
    middle = resolve_model("0.6B", quant="AUTO", endpoint=hub.url, cache_dir=tmp_path, memory_budget=f16_need - 1)
    assert middle.quant == "Q8_0" and "too large: F16" in middle.reason
    with pytest.raises(MemoryBudgetError, match="smallest, Q8_0"):
        resolve_model("0.6B", quant="auto", endpoint=hub.url, cache_dir=tmp_path, memory_budget=10**6)
    default = resolve_model("0.6B", quant="auto", endpoint=hub.url, cache_dir=tmp_path)
    assert "available RAM" in default.reason


def test_unknown_repo_is_a_clear_error(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(RepoNotFoundError, match=r"not found.*token"):
        download_model("someone/missing-GGUF", endpoint=hub.url, cache_dir=tmp_path)


def test_unknown_revision(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(RepoNotFoundError, match="revision"):
        download_model("0.6B", revision="v9", endpoint=hub.url, cache_dir=tmp_path)


def test_unknown_alias_lists_the_catalog() -> None:
    with pytest.raises(UnknownModelError, match=r"'0\.6B'.*'4B'.*'8B'"):
        download_model("qwen3-embedding-3b")


def test_file_vanishing_between_listing_and_download(hub: HubServer, tmp_path: Path) -> None:
    hub.inject("/resolve/main/" + Q8, status=404, error_code="EntryNotFound", times=10)
    with pytest.raises(QuantNotFoundError, match="no such file"):
        download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path)


@pytest.mark.parametrize("status", [401, 403])
def test_gated_repo_explains_tokens(hub: HubServer, tmp_path: Path, status: int, hub_models: dict[str, Path]) -> None:
    if status == 401:
        hub.add_repo("org/gated-GGUF", {"m-Q8_0.gguf": hub_models["Q8_0"]}, gated=True)
        repo = "org/gated-GGUF"
    else:
        hub.inject("/tree/", status=403, error_code="GatedRepo", times=10)
        repo = OFFICIAL_06B
    with pytest.raises(GatedRepoError, match=r"gated.*token="):
        download_model(repo, endpoint=hub.url, cache_dir=tmp_path)


def test_gated_repo_with_a_token_downloads(hub: HubServer, tmp_path: Path, hub_models: dict[str, Path]) -> None:
    hub.add_repo("org/gated-GGUF", {"m-Q8_0.gguf": hub_models["Q8_0"]}, gated=True)
    path = download_model("org/gated-GGUF", token="hf_test", endpoint=hub.url, cache_dir=tmp_path)
    assert _sha(path) == _sha(hub_models["Q8_0"])


@pytest.mark.parametrize("where", ["/tree/", "/resolve/"])
def test_server_error_then_success_is_retried(hub: HubServer, tmp_path: Path, where: str) -> None:
    hub.inject(where, status=500, times=1)
    path = download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path)
    assert path.name == Q8
    assert len(hub.requests(contains=where)) >= 2


def test_server_error_on_the_body_is_retried(hub: HubServer, tmp_path: Path, hub_models: dict[str, Path]) -> None:
    hub.inject("/resolve/main/" + Q8, method="GET", status=503, times=1)
    path = download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path)
    assert _sha(path) == _sha(hub_models["Q8_0"])


def test_persistent_server_error_gives_up_with_download_error(hub: HubServer, tmp_path: Path) -> None:
    hub.inject("/resolve/", method="GET", status=500, times=100)
    with pytest.raises(DownloadError, match=r"after 3 failed attempt\(s\) \(6 request\(s\)"):
        download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path)
    assert len(hub.requests("GET", "/resolve/")) == 3  # 3 GETs and their 3 HEADs: the 6 requests named
    assert not [name for name in _cache_files(tmp_path) if name.endswith(".gguf")]  # no partial file left


# ----------------------------------------------------------------------------- network faults


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timeouts of 1 s, three failed attempts at most: a fault test ends in seconds."""
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1")
    monkeypatch.setenv("QWEN_EMBED_HUB_ATTEMPTS", "3")
    monkeypatch.setenv("QWEN_EMBED_HUB_RETRY_SECONDS", "60")


def _finishes(fn: Callable[[], Any], *, within: float = 120.0) -> BaseException | None:
    """Run ``fn`` in a thread; fail the test if it has not ended after ``within`` s (a hang guard, not a timing)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(within)
    assert not worker.is_alive(), f"still waiting on the Hub after {within} s"
    return outcome[0]


def _assert_gives_up_clearly(
    error: BaseException | None, endpoint: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> str:
    assert isinstance(error, DownloadError), repr(error)
    message = str(error)
    assert "\n" not in message
    assert f"from the Hub at {endpoint} after 3 failed attempt(s)" in message
    assert "HF_HUB_OFFLINE=1" in message and "local .gguf file" in message and "`qwen-embed demo`" in message
    assert "timeouts 1 s connect / 1 s read" in message
    retries = [r for r in caplog.records if r.name.startswith("qwen_embed") and "retrying" in r.getMessage()]
    assert len(retries) == 2  # one line per retry, through our logger
    err = capfd.readouterr().err
    assert "Retrying in" not in err and "thrown while requesting" not in err and "Trying to resume" not in err
    return message


def test_closed_port_gives_up_with_the_endpoint_and_the_ways_out(
    tmp_path: Path,
    short_timeouts: None,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    endpoint = closed_port_url()
    caplog.set_level(logging.WARNING)
    error = _finishes(lambda: download_model("0.6B", endpoint=endpoint, cache_dir=tmp_path))
    message = _assert_gives_up_clearly(error, endpoint, caplog, capfd)
    assert "list the files of Qwen/Qwen3-Embedding-0.6B-GGUF@main" in message
    assert "(3 request(s) in" in message and "ConnectError" in message


def test_huggingface_hubs_telemetry_request_is_not_counted(
    tmp_path: Path, short_timeouts: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import huggingface_hub.constants
    from huggingface_hub.utils import _detect_agent

    endpoint = closed_port_url()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)  # where the registry fetch goes
    monkeypatch.setattr(_detect_agent, "_registry", None)  # not fetched yet in this process
    caplog.set_level(logging.WARNING)
    with pytest.raises(DownloadError, match=r"after 3 failed attempt\(s\) \(3 request\(s\)") as caught:
        download_model("0.6B", endpoint=endpoint, cache_dir=tmp_path)
    assert "agent-harnesses" not in str(caught.value)
    retries = [r.getMessage() for r in caplog.records if r.name.startswith("qwen_embed")]
    assert len(retries) == 2 and all("/tree/main" in line for line in retries)  # three listing attempts


@pytest.mark.parametrize("where", ["/tree/", "/resolve/"])
def test_stalled_answer_times_out(
    hub: HubServer,
    tmp_path: Path,
    short_timeouts: None,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    where: str,
) -> None:
    hub.inject(where, stall=True, times=100)  # accepts the connection, reads the request, never answers
    caplog.set_level(logging.WARNING)
    error = _finishes(lambda: download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path, progress=False))
    message = _assert_gives_up_clearly(error, hub.url, caplog, capfd)
    assert "ReadTimeout" in message
    assert len(hub.requests(contains=where)) == 3


def test_reset_mid_body_is_retried_then_resumes(hub: HubServer, tmp_path: Path, hub_models: dict[str, Path]) -> None:
    size = hub_models["Q8_0"].stat().st_size
    hub.inject("/resolve/main/" + Q8, method="GET", reset_after=size // 2, times=1)
    path = download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path, progress=False)
    assert _sha(path) == _sha(hub_models["Q8_0"])
    assert len(hub.requests("GET", Q8)) == 2


def test_persistent_reset_mid_body_gives_up(
    hub: HubServer,
    tmp_path: Path,
    hub_models: dict[str, Path],
    short_timeouts: None,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    size = hub_models["Q8_0"].stat().st_size
    hub.inject("/resolve/main/" + Q8, method="GET", reset_after=size // 2, times=100)
    caplog.set_level(logging.WARNING)
    error = _finishes(lambda: download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path, progress=False))
    message = _assert_gives_up_clearly(error, hub.url, caplog, capfd)
    assert f"download {Q8}" in message and ("ReadError" in message or "RemoteProtocolError" in message)
    assert len(hub.requests("GET", Q8)) == 3
    assert not [name for name in _cache_files(tmp_path) if name.endswith(".gguf")]


def test_trickling_body_counts_as_stalled(
    hub: HubServer,
    tmp_path: Path,
    short_timeouts: None,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # One byte every 50 ms: each read returns well within the 1 s read timeout, the file never ends.
    hub.inject("/resolve/main/" + Q8, method="GET", trickle=0.05, times=100)
    caplog.set_level(logging.WARNING)
    error = _finishes(lambda: download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path, progress=False))
    message = _assert_gives_up_clearly(error, hub.url, caplog, capfd)
    assert "trickled in" in message and "below 1000 B/s" in message
    assert len(hub.requests("GET", Q8)) == 3


def test_the_budget_spans_huggingface_hubs_own_retries(
    hub: HubServer, tmp_path: Path, short_timeouts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub alone would try the listing 6 times; the budget stops it at the configured count."""
    monkeypatch.setenv("QWEN_EMBED_HUB_ATTEMPTS", "2")
    hub.inject("/tree/", status=503, times=100)
    with pytest.raises(DownloadError, match=r"after 2 failed attempt\(s\) \(2 request\(s\).*HTTP 503"):
        list_quants("0.6B", endpoint=hub.url, cache_dir=tmp_path)
    assert len(hub.requests(contains="/tree/")) == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [("HF_HUB_DOWNLOAD_TIMEOUT", "soon"), ("HF_HUB_ETAG_TIMEOUT", "-1"), ("QWEN_EMBED_HUB_ATTEMPTS", "2.5")],
)
def test_bad_network_settings_are_named(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=rf"{name}='{value}' is not a positive"):
        download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path)


@pytest.mark.parametrize("command", ["download", "quants"])
def test_cli_without_the_hub_prints_one_line(tmp_path: Path, command: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "QWEN_EMBED_"))}
    env.update(HF_HOME=str(tmp_path / "home"), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ETAG_TIMEOUT="1")
    endpoint = closed_port_url()
    done = subprocess.run(
        [sys.executable, "-m", "qwen_embed", command, "0.6B", "--endpoint", endpoint, "--cache-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard only
    )
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"qwen-embed {command}: DownloadError: Could not list the files")
    assert f"the Hub at {endpoint} after 3 failed attempt(s)" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0]


def test_retry_budget_counts_attempts_in_all_and_seconds_since_progress() -> None:
    from qwen_embed.hub._network import NetworkSettings, RetryBudget

    budget = RetryBudget(NetworkSettings(attempts=3, retry_seconds=0.001), endpoint="http://hub", what="x")
    assert not budget.record_failure("GET /a", "ReadError")
    time.sleep(0.01)
    assert budget.spent  # the time budget ran out after the first failure
    budget.record_progress()  # a body then arrived at a good speed
    assert not budget.spent
    assert not budget.record_failure("GET /a", "ReadError")
    budget.record_progress()
    assert budget.record_failure("GET /a", "ReadError")  # the third failure in all: progress does not reset it


def test_concurrent_downloads_share_the_guard_and_restore_it(hub: HubServer, tmp_path: Path) -> None:
    from huggingface_hub.utils import _http

    before = _http._GLOBAL_CLIENT_FACTORY
    paths: dict[str, Path] = {}
    errors: list[BaseException] = []

    def fetch(quant: str) -> None:
        try:
            paths[quant] = download_model("0.6B", quant=quant, endpoint=hub.url, cache_dir=tmp_path, progress=False)
        except BaseException as error:  # reported below
            errors.append(error)

    workers = [threading.Thread(target=fetch, args=(q,)) for q in ("Q8_0", "f16")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)  # a hang guard only
    assert not any(worker.is_alive() for worker in workers)
    assert not errors, errors
    assert {p.name for p in paths.values()} == {F16, Q8}
    assert _http._GLOBAL_CLIENT_FACTORY is before


def test_the_client_factory_is_restored(hub: HubServer, tmp_path: Path) -> None:
    from huggingface_hub import file_download
    from huggingface_hub.utils import _http

    before = _http._GLOBAL_CLIENT_FACTORY
    download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path, progress=False)
    assert _http._GLOBAL_CLIENT_FACTORY is before
    assert not logging.getLogger("huggingface_hub.utils._http").filters
    assert _http.time is time and file_download.time is time  # huggingface_hub's pauses are its own again


def test_connection_cut_mid_file_resumes(hub: HubServer, tmp_path: Path, hub_models: dict[str, Path]) -> None:
    size = hub_models["Q8_0"].stat().st_size
    hub.inject("/resolve/main/" + Q8, method="GET", cut_after=size // 3, times=1)
    path = download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path, progress=False)
    assert _sha(path) == _sha(hub_models["Q8_0"])
    # huggingface_hub resumes with a Range request from what it wrote; it writes in 10 MB chunks, so a
    # file this small restarts from byte 0. Either way the second GET completes the file.
    assert len(hub.requests("GET", Q8)) == 2


def test_corrupted_body_is_caught_and_removed(hub: HubServer, tmp_path: Path, hub_models: dict[str, Path]) -> None:
    hub.inject("/resolve/main/" + Q8, method="GET", corrupt=True, times=1)  # same size, one byte flipped
    with pytest.raises(ChecksumMismatchError, match="SHA-256"):
        download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path, progress=False)
    assert not [name for name in _cache_files(tmp_path) if name.endswith(".gguf") or len(name) == 64]
    # The next attempt downloads a good copy.
    path = download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path, progress=False)
    assert _sha(path) == _sha(hub_models["Q8_0"])


@pytest.mark.parametrize("how", ["local_files_only", "HF_HUB_OFFLINE"])
def test_offline_uses_the_cache_without_requests(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    import huggingface_hub.constants

    online = download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path)
    seen = len(hub.log)
    options = {"local_files_only": True} if how == "local_files_only" else {}
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path, **options) == online
    assert resolve_model("0.6B", quant="auto", cache_dir=tmp_path, memory_budget=10**12, **options).quant == "Q8_0"
    assert [q.quant for q in list_quants("0.6B", cache_dir=tmp_path, **options)] == ["Q8_0"]
    with pytest.raises(NotCachedError, match="only cached files"):
        download_model("0.6B", quant="f16", endpoint=hub.url, cache_dir=tmp_path, **options)
    with pytest.raises(NotCachedError, match="not in the cache"):
        download_model("4B", endpoint=hub.url, cache_dir=tmp_path, **options)
    assert len(hub.log) == seen


def test_no_gguf_files(hub: HubServer, tmp_path: Path) -> None:
    hub.add_repo("org/safetensors-only", {"model.safetensors": b"x" * 10, "config.json": b"{}"})
    with pytest.raises(NoGGUFFilesError, match=r"no .gguf file"):
        download_model("org/safetensors-only", endpoint=hub.url, cache_dir=tmp_path)


def test_ambiguous_quant_is_explained_and_filename_resolves_it(
    hub: HubServer, tmp_path: Path, hub_models: dict[str, Path]
) -> None:
    hub.add_repo("org/two-GGUF", {"base-Q8_0.gguf": hub_models["Q8_0"], "tuned-Q8_0.gguf": hub_models["Q8_0"]})
    with pytest.raises(AmbiguousFileError, match=r"2 files for Q8_0: base-Q8_0.gguf, tuned-Q8_0.gguf.*filename="):
        download_model("org/two-GGUF", endpoint=hub.url, cache_dir=tmp_path)
    path = download_model("org/two-GGUF", filename="tuned-Q8_0.gguf", endpoint=hub.url, cache_dir=tmp_path)
    assert path.name == "tuned-Q8_0.gguf"


def test_split_files_download_together(hub: HubServer, tmp_path: Path) -> None:
    parts = {f"big-Q4_K_M-{i:05d}-of-00003.gguf": bytes([i]) * (1000 + i) for i in (1, 2, 3)}
    hub.add_repo("org/split-GGUF", {**parts, "small-Q8_0.gguf": b"y" * 10})
    quants = list_quants("org/split-GGUF", endpoint=hub.url, cache_dir=tmp_path)
    split = next(q for q in quants if q.quant == "Q4_K_M")
    assert split.filenames == tuple(parts) and split.size == sum(len(v) for v in parts.values())
    path = download_model("org/split-GGUF", quant="q4_k_m", endpoint=hub.url, cache_dir=tmp_path)
    assert path.name == "big-Q4_K_M-00001-of-00003.gguf"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(parts)


def test_unwritable_cache_dir(hub: HubServer, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(CacheNotWritableError, match=r"cannot be written.*cache_dir="):
        download_model("0.6B", endpoint=hub.url, cache_dir=blocker / "cache")


def test_threads_of_one_process_check_one_cache_at_once(tmp_path: Path) -> None:
    # The writability probe was named after the pid only: two threads checking one cache removed each
    # other's probe and one saw "cannot be written (No such file or directory)" (a CI failure of
    # test_concurrent_downloads_share_the_guard_and_restore_it).
    from qwen_embed.hub.download import _ensure_writable

    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def check() -> None:
        start.wait(30)
        for _ in range(200):
            try:
                _ensure_writable(tmp_path)
            except BaseException as error:  # reported below
                errors.append(error)
                return

    workers = [threading.Thread(target=check) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)  # a hang guard only
    assert not any(worker.is_alive() for worker in workers)
    assert not errors, errors[:1]
    assert list(tmp_path.iterdir()) == []  # no probe left behind


def test_two_processes_download_the_same_file_once(hub: HubServer, tmp_path: Path, hub_models: dict[str, Path]) -> None:
    hub.chunk_delay = 0.3  # a slow body (about 1 s), so the two downloads overlap
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    command = [sys.executable, "-m", "qwen_embed", "download", "0.6B", "--quant", "Q8_0", "--no-progress"]
    command += ["--endpoint", hub.url, "--cache-dir", str(tmp_path)]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    paths = {Path(out.strip()) for out, _ in results}
    assert len(paths) == 1
    assert _sha(paths.pop()) == _sha(hub_models["Q8_0"])
    assert len(hub.requests("GET", "/resolve/main/" + Q8)) == 1  # the lock made the second process wait


def test_fetch_model_reports_the_reason(hub: HubServer, tmp_path: Path) -> None:
    _, resolution = fetch_model("0.6B", endpoint=hub.url, cache_dir=tmp_path)
    assert resolution.reason == "Q8_0 was asked for"
    _, again = fetch_model("0.6B", endpoint=hub.url, cache_dir=tmp_path)
    assert again.reason.endswith("is in the cache")


def test_from_pretrained_accepts_a_local_file(tiny_model: Path) -> None:
    with Embedder.from_pretrained(str(tiny_model), n_threads=1) as emb:
        assert emb.model_path == tiny_model and emb.resolution is None


# ----------------------------------------------------------------------------- rate limits: the budget caps every wait

_DOWNLOAD_SCRIPT = """
import sys
from qwen_embed import DownloadError, download_model
try:
    download_model("0.6B", endpoint=sys.argv[1], cache_dir=sys.argv[2], progress=False)
except DownloadError as error:
    print(error)
    sys.exit(3)
"""


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "3600"},
        {"RateLimit": '"api";r=0;t=3600', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'},
    ],
    ids=["retry-after", "ratelimit"],
)
def test_a_rate_limit_longer_than_the_budget_gives_up_at_once(
    hub: HubServer, tmp_path: Path, headers: dict[str, str]
) -> None:
    """Issue 21 #3: huggingface_hub would sleep the hour it is asked to; the 60 s budget ends it at once."""
    hub.inject("/tree/", status=429, headers=headers, times=100)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE" and not k.startswith("QWEN_EMBED_HUB")}
    env.update(HF_HUB_DISABLE_TELEMETRY="1", QWEN_EMBED_HUB_RETRY_SECONDS="60")
    done = subprocess.run(
        [sys.executable, "-c", _DOWNLOAD_SCRIPT, hub.url, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard: without the cap the child sleeps 3601 s
    )
    assert done.returncode == 3, (done.stdout, done.stderr)
    message = done.stdout.strip()
    assert f"from the Hub at {hub.url}: the Hub asked to wait 3600 s before trying again" in message
    assert "more than the 60 s left of the 60 s retry budget" in message
    assert "set QWEN_EMBED_HUB_RETRY_SECONDS above 3600" in message and "HF_HUB_OFFLINE=1" in message
    assert len(hub.requests(contains="/tree/")) == 1  # no second attempt: nothing waited


def test_a_rate_limit_within_the_budget_is_waited_for(hub: HubServer, tmp_path: Path, short_timeouts: None) -> None:
    """The twin: a wait that fits the budget is honoured (huggingface_hub waits Retry-After + 1 s), then it works."""
    hub.inject("/tree/", status=429, headers={"Retry-After": "0"}, times=1)
    assert download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path, progress=False).name == Q8
    assert len(hub.requests(contains="/tree/")) == 2


def test_huggingface_hubs_own_pause_is_capped_by_the_budget(
    hub: HubServer, tmp_path: Path, short_timeouts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 with no Retry-After: huggingface_hub pauses 1 s by itself; with 0.5 s of budget left it may not."""
    monkeypatch.setenv("QWEN_EMBED_HUB_RETRY_SECONDS", "0.5")
    monkeypatch.setenv("QWEN_EMBED_HUB_ATTEMPTS", "5")
    hub.inject("/tree/", status=503, times=100)
    error = _finishes(lambda: list_quants("0.6B", endpoint=hub.url, cache_dir=tmp_path))
    assert isinstance(error, DownloadError), repr(error)
    assert "huggingface_hub would have had to wait 1 s before trying again" in str(error)
    assert "QWEN_EMBED_HUB_RETRY_SECONDS above 1" in str(error)
    assert len(hub.requests(contains="/tree/")) == 1


def test_requested_wait_reads_the_headers_as_huggingface_hub_does() -> None:
    from qwen_embed.hub._network import requested_wait

    assert requested_wait(429, {"retry-after": "120"}) == 120
    assert requested_wait(503, {"Retry-After": "7"}) == 7  # any retried status
    assert requested_wait(429, {"RateLimit": '"api";r=0;t=55', "Retry-After": "5"}) == 55  # the reset wins
    assert requested_wait(429, {"RateLimit": '"api";r=3;t=55'}) is None  # requests are left: no wait asked
    assert requested_wait(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None  # huggingface_hub ignores it


# ----------------------------------------------------------------------------- HubOptions


def test_hub_options_hide_the_token() -> None:
    options = HubOptions(revision="v1", token="hf_secret_token")
    assert repr(options) == "HubOptions(revision='v1', token=<hidden>)"
    assert "hf_secret_token" not in repr(options) and "hf_secret_token" not in str(options)
    assert repr(HubOptions(revision="v1")) == "HubOptions(revision='v1')"  # no token, no mention of one
    assert options.without_token() == HubOptions(revision="v1") and options != HubOptions(revision="v1")
    assert HubOptions(token=True).without_token().token is True  # "use the stored login" is no secret
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.revision = "v2"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"revision": 3}, r"revision must be a str or None, not int 3"),
        ({"revision": " "}, r"revision must not be an empty string"),
        ({"cache_dir": 7}, r"cache_dir must be a folder path \(str or Path\), not int 7"),
        ({"token": b"hf_x"}, r"token must be a str \(a Hub token\), True or None, not bytes$"),
        ({"token": ""}, r"token must be a Hub token, not an empty string"),
        ({"endpoint": "localhost:8000"}, r"endpoint must be an http:// or https:// URL, not 'localhost:8000'"),
        ({"local_files_only": "yes"}, r"local_files_only must be True or False, not str 'yes'"),
        ({"download_progress": 1}, r"download_progress must be True or False, not int 1"),
        ({"memory_budget": -1}, r"memory_budget must be a positive number of bytes \(an int\), not -1"),
        ({"memory_budget": 8e9}, r"memory_budget must be a positive number of bytes \(an int\), not 8000000000.0"),
    ],
)
def test_hub_options_check_themselves(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        HubOptions(**options)


def test_a_misspelt_option_fails_before_any_request(hub: HubServer, tmp_path: Path) -> None:
    """Issue 20: ``n_thread=2`` used to fail after the download (up to 15 GB), and with a TypeError."""
    with pytest.raises(
        ConfigurationError, match=r"Unknown option 'n_thread' for Embedder.from_pretrained; did you mean 'n_threads'\?"
    ):
        Embedder.from_pretrained("0.6B", endpoint=hub.url, cache_dir=tmp_path, n_thread=2)
    with pytest.raises(ConfigurationError, match=r"Unknown option 'intruction' for Reranker.from_pretrained; "):
        Reranker.from_pretrained("0.6B", endpoint=hub.url, cache_dir=tmp_path, intruction="x")
    assert hub.log == []
    with Embedder.from_pretrained("0.6B", endpoint=hub.url, cache_dir=tmp_path, n_threads=2) as emb:  # the twin
        assert emb.n_threads == 2
    assert hub.requests("GET", "/resolve/")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"revision": 3}, r"revision must be a str or None, not int 3"),
        ({"memory_budget": "8GB"}, r"memory_budget must be a positive number of bytes"),
        ({"hub": {"revision": "main"}}, r"hub must be a qwen_embed.HubOptions, not dict"),
        ({"hub": HubOptions(), "revision": "v1"}, r"either as hub=HubOptions\(...\) or as keywords, not both"),
        ({"hub": HubOptions(), "local_files_only": False}, r"not both: local_files_only= was given"),
        ({"quant": 8}, r"quant must be .*, not 8"),
    ],
)
def test_bad_hub_options_fail_before_any_request(
    hub: HubServer, tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    for cls in (Embedder, Reranker):
        with pytest.raises(ConfigurationError, match=message):
            cls.from_pretrained("0.6B", **options)  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match=message):
        download_model("0.6B", **options)
    assert hub.log == []


def test_hub_options_and_keywords_fetch_the_same_file(hub: HubServer, tmp_path: Path) -> None:
    options = HubOptions(endpoint=hub.url, cache_dir=tmp_path, download_progress=False)
    by_options = download_model("0.6B", hub=options)
    seen = len(hub.log)
    assert download_model("0.6B", endpoint=hub.url, cache_dir=tmp_path, progress=False) == by_options
    assert len(hub.log) == seen  # the same cache: nothing fetched twice
    with Embedder.from_pretrained("0.6B", hub=options, n_threads=1) as emb:
        assert emb.model_path == by_options
    other = HubOptions(endpoint=hub.url, cache_dir=tmp_path / "elsewhere", download_progress=False)
    assert download_model("0.6B", hub=other) != by_options  # the twin: another cache_dir, another copy


def test_the_pickled_recipe_carries_the_hub_options_without_the_token(hub: HubServer, tmp_path: Path) -> None:
    import pickle

    options = HubOptions(endpoint=hub.url, cache_dir=tmp_path, token="hf_secret_in_options", download_progress=False)
    with Embedder.from_pretrained("0.6B", hub=options, n_threads=1) as emb:
        data = pickle.dumps(emb)
    assert b"hf_secret_in_options" not in data
    assert b"hf_secret_in_options" in pickle.dumps(options)  # the twin: the options themselves do carry it
    with pickle.loads(data) as clone:
        assert clone._hub_recipe["hub"] == options.without_token() and clone._hub_recipe["quant"] is None


# ----------------------------------------------------------------------------- one catalog, both kinds, through the Hub


def test_the_reranker_catalog_default_quant_is_fetched(hub: HubServer, tmp_path: Path) -> None:
    """The 4B reranker repo publishes F16 only; its entry's default is F16 (it was Q8_0, which does not exist)."""
    repo = "Voodisss/Qwen3-Reranker-4B-GGUF-llama_cpp"
    hub.add_repo(repo, {"Qwen3-Reranker-4B-F16.gguf": b"x" * 10})
    resolution = resolve_model("4B", kind="reranker", endpoint=hub.url, cache_dir=tmp_path)
    assert (resolution.repo_id, resolution.quant) == (repo, "F16")
    assert resolution.catalog is not None and resolution.catalog.kind == "reranker"
    with pytest.raises(QuantNotFoundError, match=r"no Q8_0 file"):  # the twin: the old default fails
        resolve_model("4B", kind="reranker", quant="Q8_0", endpoint=hub.url, cache_dir=tmp_path)
    assert [q.quant for q in list_quants("4B", kind="reranker", endpoint=hub.url, cache_dir=tmp_path)] == ["F16"]


# ----------------------------------------------------------------------------- a local file is what it is


def test_a_local_file_of_another_quant_is_named(hub_models: dict[str, Path]) -> None:
    q8 = str(hub_models["Q8_0"])
    with pytest.raises(ConfigurationError, match=r"is a Q8_0 file, not quant='Q4_K_M'.*pass quant='Q8_0'"):
        Embedder.from_pretrained(q8, quant="Q4_K_M", n_threads=1)
    with pytest.raises(ConfigurationError, match=r"is a F16 file, not quant='Q8_0'"):
        Embedder.from_pretrained(str(hub_models["F16"]), quant="Q8_0", n_threads=1)
    with pytest.raises(ConfigurationError, match=r"filename='other.gguf' picks a file from a Hub repository"):
        Embedder.from_pretrained(q8, filename="other.gguf", n_threads=1)
    for quant in ("q8_0", "Q8_0", "auto", None):  # the twin: its own quant (any case), auto, or none
        with Embedder.from_pretrained(q8, quant=quant, n_threads=1) as emb:
            assert emb.quantization == "Q8_0"


def test_the_cli_loads_a_local_file_without_naming_its_quant(
    hub_models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from qwen_embed.interfaces.cli import main

    assert main(["embed", "hello", "--model", str(hub_models["F16"]), "--threads", "1", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith('{"index": 0')
    assert main(["embed", "hello", "--model", str(hub_models["F16"]), "--quant", "Q8_0", "--threads", "1"]) == 1
    assert "ConfigurationError" in capsys.readouterr().err


def test_the_adapters_model_cache_takes_hub_options(hub: HubServer, tmp_path: Path) -> None:
    from qwen_embed.integrations._cache import resolve_path

    options = HubOptions(endpoint=hub.url, cache_dir=tmp_path, download_progress=False)
    path = resolve_path("0.6B", quant=None, hub_options={"hub": options})
    assert path == download_model("0.6B", hub=options).resolve()
    assert resolve_path("0.6B", quant=None, hub_options={"endpoint": hub.url, "cache_dir": tmp_path}) == path
    with pytest.raises(ConfigurationError, match=r"not both: revision="):
        resolve_path("0.6B", quant=None, hub_options={"hub": options, "revision": "main"})


def test_a_corpus_job_takes_hub_options(hub: HubServer, tmp_path: Path) -> None:
    from qwen_embed.corpus import embed_corpus

    options = HubOptions(endpoint=hub.url, cache_dir=tmp_path / "cache", download_progress=False)
    result = embed_corpus(
        ["a text", "another"], tmp_path / "out", model="0.6B", embedder_options={"hub": options, "n_threads": 1}
    )
    assert result.rows == 2 and hub.requests("GET", "/resolve/main/" + Q8)
    with pytest.raises(ConfigurationError, match=r"not both: endpoint="):
        embed_corpus(["x"], tmp_path / "out2", model="0.6B", embedder_options={"hub": options, "endpoint": hub.url})
