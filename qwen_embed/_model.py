"""What the Embedder and the Reranker share: a GGUF file, an engine's lifecycle, the Hub, pickling.

A model class records the options it was built with (its *recipe*), so that it pickles as
"this file (or this Hub repo, quant and revision) with these options" and loads again
wherever it is unpickled; it never pickles native state.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from .engines.base import Engine
from .engines.gguf_info import GGUFInfo, read_gguf_info
from .errors import ConfigurationError, ModelClosedError, UnsafeForkError
from .hub.catalog import normalize_quant
from .hub.download import ModelResolution
from .hub.options import HubOptions, check_option_names, hub_options

__all__ = ["ForkedModel", "GGUFModel"]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound="GGUFModel")

_FLOAT_TYPES = {"F32", "F16", "BF16", "F64"}


class GGUFModel:
    """Base of :class:`~qwen_embed.Embedder` and :class:`~qwen_embed.Reranker` (not used directly)."""

    _DEFAULT_MODEL: ClassVar[str] = "0.6B"
    #: Which catalog names this class's models on the Hub: ``"embedding"`` or ``"reranker"``.
    catalog_kind: ClassVar[str] = "embedding"

    _engine: Engine | None
    _info: GGUFInfo
    _path: Path
    _backend: str
    _backend_reason: str
    _n_threads: int

    def _start(self, options: dict[str, Any]) -> None:
        """Record the recipe (the constructor's keyword options) before anything can fail."""
        self._options = {k: v for k, v in options.items() if k not in ("self", "model_path", "__class__")}
        self._hub_recipe: dict[str, Any] | None = None
        self._resolution: ModelResolution | None = None
        self._engine = None

    # ------------------------------------------------------------------ the Hub

    @classmethod
    def from_pretrained(
        cls: type[M],
        model: str | os.PathLike[str] | None = None,
        *,
        quant: str | None = None,
        filename: str | None = None,
        hub: HubOptions | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        token: str | bool | None = None,
        endpoint: str | None = None,
        local_files_only: bool | None = None,
        memory_budget: int | None = None,
        download_progress: bool | None = None,
        **options: Any,
    ) -> M:
        """Fetch (once, into the Hugging Face cache) and load a GGUF of this model family.

        >>> emb = Embedder.from_pretrained("0.6B", quant="Q8_0")                          # doctest: +SKIP
        >>> rr = Reranker.from_pretrained("0.6B", hub=HubOptions(local_files_only=True))  # doctest: +SKIP

        Every option is checked before any request: a misspelt option name, or a Hub option of
        the wrong type, fails at once with :class:`~qwen_embed.ConfigurationError`.

        Args:
            model: A catalog size or alias (``"0.6B"``, ``"4B"``, ``"8B"``, ``"qwen3-embedding-8b"``),
                any Hub repo id holding GGUF files, or the path of a local ``.gguf`` file
                (default: ``"0.6B"``).
            quant: Quantization in any case (``"Q8_0"``, ``"q4_k_m"``, ``"f16"``), or ``"auto"``: the
                best quality whose file plus working memory fits ``memory_budget`` (default: the RAM
                available now); default: the catalog entry's (``"Q8_0"`` for the embedding models).
                :attr:`resolution` says what was chosen and why. For a local file, ``quant`` must be
                the file's own (or left out).
            filename: Pick a file by name instead (when several match one quant).
            hub: How to reach the Hub, as one :class:`~qwen_embed.HubOptions`; or give its fields as
                the keywords below (not both). A cached file is used without any network call, and
                ``HF_HUB_OFFLINE=1`` is honoured.
            revision, cache_dir, token, endpoint, local_files_only, memory_budget, download_progress:
                The fields of :class:`~qwen_embed.HubOptions`, as keywords.
            **options: Keyword options of the class (``dim``, ``long_text``, ``n_threads``, ...).

        Raises:
            ConfigurationError: An unknown option (the closest valid one is named), a bad Hub option,
                both ``hub=`` and Hub keywords, or a ``quant`` that a local file does not hold.
            HubError: The Hub could not provide the file (see :mod:`qwen_embed.errors`).
        """
        from .hub.download import fetch_model

        where = f"{cls.__name__}.from_pretrained"
        check_option_names(options, _load_options(cls), where=where)
        hub = hub_options(
            hub,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            endpoint=endpoint,
            local_files_only=local_files_only,
            memory_budget=memory_budget,
            download_progress=download_progress,
        )
        model = cls._DEFAULT_MODEL if model is None else model
        if not isinstance(model, (str, os.PathLike)):
            kind = type(model).__name__
            raise ConfigurationError(
                f"model must be a catalog size such as '0.6B', a Hub repo id or a .gguf path, not {kind}"
            )
        for option, value in (("quant", quant), ("filename", filename)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigurationError(f"{option} must be a non-empty str or None, not {value!r}")
        name = os.fspath(model)
        local = Path(os.path.expanduser(name))
        if name.lower().endswith(".gguf") and local.is_file():
            _check_local_choice(local, quant, filename)
            return cls(local, **options)  # type: ignore[call-arg]
        recipe = dict(model=name, quant=quant, filename=filename, hub=hub.without_token())
        path, resolution = fetch_model(name, kind=cls.catalog_kind, quant=quant, filename=filename, hub=hub)
        logger.info("%s@%s: %s", resolution.repo_id, resolution.revision, resolution.reason)
        loaded = cls(path, **options)  # type: ignore[call-arg]
        loaded._resolution = resolution
        loaded._hub_recipe = recipe  # the token stays out: a pickle must not carry secrets (the receiver uses HF_TOKEN)
        return loaded

    def __reduce__(self) -> tuple[Any, tuple[type[GGUFModel], dict[str, Any]]]:
        """Pickle as a recipe: the file (or the Hub resolution) and the options, never native state.

        Unpickling loads the model in the receiving process (a spawn pool worker, a Ray task, a
        Spark executor): from the same path when that file exists there, else through
        :meth:`from_pretrained` with the same model, quant and :class:`~qwen_embed.HubOptions`,
        less the token (the receiver uses ``HF_TOKEN`` or its stored login).
        """
        state = {"path": str(self._path), "options": self._options, "hub": self._hub_recipe}
        return (_restore, (type(self), state))

    # ------------------------------------------------------------------ metadata

    @property
    def resolution(self) -> ModelResolution | None:
        """How :meth:`from_pretrained` chose the file (repo, revision, quant, reason); ``None`` otherwise."""
        return self._resolution

    @property
    def model_path(self) -> Path:
        """The GGUF file."""
        return self._path

    @property
    def metadata(self) -> dict[str, Any]:
        """The file's GGUF metadata (long arrays are summarized)."""
        return dict(self._info.metadata)

    @property
    def architecture(self) -> str:
        return str(self._info.architecture)

    @property
    def quantization(self) -> str:
        """Weight type of the file (``"Q8_0"``, ``"F16"``, ``"Q4_K_M"``, ...)."""
        return self._info.quantization

    @property
    def quantized(self) -> bool:
        """Whether the file's matrices are quantized (not F32/F16/BF16)."""
        return any(t.type_name not in _FLOAT_TYPES for t in self._info.tensors if len(t.shape) >= 2)

    @property
    def n_threads(self) -> int:
        return self._n_threads

    @property
    def backend(self) -> str:
        """``"llama"`` or ``"torch"``: the engine in use."""
        return self._backend

    @property
    def compute_dtype(self) -> str | None:
        """The torch engine's compute dtype (``"float32"``, ``"bfloat16"`` or ``"float16"``); ``None`` on
        llama.cpp, whose arithmetic follows the file's types. Vectors made under different ones differ."""
        if self._backend != "torch":
            return None
        dtype = getattr(self._engine, "dtype", None)
        return dtype if isinstance(dtype, str) else None

    @property
    def backend_reason(self) -> str:
        """Why this backend was chosen (``backend="auto"`` explains its pick)."""
        return self._backend_reason

    @property
    def workarounds(self) -> tuple[str, ...]:
        """Workarounds for engine bugs in force for this model."""
        return self._require_engine().workarounds

    def _torch_engine(self, *, pooling: str, dtype: str | None, device: str | None, max_sequences: int,
                      batch_tokens: int) -> Engine:  # fmt: skip
        from .engines.torch import TorchEngine

        return TorchEngine(
            self._path,
            pooling=pooling,
            n_threads=self._n_threads,
            dtype=dtype,
            device=device or ("cuda" if "CUDA" in self._backend_reason else "cpu"),
            max_sequences=max_sequences,
            batch_tokens=batch_tokens,
        )

    @staticmethod
    def _no_torch_options(dtype: str | None, device: str | None) -> None:
        if dtype is not None or device is not None:
            raise ConfigurationError("dtype= and device= apply to backend='torch'; llama.cpp runs the file's types")

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (further use raises :class:`~qwen_embed.ModelClosedError`)."""
        return getattr(self, "_engine", None) is None

    def _require_engine(self) -> Engine:
        if self._engine is None:
            raise ModelClosedError(f"{self._path.name}: this {type(self).__name__} was closed; create a new one.")
        return self._engine

    def close(self) -> None:
        """Free the model; further use raises :class:`~qwen_embed.ModelClosedError` (``EmbedderClosedError``).

        Returns at once, from any thread: calls running in other threads stop at their next
        engine step (a llama.cpp decode stops between graph nodes) and raise
        :class:`~qwen_embed.ModelClosedError`; the native memory is freed when the last ends.
        """
        engine, self._engine = getattr(self, "_engine", None), None
        if engine is not None:
            engine.close()

    def __enter__(self: M) -> M:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _restore(cls: type[M], state: dict[str, Any]) -> M | ForkedModel:
    """Unpickle a model: load its file here, or fetch it as it was fetched.

    In a child forked after its parent ran llama.cpp or PyTorch no model can run (their thread pools
    do not survive ``fork()``). Unpickling must not raise there: ``multiprocessing.Pool`` unpickles a
    task's arguments in the worker and, when that raises, loses the task and waits for it forever.
    So the result is then a :class:`ForkedModel`, which raises the
    :class:`~qwen_embed.UnsafeForkError` when it is used, inside the task, where the pool reports it.
    """
    options, hub = dict(state["options"]), state.get("hub")
    path = Path(state["path"])
    try:
        if path.is_file() or hub is None:
            loaded = cls(path, **options)  # type: ignore[call-arg]
        else:
            recipe = dict(hub)
            loaded = cls.from_pretrained(recipe.pop("model"), **recipe, **options)
    except UnsafeForkError as error:
        return ForkedModel(cls, state, str(error))
    loaded._hub_recipe = hub
    return loaded


def _load_options(cls: type[GGUFModel]) -> set[str]:
    """The keyword options ``cls`` takes (its constructor's keyword-only parameters)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _check_local_choice(path: Path, quant: str | None, filename: str | None) -> None:
    """``quant=`` and ``filename=`` choose among a repository's files; for a local file they must name it."""
    if quant is not None and normalize_quant(quant) != "AUTO":
        found = read_gguf_info(path).quantization
        if normalize_quant(quant) != normalize_quant(found):
            raise ConfigurationError(
                f"{path.name} is a {found} file, not quant={quant!r}: quant= picks a file from a Hub repository, "
                f"and a local file is what it is. Drop quant= (or pass quant={found!r}), or pass the path of a "
                f"{normalize_quant(quant)} file."
            )
    if filename is not None and filename != path.name:
        raise ConfigurationError(
            f"filename={filename!r} picks a file from a Hub repository; the local file given is {path.name}. "
            "Drop filename= or pass the path of the file you mean."
        )


class ForkedModel:
    """What an Embedder or a Reranker unpickles as in an unsafe fork child: every use raises UnsafeForkError.

    It pickles as the model's recipe again, so it can still be passed on to a spawn pool.
    """

    _OWN = frozenset({"_cls", "_state", "_error", "close", "closed", "__class__", "__reduce__", "__reduce_ex__",
                      "__repr__", "__del__", "__dict__", "__getstate__", "__setstate__"})  # fmt: skip

    def __init__(self, cls: type[GGUFModel], state: dict[str, Any], error: str) -> None:
        self._cls = cls
        self._state = state
        self._error = error

    def __getattribute__(self, name: str) -> Any:
        if name in ForkedModel._OWN:
            return object.__getattribute__(self, name)
        raise UnsafeForkError(object.__getattribute__(self, "_error"))

    def __enter__(self) -> ForkedModel:
        raise UnsafeForkError(self._error)

    def __exit__(self, *exc: object) -> None:
        return None

    @property
    def closed(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to free: no model was loaded."""

    def __reduce__(self) -> tuple[Any, tuple[type[GGUFModel], dict[str, Any]]]:
        return (_restore, (self._cls, self._state))

    def __repr__(self) -> str:
        name = Path(self._state["path"]).name
        return f"<{self._cls.__name__} of {name!r}, not loaded in this forked process: use raises UnsafeForkError>"
