"""From "0.6B, Q8_0" to a verified GGUF file in the Hugging Face cache.

Resolution reads the repository's live file list (one API call), picks the file(s)
for the quantization, downloads them with ``huggingface_hub`` into the standard
cache, and checks each file's SHA-256 against the Hub's LFS metadata. A file that
is already cached is used without any network call, and offline mode
(``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) resolves from the cache alone.
The cache is read through ``huggingface_hub``'s public cache API (``scan_cache_dir``,
``try_to_load_from_cache``), never by walking its folders.

Every function takes the Hub options either as one :class:`~qwen_embed.HubOptions`
(``hub=``) or as the keywords that build one (``revision=``, ``cache_dir=``, ...).
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .._memory import OVERHEAD_BYTES, available_memory, format_size
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
from ._network import OFFLINE_WAYS, RETRY_STATUS, BudgetSpent, NetworkSettings, RetryBudget, hub_session
from .catalog import DEFAULT_QUANT, CatalogModel, lookup, normalize_quant, parse_gguf_filename, quant_rank
from .options import HubOptions, hub_options

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
    kind: str = "embedding",
    hub: HubOptions | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
) -> list[QuantFile]:
    """The quantizations a repository offers, best quality first, with their sizes in bytes.

    Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) it lists what the cache holds.

    Args:
        model: A catalog size or alias of ``kind``, or any repo id.
        kind: ``"embedding"`` or ``"reranker"``: which catalog names ``model``.
        hub: The Hub options, or give them as the keywords below (not both).
        revision, token, endpoint, cache_dir, local_files_only: As in :class:`~qwen_embed.HubOptions`.
    """
    options = hub_options(
        hub, revision=revision, token=token, endpoint=endpoint, cache_dir=cache_dir, local_files_only=local_files_only
    )
    repo_id, _ = lookup(model, kind=kind)
    revision = options.revision or "main"
    cache = _cache_dir(options.cache_dir)
    if options.local_files_only or _offline():
        files = _cached_files(repo_id, revision, cache)
    else:
        files = _remote_files(repo_id, revision, token=options.token, endpoint=options.endpoint)
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
    """``{path: (size, None)}`` for every ``.gguf`` file the cache holds for ``repo_id`` at ``revision``."""
    from huggingface_hub import CacheNotFound, scan_cache_dir

    try:
        info = scan_cache_dir(cache)
    except (CacheNotFound, ValueError):  # no cache folder yet, or a file where the folder should be
        return {}
    for repo in info.repos:
        if repo.repo_type != "model" or repo.repo_id != repo_id:
            continue
        for rev in repo.revisions:
            if revision in rev.refs or rev.commit_hash == revision:
                return {
                    item.file_path.relative_to(rev.snapshot_path).as_posix(): (item.size_on_disk, None)
                    for item in rev.files
                    if item.file_name.lower().endswith(".gguf")
                }
    return {}


def _cached_path(repo_id: str, filename: str, revision: str, cache: Path) -> Path | None:
    """The cached copy of one file of ``repo_id`` at ``revision``, or ``None``."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
    return Path(found) if isinstance(found, str) else None


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
    for (label, _), parts in groups.items():
        names = tuple(path for _, path in sorted(parts))
        cached = all(_cached_path(repo_id, name, revision, cache) is not None for name in names)
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
    kind: str = "embedding",
    quant: str | None = None,
    filename: str | None = None,
    hub: HubOptions | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
    memory_budget: int | None = None,
) -> ModelResolution:
    """Decide which file(s) of which repository to use, without downloading.

    A file already in the cache for this revision wins without a network call;
    otherwise the live file list decides (offline, the cache is all there is).

    Args:
        model: A catalog size or alias of ``kind`` (``"0.6B"``, ``"qwen3-embedding-4b"``), or any repo id.
        kind: ``"embedding"`` or ``"reranker"``: which catalog names ``model``.
        quant: A quantization name (any case) or ``"auto"``; default: the catalog entry's
            (``"Q8_0"`` for a repo outside the catalog).
        filename: Pick a file by name instead (when several match one quant).
        hub: The Hub options, or give them as the keywords below (not both).
        revision, token, endpoint, cache_dir, local_files_only, memory_budget: As in
            :class:`~qwen_embed.HubOptions`.

    Raises:
        QwenEmbedError: A subclass naming what failed: UnknownModelError, RepoNotFoundError,
            GatedRepoError, NoGGUFFilesError, QuantNotFoundError, AmbiguousFileError,
            MemoryBudgetError, NotCachedError or ConfigurationError.
    """
    options = hub_options(
        hub,
        revision=revision,
        token=token,
        endpoint=endpoint,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        memory_budget=memory_budget,
    )
    return _resolve(model, kind=kind, quant=quant, filename=filename, hub=options)


def _resolve(model: str, *, kind: str, quant: str | None, filename: str | None, hub: HubOptions) -> ModelResolution:
    wanted = _check_quant(quant)
    if filename is not None and (not isinstance(filename, str) or not filename.strip()):
        raise ConfigurationError(f"filename must be a file name in the repository, not {filename!r}")
    repo_id, card = lookup(model, kind=kind)
    if wanted is None:
        wanted = normalize_quant(card.default_quant) if card is not None else DEFAULT_QUANT
    revision = hub.revision or "main"
    cache = _cache_dir(hub.cache_dir)
    local_files_only = hub.local_files_only
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
                f"Download it once with a connection (qwen-embed download {model} --quant {wanted}), "
                f"or point cache_dir= at a cache that holds it. {OFFLINE_WAYS}"
            )
        source = "cache"
    else:
        available = _group_quants(
            repo_id, revision, _remote_files(repo_id, revision, token=hub.token, endpoint=hub.endpoint), cache
        )
        source = "Hub"

    if wanted == "AUTO" and filename is None:
        chosen, reason = _choose_auto(available, repo_id, card, hub.memory_budget)
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


def _check_quant(quant: str | None) -> str | None:
    """``quant`` in its canonical spelling (``None``: the catalog's default)."""
    if quant is None:
        return None
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
    else:  # HubOptions checked it
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
        f"No quantization of {repo_id} fits the {budget_source} of {format_size(budget)}: the smallest, "
        f"{smallest.quant}, needs about {format_size(smallest.size + _working_memory(smallest.size, card))}. "
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
    kind: str = "embedding",
    quant: str | None = None,
    filename: str | None = None,
    hub: HubOptions | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    local_files_only: bool | None = None,
    memory_budget: int | None = None,
    progress: bool | None = None,
) -> Path:
    """Resolve ``model`` and ``quant``, download the file(s) into the Hugging Face cache, verify, return the path.

    >>> path = download_model("0.6B", quant="Q8_0")                                   # doctest: +SKIP
    >>> path = download_model("4B", kind="reranker", hub=HubOptions(revision="main"))  # doctest: +SKIP

    A split GGUF downloads all its parts; the path of the first part is returned (llama.cpp
    finds the others beside it).

    Args:
        model: A catalog size or alias of ``kind`` (``"0.6B"``, ``"qwen3-embedding-4b"``), or any repo id.
        kind: ``"embedding"`` or ``"reranker"``: which catalog names ``model``.
        quant: A quantization name (any case) or ``"auto"``; default: the catalog entry's.
        filename: Pick a file by name instead (when several match one quant).
        hub: The Hub options, or give them as the keywords below (not both).
        revision, cache_dir, token, endpoint, local_files_only, memory_budget: As in
            :class:`~qwen_embed.HubOptions`.
        progress: Show a progress bar (``HubOptions.download_progress``).
    """
    return fetch_model(
        model,
        kind=kind,
        quant=quant,
        filename=filename,
        hub=hub,
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
    kind: str = "embedding",
    quant: str | None = None,
    filename: str | None = None,
    hub: HubOptions | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    local_files_only: bool | None = None,
    memory_budget: int | None = None,
    progress: bool | None = None,
) -> tuple[Path, ModelResolution]:
    """:func:`download_model`, also returning the :class:`ModelResolution` (what was chosen and why)."""
    options = hub_options(
        hub,
        revision=revision,
        cache_dir=cache_dir,
        token=token,
        endpoint=endpoint,
        local_files_only=local_files_only,
        memory_budget=memory_budget,
        download_progress=progress,
    )
    resolution = _resolve(model, kind=kind, quant=quant, filename=filename, hub=options)
    cache = _cache_dir(options.cache_dir)
    item = resolution.file
    if item.cached:
        path = _cached_path(resolution.repo_id, item.filename, resolution.revision, cache)
        if path is not None:
            return path, resolution
    _ensure_writable(cache)
    paths = [
        _download_one(
            resolution.repo_id,
            name,
            sha,
            revision=resolution.revision,
            cache=cache,
            token=options.token,
            endpoint=options.endpoint,
            progress=options.download_progress,
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

    class SilentTqdm(tqdm):  # type: ignore[misc]
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


def _ensure_writable(cache: Path) -> None:
    try:
        cache.mkdir(parents=True, exist_ok=True)
        # A unique name per call: two threads of one process (same pid) checking the same cache at once
        # must not remove each other's probe.
        handle, probe = tempfile.mkstemp(prefix=".qwen_embed_write_test_", dir=cache)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise CacheNotWritableError(
            f"The cache directory {cache} cannot be written ({error.strerror or error}). "
            "Pass cache_dir= (or set HF_HUB_CACHE / HF_HOME) to a writable folder."
        ) from error
