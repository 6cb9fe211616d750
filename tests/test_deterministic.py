"""deterministic=True: the same text gives a bit-identical vector whatever its batch, position and thread count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen_embed import Embedder, EncodeCall

from .conftest import ModelFactory

WORDS = "the model reads text and returns one vector for each document query search 向量 检索 Привет 🙂".split()
texts = st.lists(st.sampled_from(WORDS), min_size=0, max_size=60).map(" ".join)


@pytest.fixture(scope="module", params=["llama", "torch"])
def embedders(request: pytest.FixtureRequest, model_factory: ModelFactory) -> dict[int, Embedder]:
    """The same file on 1 and 2 threads, deterministic by default."""
    if request.param == "torch":
        pytest.importorskip("torch")
    path: Path = model_factory()
    dtype = "float32" if request.param == "torch" else None  # pinned: the default follows the hardware
    built = {n: Embedder(path, n_threads=n, backend=request.param, dtype=dtype, deterministic=True) for n in (1, 2)}
    yield built
    for emb in built.values():
        emb.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(probe=texts, others=st.lists(texts, min_size=1, max_size=12), position=st.integers(0, 12), data=st.data())
def test_a_text_gives_the_same_bits_in_any_batch(
    embedders: dict[int, Embedder], probe: str, others: list[str], position: int, data: st.DataObject
) -> None:
    threads = data.draw(st.sampled_from([1, 2]))
    batch = list(others)
    batch.insert(min(position, len(batch)), probe)
    alone = embedders[1].encode([probe])[0]
    packed = embedders[threads].encode(batch)[min(position, len(others))]
    assert alone.tobytes() == packed.tobytes()


def test_the_default_packing_is_not_bit_identical(embedders: dict[int, Embedder]) -> None:
    """The twin: without deterministic, packing a text beside others moves its last bits on llama.cpp and torch."""
    emb = embedders[2]
    probe = "the model reads text and returns one vector"
    others = [" ".join(WORDS[: 3 + i % 15]) * (1 + i % 4) for i in range(40)]
    alone = emb.run([probe], EncodeCall(deterministic=False)).vectors[0]
    differs = False
    for position in range(0, 40, 7):
        batch = [*others[:position], probe, *others[position:]]
        packed = emb.run(batch, EncodeCall(deterministic=False)).vectors[position]
        np.testing.assert_allclose(packed, alone, atol=5e-4)  # the same vector within the packing tolerance
        differs = differs or packed.tobytes() != alone.tobytes()
    assert differs
