"""The machinery every model shares: input checks, batch packing and progress bars.

The :class:`~qwen_embed.Embedder` and the :class:`~qwen_embed.Reranker` both turn texts
into token sequences, pack them into engine decodes (longest first, within a token and a
sequence budget) and report progress; this module is that layer, written once.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigurationError, InputTypeError, InvalidInputError

if TYPE_CHECKING:
    from .engines.base import Engine

__all__ = [
    "TextTokenizer",
    "as_text_list",
    "check_bool",
    "check_gpu_layers",
    "check_threads",
    "check_utf8",
    "embed_sequences",
    "in_notebook",
    "plan_batches",
    "positive_int",
    "progress_bar",
    "unwrap_scalar",
]

MAX_THREADS = 512  # ggml's GGML_MAX_N_THREADS; far more threads than cores only slows a decode


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


def unwrap_scalar(texts: object) -> object:
    """A 0-d numpy array (``np.array("text")``) stands for the one text it holds."""
    if isinstance(texts, np.ndarray) and texts.ndim == 0:
        return texts.item()
    return texts


def as_text_list(texts: object, *, first_index: int = 0) -> list[str]:
    """The texts of one call as a list, in order; a clear InputTypeError for anything else.

    ``first_index`` is the position of the first text in the caller's whole input (streams).
    """
    if isinstance(texts, str):
        return [texts]
    if texts is None:
        raise InputTypeError("texts is None; pass a str or a list of str.")
    if isinstance(texts, (bytes, bytearray)):
        raise InputTypeError("texts is bytes; decode it to str first (for example data.decode('utf-8')).")
    if isinstance(texts, (set, frozenset)):
        raise InputTypeError(
            "texts is a set, which has no order, so the vectors could not be matched to the texts; "
            "pass a list (for example sorted(texts))."
        )
    if isinstance(texts, np.ndarray) and texts.ndim > 1:
        raise InputTypeError(f"texts is a {texts.ndim}-d array; pass a 1-d sequence of str.")
    if isinstance(texts, dict) or not isinstance(texts, Iterable):
        raise InputTypeError(f"texts must be a str or a sequence of str, not {type(texts).__name__}.")
    items = list(texts)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InputTypeError(
                f"Input #{first_index + i} is {type(item).__name__}, not str; every text must be a str."
            )
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


def check_bool(name: str, value: object, *, optional: bool = False) -> Any:
    """``value`` if it is a bool (``None`` too when ``optional``); else a ConfigurationError."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value is None and optional:
        return None
    allowed = "True, False or None" if optional else "True or False"
    raise ConfigurationError(f"{name} must be {allowed}, not {value!r}")


def check_threads(n_threads: object) -> int:
    """A thread count from 1 to :data:`MAX_THREADS`; ``None``: the default (all usable CPUs)."""
    from . import _config

    if n_threads is None:
        return _config.default_threads()
    value = positive_int("n_threads", n_threads)
    if value > MAX_THREADS:
        raise ConfigurationError(
            f"n_threads={value} is more than llama.cpp supports ({MAX_THREADS}); this machine has "
            f"{_config.default_threads()} usable CPUs, which is the default."
        )
    return value


def check_gpu_layers(n_gpu_layers: object) -> int:
    """Layers to offload: an int, ``-1`` for all of them."""
    if isinstance(n_gpu_layers, bool) or not isinstance(n_gpu_layers, (int, np.integer)) or int(n_gpu_layers) < -1:
        raise ConfigurationError(f"n_gpu_layers must be an int (0: CPU only, -1: all layers), not {n_gpu_layers!r}")
    return int(n_gpu_layers)


def check_utf8(text: str, index: int | None, *, text_offset: int = 0, label: str | None = None) -> None:
    """InvalidInputError naming the character when ``text`` cannot be UTF-8 (a lone surrogate).

    ``label`` names the text in the message (default ``"Text #index"``).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        where = label or ("The text" if index is None else f"Text #{index}")
        raise InvalidInputError(
            f"{where} cannot be encoded as UTF-8 at character {exc.start - text_offset} ({exc.reason}: "
            f"{text[exc.start : exc.end]!r}); a lone surrogate usually comes from a bad decode. "
            "Clean it with text.encode('utf-8', 'replace').decode()."
        ) from exc


_EMPTY = np.zeros(0, dtype=np.int32)


class TextTokenizer:
    """User text to token ids as the official tokenizer makes them.

    NFC first (the official tokenizer normalizes, llama.cpp does not), control tokens written
    in the text stay text, and a text that is not valid UTF-8 gets an InvalidInputError that
    names the character. The fixed pieces of prompts are cached.

    Args:
        engine: Returns the engine to tokenize with (raises once the model is closed).
    """

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self._engine = engine
        self._pieces: dict[str, np.ndarray] = {}

    def tokens(self, text: object, index: int | None, *, text_offset: int = 0, label: str | None = None) -> np.ndarray:
        """Token ids of ``text`` (``index``, ``text_offset`` and ``label`` place errors in the caller's input)."""
        if not isinstance(text, str):
            where = label or ("The input" if index is None else f"Input #{index}")
            raise InputTypeError(f"{where} is {type(text).__name__}, not str; every text must be a str.")
        engine = self._engine()
        nfc = text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)
        try:
            return engine.tokenize(nfc)
        except UnicodeEncodeError:
            check_utf8(text, index, text_offset=text_offset, label=label)  # names the place in the caller's text
            raise

    def piece(self, text: str) -> np.ndarray:
        """Token ids of a prompt's fixed part (cached: a few distinct pieces per model)."""
        if not text:
            return _EMPTY
        cached = self._pieces.get(text)
        if cached is None:
            if len(self._pieces) > 256:
                self._pieces.clear()
            cached = self._pieces[text] = self.tokens(text, None)
        return cached


def embed_sequences(
    engine: Engine,
    sequences: Sequence[np.ndarray],
    *,
    batch_size: int,
    batch_tokens: int,
    show_progress: bool | None,
) -> np.ndarray:
    """Pooled rows of ``sequences`` (in order), decoded in packed batches, with a progress bar if asked."""
    out = np.empty((len(sequences), engine.n_embd), dtype=np.float32)
    if not sequences:
        return out
    lengths = [len(s) for s in sequences]
    batches = plan_batches(lengths, max_tokens=batch_tokens, max_sequences=min(batch_size, engine.max_sequences))
    bar = progress_bar(show_progress, total=sum(lengths), batches=len(batches))
    try:
        for batch in batches:
            out[batch] = engine.embed([sequences[i] for i in batch])
            if bar is not None:
                bar.update(sum(lengths[i] for i in batch))
    finally:
        if bar is not None:
            bar.close()
    return out
