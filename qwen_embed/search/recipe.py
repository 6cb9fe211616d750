"""What made an index's vectors, and how its queries must be embedded: :class:`EmbeddingRecipe`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, QwenEmbedError
from ..text.prompts import DEFAULT_REGISTRY, OFFICIAL_TEMPLATE
from .errors import EmbedderMismatchError, IndexSourceError

if TYPE_CHECKING:
    from ..embedder import Embedder

__all__ = ["EmbeddingRecipe", "default_query_side", "embedder_query_prompt"]

_MARK = "\x00qwen-embed-text\x00"


def default_query_side(task: str | None, instruction: str | None) -> tuple[str | None, str | None]:
    """``(query_task, query_instruction)`` matching documents embedded with ``task``/``instruction``.

    An instruction given to the documents (a symmetric task) is given to the queries too; a task
    other than ``"document"`` gives its own query side (``"qa"``: the QA instruction); else the
    default ``"query"`` prompt (web search), as :meth:`~qwen_embed.Embedder.encode_queries` uses.
    """
    if instruction is not None:
        return None, instruction
    if task is not None and task != "document":
        return task, None
    return "query", None


def _split(template: str, instruction: str) -> tuple[str, str]:
    before, _, after = template.format(instruction=instruction, text=_MARK).partition(_MARK)
    return before, after


@dataclass(frozen=True)
class EmbeddingRecipe:
    """The facts that make two vectors comparable, as a corpus job's manifest records them.

    Attributes:
        model_file: The model file's name.
        model_sha256: Its SHA-256.
        model_size: Its size in bytes.
        quant: Its quantization (``Q8_0``, ``F16``, ...).
        pooling: ``"last"`` or ``"mean"``.
        dim: Vector length (Matryoshka dimension).
        normalize: Whether vectors are L2-normalized.
        document_prompt: Text before and after each document.
        query_prompt: Text before and after each query.
        query_task: The prompt name queries are embedded with (``encode_queries(task=...)``), or:
        query_instruction: The instruction queries are embedded with (official format).
        side, task, instruction: How the documents were embedded (as ``embed_corpus`` takes them).
        engine, max_length, long_text, chunking: The rest of the documents' settings (``chunking``
            as JSON text).
        model_path, model_mtime_ns: Where the file was, so that its hash is not taken again.
    """

    model_file: str
    model_sha256: str
    model_size: int
    quant: str
    pooling: str
    dim: int
    normalize: bool
    document_prompt: tuple[str, str]
    query_prompt: tuple[str, str]
    query_task: str | None = "query"
    query_instruction: str | None = None
    side: str = "document"
    task: str | None = None
    instruction: str | None = None
    engine: str | None = None
    max_length: int | None = None
    long_text: str | None = None
    chunking: str | None = None
    model_path: str | None = None
    model_mtime_ns: int | None = None

    # ------------------------------------------------------------------ making one

    @classmethod
    def from_embedder(
        cls,
        embedder: Embedder,
        *,
        task: str | None = None,
        instruction: str | None = None,
        long_text: str | None = None,
        query_task: str | None = None,
        query_instruction: str | None = None,
    ) -> EmbeddingRecipe:
        """The recipe of ``embedder.encode_documents(texts, task=task)`` (or ``encode(..., instruction=)``).

        ``query_task``/``query_instruction`` default to :func:`default_query_side`.
        """
        from ..corpus.store import model_fingerprint

        if instruction is not None:
            document_prompt = _split(OFFICIAL_TEMPLATE, instruction)
        else:
            document_prompt = embedder.prompts.get_prompt(task or "document").split("passage")
        q_task, q_instruction = _query_side(task, instruction, query_task, query_instruction)
        model = model_fingerprint(embedder.model_path)
        policy = long_text if long_text is not None else embedder.long_text
        chunking = getattr(embedder, "chunking", None) if policy == "chunk" else None
        return cls(
            model_file=str(model["file"]), model_sha256=str(model["sha256"]), model_size=int(model["size"]),
            quant=embedder.quantization, pooling=str(embedder.pooling), dim=embedder.dim,
            normalize=embedder.normalize, document_prompt=document_prompt,
            query_prompt=embedder_query_prompt(embedder, q_task, q_instruction),
            query_task=q_task, query_instruction=q_instruction, side="document", task=task,
            instruction=instruction, engine=embedder.backend, max_length=embedder.max_length, long_text=policy,
            chunking=_chunking_json(chunking), model_path=str(model["path"]), model_mtime_ns=int(model["mtime_ns"]),
        )  # fmt: skip

    @classmethod
    def from_corpus_manifest(
        cls, manifest: dict[str, Any], *, query_task: str | None = None, query_instruction: str | None = None
    ) -> EmbeddingRecipe:
        """The recipe a corpus job's ``_manifest.json`` records (query side: :func:`default_query_side`)."""
        settings, model = manifest.get("settings") or {}, manifest.get("model") or {}
        try:
            task, instruction = settings.get("task"), settings.get("instruction")
            q_task, q_instruction = _query_side(task, instruction, query_task, query_instruction)
            if q_instruction is not None:
                query_prompt = _split(OFFICIAL_TEMPLATE, q_instruction)
            else:
                try:
                    query_prompt = DEFAULT_REGISTRY.get_prompt(q_task or "query").split("query")
                except QwenEmbedError as error:
                    raise IndexSourceError(
                        f"the corpus was embedded with task {task!r}, which the default prompt registry does not "
                        f"hold, so the query prompt is unknown ({error}); pass query_instruction= "
                        "(--query-instruction) or a known query_task= (--query-task)."
                    ) from error
            prompt = settings.get("prompt") or ["", ""]
            return cls(
                model_file=str(model["file"]), model_sha256=str(model["sha256"]), model_size=int(model["size"]),
                quant=str(settings["quant"]), pooling=str(settings["pooling"]), dim=int(settings["dim"]),
                normalize=bool(settings["normalize"]), document_prompt=(str(prompt[0]), str(prompt[1])),
                query_prompt=query_prompt, query_task=q_task, query_instruction=q_instruction,
                side=str(settings.get("side", "document")), task=task, instruction=instruction,
                engine=settings.get("engine"), max_length=settings.get("max_length"),
                long_text=settings.get("long_text"), chunking=_chunking_json(settings.get("chunking")),
                model_path=model.get("path"), model_mtime_ns=model.get("mtime_ns"),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, IndexError) as error:
            if isinstance(error, QwenEmbedError):
                raise
            raise IndexSourceError(f"the corpus manifest lacks a setting the index needs ({error!r})") from error

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: Any) -> EmbeddingRecipe:
        if not isinstance(value, dict):
            raise ConfigurationError(f"an embedding recipe must be a JSON object, not {type(value).__name__}")
        known = {k: v for k, v in value.items() if k in cls.__dataclass_fields__}
        for key in ("document_prompt", "query_prompt"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)

    # ------------------------------------------------------------------ comparing

    def vector_differences(self, other: EmbeddingRecipe) -> list[str]:
        """What differs between the documents of two recipes (``then`` is ``self``, ``now`` is ``other``)."""
        problems = []
        if self.model_sha256 != other.model_sha256:
            problems.append(
                f"model: {self.model_file} (sha256 {self.model_sha256[:12]}...) then, "
                f"{other.model_file} (sha256 {other.model_sha256[:12]}...) now"
            )
        for key in ("quant", "pooling", "dim", "normalize", "document_prompt", "long_text", "chunking"):
            a, b = getattr(self, key), getattr(other, key)
            if a != b:
                problems.append(f"{key}: {a!r} then, {b!r} now")
        return problems

    def query_differences(self, embedder: Embedder) -> list[str]:
        """Each way ``embedder`` would embed a query unlike this recipe's documents expect."""
        from ..corpus.store import model_fingerprint

        problems = []
        known = {"path": self.model_path, "size": self.model_size, "mtime_ns": self.model_mtime_ns,
                 "sha256": self.model_sha256}  # fmt: skip
        model = model_fingerprint(Path(embedder.model_path), known)
        if model["sha256"] != self.model_sha256:
            problems.append(
                f"model: index {self.model_file} (sha256 {self.model_sha256[:12]}...), "
                f"embedder {model['file']} (sha256 {str(model['sha256'])[:12]}...)"
            )
        if embedder.quantization != self.quant:
            problems.append(f"quant: index {self.quant}, embedder {embedder.quantization}")
        for key, mine, theirs in (
            ("pooling", self.pooling, str(embedder.pooling)),
            ("dim", self.dim, embedder.dim),
            ("normalize", self.normalize, embedder.normalize),
        ):
            if mine != theirs:
                problems.append(f"{key}: index {mine!r}, embedder {theirs!r}")
        try:
            prompt = embedder_query_prompt(embedder, self.query_task, self.query_instruction)
        except QwenEmbedError as error:
            problems.append(f"query prompt: the embedder cannot make it ({error})")
        else:
            if prompt != self.query_prompt:
                problems.append(f"query prompt: index {self.query_prompt!r}, embedder {prompt!r}")
        return problems

    def check(self, embedder: Embedder, *, where: str = "the index") -> None:
        """Raise :class:`EmbedderMismatchError` listing every difference :meth:`query_differences` finds."""
        problems = self.query_differences(embedder)
        if problems:
            raise EmbedderMismatchError(
                f"this Embedder would embed queries unlike the documents of {where}: "
                + "; ".join(problems)
                + ". Load the index's model with its settings (Embedder(path, dim=..., normalize=..., pooling=...))"
                " or rebuild the index with this one."
            )

    def query_call(self) -> dict[str, Any]:
        """The options of the encode call that embeds a query (``instruction`` or ``task``)."""
        if self.query_instruction is not None:
            return {"instruction": self.query_instruction}
        return {"task": self.query_task}


def embedder_query_prompt(embedder: Embedder, task: str | None, instruction: str | None) -> tuple[str, str]:
    """The text ``embedder`` puts before and after a query under ``task`` or ``instruction``."""
    if instruction is not None:
        text = embedder.format(_MARK, instruction=instruction)
    else:
        text = embedder.format(_MARK, prompt_name=task or "query")
    before, _, after = text.partition(_MARK)
    return before, after


def _query_side(
    task: str | None, instruction: str | None, query_task: str | None, query_instruction: str | None
) -> tuple[str | None, str | None]:
    if query_instruction is not None:
        return None, query_instruction
    if query_task is not None:
        return query_task, None
    return default_query_side(task, instruction)


def _chunking_json(chunking: Any) -> str | None:
    if chunking is None:
        return None
    if hasattr(chunking, "__dataclass_fields__"):
        chunking = asdict(chunking)
    return json.dumps(chunking, sort_keys=True)
