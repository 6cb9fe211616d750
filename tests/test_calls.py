"""One call object for every encode entry point: EncodeCall checks itself, Embedder.run consumes it, receipts count."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_embed import ConfigurationError, DimensionError, Embedder, EncodeCall, InputTypeError, InvalidPromptError
from qwen_embed.text.chunking import ChunkConfig

TEXTS = ["What is GGUF?", "Qwen3-Embedding turns text into vectors.", "", "向量检索"]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"side": "passage"}, ConfigurationError, r"side='passage' is not one of None, 'query', 'document'"),
        ({"task": ""}, ConfigurationError, r"task must be a prompt name"),
        ({"instruction": "  "}, InvalidPromptError, r"instruction is empty"),
        ({"dim": 1.5}, DimensionError, r"dim must be an int, not float"),
        ({"normalize": "yes"}, ConfigurationError, r"normalize must be True, False or None, not 'yes'"),
        ({"long_text": "cut"}, ConfigurationError, r"Unknown long_text policy 'cut'"),
        ({"batch_size": 0}, ConfigurationError, r"batch_size must be an int from 1 to 65,536 or None, not 0"),
        ({"batch_size": 10**6}, ConfigurationError, r"batch_size must be an int from 1 to 65,536 or None, not 1000000"),
        ({"precision": "int4"}, ConfigurationError, r"precision='int4' is not one of 'float32'"),
    ],
)
def test_encode_call_checks_itself(options: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        EncodeCall(**options)  # type: ignore[arg-type]


def test_from_options_names_the_closest_option_and_takes_sentence_transformers_alias() -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown encode option 'normalise' \(did you mean 'normalize'\?\)"):
        EncodeCall.from_options({"normalise": True})
    assert EncodeCall.from_options({"prompt_name": "qa"}) == EncodeCall(task="qa")
    with pytest.raises(ConfigurationError, match=r"prompt_name='qa' and task='sts' name the same option"):
        EncodeCall.from_options({"prompt_name": "qa", "task": "sts"})


def test_call_is_frozen_and_replace_checks_again() -> None:
    call = EncodeCall(side="query", dim=64)
    with pytest.raises(AttributeError):
        call.dim = 32  # type: ignore[misc]
    assert call.replace(dim=32).dim == 32
    with pytest.raises(ConfigurationError, match="side="):
        call.replace(side="both")  # type: ignore[arg-type]
    assert call.as_dict() == {"side": "query", "dim": 64}


def test_every_method_is_run_with_its_call(tiny_embedder: Embedder) -> None:
    emb = tiny_embedder
    queries = emb.run(TEXTS, EncodeCall(side="query")).vectors
    documents = emb.run(TEXTS, EncodeCall(side="document")).vectors
    assert not np.allclose(queries, documents, atol=1e-3)  # the query side is instructed: they must differ
    np.testing.assert_array_equal(emb.encode_queries(TEXTS), queries)
    np.testing.assert_array_equal(emb.encode_query(TEXTS), queries)  # sentence-transformers' name
    np.testing.assert_array_equal(emb.encode(TEXTS, side="query"), queries)
    np.testing.assert_array_equal(emb.encode_documents(TEXTS), documents)
    np.testing.assert_array_equal(emb.encode_document(TEXTS), documents)
    streamed = np.concatenate(list(emb.encode_iter(TEXTS, side="query", chunk_size=2)))
    np.testing.assert_allclose(streamed, queries, atol=5e-4)  # packing neighbours differ: batch tolerance


def test_instruction_is_accepted_wherever_a_task_is(tiny_embedder: Embedder) -> None:
    emb = tiny_embedder
    instruction = "Find the code that answers the question"
    expected = emb.encode(TEXTS, instruction=instruction)
    np.testing.assert_array_equal(emb.encode_queries(TEXTS, instruction=instruction), expected)
    np.testing.assert_array_equal(emb.encode_documents(TEXTS, instruction=instruction), expected)
    assert emb.format("x", instruction=instruction) == f"Instruct: {instruction}\nQuery:x"
    assert not np.allclose(emb.encode_queries(TEXTS), expected, atol=1e-3)  # a different instruction differs


def test_task_and_prompt_name_are_one_option(tiny_embedder: Embedder) -> None:
    emb = tiny_embedder
    np.testing.assert_array_equal(emb.encode(TEXTS, prompt_name="qa"), emb.encode(TEXTS, task="qa"))
    assert emb.format("x", side="document", task="sts") == emb.format("x", side="query", task="sts")  # symmetric
    assert emb.format("x", side="document") == "x"  # retrieval documents are bare


def test_receipts_count_what_was_embedded(tiny_embedder: Embedder) -> None:
    emb = tiny_embedder
    result = emb.run(TEXTS, EncodeCall(side="query"))
    assert result.n_tokens == [emb.count_tokens(t, side="query") for t in TEXTS]
    assert all(not r.truncated and r.chunks == 1 and r.tokens_used == r.n_tokens for r in result.receipts)


def test_receipts_report_truncation_and_chunks(model_factory) -> None:  # type: ignore[no-untyped-def]
    long_text = " ".join(f"word{i} is a word." for i in range(120))
    with Embedder(model_factory(), max_length=64, n_threads=1, backend="llama",
                  chunking=ChunkConfig(chunk_tokens=32, overlap=4)) as emb:  # fmt: skip
        n = emb.count_tokens(long_text)
        cut = emb.run([long_text, "short"], EncodeCall(long_text="truncate")).receipts
        assert cut[0].n_tokens == n and cut[0].tokens_used == 64 and cut[0].truncated
        assert cut[0].dropped_tokens == n - 64
        assert not cut[1].truncated and cut[1].dropped_tokens == 0
        chunked = emb.run(long_text, EncodeCall(long_text="chunk"))
        receipt = chunked.receipts[0]
        assert receipt.n_tokens == n and not receipt.truncated and receipt.fusion == "weighted"
        doc = emb.encode_long(long_text, chunk_tokens=32, overlap=4)
        assert receipt.chunks == len(doc.chunks) and receipt.spans == tuple((c.start, c.end) for c in doc.chunks)
        np.testing.assert_allclose(chunked.vectors, doc.vector, atol=1e-6)


def test_run_refuses_what_is_not_a_call(tiny_embedder: Embedder) -> None:
    with pytest.raises(ConfigurationError, match="call must be an EncodeCall, not dict"):
        tiny_embedder.run(["x"], {"side": "query"})  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="a set, which has no order"):
        tiny_embedder.encode_iter({"a", "b"})


def test_precision_quantizes_the_final_vectors(tiny_embedder: Embedder) -> None:
    from qwen_embed.quantization import QuantizationRanges, quantize_embeddings

    emb = tiny_embedder
    floats = emb.encode_documents(TEXTS)
    for precision in ("float16", "binary", "ubinary"):
        got = emb.encode_documents(TEXTS, precision=precision)
        np.testing.assert_array_equal(got, quantize_embeddings(floats, precision))
    ranges = QuantizationRanges.from_embeddings(floats)
    got = emb.run(TEXTS, EncodeCall(side="document", precision="int8", ranges=ranges))
    assert got.vectors.dtype == np.int8 and got.call.ranges == ranges
    np.testing.assert_array_equal(got.vectors, quantize_embeddings(floats, "int8", ranges=ranges))
    assert not np.array_equal(got.vectors, quantize_embeddings(emb.encode_queries(TEXTS), "int8", ranges=ranges))
    with pytest.raises(ConfigurationError, match=r"precision='int8' needs ranges=: ranges taken from each batch"):
        emb.encode(TEXTS, precision="int8")
    with pytest.raises(ConfigurationError, match=r"ranges= applies to precision 'int8' or 'uint8', not 'binary'"):
        EncodeCall(precision="binary", ranges=ranges)


def test_a_text_surely_over_max_length_is_refused_before_it_is_tokenized(
    tiny_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qwen_embed import InputTooLongError

    engine = tiny_embedder._engine
    seen: list[int] = []
    original = engine.tokenize

    def recording(text: str, *, special: bool = False) -> np.ndarray:  # failure injection: what gets tokenized
        seen.append(len(text))
        return original(text, special=special)

    monkeypatch.setattr(engine, "tokenize", recording)
    with pytest.raises(InputTooLongError, match=r"Text #1 is at least [\d,]+ tokens .*30,000,000 bytes") as info:
        tiny_embedder.encode(["fine", "a" * 30_000_000])
    assert info.value.index == 1 and max(seen, default=0) < 1000  # never the 30 MB
    seen.clear()
    with pytest.raises(InputTooLongError, match=r"Text #0 is [\d,]+ tokens"):  # the twin: close to the limit, counted
        tiny_embedder.encode(["word " * (tiny_embedder.max_length + 10)])
    assert max(seen) > tiny_embedder.max_length
