"""What one encode call asks for, and what it gives back: :class:`EncodeCall`, :class:`EncodeResult`, :class:`Receipt`.

Every entry point (``Embedder.encode`` and its siblings, the corpus job, Ray, the framework
adapters, the server and the CLI) turns its arguments into one frozen :class:`EncodeCall`, which
checks itself when it is made; :meth:`Embedder.run <qwen_embed.Embedder.run>` is the one path that
consumes it. The same option therefore has one name and one check everywhere:

- ``side``: ``"query"`` (a search query: the task's query instruction applies) or ``"document"``
  (a document: bare for retrieval, instructed for symmetric tasks); ``None`` embeds the text
  as :meth:`~qwen_embed.Embedder.encode` always has (the ``task``'s query side, if any);
- ``task``: a registered prompt name (``"query"``, ``"sts"``, ``"qa"``, ...; see
  :func:`qwen_embed.list_prompts`); sentence-transformers calls it ``prompt_name``;
- ``instruction``: a free-text task instruction in the official format
  ``Instruct: {instruction}\\nQuery:{text}``; it wins over ``task``.

>>> from qwen_embed import EncodeCall
>>> call = EncodeCall(side="query", task="qa", dim=256)
>>> call.replace(dim=512).dim
512
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ._pipeline import MAX_BATCH_SIZE
from .errors import ConfigurationError, DimensionError
from .quantization import PRECISIONS, QuantizationRanges
from .text.long_text import POLICIES
from .text.prompts import check_instruction

__all__ = [
    "AGGREGATES",
    "MAX_BATCH_SIZE",
    "PRECISIONS",
    "RERANK_LONG_TEXT",
    "SIDES",
    "EncodeCall",
    "EncodeResult",
    "Receipt",
    "RerankCall",
    "RerankResult",
    "Side",
]

Side = Literal["query", "document"]
SIDES: tuple[str, ...] = ("query", "document")


def _optional_bool(name: str, value: object) -> bool | None:
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    raise ConfigurationError(f"{name} must be True, False or None, not {value!r}")


def _optional_size(name: str, value: object, upper: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= upper:
        raise ConfigurationError(f"{name} must be an int from 1 to {upper:,} or None, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class EncodeCall:
    """The options of one encode call, checked when made. ``None`` means "the embedder's default".

    Args:
        side: ``"query"``, ``"document"`` or ``None`` (see the module docs).
        task: A registered prompt name; with ``side="query"`` its query instruction applies, with
            ``side="document"`` its document side (none for retrieval tasks). Default: ``"query"``
            for queries, ``"document"`` for documents, else the embedder's ``default_prompt_name``.
        instruction: A task instruction in the official format; wins over ``task``.
        dim: Output dimension (Matryoshka); the model checks the range.
        normalize: L2-normalize the vectors.
        long_text: ``"error"``, ``"truncate"`` or ``"chunk"`` for texts over ``max_length``.
        batch_size: Most texts per decode (at most the embedder's ``batch_size``).
        show_progress: A progress bar.
        precision: Output precision: ``"float32"`` (default), ``"float16"``, ``"int8"``, ``"uint8"``,
            ``"binary"`` or ``"ubinary"`` (sentence-transformers' semantics, see
            :func:`~qwen_embed.quantize_embeddings`).
        ranges: The :class:`~qwen_embed.QuantizationRanges` ``int8``/``uint8`` need (computed once,
            e.g. ``QuantizationRanges.from_embeddings(sample)``, and kept with the vectors).
        deterministic: Bit-identical vectors for the same text whatever batch it is packed with,
            its position and the thread count (each text is decoded alone: slower; see the
            performance guide). Default: the embedder's setting.
    """

    side: Side | None = None
    task: str | None = None
    instruction: str | None = None
    dim: int | None = None
    normalize: bool | None = None
    long_text: str | None = None
    batch_size: int | None = None
    show_progress: bool | None = None
    precision: str = "float32"
    ranges: QuantizationRanges | None = None
    deterministic: bool | None = None

    def __post_init__(self) -> None:
        if self.side is not None and self.side not in SIDES:
            raise ConfigurationError(f"side={self.side!r} is not one of None, 'query', 'document'.")
        if self.task is not None and (not isinstance(self.task, str) or not self.task.strip()):
            raise ConfigurationError(f"task must be a prompt name such as 'query', 'qa' or 'sts', not {self.task!r}")
        check_instruction(self.instruction, "instruction")
        if self.dim is not None:
            if isinstance(self.dim, bool) or not isinstance(self.dim, (int, np.integer)):
                raise DimensionError(f"dim must be an int, not {type(self.dim).__name__}")
            object.__setattr__(self, "dim", int(self.dim))
        object.__setattr__(self, "normalize", _optional_bool("normalize", self.normalize))
        object.__setattr__(self, "show_progress", _optional_bool("show_progress", self.show_progress))
        if self.long_text is not None and self.long_text not in POLICIES:
            raise ConfigurationError(
                f"Unknown long_text policy {self.long_text!r}. Choose one of: {', '.join(map(repr, POLICIES))}."
            )
        object.__setattr__(self, "batch_size", _optional_size("batch_size", self.batch_size, MAX_BATCH_SIZE))
        if self.precision not in PRECISIONS:
            raise ConfigurationError(f"precision={self.precision!r} is not one of {', '.join(map(repr, PRECISIONS))}.")
        if self.ranges is not None:
            if not isinstance(self.ranges, QuantizationRanges):
                object.__setattr__(self, "ranges", QuantizationRanges.from_array(self.ranges))
            if self.precision not in ("int8", "uint8"):
                raise ConfigurationError(f"ranges= applies to precision 'int8' or 'uint8', not {self.precision!r}")
        elif self.precision in ("int8", "uint8"):
            raise ConfigurationError(
                f"precision={self.precision!r} needs ranges=: ranges taken from each batch would make vectors of "
                "different batches incomparable. Compute them once with QuantizationRanges.from_embeddings(sample) "
                "(float32 vectors of your corpus) and keep them with the quantized vectors."
            )
        object.__setattr__(self, "deterministic", _optional_bool("deterministic", self.deterministic))

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> EncodeCall:
        """An :class:`EncodeCall` from a mapping of option names (a JSON body, CLI flags, keyword arguments).

        ``prompt_name`` (sentence-transformers' name) is accepted for ``task``; an unknown name is a
        :class:`~qwen_embed.ConfigurationError` that suggests the closest valid one.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        given = dict(options)
        if "prompt_name" in given:
            alias = given.pop("prompt_name")
            if alias is not None:
                if given.get("task") is not None and given["task"] != alias:
                    raise ConfigurationError(
                        f"prompt_name={alias!r} and task={given['task']!r} name the same option; give one."
                    )
                given["task"] = alias
        unknown = sorted(set(given) - set(names))
        if unknown:
            hints = [difflib.get_close_matches(u, [*names, "prompt_name"], n=1) for u in unknown]
            said = ", ".join(f"{u!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for u, h in zip(unknown, hints))
            raise ConfigurationError(f"Unknown encode option {said}. Options: {', '.join(names)}.")
        return cls(**given)

    def replace(self, **changes: Any) -> EncodeCall:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    def prompt_side(self) -> str:
        """Which side of a registered prompt applies: ``"passage"`` for documents, else ``"query"``."""
        return "passage" if self.side == "document" else "query"

    def prompt_name(self, default: str | None) -> str | None:
        """The registered prompt this call resolves (``default``: the embedder's ``default_prompt_name``)."""
        if self.task is not None:
            return self.task
        if self.side is not None:
            return self.side
        return default

    def as_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults, JSON-ready (for logs and manifests)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default}
        if self.ranges is not None:
            out["ranges"] = self.ranges.to_json()
        return out


@dataclass(frozen=True)
class Receipt:
    """What happened to one input: counted while it was embedded, with no second tokenization.

    Attributes:
        n_tokens: Tokens of the whole input as the model would see it (prompt and EOS included),
            before any cut; equals :meth:`Embedder.count_tokens <qwen_embed.Embedder.count_tokens>`.
        tokens_used: Tokens actually decoded for it (all chunks together, each with prompt and EOS).
        truncated: Whether text was cut (``long_text="truncate"``).
        dropped_tokens: How many text tokens the cut removed (0 unless truncated).
        chunks: How many sequences the input became (1 unless chunked).
        fusion: The fusion that made one vector of the chunks (``None`` unless chunked).
        spans: Character ``(start, end)`` of each chunk in the text (empty unless chunked).
        complete: False when counting stopped early (a reranked document far over ``max_length``
            is not tokenized to its end): ``n_tokens`` and ``dropped_tokens`` are then lower bounds.
    """

    n_tokens: int
    tokens_used: int
    truncated: bool = False
    dropped_tokens: int = 0
    chunks: int = 1
    fusion: str | None = None
    spans: tuple[tuple[int, int], ...] = field(default=())
    complete: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "spans", tuple((int(a), int(b)) for a, b in self.spans))

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``spans`` as lists of Python ints)."""
        out = dataclasses.asdict(self)
        out["spans"] = [list(s) for s in self.spans]
        return out


@dataclass(frozen=True)
class EncodeResult:
    """Vectors and a :class:`Receipt` per input, from :meth:`Embedder.run <qwen_embed.Embedder.run>`.

    Attributes:
        vectors: ``(n, dim)`` (or ``(dim,)`` for one ``str``) in the call's ``precision``.
        receipts: One per input, in input order.
        call: The call that made them.
    """

    vectors: np.ndarray
    receipts: tuple[Receipt, ...]
    call: EncodeCall

    def __len__(self) -> int:
        return len(self.receipts)

    @property
    def n_tokens(self) -> list[int]:
        """Each input's token count (prompt and EOS included), before any cut."""
        return [r.n_tokens for r in self.receipts]


#: What a (query, document) pair longer than ``max_length`` becomes.
RERANK_LONG_TEXT: tuple[str, ...] = ("truncate", "chunk", "error")
#: How the window scores of one chunked document make its score.
AGGREGATES: tuple[str, ...] = ("max", "mean", "first")
#: Most tokens two consecutive windows of a chunked document share.
MAX_OVERLAP = 4096


@dataclass(frozen=True)
class RerankCall:
    """The options of one rerank call, checked when made. ``None`` means "the reranker's default".

    Args:
        instruction: The task instruction (default: the reranker's).
        long_text: A pair over ``max_length``: ``"truncate"`` (the default, the official recipe: the
            document is cut from its right end; the receipt says how many tokens were dropped),
            ``"chunk"`` (the document is scored in token-exact windows, each with the whole prompt,
            instruction and query, and the window scores are aggregated) or ``"error"``
            (:class:`~qwen_embed.InputTooLongError` before anything is decoded).
        aggregate: With ``"chunk"``: ``"max"`` (default: the best window decides), ``"mean"`` or
            ``"first"``. Log-odds are aggregated, then turned into a probability.
        overlap: With ``"chunk"``: tokens consecutive windows share (default 32).
        raw: Log-odds ``l_yes - l_no`` instead of ``p(yes)``.
        batch_size: Most pairs per decode (at most the reranker's).
        show_progress: A progress bar.
        deterministic: Bit-identical scores whatever the other pairs of the call (each pair decoded
            alone, no prefix sharing).
    """

    instruction: str | None = None
    long_text: str = "truncate"
    aggregate: str = "max"
    overlap: int = 32
    raw: bool = False
    batch_size: int | None = None
    show_progress: bool | None = None
    deterministic: bool | None = None

    def __post_init__(self) -> None:
        check_instruction(self.instruction, "instruction")
        if self.long_text not in RERANK_LONG_TEXT:
            raise ConfigurationError(
                f"long_text={self.long_text!r} is not one of {', '.join(map(repr, RERANK_LONG_TEXT))}."
            )
        if self.aggregate not in AGGREGATES:
            raise ConfigurationError(f"aggregate={self.aggregate!r} is not one of {', '.join(map(repr, AGGREGATES))}.")
        if (
            isinstance(self.overlap, bool)
            or not isinstance(self.overlap, (int, np.integer))
            or not (0 <= int(self.overlap) <= MAX_OVERLAP)
        ):
            raise ConfigurationError(f"overlap must be an int from 0 to {MAX_OVERLAP}, not {self.overlap!r}")
        if not isinstance(self.raw, (bool, np.bool_)):
            raise ConfigurationError(f"raw must be True or False, not {self.raw!r}")
        object.__setattr__(self, "raw", bool(self.raw))
        object.__setattr__(self, "batch_size", _optional_size("batch_size", self.batch_size, MAX_BATCH_SIZE))
        object.__setattr__(self, "show_progress", _optional_bool("show_progress", self.show_progress))
        object.__setattr__(self, "deterministic", _optional_bool("deterministic", self.deterministic))

    def replace(self, **changes: Any) -> RerankCall:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class RerankResult:
    """Scores and a :class:`Receipt` per pair, from :meth:`Reranker.run <qwen_embed.Reranker.run>`.

    Attributes:
        scores: float32 ``p(yes)`` (or log-odds with ``raw``), ``(n,)``, in input order.
        receipts: One per pair: ``n_tokens`` of the whole pair before any cut (a lower bound when
            ``complete`` is False), tokens decoded, what truncation dropped, windows (``chunks``),
            the aggregate (``fusion``) and each window's character span in the document.
        best_spans: With ``long_text="chunk"``: the character ``(start, end)`` of each document's
            best-scoring window, to cite; ``None`` for a document scored whole.
        call: The call that made them.
    """

    scores: np.ndarray
    receipts: tuple[Receipt, ...]
    best_spans: tuple[tuple[int, int] | None, ...]
    call: RerankCall

    def __len__(self) -> int:
        return len(self.receipts)
