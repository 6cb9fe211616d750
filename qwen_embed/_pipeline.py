"""The machinery every model shares: input checks, batch packing and progress bars.

The :class:`~qwen_embed.Embedder` and the :class:`~qwen_embed.Reranker` both turn texts
into token sequences, pack them into engine decodes (longest first, within a token and a
sequence budget) and report progress; this module is that layer, written once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .errors import ConfigurationError, InputTypeError

__all__ = ["as_text_list", "in_notebook", "plan_batches", "positive_int", "progress_bar"]


def plan_batches(lengths: Sequence[int], *, max_tokens: int, max_sequences: int) -> list[np.ndarray]:
    """Pack sequences into decodes: longest first, each decode within both limits.

    A sequence longer than ``max_tokens`` gets a decode of its own. Returns the
    sequence indices of each decode.
    """
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[np.ndarray] = []
    current: list[int] = []
    used = 0
    for idx in order.tolist():
        n = int(lengths[idx])
        if current and (used + n > max_tokens or len(current) >= max_sequences):
            batches.append(np.asarray(current, dtype=np.int64))
            current, used = [], 0
        current.append(idx)
        used += n
    if current:
        batches.append(np.asarray(current, dtype=np.int64))
    return batches


def as_text_list(texts: object) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if texts is None:
        raise InputTypeError("texts is None; pass a str or a list of str.")
    if isinstance(texts, (bytes, bytearray)):
        raise InputTypeError("texts is bytes; decode it to str first (for example data.decode('utf-8')).")
    if isinstance(texts, dict) or not isinstance(texts, Iterable):
        raise InputTypeError(f"texts must be a str or a sequence of str, not {type(texts).__name__}.")
    items = list(texts)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InputTypeError(f"Input #{i} is {type(item).__name__}, not str; every text must be a str.")
    return items


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ConfigurationError(f"{name} must be a positive int, not {value!r}")
    return int(value)


def progress_bar(show: bool | None, *, total: int, batches: int, desc: str = "Embedding") -> Any:
    if show is None:
        show = batches > 1 and in_notebook()
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="tok", desc=desc, leave=False)


def in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()  # type: ignore[attr-defined]
    except Exception:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"
