"""mteb: QwenEmbedEncoder's instructions per side and task type, its metadata, and mteb's offline mock
tasks (no data set is downloaded)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mteb")

from mteb.mocks import ALL_MOCK_TASK_TEST_GRID
from mteb.types import PromptType

from qwen_embed import Embedder
from qwen_embed.integrations.mteb import QwenEmbedEncoder, qwen3_instruction_template

from .integration_support import DOCUMENTS, CountingEmbedder, assert_other_vectors, assert_same_vectors

ROOT = Path(__file__).resolve().parents[1]


def _task(name: str):
    return next(t for t in ALL_MOCK_TASK_TEST_GRID if t.metadata.name == name)


@pytest.fixture(scope="module")
def encoder(tiny_model: Path) -> QwenEmbedEncoder:
    return QwenEmbedEncoder(model=tiny_model, embedder_options={"n_threads": 2})


def _encode(encoder: QwenEmbedEncoder, task: str, prompt_type: PromptType | None) -> np.ndarray:
    batches = [{"text": DOCUMENTS[:3]}, {"text": DOCUMENTS[3:]}]  # what mteb's DataLoader yields
    meta = _task(task).metadata
    return encoder.encode(batches, task_metadata=meta, hf_split="test", hf_subset="default", prompt_type=prompt_type)


def test_instructions_follow_qwens_recipe(encoder: QwenEmbedEncoder) -> None:
    emb: Embedder = encoder.embedder
    retrieval = encoder.get_instruction(_task("MockRetrievalTask").metadata, PromptType.query)
    sts = encoder.get_instruction(_task("MockSTSTask").metadata, None)
    assert retrieval and sts
    queries = _encode(encoder, "MockRetrievalTask", PromptType.query)
    assert queries.dtype == np.float32 and queries.shape == (4, 64)
    assert_same_vectors(queries, emb.encode(DOCUMENTS, instruction=retrieval))  # Instruct: ...\nQuery:{text}
    assert_other_vectors(queries, emb.encode_documents(DOCUMENTS))  # the broken twin: bare queries differ
    assert_same_vectors(_encode(encoder, "MockRetrievalTask", PromptType.document), emb.encode(DOCUMENTS))  # bare
    assert_same_vectors(_encode(encoder, "MockSTSTask", None), emb.encode(DOCUMENTS, instruction=sts))  # symmetric
    assert qwen3_instruction_template("Find it", PromptType.query) == "Instruct: Find it\nQuery:"
    assert qwen3_instruction_template("Find it", PromptType.document) == ""


def test_one_engine_call_per_encode(tiny_model: Path) -> None:
    emb = CountingEmbedder(tiny_model, n_threads=2)
    encoder = QwenEmbedEncoder(embedder=emb)
    emb.calls.clear()
    _encode(encoder, "MockRetrievalTask", PromptType.document)  # two of mteb's batches, one engine call
    _encode(encoder, "MockRetrievalTask", PromptType.query)
    assert [c[:2] for c in emb.calls] == [("document", 4), ("query", 4)]


def test_prompts_dict_overrides_the_task_prompt(tiny_model: Path) -> None:
    custom = QwenEmbedEncoder(
        model=tiny_model, prompts_dict={"STS": "Say if two sentences mean the same"}, embedder_options={"n_threads": 2}
    )
    assert_same_vectors(
        _encode(custom, "MockSTSTask", None),
        custom.embedder.encode(DOCUMENTS, instruction="Say if two sentences mean the same"),
    )


def test_metadata(encoder: QwenEmbedEncoder, tiny_model: Path) -> None:
    meta = encoder.mteb_model_meta
    assert meta.name == f"local/{tiny_model.stem}" and meta.framework == ["GGUF"]
    assert meta.embed_dim == 64 and meta.similarity_fn_name == "cosine" and meta.use_instructions
    assert meta.experiment_kwargs == {"quant": "F32", "engine": "llama.cpp", "dim": 64}
    small = QwenEmbedEncoder(model=tiny_model, dim=32, model_name="me/tiny", embedder_options={"n_threads": 2})
    assert small.mteb_model_meta.name == "me/tiny" and small.mteb_model_meta.experiment_kwargs["dim"] == 32
    assert small.embedder is encoder.embedder  # one model for both


def test_mteb_example_runs_mock_tasks(
    tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """mteb.evaluate on four of mteb's offline mock tasks (retrieval, STS, classification, pairs)."""
    monkeypatch.setattr(sys, "argv", ["mteb_evaluate.py", str(tiny_model), "--quick"])
    runpy.run_path(str(ROOT / "examples" / "mteb_evaluate.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert f"model local/{tiny_model.stem}" in out
    for name in ("MockRetrievalTask", "MockSTSTask", "MockClassificationTask", "MockPairClassificationTask"):
        assert f"{name}: main score " in out
