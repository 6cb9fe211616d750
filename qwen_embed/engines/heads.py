"""The reranker's scoring head, read from the GGUF file: one vector ``w_yes - w_no``.

A Qwen3-Reranker scores a pair by the two logits of the tokens ``"yes"`` and ``"no"`` at
the last prompt position; the official score is ``softmax([l_no, l_yes])[yes]``, which is
``sigmoid(h · (w_yes - w_no))`` with ``h`` the final-norm hidden state. So the whole
vocabulary projection reduces to one difference of two rows, found in one of three places
depending on how the file was converted:

* ``cls.output.weight``: llama.cpp's converter (after ggml-org/llama.cpp#15824) in reranker
  mode stores the two rows there, labelled by ``{arch}.classifier.output_labels``. In an
  untied model (8B) the LM head is *replaced*, so ``token_embd`` rows would be wrong; this
  head always wins when present.
* ``output.weight``: a plain causal-LM conversion of an untied model.
* ``token_embd.weight``: a plain causal-LM conversion of a tied model (0.6B, 4B).

Only the rows needed are read and dequantized (two rows of a 151k-row matrix).
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedModelError
from .gguf_info import POOLING_NAMES, GGUFInfo, TensorInfo

__all__ = ["RerankHead", "check_reranker_file", "read_rerank_head"]

CLS_OUT = "cls.output.weight"
OUTPUT = "output.weight"
TOKEN_EMBD = "token_embd.weight"
YES, NO = "yes", "no"


@dataclass(frozen=True)
class RerankHead:
    """The log-odds direction of a reranker GGUF.

    Attributes:
        weight: ``w_yes - w_no`` (float64, ``n_embd`` values): the log-odds are ``h · weight``.
        tensor: The tensor the rows came from (``cls.output.weight``, ``output.weight`` or
            ``token_embd.weight``).
        rows: The rows used, yes first (one row for a one-row classifier).
        type_name: Storage type of that tensor (``F32``, ``F16``, ``Q8_0``, ...).
        labels: The classifier labels as the file lists them (``cls.output`` only).
    """

    weight: np.ndarray
    tensor: str
    rows: tuple[int, ...]
    type_name: str
    labels: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        """The head in words for ``repr``: ``"cls.output[yes=0,no=1] F32"``, ``"token_embd[9693-2152] (tied) Q8_0"``."""
        name = self.tensor.removesuffix(".weight")
        if self.tensor == CLS_OUT:
            if len(self.rows) == 1:
                return f"{name}[log-odds row] {self.type_name}"
            return f"{name}[yes={self.rows[0]},no={self.rows[1]}] {self.type_name}"
        tied = " (tied)" if self.tensor == TOKEN_EMBD else ""
        return f"{name}[{self.rows[0]}-{self.rows[1]}]{tied} {self.type_name}"


def read_rerank_head(info: GGUFInfo, label_ids: Callable[[], tuple[int, int]]) -> RerankHead:
    """Find the head in ``info``'s file and read ``w_yes - w_no``.

    Args:
        info: The file's header.
        label_ids: Returns the token ids of ``"yes"`` and ``"no"`` (called only for a plain
            causal-LM file, whose head rows are indexed by token id; it raises when they are
            not single tokens).

    Raises:
        UnsupportedModelError: No usable head, or a classifier whose labels are not yes/no.
    """
    tensors = {t.name: t for t in info.tensors}
    n_embd = int(info.embedding_length or 0)
    if CLS_OUT in tensors:
        tensor = tensors[CLS_OUT]
        n_rows = _rows(tensor)
        labels = _labels(info)
        if n_rows == 1:
            weight = _read_rows(info, tensor, (0,), n_embd)[0]
            return RerankHead(weight, CLS_OUT, (0,), tensor.type_name, labels)
        if n_rows != 2:
            raise UnsupportedModelError(
                f"{info.path.name}: {CLS_OUT} has {n_rows} rows; a Qwen3 reranker has 2 (yes, no) or 1 (log-odds)."
            )
        if not labels:  # llama.cpp's converter always writes them; its order is yes, no
            labels = (YES, NO)
        lowered = [label.strip().lower() for label in labels]
        if sorted(lowered) != [NO, YES]:
            raise UnsupportedModelError(
                f"{info.path.name}: the classifier's labels are {list(labels)!r}, not 'yes' and 'no'; "
                "this is not a Qwen3-Reranker file."
            )
        rows = (lowered.index(YES), lowered.index(NO))
        yes, no = _read_rows(info, tensor, rows, n_embd)
        return RerankHead(yes - no, CLS_OUT, rows, tensor.type_name, labels)
    for name in (OUTPUT, TOKEN_EMBD):
        if name in tensors:
            tensor = tensors[name]
            yes_id, no_id = label_ids()
            n_rows = _rows(tensor)
            if max(yes_id, no_id) >= n_rows:
                raise UnsupportedModelError(
                    f"{info.path.name}: {name} has {n_rows} rows, fewer than the label ids ({yes_id}, {no_id})."
                )
            yes, no = _read_rows(info, tensor, (yes_id, no_id), n_embd)
            return RerankHead(yes - no, name, (yes_id, no_id), tensor.type_name)
    raise UnsupportedModelError(
        f"{info.path.name} has no head to score with: none of {CLS_OUT}, {OUTPUT}, {TOKEN_EMBD}."
    )


def _rows(tensor: TensorInfo) -> int:
    return int(tensor.shape[1]) if len(tensor.shape) > 1 else 1


def _labels(info: GGUFInfo) -> tuple[str, ...]:
    value = info.arch_value("classifier.output_labels")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return ()


def _read_rows(info: GGUFInfo, tensor: TensorInfo, rows: tuple[int, ...], n_embd: int) -> list[np.ndarray]:
    """Rows of a 2-D tensor as float64, dequantizing only their bytes."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    width = int(tensor.shape[0])
    if width != n_embd:
        raise UnsupportedModelError(f"{info.path.name}: {tensor.name} rows have {width} values, not n_embd={n_embd}.")
    qtype = GGMLQuantizationType[tensor.type_name]
    block, type_size = GGML_QUANT_SIZES[qtype]
    row_bytes = width // block * type_size
    out = []
    with open(info.path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        for row in rows:
            start = info.data_offset + tensor.offset + row * row_bytes
            raw = np.frombuffer(buf, dtype=np.uint8, count=row_bytes, offset=start).copy()
            if qtype == GGMLQuantizationType.BF16:
                values = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                try:
                    values = dequantize(raw.reshape(1, row_bytes), qtype).reshape(-1)
                except NotImplementedError as error:
                    raise UnsupportedModelError(
                        f"{info.path.name}: cannot dequantize {tensor.name} stored as {qtype.name}"
                    ) from error
            out.append(np.asarray(values, dtype=np.float64))
    return out


def check_reranker_file(info: GGUFInfo) -> None:
    """Refuse a file that is not a Qwen3 reranker: another architecture, no weights, an embedding model."""
    name = info.path.name
    if info.architecture != "qwen3":
        raise UnsupportedModelError(
            f"{name} is a {info.architecture or 'unknown'} model; the Reranker runs Qwen3-Reranker GGUF files "
            "(architecture qwen3), such as Qwen3-Reranker-0.6B-Q8_0.gguf."
        )
    if not info.tensors or not info.embedding_length:
        raise UnsupportedModelError(f"{name} has no weights or no embedding_length (a vocabulary-only GGUF?).")
    pooling = POOLING_NAMES.get(info.pooling_type) if info.pooling_type is not None else None
    if pooling in ("last", "mean", "cls"):
        raise UnsupportedModelError(
            f"{name} is an embedding model (pooling_type {pooling.upper()}), not a reranker; load it with "
            "qwen_embed.Embedder, or give the Reranker a Qwen3-Reranker file."
        )
