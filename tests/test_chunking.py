"""The token-exact chunker on the real llama.cpp tokenizer, and Markdown structure."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen_embed import ChunkConfig, ConfigurationError, Embedder
from qwen_embed.text.chunking import (
    CHUNK_PRESETS,
    Chunker,
    Section,
    chunk_preset,
    markdown_sections,
    sections_from_pairs,
)


@pytest.fixture(scope="module")
def chunker(tiny_embedder: Embedder) -> Chunker:
    engine = tiny_embedder._require_engine()
    return Chunker(engine.tokenize, engine.token_bytes)


def _whole(text: str) -> Section:
    return Section((), 0, len(text))


# Any Unicode but lone surrogates (not encodable; the embedder rejects them with InvalidInputError).
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=400)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_TEXT, window=st.integers(8, 40), overlap_share=st.floats(0, 0.9))
def test_offsets_reconstruct_any_unicode(chunker: Chunker, text: str, window: int, overlap_share: float) -> None:
    overlap = int(window * overlap_share)
    chunks = chunker.split(text, _whole(text), window=window, overlap=overlap)
    if not text.strip():
        assert chunks == []
        return
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for before, after in itertools.pairwise(chunks):
        assert before.start < after.start <= before.end  # moves forward, no gap
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.text.encode("utf-8").decode("utf-8") == chunk.text  # whole characters only
        assert 0 < chunk.n_tokens <= window
        assert chunk.n_tokens == len(chunker._tokenize(chunk.text))


def test_prefers_blank_lines_then_sentences(chunker: Chunker) -> None:
    paragraph = "This is a sentence about things. Another one follows here. "
    text = (paragraph * 3).strip() + "\n\n" + (paragraph * 3).strip() + "\n\n" + (paragraph * 3).strip()
    n_para = chunker.count((paragraph * 3).strip() + "\n\n")
    chunks = chunker.split(text, _whole(text), window=n_para + 5, overlap=0)
    assert all(c.text.endswith("\n\n") for c in chunks[:-1]), [c.text[-12:] for c in chunks]
    short = chunker.split(text, _whole(text), window=max(8, n_para // 2), overlap=0)
    assert all(c.text.rstrip().endswith(".") for c in short[:-1]), [c.text[-12:] for c in short]


def test_a_word_longer_than_the_window_is_cut_between_tokens(chunker: Chunker) -> None:
    import base64

    line = base64.b64encode(np.random.default_rng(0).bytes(3_000)).decode()  # one 4 KB "word"
    text = "Attachment:\n" + line + "\nEnd."
    chunks = chunker.split(text, _whole(text), window=64, overlap=8)
    assert len(chunks) > 5
    assert "".join(c.text for c in _without_overlap(chunks, text)) == text
    assert max(c.n_tokens for c in chunks) <= 64


def _without_overlap(chunks: list, text: str) -> list:  # type: ignore[type-arg]
    class Piece:
        def __init__(self, s: str) -> None:
            self.text = s

    out, pos = [], 0
    for c in chunks:
        out.append(Piece(text[max(pos, c.start) : c.end]))
        pos = c.end
    return out


def test_markdown_sections_build_paths_and_skip_code_fences() -> None:
    text = (
        "Preface.\n# Guide\nIntro.\n## Install\npip it.\n```\n# not a heading\n```\n## Use\nCall it.\n"
        "# Appendix\nEnd.\n"
    )
    sections = markdown_sections(text, title="Manual")
    assert [s.path for s in sections] == [
        ("Manual",),
        ("Manual", "Guide"),
        ("Manual", "Guide", "Install"),
        ("Manual", "Guide", "Use"),
        ("Manual", "Appendix"),
    ]
    assert "".join(text[s.start : s.end] for s in sections) == text
    assert text[sections[2].start : sections[2].end].startswith("## Install\npip it.\n```\n# not a heading")


def test_sections_from_pairs_join_with_blank_lines() -> None:
    text, sections = sections_from_pairs([("A", "alpha"), ("B", ""), ("C", "gamma")], title="T")
    assert text == "alpha\n\n\n\ngamma"
    assert [(s.path, text[s.start : s.end]) for s in sections] == [
        (("T", "A"), "alpha"),
        (("T", "B"), ""),
        (("T", "C"), "gamma"),
    ]
    with pytest.raises(ConfigurationError, match=r"sections\[0\]"):
        sections_from_pairs([("only a title",)])  # type: ignore[list-item]


def test_config_validation_and_presets() -> None:
    with pytest.raises(ConfigurationError, match=r"overlap .* must be smaller than chunk_tokens"):
        ChunkConfig(chunk_tokens=128, overlap=128)
    with pytest.raises(ConfigurationError, match="at least 8"):
        ChunkConfig(chunk_tokens=4, overlap=0)
    with pytest.raises(ConfigurationError, match="title_weight"):
        ChunkConfig(title_weight=2.0)
    assert (chunk_preset("paper").chunk_tokens, chunk_preset("paper").overlap) == (2048, 256)
    assert {k: (v.chunk_tokens, v.overlap) for k, v in CHUNK_PRESETS.items() if k != "general"} == {
        "technical": (1024, 128),
        "paper": (2048, 256),
        "fiction": (512, 64),
        "legal": (1536, 192),
        "code": (768, 96),
    }
    with pytest.raises(ConfigurationError, match="Unknown chunking preset 'poetry'"):
        chunk_preset("poetry")
