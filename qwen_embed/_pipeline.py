"""The machinery every model shares: input checks, batch packing and progress bars.

The :class:`~qwen_embed.Embedder` and the :class:`~qwen_embed.Reranker` both turn texts
into token sequences, pack them into engine decodes (longest first, within a token and a
sequence budget) and report progress; this module is that layer, written once.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _config
from .errors import ConfigurationError, InputTypeError, InvalidInputError

if TYPE_CHECKING:
    from .engines.base import Engine
    from .engines.gguf_info import GGUFInfo

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_BATCH_TOKENS",
    "MAX_WINDOW",
    "DecodeMemory",
    "TextTokenizer",
    "as_text_iter",
    "as_text_list",
    "check_batch_size",
    "check_batch_tokens",
    "check_bool",
    "check_gpu_layers",
    "check_threads",
    "check_utf8",
    "check_window",
    "decode_memory",
    "embed_sequences",
    "in_notebook",
    "plan_batches",
    "positive_int",
    "progress_bar",
    "token_facts",
    "unwrap_scalar",
]

MAX_THREADS = 512  # ggml's GGML_MAX_N_THREADS; far more threads than cores only slows a decode
#: Most tokens one decode may hold, whatever the memory: 1,000x past where packing stops paying, and
#: ``batch_tokens=10**9`` (a typo) fails here with a clear message instead of in the kernel's OOM killer.
MAX_BATCH_TOKENS = 1 << 20
#: Most sequences one decode may hold, for a model's ``batch_size`` and a call's alike (one bound in one
#: place). An engine packs at most what it can: llama.cpp 256 sequences a context, torch what fits in
#: ``batch_tokens``.
MAX_BATCH_SIZE = 1 << 16
#: Most texts a stream window (``encode_iter``'s ``chunk_size``) or a corpus batch holds in memory.
MAX_WINDOW = 1 << 20
_UBATCH = 512  # llama.cpp's physical batch in our contexts (engines/llama.py)


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


def as_text_iter(texts: object, *, name: str = "texts", takes: str = "an iterable of str") -> Iterable[object]:
    """An ordered iterable of texts (a stream: ``encode_iter``, ``rank``'s documents), checked before any is read.

    A str, bytes, a mapping (its keys would be taken for the texts) and a set (no order: results could
    not be matched to inputs) get an :class:`~qwen_embed.InputTypeError` that says what to pass.
    """
    kind = type(texts).__name__
    if isinstance(texts, (str, bytes, bytearray)):
        raise InputTypeError(f"{name} must be {takes}, not {kind}; wrap one text in a list ([text]).")
    if isinstance(texts, (set, frozenset)):
        raise InputTypeError(
            f"{name} is a {kind}, which has no order, so the results could not be matched to the texts; "
            "pass a list (for example sorted(texts))."
        )
    if isinstance(texts, Mapping):
        raise InputTypeError(f"{name} is a {kind}; pass its values (list(d.values())) or its keys as a list.")
    if not isinstance(texts, Iterable):
        raise InputTypeError(f"{name} must be {takes}, not {kind}.")
    return texts


def positive_int(name: str, value: object, *, maximum: int | None = None, why: str = "") -> int:
    """``value`` as an int from 1 to ``maximum`` (``why`` says where the maximum comes from)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ConfigurationError(f"{name} must be a positive int, not {value!r}")
    if maximum is not None and int(value) > maximum:
        raise ConfigurationError(f"{name}={value} is more than the {maximum:,} allowed{': ' + why if why else ''}.")
    return int(value)


def check_batch_size(value: object) -> int:
    """``batch_size``: 1 to :data:`MAX_BATCH_SIZE` sequences per decode."""
    return positive_int("batch_size", value, maximum=MAX_BATCH_SIZE, why="llama.cpp holds 256 sequences a decode")


def check_window(name: str, value: object) -> int:
    """A count of texts held in memory at once (``chunk_size``): 1 to :data:`MAX_WINDOW`."""
    return positive_int(
        name, value, maximum=MAX_WINDOW, why="that many texts, their tokens and vectors are held at once"
    )


@dataclass(frozen=True)
class DecodeMemory:
    """About how much memory one decode takes: ``fixed + per_token * tokens`` bytes (an estimate, not a promise).

    Attributes:
        per_token: Bytes per token of the context (llama.cpp: KV cache, attention scratch, outputs) or of the
            batch (torch: activations and attention scores, float32 at worst).
        fixed: Bytes whatever the size (llama.cpp's output buffer and per-ubatch activations).
        parts: What ``per_token`` is made of, in words (for error messages).
    """

    per_token: int
    fixed: int
    parts: str

    def need(self, tokens: int) -> int:
        return self.fixed + self.per_token * tokens

    def most(self, budget: int) -> int:
        """The most tokens whose decode fits ``budget`` bytes (0 when none does)."""
        return max(0, (budget - self.fixed) // self.per_token)


def decode_memory(
    info: GGUFInfo, *, backend: str, max_length: int, max_sequences: int, pooling: str = "last"
) -> DecodeMemory:
    """:class:`DecodeMemory` of a model's decodes on ``backend`` (``"llama"`` or ``"torch"``)."""
    n_layer = int(info.block_count or 1)
    n_embd = int(info.embedding_length or 1)
    n_head = int(info.arch_value("attention.head_count") or 1)
    n_head_kv = int(info.arch_value("attention.head_count_kv") or n_head)
    head_dim = int(info.arch_value("attention.key_length") or max(1, n_embd // n_head))
    n_ff = int(info.arch_value("feed_forward_length") or 4 * n_embd)
    n_vocab = int(info.vocab_size or 0)
    if backend == "torch":
        activations = (8 * n_embd + 3 * n_ff) * 4
        scores = 2 * n_head * max_length * 4  # a token's attention row over at most max_length keys
        return DecodeMemory(activations + scores, 0, f"activations {activations:,} and attention {scores:,} B/token")
    kv = 2 * n_layer * n_head_kv * head_dim * 2  # K and V, float16
    scratch = 2 * _UBATCH * n_head * 4  # KQ and its softmax, float32, for one ubatch of queries
    outputs = n_vocab * 4 if pooling == "mean" else 0  # every token is an output row under mean pooling
    fixed = (max_sequences * n_vocab * 4 if pooling != "mean" else 0) + _UBATCH * (4 * n_embd + 3 * n_ff) * 4
    parts = f"KV cache {kv:,}, attention scratch {scratch:,}" + (f", outputs {outputs:,}" if outputs else "")
    return DecodeMemory(kv + scratch + outputs + 28, fixed, parts + " B/token")


def check_batch_tokens(
    value: object,
    *,
    info: GGUFInfo,
    backend: str,
    max_length: int,
    max_sequences: int,
    pooling: str = "last",
    shared_head: bool = False,
    gpu: bool = False,
    budget: int | None = None,
) -> int:
    """``batch_tokens`` checked against the engine and the memory, and ``max_length`` with it.

    A decode holds ``max(max_length, batch_tokens)`` tokens (a long text is decoded alone), or
    ``max_length + batch_tokens`` for a reranker, whose shared head stays in the cache beside a
    batch of tails. That must be at most :data:`MAX_BATCH_TOKENS`, and its memory
    (:func:`decode_memory`) must fit ``budget``: by default the RAM available now less the model
    file. On a GPU (``gpu``) only the fixed bound applies: the engine reports what the device lacks.

    Raises:
        ConfigurationError: Naming the option over its bound, the arithmetic, and the most that fits.
    """
    from ._memory import available_memory, format_size

    tokens = positive_int("batch_tokens", value)
    if tokens > MAX_BATCH_TOKENS:
        raise ConfigurationError(
            f"batch_tokens={tokens:,} is more than the {MAX_BATCH_TOKENS:,} one decode may hold; packing stops "
            f"paying long before (default {_config.DEFAULT_BATCH_TOKENS:,})."
        )
    if gpu:
        return tokens
    estimate = decode_memory(info, backend=backend, max_length=max_length, max_sequences=max_sequences, pooling=pooling)
    where = "memory_budget"
    if budget is None:
        budget = available_memory() - _file_size(info)
        where = "RAM available now less the model file"
    engine = "llama.cpp's context" if backend == "llama" else "the torch engine's activations"
    alone = estimate.need(max_length)
    if alone > budget:
        raise ConfigurationError(
            f"max_length={max_length:,}: one text that long needs about {format_size(alone)} for {engine} "
            f"({estimate.parts}), more than the {format_size(budget)} of {where}; the most that fits is "
            f"max_length={estimate.most(budget):,}."
        )
    context = max_length + tokens if shared_head else max(max_length, tokens)
    need = estimate.need(context)
    if need > budget:
        most = estimate.most(budget) - (max_length if shared_head else 0)
        raise ConfigurationError(
            f"batch_tokens={tokens:,}: a decode of {context:,} tokens"
            f"{f' (max_length {max_length:,} for the shared head + batch_tokens)' if shared_head else ''} needs about "
            f"{format_size(need)} for {engine} ({estimate.parts}), more than the {format_size(budget)} of {where}; "
            f"the most that fits is batch_tokens={max(1, most):,} (default {_config.DEFAULT_BATCH_TOKENS:,})."
        )
    return tokens


def _file_size(info: GGUFInfo) -> int:
    try:
        return int(info.path.stat().st_size)
    except OSError:
        return 0


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
        ip = getattr(shell, "get_ipython")()  # noqa: B009 (IPython may be any version, or a stub)
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
        pre_tokenizer: The vocabulary's pre-tokenizer (``tokenizer.ggml.pre``): :meth:`tokens_prefix`
            cuts texts before tokenizing them only under ``"qwen2"``'s rules, and tokenizes them whole
            under any other.
    """

    def __init__(self, engine: Callable[[], Engine], *, pre_tokenizer: object = "qwen2") -> None:
        self._engine = engine
        self._pieces: dict[str, np.ndarray] = {}
        self._can_cut = pre_tokenizer == "qwen2"

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

    def normalized(self, text: object, index: int | None, *, text_offset: int = 0, label: str | None = None) -> str:
        """``text`` in NFC, checked: a str that UTF-8 can encode (errors placed as :meth:`tokens` places them)."""
        if not isinstance(text, str):
            where = label or ("The input" if index is None else f"Input #{index}")
            raise InputTypeError(f"{where} is {type(text).__name__}, not str; every text must be a str.")
        nfc = text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)
        try:
            nfc.encode("utf-8")
        except UnicodeEncodeError:
            check_utf8(text, index, text_offset=text_offset, label=label)
            raise
        return nfc

    def min_tokens(self, text: str) -> int:
        """A lower bound of the tokens of ``text``, without tokenizing it: its UTF-8 bytes over the longest token's.

        ``text`` must be NFC already (see :meth:`normalized`). Cheap (one UTF-8 encode, the vocabulary scanned
        once per model): a text whose bound is over a limit can be refused before any tokenizing.
        """
        longest, _ = token_facts(self._engine())
        return len(text.encode("utf-8")) // max(1, longest)

    def tokens_prefix(
        self,
        text: object,
        max_tokens: int,
        index: int | None = None,
        *,
        text_offset: int = 0,
        label: str | None = None,
    ) -> tuple[np.ndarray, bool]:
        """The first ``max_tokens`` token ids of ``text``, and whether it has more; cost bounded by ``max_tokens``.

        The ids equal ``tokens(text)[:max_tokens]``, but only a prefix of the text a little longer than
        those tokens is tokenized (see :mod:`qwen_embed.text.token_prefix`): a 10 MB document cut to
        8,192 tokens costs what a 64 kB one does.
        """
        from .text.token_prefix import MARGIN_TOKENS, prefix_piece

        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, not {max_tokens}")
        nfc = self.normalized(text, index, text_offset=text_offset, label=label)
        engine = self._engine()
        budget = 8 * (max_tokens + MARGIN_TOKENS) + 1024  # bytes: prose takes about 4 a token
        raw = nfc.encode("utf-8") if self._can_cut and budget < 4 * len(nfc) else b""
        while True:
            if budget >= len(raw):  # the whole text (b"" when it is short for sure)
                ids = engine.tokenize(nfc)
                return ids[:max_tokens], len(ids) > max_tokens
            cut = len(raw[:budget].decode("utf-8", "ignore"))
            piece, exact = prefix_piece(nfc, cut, token_facts(engine)[1])
            ids = engine.tokenize(piece)
            if not exact:
                ids = ids[: max(0, len(ids) - MARGIN_TOKENS)]
            if len(ids) >= max_tokens:  # and the rest of the text holds at least one more
                return ids[:max_tokens], True
            budget *= 2

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


def token_facts(engine: Engine) -> tuple[int, tuple[str, ...]]:
    """``(longest token in bytes, user-defined token texts)`` of an engine's vocabulary (each engine caches it)."""
    getter = getattr(engine, "token_facts", None)
    if getter is None:
        raise TypeError(f"{type(engine).__name__} has no token_facts()")
    facts: tuple[int, tuple[str, ...]] = getter()
    return facts


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
