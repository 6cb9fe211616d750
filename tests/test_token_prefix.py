"""The first tokens of a long text without tokenizing all of it (qwen_embed.text.token_prefix).

Checked against the whole text's tokens on adversarial texts (runs of one letter, of spaces, of
newlines and spaces, CJK, emoji, symbols, digits, user-defined tokens), on llama.cpp's tokenizer and
on the torch engine's ``tokenizers`` BPE, with the real Qwen2 vocabulary when ../shared has it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwen_embed._pipeline import TextTokenizer
from qwen_embed.engines.llama import LlamaCppEngine
from qwen_embed.text.token_prefix import MARGIN_TOKENS, is_boundary, prefix_piece

from .conftest import ModelFactory, real_vocab

ATOMS = ["a", "aa", " ", "  ", "\n", "\r\n", "\t", "中", "文", "🎉", "=", "-", ".", ",", "'s", "'", "1", "23",
         "é", "e\u0301", "Hello", " world", "ß", "\u3000", "\xa0", "<|endoftext|>", "ि", "ह", "\u200b", "\x1c",
         "'ll"]  # fmt: skip
RUNS = [
    "a" * 6000,
    " " * 6000,
    "\n" + " " * 6000 + "\n" + "x",
    "x" + " \n" * 3000,
    "中" * 5000,
    "🎉" * 3000,
    "=" * 6000 + "abc",
    "=\n" * 3000,
    ("word " * 10 + "\n\n" + " " * 300) * 20,
    "1" * 5000,
    "\u3000 \t" * 2000 + "\n" + "z",
]


def adversarial(seed: int, count: int, size: int, extra: tuple[str, ...] = ()) -> Iterator[str]:
    rng = random.Random(seed)
    atoms = ATOMS + list(extra)
    yield from RUNS
    for _ in range(count):
        parts: list[str] = []
        while sum(map(len, parts)) < size:
            parts.append(rng.choice(atoms) * rng.choice([1, 1, 1, 2, 5, 50, 400]))
        yield "".join(parts)


@pytest.fixture(scope="module")
def vocab_model(model_factory: ModelFactory) -> Path:
    vocab = real_vocab()
    return model_factory(vocab=vocab) if vocab else model_factory()


@pytest.fixture(scope="module", params=["llama", "torch"])
def engine(request: pytest.FixtureRequest, vocab_model: Path) -> Iterator[Any]:
    if request.param == "torch":
        pytest.importorskip("torch")
        from qwen_embed.engines.torch import TorchEngine

        made: Any = TorchEngine(vocab_model, pooling="last", n_threads=2, dtype="float32")
    else:
        made = LlamaCppEngine(vocab_model, pooling="last", n_threads=2, max_context=512, quantized=False)
    yield made
    made.close()


def _agreeing(ids: np.ndarray, full: np.ndarray) -> int:
    """How many leading tokens of ``ids`` equal the whole text's."""
    n = min(len(ids), len(full))
    differ = np.flatnonzero(ids[:n] != full[:n])
    return int(differ[0]) if len(differ) else n


def test_pieces_tokenize_to_the_whole_texts_first_tokens(engine: Any) -> None:
    rng = random.Random(1)
    protected = engine.token_facts()[1]
    exact = runs = naive_wrong = 0
    for text in adversarial(1, 25, 2500, protected[:3]):
        full = engine.tokenize(text)
        for cut in rng.sample(range(1, len(text)), 12):
            piece, is_exact = prefix_piece(text, cut, protected)
            ids = engine.tokenize(piece)
            if is_exact:  # every token, the last included
                exact += 1
                assert _agreeing(ids, full) == len(ids), (text[max(0, cut - 20) : cut + 20], cut)
            else:  # all but the margin
                runs += 1
                assert _agreeing(ids, full) >= len(ids) - MARGIN_TOKENS, (text[max(0, cut - 20) : cut + 20], cut)
            naive = engine.tokenize(text[:cut])  # the broken twin: cut anywhere, keep every token
            naive_wrong += _agreeing(naive, full) < len(naive)
    assert exact > 100 and runs > 20
    assert naive_wrong > 50  # a plain cut does change the last tokens: the rules above are needed


def test_tokens_prefix_equals_the_whole_tokenization_cut(engine: Any) -> None:
    tokenizer = TextTokenizer(lambda: engine)
    rng = random.Random(2)
    for text in adversarial(2, 12, 40_000):
        full = tokenizer.tokens(text, None)
        for limit in {1, 7, 300, 2000, rng.randrange(1, 6000), len(full) - 1, len(full), len(full) + 1}:
            ids, cut = tokenizer.tokens_prefix(text, limit)
            assert ids.tolist() == full[:limit].tolist(), (text[:40], limit)
            assert cut == (len(full) > limit)


def test_only_a_bounded_prefix_is_tokenized_and_min_tokens_needs_none(engine: Any) -> None:
    seen: list[int] = []

    class Recording:  # failure injection: the engine reports what it was asked to tokenize
        def __getattr__(self, name: str) -> Any:
            return getattr(engine, name)

        def tokenize(self, text: str, *, special: bool = False) -> np.ndarray:
            seen.append(len(text))
            return engine.tokenize(text, special=special)

    tokenizer = TextTokenizer(lambda: Recording())  # type: ignore[arg-type, return-value]
    longest = engine.token_facts()[0]
    for text in ("a" * 30_000_000, " " * 10_000_000, "word " * 2_000_000, "🎉" * 3_000_000):
        seen.clear()
        ids, cut = tokenizer.tokens_prefix(text, 2048)
        assert len(ids) == 2048 and cut
        assert max(seen) <= 4 * (2048 + MARGIN_TOKENS) * longest and sum(seen) <= 2 * max(seen), seen
        seen.clear()
        bound = tokenizer.min_tokens(text)
        assert seen == [] and bound == len(text.encode()) // longest
    for text in adversarial(3, 5, 3000):
        assert tokenizer.min_tokens(text) <= len(tokenizer.tokens(text, None))


def test_a_different_pre_tokenizer_is_tokenized_whole(engine: Any) -> None:
    tokenizer = TextTokenizer(lambda: engine, pre_tokenizer="llama-bpe")
    text = "word " * 50_000
    ids, cut = tokenizer.tokens_prefix(text, 10)
    assert cut and ids.tolist() == tokenizer.tokens(text, None)[:10].tolist()


def test_boundary_rules() -> None:
    assert is_boundary("ab c", 2)  # after a letter, before a space
    assert not is_boundary("abc", 2)  # inside a word
    assert is_boundary("12", 1)  # after a digit
    assert not is_boundary("  1", 2)  # before a digit after spaces: "  1" splits " ", " ", "1"
    assert is_boundary("=. x", 2)  # after a symbol, before a space
    assert not is_boundary("=\n\n", 1)  # a symbol's newlines belong to it
    assert is_boundary("\nx", 1) and not is_boundary("\n ", 1)
    assert prefix_piece("see <think> here", 10, []) == ("see <think", True)  # "k>" ends a letter run...
    assert prefix_piece("see <think> here", 10, ["<think>"]) == ("see ", True)  # ...not inside a user-defined token


def test_the_torch_tokenizer_splits_user_defined_tokens_like_llama_cpp(vocab_model: Path) -> None:
    pytest.importorskip("torch")
    from qwen_embed.engines.torch import TorchEngine

    llama = LlamaCppEngine(vocab_model, pooling="last", n_threads=1, max_context=64, quantized=False)
    torch_engine = TorchEngine(vocab_model, pooling="last", n_threads=1, dtype="float32")
    user_defined = llama.token_facts()[1]
    if not user_defined:
        pytest.skip("this vocabulary has no user-defined tokens")
    for token in user_defined[:5]:
        text = f"a {token} b{token}"
        assert torch_engine.tokenize(text).tolist() == llama.tokenize(text).tolist()
    assert torch_engine.token_facts() == llama.token_facts()
    llama.close()
    torch_engine.close()
