"""Each fusion against its formula, computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_embed import ConfigurationError, FusionInput, register_fusion
from qwen_embed.text.fusion import FUSIONS, get_fusion


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture
def data() -> FusionInput:
    rng = np.random.default_rng(1)
    return FusionInput(
        vectors=_unit(rng.normal(size=(5, 8))),
        tokens=np.array([10, 30, 5, 20, 0]),
        sections=np.array([0, 0, 1, 1, 2]),
        title=_unit(rng.normal(size=8)),
        title_weight=0.25,
    )


def test_weighted_mean_positional_max(data: FusionInput) -> None:
    v, n = data.vectors, np.array([10, 30, 5, 20, 1])  # an empty chunk weighs 1
    np.testing.assert_allclose(get_fusion("weighted")(data), (n[:, None] * v).sum(0) / n.sum())
    np.testing.assert_allclose(get_fusion("mean")(data), v.mean(0))
    w = np.array([1.2, 1, 1, 1, 1.2])
    np.testing.assert_allclose(get_fusion("positional")(data), (w[:, None] * v).sum(0) / w.sum())
    np.testing.assert_allclose(get_fusion("max")(data), v.max(0))


def test_hierarchical(data: FusionInput) -> None:
    v = data.vectors
    s0 = _unit((10 * v[0] + 30 * v[1]) / 40)
    s1 = _unit((5 * v[2] + 20 * v[3]) / 25)
    s2 = v[4]
    doc = _unit((40 * s0 + 25 * s1 + 1 * s2) / 66)
    np.testing.assert_allclose(get_fusion("hierarchical")(data), 0.75 * doc + 0.25 * data.title)


def test_register_a_custom_fusion(data: FusionInput) -> None:
    register_fusion("first", lambda x: x.vectors[0], overwrite=True)
    try:
        np.testing.assert_array_equal(get_fusion("first")(data), data.vectors[0])
        with pytest.raises(ConfigurationError, match="exists"):
            register_fusion("first", lambda x: x.vectors[0])
    finally:
        FUSIONS.pop("first")
    with pytest.raises(ConfigurationError, match=r"Unknown fusion 'nope'.*weighted, mean, positional, max"):
        get_fusion("nope")
