"""Read a GGUF file's metadata without loading its weights.

The reader checks the file before llama.cpp ever sees it: the magic, the version,
that every key/value and tensor record lies inside the file, and that the tensor data
the header promises is really there (a truncated download is caught here, with a
clear message, instead of deep inside the native loader).

Large arrays (the 151k-token vocabulary) are skipped, not decoded: only their length
is kept.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from ..errors import InvalidModelFileError, ModelNotFoundError

__all__ = ["POOLING_NAMES", "GGUFInfo", "TensorInfo", "read_gguf_info"]

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
_SMALL_ARRAY = 64  # arrays up to this many items are decoded, longer ones only counted

# GGUF value types -> struct format (scalars)
_SCALAR_FORMATS: dict[int, str] = {
    0: "<B",  # UINT8
    1: "<b",  # INT8
    2: "<H",  # UINT16
    3: "<h",  # INT16
    4: "<I",  # UINT32
    5: "<i",  # INT32
    6: "<f",  # FLOAT32
    7: "<?",  # BOOL
    10: "<Q",  # UINT64
    11: "<q",  # INT64
    12: "<d",  # FLOAT64
}
_STRING, _ARRAY = 8, 9

#: llama.cpp's pooling types, as stored in ``{arch}.pooling_type``.
POOLING_NAMES: dict[int, str] = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor record of the header."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    offset: int
    n_bytes: int


@dataclass(frozen=True)
class ArrayInfo:
    """A metadata array too long to decode: its element type and length."""

    item_type: int
    length: int


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF header says, plus a few derived facts."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...] = field(repr=False)
    file_size: int = 0
    data_offset: int = 0  # where tensor data starts; TensorInfo.offset is relative to it

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    def arch_value(self, key: str) -> Any:
        """Return ``{architecture}.{key}`` or ``None``."""
        return self.metadata.get(f"{self.architecture}.{key}")

    @property
    def embedding_length(self) -> int | None:
        return _as_int(self.arch_value("embedding_length"))

    @property
    def context_length(self) -> int | None:
        return _as_int(self.arch_value("context_length"))

    @property
    def block_count(self) -> int | None:
        return _as_int(self.arch_value("block_count"))

    @property
    def pooling_type(self) -> int | None:
        return _as_int(self.arch_value("pooling_type"))

    @property
    def add_eos_token(self) -> bool | None:
        value = self.metadata.get("tokenizer.ggml.add_eos_token")
        return bool(value) if value is not None else None

    @property
    def eos_token_id(self) -> int | None:
        return _as_int(self.metadata.get("tokenizer.ggml.eos_token_id"))

    @property
    def vocab_size(self) -> int | None:
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, ArrayInfo):
            return tokens.length
        if isinstance(tokens, list):
            return len(tokens)
        return None

    @property
    def name(self) -> str | None:
        value = self.metadata.get("general.name")
        return value if isinstance(value, str) else None

    @property
    def quantization(self) -> str:
        """The file type as a short name (``"Q8_0"``, ``"F16"``, ``"Q4_K_M"``, ...)."""
        file_type = _as_int(self.metadata.get("general.file_type"))
        if file_type is not None:
            try:
                name = LlamaFileType(file_type).name
            except ValueError:
                name = ""
            if name:
                return name.removeprefix("MOSTLY_").removeprefix("ALL_")
        # No (known) file type: name it after the most common weight type.
        counts: dict[str, int] = {}
        for tensor in self.tensors:
            if len(tensor.shape) >= 2:
                counts[tensor.type_name] = counts.get(tensor.type_name, 0) + tensor.n_bytes
        return max(counts, key=counts.__getitem__) if counts else "unknown"


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    return None


class _Cursor:
    """Bounds-checked little-endian reads from a memory map."""

    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)
        self.path = path

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise InvalidModelFileError(
                f"{self.path} is truncated or corrupt: the header's {what} runs past the end of "
                f"the file (byte {self.pos} + {n} > {self.size}). Download the file again."
            )

    def scalar(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def string(self, what: str) -> str:
        length = self.scalar("<Q", what)
        self.need(length, what)
        raw = bytes(self.buf[self.pos : self.pos + length])
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def skip_string(self, what: str) -> None:
        length = self.scalar("<Q", what)
        self.need(length, what)
        self.pos += length

    def value(self, value_type: int, what: str, *, full: bool = False) -> Any:
        if value_type in _SCALAR_FORMATS:
            return self.scalar(_SCALAR_FORMATS[value_type], what)
        if value_type == _STRING:
            return self.string(what)
        if value_type == _ARRAY:
            item_type = self.scalar("<I", what)
            length = self.scalar("<Q", what)
            if item_type == _ARRAY:
                raise InvalidModelFileError(f"{self.path}: nested arrays in {what} are not supported")
            if full and item_type in _SCALAR_FORMATS:
                fmt = _SCALAR_FORMATS[item_type]
                n = struct.calcsize(fmt) * length
                self.need(n, what)
                values = list(struct.unpack_from(f"<{length}{fmt[1:]}", self.buf, self.pos))
                self.pos += n
                return values
            if length <= _SMALL_ARRAY or full:
                return [self.value(item_type, what) for _ in range(length)]
            if item_type == _STRING:
                for _ in range(length):
                    self.skip_string(what)
            elif item_type in _SCALAR_FORMATS:
                n = struct.calcsize(_SCALAR_FORMATS[item_type]) * length
                self.need(n, what)
                self.pos += n
            else:
                raise InvalidModelFileError(f"{self.path}: unknown array item type {item_type} in {what}")
            return ArrayInfo(item_type=item_type, length=length)
        raise InvalidModelFileError(f"{self.path} is corrupt: unknown metadata value type {value_type} in {what}")


def read_gguf_info(path: str | os.PathLike[str], *, full_arrays: tuple[str, ...] = ()) -> GGUFInfo:
    """Read and validate the header of a GGUF file.

    Args:
        path: Path to a ``.gguf`` file.
        full_arrays: Keys of long arrays to decode in full (for example
            ``"tokenizer.ggml.tokens"``); other long arrays are only counted.

    Returns:
        The metadata (long arrays as :class:`ArrayInfo`) and the tensor records.

    Raises:
        ModelNotFoundError: The path does not exist or is not a file.
        InvalidModelFileError: The file is not GGUF, or it is truncated or corrupt.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelNotFoundError(f"Model file not found: {p}")
    if not p.is_file():
        raise ModelNotFoundError(f"Model path is not a file: {p}")
    size = p.stat().st_size
    if size < 24:
        raise InvalidModelFileError(f"{p} is not a GGUF file ({size} bytes, too small for a GGUF header).")
    with open(p, "rb") as fh:
        if fh.read(4) != _MAGIC:
            raise InvalidModelFileError(
                f"{p} is not a GGUF file (its first bytes are not 'GGUF'). qwen_embed reads GGUF "
                "models such as Qwen3-Embedding-0.6B-Q8_0.gguf; convert other formats with "
                "llama.cpp's convert_hf_to_gguf.py."
            )
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(buf, p, size, full_arrays)


def _parse(buf: mmap.mmap, path: Path, size: int, full_arrays: tuple[str, ...]) -> GGUFInfo:
    cur = _Cursor(buf, path)
    cur.pos = 4
    version = cur.scalar("<I", "version")
    if version not in (2, 3):
        raise InvalidModelFileError(
            f"{path}: unsupported GGUF version {version} (supported: 2, 3). The file may be "
            "corrupt or written by a newer tool; update llama-cpp-python or re-convert it."
        )
    n_tensors = cur.scalar("<Q", "tensor count")
    n_kv = cur.scalar("<Q", "metadata count")
    if n_kv > size or n_tensors > size:
        raise InvalidModelFileError(f"{path} is corrupt: implausible header counts ({n_kv} keys, {n_tensors} tensors).")

    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = cur.string(f"key #{i}")
        value_type = cur.scalar("<I", f"type of {key!r}")
        metadata[key] = cur.value(value_type, repr(key), full=key in full_arrays)

    records: list[tuple[str, tuple[int, ...], int, int]] = []
    for i in range(n_tensors):
        name = cur.string(f"tensor #{i} name")
        n_dims = cur.scalar("<I", f"tensor {name!r}")
        if n_dims > 8:
            raise InvalidModelFileError(f"{path} is corrupt: tensor {name!r} has {n_dims} dimensions.")
        shape = tuple(cur.scalar("<Q", f"tensor {name!r}") for _ in range(n_dims))
        type_id = cur.scalar("<I", f"tensor {name!r}")
        offset = cur.scalar("<Q", f"tensor {name!r}")
        records.append((name, shape, type_id, offset))

    alignment = _as_int(metadata.get("general.alignment")) or _DEFAULT_ALIGNMENT
    data_start = (cur.pos + alignment - 1) // alignment * alignment

    tensors: list[TensorInfo] = []
    for name, shape, type_id, offset in records:
        try:
            qtype = GGMLQuantizationType(type_id)
            block, type_size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise InvalidModelFileError(
                f"{path}: tensor {name!r} has unknown type {type_id}; the file is corrupt or needs "
                "a newer gguf/llama-cpp-python."
            ) from None
        n_elements = 1
        for dim in shape:
            n_elements *= dim
        n_bytes = n_elements // block * type_size
        end = data_start + offset + n_bytes
        if end > size:
            raise InvalidModelFileError(
                f"{path} is truncated: tensor {name!r} needs bytes up to {end:,} but the file has "
                f"{size:,}. The download was probably interrupted; delete the file and download it again."
            )
        tensors.append(TensorInfo(name, shape, qtype.name, offset, n_bytes))

    return GGUFInfo(
        path=path, version=version, metadata=metadata, tensors=tuple(tensors), file_size=size, data_offset=data_start
    )
