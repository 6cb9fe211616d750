"""A Transformers checkpoint (config, safetensors, tokenizer) from the Hub, under the downloader's guard.

``qwen-embed verify`` compares a GGUF file with the official checkpoint it was converted from;
this module fetches that checkpoint with ``huggingface_hub.snapshot_download`` into the standard
cache, through the same timeouts, retry budget and error translation as the GGUF downloads
(:mod:`._network`, :func:`.download._hub_call`). Offline (``HF_HUB_OFFLINE=1`` or
``local_files_only=True``) only the cache answers.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, NotCachedError
from ._network import OFFLINE_WAYS
from .download import _cache_dir, _ensure_writable, _hub_call, _offline, _silent_tqdm
from .options import HubOptions

__all__ = ["CHECKPOINT_PATTERNS", "fetch_checkpoint"]

#: What a checkpoint needs to load in Transformers: configs, tokenizer files, safetensors weights.
CHECKPOINT_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "*.jinja")


def fetch_checkpoint(repo_id: str, *, hub: HubOptions | None = None) -> Path:
    """Download (once) a Transformers checkpoint's config, tokenizer and safetensors; return its folder.

    >>> fetch_checkpoint("Qwen/Qwen3-Embedding-0.6B", hub=HubOptions(revision="main"))  # doctest: +SKIP

    Args:
        repo_id: ``owner/name`` of a model repository (``Qwen/Qwen3-Embedding-0.6B``).
        hub: Revision, cache, token, endpoint, ``local_files_only`` (``HF_HUB_OFFLINE=1`` does the same)
            and progress bars, as for :func:`~qwen_embed.download_model` (``memory_budget`` does not apply).

    Raises:
        NotCachedError: Offline and the checkpoint is not in the cache.
        RepoNotFoundError, GatedRepoError, DownloadError, CacheNotWritableError: As the GGUF downloads do.
    """
    from huggingface_hub import errors as hf
    from huggingface_hub import snapshot_download

    hub = HubOptions() if hub is None else hub
    if not isinstance(hub, HubOptions):
        raise ConfigurationError(f"hub must be a qwen_embed.HubOptions, not {type(hub).__name__}")
    revision, local_files_only = hub.revision, hub.local_files_only
    cache = _cache_dir(hub.cache_dir)
    options: dict[str, Any] = dict(
        revision=revision,
        cache_dir=cache,
        token=hub.token,
        endpoint=hub.endpoint,
        allow_patterns=list(CHECKPOINT_PATTERNS),
    )
    if local_files_only or _offline():
        try:
            return Path(snapshot_download(repo_id, local_files_only=True, **options))
        except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled, FileNotFoundError) as error:
            raise NotCachedError(
                f"The checkpoint {repo_id}@{revision or 'main'} is not in the cache at {cache} and the Hub is off "
                f"limits ({'local_files_only=True' if local_files_only else 'HF_HUB_OFFLINE is set'}). Download it "
                f"once with a connection, or pass the path of a local checkpoint folder. {OFFLINE_WAYS}"
            ) from error
    if not hub.download_progress and "tqdm_class" in inspect.signature(snapshot_download).parameters:
        options["tqdm_class"] = _silent_tqdm()
    _ensure_writable(cache)

    def download() -> str:
        return str(snapshot_download(repo_id, **options))

    what = f"download the checkpoint {repo_id}@{revision or 'main'}"
    return Path(_hub_call(download, repo_id=repo_id, what=what, endpoint=hub.endpoint))
