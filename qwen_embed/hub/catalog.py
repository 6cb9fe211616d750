"""The catalog of known Qwen3-Embedding and Qwen3-Reranker GGUF repositories, as data.

Sizes here are approximate (for display and for ``quant="auto"`` when the Hub's
listing is not at hand); the live file list of the repository always decides
which quantizations exist and how large they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypedDict

from .._config import DEFAULT_MAX_LENGTH
from ..errors import ConfigurationError, UnknownModelError

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "DEFAULT_QUANT",
    "KINDS",
    "QUANT_QUALITY",
    "RERANKER_CATALOG",
    "CatalogModel",
    "KnownQuant",
    "RerankerModel",
    "find_model",
    "lookup",
    "normalize_quant",
    "parse_gguf_filename",
    "quant_rank",
]

DEFAULT_MODEL = "0.6B"
DEFAULT_QUANT = "Q8_0"

# Best first. A quant not listed ranks after every listed one, in name order.
QUANT_QUALITY: tuple[str, ...] = (
    "F32",
    "BF16",
    "F16",
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q5_K_S",
    "Q5_1",
    "Q5_0",
    "Q4_K_M",
    "Q4_K_S",
    "IQ4_XS",
    "IQ4_NL",
    "Q4_1",
    "Q4_0",
    "Q3_K_L",
    "Q3_K_M",
    "Q3_K_S",
    "IQ3_M",
    "IQ3_XS",
    "Q2_K",
)

_QUANT_ALIASES = {"FP16": "F16", "FP32": "F32", "HALF": "F16", "FLOAT16": "F16", "FLOAT32": "F32"}
_QUANT_SHAPE = re.compile(r"^(?:I?Q[1-8](?:_[0-9A-Z]+)*|BF16|F16|F32)$")
# A quant name inside a file name: delimited by '-', '_' or '.' boundaries and followed by the extension.
_QUANT_IN_NAME = re.compile(r"(?i)(?:^|[-_.])(I?Q[1-8](?:_[0-9A-Z]+)*?|BF16|FP?16|FP?32)$")
_SPLIT_SUFFIX = re.compile(r"-(\d{5})-of-(\d{5})$")


def normalize_quant(name: str) -> str:
    """Canonical (upper-case) spelling of a quantization name: ``"q4_k_m"`` → ``"Q4_K_M"``, ``"f16"`` → ``"F16"``."""
    key = name.strip().upper().replace("-", "_")
    key = _QUANT_ALIASES.get(key, key)
    return key


def quant_rank(quant: str) -> tuple[int, str]:
    """Sort key, best quality first."""
    key = normalize_quant(quant)
    try:
        return (QUANT_QUALITY.index(key), key)
    except ValueError:
        return (len(QUANT_QUALITY), key)


def parse_gguf_filename(path: str) -> tuple[str | None, int, int]:
    """``(quant, part, n_parts)`` read from a GGUF file name; ``quant`` is ``None`` when the name has none.

    ``"Qwen3-Embedding-4B-Q4_K_M.gguf"`` → ``("Q4_K_M", 1, 1)``;
    ``"m-Q8_0-00002-of-00003.gguf"`` → ``("Q8_0", 2, 3)``.
    """
    stem = path.rsplit("/", 1)[-1]
    if stem.lower().endswith(".gguf"):
        stem = stem[: -len(".gguf")]
    part, n_parts = 1, 1
    split = _SPLIT_SUFFIX.search(stem)
    if split:
        part, n_parts = int(split.group(1)), int(split.group(2))
        stem = stem[: split.start()]
    match = _QUANT_IN_NAME.search(stem)
    if not match:
        return None, part, n_parts
    quant = normalize_quant(match.group(1))
    return (quant if _QUANT_SHAPE.match(quant) else None), part, n_parts


@dataclass(frozen=True)
class KnownQuant:
    """A quantization published in an official repository, with its approximate file size."""

    name: str
    approx_bytes: int


#: The model kinds the catalog knows: embedding models and rerankers.
KINDS: tuple[str, ...] = ("embedding", "reranker")


@dataclass(frozen=True)
class CatalogModel:
    """One known GGUF repository of the Qwen3 family: an embedding model or a reranker.

    Attributes:
        size: The size name users type (``"0.6B"``, ``"4B"``, ``"8B"``).
        repo_id: The Hugging Face repository holding the GGUF files.
        kind: ``"embedding"`` or ``"reranker"``.
        hidden: Hidden size (an embedding model's native output dimension).
        layers, heads, kv_heads, head_dim, ffn: The transformer's shape.
        context_length: Most positions the model was trained for.
        quants: The quantizations the repository publishes, with approximate sizes.
        aliases: Names that find this entry (case-insensitive), the repo id among them.
        default_quant: The quantization used when none is named (one of ``quants``).
        parameters: Parameter count, where recorded.
        head: Rerankers: how the files were converted, ``"cls.output"`` (llama.cpp's converter in
            reranker mode, after ggml-org/llama.cpp#15824) or ``"lm"`` (a plain causal-LM
            conversion); :class:`~qwen_embed.Reranker` scores both the official way.

    Raises:
        ConfigurationError: An entry that contradicts itself (an unknown kind, a default quant
            missing from its list).
    """

    size: str
    repo_id: str
    kind: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    context_length: int
    quants: tuple[KnownQuant, ...]
    aliases: tuple[str, ...]
    default_quant: str = DEFAULT_QUANT
    parameters: int | None = None
    head: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigurationError(f"{self.repo_id}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        names = [q.name for q in self.quants]
        if normalize_quant(self.default_quant) not in names:
            raise ConfigurationError(
                f"{self.repo_id}: default_quant {self.default_quant!r} is not one of its quants ({', '.join(names)})"
            )

    @property
    def native_dim(self) -> int:
        """The embedding width (the hidden size)."""
        return self.hidden

    def filename(self, quant: str) -> str:
        """The official file name of an embedding model's quantization (lower-case ``f16``, as the repositories
        spell it)."""
        key = normalize_quant(quant)
        spelled = key.lower() if key in {"F16", "F32", "BF16"} else key
        return f"Qwen3-Embedding-{self.size}-{spelled}.gguf"

    def kv_cache_bytes(self, tokens: int = DEFAULT_MAX_LENGTH) -> int:
        """Bytes of the f16 K and V caches for ``tokens`` positions."""
        return 2 * self.layers * self.kv_heads * self.head_dim * tokens * 2

    def approx_bytes(self, quant: str) -> int | None:
        """The approximate file size of a quantization, or ``None`` when the catalog does not list it."""
        key = normalize_quant(quant)
        return next((q.approx_bytes for q in self.quants if q.name == key), None)


#: The reranker entries used to be their own type; they are :class:`CatalogModel` entries with ``kind="reranker"``.
RerankerModel = CatalogModel


def _quants(**sizes_mb: int) -> tuple[KnownQuant, ...]:
    return tuple(KnownQuant(name.upper(), mb * 1_000_000) for name, mb in sizes_mb.items())


def _aliases(size: str) -> tuple[str, ...]:
    return (
        size,
        f"qwen3-embedding-{size}",
        f"qwen3-embedding-{size}-gguf",
        f"Qwen/Qwen3-Embedding-{size}",
        f"Qwen/Qwen3-Embedding-{size}-GGUF",
    )


class _Shape(TypedDict):
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    context_length: int


# The Qwen3 shapes by size (QwenLM/Qwen3-Embedding README and config.json files; the rerankers share them).
_SHAPES: dict[str, _Shape] = {
    "0.6B": _Shape(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, ffn=3072, context_length=32768),
    "4B": _Shape(hidden=2560, layers=36, heads=32, kv_heads=8, head_dim=128, ffn=9728, context_length=32768),
    "8B": _Shape(hidden=4096, layers=36, heads=32, kv_heads=8, head_dim=128, ffn=12288, context_length=32768),
}

# Quants: the repositories' file lists.
CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel(
        size="0.6B",
        repo_id="Qwen/Qwen3-Embedding-0.6B-GGUF",
        kind="embedding",
        parameters=595_776_512,
        quants=_quants(f16=1_197, q8_0=639),
        aliases=_aliases("0.6B"),
        **_SHAPES["0.6B"],
    ),
    CatalogModel(
        size="4B",
        repo_id="Qwen/Qwen3-Embedding-4B-GGUF",
        kind="embedding",
        parameters=4_021_774_336,
        quants=_quants(f16=8_051, q8_0=4_280, q6_k=3_306, q5_k_m=2_890, q5_0=2_824, q4_k_m=2_497),
        aliases=_aliases("4B"),
        **_SHAPES["4B"],
    ),
    CatalogModel(
        size="8B",
        repo_id="Qwen/Qwen3-Embedding-8B-GGUF",
        kind="embedding",
        parameters=7_567_295_488,
        quants=_quants(f16=15_136, q8_0=8_048, q6_k=6_214, q5_k_m=5_422, q5_0=5_237, q4_k_m=4_683),
        aliases=_aliases("8B"),
        **_SHAPES["8B"],
    ),
)


def _reranker_aliases(size: str, repo_id: str) -> tuple[str, ...]:
    return (size, f"qwen3-reranker-{size}", f"Qwen/Qwen3-Reranker-{size}", repo_id)


# ggml-org's 0.6B is made by llama.cpp's own GGUF-my-repo (reranker mode, Q8_0 only); the 4B and 8B
# files are community conversions with llama.cpp's converter in reranker mode (Voodisss, as listed in
# ../shared/RERANKER.md §2a), published in F16 only. The live file list decides which quantizations exist.
RERANKER_CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel(
        size="0.6B",
        repo_id="ggml-org/Qwen3-Reranker-0.6B-Q8_0-GGUF",
        kind="reranker",
        head="cls.output",
        default_quant="Q8_0",
        quants=_quants(q8_0=639),
        aliases=_reranker_aliases("0.6B", "ggml-org/Qwen3-Reranker-0.6B-Q8_0-GGUF"),
        **_SHAPES["0.6B"],
    ),
    CatalogModel(
        size="4B",
        repo_id="Voodisss/Qwen3-Reranker-4B-GGUF-llama_cpp",
        kind="reranker",
        head="cls.output",
        default_quant="F16",
        quants=_quants(f16=8_051),
        aliases=_reranker_aliases("4B", "Voodisss/Qwen3-Reranker-4B-GGUF-llama_cpp"),
        **_SHAPES["4B"],
    ),
    CatalogModel(
        size="8B",
        repo_id="Voodisss/Qwen3-Reranker-8B-GGUF-llama_cpp",
        kind="reranker",
        head="cls.output",
        default_quant="F16",
        quants=_quants(f16=15_136),
        aliases=_reranker_aliases("8B", "Voodisss/Qwen3-Reranker-8B-GGUF-llama_cpp"),
        **_SHAPES["8B"],
    ),
)

_BY_KIND: dict[str, tuple[CatalogModel, ...]] = {"embedding": CATALOG, "reranker": RERANKER_CATALOG}
_NOUN = {"embedding": "model", "reranker": "reranker"}
_HOLDING = {"embedding": "GGUF files", "reranker": "Qwen3-Reranker GGUF files"}


def _entries(kind: str) -> tuple[CatalogModel, ...]:
    try:
        return _BY_KIND[kind]
    except (KeyError, TypeError):
        raise ConfigurationError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}") from None


def find_model(name: str, *, kind: str = "embedding") -> CatalogModel | None:
    """The catalog entry of ``kind`` for a size, alias or repo id (case-insensitive), or ``None``."""
    key = name.strip().lower()
    for model in _entries(kind):
        if key in (alias.lower() for alias in model.aliases):
            return model
    return None


def lookup(model: str, *, kind: str = "embedding") -> tuple[str, CatalogModel | None]:
    """``(repo_id, catalog entry)`` for a size or alias of ``kind``, or ``(repo_id, None)`` for any other repo id.

    >>> lookup("0.6B")[0], lookup("4B", kind="reranker")[0]
    ('Qwen/Qwen3-Embedding-0.6B-GGUF', 'Voodisss/Qwen3-Reranker-4B-GGUF-llama_cpp')

    Raises:
        UnknownModelError: ``model`` is neither an alias nor a repo id; the message lists the catalog.
        ConfigurationError: ``kind`` is not one of :data:`KINDS`.
    """
    entry = find_model(model, kind=kind)
    if entry is not None:
        return entry.repo_id, entry
    if re.fullmatch(r"[\w.-]+/[\w.-]+", model.strip()):
        return model.strip(), None
    noun = _NOUN[kind]
    sizes = ", ".join(f"{m.size!r} ({m.repo_id})" for m in _entries(kind))
    catalog = "catalog" if kind == "embedding" else f"{noun} catalog"
    raise UnknownModelError(
        f"Unknown {noun} {model!r}. Use a size from the {catalog}: {sizes}; "
        f"or any Hugging Face repo id holding {_HOLDING[kind]} ('owner/name'); or the path of a local .gguf file."
    )
