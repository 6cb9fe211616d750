"""What ``verify`` found: :class:`VerifyReport` (a verdict, the checks behind it, text and JSON forms)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .options import Threshold

__all__ = ["EosCheck", "Finding", "HeadCheck", "ProbeResult", "TopKCheck", "VerifyReport"]

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True)
class Finding:
    """One thing the checks found.

    Attributes:
        check: What was checked: ``"tokens"``, ``"eos"``, ``"pooling"``, ``"head"``, ``"vectors"``,
            ``"scores"``, ``"top_k"`` or ``"file"``.
        severity: ``"error"`` (the verdict is FAIL), ``"warning"`` or ``"note"``.
        message: What was found, what it means and what to do.
    """

    check: str
    severity: Severity
    message: str


@dataclass(frozen=True)
class ProbeResult:
    """One probe text (embedding) or (query, document) pair (reranker), measured both ways.

    Attributes:
        id: The probe's id; ``"query-id/document-id"`` for a pair.
        kind: ``"query"``, ``"document"`` or ``"pair"``.
        n_tokens: Tokens the GGUF path reads (prompt and EOS included).
        tokens_identical: Whether the ids equal the reference tokenizer's.
        first_difference: The first position where they differ (``None`` when identical).
        cosine: Cosine of the two vectors (embeddings).
        score, reference_score: ``p(yes)`` both ways (rerankers).
        delta: ``|score - reference_score|`` (rerankers).
        log_odds_delta: ``|Δ (l_yes - l_no)|`` (rerankers).
        look_alike: The text holds a control-token look-alike that the tokenizer, called as the
            README does, would read as a control token.
    """

    id: str
    kind: str
    n_tokens: int
    tokens_identical: bool
    first_difference: int | None = None
    cosine: float | None = None
    score: float | None = None
    reference_score: float | None = None
    delta: float | None = None
    log_odds_delta: float | None = None
    look_alike: bool = False


@dataclass(frozen=True)
class EosCheck:
    """The end-of-sequence token three ways: the reference, this library, and the file's own flags.

    Attributes:
        reference_id, reference_token: What the official recipe ends every text with.
        reference_by_tokenizer: Whether the reference tokenizer appends it itself (else the recipe does).
        library_id: What this library appends (always exactly one).
        file_add_eos: ``tokenizer.ggml.add_eos_token`` (``None``: absent, which llama.cpp reads as false).
        file_eos_id: ``tokenizer.ggml.eos_token_id``.
        file_add_bos: ``tokenizer.ggml.add_bos_token`` (absent reads as false too).
    """

    reference_id: int
    reference_token: str
    reference_by_tokenizer: bool
    library_id: int
    file_add_eos: bool | None
    file_eos_id: int | None
    file_add_bos: bool | None


@dataclass(frozen=True)
class HeadCheck:
    """The reranker's scoring head against the reference LM head's ``w_yes - w_no``.

    Attributes:
        tensor: Where the file's head was read (``cls.output.weight``, ``output.weight``, ``token_embd.weight``).
        labels: The classifier labels the file lists (``cls.output`` only).
        rows: The rows used, yes first.
        cosine: Cosine of the file's ``w_yes - w_no`` with the reference's: 1 when right, -1 when
            the labels are swapped.
    """

    tensor: str
    labels: tuple[str, ...]
    rows: tuple[int, ...]
    cosine: float


@dataclass(frozen=True)
class TopKCheck:
    """Agreement of the two rankings on the probe retrieval task.

    Attributes:
        k: Depth compared.
        queries: Queries ranked.
        same_set: Queries whose top-k sets are equal.
        same_order: Queries whose top-k lists are equal, in order.
        relevant_found: Queries whose relevant document is in the GGUF path's top-k.
        reference_relevant_found: The same for the reference.
    """

    k: int
    queries: int
    same_set: int
    same_order: int
    relevant_found: int
    reference_relevant_found: int


@dataclass(frozen=True)
class VerifyReport:
    """The result of :func:`~qwen_embed.verify`: ``report.passed``, ``print(report)``, ``report.to_json()``.

    Attributes:
        model: The GGUF file checked.
        kind: ``"embedding"`` or ``"reranker"``.
        file_type: Its weight type (``"Q8_0"``, ``"F16"``, ...).
        engine: The engine that ran it.
        reference: The reference checkpoint (a folder, and the repo id it came from if any).
        reference_recipe: The recipe in words.
        instruction_format: The exact text a query (embedding) or a pair (reranker) becomes.
        instruction: The task instruction the probes were asked under.
        pooling: What the library pooled, and what the file declares.
        probe_set_version: The version of the built-in probe set.
        probes: One result per probe text or pair.
        eos: The EOS check (embeddings).
        head: The head check (rerankers).
        top_k: The retrieval agreement.
        threshold: The pass mark for this file type.
        worst: The worst per-probe value (min cosine, or max |Δ score|).
        findings: Everything found, errors first.
        library: This library's name and version.
    """

    model: str
    kind: str
    file_type: str
    engine: str
    reference: str
    reference_recipe: str
    instruction_format: str
    instruction: str
    pooling: str
    probe_set_version: int
    probes: tuple[ProbeResult, ...]
    top_k: TopKCheck
    threshold: Threshold
    worst: float
    eos: EosCheck | None = None
    head: HeadCheck | None = None
    findings: tuple[Finding, ...] = field(default=())
    library: str = ""

    @property
    def passed(self) -> bool:
        """No error: identical tokens, consistent EOS, pooling and head, and within the file type's mark."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def exit_code(self) -> int:
        """0 when it passed, 1 when it failed (what ``qwen-embed verify`` exits with)."""
        return 0 if self.passed else 1

    @property
    def tokens_identical(self) -> int:
        """How many probes have ids identical to the reference tokenizer's."""
        return sum(p.tokens_identical for p in self.probes)

    @property
    def verdict(self) -> str:
        """One line: PASS, or FAIL with the checks that failed; the worst value and the file type's mark.

        ``"PASS: min cosine 0.99961; min cosine >= 0.999 (Q8_0)"``,
        ``"FAIL (tokens, vectors): min cosine 0.71864; min cosine >= 0.9999 (F32)"``.
        """
        measured = f"{self.threshold.metric} {_number(self.worst)}"
        if self.threshold.limit is None and self.kind == "embedding":
            measured += f" (drop {_number(1.0 - self.worst)} from 1)"
        if self.passed:
            return f"PASS: {measured}; {self.threshold.description}"
        failed = dict.fromkeys(f.check for f in self.findings if f.severity == "error")
        return f"FAIL ({', '.join(failed)}): {measured}; {self.threshold.description}"

    def to_dict(self) -> dict[str, Any]:
        """Everything, as JSON-ready values (``passed``, ``verdict`` and ``exit_code`` included)."""
        data = asdict(self)
        data["threshold"] = {**asdict(self.threshold), "description": self.threshold.description}
        data.update(passed=self.passed, exit_code=self.exit_code, verdict=self.verdict)
        finite: dict[str, Any] = _finite(data)
        return finite

    def to_json(self, *, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON (UTF-8 text kept as is)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    def format(self, *, details: bool = False) -> str:
        """The report as text; ``details`` adds a line per probe."""
        n, unit = len(self.probes), "pairs" if self.kind == "reranker" else "texts"
        lines = [
            f"model:       {self.model} ({self.kind}, {self.file_type}, {self.engine})",
            f"reference:   {self.reference} ({self.reference_recipe})",
            f"format:      {self.instruction_format}",
            f"probes:      built-in set v{self.probe_set_version}, {n} {unit}",
            f"tokens:      {self.tokens_identical}/{n} identical to the reference tokenizer",
        ]
        look_alikes = sum(p.look_alike for p in self.probes)
        if look_alikes:
            lines[-1] += f" ({look_alikes} with control-token look-alikes, read as plain text)"
        if self.eos is not None:
            e = self.eos
            flag = {None: "absent", True: "true", False: "false"}[e.file_add_eos]
            lines.append(
                f"EOS:         reference ends with {e.reference_token} ({e.reference_id}"
                f"{'' if e.reference_by_tokenizer else ', appended by the recipe'}); this library appends "
                f"{e.library_id}; the file: add_eos_token={flag}, eos_token_id={e.file_eos_id}"
            )
        lines.append(f"pooling:     {self.pooling}")
        if self.head is not None:
            h = self.head
            labels = f" labels {list(h.labels)}" if h.labels else ""
            lines.append(
                f"head:        {h.tensor} rows {list(h.rows)}{labels}; cosine to the reference's yes-no "
                f"direction {_number(h.cosine)}"
            )
        if self.kind == "reranker":
            deltas = [p.delta for p in self.probes if p.delta is not None]
            lines.append(f"scores:      max |Δ score| {_number(max(deltas, default=0.0))}, "
                         f"median {_number(_median(deltas))}")  # fmt: skip
        else:
            cosines = [p.cosine for p in self.probes if p.cosine is not None]
            worst = min(self.probes, key=lambda p: p.cosine if p.cosine is not None else 2.0)
            lines.append(
                f"vectors:     min cosine {_number(min(cosines, default=1.0))} ({worst.id}), "
                f"median {_number(_median(cosines))}"
            )
        t = self.top_k
        lines.append(
            f"top-{t.k}:       {t.same_set}/{t.queries} queries with the same top-{t.k} set, {t.same_order}/{t.queries}"
            f" in the same order; relevant found {t.relevant_found}/{t.queries} (reference "
            f"{t.reference_relevant_found})"
        )
        if details:
            lines.append("per probe:")
            for p in self.probes:
                value = (
                    f"cosine {_number(p.cosine)}"
                    if p.cosine is not None
                    else f"score {_number(p.score)} vs {_number(p.reference_score)} (Δ {_number(p.delta)})"
                )
                tokens = "tokens ok" if p.tokens_identical else f"tokens differ at {p.first_difference}"
                lines.append(f"  {p.id:<36} {p.n_tokens:>5} tok  {tokens:<22} {value}")
        if self.findings:
            lines.append("findings:")
            lines.extend(f"  {f.severity:<7} [{f.check}] {f.message}" for f in self.findings)
        lines.append(f"VERDICT: {self.verdict}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return str(value)
    return f"{value:.7g}"


def _median(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _finite(value: Any) -> Any:
    """NaN and infinities as ``None`` (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
