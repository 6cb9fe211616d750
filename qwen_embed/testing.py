"""Build Qwen3-architecture GGUF models with seeded random weights.

No machine needs the real weights to test or benchmark this library: the cost of a
forward pass does not depend on the weights' values, and correctness is a matter of
computing the right function of whatever weights the file holds. This module writes
such files at any shape, including the real 0.6B / 4B / 8B shapes, with either the
real Qwen2 vocabulary (from a vocabulary GGUF) or a small byte-level BPE trained on
the fly, and makes true quantized copies through llama.cpp's own quantizer. It writes
Qwen3-Reranker files the same way (:func:`make_reranker_model`): every head layout the
converter produces, with "yes"/"no" single tokens in the vocabulary.

Example:
    >>> from qwen_embed.testing import make_model
    >>> path = make_model("tiny.gguf")                      # doctest: +SKIP
    >>> path = make_model("q.gguf", shape="0.6B", quant="Q8_0",
    ...                   vocab="ggml-vocab-qwen2.gguf")       # doctest: +SKIP
    >>> reranker = make_reranker_model("reranker.gguf")      # doctest: +SKIP

Needs only the base dependencies (``gguf``, ``tokenizers``, ``numpy``, llama-cpp-python).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from .engines.gguf_info import read_gguf_info
from .errors import QwenEmbedError

__all__ = [
    "RERANKER_VARIANTS",
    "SHAPES",
    "ModelShape",
    "RerankerVariant",
    "Vocabulary",
    "add_qwen3_hparams",
    "demo_model",
    "load_vocabulary",
    "make_model",
    "make_reranker_model",
    "quantize_model",
    "reranker_vocabulary",
    "train_vocabulary",
]

ARCH = "qwen3"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
THINK = ("<think>", "</think>")  # the reranker prompt's markers (user-defined tokens in Qwen3's tokenizer)
REAL_THINK_IDS = (151667, 151668)  # the real Qwen2 vocabulary has [PAD…] there; Qwen3's tokenizer adds the markers
_TOKEN_NORMAL, _TOKEN_CONTROL, _TOKEN_USER_DEFINED = 1, 3, 4

#: Head layouts of a reranker file: ``cls`` (llama.cpp's converter: a 2-row ``cls.output`` labelled
#: yes/no), ``cls_swapped`` (labels no/yes), ``cls_one_row`` (one row, w_yes - w_no),
#: ``cls_bad_labels`` (labels that are not yes/no), ``output`` (an untied LM head) and ``tied``
#: (the head is the token embedding).
RerankerVariant = Literal["cls", "cls_swapped", "cls_one_row", "cls_bad_labels", "output", "tied"]
RERANKER_VARIANTS: tuple[str, ...] = ("cls", "cls_swapped", "cls_one_row", "cls_bad_labels", "output", "tied")


@dataclass(frozen=True)
class ModelShape:
    """Hyper-parameters of a Qwen3 encoder."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    rope_base: float = 1_000_000.0
    rms_eps: float = 1e-6


#: Named shapes: the three real Qwen3-Embedding sizes (FACTS.md) and small ones for tests.
SHAPES: dict[str, ModelShape] = {
    "tiny": ModelShape(n_layer=2, n_embd=64, n_head=4, n_head_kv=2, head_dim=16, n_ff=128),
    "small": ModelShape(n_layer=4, n_embd=256, n_head=8, n_head_kv=4, head_dim=32, n_ff=512),
    "0.6B": ModelShape(n_layer=28, n_embd=1024, n_head=16, n_head_kv=8, head_dim=128, n_ff=3072),
    "4B": ModelShape(n_layer=36, n_embd=2560, n_head=32, n_head_kv=8, head_dim=128, n_ff=9728),
    "8B": ModelShape(n_layer=36, n_embd=4096, n_head=32, n_head_kv=8, head_dim=128, n_ff=12288),
}


@dataclass(frozen=True)
class Vocabulary:
    """A byte-level BPE vocabulary in GGUF form."""

    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    merges: tuple[str, ...]
    eos_id: int
    pre: str = "qwen2"

    @property
    def size(self) -> int:
        return len(self.tokens)


# --------------------------------------------------------------------------- vocabulary


def _corpus(seed: int) -> Iterator[str]:
    rng = np.random.default_rng(seed)
    words = (
        "the of and to in is that for it as with was on be by this are from at or an which "
        "embedding vector model query document search retrieval token text language semantic "
        "llama gguf quantization batch context attention layer norm python code function return "
        "import class def self numpy array data index value result error input output long short "
        "what how why when where who GGUF Qwen3 Embedding RAG FAISS cosine similarity cluster"
    ).split()
    extra = [
        "def main():\n    return 0\n",
        "for i in range(10):\n    print(i)\n",
        "向量检索 文本嵌入 模型 量化 长文档",
        "Привет мир, как дела?",
        "مرحبا بالعالم",
        "emoji 🙂🚀✨ and symbols ©®™ — “quotes” …",
        "Numbers 0 1 2 3 4 5 6 7 8 9 3.14159 2026-11-22",
        "\n\n# Heading\n\nA paragraph. Another sentence! A question?\n",
    ]
    for _ in range(400):
        n = int(rng.integers(5, 40))
        yield " ".join(words[int(i)] for i in rng.integers(0, len(words), n)) + "."
    for _ in range(20):
        yield from extra


def train_vocabulary(*, vocab_size: int = 1024, seed: int = 0) -> Vocabulary:
    """Train a small byte-level BPE (with the Qwen special tokens) with ``tokenizers``.

    The first 256 learned symbols cover every byte, so any text tokenizes.
    """
    return _train_vocabulary_cached(vocab_size, seed)


@lru_cache(maxsize=8)
def _train_vocabulary_cached(vocab_size: int, seed: int) -> Vocabulary:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(seed), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    tokens = [""] * len(vocab)
    for text, idx in vocab.items():
        tokens[idx] = text
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [_TOKEN_CONTROL if t in SPECIAL_TOKENS else _TOKEN_NORMAL for t in tokens]
    return Vocabulary(tuple(tokens), tuple(types), tuple(merges), eos_id=vocab["<|endoftext|>"])


def load_vocabulary(path: str | os.PathLike[str]) -> Vocabulary:
    """Read the tokenizer of a GGUF file (for example ``ggml-vocab-qwen2.gguf``)."""
    resolved = Path(path).expanduser().resolve()
    return _load_vocabulary_cached(resolved, resolved.stat().st_mtime_ns)


@lru_cache(maxsize=4)
def _load_vocabulary_cached(path: Path, _mtime: int) -> Vocabulary:
    keys = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")
    info = read_gguf_info(path, full_arrays=keys)
    meta = info.metadata
    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise QwenEmbedError(f"{path}: expected a byte-level BPE ('gpt2') vocabulary")
    tokens = tuple(meta["tokenizer.ggml.tokens"])
    eos = meta.get("tokenizer.ggml.eos_token_id")
    if "<|endoftext|>" in tokens:
        eos = tokens.index("<|endoftext|>")
    if eos is None:
        raise QwenEmbedError(f"{path}: the vocabulary has no <|endoftext|> and no eos_token_id")
    return Vocabulary(
        tokens=tokens,
        token_types=tuple(meta["tokenizer.ggml.token_type"]),
        merges=tuple(meta["tokenizer.ggml.merges"]),
        eos_id=int(eos),
        pre=str(meta.get("tokenizer.ggml.pre", "qwen2")),
    )


# --------------------------------------------------------------------------- model


def _tensor_specs(shape: ModelShape, n_vocab: int) -> list[tuple[str, tuple[int, ...], float | None]]:
    """(name, numpy shape, std) for every tensor; std None marks a norm weight."""
    s = shape
    q_dim, kv_dim = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    specs: list[tuple[str, tuple[int, ...], float | None]] = [("token_embd.weight", (n_vocab, s.n_embd), 1.0)]
    for i in range(s.n_layer):
        b = f"blk.{i}."
        specs += [
            (b + "attn_norm.weight", (s.n_embd,), None),
            (b + "attn_q.weight", (q_dim, s.n_embd), s.n_embd**-0.5),
            (b + "attn_k.weight", (kv_dim, s.n_embd), s.n_embd**-0.5),
            (b + "attn_v.weight", (kv_dim, s.n_embd), s.n_embd**-0.5),
            (b + "attn_q_norm.weight", (s.head_dim,), None),
            (b + "attn_k_norm.weight", (s.head_dim,), None),
            (b + "attn_output.weight", (s.n_embd, q_dim), q_dim**-0.5),
            (b + "ffn_norm.weight", (s.n_embd,), None),
            (b + "ffn_gate.weight", (s.n_ff, s.n_embd), s.n_embd**-0.5),
            (b + "ffn_up.weight", (s.n_ff, s.n_embd), s.n_embd**-0.5),
            (b + "ffn_down.weight", (s.n_embd, s.n_ff), s.n_ff**-0.5),
        ]
    specs.append(("output_norm.weight", (s.n_embd,), None))
    return specs


def _random_tensor(rng: np.random.Generator, shape: tuple[int, ...], std: float | None, dtype: np.dtype) -> np.ndarray:
    if std is None:  # norm weights stay float32, around 1
        return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    out = rng.standard_normal(shape, dtype=np.float32)
    out *= std
    return out.astype(dtype, copy=False)


def add_qwen3_hparams(writer: object, shape: ModelShape, *, context_length: int, pooling_type: int | None) -> None:
    """Write a Qwen3 model's hyper-parameters (and pooling type) with a ``gguf.GGUFWriter``."""
    import gguf

    w: gguf.GGUFWriter = writer  # type: ignore[assignment]
    w.add_context_length(context_length)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_key_length(shape.head_dim)
    w.add_value_length(shape.head_dim)
    w.add_rope_freq_base(shape.rope_base)
    w.add_layer_norm_rms_eps(shape.rms_eps)
    if pooling_type is not None:
        w.add_pooling_type(gguf.PoolingType(pooling_type))


def make_model(
    path: str | os.PathLike[str],
    *,
    shape: str | ModelShape = "tiny",
    vocab: str | os.PathLike[str] | Vocabulary | None = None,
    vocab_size: int = 1024,
    add_eos_token: bool | None = True,
    pooling_type: int | None = 3,
    context_length: int = 32768,
    dtype: Literal["f32", "f16"] = "f32",
    quant: str | None = None,
    seed: int = 0,
    name: str = "qwen3-embedding-random",
) -> Path:
    """Write a Qwen3-architecture embedding GGUF with seeded random weights.

    Args:
        path: Where to write the ``.gguf`` file.
        shape: A name from :data:`SHAPES` (``"tiny"``, ``"0.6B"``, ``"4B"``, ...) or a
            :class:`ModelShape`.
        vocab: A vocabulary GGUF to copy the tokenizer from (for example the real
            ``ggml-vocab-qwen2.gguf``), a :class:`Vocabulary`, or ``None`` to train a
            small byte-level BPE of ``vocab_size`` tokens.
        vocab_size: Most tokens of the trained BPE when ``vocab`` is ``None`` (the small
            training corpus may stop it earlier).
        add_eos_token: Value of ``tokenizer.ggml.add_eos_token``; ``None`` omits the key.
        pooling_type: Value of ``qwen3.pooling_type`` (3 = LAST, 1 = MEAN); ``None`` omits it.
        context_length: ``qwen3.context_length`` (the trained context).
        dtype: Storage type of the weight matrices before any quantization.
        quant: If given (``"Q8_0"``, ``"Q4_K_M"``, ``"Q6_K"``, ...), quantize the file with
            llama.cpp and write the quantized model at ``path``.
        seed: Seed of the random weights.
        name: ``general.name``.

    Returns:
        The path written.
    """
    import gguf

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model_shape = SHAPES[shape] if isinstance(shape, str) else shape
    if isinstance(vocab, Vocabulary):
        vocabulary = vocab
    elif vocab is not None:
        vocabulary = load_vocabulary(vocab)
    else:
        vocabulary = train_vocabulary(vocab_size=vocab_size, seed=seed)

    target = out
    if quant is not None:
        fd, tmp_name = tempfile.mkstemp(suffix=".gguf", dir=out.parent)
        os.close(fd)
        target = Path(tmp_name)

    np_dtype = np.dtype(np.float16 if dtype == "f16" else np.float32)
    s = model_shape
    writer = gguf.GGUFWriter(str(target), ARCH)
    try:
        writer.add_name(name)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
        add_qwen3_hparams(writer, s, context_length=context_length, pooling_type=pooling_type)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(vocabulary.pre)
        writer.add_token_list(list(vocabulary.tokens))
        writer.add_token_types(list(vocabulary.token_types))
        writer.add_token_merges(list(vocabulary.merges))
        writer.add_eos_token_id(vocabulary.eos_id)
        writer.add_pad_token_id(vocabulary.eos_id)
        writer.add_bos_token_id(vocabulary.eos_id)
        writer.add_add_bos_token(False)
        if add_eos_token is not None:
            writer.add_add_eos_token(add_eos_token)

        specs = _tensor_specs(s, vocabulary.size)
        for tensor_name, tshape, std in specs:
            tdtype = np.dtype(np.float32) if std is None else np_dtype
            nbytes = int(np.prod(tshape)) * tdtype.itemsize
            writer.add_tensor_info(tensor_name, tshape, tdtype, nbytes)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        rng = np.random.default_rng(seed)
        for _tensor_name, tshape, std in specs:  # one tensor in memory at a time
            tdtype = np.dtype(np.float32) if std is None else np_dtype
            writer.write_tensor_data(_random_tensor(rng, tshape, std, tdtype))
    finally:
        writer.close()

    if quant is not None:
        try:
            quantize_model(target, out, quant)
        finally:
            target.unlink(missing_ok=True)
    return out


def quantize_model(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], quant: str, *, n_threads: int | None = None
) -> Path:
    """Quantize a GGUF with llama.cpp's ``llama_model_quantize`` (``"Q8_0"``, ``"Q4_K_M"``, ...)."""
    from .engines.llama import quantize_gguf

    return quantize_gguf(Path(src), Path(dst), quant, n_threads=n_threads)


# --------------------------------------------------------------------------- reranker


def reranker_vocabulary(vocab: str | os.PathLike[str] | None = None) -> Vocabulary:
    """A vocabulary for reranker files: "yes", "no" and the think markers are single tokens.

    Args:
        vocab: The real Qwen2 vocabulary GGUF (``ggml-vocab-qwen2.gguf``), whose ids 151667 and
            151668 become ``<think>``/``</think>`` as in Qwen3's tokenizer; ``None`` trains a
            small byte-level BPE (cached per process).
    """
    if vocab is not None:
        real = load_vocabulary(vocab)
        tokens, types = list(real.tokens), list(real.token_types)
        for token_id, text in zip(REAL_THINK_IDS, THINK):
            tokens[token_id], types[token_id] = text, _TOKEN_USER_DEFINED
        return replace(real, tokens=tuple(tokens), token_types=tuple(types))
    return _trained_reranker_vocabulary()


@lru_cache(maxsize=1)
def _trained_reranker_vocabulary() -> Vocabulary:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = (*SPECIAL_TOKENS, *THINK)
    rng = np.random.default_rng(0)
    words = (
        "yes no the of and to in is that for it as with was on be by this are from at or an which model query "
        "document search retrieval token text language GGUF Qwen3 Judge whether Document meets requirements based "
        "Query Instruct provided Note answer can only Given web retrieve relevant passages system user assistant"
    ).split()

    def corpus() -> Iterator[str]:
        for _ in range(600):
            yield " ".join(words[int(i)] for i in rng.integers(0, len(words), 20)) + ".\n"
        for _ in range(200):
            yield "yes\nno\n<Instruct>: x\n<Query>: y\n<Document>: z\n"
        yield "Numbers 0123456789 — “quotes” ✨ 中文 Привет\n"

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=list(special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    tokens = [""] * len(model["vocab"])
    for text, idx in model["vocab"].items():
        tokens[idx] = text
    if "yes" not in tokens or "no" not in tokens:  # pragma: no cover - the corpus above makes them
        raise QwenEmbedError("the trained reranker vocabulary lacks the single tokens 'yes' and 'no'")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [
        _TOKEN_CONTROL if t in SPECIAL_TOKENS else _TOKEN_USER_DEFINED if t in THINK else _TOKEN_NORMAL for t in tokens
    ]
    return Vocabulary(tuple(tokens), tuple(types), tuple(merges), eos_id=tokens.index("<|endoftext|>"))


def make_reranker_model(
    path: str | os.PathLike[str],
    vocab: Vocabulary | str | os.PathLike[str] | None = None,
    *,
    variant: RerankerVariant = "cls",
    shape: str | ModelShape = "tiny",
    seed: int = 0,
    context_length: int = 32768,
    quant: str | None = None,
    pooling_type: int | None = None,
    architecture: str = ARCH,
    name: str | None = None,
) -> Path:
    """Write a Qwen3-Reranker GGUF with seeded random weights and the head layout ``variant``.

    Every variant holds the same yes/no direction (the ``token_embd`` rows of "yes"/"no" are set
    to it too), so all of them give the same scores for the same seed: a reranker, not a good one.

    Args:
        path: Where to write the ``.gguf`` file.
        vocab: A :class:`Vocabulary`, a vocabulary GGUF (see :func:`reranker_vocabulary`), or
            ``None`` for the small trained one.
        variant: The head layout (see :data:`RerankerVariant`).
        shape: A name from :data:`SHAPES` or a :class:`ModelShape`. ``Q8_0`` and the K-quants
            need a width that is a multiple of 256 (``"small"``).
        seed: Seed of the random weights.
        context_length: ``qwen3.context_length``.
        quant: If given, quantize the file with llama.cpp (``"Q8_0"``, ...).
        pooling_type: ``qwen3.pooling_type``; default: RANK (4) for the ``cls*`` variants, as the
            converter writes it, else none.
        architecture: ``general.architecture`` (another value tests the refusal of non-Qwen3 files).
        name: ``general.name`` (default: ``qwen3-reranker-random-{variant}``).

    Returns:
        The path written.
    """
    import gguf

    if variant not in RERANKER_VARIANTS:
        raise QwenEmbedError(f"variant={variant!r} is not one of {', '.join(RERANKER_VARIANTS)}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    vocabulary = vocab if isinstance(vocab, Vocabulary) else reranker_vocabulary(vocab)
    s = SHAPES[shape] if isinstance(shape, str) else shape
    rng = np.random.default_rng(seed)
    specs = _tensor_specs(s, vocabulary.size)
    # A vocabulary without single-token "yes"/"no" (the refusal tests) still gets a file: rows 0 and 1.
    yes_id, no_id = (vocabulary.tokens.index(t) if t in vocabulary.tokens else i for i, t in enumerate(("yes", "no")))
    head = 0.3 * rng.standard_normal((2, s.n_embd)).astype(np.float32)  # w_yes, w_no: log-odds of a few units

    tensors: list[tuple[str, np.ndarray]] = []
    for tensor_name, tshape, std in specs:
        if std is None:
            values = (1.0 + 0.1 * rng.standard_normal(tshape)).astype(np.float32)
        else:
            values = (std * rng.standard_normal(tshape)).astype(np.float32)
        if tensor_name == "token_embd.weight":
            values[yes_id], values[no_id] = head[0], head[1]
        tensors.append((tensor_name, values))
    if variant == "output":
        output = (0.02 * rng.standard_normal((vocabulary.size, s.n_embd))).astype(np.float32)
        output[yes_id], output[no_id] = head[0], head[1]
        tensors.append(("output.weight", output))
    labels: list[str] | None = None
    if variant in ("cls", "cls_bad_labels"):
        tensors.append(("cls.output.weight", head.copy()))
        labels = ["yes", "no"] if variant == "cls" else ["relevant", "irrelevant"]
    elif variant == "cls_swapped":
        tensors.append(("cls.output.weight", head[::-1].copy()))
        labels = ["no", "yes"]
    elif variant == "cls_one_row":
        tensors.append(("cls.output.weight", (head[0] - head[1])[None, :].copy()))
        labels = ["yes"]
    if pooling_type is None and labels is not None:
        pooling_type = 4  # RANK, as the converter writes it

    target = out if quant is None else out.with_suffix(".f32.gguf")
    writer = gguf.GGUFWriter(str(target), architecture)
    try:
        writer.add_name(name or f"qwen3-reranker-random-{variant}")
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        add_qwen3_hparams(writer, s, context_length=context_length, pooling_type=pooling_type)
        if labels is not None:
            writer.add_classifier_output_labels(labels)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(vocabulary.pre)
        writer.add_token_list(list(vocabulary.tokens))
        writer.add_token_types(list(vocabulary.token_types))
        writer.add_token_merges(list(vocabulary.merges))
        writer.add_eos_token_id(vocabulary.eos_id)
        writer.add_pad_token_id(vocabulary.eos_id)
        writer.add_add_bos_token(False)
        for tensor_name, values in tensors:
            writer.add_tensor(tensor_name, values)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    if quant is not None:
        try:
            quantize_model(target, out, quant)
        finally:
            target.unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------- demos


def demo_model(path: str | os.PathLike[str] | None = None, *, shape: str = "small") -> Path:
    """``path`` if given, else a random-weight model built in a temporary folder (for demos)."""
    if path is not None:
        return Path(path)
    built = make_model(Path(tempfile.mkdtemp()) / "random-qwen3-embedding.gguf", shape=shape)
    print(f"No model given: built a random-weight model at {built}")
    return built
