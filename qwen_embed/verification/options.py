"""What ``verify`` takes (:class:`VerifyOptions`) and the pass marks it applies (:func:`threshold_for`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigurationError
from ..hub.options import HubOptions

__all__ = ["BACKENDS", "FLOAT_TYPES", "KINDS", "Threshold", "VerifyOptions", "threshold_for"]

Kind = Literal["auto", "embedding", "reranker"]
KINDS: tuple[str, ...] = ("auto", "embedding", "reranker")
#: The engines verify runs a file on (``auto`` is not one: it may pick bfloat16, which is not the file's precision).
BACKENDS: tuple[str, ...] = ("llama", "torch")
#: File types that store the weights unquantized.
FLOAT_TYPES = frozenset({"F32", "F16", "BF16", "F64"})


@dataclass(frozen=True)
class VerifyOptions:
    """How :func:`~qwen_embed.verify` finds, loads and runs the two models.

    Args:
        kind: ``"embedding"``, ``"reranker"`` or ``"auto"`` (the default: a reranker when the
            file says so: RANK pooling, a ``cls.output`` head, classifier labels, or "reranker" in
            its name; for a catalog name, the embedding catalog unless the name is a reranker's).
        quant: The quantization to fetch when the model is a catalog name or repo id (default: the
            catalog's).
        hub: How to reach the Hub, for both downloads (its ``revision`` is the GGUF repository's;
            ``memory_budget`` applies to ``quant="auto"``). Default: ``HubOptions()``.
        reference_revision: Branch, tag or commit of the reference checkpoint's repository (default: ``main``).
        backend: The engine that runs the GGUF: ``"llama"`` (the default: llama.cpp computes in the
            file's own types) or ``"torch"`` (this library's PyTorch engine, in float32 so that its
            precision never hides or adds a difference of the file's).
        n_threads: CPU threads for both models (default: all this process may use).
        top_k: The depth of the retrieval agreement check.
    """

    kind: Kind = "auto"
    quant: str | None = None
    hub: HubOptions = field(default_factory=HubOptions)
    reference_revision: str | None = None
    backend: str = "llama"
    n_threads: int | None = None
    top_k: int = 3

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigurationError(
                f"VerifyOptions.kind must be one of {', '.join(map(repr, KINDS))}, not {self.kind!r}"
            )
        if not isinstance(self.hub, HubOptions):
            raise ConfigurationError(
                f"VerifyOptions.hub must be a qwen_embed.HubOptions, not {type(self.hub).__name__}"
            )
        for name in ("quant", "reference_revision"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigurationError(f"VerifyOptions.{name} must be a non-empty str or None, not {value!r}")
        if self.backend not in BACKENDS:
            raise ConfigurationError(
                f"VerifyOptions.backend must be one of {', '.join(map(repr, BACKENDS))}, not {self.backend!r}"
            )
        for name in ("n_threads", "top_k"):
            value = getattr(self, name)
            if value is None and name == "n_threads":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"VerifyOptions.{name} must be a positive int, not {value!r}")


@dataclass(frozen=True)
class Threshold:
    """The pass mark for one file type.

    Attributes:
        file_type: The file's weight type (``"F16"``, ``"Q8_0"``, ``"Q4_K_M"``, ...).
        metric: ``"min cosine"`` (embeddings) or ``"max |Δ score|"`` (rerankers).
        limit: The worst value that still passes; ``None`` for lower quantizations, which are
            reported with their measured drop and never fail on it.
    """

    file_type: str
    metric: str
    limit: float | None

    def passes(self, worst: float) -> bool:
        """Whether the worst measured value meets the mark (always true without one)."""
        if self.limit is None:
            return True
        return worst >= self.limit if self.metric == "min cosine" else worst <= self.limit

    @property
    def description(self) -> str:
        """``"min cosine >= 0.9999 (F16)"``, or ``"no threshold for Q4_K_M: reported"``."""
        if self.limit is None:
            return f"no threshold for {self.file_type}: reported"
        sign = ">=" if self.metric == "min cosine" else "<="
        return f"{self.metric} {sign} {self.limit:g} ({self.file_type})"


# Embeddings: the marks. Rerankers: the score p(yes) moves by at most a quarter of the log-odds error;
# the marks keep the embeddings' ratio (a Q8_0 file may drift 5x more than a float one). Measured on the random
# converted test reranker: F32 4e-4, Q8_0 0.017 (its log-odds spread over several units, so errors show).
_COSINE = {"float": 0.9999, "Q8_0": 0.999}
_DELTA = {"float": 0.01, "Q8_0": 0.05}


def threshold_for(file_type: str, kind: str) -> Threshold:
    """The pass mark for a file of ``file_type`` (``"F32"``, ``"Q8_0"``, ...) and ``kind``."""
    group = "float" if file_type in FLOAT_TYPES else file_type
    if kind == "reranker":
        return Threshold(file_type, "max |Δ score|", _DELTA.get(group))
    return Threshold(file_type, "min cosine", _COSINE.get(group))
