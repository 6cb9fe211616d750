"""Receipts in the server (issue 23.3): ``"return_receipts": true`` gives each ``data[i]`` its input's
:class:`~qwen_embed.Receipt`, equal to ``Embedder.run(...).receipts``; ``usage`` keeps OpenAI's shape and the
openai client still parses the answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from qwen_embed import Embedder, EncodeCall

from .server_support import MODEL, Running

BATCH_ATOL = 5e-4  # vectors decoded in different batches differ by llama.cpp's rounding
MAX_LENGTH = 64  # room for the query prompt (48 tokens) and some text
LONG = " ".join(f"word{i} and more text" for i in range(40))  # well over MAX_LENGTH tokens
TEXTS = ["What is GGUF?", LONG, "a short one", LONG + " again"]


@pytest.fixture(scope="module", params=["truncate", "chunk"])
def served(request: pytest.FixtureRequest, tiny_model: Path) -> Iterator[tuple[Embedder, Running]]:
    with Embedder(tiny_model, n_threads=2, max_length=MAX_LENGTH, long_text=request.param) as emb:
        with Running(emb) as server:
            yield emb, server


def client(server: Running) -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="EMPTY", max_retries=0)


def test_receipts_equal_embedder_run_and_the_openai_client_parses_them(served: tuple[Embedder, Running]) -> None:
    emb, server = served
    response = client(server).embeddings.create(model=MODEL, input=TEXTS, extra_body={"return_receipts": True})
    expected = emb.run(TEXTS, EncodeCall())
    assert [item.model_extra["receipt"] for item in response.data] == [r.as_dict() for r in expected.receipts]
    vectors = np.array([item.embedding for item in response.data])  # base64, decoded by the client
    np.testing.assert_allclose(vectors, expected.vectors, atol=BATCH_ATOL)
    assert response.usage.model_dump() == {"prompt_tokens": response.usage.prompt_tokens,
                                           "total_tokens": response.usage.prompt_tokens}  # fmt: skip
    receipts = [item.model_extra["receipt"] for item in response.data]
    assert [r["n_tokens"] for r in receipts] == [emb.count_tokens(t) for t in TEXTS]
    long_ones = [r for t, r in zip(TEXTS, receipts) if t.startswith(LONG)]
    if emb.long_text == "truncate":
        assert all(r["truncated"] and r["tokens_used"] == MAX_LENGTH for r in long_ones)
        assert all(r["dropped_tokens"] == r["n_tokens"] - MAX_LENGTH for r in long_ones)
    else:
        assert all(r["chunks"] > 1 and r["fusion"] and len(r["spans"]) == r["chunks"] for r in long_ones)


def test_receipts_follow_the_call_and_are_absent_unless_asked(served: tuple[Embedder, Running]) -> None:
    emb, server = served
    raw = server.post({"model": MODEL + "-query", "input": TEXTS, "return_receipts": True}).json()
    queried = emb.run(TEXTS, EncodeCall(side="query")).receipts
    assert [d["receipt"] for d in raw["data"]] == [r.as_dict() for r in queried]
    # the twin: the document side's receipts count other tokens, so the check above can fail
    assert [d["receipt"] for d in raw["data"]] != [r.as_dict() for r in emb.run(TEXTS, EncodeCall()).receipts]
    assert set(raw["usage"]) == {"prompt_tokens", "total_tokens"}
    plain = server.post({"input": TEXTS, "encoding_format": "float"}).json()
    assert all(set(d) == {"object", "index", "embedding"} for d in plain["data"])
    off = server.post({"input": TEXTS, "return_receipts": False}).json()
    assert all("receipt" not in d for d in off["data"])


@pytest.mark.parametrize("value", ["yes", 1, [], {}])
def test_return_receipts_must_be_a_boolean(served: tuple[Embedder, Running], value: Any) -> None:
    _, server = served
    answer = server.post({"input": "x", "return_receipts": value})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "return_receipts"
    assert error["message"] == f"'return_receipts' must be true or false, not {json.dumps(value)}."
