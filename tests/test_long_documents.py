"""Long documents through the real engine: long_text="chunk" and encode_long."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qwen_embed import ChunkConfig, ConfigurationError, Embedder, InputTooLongError

BATCH_ATOL = 5e-4  # vectors from different decodes (batch composition) differ by llama.cpp's rounding

PARAGRAPH = (
    "Embedding models map text to vectors. Long reports mix many topics, so one vector dilutes them. "
    "Chunking keeps each part sharp, and fusion brings the parts back together.\n\n"
)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def emb(tiny_model: Path) -> Iterator[Embedder]:
    with Embedder(tiny_model, n_threads=2, max_length=128, chunking=ChunkConfig(48, 8)) as e:
        yield e


@pytest.fixture(scope="module")
def report() -> str:
    return "# Report\n\n" + PARAGRAPH * 4 + "## Methods\n\n" + PARAGRAPH * 3 + "## Results\n\nAll good. " * 20


def test_chunk_policy_keeps_shapes_and_matches_encode_long(emb: Embedder, report: str) -> None:
    assert emb.count_tokens(report) > emb.max_length
    out = emb.encode([report, "short", report[:200]], long_text="chunk")
    assert out.shape == (3, emb.dim) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], emb.encode_long(report).vector, atol=BATCH_ATOL)
    np.testing.assert_allclose(out[1], emb.encode("short"), atol=BATCH_ATOL)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    with pytest.raises(InputTooLongError):
        emb.encode(report)  # the default policy still refuses


def test_under_the_limit_the_vector_is_unchanged(emb: Embedder) -> None:
    text = PARAGRAPH.strip()
    assert emb.count_tokens(text) <= emb.max_length
    np.testing.assert_array_equal(emb.encode(text, long_text="chunk"), emb.encode(text))
    np.testing.assert_allclose(
        emb.encode_long(text, chunk_tokens=120, overlap=0).vector, emb.encode(text), atol=BATCH_ATOL
    )


def test_each_chunk_vector_equals_encode_of_its_text(emb: Embedder, report: str) -> None:
    result = emb.encode_long(report)
    assert len(result.chunks) > 4 and result.fusion == "weighted"
    texts = [c.text for c in result.chunks]
    np.testing.assert_allclose(np.stack([c.vector for c in result.chunks]), emb.encode(texts), atol=BATCH_ATOL)
    for chunk in result.chunks:
        assert report[chunk.start : chunk.end] == chunk.text and chunk.n_tokens <= 48
    assert {c.section for c in result.chunks} == {("Report",), ("Report", "Methods"), ("Report", "Results")}


def test_context_prefix_is_part_of_what_the_chunk_embeds(emb: Embedder, report: str) -> None:
    result = emb.encode_long(report, context_prefix=True, title="Annual")
    chunk = result.chunks[-1]
    assert chunk.section == ("Annual", "Report", "Results")
    np.testing.assert_allclose(chunk.vector, emb.encode("Annual > Report > Results\n\n" + chunk.text), atol=BATCH_ATOL)


def _native_chunks(emb: Embedder, result: object) -> np.ndarray:
    return np.stack([c.vector for c in result.chunks])  # type: ignore[attr-defined]


@pytest.mark.parametrize("fusion", ["weighted", "mean", "positional", "max"])
def test_fusions_equal_their_formulas(emb: Embedder, report: str, fusion: str) -> None:
    result = emb.encode_long(report, fusion=fusion)
    v = _native_chunks(emb, result)
    n = np.array([c.n_tokens for c in result.chunks], dtype=float)
    w = np.ones(len(v))
    w[0] = w[-1] = 1.2
    expected = {
        "weighted": (n[:, None] * v).sum(0) / n.sum(),
        "mean": v.mean(0),
        "positional": (w[:, None] * v).sum(0) / w.sum(),
        "max": v.max(0),
    }[fusion]
    np.testing.assert_allclose(result.vector, _unit(expected), atol=1e-5)


def test_hierarchical_with_a_title(emb: Embedder, report: str) -> None:
    result = emb.encode_long(report, fusion="hierarchical", title="Annual report", title_weight=0.3)
    v = _native_chunks(emb, result)
    sections = [c.section for c in result.chunks]
    order = list(dict.fromkeys(sections))
    section_vecs, section_tokens = [], []
    for path in order:
        rows = [i for i, s in enumerate(sections) if s == path]
        n = np.array([result.chunks[i].n_tokens for i in rows], dtype=float)
        section_vecs.append(_unit((n[:, None] * v[rows]).sum(0) / n.sum()))
        section_tokens.append(n.sum())
    st = np.array(section_tokens)
    doc = _unit((st[:, None] * np.stack(section_vecs)).sum(0) / st.sum())
    expected = _unit(0.7 * doc + 0.3 * emb.encode("Annual report"))
    np.testing.assert_allclose(result.vector, expected, atol=BATCH_ATOL)
    assert [s.path for s in result.sections] == order
    np.testing.assert_allclose(np.stack([s.vector for s in result.sections]), np.stack(section_vecs), atol=1e-5)


def test_matryoshka_dim_applies_after_fusion(emb: Embedder, report: str) -> None:
    full = emb.encode_long(report, normalize=False)
    small = emb.encode_long(report, dim=32)
    np.testing.assert_allclose(small.vector, _unit(full.vector[:32]), atol=1e-5)
    assert small.chunks[0].vector is not None and small.chunks[0].vector.shape == (32,)
    np.testing.assert_allclose(small.chunks[0].vector, emb.encode(small.chunks[0].text, dim=32), atol=BATCH_ATOL)
    assert emb.encode_long(report, return_chunks=False).chunks[0].vector is None


def test_no_chunk_exceeds_the_limit_with_the_query_instruction(emb: Embedder, report: str) -> None:
    instruction = "Given a long report, retrieve the passages that answer the question"
    result = emb.encode_long(report, instruction=instruction, chunk_tokens=200, overlap=10)
    for chunk in result.chunks:
        assert emb.count_tokens(chunk.text, instruction=instruction) <= emb.max_length
    vectors = emb.encode_queries([report], long_text="chunk")
    assert vectors.shape == (1, emb.dim)


def test_user_sections_and_empty_ones(emb: Embedder) -> None:
    result = emb.encode_long("", sections=[("Intro", ""), ("Body", PARAGRAPH * 3), ("Empty", "   \n")], title="T")
    assert {c.section for c in result.chunks} == {("T", "Body")}
    assert [s.path for s in result.sections] == [("T", "Body")]
    for chunk in result.chunks:
        assert result.text[chunk.start : chunk.end] == chunk.text


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t \n"])
def test_empty_and_whitespace_documents(emb: Embedder, text: str) -> None:
    result = emb.encode_long(text)
    assert len(result.chunks) == 1 and result.chunks[0].text == text
    np.testing.assert_allclose(result.vector, emb.encode(text), atol=BATCH_ATOL)
    np.testing.assert_allclose(emb.encode([text], long_text="chunk")[0], emb.encode(text), atol=BATCH_ATOL)


def test_a_50_kb_base64_line(emb: Embedder) -> None:
    line = base64.b64encode(np.random.default_rng(0).bytes(37_500)).decode()  # 50,000 characters, no spaces
    result = emb.encode_long("Attachment: " + line)
    assert len(result.chunks) > 100 and max(c.n_tokens for c in result.chunks) <= 48
    assert np.isfinite(result.vector).all()
    assert emb.encode(["Attachment: " + line], long_text="chunk").shape == (1, emb.dim)


def test_bad_chunk_settings(emb: Embedder, report: str, tiny_model: Path) -> None:
    with pytest.raises(ConfigurationError, match="overlap"):
        emb.encode_long(report, chunk_tokens=64, overlap=64)
    with pytest.raises(ConfigurationError, match="Unknown fusion"):
        emb.encode_long(report, fusion="median")
    with pytest.raises(ConfigurationError, match="chunking preset"):
        Embedder(tiny_model, chunking="haiku")
    with pytest.raises(InputTooLongError, match="no room for chunks"):
        emb.encode_long(report, instruction="word " * 150)


def test_documents_share_batches_and_match_single_calls(emb: Embedder, report: str) -> None:
    docs = [report, PARAGRAPH * 9, "tiny", report.replace("good", "bad")]
    together = emb.encode(docs, long_text="chunk")
    alone = np.stack([emb.encode([d], long_text="chunk")[0] for d in docs])
    np.testing.assert_allclose(together, alone, atol=BATCH_ATOL)


def test_a_100k_token_document(tiny_model: Path) -> None:
    with Embedder(tiny_model, n_threads=2, chunking="technical") as emb:
        unit = emb.count_tokens(PARAGRAPH) - 1
        doc = PARAGRAPH * (100_000 // unit + 1)
        assert emb.count_tokens(doc) > 100_000
        result = emb.encode_long(doc, return_chunks=False)
        assert result.n_tokens >= 100_000 and max(c.n_tokens for c in result.chunks) <= 1024
        assert np.isclose(np.linalg.norm(result.vector), 1.0, atol=1e-5)
        np.testing.assert_allclose(emb.encode([doc], long_text="chunk")[0], result.vector, atol=BATCH_ATOL)
