"""The Reranker on small generated reranker GGUFs: every head variant, batching, prefix sharing,
truncation, refusals, errors and threads. Parity with the official recipe is in test_reranker_parity.py."""

from __future__ import annotations

import json
import re
import runpy
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qwen_embed import (
    ConfigurationError,
    EmbedderClosedError,
    InputTooLongError,
    InputTypeError,
    InvalidInputError,
    InvalidPromptError,
    ModelClosedError,
    QwenEmbedError,
    Reranker,
    UnsupportedModelError,
)
from qwen_embed.interfaces.cli import main
from qwen_embed.testing import Vocabulary, make_model, train_vocabulary
from qwen_embed.text.rerank_prompt import DEFAULT_RERANK_INSTRUCTION, format_pair

from .conftest import real_vocab
from .hub_server import HubServer
from .reranker_support import make_reranker_gguf, reranker_vocabulary

QUERY = "What is GGUF?"
DOCS = [
    "GGUF is the single-file model format of llama.cpp.",
    "Sourdough needs a lively starter.",
    "Qwen3 rerankers judge whether a document answers a query. " * 3,
    "",
    "yes",
    "A document with a literal <|im_end|> and <|im_start|>user marker.",
    "Déjà vu — “quotes”, 中文, Привет!",
]


@pytest.fixture(scope="session")
def vocab() -> Vocabulary:
    return reranker_vocabulary(real_vocab())


@pytest.fixture(scope="session")
def rerank_files(tmp_path_factory: pytest.TempPathFactory, vocab: Vocabulary) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rerankers")
    variants = ("cls", "cls_swapped", "cls_one_row", "output", "tied")
    return {v: make_reranker_gguf(root / f"{v}.gguf", vocab, variant=v) for v in variants}


@pytest.fixture(scope="session")
def reranker(rerank_files: dict[str, Path]) -> Iterator[Reranker]:
    with Reranker(rerank_files["cls"], n_threads=2) as rr:
        yield rr


def _pairs() -> list[tuple[str, str]]:
    return [(QUERY, d) for d in DOCS] + [("How do I bake bread?", d) for d in DOCS[:3]] + [("lonely", "one pair")]


# ----------------------------------------------------------------------------- heads


def test_every_head_variant_gives_the_same_scores(rerank_files: dict[str, Path]) -> None:
    expected = {
        "cls": "cls.output[yes=0,no=1] F32",
        "cls_swapped": "cls.output[yes=1,no=0] F32",
        "cls_one_row": "cls.output[log-odds row] F32",
        "output": "output[",
        "tied": "token_embd[",
    }
    scores = {}
    for variant, path in rerank_files.items():
        with Reranker(path, n_threads=2) as rr:
            assert f"head={expected[variant]}" in repr(rr)
            scores[variant] = rr.predict(_pairs(), raw=True)
    for variant, values in scores.items():
        np.testing.assert_allclose(values, scores["cls"], atol=1e-4, err_msg=variant)
    assert np.ptp(scores["cls"]) > 0.1  # the pairs do get different scores


def test_swapped_labels_are_read_from_the_file(rerank_files: dict[str, Path]) -> None:
    with Reranker(rerank_files["cls_swapped"], n_threads=2) as rr:
        assert rr.head.labels == ("no", "yes") and rr.head.rows == (1, 0)


def test_the_real_vocabulary_has_the_official_label_ids(rerank_files: dict[str, Path]) -> None:
    if real_vocab() is None:
        pytest.skip("needs ../shared/vocab")
    with Reranker(rerank_files["tied"], n_threads=2) as rr:
        assert rr.head.rows == (9693, 2152)  # not 2132 ('It'), fastembed's old bug


# ----------------------------------------------------------------------------- the recipe


def test_format_is_the_official_prompt(reranker: Reranker) -> None:
    text = reranker.format("q", "d")
    assert text == format_pair("q", "d") and text.endswith("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert f"<Instruct>: {DEFAULT_RERANK_INSTRUCTION}\n<Query>: q\n<Document>: d<|im_end|>" in text


def test_control_tokens_in_user_text_stay_text(reranker: Reranker) -> None:
    im_start, im_end = (
        int(reranker._require_engine().tokenize(t, special=True)[0]) for t in ("<|im_start|>", "<|im_end|>")
    )
    plain = reranker.tokenize("q", "a document")
    tricky = reranker.tokenize("<|im_start|>q", "a <|im_end|> document <|im_start|>")
    for ids in (plain, tricky):  # the prompt's own markers only: 3 starts, 2 ends
        assert (ids == im_start).sum() == 3 and (ids == im_end).sum() == 2
    assert len(tricky) > len(plain) + 10


def test_the_shared_split_tokenizes_like_the_whole_body(reranker: Reranker) -> None:
    engine = reranker._require_engine()
    for doc in [*DOCS, "!bang", ":colon", "  two spaces", "\nnewline", "'s"]:
        body = f"<Instruct>: i\n<Query>: q\n<Document>: {doc}"
        split = np.concatenate([engine.tokenize("<Instruct>: i\n<Query>: q\n<Document>:"), engine.tokenize(f" {doc}")])
        assert engine.tokenize(body).tolist() == split.tolist(), doc


def test_truncation_cuts_the_document_and_keeps_the_suffix(rerank_files: dict[str, Path]) -> None:
    with Reranker(rerank_files["cls"], n_threads=2, max_length=90) as rr:
        suffix, prefix = rr._suffix.tolist(), rr._prefix.tolist()
        long_doc = "word " * 500
        ids = rr.tokenize(QUERY, long_doc).tolist()
        assert len(ids) == 90 and ids[-len(suffix) :] == suffix and ids[: len(prefix)] == prefix
        start = rr.tokenize(QUERY, "word " * 5).tolist()[: -len(suffix) - 1]  # less the trailing space
        assert ids[: len(start)] == start  # the body's start is kept
        scores = rr.predict([(QUERY, long_doc), (QUERY, "short")] * 2)
        assert np.isfinite(scores).all() and np.allclose(scores[:2], scores[2:], atol=1e-5)


def test_a_query_or_instruction_that_leaves_no_room_for_the_document_is_refused(
    rerank_files: dict[str, Path],
) -> None:
    with Reranker(rerank_files["cls"], n_threads=2, max_length=90) as rr:
        with pytest.raises(InputTooLongError, match=r"Pair #1: the query leaves no room for the document") as info:
            rr.predict([(QUERY, "doc"), ("why " * 300, "doc")])
        assert (info.value.param, info.value.index, info.value.limit) == ("query", 1, 90)
        assert info.value.n_tokens > 90
        with pytest.raises(InputTooLongError, match="the instruction leaves no room") as info:
            rr.rank(QUERY, ["a", "b"], instruction="Judge carefully. " * 40)
        assert info.value.param == "instruction"
        with pytest.raises(InputTooLongError, match=r"take at least [\d,]+ tokens"):
            rr.rank("why " * 2_000_000, ["a"])  # an 8 MB query is refused without tokenizing all of it
        # The longest query that leaves the document one token is scored, and the documents differ.
        fits = max(n for n in range(1, 60) if _head_fits(rr, "why " * n))
        ids = rr.tokenize("why " * fits, "alpha beta")
        assert len(ids) == 90
        scores = rr.predict([("why " * fits, "alpha"), ("why " * fits, "sourdough")], raw=True)
        assert abs(scores[0] - scores[1]) > 1e-4
        with pytest.raises(InputTooLongError):
            rr.predict([("why " * (fits + 1), "alpha")])


def _head_fits(rr: Reranker, query: str) -> bool:
    try:
        rr.tokenize(query, "")
    except InputTooLongError:
        return False
    return True


def test_a_huge_document_is_cut_before_it_is_tokenized(
    rerank_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Reranker(rerank_files["cls"], n_threads=2, max_length=256) as rr:
        engine = rr._engine
        original = engine.tokenize
        longest: list[int] = [0]

        def recording_tokenize(text: str, *, special: bool = False):  # failure injection: what gets tokenized
            longest[0] = max(longest[0], len(text))
            return original(text, special=special)

        monkeypatch.setattr(engine, "tokenize", recording_tokenize)
        for doc in ("a" * 10_000_000, "word " * 2_000_000, " " * 10_000_000, "中文" * 3_000_000):
            longest[0] = 0
            ids = rr.tokenize(QUERY, doc)
            assert len(ids) == 256
            # not the 10 MB: what is kept, and up to 4 x max_length tokens past the cut to count what it drops
            assert longest[0] < 400_000, longest[0]
        monkeypatch.undo()
        doc = ("Sourdough needs a lively starter. " * 3 + "\n\n" + "  " * 40) * 300  # 60 kB, tokenized whole too
        body = rr._tokenizer.tokens(
            f"<Instruct>: {DEFAULT_RERANK_INSTRUCTION}\n<Query>: {QUERY}\n<Document>: {doc}", None
        )
        keep = 256 - len(rr._prefix) - len(rr._suffix)
        official = np.concatenate([rr._prefix, body[:keep], rr._suffix])  # tokenize all, then cut: the recipe
        assert rr.tokenize(QUERY, doc).tolist() == official.tolist()


# ----------------------------------------------------------------------------- batching and sharing


def test_batched_equals_single(reranker: Reranker) -> None:
    pairs = _pairs()
    batched = reranker.predict(pairs, raw=True)
    single = np.array([reranker.predict(pair, raw=True) for pair in pairs])
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_order_does_not_matter(reranker: Reranker) -> None:
    pairs = _pairs()
    order = np.random.default_rng(0).permutation(len(pairs))
    scores = reranker.predict(pairs, raw=True)
    permuted = reranker.predict([pairs[i] for i in order], raw=True)
    np.testing.assert_allclose(permuted, scores[order], atol=1e-4)


def test_prefix_sharing_equals_unshared(rerank_files: dict[str, Path]) -> None:
    pairs = _pairs() * 3
    with (
        Reranker(rerank_files["cls"], n_threads=2) as shared,
        Reranker(rerank_files["cls"], n_threads=2, share_prefix=False) as plain,
    ):
        assert "shared prefix" in repr(shared) and "shared prefix" not in repr(plain)
        np.testing.assert_allclose(shared.predict(pairs, raw=True), plain.predict(pairs, raw=True), atol=1e-4)


def test_more_documents_than_one_decode_holds(rerank_files: dict[str, Path]) -> None:
    docs = [f"document {i}: " + "words " * (i % 13) for i in range(45)]
    with Reranker(rerank_files["cls"], n_threads=2) as big:
        expected = big.predict([(QUERY, d) for d in docs], raw=True)
    with Reranker(rerank_files["cls"], n_threads=2, batch_size=4, batch_tokens=64) as small:
        got = small.predict([(QUERY, d) for d in docs], raw=True)
        also = small.predict([(QUERY, d) for d in docs], raw=True, batch_size=2)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(also, expected, atol=1e-4)


def test_scores_are_probabilities_and_raw_is_the_log_odds(reranker: Reranker) -> None:
    pairs = _pairs()
    probs, odds = reranker.predict(pairs), reranker.predict(pairs, raw=True)
    assert probs.dtype == np.float32 and probs.shape == (len(pairs),)
    assert ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-odds.astype(np.float64))), atol=1e-6)
    assert reranker.predict(("q", "d")).shape == () and reranker.predict([]).shape == (0,)


def test_an_instruction_changes_the_scores(reranker: Reranker) -> None:
    pairs = _pairs()[:3]
    default = reranker.predict(pairs, raw=True)
    other = reranker.predict(pairs, raw=True, instruction="Find recipes")
    assert np.abs(default - other).max() > 1e-3


# ----------------------------------------------------------------------------- rank


def test_rank_is_best_first_with_crossencoder_keys(reranker: Reranker) -> None:
    results = reranker.rank(QUERY, DOCS, return_documents=True)
    scores = reranker.predict([(QUERY, d) for d in DOCS])
    assert [r["corpus_id"] for r in results] == np.argsort(-scores, kind="stable").tolist()
    assert all(set(r) == {"corpus_id", "score", "text"} and r["text"] == DOCS[r["corpus_id"]] for r in results)
    assert all(isinstance(r["score"], float) for r in results)
    top = reranker.rank(QUERY, DOCS, top_k=2)
    assert [r["corpus_id"] for r in top] == [r["corpus_id"] for r in results[:2]] and "text" not in top[0]
    assert reranker.rank(QUERY, []) == []


def test_identical_documents_get_the_same_score(reranker: Reranker) -> None:
    ranked = reranker.rank(QUERY, ["same", "same", "same"])
    assert sorted(r["corpus_id"] for r in ranked) == [0, 1, 2]
    assert np.ptp([r["score"] for r in ranked]) < 1e-5  # equal up to float order in one decode


# ----------------------------------------------------------------------------- refusals and errors


def test_refuses_an_embedding_model(tmp_path: Path) -> None:
    path = make_model(tmp_path / "embedding.gguf")
    with pytest.raises(UnsupportedModelError, match=r"embedding model .*Embedder"):
        Reranker(path)


def test_refuses_another_architecture(tmp_path: Path, vocab: Vocabulary) -> None:
    path = make_reranker_gguf(tmp_path / "llama.gguf", vocab, architecture="llama")
    with pytest.raises(UnsupportedModelError, match="llama model"):
        Reranker(path)


def test_refuses_labels_that_are_not_yes_no(tmp_path: Path, vocab: Vocabulary) -> None:
    path = make_reranker_gguf(tmp_path / "bad.gguf", vocab, variant="cls_bad_labels")
    with pytest.raises(UnsupportedModelError, match=r"labels are .*relevant"):
        Reranker(path, n_threads=2)


def test_refuses_yes_no_that_are_not_single_tokens(tmp_path: Path) -> None:
    path = make_reranker_gguf(tmp_path / "vocab.gguf", train_vocabulary(), variant="tied")
    with pytest.raises(UnsupportedModelError, match=r"'yes' is .* tokens"):
        Reranker(path, n_threads=2)


def test_a_classifier_head_needs_no_label_tokens(tmp_path: Path) -> None:
    path = make_reranker_gguf(tmp_path / "cls.gguf", train_vocabulary(), variant="cls")
    with Reranker(path, n_threads=2) as rr:
        assert rr.predict([("q", "d")]).shape == (1,)


def test_bad_input_raises_library_errors(reranker: Reranker) -> None:
    cases = [
        (lambda: reranker.predict("a string"), InputTypeError, "list of .query, document. pairs"),
        (lambda: reranker.predict([("q", 3)]), InputTypeError, "Pair #0: the document is int"),
        (lambda: reranker.predict([("q", "d", "x")]), InputTypeError, "Pair #0"),
        (lambda: reranker.predict([("q", "d")], instruction=""), InvalidPromptError, "instruction is empty"),
        (lambda: reranker.predict([("q", "d")], batch_size=0), ConfigurationError, "batch_size"),
        (lambda: reranker.predict([("q", "\ud800")]), InvalidInputError, "Pair #0: the document"),
        (lambda: reranker.rank(QUERY, "one string"), InputTypeError, "documents must be a list"),
        (lambda: reranker.rank(QUERY, DOCS, top_k=0), ConfigurationError, "top_k"),
        (lambda: reranker.rank(None, DOCS), InputTypeError, "query must be a str"),  # type: ignore[arg-type]
        (lambda: reranker.rank(QUERY, set(DOCS)), InputTypeError, "documents is a set, which has no order"),
        (lambda: reranker.rank(QUERY, dict.fromkeys(DOCS)), InputTypeError, "documents is a dict"),
        (lambda: reranker.predict({(QUERY, "d")}), InputTypeError, "pairs is a set, which has no order"),
        (lambda: reranker.predict([(QUERY, "d")], raw="yes"), ConfigurationError, "raw must be True or False"),
        (lambda: reranker.rank(QUERY, DOCS, return_documents=1), ConfigurationError, "return_documents must be"),
        (lambda: reranker.predict([(QUERY, "d")], show_progress="no"), ConfigurationError, "show_progress"),
        (
            lambda: reranker.predict([(QUERY, "d")], batch_size=10**9),
            ConfigurationError,
            "batch_size must be an int from 1 to 65,536 or None, not 1000000000",
        ),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match) as info:
            call()
        assert isinstance(info.value, QwenEmbedError)


def test_bad_options(rerank_files: dict[str, Path]) -> None:
    with pytest.raises(ConfigurationError, match="exceeds the model's trained context"):
        Reranker(rerank_files["cls"], max_length=10**6)
    with pytest.raises(ConfigurationError, match="leaves no room"):
        Reranker(rerank_files["cls"], max_length=20, n_threads=2)
    with pytest.raises(ConfigurationError, match="backend"):
        Reranker(rerank_files["cls"], backend="onnx")


def test_closed_reranker_says_so(rerank_files: dict[str, Path]) -> None:
    rr = Reranker(rerank_files["cls"], n_threads=2)
    rr.close()
    rr.close()  # idempotent
    assert "closed" in repr(rr)
    with pytest.raises(ModelClosedError, match="this Reranker was closed") as info:
        rr.predict([("q", "d")])
    assert type(info.value).__name__ == "ModelClosedError"
    assert isinstance(info.value, EmbedderClosedError)  # the older name catches it too


def test_an_empty_document_is_a_valid_pair(reranker: Reranker) -> None:
    empty, other = reranker.predict([(QUERY, ""), (QUERY, "GGUF")], raw=True)
    assert np.isfinite(empty) and empty != other
    assert reranker.tokenize(QUERY, "")[-len(reranker._suffix) - 1] == reranker._tokenizer.tokens(" ", None)[0]


def test_size_options_are_bounded(rerank_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match=r"batch_tokens=1,000,000,000 is more than the 1,048,576"):
        Reranker(rerank_files["cls"], batch_tokens=10**9)
    with pytest.raises(ConfigurationError, match=r"batch_size=100000 is more than the 65,536 allowed"):
        Reranker(rerank_files["cls"], batch_size=100_000)
    with Reranker(rerank_files["cls"], n_threads=2) as rr:
        assert len(rr.rank(QUERY, DOCS[:2], top_k=10**12)) == 2  # top_k past the documents: all of them
    from qwen_embed import _memory

    monkeypatch.setattr(_memory, "available_memory", lambda: 2 * 1024**3)  # a machine with 2 GiB free
    with pytest.raises(ConfigurationError, match=r"batch_tokens=500,000: a decode of 508,192 tokens .* needs about"):
        Reranker(rerank_files["cls"], batch_tokens=500_000, backend="llama")  # ~17 kB per token of context
    with pytest.raises(ConfigurationError, match=r"the most that fits is batch_tokens=[\d,]+ \(default 1,024\)"):
        Reranker(rerank_files["cls"], batch_tokens=500_000, backend="llama")
    Reranker(rerank_files["cls"], batch_tokens=50_000, backend="llama", n_threads=2).close()  # fits: accepted


def test_threads_share_one_reranker(reranker: Reranker) -> None:
    pairs = _pairs()
    expected = reranker.predict(pairs, raw=True)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                results.append(reranker.predict(pairs, raw=True))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12
    for got in results:
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_torch_engine_gives_the_same_scores(rerank_files: dict[str, Path], reranker: Reranker) -> None:
    pytest.importorskip("torch")
    pairs = _pairs()
    with Reranker(rerank_files["output"], backend="torch", dtype="float32", n_threads=2) as rr:
        assert "torch float32" in repr(rr)
        np.testing.assert_allclose(rr.predict(pairs, raw=True), reranker.predict(pairs, raw=True), atol=1e-3)


# ----------------------------------------------------------------------------- download and CLI

RERANKER_REPO = "ggml-org/Qwen3-Reranker-0.6B-Q8_0-GGUF"


@pytest.fixture
def reranker_hub(
    tmp_path_factory: pytest.TempPathFactory, vocab: Vocabulary, monkeypatch: pytest.MonkeyPatch
) -> Iterator[HubServer]:
    """A local Hub on 127.0.0.1 serving a Q8_0 reranker under the catalog's 0.6B repo id."""
    import huggingface_hub.constants

    from qwen_embed.hub import download as hub_module

    path = make_reranker_gguf(tmp_path_factory.mktemp("hub") / "r.gguf", vocab, variant="cls", quant="Q8_0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_module, "_RETRY_DELAYS", (0.01, 0.01))
    with HubServer() as server:
        server.add_repo(RERANKER_REPO, {"qwen3-reranker-0.6b-q8_0.gguf": path, "README.md": b"# reranker\n"})
        yield server


def test_from_pretrained_resolves_the_reranker_catalog(reranker_hub: HubServer, tmp_path: Path) -> None:
    with Reranker.from_pretrained("0.6B", endpoint=reranker_hub.url, cache_dir=tmp_path, n_threads=2) as rr:
        assert rr.resolution is not None and rr.resolution.repo_id == RERANKER_REPO
        assert rr.quantization == "Q8_0" and rr.head.type_name in ("Q8_0", "F32", "F16")
        assert rr.predict([("q", "d")]).shape == (1,)
    with pytest.raises(QwenEmbedError, match="Unknown reranker"):
        Reranker.from_pretrained("tiny-reranker", endpoint=reranker_hub.url, cache_dir=tmp_path)


def test_cli_rerank_prints_json_lines_best_first(
    rerank_files: dict[str, Path], reranker: Reranker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = DOCS[:4]
    assert main(["rerank", QUERY, *docs, "--model-path", str(rerank_files["cls"]), "--threads", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = reranker.rank(QUERY, docs)
    assert [line["index"] for line in lines] == [r["corpus_id"] for r in expected]
    assert [line["rank"] for line in lines] == [1, 2, 3, 4] and lines[0]["document"] == docs[lines[0]["index"]]
    assert abs(lines[0]["score"] - expected[0]["score"]) < 1e-6

    listing = tmp_path / "docs.txt"
    listing.write_text("\n".join(docs) + "\n", encoding="utf-8")
    args = ["rerank", QUERY, "-f", str(listing), "--top-k", "2", "--raw", "--model-path", str(rerank_files["cls"])]
    assert main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and lines[0]["index"] == expected[0]["corpus_id"]
    odds = reranker.predict([(QUERY, docs[lines[0]["index"]])], raw=True)[0]
    assert abs(lines[0]["score"] - odds) < 1e-5


def test_cli_rerank_downloads_and_reports_errors(
    reranker_hub: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--endpoint", reranker_hub.url, "--cache-dir", str(tmp_path), "--threads", "2"]
    assert main(["rerank", "q", "a", "b", "--model", "0.6B", *common]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["rerank", "q", "a", "--model", "0.6B", "--top-k", "0", *common]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qwen-embed rerank: ConfigurationError:") and "--top-k" in err


def test_two_stage_retrieval_example(
    tiny_model: Path, rerank_files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("faiss")
    script = Path(__file__).resolve().parents[1] / "examples" / "two_stage_retrieval.py"
    monkeypatch.setattr(sys, "argv", [script.name, str(tiny_model), str(rerank_files["cls"])])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("(50 candidates -> top 5)") == 2
    assert "reranker: Reranker(" in out and len(re.findall(r"^  [01]\.\d{3}  #", out, flags=re.M)) == 10


def test_a_reranker_pickles_as_a_recipe(rerank_files: dict[str, Path]) -> None:
    import pickle
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    path = next(iter(rerank_files.values()))
    with Reranker(path, n_threads=1, instruction="Find the answer") as rr:
        clone = pickle.loads(pickle.dumps(rr))
        assert clone.instruction == "Find the answer" and clone.model_path == rr.model_path
        pairs = _pairs()
        np.testing.assert_allclose(clone.predict(pairs), rr.predict(pairs), atol=1e-5)
        clone.close()
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as executor:
            remote = executor.submit(_predict_with, rr, pairs).result(timeout=180)
        np.testing.assert_allclose(remote, rr.predict(pairs), atol=1e-4)


def _predict_with(rr: Reranker, pairs: list[tuple[str, str]]) -> np.ndarray:
    with rr:
        return rr.predict(pairs)
