"""Fusion strategies: many chunk vectors into one document vector.

A fusion takes a :class:`FusionInput` (the chunks' L2-normalized vectors at the
native dimension, their token counts and section ids, and an optional title vector)
and returns one raw vector; the caller slices it to the Matryoshka ``dim`` and
re-normalizes. Register your own with :func:`register_fusion`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigurationError

__all__ = [
    "FUSIONS",
    "FusionInput",
    "get_fusion",
    "hierarchical",
    "max_pool",
    "mean",
    "positional",
    "register_fusion",
    "section_vectors",
    "weighted",
]

POSITIONAL_BOOST = 1.2  # weight of the first and last chunks under "positional" (the others weigh 1)


@dataclass(frozen=True)
class FusionInput:
    vectors: np.ndarray  # (k, d) float32, rows L2-normalized
    tokens: np.ndarray  # (k,) text tokens per chunk
    sections: np.ndarray  # (k,) section id per chunk, in document order
    title: np.ndarray | None = None  # (d,) normalized title vector
    title_weight: float = 0.0


Fusion = Callable[[FusionInput], np.ndarray]


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _token_weights(tokens: np.ndarray) -> np.ndarray:
    return np.maximum(tokens.astype(np.float64), 1.0)  # an empty chunk (EOS only) still counts once


def weighted(x: FusionInput) -> np.ndarray:
    """Token-weighted mean: ``sum(n_i * v_i) / sum(n_i)``."""
    w = _token_weights(x.tokens)
    return np.asarray((w[:, None] * x.vectors).sum(axis=0) / w.sum())


def mean(x: FusionInput) -> np.ndarray:
    """Plain mean of the chunk vectors."""
    return np.asarray(x.vectors.astype(np.float64).mean(axis=0))


def positional(x: FusionInput) -> np.ndarray:
    """Weighted mean with the first and last chunks boosted to 1.2 (the others 1)."""
    w = np.ones(len(x.vectors))
    if len(w) > 1:
        w[0] = w[-1] = POSITIONAL_BOOST
    return np.asarray((w[:, None] * x.vectors).sum(axis=0) / w.sum())


def max_pool(x: FusionInput) -> np.ndarray:
    """Element-wise maximum over the chunk vectors."""
    return np.asarray(x.vectors.astype(np.float64).max(axis=0))


def section_vectors(x: FusionInput) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(section ids, unit section vectors, section token counts)``: token-weighted means of each section's chunks."""
    ids = np.unique(x.sections)
    vectors = np.empty((len(ids), x.vectors.shape[1]))
    tokens = np.empty(len(ids))
    for row, sid in enumerate(ids):
        mask = x.sections == sid
        w = _token_weights(x.tokens[mask])
        vectors[row] = _unit((w[:, None] * x.vectors[mask]).sum(axis=0) / w.sum())
        tokens[row] = w.sum()
    return ids, vectors, tokens


def hierarchical(x: FusionInput) -> np.ndarray:
    """Chunks → section vectors → document vector, each level token-weighted; then the title mixed in.

    ``doc = unit(sum(T_s * s) / sum(T_s))`` over unit section vectors ``s`` (``T_s``: the
    section's tokens), and with a title: ``(1 - a) * doc + a * title``.
    """
    _, vectors, tokens = section_vectors(x)
    doc = _unit((tokens[:, None] * vectors).sum(axis=0) / tokens.sum())
    if x.title is not None and x.title_weight > 0:
        doc = (1.0 - x.title_weight) * doc + x.title_weight * x.title.astype(np.float64)
    return doc


FUSIONS: dict[str, Fusion] = {
    "weighted": weighted,
    "mean": mean,
    "positional": positional,
    "max": max_pool,
    "hierarchical": hierarchical,
}


def register_fusion(name: str, fusion: Fusion, *, overwrite: bool = False) -> None:
    """Make ``fusion`` available as ``fusion=name``."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"a fusion name must be a non-empty str, not {name!r}")
    if not callable(fusion):
        raise ConfigurationError(f"fusion {name!r} must be callable (FusionInput -> vector)")
    if name in FUSIONS and not overwrite:
        raise ConfigurationError(f"fusion {name!r} exists; pass overwrite=True to replace it")
    FUSIONS[name] = fusion


def get_fusion(name: str) -> Fusion:
    try:
        return FUSIONS[name]
    except (KeyError, TypeError):
        raise ConfigurationError(f"Unknown fusion {name!r}. Choose one of: {', '.join(FUSIONS)}.") from None
