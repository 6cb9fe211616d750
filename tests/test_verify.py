"""``qwen-embed verify``: good conversions pass, broken ones fail, offline.

Random Qwen3 checkpoints (an embedding model and a reranker, with a vocabulary trained here,
never ``../shared``) are converted by llama.cpp's own ``convert_hf_to_gguf.py`` (the parity
harness); the good files are the converter's F32 output and a Q8_0 quantization of it. Each
broken file is the good one with one metadata key rewritten by ``gguf``: reversed BPE merges (a
tokenizer swap), no ``add_eos_token`` (an early conversion), MEAN pooling, and a reranker whose
classifier labels are swapped. The fast tests at the end need no converter.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwen_embed import ConfigurationError, GGUFInfo, HubOptions, ModelNotFoundError, NotCachedError
from qwen_embed.integrations import MissingExtraError
from qwen_embed.interfaces.cli import main
from qwen_embed.testing import quantize_model, train_vocabulary
from qwen_embed.verification import (
    EosCheck,
    Finding,
    ProbeResult,
    Threshold,
    TopKCheck,
    VerifyOptions,
    VerifyReport,
    guess_reference,
    load_probes,
    threshold_for,
    verify,
)
from qwen_embed.verification.checks import eos_findings, pooling_check

from .hub_server import HubServer

CACHE = Path.home() / ".cache" / "qwen_embed" / "parity"
SHAPE = {  # Q8_0 needs rows that are multiples of 32; small enough that a verify run takes seconds
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
}
RUN = VerifyOptions(backend="llama", n_threads=2)


# ----------------------------------------------------------------------------- files


def rewrite(src: Path, dst: Path, *, changes: dict[str, Any] | None = None, remove: tuple[str, ...] = ()) -> Path:
    """A copy of ``src`` with metadata values replaced (same key, same type) or keys removed; tensors as they are."""
    import gguf

    changes = dict(changes or {})
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(str(dst), reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF.") or field.name in remove:
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, changes.pop(field.name, field.contents()), kind, sub_type=sub)
    assert not changes, f"not in {src.name}: {sorted(changes)}"
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data)
    writer.close()
    return dst


def _last_token_pooling(checkpoint: Path) -> None:
    """The sentence-transformers files the official Qwen3-Embedding repos have (the converter reads LAST pooling)."""
    (checkpoint / "modules.json").write_text(
        json.dumps([{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]),
        encoding="utf-8",
    )
    (checkpoint / "1_Pooling").mkdir(exist_ok=True)
    (checkpoint / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": SHAPE["hidden_size"], "pooling_mode_lasttoken": True}), encoding="utf-8"
    )


@dataclass
class Files:
    checkpoint: Path
    gguf: dict[str, Path]


@pytest.fixture(scope="module")
def embedding(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Files]:
    from .parity_support import convert, llama_cpp_source, make_hf_checkpoint

    root = tmp_path_factory.mktemp("verify_embedding")
    vocab = train_vocabulary()
    checkpoint = make_hf_checkpoint(root / "Qwen3-Embedding-hf", vocab, shape=SHAPE)
    _last_token_pooling(checkpoint)
    f32 = convert(llama_cpp_source(CACHE), checkpoint, root / "emb-f32.gguf", outtype="f32", real_vocab=False)
    merges = list(reversed(vocab.merges))
    files = {
        "f32": f32,
        "Q8_0": quantize_model(f32, root / "emb-Q8_0.gguf", "Q8_0"),
        "tokenizer": rewrite(f32, root / "emb-swapped-merges.gguf", changes={"tokenizer.ggml.merges": merges}),
        "eos": rewrite(f32, root / "emb-no-eos.gguf", remove=("tokenizer.ggml.add_eos_token",)),
        "pooling": rewrite(f32, root / "emb-mean.gguf", changes={"qwen3.pooling_type": 1}),
    }
    yield Files(checkpoint, files)


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Files]:
    from .parity_support import convert, llama_cpp_source
    from .reranker_support import make_causal_lm_checkpoint, reranker_vocabulary

    root = tmp_path_factory.mktemp("verify_reranker")
    checkpoint = make_causal_lm_checkpoint(root / "checkpoint", reranker_vocabulary(None), tied=True, seed=11)
    named = root / "qwen3-reranker-tiny"  # the converter detects a reranker by the folder name
    named.symlink_to(checkpoint, target_is_directory=True)
    f32 = convert(llama_cpp_source(CACHE), named, root / "rerank-f32.gguf", outtype="f32", real_vocab=False)
    swapped = rewrite(
        f32, root / "rerank-swapped-labels.gguf", changes={"qwen3.classifier.output_labels": ["no", "yes"]}
    )
    yield Files(checkpoint, {"f32": f32, "labels": swapped})


@pytest.fixture(scope="module")
def good_reranker(reranker: Files) -> VerifyReport:
    return verify(reranker.gguf["f32"], reranker.checkpoint, VerifyOptions(n_threads=2))


def _errors(report: VerifyReport) -> dict[str, str]:
    return {f.check: f.message for f in report.findings if f.severity == "error"}


# ----------------------------------------------------------------------------- embedding models


@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["f32", "Q8_0"])
def test_good_embedding_files_pass(embedding: Files, kind: str) -> None:
    report = verify(embedding.gguf[kind], embedding.checkpoint, RUN)
    assert report.passed and report.exit_code == 0, report.format()
    assert report.tokens_identical == len(report.probes) == 30
    assert report.threshold == Threshold(kind.upper(), "min cosine", 0.9999 if kind == "f32" else 0.999)
    assert report.worst >= report.threshold.limit  # type: ignore[operator]
    assert report.eos is not None and report.eos.file_add_eos is True
    assert report.eos.library_id == report.eos.reference_id == report.eos.file_eos_id
    assert report.pooling == "last token (the EOS); the file declares LAST"
    assert '"Instruct: Given a web search query, retrieve relevant passages that answer the query\\nQuery:{text}"' in (
        report.instruction_format
    )
    assert {f.check for f in report.findings if f.severity != "note"} <= {"top_k"}  # near-ties may swap in Q8_0
    long = next(p for p in report.probes if p.id == "d-long")
    assert long.n_tokens > 1024 and long.tokens_identical  # decoded alone, across llama.cpp's micro-batches
    assert report.verdict.startswith("PASS: min cosine 0.999")


@pytest.mark.parity
@pytest.mark.slow
def test_the_torch_engine_passes_too(embedding: Files) -> None:
    report = verify(embedding.gguf["f32"], embedding.checkpoint, replace(RUN, backend="torch"))
    assert report.passed and report.engine == "torch float32" and report.worst >= 0.9999, report.format()


@pytest.mark.parity
@pytest.mark.slow
def test_a_swapped_tokenizer_fails(embedding: Files) -> None:
    report = verify(embedding.gguf["tokenizer"], embedding.checkpoint, RUN)
    assert not report.passed and report.exit_code == 1
    errors = _errors(report)
    assert "probes tokenize differently from the reference tokenizer" in errors["tokens"]
    assert "vocabulary, merges or pre-tokenizer" in errors["tokens"]
    assert report.tokens_identical < len(report.probes) // 2
    assert report.verdict.startswith("FAIL (tokens, vectors): min cosine 0.")


@pytest.mark.parity
@pytest.mark.slow
def test_a_file_without_add_eos_fails_though_this_library_appends_it(embedding: Files) -> None:
    report = verify(embedding.gguf["eos"], embedding.checkpoint, RUN)
    assert not report.passed
    assert set(_errors(report)) == {"eos"}  # the library's own tokens and vectors are right ...
    assert report.tokens_identical == len(report.probes) and report.worst >= 0.9999
    assert "tokenizer.ggml.add_eos_token is absent" in _errors(report)["eos"]  # ... the file is not
    assert "llama-server" in _errors(report)["eos"]
    assert report.eos is not None and report.eos.file_add_eos is None


@pytest.mark.parity
@pytest.mark.slow
def test_mean_pooling_fails(embedding: Files) -> None:
    report = verify(embedding.gguf["pooling"], embedding.checkpoint, RUN)
    errors = _errors(report)
    assert set(errors) == {"pooling", "vectors"}
    assert "declares MEAN pooling" in errors["pooling"]
    assert "The token ids are identical, so the weights or the computation differ" in errors["vectors"]
    assert report.worst < 0.99 and report.pooling == "mean; the file declares MEAN"


@pytest.mark.parity
@pytest.mark.slow
def test_the_recipe_is_the_harness_recipe(embedding: Files) -> None:
    """The packaged reference computes what the parity harness computes; the README call reads look-alikes as
    control tokens where the packaged one (like this library) does not."""
    from qwen_embed.verification.reference import ReferenceEmbedder

    from .parity_support import OfficialRecipe

    probes = load_probes()
    texts = [d.text for d in probes.documents if "look-alike" not in d.tags]
    task, query = probes.task, probes.queries[0].text
    ours = ReferenceEmbedder(embedding.checkpoint, n_threads=2)
    try:
        vectors = ours.encode([ours.tokenize(t) for t in texts] + [ours.tokenize(ours.query(task, query))])
        look_alike = probes.document("d-look-alikes").text
        plain = ours.encode([ours.tokenize(look_alike)])[0]
        assert ours.parses_control(look_alike) and not ours.parses_control(texts[0])
    finally:
        ours.close()
    harness = OfficialRecipe(embedding.checkpoint)
    expected = harness.encode([*texts, harness.detailed_instruct(task, query)])
    assert np.einsum("ij,ij->i", vectors, expected).min() > 0.999999
    assert float(plain @ harness.encode([look_alike])[0]) < 0.99


# ----------------------------------------------------------------------------- rerankers


@pytest.mark.parity
@pytest.mark.slow
def test_a_good_reranker_passes(good_reranker: VerifyReport) -> None:
    report = good_reranker
    assert report.kind == "reranker" and report.passed, report.format()
    assert report.tokens_identical == len(report.probes) == len(load_probes().pairs())
    assert report.head is not None and report.head.cosine > 0.99999 and report.head.labels == ("yes", "no")
    assert report.worst <= 0.005 and report.threshold.metric == "max |Δ score|"
    assert report.instruction_format.startswith('pairs "<|im_start|>system\\nJudge whether the Document')
    assert report.top_k.same_order == report.top_k.queries


@pytest.mark.parity
@pytest.mark.slow
def test_swapped_head_labels_fail(reranker: Files, good_reranker: VerifyReport) -> None:
    report = verify(reranker.gguf["labels"], reranker.checkpoint, VerifyOptions(n_threads=2))
    errors = _errors(report)
    assert set(errors) == {"head", "scores"}
    assert "names its rows the wrong way round" in errors["head"] and "['no', 'yes']" in errors["head"]
    assert report.head is not None and report.head.cosine < -0.99999
    scores = np.array([p.score for p in report.probes])
    assert np.allclose(scores, 1.0 - np.array([p.score for p in good_reranker.probes]), atol=1e-5)  # 1 - p


# ----------------------------------------------------------------------------- the command line, the Hub


@pytest.mark.parity
@pytest.mark.slow
def test_cli_json_for_ci(embedding: Files, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["verify", str(embedding.gguf["f32"]), "--reference", str(embedding.checkpoint), "--threads", "2"]
    assert main([*args, "--backend", "llama", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is True and data["exit_code"] == 0 and data["kind"] == "embedding"
    assert data["threshold"]["description"] == "min cosine >= 0.9999 (F32)" and len(data["probes"]) == 30
    bad = ["verify", str(embedding.gguf["pooling"]), "--reference", str(embedding.checkpoint), "--threads", "2"]
    assert main([*bad, "--backend", "llama", "--details"]) == 1
    out = capsys.readouterr().out
    assert "error   [pooling] The file declares MEAN pooling" in out and "d-long" in out
    assert out.splitlines()[-1].startswith("VERDICT: FAIL (pooling, vectors): min cosine 0.")


@pytest.mark.parity
@pytest.mark.slow
def test_a_catalog_name_and_its_official_checkpoint_from_the_hub(
    embedding: Files, hub: HubServer, tmp_path: Path
) -> None:
    """``verify("0.6B")`` fetches the catalog's Q8_0 file and, as its reference, Qwen/Qwen3-Embedding-0.6B."""
    from qwen_embed.hub.checkpoint import fetch_checkpoint

    checkpoint = {
        p.relative_to(embedding.checkpoint).as_posix(): p for p in embedding.checkpoint.rglob("*") if p.is_file()
    }
    hub.add_repo("Qwen/Qwen3-Embedding-0.6B-GGUF", {"Qwen3-Embedding-0.6B-Q8_0.gguf": embedding.gguf["Q8_0"]})
    hub.add_repo("Qwen/Qwen3-Embedding-0.6B", checkpoint)
    online = HubOptions(endpoint=hub.url, cache_dir=str(tmp_path), download_progress=False)
    report = verify("0.6B", options=replace(RUN, hub=online))
    assert report.passed and report.file_type == "Q8_0", report.format()
    assert report.reference == "Qwen/Qwen3-Embedding-0.6B@main"
    assert any(path.endswith("/model.safetensors") for _, path, _ in hub.requests("GET"))
    before = len(hub.log)
    offline = HubOptions(cache_dir=str(tmp_path), local_files_only=True)
    cached = fetch_checkpoint("Qwen/Qwen3-Embedding-0.6B", hub=offline)
    assert (cached / "model.safetensors").is_file() and len(hub.log) == before  # the cache answers alone
    with pytest.raises(NotCachedError, match=r"checkpoint Qwen/Qwen3-Embedding-4B@main is not in the cache"):
        fetch_checkpoint("Qwen/Qwen3-Embedding-4B", hub=offline)


# ----------------------------------------------------------------------------- fast: no converter


def test_an_unknown_file_needs_a_reference(tiny_model: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"Cannot tell which official checkpoint model-\d+\.gguf was conv"):
        verify(tiny_model, options=RUN)


def test_a_named_file_points_to_its_official_checkpoint(model_factory: Callable[..., Path]) -> None:
    path = model_factory(name="Qwen3-Embedding-0.6B")
    with pytest.raises(NotCachedError, match=r"checkpoint Qwen/Qwen3-Embedding-0\.6B@main is not in the cache"):
        verify(path, options=replace(RUN, hub=HubOptions(local_files_only=True)))


def test_guess_reference() -> None:
    assert guess_reference("embedding", ["0.6B"]) == "Qwen/Qwen3-Embedding-0.6B"
    assert guess_reference("reranker", ["ggml-org/Qwen3-Reranker-0.6B-Q8_0-GGUF"]) == "Qwen/Qwen3-Reranker-0.6B"
    assert guess_reference("embedding", ["Qwen3-Embedding-8B-Q4_K_M.gguf"]) == "Qwen/Qwen3-Embedding-8B"
    assert guess_reference("embedding", ["model-4B.gguf", "qwen3-embedding-random"]) is None  # no Qwen3 beside a size
    assert guess_reference("embedding", ["Qwen3-Embedding-14B"]) is None


def test_missing_reference_folder(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"lacks config\.json, weights \(\*\.safetensors\), a tokenizer"):
        verify(tiny_model, tmp_path, RUN)
    with pytest.raises(ModelNotFoundError, match=r"nowhere\.gguf does not exist"):
        verify("nowhere.gguf", tmp_path, RUN)


def test_the_reference_needs_the_parity_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen_embed.verification.reference import ReferenceEmbedder

    monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
    with pytest.raises(MissingExtraError, match=r'pip install "qwen-embed\[parity\]"'):
        ReferenceEmbedder(tmp_path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(kind="cross-encoder"), r"kind must be one of 'auto', 'embedding', 'reranker', not 'cross-encoder'"),
        (dict(top_k=0), r"top_k must be a positive int, not 0"),
        (dict(n_threads=True), r"n_threads must be a positive int, not True"),
        (dict(backend="auto"), r"backend must be one of 'llama', 'torch', not 'auto'"),
        (dict(quant=""), r"quant must be a non-empty str or None"),
        (dict(hub={"local_files_only": True}), r"hub must be a qwen_embed\.HubOptions, not dict"),
    ],
)
def test_options_check_themselves(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        VerifyOptions(**options)


def _header(**metadata: Any) -> GGUFInfo:
    return GGUFInfo(path=Path("m.gguf"), version=3, metadata=metadata, tensors=())


GOOD_EOS = EosCheck(151643, "<|endoftext|>", True, 151643, file_add_eos=True, file_eos_id=151643, file_add_bos=False)
NAMES = {151643: "<|endoftext|>", 151645: "<|im_end|>", 151644: "<|im_start|>"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(file_add_eos=False), r"tokenizer\.ggml\.add_eos_token is false\): llama\.cpp and the tools"),
        (dict(file_add_eos=None), r"tokenizer\.ggml\.add_eos_token is absent"),
        (dict(file_eos_id=151645), r"The file's EOS is <\|im_end\|> \(151645\): llama\.cpp appends it"),
        (dict(file_add_bos=True), r"prepend a BOS token \(151644\)"),
        (dict(library_id=151645), r"This library ends every text with <\|im_end\|> \(151645\)"),
    ],
)
def test_eos_findings(changes: dict[str, Any], message: str) -> None:
    info = _header(**{"tokenizer.ggml.bos_token_id": 151644})
    assert eos_findings(GOOD_EOS, info, NAMES.__getitem__) == []
    found = eos_findings(replace(GOOD_EOS, **changes), info, NAMES.__getitem__)
    assert [f.severity for f in found] == ["error"] and re.search(message, found[0].message)


def test_an_early_reference_tokenizer_is_a_note() -> None:
    found = eos_findings(replace(GOOD_EOS, reference_by_tokenizer=False), _header(), NAMES.__getitem__)
    assert [(f.check, f.severity) for f in found] == [("eos", "note")]
    assert "does not append <|endoftext|> (151643) itself" in found[0].message


@pytest.mark.parametrize(
    ("pooling_type", "severity"), [(3, None), (None, "warning"), (0, "warning"), (1, "error"), (2, "error")]
)
def test_pooling_check(pooling_type: int | None, severity: str | None) -> None:
    info = _header(
        **({"general.architecture": "qwen3", "qwen3.pooling_type": pooling_type} if pooling_type is not None else {})
    )
    _, found = pooling_check("last", info)
    assert [f.severity for f in found] == ([severity] if severity else [])


def test_thresholds_by_file_type() -> None:
    assert threshold_for("F16", "embedding") == Threshold("F16", "min cosine", 0.9999)
    assert threshold_for("BF16", "embedding").limit == 0.9999
    assert threshold_for("Q8_0", "embedding").limit == 0.999
    low = threshold_for("Q4_K_M", "embedding")
    assert low.limit is None and low.passes(0.5) and low.description == "no threshold for Q4_K_M: reported"
    assert threshold_for("F32", "reranker") == Threshold("F32", "max |Δ score|", 0.01)
    assert threshold_for("Q8_0", "reranker").passes(0.049) and not threshold_for("Q8_0", "reranker").passes(0.051)
    assert not threshold_for("F32", "embedding").passes(0.99989)


def test_the_probe_set_ships_with_the_package() -> None:
    probes = load_probes()
    langs = {d.lang for d in probes.documents} | {q.lang for q in probes.queries}
    assert {"en", "zh", "ja", "ru", "ar", "hi", "fr", "de", "code"} <= langs
    tags = {t for d in probes.documents for t in d.tags}
    assert {"long", "look-alike", "unicode", "empty", "code", "whitespace"} <= tags
    assert "<|endoftext|>" in probes.document("d-look-alikes").text
    assert len(probes.document("d-long").text.split()) > 800
    for query in probes.queries:
        assert set(query.relevant) <= set(query.candidates)
        assert all(probes.document(d) for d in query.candidates)
    assert probes.task == "Given a web search query, retrieve relevant passages that answer the query"


def _report(**changes: Any) -> VerifyReport:
    base = VerifyReport(
        model="m.gguf",
        kind="embedding",
        file_type="Q4_K_M",
        engine="llama.cpp",
        reference="ref",
        reference_recipe="official",
        instruction_format="q",
        instruction="task",
        pooling="last token",
        probe_set_version=1,
        probes=(ProbeResult("d-a", "document", 3, True, cosine=0.98), ProbeResult("d-b", "document", 0, True)),
        top_k=TopKCheck(3, 1, 1, 1, 1, 1),
        threshold=threshold_for("Q4_K_M", "embedding"),
        worst=0.98,
    )
    return replace(base, **changes)


def test_a_lower_quant_is_reported_with_its_drop_not_failed() -> None:
    report = _report()
    assert (
        report.passed
        and report.verdict == "PASS: min cosine 0.98 (drop 0.02 from 1); no threshold for Q4_K_M: reported"
    )
    failing = _report(findings=(Finding("tokens", "error", "differ"), Finding("eos", "error", "absent")))
    assert not failing.passed and failing.exit_code == 1
    assert failing.verdict.startswith("FAIL (tokens, eos): min cosine 0.98 (drop 0.02 from 1); no threshold for")


def test_json_has_no_nan() -> None:
    data = json.loads(_report(worst=float("nan")).to_json())
    assert data["worst"] is None and data["probes"][1]["cosine"] is None and data["passed"] is True


def test_cli_cannot_verify_exits_2(tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tiny_model), "--backend", "llama", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("qwen-embed verify: ConfigurationError: Cannot tell which official checkpoint")
    assert json.loads(captured.out)["error"]["type"] == "ConfigurationError"


def test_cli_checks_options_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "nowhere.gguf", "--top-k", "0"]) == 2
    assert "top_k must be a positive int, not 0" in capsys.readouterr().err
