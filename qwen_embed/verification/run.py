"""``verify``: run the probe set through a GGUF file and through the official recipe, and compare.

One model is in memory at a time: the GGUF file runs first (token ids, vectors or scores, the
head), is closed, and only then is the reference checkpoint loaded.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..embedder import Embedder
from ..engines.gguf_info import POOLING_NAMES, GGUFInfo, read_gguf_info
from ..errors import ConfigurationError, ModelNotFoundError
from ..reranker import Reranker
from .checks import (
    eos_findings,
    file_flag,
    first_difference,
    head_findings,
    measure_findings,
    pooling_check,
    reranker_flags,
    sorted_findings,
    token_findings,
    top_k_agreement,
    top_k_findings,
)
from .options import VerifyOptions, threshold_for
from .probes import ProbeSet, load_probes
from .reference import EOS_TEXT, ReferenceEmbedder, ReferenceReranker, check_checkpoint
from .report import EosCheck, HeadCheck, ProbeResult, VerifyReport

__all__ = ["guess_reference", "verify"]

logger = logging.getLogger(__name__)

_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
_SIZE = re.compile(r"(?i)(?:^|[^0-9.])(0\.6|4|8)b(?![a-z0-9])")
_CLS_OUT = "cls.output.weight"


def verify(
    model: str | os.PathLike[str],
    reference: str | os.PathLike[str] | None = None,
    options: VerifyOptions | None = None,
) -> VerifyReport:
    """Check a GGUF file against the official Transformers recipe on the built-in probe set.

    >>> report = verify("Qwen3-Embedding-0.6B-Q8_0.gguf", "Qwen/Qwen3-Embedding-0.6B")  # doctest: +SKIP
    >>> report.passed, report.verdict                                                    # doctest: +SKIP
    (True, 'PASS: min cosine 0.9996...; min cosine >= 0.999 (Q8_0)')

    Args:
        model: A local ``.gguf`` file, or a catalog name or repo id fetched through the downloader
            (``"0.6B"``, ``"qwen3-reranker-0.6b"``).
        reference: The checkpoint the file was converted from: a local Transformers folder or a Hub
            repo id (fetched with the downloader's timeouts). Default: the official repository the
            name or the file's metadata points to (``Qwen/Qwen3-Embedding-0.6B`` for a 0.6B embedding file).
        options: Kind, Hub and engine options (:class:`VerifyOptions`).

    Returns:
        The :class:`VerifyReport`; ``report.passed`` is the verdict.

    Raises:
        ConfigurationError: No reference given and none can be told from the name or the file.
        ModelNotFoundError: The file or the reference folder does not exist.
        MissingExtraError: PyTorch or Transformers is missing (``pip install "qwen-embed[parity]"``).
        HubError: A download failed (its subclasses say why).
    """
    options = VerifyOptions() if options is None else options
    if not isinstance(options, VerifyOptions):
        raise ConfigurationError(f"options must be a VerifyOptions, not {type(options).__name__}")
    probes = load_probes()
    loaded = _open(model, options)
    try:
        folder, reference_name = _reference_folder(reference, loaded, model, options)
        if isinstance(loaded, Reranker):
            return _verify_reranker(loaded, folder, reference_name, probes, options)
        return _verify_embedding(loaded, folder, reference_name, probes, options)
    finally:
        loaded.close()


# ----------------------------------------------------------------------------- the two models


def _open(model: str | os.PathLike[str], options: VerifyOptions) -> Embedder | Reranker:
    """The GGUF model, loaded: a local file (its kind read from the file) or a name fetched from the Hub."""
    engine: dict[str, Any] = {"n_threads": options.n_threads, "show_progress": False, "backend": options.backend}
    if options.backend == "torch":
        engine["dtype"] = "float32"  # the engine's own rounding must not count against the file
    local = Path(os.path.expanduser(os.fspath(model)))
    if local.is_file():
        info = read_gguf_info(local)
        kind = options.kind if options.kind != "auto" else _kind_of(info)
        return Reranker(local, **engine) if kind == "reranker" else Embedder(local, **engine)
    name = os.fspath(model)
    if name.lower().endswith(".gguf") or (os.sep in name and not _REPO_ID.fullmatch(name)):
        raise ModelNotFoundError(f"{name} does not exist; pass a .gguf file, a catalog name or a repo id.")
    kind = options.kind if options.kind != "auto" else ("reranker" if "rerank" in name.lower() else "embedding")
    cls = Reranker if kind == "reranker" else Embedder
    return cls.from_pretrained(name, quant=options.quant, hub=options.hub, **engine)


def _kind_of(info: GGUFInfo) -> str:
    """``"reranker"`` when the file says so (RANK pooling, a classifier head or labels, its name); else an embedding."""
    if info.pooling_type is not None and POOLING_NAMES.get(info.pooling_type) == "rank":
        return "reranker"
    if any(t.name == _CLS_OUT for t in info.tensors) or info.arch_value("classifier.output_labels") is not None:
        return "reranker"
    names = (info.name or "", str(info.metadata.get("general.basename") or ""), info.path.name)
    return "reranker" if any("rerank" in n.lower() for n in names) else "embedding"


def guess_reference(kind: str, hints: list[str]) -> str | None:
    """The official checkpoint a name or file points to (``Qwen/Qwen3-Embedding-0.6B``), or ``None``.

    A hint counts when it is a bare size (``"0.6B"``) or names Qwen3 and a size of the family.
    """
    family = "Reranker" if kind == "reranker" else "Embedding"
    for hint in hints:
        text = hint.strip()
        match = _SIZE.search(text)
        if match and (text.lower() in ("0.6b", "4b", "8b") or "qwen3" in text.lower()):
            return f"Qwen/Qwen3-{family}-{match.group(1)}B"
    return None


def _reference_folder(
    reference: str | os.PathLike[str] | None,
    loaded: Embedder | Reranker,
    model: str | os.PathLike[str],
    options: VerifyOptions,
) -> tuple[Path, str]:
    """``(folder, name)`` of the reference checkpoint, fetched now (before any compute) if it is a repo id."""
    kind = "reranker" if isinstance(loaded, Reranker) else "embedding"
    if reference is None:
        meta = loaded.metadata
        basename = str(meta.get("general.basename") or "")
        size = str(meta.get("general.size_label") or "")
        hints = [
            *([] if Path(os.fspath(model)).is_file() else [os.fspath(model)]),
            f"{basename}-{size}" if basename and size else "",
            str(meta.get("general.name") or ""),
            loaded.model_path.name,
        ]
        guessed = guess_reference(kind, [h for h in hints if h])
        if guessed is None:
            raise ConfigurationError(
                f"Cannot tell which official checkpoint {loaded.model_path.name} was converted from (its name and "
                f"metadata name no Qwen3 size); pass the reference: a Transformers folder or a Hub repo id such as "
                f"Qwen/Qwen3-{'Reranker' if kind == 'reranker' else 'Embedding'}-0.6B."
            )
        reference = guessed
    text = os.fspath(reference)
    local = Path(os.path.expanduser(text))
    if local.exists() or not _REPO_ID.fullmatch(text):
        return check_checkpoint(local), str(local)
    from ..hub.checkpoint import fetch_checkpoint

    folder = fetch_checkpoint(text, hub=replace(options.hub, revision=options.reference_revision))
    return check_checkpoint(folder), f"{text}@{options.reference_revision or 'main'}"


# ----------------------------------------------------------------------------- embedding models


@dataclass
class _EmbeddingRun:
    """What the GGUF side measured (kept while its model is freed and the reference loads)."""

    tokens: list[list[int]]
    vectors: np.ndarray  # float64, unit rows: queries first, then documents
    kinds: list[str]
    ids: list[str]
    texts: list[str]  # the user texts (queries unformatted)


def _verify_embedding(
    emb: Embedder, folder: Path, reference_name: str, probes: ProbeSet, options: VerifyOptions
) -> VerifyReport:
    queries, documents = list(probes.queries), list(probes.documents)
    info = read_gguf_info(emb.model_path)
    file_type, engine, eos_id = emb.quantization, emb.engine, emb.eos_token_id
    query_format = emb.format("{text}", prompt_name="query")
    pooling, model_path = emb.pooling, emb.model_path
    run = _EmbeddingRun(
        tokens=[emb.tokenize(q.text, prompt_name="query").tolist() for q in queries]
        + [emb.tokenize(d.text).tolist() for d in documents],
        vectors=_unit(
            np.concatenate(
                [emb.encode_queries([q.text for q in queries]), emb.encode_documents([d.text for d in documents])]
            )
        ),
        kinds=["query"] * len(queries) + ["document"] * len(documents),
        ids=[q.id for q in queries] + [d.id for d in documents],
        texts=[q.text for q in queries] + [d.text for d in documents],
    )
    emb.close()  # one model in memory at a time
    gc.collect()
    logger.info("%s: %d probe texts done on %s; loading the reference %s", model_path.name, len(run.ids), engine,
                folder)  # fmt: skip

    ref = ReferenceEmbedder(folder, n_threads=options.n_threads)
    try:
        ref_tokens = [ref.tokenize(ref.query(probes.task, q.text)) for q in queries]
        ref_tokens += [ref.tokenize(d.text) for d in documents]
        look_alikes = [ref.parses_control(text) for text in run.texts]
        found_tokens = token_findings(run.ids, run.tokens, ref_tokens, look_alikes, ref.token_text)
        eos = EosCheck(
            reference_id=ref.eos_id,
            reference_token=ref.token_text(ref.eos_id),
            reference_by_tokenizer=ref.appends_eos,
            library_id=eos_id,
            file_add_eos=info.add_eos_token,
            file_eos_id=info.eos_token_id,
            file_add_bos=file_flag(info, "tokenizer.ggml.add_bos_token"),
        )
        found_eos = eos_findings(eos, info, ref.token_text)
        ref_vectors = ref.encode(ref_tokens)
        recipe = f"official Qwen3-Embedding recipe, {ref.description}"
    finally:
        ref.close()
        del ref
        gc.collect()

    cosines = np.einsum("ij,ij->i", run.vectors, ref_vectors)
    results = tuple(
        ProbeResult(
            id=run.ids[i],
            kind=run.kinds[i],
            n_tokens=len(run.tokens[i]),
            tokens_identical=run.tokens[i] == ref_tokens[i],
            first_difference=first_difference(run.tokens[i], ref_tokens[i]),
            cosine=float(cosines[i]),
            look_alike=look_alikes[i],
        )
        for i in range(len(run.ids))
    )
    n_q = len(queries)
    top_k = top_k_agreement(
        run.vectors[:n_q] @ run.vectors[n_q:].T,
        ref_vectors[:n_q] @ ref_vectors[n_q:].T,
        [[documents.index(probes.document(r)) for r in q.relevant] for q in queries],
        options.top_k,
    )
    threshold = threshold_for(file_type, "embedding")
    worst = float(cosines.min())
    pooling_text, pooling_findings = pooling_check(pooling, info)
    findings = [
        *found_tokens,
        *found_eos,
        *pooling_findings,
        *measure_findings("vectors", results, worst, threshold),
        *top_k_findings(top_k),
    ]
    eos_text = f" + {EOS_TEXT}"
    return VerifyReport(
        model=str(model_path),
        kind="embedding",
        file_type=file_type,
        engine=engine,
        reference=reference_name,
        reference_recipe=recipe,
        instruction_format=(
            f"queries {_quoted(query_format)}{eos_text}; documents {_quoted('{text}')}{eos_text} (no instruction)"
        ),
        instruction=probes.task,
        pooling=pooling_text,
        probe_set_version=probes.version,
        probes=results,
        top_k=top_k,
        threshold=threshold,
        worst=worst,
        eos=eos,
        findings=sorted_findings(findings),
        library=f"qwen_embed {__version__}",
    )


# ----------------------------------------------------------------------------- rerankers


def _verify_reranker(
    rr: Reranker, folder: Path, reference_name: str, probes: ProbeSet, options: VerifyOptions
) -> VerifyReport:
    pairs = probes.pairs()
    info = read_gguf_info(rr.model_path)
    file_type, engine, head, model_path = rr.quantization, rr.engine, rr.head, rr.model_path
    pair_format = rr.format("{query}", "{document}")
    texts = [(q.text, d.text) for q, d in pairs]
    tokens = [rr.tokenize(q, d).tolist() for q, d in texts]
    odds = rr.predict(texts, raw=True).astype(np.float64)
    rr.close()  # one model in memory at a time
    gc.collect()
    logger.info("%s: %d probe pairs done on %s; loading the reference %s", model_path.name, len(pairs), engine, folder)

    ref = ReferenceReranker(folder, n_threads=options.n_threads)
    try:
        ref_tokens = [ref.tokenize(q, d, instruction=probes.task) for q, d in texts]
        look_alikes = [ref.parses_control(q) or ref.parses_control(d) for q, d in texts]
        ids = [f"{q.id}/{d.id}" for q, d in pairs]
        found_tokens = token_findings(ids, tokens, ref_tokens, look_alikes, ref.token_text)
        ref_head = ref.head()
        ref_odds = ref.log_odds(ref_tokens)
        recipe = f"official Qwen3-Reranker recipe, {ref.description}"
    finally:
        ref.close()
        del ref
        gc.collect()

    ours, theirs = _sigmoid(odds), _sigmoid(ref_odds)
    deltas = np.abs(ours - theirs)
    results = tuple(
        ProbeResult(
            id=ids[i],
            kind="pair",
            n_tokens=len(tokens[i]),
            tokens_identical=tokens[i] == ref_tokens[i],
            first_difference=first_difference(tokens[i], ref_tokens[i]),
            score=float(ours[i]),
            reference_score=float(theirs[i]),
            delta=float(deltas[i]),
            log_odds_delta=float(abs(odds[i] - ref_odds[i])),
            look_alike=look_alikes[i],
        )
        for i in range(len(pairs))
    )
    head_check = HeadCheck(
        tensor=head.tensor, labels=tuple(head.labels), rows=tuple(head.rows), cosine=_cosine(head.weight, ref_head)
    )
    # Per query: its candidates ranked by score, as index lists over the candidates.
    starts = np.cumsum([0] + [len(q.candidates) for q in probes.queries])
    top_k = top_k_agreement(
        [ours[starts[i] : starts[i + 1]] for i in range(len(probes.queries))],
        [theirs[starts[i] : starts[i + 1]] for i in range(len(probes.queries))],
        [[q.candidates.index(r) for r in q.relevant] for q in probes.queries],
        options.top_k,
    )
    threshold = threshold_for(file_type, "reranker")
    worst = float(deltas.max())
    declared = POOLING_NAMES.get(info.pooling_type, "unknown") if info.pooling_type is not None else "none"
    findings = [
        *found_tokens,
        *reranker_flags(info),
        *head_findings(head_check),
        *measure_findings("scores", results, worst, threshold),
        *top_k_findings(top_k),
    ]
    return VerifyReport(
        model=str(model_path),
        kind="reranker",
        file_type=file_type,
        engine=engine,
        reference=reference_name,
        reference_recipe=recipe,
        instruction_format=f"pairs {_quoted(pair_format)}",
        instruction=probes.task,
        pooling=f"last token, scored along w_yes - w_no; the file declares {declared.upper()}",
        probe_set_version=probes.version,
        probes=results,
        top_k=top_k,
        threshold=threshold,
        worst=worst,
        head=head_check,
        findings=sorted_findings(findings),
        library=f"qwen_embed {__version__}",
    )


# ----------------------------------------------------------------------------- numbers


def _unit(vectors: np.ndarray) -> np.ndarray:
    out = np.asarray(vectors, dtype=np.float64)
    unit: np.ndarray = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    return unit


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), np.finfo(np.float64).tiny))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))
    return out


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
