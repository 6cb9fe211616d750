"""Prompts: exact strings, exact token ids, the registry, and the Embedder wrappers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from qwen_embed import Embedder, InvalidPromptError, PromptRegistry, UnknownPromptError, get_prompt, list_prompts
from qwen_embed.text.prompts import DEFAULT_REGISTRY, official_query

from .reference import cosine
from .reference import embed as ref_embed

WEB = "Given a web search query, retrieve relevant passages that answer the query"


def test_exact_query_and_document_strings() -> None:
    assert get_prompt("query").format_query("What is GGUF?") == f"Instruct: {WEB}\nQuery:What is GGUF?"
    assert get_prompt("document").format_query("A doc.") == "A doc."
    assert get_prompt("query").format_passage("A doc.") == "A doc."  # asymmetric: documents stay bare
    sts = get_prompt("sts")
    assert sts.symmetric
    assert sts.format_passage("a") == "Instruct: Retrieve semantically similar text\nQuery:a"
    assert get_prompt("bitext").format_query("x") == "Instruct: Retrieve parallel sentences\nQuery:x"


def test_builtin_presets() -> None:
    names = set(list_prompts())
    expected = {
        "query",
        "document",
        "web_search",
        "qa",
        "code_search",
        "duplicate_question",
        "sts",
        "bitext",
        "classification",
        "clustering",
        "fact_checking",
        "code_retrieval",
        "patent_classification",
        "medical_literature",
        "legal_case_retrieval",
        "ecommerce_search",
        "cross_lingual",
    }
    assert expected <= names
    for name in ("classification", "clustering", "sts", "bitext"):
        assert get_prompt(name).symmetric


def test_token_ids_the_model_sees(tiny_embedder: Embedder) -> None:
    emb = tiny_embedder
    text = "What is GGUF?"
    by_hand = emb.tokenize(f"Instruct: {WEB}\nQuery:{text}")
    np.testing.assert_array_equal(emb.tokenize(text, prompt_name="query"), by_hand)
    np.testing.assert_array_equal(emb.tokenize(text, instruction=WEB), by_hand)
    assert emb.format(text, prompt_name="query") == f"Instruct: {WEB}\nQuery:{text}"
    assert emb.count_tokens(text, prompt_name="query") == len(by_hand) > emb.count_tokens(text)
    assert by_hand[-1] == emb.eos_token_id and int((by_hand == emb.eos_token_id).sum()) == 1


def test_encode_queries_and_documents_equal_the_recipe_by_hand(tiny_embedder: Embedder, tiny_model: Path) -> None:
    emb = tiny_embedder
    queries = ["What is GGUF?", "how fast is llama.cpp"]
    docs = ["GGUF is a file format.", ""]
    q = emb.encode_queries(queries)
    d = emb.encode_documents(docs)
    np.testing.assert_allclose(q, emb.encode([official_query(WEB, t) for t in queries]), atol=1e-6)
    np.testing.assert_allclose(d, emb.encode(docs), atol=1e-6)
    # Independent check: the numpy reference on the hand-made token sequence.
    ids = emb.tokenize(f"Instruct: {WEB}\nQuery:{queries[0]}")
    assert cosine(q[0], ref_embed(str(tiny_model), ids)) >= 0.99999
    assert cosine(d[0], ref_embed(str(tiny_model), emb.tokenize(docs[0]))) >= 0.99999


def test_symmetric_task_instructs_both_sides(tiny_embedder: Embedder) -> None:
    emb = tiny_embedder
    a = emb.encode_documents(["a cat sits"], task="sts")
    b = emb.encode(["Instruct: Retrieve semantically similar text\nQuery:a cat sits"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(emb.encode_queries(["a cat sits"], task="sts"), b, atol=1e-6)


def test_custom_template(tiny_embedder: Embedder) -> None:
    reg = PromptRegistry()
    reg.register_prompt("seed", "Find the answer", template="<instruct>{instruction}</instruct><text>{text}</text>")
    assert reg["seed"].format_query("hi") == "<instruct>Find the answer</instruct><text>hi</text>"
    with Embedder(tiny_embedder.model_path, prompts=reg) as emb:
        np.testing.assert_array_equal(
            emb.tokenize("hi", prompt_name="seed"), emb.tokenize("<instruct>Find the answer</instruct><text>hi</text>")
        )


def test_truncate_keeps_prompt_and_template_suffix(tiny_embedder: Embedder) -> None:
    reg = PromptRegistry()
    reg.register_prompt("wrap", "Do it", template="[{instruction}]{text}</end>")
    with Embedder(tiny_embedder.model_path, prompts=reg, max_length=24, long_text="truncate") as emb:
        long = "word " * 200
        full = emb.tokenize(long, prompt_name="wrap")
        suffix = emb.tokenize("</end>")[:-1]
        vec = emb.encode(long, prompt_name="wrap")
        expected_ids = [*full[: 24 - 1 - len(suffix)].tolist(), *suffix.tolist(), emb.eos_token_id]
        raw = emb._engine.embed([np.asarray(expected_ids, dtype=np.int32)])[0]  # type: ignore[union-attr]
        assert cosine(vec, raw) >= 0.99999


def test_prompt_tokens_count_towards_the_limit(tiny_model: Path) -> None:
    with Embedder(tiny_model, max_length=20) as emb:
        text = "short"
        assert emb.count_tokens(text) <= 20 < emb.count_tokens(text, prompt_name="query")
        emb.encode(text)
        with pytest.raises(ValueError, match="limit is max_length=20"):
            emb.encode(text, prompt_name="query")


def test_instruction_wins_with_a_warning(tiny_embedder: Embedder, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qwen_embed"):
        a = tiny_embedder.encode("x", prompt_name="sts", instruction="Custom task")
    assert "instruction wins" in caplog.text
    np.testing.assert_allclose(a, tiny_embedder.encode("Instruct: Custom task\nQuery:x"), atol=1e-6)


def test_default_prompt_name_and_mapping(tiny_model: Path) -> None:
    with Embedder(tiny_model, prompts={"mine": "My task"}, default_prompt_name="mine") as emb:
        assert "mine" in emb.list_prompts() and "query" in emb.list_prompts()
        assert emb.format("t") == "Instruct: My task\nQuery:t"
        np.testing.assert_allclose(emb.encode("t"), emb.encode("t", instruction="My task"), atol=1e-6)
    assert "mine" not in DEFAULT_REGISTRY  # a mapping extends a copy


def test_unknown_prompt_lists_names_and_closest(tiny_embedder: Embedder) -> None:
    with pytest.raises(UnknownPromptError, match=r"Unknown prompt 'quey'\. Did you mean 'query'\? Available: .*sts"):
        tiny_embedder.encode("x", prompt_name="quey")
    with pytest.raises(UnknownPromptError):
        Embedder(tiny_embedder.model_path, default_prompt_name="nope")


@pytest.mark.parametrize("bad", ["", "   ", 3, ["a"]])
def test_bad_instruction(tiny_embedder: Embedder, bad: object) -> None:
    with pytest.raises(InvalidPromptError, match="instruction"):
        tiny_embedder.encode("x", instruction=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidPromptError):
        PromptRegistry().register_prompt("n", bad)  # type: ignore[arg-type]


def test_register_requires_overwrite() -> None:
    reg = PromptRegistry()
    reg.register_prompt("t", "One")
    with pytest.raises(InvalidPromptError, match="overwrite=True"):
        reg.register_prompt("t", "Two")
    assert reg.register_prompt("t", "Two", overwrite=True).query == "Two"
    with pytest.raises(InvalidPromptError, match="template"):
        reg.register_prompt("u", "x", template="no placeholders")


def test_load_official_json_shape(tmp_path: Path) -> None:
    path = tmp_path / "task_prompts.json"
    path.write_text(
        json.dumps(
            {
                "ArguAna": {"query": "Given a claim, find arguments", "passage": "Given a claim, find arguments"},
                "MSMARCO": "Given a web search query, retrieve relevant passages",
            }
        )
    )
    reg = PromptRegistry()
    assert reg.load_json(path) == ["ArguAna", "MSMARCO"]
    assert reg["ArguAna"].symmetric and reg["MSMARCO"].passage is None


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected an object"),
        ('{"Bad": 3}', "key 'Bad'"),
        ('{"Empty": ""}', "key 'Empty'"),
        ('{"Odd": {"passage": "x"}}', "key 'Odd'"),
    ],
)
def test_malformed_json(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "prompts.json"
    path.write_text(content)
    reg = PromptRegistry()
    with pytest.raises(InvalidPromptError, match=match) as info:
        reg.load_json(path)
    assert "prompts.json" in str(info.value)
    assert len(reg) == 0  # nothing half-loaded
