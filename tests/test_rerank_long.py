"""Long-document reranking (windows, aggregate, best span), receipts and deterministic scores."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qwen_embed import ConfigurationError, InputTooLongError, Reranker
from qwen_embed.calls import RerankCall
from qwen_embed.testing import make_reranker_model, reranker_vocabulary

from .conftest import real_vocab

QUERY = "What is GGUF?"
MAX_LENGTH = 96


def _document(n_sentences: int) -> str:
    words = "gguf model file format llama tokens weights bread starter oven search query vector".split()
    rng = np.random.default_rng(1)
    return " ".join(" ".join(rng.choice(words, size=8)) + "." for _ in range(n_sentences))


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reranker]:
    path = make_reranker_model(tmp_path_factory.mktemp("rr") / "rr.gguf", reranker_vocabulary(real_vocab()))
    with Reranker(path, n_threads=2, max_length=MAX_LENGTH, backend="llama") as rr:
        yield rr


def test_a_long_document_is_scored_from_all_its_windows(reranker: Reranker) -> None:
    doc = _document(60)
    assert len(reranker.tokenize(QUERY, doc)) == MAX_LENGTH  # cut by the official recipe
    assert len(reranker._tokenizer.tokens(" " + doc, None)) > 5 * MAX_LENGTH  # over five times max_length
    full = reranker.run([(QUERY, doc)], RerankCall(long_text="truncate")).receipts[0]
    assert not full.complete and full.n_tokens == 5 * MAX_LENGTH  # counting stops at 4 x max_length past the cut

    result = reranker.run([(QUERY, doc)], RerankCall(long_text="chunk", raw=True))
    receipt = result.receipts[0]
    assert receipt.chunks == len(receipt.spans) > 5 and receipt.fusion == "max" and not receipt.truncated
    starts = [s for s, _ in receipt.spans]
    ends = [e for _, e in receipt.spans]
    assert starts[0] == 0 and ends[-1] == len(doc) and all(s < e for s, e in receipt.spans)
    assert all(starts[i + 1] <= ends[i] for i in range(len(starts) - 1))  # windows cover the whole document

    # Each window scored on its own, one by one (no sharing, no packing): the best is the returned span.
    alone = np.array([
        reranker.run([(QUERY, doc[s:e])], RerankCall(raw=True, deterministic=True)).scores[0] for s, e in receipt.spans
    ])  # fmt: skip
    assert result.best_spans[0] == receipt.spans[int(np.argmax(alone))]
    np.testing.assert_allclose(result.scores[0], alone.max(), atol=1e-4)
    mean = reranker.run([(QUERY, doc)], RerankCall(long_text="chunk", raw=True, aggregate="mean")).scores[0]
    np.testing.assert_allclose(mean, alone.mean(), atol=1e-4)
    assert abs(mean - result.scores[0]) > 1e-3  # the aggregate matters: a broken one would not differ

    ranked = reranker.rank(QUERY, ["a short one", doc], long_text="chunk")
    by_id = {r["corpus_id"]: r for r in ranked}
    assert by_id[1]["span"] == result.best_spans[0] and "span" not in by_id[0]


def test_a_short_document_scores_the_same_whatever_the_policy(reranker: Reranker) -> None:
    pairs = [(QUERY, "GGUF is a file format."), (QUERY, "")]
    chunked = reranker.run(pairs, RerankCall(long_text="chunk"))
    np.testing.assert_array_equal(chunked.scores, reranker.predict(pairs))
    assert chunked.best_spans == (None, None) and [r.chunks for r in chunked.receipts] == [1, 1]


def test_truncation_is_reported_never_silent(reranker: Reranker, caplog: pytest.LogCaptureFixture) -> None:
    doc = _document(20)
    with caplog.at_level(logging.WARNING, logger="qwen_embed.reranker"):
        result = reranker.run([(QUERY, "short"), (QUERY, doc)])
    short, cut = result.receipts
    assert not short.truncated and short.dropped_tokens == 0 and short.tokens_used == short.n_tokens
    expected = len(reranker._tokenizer.tokens(" " + doc, None))  # the whole document, counted apart
    assert cut.truncated and cut.tokens_used == MAX_LENGTH and cut.complete
    assert cut.dropped_tokens == cut.n_tokens - MAX_LENGTH and cut.n_tokens - (MAX_LENGTH - cut.dropped_tokens) >= 0
    assert cut.n_tokens == len(reranker.tokenize(QUERY, "")) - 1 + expected  # prompt (minus its space) + document
    assert "1 of 2 pairs were over max_length=96" in caplog.text and "pair #1" in caplog.text
    with pytest.raises(InputTooLongError, match=r"Pair #1: the pair is [\d,]+ tokens .* long_text='chunk'") as info:
        reranker.run([(QUERY, "short"), (QUERY, doc)], RerankCall(long_text="error"))
    assert info.value.param == "document" and info.value.index == 1


@pytest.mark.parametrize(
    "call",
    [RerankCall(), RerankCall(long_text="chunk"), RerankCall(long_text="chunk", overlap=8, aggregate="mean")],
    ids=["truncate", "chunk", "chunk-overlap"],
)
def test_plan_gives_run_s_receipts_without_decoding(
    reranker: Reranker, call: RerankCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = [(QUERY, "short"), (QUERY, _document(20)), ("another query", _document(7))]
    expected = reranker.run(pairs, call).receipts

    def no_decode(*args: object, **kwargs: object) -> None:  # failure injection: plan must not reach the engine
        raise AssertionError("plan decoded")

    monkeypatch.setattr(reranker, "_log_odds", no_decode)
    assert reranker.plan(pairs, call) == expected
    other = RerankCall(long_text="truncate" if call.long_text == "chunk" else "chunk")
    assert reranker.plan(pairs, other) != expected  # the twin: the plan follows the call
    assert reranker.plan((QUERY, "short"), call) == expected[:1]  # one pair in: a one-receipt tuple
    with pytest.raises(InputTooLongError, match=r"Pair #1: the pair is [\d,]+ tokens .* long_text='chunk'"):
        reranker.plan(pairs, RerankCall(long_text="error"))
    with pytest.raises(ConfigurationError, match="call must be a RerankCall, not dict"):
        reranker.plan(pairs, {"long_text": "chunk"})  # type: ignore[arg-type]


def test_deterministic_scores_do_not_depend_on_the_other_pairs(reranker: Reranker) -> None:
    probe = (QUERY, "GGUF stores tensors and metadata in one file.")
    others = [(QUERY, _document(k)) for k in (1, 3, 5)] + [("other query", "text")]
    call = RerankCall(raw=True, deterministic=True)
    alone = reranker.run([probe], call).scores[0]
    for position in range(len(others) + 1):
        batch = [*others[:position], probe, *others[position:]]
        assert reranker.run(batch, call).scores[position].tobytes() == alone.tobytes()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"long_text": "split"}, r"long_text='split' is not one of 'truncate', 'chunk', 'error'"),
        ({"aggregate": "median"}, r"aggregate='median' is not one of 'max', 'mean', 'first'"),
        ({"overlap": -1}, r"overlap must be an int from 0 to 4096"),
        ({"raw": "yes"}, r"raw must be True or False, not 'yes'"),
        ({"batch_size": 0}, r"batch_size must be an int from 1 to 65,536 or None, not 0"),
    ],
)
def test_rerank_call_checks_itself(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RerankCall(**options)  # type: ignore[arg-type]


def test_run_refuses_what_is_not_a_call(reranker: Reranker, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="call must be a RerankCall, not dict"):
        reranker.run([(QUERY, "x")], {"raw": True})  # type: ignore[arg-type]
