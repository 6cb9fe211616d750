"""The catalog of official Qwen3-Embedding GGUF repositories, as data.

Sizes here are approximate (for display and for ``quant="auto"`` when the Hub's
listing is not at hand); the live file list of the repository always decides
which quantizations exist and how large they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._config import DEFAULT_MAX_LENGTH
from ..errors import UnknownModelError

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "DEFAULT_QUANT",
    "QUANT_QUALITY",
    "RERANKER_CATALOG",
    "CatalogModel",
    "KnownQuant",
    "RerankerModel",
    "find_model",
    "find_reranker",
    "lookup_reranker_repo",
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


@dataclass(frozen=True)
class CatalogModel:
    """One official Qwen3-Embedding GGUF repository."""

    size: str
    repo_id: str
    parameters: int
    native_dim: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    context_length: int
    quants: tuple[KnownQuant, ...]
    aliases: tuple[str, ...]

    def filename(self, quant: str) -> str:
        """The official file name for a quantization (lower-case ``f16``, as the repositories spell it)."""
        key = normalize_quant(quant)
        spelled = key.lower() if key in {"F16", "F32", "BF16"} else key
        return f"Qwen3-Embedding-{self.size}-{spelled}.gguf"

    def kv_cache_bytes(self, tokens: int = DEFAULT_MAX_LENGTH) -> int:
        """Bytes of the f16 K and V caches for ``tokens`` positions."""
        return 2 * self.layers * self.kv_heads * self.head_dim * tokens * 2

    def approx_bytes(self, quant: str) -> int | None:
        key = normalize_quant(quant)
        return next((q.approx_bytes for q in self.quants if q.name == key), None)


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


# Shapes: QwenLM/Qwen3-Embedding README and config.json files; quants: the repositories' file lists.
CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel(
        size="0.6B",
        repo_id="Qwen/Qwen3-Embedding-0.6B-GGUF",
        parameters=595_776_512,
        native_dim=1024,
        layers=28,
        heads=16,
        kv_heads=8,
        head_dim=128,
        ffn=3072,
        context_length=32768,
        quants=_quants(f16=1_197, q8_0=639),
        aliases=_aliases("0.6B"),
    ),
    CatalogModel(
        size="4B",
        repo_id="Qwen/Qwen3-Embedding-4B-GGUF",
        parameters=4_021_774_336,
        native_dim=2560,
        layers=36,
        heads=32,
        kv_heads=8,
        head_dim=128,
        ffn=9728,
        context_length=32768,
        quants=_quants(f16=8_051, q8_0=4_280, q6_k=3_306, q5_k_m=2_890, q5_0=2_824, q4_k_m=2_497),
        aliases=_aliases("4B"),
    ),
    CatalogModel(
        size="8B",
        repo_id="Qwen/Qwen3-Embedding-8B-GGUF",
        parameters=7_567_295_488,
        native_dim=4096,
        layers=36,
        heads=32,
        kv_heads=8,
        head_dim=128,
        ffn=12288,
        context_length=32768,
        quants=_quants(f16=15_136, q8_0=8_048, q6_k=6_214, q5_k_m=5_422, q5_0=5_237, q4_k_m=4_683),
        aliases=_aliases("8B"),
    ),
)


def find_model(name: str) -> CatalogModel | None:
    """The catalog entry for an alias or repo id (case-insensitive), or ``None``."""
    key = name.strip().lower()
    for model in CATALOG:
        if key in (alias.lower() for alias in model.aliases):
            return model
    return None


def lookup_repo(name: str) -> tuple[str, CatalogModel | None]:
    """``(repo_id, catalog entry)`` for an alias or any ``owner/name`` repo id.

    Raises:
        UnknownModelError: ``name`` is neither an alias nor a repo id; the message lists the catalog.
    """
    model = find_model(name)
    if model is not None:
        return model.repo_id, model
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name.strip()):
        return name.strip(), None
    sizes = ", ".join(f"{m.size!r} ({m.repo_id})" for m in CATALOG)
    raise UnknownModelError(
        f"Unknown model {name!r}. Use a size from the catalog: {sizes}; "
        "or any Hugging Face repo id holding GGUF files ('owner/name'); or the path of a local .gguf file."
    )


# ----------------------------------------------------------------------------- rerankers


@dataclass(frozen=True)
class RerankerModel:
    """A Qwen3-Reranker GGUF repository (any repo id works too; these are the ones known to exist).

    ``head`` says how the files were converted: ``"cls.output"`` (llama.cpp's converter in
    reranker mode, after ggml-org/llama.cpp#15824) or ``"lm"`` (a plain causal-LM conversion).
    :class:`~qwen_embed.Reranker` scores both the official way.
    """

    size: str
    repo_id: str
    layers: int
    hidden: int
    context_length: int
    head: str
    default_quant: str
    quants: tuple[KnownQuant, ...]
    aliases: tuple[str, ...]


def _reranker_aliases(size: str, repo_id: str) -> tuple[str, ...]:
    return (size, f"qwen3-reranker-{size}", f"Qwen/Qwen3-Reranker-{size}", repo_id)


# ggml-org's 0.6B is made by llama.cpp's own GGUF-my-repo (reranker mode, Q8_0 only); the 4B and 8B
# files are community conversions with llama.cpp's converter in reranker mode (Voodisss, as listed in
# ../shared/RERANKER.md §2a). The live file list decides which quantizations exist.
RERANKER_CATALOG: tuple[RerankerModel, ...] = (
    RerankerModel(
        size="0.6B",
        repo_id="ggml-org/Qwen3-Reranker-0.6B-Q8_0-GGUF",
        layers=28,
        hidden=1024,
        context_length=32768,
        head="cls.output",
        default_quant="Q8_0",
        quants=_quants(q8_0=639),
        aliases=_reranker_aliases("0.6B", "ggml-org/Qwen3-Reranker-0.6B-Q8_0-GGUF"),
    ),
    RerankerModel(
        size="4B",
        repo_id="Voodisss/Qwen3-Reranker-4B-GGUF-llama_cpp",
        layers=36,
        hidden=2560,
        context_length=32768,
        head="cls.output",
        default_quant="Q8_0",
        quants=_quants(f16=8_051),
        aliases=_reranker_aliases("4B", "Voodisss/Qwen3-Reranker-4B-GGUF-llama_cpp"),
    ),
    RerankerModel(
        size="8B",
        repo_id="Voodisss/Qwen3-Reranker-8B-GGUF-llama_cpp",
        layers=36,
        hidden=4096,
        context_length=32768,
        head="cls.output",
        default_quant="Q8_0",
        quants=_quants(f16=15_136),
        aliases=_reranker_aliases("8B", "Voodisss/Qwen3-Reranker-8B-GGUF-llama_cpp"),
    ),
)


def find_reranker(name: str) -> RerankerModel | None:
    """The reranker catalog entry for a size, alias or repo id (case-insensitive), or ``None``."""
    key = name.strip().lower()
    for model in RERANKER_CATALOG:
        if key in (alias.lower() for alias in model.aliases):
            return model
    return None


def lookup_reranker_repo(name: str) -> tuple[str, RerankerModel | None]:
    """``(repo_id, entry)`` for a reranker size or alias, or any ``owner/name`` repo id.

    Raises:
        UnknownModelError: ``name`` is neither; the message lists the reranker catalog.
    """
    model = find_reranker(name)
    if model is not None:
        return model.repo_id, model
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name.strip()):
        return name.strip(), None
    sizes = ", ".join(f"{m.size!r} ({m.repo_id})" for m in RERANKER_CATALOG)
    raise UnknownModelError(
        f"Unknown reranker {name!r}. Use a size from the reranker catalog: {sizes}; "
        "or any Hugging Face repo id holding Qwen3-Reranker GGUF files ('owner/name'); or a local .gguf path."
    )
