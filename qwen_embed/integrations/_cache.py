"""One process-wide cache of loaded models, shared by every framework adapter.

A LangChain query adapter, a Haystack document embedder and a Chroma embedding function
that name the same model with the same load options get the same loaded
:class:`~qwen_embed.Embedder`: the model is read once per process. The key is the
resolved file path plus the load options; per-call choices (task, instruction, ``dim``)
are not part of it, so adapters that differ only in those share one model too.

Loading is thread-safe: two threads asking for the same model wait for one load;
different models load in parallel.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigurationError, ModelNotFoundError
from ..hub.catalog import DEFAULT_MODEL, normalize_quant
from ..hub.options import HUB_OPTION_NAMES, check_option_names
from ..hub.options import hub_options as build_hub_options

__all__ = [
    "HUB_OPTIONS",
    "cached_models",
    "clear_cache",
    "file_quant",
    "is_closed",
    "local_path",
    "resolve_path",
    "shared_embedder",
    "shared_model",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Options that choose and fetch the file (``Embedder.from_pretrained``'s), not load it: ``hub`` (a
#: :class:`~qwen_embed.HubOptions`) or the keywords that build one, and ``filename``.
HUB_OPTIONS = frozenset({"filename", "hub", *HUB_OPTION_NAMES})

_lock = threading.Lock()
_models: dict[Hashable, Any] = {}
_loading: dict[Hashable, threading.Lock] = {}


def shared_embedder(
    model: str | os.PathLike[str] | None = None,
    *,
    quant: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """The process-wide :class:`~qwen_embed.Embedder` for ``model`` and these options (loaded once).

    Args:
        model: A local ``.gguf`` path, a catalog size or alias (``"0.6B"``) or a Hub repo id;
            default: the catalog's default model.
        quant: Quantization for a catalog or Hub model (``None``: the catalog entry's default,
            ``Q8_0``); for a local file, ``None`` or the file's own (a mismatch is an error).
        options: Keyword options of :class:`~qwen_embed.Embedder` (``n_threads``, ``max_length``,
            ``long_text``, ...) and of :meth:`~qwen_embed.Embedder.from_pretrained` (``revision``,
            ``cache_dir``, ``local_files_only``, ...).

    Raises:
        ConfigurationError: An option that neither accepts (the message lists the choices), or a
            ``quant`` a local file does not have.
        ModelNotFoundError: A local path (for example one a saved pipeline recorded) that does not exist.
    """
    from ..embedder import Embedder

    return shared_model(Embedder, model, quant=quant, options=options)


def shared_model(
    cls: Callable[..., T],
    model: str | os.PathLike[str] | None = None,
    *,
    quant: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> T:
    """The cached instance of ``cls(path, **load_options)`` (an Embedder, a Reranker, ...).

    ``quant=None`` means the catalog entry's default (``Q8_0`` for embedders), or a local file's own.
    """
    hub, load = split_options(cls, options)
    path = resolve_path(model, quant=quant, hub_options=hub, reranker=getattr(cls, "__name__", "") == "Reranker")
    key = (getattr(cls, "__qualname__", repr(cls)), str(path), freeze(load))
    with _lock:
        found = _models.get(key)
        if found is not None and not is_closed(found):
            return found  # type: ignore[no-any-return]
        key_lock = _loading.setdefault(key, threading.Lock())
    with key_lock:
        with _lock:
            found = _models.get(key)
        if found is not None and not is_closed(found):
            return found  # type: ignore[no-any-return]
        logger.debug("loading %s for the shared cache: %s %s", getattr(cls, "__name__", cls), path, load)
        loaded = cls(path, **load)
        with _lock:
            _models[key] = loaded
        return loaded


def clear_cache() -> None:
    """Forget every cached model.

    Models are not closed here: adapters that hold one keep working, and a model is freed
    when its last user goes away. The next adapter built from options loads afresh.
    """
    with _lock:
        _models.clear()
        _loading.clear()


def cached_models() -> list[Any]:
    """The models the cache holds now (open ones only)."""
    with _lock:
        return [m for m in _models.values() if not is_closed(m)]


def is_closed(model: object) -> bool:
    """Whether an Embedder (or Reranker) was closed (its public ``closed``)."""
    return getattr(model, "closed", False) is True


def split_options(cls: Callable[..., Any], options: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` split into hub options and ``cls``'s load options; unknown names raise."""
    if options is None:
        return {}, {}
    if not isinstance(options, Mapping):
        raise ConfigurationError(
            f"embedder_options must be a dict of option names to values, not {type(options).__name__}"
        )
    accepted = _load_options(cls)
    hub: dict[str, Any] = {}
    load: dict[str, Any] = {}
    for name, value in options.items():
        if name in HUB_OPTIONS:
            hub[name] = value
        elif name in accepted:
            load[name] = value
        else:
            check_option_names([name], accepted | HUB_OPTIONS, where=str(getattr(cls, "__name__", cls)))
    return hub, load


def _load_options(cls: Callable[..., Any]) -> set[str]:
    params = inspect.signature(cls).parameters.values()
    return {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def local_path(model: str | os.PathLike[str]) -> Path | None:
    """The absolute path ``model`` names when it is a local file (a path object, a ``.gguf`` name or an
    existing file), resolved against the current directory and symlink-free; ``None`` for a catalog
    name or Hub repo id. The file need not exist."""
    text = os.fspath(model)
    local = Path(os.path.expanduser(text))
    if isinstance(model, os.PathLike) or text.lower().endswith(".gguf") or local.is_file():
        return local.resolve()
    return None


def file_quant(path: Path) -> str:
    """The quantization a GGUF file holds (its header's file type, as ``Embedder.quantization`` says)."""
    from ..engines.gguf_info import read_gguf_info

    return read_gguf_info(path).quantization


def resolve_path(
    model: str | os.PathLike[str] | None,
    *,
    quant: str | None,
    hub_options: Mapping[str, Any] | None = None,
    reranker: bool = False,
) -> Path:
    """The absolute, symlink-free path of the model file (downloading it once if it comes from the Hub).

    Names are looked up in the embedding catalog, or in the reranker catalog when ``reranker``. For a
    local file, ``quant`` is ``None`` or must be the file's own quantization.

    Raises:
        ModelNotFoundError: A local path that does not exist (the message names it).
        ConfigurationError: A local file whose quantization is not ``quant``.
    """
    hub = dict(hub_options or {})
    if model is None:
        model = DEFAULT_MODEL
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigurationError(
            f"model must be a .gguf path, a catalog name such as '0.6B' or a Hub repo id, not {type(model).__name__}"
        )
    local = local_path(model)
    if local is not None:
        if not local.is_file():
            raise ModelNotFoundError(
                f"Model file not found: {local}. Pass an existing .gguf file or a catalog name; a saved pipeline "
                "or collection records the file's absolute path, so if the file moved, pass model= its new path."
            )
        if quant is not None:
            found = file_quant(local)
            if normalize_quant(quant) != normalize_quant(found):
                raise ConfigurationError(
                    f"{local} holds {found} weights, not quant={quant!r}. For a local file pass quant=None (the "
                    f"file's own) or {found!r}; vectors of another quantization would not match ones stored with it."
                )
        return local
    from ..hub.download import download_model

    filename = hub.pop("filename", None)
    options = build_hub_options(hub.pop("hub", None), **hub)  # checked here, before any request
    kind = "reranker" if reranker else "embedding"
    return download_model(os.fspath(model), kind=kind, quant=quant, filename=filename, hub=options).resolve()


def freeze(value: Any) -> Hashable:
    """A hashable, order-independent stand-in for an options value."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze(v) for v in value)
    if isinstance(value, os.PathLike):
        return str(os.fspath(value))
    try:
        hash(value)
    except TypeError:
        return ("repr", type(value).__qualname__, repr(value))
    return value  # type: ignore[no-any-return]
