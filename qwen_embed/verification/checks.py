"""The checks behind a verify report: each turns what was measured into :class:`~.report.Finding` entries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..engines.gguf_info import POOLING_NAMES, GGUFInfo
from .options import Threshold
from .report import EosCheck, Finding, HeadCheck, ProbeResult, TopKCheck

__all__ = [
    "eos_findings",
    "file_flag",
    "first_difference",
    "head_findings",
    "measure_findings",
    "pooling_check",
    "reranker_flags",
    "sorted_findings",
    "token_findings",
    "top_k_agreement",
    "top_k_findings",
]

TokenText = Callable[[int], str]


def pooling_check(pooling: str, info: GGUFInfo) -> tuple[str, list[Finding]]:
    """The pooling in words, and an error when the file declares anything but LAST (a warning for none).

    Args:
        pooling: What the Embedder pooled with (``"last"`` or ``"mean"``; it follows the file).
        info: The file's header.
    """
    declared = (
        POOLING_NAMES.get(info.pooling_type, f"unknown ({info.pooling_type})")
        if info.pooling_type is not None
        else None
    )
    used = "last token (the EOS)" if pooling == "last" else f"{pooling}"
    text = f"{used}; the file declares {declared.upper() if declared else 'none'}"
    if declared in (None, "none"):
        return text, [
            Finding(
                "pooling",
                "warning",
                "The file declares no pooling type: this library pools the last token as the official recipe does, "
                "but llama-server and Ollama need --pooling last (or a file with qwen3.pooling_type = 3).",
            )
        ]
    if declared != "last" or pooling != "last":
        return text, [
            Finding(
                "pooling",
                "error",
                f"The file declares {declared.upper()} pooling; the official recipe pools the last token (the EOS). "
                "This library and llama.cpp follow the file, so the vectors differ. Re-convert the checkpoint, or set "
                "qwen3.pooling_type to 3 (LAST); Embedder(pooling='last') overrides it meanwhile.",
            )
        ]
    return text, []


def eos_findings(eos: EosCheck, info: GGUFInfo, token_text: TokenText) -> list[Finding]:
    """Errors when the library's EOS, or the one llama.cpp adds by the file's own flags, is not the reference's.

    A file without ``add_eos_token`` fails although this library appends the EOS anyway: tools that
    follow the file embed without it.
    """
    findings = []
    reference = f"{eos.reference_token} ({eos.reference_id})"
    if not eos.reference_by_tokenizer:
        findings.append(
            Finding(
                "eos",
                "note",
                f"The reference tokenizer does not append {reference} itself (an early revision of the checkpoint); "
                "the recipe appended it, as the README's first version did.",
            )
        )
    if eos.library_id != eos.reference_id:
        findings.append(
            Finding(
                "eos",
                "error",
                f"This library ends every text with {token_text(eos.library_id)} ({eos.library_id}), the official "
                f"recipe with {reference}: the vocabularies disagree on the EOS.",
            )
        )
    if eos.file_add_eos is not True:
        state = "false" if eos.file_add_eos is False else "absent"
        findings.append(
            Finding(
                "eos",
                "error",
                f"The file does not ask for an EOS (tokenizer.ggml.add_eos_token is {state}): llama.cpp and the tools "
                f"built on it (llama-server, Ollama, LM Studio) embed this file without {eos.reference_token}, so "
                "their vectors differ from the official ones. This library appends it anyway (the vectors measured "
                "here). Re-convert with a current llama.cpp convert_hf_to_gguf.py (ggml-org/llama.cpp#14314).",
            )
        )
    elif eos.file_eos_id != eos.reference_id:
        wrong = token_text(eos.file_eos_id) if eos.file_eos_id is not None else "no token"
        findings.append(
            Finding(
                "eos",
                "error",
                f"The file's EOS is {wrong} ({eos.file_eos_id}): llama.cpp appends it where the official recipe "
                f"appends {reference}. This library appends {reference}; other runtimes get different vectors. "
                "Fix tokenizer.ggml.eos_token_id, or re-convert.",
            )
        )
    if eos.file_add_bos:
        bos = info.metadata.get("tokenizer.ggml.bos_token_id")
        findings.append(
            Finding(
                "eos",
                "error",
                f"The file asks llama.cpp to prepend a BOS token ({bos}); the official recipe prepends nothing. "
                "Set tokenizer.ggml.add_bos_token to false, or re-convert.",
            )
        )
    return findings


def reranker_flags(info: GGUFInfo) -> list[Finding]:
    """A reranker's prompt ends with the assistant's empty think block: a BOS or EOS llama.cpp adds is a stray token."""
    added = [name for name in ("bos", "eos") if file_flag(info, f"tokenizer.ggml.add_{name}_token")]
    if not added:
        return []
    return [
        Finding(
            "file",
            "warning",
            f"The file asks llama.cpp to add {' and '.join(t.upper() for t in added)} around every text "
            f"(tokenizer.ggml.add_{added[0]}_token = true); the official reranker prompt has neither. This library "
            "adds none; tools that follow the file (llama-server's /v1/rerank) score a different prompt.",
        )
    ]


def head_findings(head: HeadCheck) -> list[Finding]:
    """An error when the file's ``w_yes - w_no`` is not the reference's direction (swapped labels give -1)."""
    labels = f" (labels {list(head.labels)})" if head.labels else ""
    if head.cosine < -0.5:
        return [
            Finding(
                "head",
                "error",
                f"The file's yes/no head points the opposite way to the reference's (cosine {head.cosine:.4f}): "
                f"{head.tensor}{labels} names its rows the wrong way round, so every score comes out as 1 - p. "
                "Fix qwen3.classifier.output_labels (the row order is yes, no), or re-convert.",
            )
        ]
    if head.cosine < 0.5:
        return [
            Finding(
                "head",
                "error",
                f"The file's yes/no head is not the reference's (cosine {head.cosine:.4f}): {head.tensor}{labels} "
                "holds other rows. Re-convert the checkpoint in reranker mode.",
            )
        ]
    return []


def token_findings(
    ids: list[str], ours: list[list[int]], theirs: list[list[int]], look_alikes: list[bool], token_text: TokenText
) -> list[Finding]:
    """An error naming the first differing token when any probe's ids differ; a note on control-token look-alikes.

    Args:
        ids: The probes' ids, in order.
        ours, theirs: The ids the GGUF path and the reference read for each probe.
        look_alikes: Whether each probe holds a look-alike the README's tokenizer call would parse.
        token_text: The reference tokenizer's name for a token id.
    """
    findings = []
    differing = [i for i in range(len(ids)) if ours[i] != theirs[i]]
    if differing:
        i = differing[0]
        at = first_difference(ours[i], theirs[i])
        assert at is not None
        mine = ours[i][at] if at < len(ours[i]) else None
        other = theirs[i][at] if at < len(theirs[i]) else None
        findings.append(
            Finding(
                "tokens",
                "error",
                f"{len(differing)}/{len(ids)} probes tokenize differently from the reference tokenizer; first "
                f"{ids[i]} at position {at}: the file gives {_token(mine, token_text)}, the reference "
                f"{_token(other, token_text)}. The file's vocabulary, merges or pre-tokenizer differ from the "
                "checkpoint's (or the prompt this library builds differs from the README's).",
            )
        )
    flagged = [ids[i] for i, flag in enumerate(look_alikes) if flag]
    if flagged:
        findings.append(
            Finding(
                "tokens",
                "note",
                f"{len(flagged)} probes hold control-token look-alikes ({', '.join(flagged[:4])}"
                f"{', ...' if len(flagged) > 4 else ''}): the Transformers tokenizer, called as the README calls it, "
                "reads a literal <|endoftext|> in user text as the control token; this library reads it as plain "
                "text, so a text cannot end itself early or forge a chat turn. Compared as plain text.",
            )
        )
    return findings


def measure_findings(check: str, results: tuple[ProbeResult, ...], worst: float, threshold: Threshold) -> list[Finding]:
    """An error when the worst cosine (``check="vectors"``) or score difference (``"scores"``) misses the mark;
    a note with the drop for a file type that has none."""
    if check == "vectors":
        where = min(results, key=lambda p: p.cosine if p.cosine is not None else 2.0).id
    else:
        where = max(results, key=lambda p: p.delta if p.delta is not None else -1.0).id
    value = f"{threshold.metric} {worst:.7g} (at {where})"
    if threshold.limit is None:
        drop = f", a drop of {1.0 - worst:.3g} from 1" if check == "vectors" else ""
        return [Finding(check, "note", f"{value}{drop}: {threshold.description}, never a failure.")]
    if threshold.passes(worst):
        return []
    tokens_ok = all(p.tokens_identical for p in results)
    why = (
        "The token ids are identical, so the weights or the computation differ (a bad conversion or quantization)."
        if tokens_ok
        else "The token ids differ too (see [tokens])."
    )
    missed = f"{value} misses the mark for {threshold.file_type} files ({threshold.description})."
    return [Finding(check, "error", f"{missed} {why}")]


def top_k_agreement(ours: Any, theirs: Any, relevant: list[list[int]], k: int) -> TopKCheck:
    """Compare each query's ranking both ways.

    Args:
        ours, theirs: One row of scores per query (over the documents, or over its candidates).
        relevant: The indices of each query's relevant documents in its row.
        k: The depth compared (cut to a row's length).
    """
    same_set = same_order = found = ref_found = 0
    n = len(relevant)
    depth = k
    for i in range(n):
        a, b = np.asarray(ours[i], dtype=np.float64), np.asarray(theirs[i], dtype=np.float64)
        depth = min(k, len(a))
        top_a = np.argsort(-a, kind="stable")[:depth].tolist()
        top_b = np.argsort(-b, kind="stable")[:depth].tolist()
        same_set += set(top_a) == set(top_b)
        same_order += top_a == top_b
        found += any(r in top_a for r in relevant[i])
        ref_found += any(r in top_b for r in relevant[i])
    return TopKCheck(k=k, queries=n, same_set=same_set, same_order=same_order, relevant_found=found,
                     reference_relevant_found=ref_found)  # fmt: skip


def top_k_findings(top_k: TopKCheck) -> list[Finding]:
    """A warning (never an error) when some query's top-k set differs: near-ties swap first."""
    if top_k.same_set == top_k.queries:
        return []
    return [
        Finding(
            "top_k",
            "warning",
            f"{top_k.queries - top_k.same_set}/{top_k.queries} probe queries rank a different top-{top_k.k} set than "
            "the reference (where the differences are small, near-ties swap first).",
        )
    ]


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two id lists differ (the shorter one's length if one is a prefix), else ``None``."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _token(token: int | None, token_text: TokenText) -> str:
    if token is None:
        return "the end of the text"
    try:
        return f"{token} ({token_text(token)!r})"
    except Exception:  # an id outside the reference vocabulary
        return str(token)


def file_flag(info: GGUFInfo, key: str) -> bool | None:
    """A boolean metadata key (``None`` when absent)."""
    value = info.metadata.get(key)
    return bool(value) if value is not None else None


def sorted_findings(findings: list[Finding]) -> tuple[Finding, ...]:
    """Errors first, then warnings, then notes (stable within each)."""
    order = {"error": 0, "warning": 1, "note": 2}
    return tuple(sorted(findings, key=lambda f: order[f.severity]))
