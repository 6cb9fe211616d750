"""What every adapter shares: the missing-extra error, the model source and the two sides.

An adapter holds a :class:`ModelSource` (an existing Embedder, or the options to get one
from the shared cache on first use) and a :class:`Sides` (which prompt each side gets).
``Sides.queries`` and ``Sides.documents`` make exactly one ``encode`` call per batch.
"""

from __future__ import annotations

import copy
import importlib
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..calls import EncodeCall
from ..errors import ConfigurationError, EmbedderClosedError, InputTypeError, QwenEmbedError
from ..text.prompts import check_instruction
from ._cache import file_quant, freeze, is_closed, local_path, shared_model

__all__ = ["MissingExtraError", "ModelSource", "Sides", "positive_top_n", "rank", "require", "text_list", "to_floats"]


class MissingExtraError(QwenEmbedError, ImportError):
    """A framework adapter was imported but its framework is not installed (the message has the pip command)."""


def require(module: str, *, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` with the install hint for ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{what} needs the {module.split('.')[0]!r} package, which is not installed ({error}). "
            f'Install it with: pip install "qwen-embed[{extra}]"'
        ) from error


def text_list(texts: object, *, method: str, single: str) -> list[str]:
    """``texts`` as a list of str; a lone str or a non-str item raises :class:`InputTypeError`."""
    if isinstance(texts, str):
        raise InputTypeError(f"{method} takes a list of str, not a single str; for one text use {single}.")
    if isinstance(texts, (bytes, bytearray, Mapping)) or not isinstance(texts, Sequence):
        raise InputTypeError(f"{method} takes a list of str, not {type(texts).__name__}.")
    for i, item in enumerate(texts):
        if not isinstance(item, str):
            raise InputTypeError(f"{method}: text #{i} is {type(item).__name__}, not str; every text must be a str.")
    return list(texts)


def one_text(text: object, *, method: str, many: str) -> str:
    """``text`` if it is a str; else :class:`InputTypeError` naming the method for many texts."""
    if not isinstance(text, str):
        hint = f"; for several texts use {many}" if isinstance(text, (list, tuple)) else ""
        raise InputTypeError(f"{method} takes one str, not {type(text).__name__}{hint}.")
    return text


def to_floats(vectors: np.ndarray) -> list[Any]:
    """Python floats (``list[float]`` or ``list[list[float]]``), what most frameworks assert."""
    return vectors.astype(np.float64, copy=False).tolist()  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Sides:
    """Which prompt queries and documents get.

    Attributes:
        task: A prompt name of the embedder's registry (``"qa"``, ``"code_search"``, ``"sts"``, ...)
            used for both sides: queries get its query instruction, documents its passage
            instruction (none for retrieval tasks). ``None``: web-search queries, bare documents.
        query_instruction: An instruction for queries that replaces the task's.
        document_instruction: An instruction for documents (symmetric use); default: the task's.
        dim: Output dimension (Matryoshka), or ``None`` for the embedder's.
    """

    task: str | None = None
    query_instruction: str | None = None
    document_instruction: str | None = None
    dim: int | None = None

    def __post_init__(self) -> None:
        if self.task is not None and (not isinstance(self.task, str) or not self.task):
            raise ConfigurationError(f"task must be a prompt name such as 'qa' or 'sts', not {self.task!r}")
        check_instruction(self.query_instruction, "query_instruction")
        check_instruction(self.document_instruction, "document_instruction")
        if self.dim is not None and (isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1):
            raise ConfigurationError(f"dim must be a positive int (Matryoshka size) or None, not {self.dim!r}")

    def check(self, embedder: Any) -> None:
        """Fail early on a task name or dim the embedder does not know."""
        if self.task is not None:
            embedder.prompts.get_prompt(self.task)
        if self.dim is not None:
            embedder.run([], self.query_call())  # DimensionError names the valid range

    def query_call(self) -> EncodeCall:
        """The :class:`~qwen_embed.EncodeCall` queries are embedded with."""
        return EncodeCall(side="query", task=self.task, instruction=self.query_instruction, dim=self.dim)

    def document_call(self) -> EncodeCall:
        """The :class:`~qwen_embed.EncodeCall` documents are embedded with."""
        return EncodeCall(side="document", task=self.task, instruction=self.document_instruction, dim=self.dim)

    def queries(self, embedder: Any, texts: str | list[str]) -> np.ndarray:
        """One encode call: the texts as queries."""
        return embedder.run(texts, self.query_call()).vectors  # type: ignore[no-any-return]

    def documents(self, embedder: Any, texts: str | list[str]) -> np.ndarray:
        """One encode call: the texts as documents."""
        return embedder.run(texts, self.document_call()).vectors  # type: ignore[no-any-return]

    def config(self) -> dict[str, Any]:
        """JSON-able fields (for frameworks that save adapters)."""
        return {
            "task": self.task,
            "query_instruction": self.query_instruction,
            "document_instruction": self.document_instruction,
            "dim": self.dim,
        }


class ModelSource:
    """An existing model, or the options to fetch one from the shared cache on first use.

    Args:
        kind: The class to load (``Embedder`` or ``Reranker``).
        model: A ``.gguf`` path, catalog name or Hub repo id (with ``options``), or ``None``. A local
            path is made absolute here, so a later change of directory does not change the file.
        instance: An existing ``kind`` instance (excludes ``model`` and ``options``).
        quant: Quantization for a catalog or Hub model (``None``: the catalog entry's default); for a
            local file ``None`` or the file's own (checked at load).
        options: Load and download options of ``kind``.

    :meth:`config` describes the model so that another process can load the same file: a local
    file by its absolute path and the quantization it really holds, a model fetched from the Hub by
    its repo, quantization and revision.
    """

    def __init__(
        self,
        kind: type,
        *,
        model: str | os.PathLike[str] | None = None,
        instance: Any | None = None,
        quant: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        name = kind.__name__
        if instance is not None:
            if not isinstance(instance, kind):
                raise InputTypeError(
                    f"{name.lower()}= must be a qwen_embed.{name}, not {type(instance).__name__}; "
                    f"to build one, pass model= (a .gguf path or a catalog name) instead."
                )
            if model is not None or options:
                raise ConfigurationError(
                    f"give either an existing {name} ({name.lower()}=) or model=/{name.lower()}_options=, not both"
                )
            if is_closed(instance):
                raise EmbedderClosedError(f"the {name} passed in was closed; pass an open one or model= instead.")
        if options is not None and not isinstance(options, Mapping):
            raise ConfigurationError(f"options must be a dict, not {type(options).__name__}")
        if quant is not None and not isinstance(quant, str):
            raise ConfigurationError(f"quant must be a str such as 'Q8_0', not {type(quant).__name__}")
        self.kind = kind
        local = local_path(model) if isinstance(model, (str, os.PathLike)) else None
        self.model = str(local) if local is not None else model
        self.quant = quant
        self.options: dict[str, Any] = dict(options or {})
        self._instance: Any = instance
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model is in hand (given, or loaded by a first call)."""
        return self._instance is not None

    def get(self) -> Any:
        """The model; the first call loads it through the shared cache (thread-safe)."""
        instance = self._instance
        if instance is not None:
            return instance
        with self._lock:
            if self._instance is None:
                self._instance = shared_model(self.kind, self.model, quant=self.quant, options=self.options)
            return self._instance

    def __deepcopy__(self, memo: dict[int, Any]) -> ModelSource:
        """A copy shares the loaded model (a model is a shared, thread-safe resource)."""
        twin = copy.copy(self)
        twin.options = dict(self.options)
        twin._lock = threading.Lock()
        return twin

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its lock; a model loaded from options is loaded again (via the cache) on first use."""
        state = self.__dict__.copy()
        del state["_lock"]
        if self.model is not None or self.options:
            state["_instance"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def config(self, options_key: str = "embedder_options") -> dict[str, Any]:
        """JSON-able description from which an equal source can be rebuilt in another process.

        ``{"model": ..., "quant": ..., options_key: {...}}``: a local file as its absolute path with
        the quantization it holds (read from the file, or from the loaded model); a model that
        :meth:`~qwen_embed.Embedder.from_pretrained` fetched as its repo, quantization and revision;
        a catalog name or repo id as given. Secrets and live objects in the options are left out.
        """
        instance = self._instance
        if self.model is None and instance is not None:
            resolution = instance.resolution
            if resolution is not None:  # fetched from the Hub: the repo survives moving the cache
                options = {"revision": resolution.revision}
                return {"model": resolution.repo_id, "quant": resolution.quant, options_key: options}
            path = Path(instance.model_path).resolve()
            return {"model": str(path), "quant": instance.quantization, options_key: {}}
        quant = self.quant
        if self.model is not None and local_path(self.model) is not None:
            if instance is not None:
                quant = instance.quantization
            elif Path(self.model).is_file():
                quant = file_quant(Path(self.model))
        return {"model": self.model, "quant": quant, options_key: _jsonable(self.options)}

    def key(self) -> Any:
        """Hashable identity (for equality between adapters)."""
        if self.model is None and self._instance is not None:
            return ("instance", id(self._instance))
        return (self.model, self.quant, freeze(self.options))


def _jsonable(options: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if name == "token" or not isinstance(value, (str, int, float, bool, type(None))):
            continue  # secrets and live objects are not saved with a pipeline or collection
        out[name] = value
    return out


def positive_top_n(value: object) -> int | None:
    """``top_n`` checked: a positive int, or ``None`` for all."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"top_n must be a positive int or None (keep all), not {value!r}")
    return value


def rank(
    reranker: Any, query: object, texts: list[str], *, top_n: int | None, instruction: str | None
) -> list[tuple[int, float]]:
    """``(index, score)`` best first, at most ``top_n``: one ``Reranker.rank`` call."""
    if not isinstance(query, str):
        raise InputTypeError(f"the query must be a str, not {type(query).__name__}")
    if not texts:
        return []
    hits = reranker.rank(query, texts, top_k=top_n, instruction=instruction)
    return [(int(hit["corpus_id"]), float(hit["score"])) for hit in hits]
