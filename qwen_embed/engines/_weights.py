"""The torch engine's weights: read from a GGUF straight into their final dtype, in bounded memory.

Each tensor is read with positioned reads (no memory map, so the file's pages never count
towards the process's resident memory) in slices of a few MiB, unpacked by
:mod:`._dequant` and rounded once into a preallocated tensor of the chosen dtype. q/k/v and
gate/up are written into one fused matrix each (fewer, larger GEMMs) without a concatenating
copy. Peak memory is the weights in their final dtype plus one slice.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import ModelLoadError
from . import _dequant
from .gguf_info import GGUFInfo, TensorInfo

__all__ = ["MATRICES", "NORMS", "EmbeddingRows", "load_gguf_weights", "weight_bytes", "weight_shapes"]

#: Fused matrices per layer and the GGUF tensors each is made of (stacked by rows).
MATRICES: dict[str, tuple[str, ...]] = {
    "attn_qkv": ("attn_q", "attn_k", "attn_v"),
    "attn_output": ("attn_output",),
    "ffn_gate_up": ("ffn_gate", "ffn_up"),
    "ffn_down": ("ffn_down",),
}
_TASK_BYTES = 16 * 1024 * 1024  # a tensor larger than this is filled by several tasks
#: Norm weights per layer (kept in float32).
NORMS = ("attn_norm", "attn_q_norm", "attn_k_norm", "ffn_norm")


class EmbeddingRows:
    """The token embedding table kept as the file's raw rows; rows are unpacked when looked up.

    A batch needs a few hundred of the 151,936 rows, so holding the table quantized (165 MB for
    the 0.6B's Q8_0 against 311 MB in bfloat16) costs one small unpack per batch. The values are
    exactly those of dequantizing the whole table (same blocks, same float32 operations).
    """

    def __init__(self, torch: Any, raw: Any, type_name: str, cols: int, block_size: int, type_size: int) -> None:
        self._torch = torch
        self.raw = raw  # (rows, row_bytes) uint8
        self.type_name = type_name
        self.cols = cols
        self._block = block_size
        self._size = type_size

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.raw.shape[0]), self.cols

    @property
    def nbytes(self) -> int:
        """Bytes held (the file's raw rows)."""
        return int(self.raw.numel())

    def lookup(self, ids: Any, dtype: Any) -> Any:
        """``(…,)`` token ids -> ``(…, cols)`` values in ``dtype`` (rounded once from float32)."""
        torch = self._torch
        flat = ids.reshape(-1)
        rows = self.raw.index_select(0, flat.to(self.raw.device))
        out = torch.empty((flat.numel() * self.cols // self._block, self._block), dtype=dtype, device=self.raw.device)
        _dequant.unpack_into(torch, out, rows.reshape(-1, self._size), self.type_name)
        return out.reshape(*ids.shape, self.cols)


def _tensor(info: GGUFInfo, name: str) -> TensorInfo:
    for tensor in info.tensors:
        if tensor.name == name:
            return tensor
    raise ModelLoadError(f"{info.path}: no tensor {name!r}")


_Plan = dict[str, tuple[tuple[int, ...], bool, tuple[str, ...]]]


def weight_shapes(info: GGUFInfo, n_layer: int) -> _Plan:
    """``key -> (torch shape, is a matrix, GGUF tensor names)`` for every weight the engine keeps."""
    out: _Plan = {}

    def rows_cols(name: str) -> tuple[int, int]:
        shape = _tensor(info, name).shape  # ggml order: (columns, rows)
        return int(shape[1]), int(shape[0])

    rows, cols = rows_cols("token_embd.weight")
    out["token_embd"] = ((rows, cols), True, ("token_embd.weight",))
    out["output_norm"] = ((int(_tensor(info, "output_norm.weight").shape[0]),), False, ("output_norm.weight",))
    for i in range(n_layer):
        p = f"blk.{i}."
        for key, parts in MATRICES.items():
            names = tuple(f"{p}{part}.weight" for part in parts)
            dims = [rows_cols(n) for n in names]
            if len({c for _, c in dims}) != 1:
                raise ModelLoadError(f"{info.path}: {', '.join(names)} differ in width")
            out[p + key] = ((sum(r for r, _ in dims), dims[0][1]), True, names)
        for key in NORMS:
            name = f"{p}{key}.weight"
            out[p + key] = ((int(_tensor(info, name).shape[0]),), False, (name,))
    return out


def weight_bytes(info: GGUFInfo, n_layer: int, itemsize: int) -> int:
    """Bytes the engine's weights take with matrices of ``itemsize`` bytes per value.

    Norms are float32; the token embedding table stays in the file's own type (:class:`EmbeddingRows`).
    """
    total = _tensor(info, "token_embd.weight").n_bytes
    for key, (shape, matrix, _) in weight_shapes(info, n_layer).items():
        if key == "token_embd":
            continue
        count = 1
        for dim in shape:
            count *= dim
        total += count * (itemsize if matrix else 4)
    return total


def _reader(fd: int, base: int) -> Callable[[Any, int], None]:
    """``read(buffer, offset)``: fill a uint8 tensor with the file's bytes from ``base + offset``."""

    def read(buffer: Any, offset: int) -> None:
        view = memoryview(buffer.numpy()).cast("B")
        done = 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], base + offset + done)
            if got <= 0:
                raise ModelLoadError(f"unexpected end of file at byte {base + offset + done}")
            done += got

    return read


def load_gguf_weights(
    info: GGUFInfo, *, n_layer: int, torch: Any, dtype: Any, device: str, threads: int = 1
) -> dict[str, Any]:
    """Every weight the engine uses, matrices in ``dtype`` and norms in float32, on ``device``.

    ``threads`` Python threads fill different tensors at once, each running torch's
    operations on one intra-op thread (torch's own pool is set to 1 meanwhile and restored):
    no OpenMP barrier per small operation, which keeps loading fast on a busy machine too.
    """
    plan = weight_shapes(info, n_layer)
    embedding = plan.pop("token_embd")
    weights: dict[str, Any] = {
        key: torch.empty(shape, dtype=dtype if matrix else torch.float32, device=device)
        for key, (shape, matrix, _) in plan.items()
    }
    try:
        fd = os.open(info.path, os.O_RDONLY)
    except OSError as error:
        raise ModelLoadError(f"{info.path}: {error}") from error

    tasks: list[tuple[Any, TensorInfo | None, int]] = []  # (destination rows, source tensor, first source row)
    for key, (_, matrix, names) in plan.items():
        target, row = weights[key], 0
        for name in names:
            tensor = _tensor(info, name)
            rows = int(tensor.shape[1]) if len(tensor.shape) > 1 else 1
            if not matrix:
                tasks.append((target.view(1, -1), tensor, 0))
                continue
            step = max(1, rows * _TASK_BYTES // max(tensor.n_bytes, 1))  # big tensors in several tasks
            for first in range(0, rows, step):
                tasks.append((target[row + first : row + min(rows, first + step)], tensor, first))
            row += rows

    def fill(task: tuple[Any, TensorInfo | None, int]) -> None:
        view, tensor, first = task
        if tensor is None:  # the embedding table's raw bytes
            _reader(fd, info.data_offset + table.offset)(view.reshape(-1), 0)
            return
        rows = int(tensor.shape[1]) if len(tensor.shape) > 1 else 1
        start = info.data_offset + tensor.offset + first * (tensor.n_bytes // rows)
        _fill(torch, view, tensor, _reader(fd, start), info)

    table = _tensor(info, embedding[2][0])
    block, size = _block_sizes(table, info)
    raw = torch.empty((embedding[0][0], table.n_bytes // embedding[0][0]), dtype=torch.uint8)
    tasks.append((raw, None, 0))  # read as is, by a task like the others

    intra = torch.get_num_threads()
    try:
        if threads <= 1:
            for task in tasks:
                fill(task)
        else:
            from concurrent.futures import ThreadPoolExecutor

            torch.set_num_threads(1)
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="qwen-embed-load") as pool:
                for _ in pool.map(fill, tasks):
                    pass
    finally:
        torch.set_num_threads(intra)
        os.close(fd)
    weights["token_embd"] = EmbeddingRows(torch, raw.to(device), table.type_name, embedding[0][1], block, size)
    return weights


def _block_sizes(tensor: TensorInfo, info: GGUFInfo) -> tuple[int, int]:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        return GGML_QUANT_SIZES[GGMLQuantizationType[tensor.type_name]]
    except KeyError as error:
        raise ModelLoadError(f"{info.path}: unknown tensor type {tensor.type_name} ({tensor.name})") from error


def _fill(torch: Any, out: Any, tensor: TensorInfo, read: Callable[[Any, int], None], info: GGUFInfo) -> None:
    block, size = _block_sizes(tensor, info)
    try:
        _dequant.dequantize_rows_into(torch, out, read, tensor.type_name, block_size=block, type_size=size)
    except NotImplementedError as error:
        raise ModelLoadError(
            f"{info.path}: the torch engine cannot dequantize {tensor.type_name} ({tensor.name}); "
            "use backend='llama' for this file"
        ) from error
