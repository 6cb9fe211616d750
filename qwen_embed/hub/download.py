"""From "0.6B, Q8_0" to a verified GGUF file in the Hugging Face cache.

Resolution reads the repository's live file list (one API call), picks the file(s)
for the quantization, downloads them with ``huggingface_hub`` into the standard
cache, and checks each file's SHA-256 against the Hub's LFS metadata. A file that
is already cached is used without any network call, and offline mode
(``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) resolves from the cache alone.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import (
    AmbiguousFileError,
    CacheNotWritableError,
    ChecksumMismatchError,
    ConfigurationError,
    DownloadError,
    GatedRepoError,
    MemoryBudgetError,
    NoGGUFFilesError,
    NotCachedError,
    QuantNotFoundError,
    RepoNotFoundError,
)
from .._memory import OVERHEAD_BYTES, available_memory, format_size
from ._network import OFFLINE_WAYS, RETRY_STATUS, BudgetSpent, NetworkSettings, RetryBudget, hub_session
from .catalog import (
    DEFAULT_QUANT,
    CatalogModel,
    lookup_repo,
    normalize_quant,
    parse_gguf_filename,
    quant_rank,
)

__all__ = [
    "ModelResolution",
    "QuantFile",
    "available_memory",
    "download_model",
    "list_quants",
    "resolve_model",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_RETRY_DELAYS = (0.5, 1.5)  # pauses before our own retries (huggingface_hub pauses before its own)
_HASH_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class QuantFile:
    """One quantization available in a repository (several files when the GGUF is split)."""

    quant: str
    filenames: tuple[str, ...]
    size: int
    sha256: tuple[str | None, ...]
    cached: bool = False

    @property
    def filename(self) -> str:
        """The file to load (the first part of a split GGUF)."""
        return self.filenames[0]


@dataclass(frozen=True)
class ModelResolution:
    """What :func:`resolve_model` decided, and why."""

    repo_id: str
    revision: str
    quant: str
    file: QuantFile
    reason: str
    catalog: CatalogModel | None = None


# ----------------------------------------------------------------------------- listing


def list_quants(
    model: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
) -> list[QuantFile]:
    """The quantizations a repository offers, best quality first, with their sizes in bytes.

    Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) it lists what the cache holds.
    """
    repo_id, _ = lookup_repo(model)
    revision = revision or "main"
    cache = _cache_dir(cache_dir)
    if local_files_only or _offline():
        files = _cached_files(repo_id, revision, cache)
    else:
        files = _remote_files(repo_id, revision, token=token, endpoint=endpoint)
    return _group_quants(repo_id, revision, files, cache)


def _remote_files(
    repo_id: str, revision: str, *, token: str | bool | None, endpoint: str | None
) -> dict[str, tuple[int, str | None]]:
    """``{path: (size, sha256 or None)}`` for every ``.gguf`` file of the repository at ``revision``."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)

    def listing() -> dict[str, tuple[int, str | None]]:
        found: dict[str, tuple[int, str | None]] = {}
        for entry in api.list_repo_tree(repo_id, revision=revision, recursive=True):
            path = getattr(entry, "path", "")
            if not path.lower().endswith(".gguf") or not hasattr(entry, "size"):
                continue
            lfs = getattr(entry, "lfs", None)
            sha = getattr(lfs, "sha256", None) if lfs is not None else None
            found[path] = (int(entry.size), sha)
        return found

    return _hub_call(listing, repo_id=repo_id, what=f"list the files of {repo_id}@{revision}", endpoint=endpoint)


def _cached_files(repo_id: str, revision: str, cache: Path) -> dict[str, tuple[int, str | None]]:
    snapshot = _cached_snapshot(repo_id, revision, cache)
    if snapshot is None:
        return {}
    found: dict[str, tuple[int, str | None]] = {}
    for path in snapshot.rglob("*"):
        if path.name.lower().endswith(".gguf") and path.is_file():
            found[path.relative_to(snapshot).as_posix()] = (path.stat().st_size, None)
    return found


def _group_quants(
    repo_id: str, revision: str, files: dict[str, tuple[int, str | None]], cache: Path
) -> list[QuantFile]:
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for path in files:
        quant, part, n_parts = parse_gguf_filename(path)
        label = quant or "unknown"
        # One group per (quant, file stem without the split suffix): split parts gather, distinct files do not.
        stem = path if n_parts == 1 else path[: path.lower().rfind(f"-{part:05d}-of-")]
        groups.setdefault((label, stem), []).append((part, path))
    result = []
    snapshot = _cached_snapshot(repo_id, revision, cache)
    for (label, _), parts in groups.items():
        names = tuple(path for _, path in sorted(parts))
        cached = snapshot is not None and all((snapshot / name).is_file() for name in names)
        result.append(
            QuantFile(
                quant=label,
                filenames=names,
                size=sum(files[n][0] for n in names),
                sha256=tuple(files[n][1] for n in names),
                cached=cached,
            )
        )
    return sorted(result, key=lambda q: (quant_rank(q.quant), q.filename))


# ----------------------------------------------------------------------------- resolution


def resolve_model(
    model: str,
    *,
    quant: str = DEFAULT_QUANT,
    filename: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    memory_budget: int | None = None,
) -> ModelResolution:
    """Decide which file(s) of which repository to use, without downloading.

    A file already in the cache for this revision wins without a network call;
    otherwise the live file list decides (offline, the cache is all there is).

    Raises:
        UnknownModelError, RepoNotFoundError, GatedRepoError, NoGGUFFilesError,
        QuantNotFoundError, AmbiguousFileError, MemoryBudgetError, NotCachedError.
    """
    repo_id, card = lookup_repo(model)
    revision = revision or "main"
    cache = _cache_dir(cache_dir)
    wanted = _check_quant(quant)
    offline = local_files_only or _offline()

    if wanted != "AUTO":  # the cache can answer a named quant (or file) without the network
        cached = _group_quants(repo_id, revision, _cached_files(repo_id, revision, cache), cache)
        try:
            hit = _pick(cached, repo_id, wanted, filename, source="cache")
        except (QuantNotFoundError, NoGGUFFilesError, AmbiguousFileError):
            hit = None
        if hit is not None and hit.cached:
            return ModelResolution(repo_id, revision, hit.quant, hit, f"{hit.filename} is in the cache", card)

    if offline:
        available = _group_quants(repo_id, revision, _cached_files(repo_id, revision, cache), cache)
        if not available:
            raise NotCachedError(
                f"{repo_id}@{revision} is not in the cache at {cache} and the Hub is off limits "
                f"({'local_files_only=True' if local_files_only else 'HF_HUB_OFFLINE is set'}). "
                f"Download it once with a connection (qwen-embed download {model} --quant {quant}), "
                f"or point cache_dir= at a cache that holds it. {OFFLINE_WAYS}"
            )
        source = "cache"
    else:
        available = _group_quants(
            repo_id, revision, _remote_files(repo_id, revision, token=token, endpoint=endpoint), cache
        )
        source = "Hub"

    if wanted == "AUTO" and filename is None:
        chosen, reason = _choose_auto(available, repo_id, card, memory_budget)
        return ModelResolution(repo_id, revision, chosen.quant, chosen, reason, card)
    try:
        chosen = _pick(available, repo_id, wanted, filename, source=source)
    except QuantNotFoundError as error:
        if offline:
            raise NotCachedError(
                f"{error} The Hub is off limits ({'local_files_only=True' if local_files_only else 'HF_HUB_OFFLINE'})"
                ", so only cached files count."
            ) from None
        raise
    return ModelResolution(repo_id, revision, chosen.quant, chosen, f"{chosen.quant} was asked for", card)


def _check_quant(quant: str) -> str:
    if not isinstance(quant, str) or not quant.strip():
        raise ConfigurationError(f"quant must be a quantization name such as 'Q8_0' or 'auto', not {quant!r}")
    return normalize_quant(quant)


def _pick(files: list[QuantFile], repo_id: str, quant: str, filename: str | None, *, source: str) -> QuantFile:
    if not files:
        raise NoGGUFFilesError(f"{repo_id} has no .gguf file ({source}). Is it a GGUF repository?")
    if filename is not None:
        for item in files:
            if filename in item.filenames:
                return item
        listed = ", ".join(name for item in files for name in item.filenames)
        raise QuantNotFoundError(f"{repo_id} has no file {filename!r} ({source}); its GGUF files: {listed}")
    matches = [item for item in files if item.quant == quant]
    if not matches:
        listed = ", ".join(f"{item.quant} ({format_size(item.size)})" for item in files)
        raise QuantNotFoundError(f"{repo_id} has no {quant} file ({source}). Available: {listed}")
    if len(matches) > 1:
        listed = ", ".join(item.filename for item in matches)
        raise AmbiguousFileError(
            f"{repo_id} has {len(matches)} files for {quant}: {listed}. Pass filename= to choose one."
        )
    return matches[0]


def _choose_auto(
    files: list[QuantFile], repo_id: str, card: CatalogModel | None, budget: int | None
) -> tuple[QuantFile, str]:
    if not files:
        raise NoGGUFFilesError(f"{repo_id} has no .gguf file. Is it a GGUF repository?")
    if budget is None:
        budget, budget_source = available_memory(), "available RAM"
    else:
        if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
            raise ConfigurationError(f"memory_budget must be a positive number of bytes, not {budget!r}")
        budget_source = "memory_budget"
    candidates = [item for item in files if item.quant != "unknown"] or files
    for item in candidates:  # best quality first
        need = item.size + _working_memory(item.size, card)
        if need <= budget:
            reason = (
                f"auto chose {item.quant}: the best quality whose file ({format_size(item.size)}) plus working memory "
                f"({format_size(need - item.size)}) fits the {budget_source} ({format_size(budget)})"
            )
            better = candidates[: candidates.index(item)]
            if better:
                reason += "; too large: " + ", ".join(
                    f"{q.quant} ({format_size(q.size + _working_memory(q.size, card))})" for q in better
                )
            logger.info("%s: %s", repo_id, reason)
            return item, reason
    smallest = min(candidates, key=lambda q: q.size)
    raise MemoryBudgetError(
        f"No quantization of {repo_id} fits the {budget_source} of {format_size(budget)}: the smallest, {smallest.quant}, "
        f"needs about {format_size(smallest.size + _working_memory(smallest.size, card))}. "
        "Free memory, pass memory_budget= (bytes), or name a quant."
    )


def _working_memory(file_size: int, card: CatalogModel | None) -> int:
    """Memory beyond the weights: KV cache at the default max_length plus buffers (an estimate)."""
    if card is not None:
        return card.kv_cache_bytes() + OVERHEAD_BYTES
    return file_size // 4 + OVERHEAD_BYTES


# ----------------------------------------------------------------------------- download


def download_model(
    model: str,
    *,
    quant: str = DEFAULT_QUANT,
    filename: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    local_files_only: bool = False,
    memory_budget: int | None = None,
    progress: bool = True,
) -> Path:
    """Resolve ``model`` and ``quant``, download the file(s) into the Hugging Face cache, verify, return the path.

    >>> path = download_model("0.6B", quant="Q8_0")          # doctest: +SKIP

    ``model`` is a catalog alias (``"0.6B"``, ``"qwen3-embedding-4b"``) or any repo id. ``quant`` is a
    quantization name (any case) or ``"auto"``. A split GGUF downloads all its parts; the path of the
    first part is returned (llama.cpp finds the others beside it).
    """
    return fetch_model(
        model,
        quant=quant,
        filename=filename,
        revision=revision,
        cache_dir=cache_dir,
        token=token,
        endpoint=endpoint,
        local_files_only=local_files_only,
        memory_budget=memory_budget,
        progress=progress,
    )[0]


def fetch_model(
    model: str,
    *,
    quant: str = DEFAULT_QUANT,
    filename: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    local_files_only: bool = False,
    memory_budget: int | None = None,
    progress: bool = True,
) -> tuple[Path, ModelResolution]:
    """:func:`download_model`, also returning the :class:`ModelResolution` (what was chosen and why)."""
    resolution = resolve_model(
        model,
        quant=quant,
        filename=filename,
        revision=revision,
        token=token,
        endpoint=endpoint,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        memory_budget=memory_budget,
    )
    cache = _cache_dir(cache_dir)
    item = resolution.file
    if item.cached:
        snapshot = _cached_snapshot(resolution.repo_id, resolution.revision, cache)
        assert snapshot is not None
        return snapshot / item.filename, resolution
    _ensure_writable(cache)
    paths = [
        _download_one(
            resolution.repo_id,
            name,
            sha,
            revision=resolution.revision,
            cache=cache,
            token=token,
            endpoint=endpoint,
            progress=progress,
        )
        for name, sha in zip(item.filenames, item.sha256)
    ]
    return paths[0], resolution


def _download_one(
    repo_id: str,
    filename: str,
    sha256: str | None,
    *,
    revision: str,
    cache: Path,
    token: str | bool | None,
    endpoint: str | None,
    progress: bool,
) -> Path:
    from huggingface_hub import hf_hub_download

    options: dict[str, Any] = {}
    if not progress and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        options["tqdm_class"] = _silent_tqdm()

    def download() -> str:
        return str(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache,
                token=token,
                endpoint=endpoint,
                **options,
            )
        )

    what = f"download {filename} from {repo_id}@{revision}"
    path = Path(_hub_call(download, repo_id=repo_id, what=what, endpoint=endpoint))
    if sha256:
        _verify(path, sha256, what=f"{repo_id}/{filename}@{revision}")
    return path


def _verify(path: Path, expected: str, *, what: str) -> None:
    """Check the file's SHA-256; on a mismatch delete the blob and the snapshot link, then raise."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual == expected.lower():
        return
    blob = path.resolve()
    for victim in {path, blob}:
        try:
            victim.unlink()
        except FileNotFoundError:
            pass
    raise ChecksumMismatchError(
        f"{what}: the downloaded file's SHA-256 is {actual}, the Hub says {expected}. "
        "The corrupt file was deleted from the cache; try again (a proxy or the network altered it)."
    )


def _silent_tqdm() -> type:
    from tqdm.auto import tqdm

    class SilentTqdm(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentTqdm


# ----------------------------------------------------------------------------- errors and retries


def _hub_call(fn: Callable[[], _T], *, repo_id: str, what: str, endpoint: str | None) -> _T:
    """Run one Hub operation under one retry budget, and turn huggingface_hub's errors into ours.

    Every request the operation makes goes through the guard of :mod:`._network` (timeouts, the
    budget, one log line per retry). ``hf_hub_download`` retries its metadata call and resumes a cut
    body but gives up on a 5xx answer to the body's GET or a reset connection; the loop here retries
    those, against the same budget.
    """
    from huggingface_hub import errors as hf

    budget = RetryBudget(NetworkSettings.from_env(), endpoint=_endpoint_name(endpoint), what=what)
    with hub_session(budget):
        for attempt in itertools.count():
            failures = budget.failures
            try:
                return fn()
            except BudgetSpent as error:
                raise DownloadError(error.budget.message()) from error.__cause__
            except hf.GatedRepoError as error:
                raise GatedRepoError(
                    f"{repo_id} is gated: accept its terms at https://huggingface.co/{repo_id} with your account, "
                    "then pass token= (or set HF_TOKEN, or run `hf auth login`)."
                ) from error
            except hf.RevisionNotFoundError as error:
                raise RepoNotFoundError(
                    f"{repo_id} has no revision (branch, tag or commit) by that name: {what}."
                ) from error
            except hf.RepositoryNotFoundError as error:
                raise RepoNotFoundError(
                    f"Repository {repo_id} not found on the Hub. Check the name; if it is private, pass token= "
                    "(or set HF_TOKEN)."
                ) from error
            except hf.OfflineModeIsEnabled as error:
                raise NotCachedError(
                    f"Could not {what}: HF_HUB_OFFLINE is set and the file is not cached. {OFFLINE_WAYS}"
                ) from error
            except Exception as error:
                cause = _root_cause(error)
                if isinstance(error, hf.EntryNotFoundError) and not isinstance(error, hf.LocalEntryNotFoundError):
                    raise QuantNotFoundError(f"Could not {what}: the Hub has no such file at that revision.") from error
                if not _transient(cause):
                    if isinstance(cause, PermissionError) or getattr(cause, "errno", None) in {13, 30}:
                        raise CacheNotWritableError(f"Could not {what}: {cause}") from error
                    raise DownloadError(f"Could not {what} from {budget.endpoint}: {cause}") from error
                if budget.failures == failures:  # a failure the guard did not see (hf_xet, huggingface_hub < 1.0)
                    budget.record_failure("", f"{type(cause).__name__}: {cause}")
                if budget.spent:
                    raise DownloadError(budget.message()) from error
            delay = min(_RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)], max(budget.retry_seconds_left(), 0.0))
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _root_cause(error: BaseException) -> BaseException:
    """The network error under huggingface_hub's wrappers (``LocalEntryNotFoundError`` hides the HEAD's failure)."""
    from huggingface_hub import errors as hf

    while isinstance(error, hf.LocalEntryNotFoundError) and error.__cause__ is not None:
        error = error.__cause__
    return error


def _transient(error: BaseException) -> bool:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return int(status) in RETRY_STATUS
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"TransportError", "ConnectionError", "Timeout", "TimeoutException", "TimeoutError"})


def _endpoint_name(endpoint: str | None) -> str:
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


# ----------------------------------------------------------------------------- cache


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _cached_snapshot(repo_id: str, revision: str, cache: Path) -> Path | None:
    """The snapshot folder of ``repo_id`` at ``revision`` in the cache, or ``None``."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    commit = revision
    ref = folder / "refs" / revision
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
    snapshot = folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def _ensure_writable(cache: Path) -> None:
    try:
        cache.mkdir(parents=True, exist_ok=True)
        probe = cache / f".qwen_embed_write_test_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise CacheNotWritableError(
            f"The cache directory {cache} cannot be written ({error.strerror or error}). "
            "Pass cache_dir= (or set HF_HUB_CACHE / HF_HOME) to a writable folder."
        ) from error
