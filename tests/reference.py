"""An independent numpy forward pass of a Qwen3 encoder, read with the ``gguf`` package.

It shares no code with the library: weights come from ``gguf.GGUFReader``, the maths
is written out in float64 (RMSNorm, per-head q/k RMSNorm, NEOX RoPE, grouped-query
causal attention, SwiGLU, final norm, last-token or mean pooling).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from gguf import GGUFReader


def _as_array(tensor: Any) -> np.ndarray:
    """float64 values of a tensor; quantized ones through gguf-py's own dequantizers."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    shape = tuple(reversed([int(d) for d in tensor.shape]))
    if tensor.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.F64):
        return np.asarray(tensor.data, dtype=np.float64).reshape(shape)
    return np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float64).reshape(shape)


@lru_cache(maxsize=8)
def load_weights(path: str) -> tuple[dict[str, np.ndarray], dict[str, float | int]]:
    reader = GGUFReader(path)
    weights = {t.name: _as_array(t) for t in reader.tensors}
    arch = reader.fields["general.architecture"].contents()

    def get(key: str) -> float | int:
        return reader.fields[f"{arch}.{key}"].contents()

    hp = {
        "n_layer": int(get("block_count")),
        "n_head": int(get("attention.head_count")),
        "n_head_kv": int(get("attention.head_count_kv")),
        "head_dim": int(get("attention.key_length")),
        "eps": float(get("attention.layer_norm_rms_epsilon")),
        "rope_base": float(get("rope.freq_base")),
    }
    return weights, hp


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope_neox(x: np.ndarray, base: float) -> np.ndarray:
    # x: (T, heads, head_dim); rotate the two halves of each head.
    t, _, d = x.shape
    half = d // 2
    inv = base ** (-np.arange(half, dtype=np.float64) * 2.0 / d)
    ang = np.arange(t, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def hidden_states(path: str, tokens: list[int] | np.ndarray) -> np.ndarray:
    """Final-norm hidden states, shape (T, n_embd)."""
    w, hp = load_weights(str(path))
    ids = np.asarray(tokens, dtype=np.int64)
    nh, nkv, hd, eps = hp["n_head"], hp["n_head_kv"], hp["head_dim"], hp["eps"]
    x = w["token_embd.weight"][ids]
    t = len(ids)
    mask = np.triu(np.full((t, t), -np.inf), k=1)
    for i in range(int(hp["n_layer"])):
        p = f"blk.{i}."
        h = _rms(x, w[p + "attn_norm.weight"], eps)
        q = (h @ w[p + "attn_q.weight"].T).reshape(t, nh, hd)
        k = (h @ w[p + "attn_k.weight"].T).reshape(t, nkv, hd)
        v = (h @ w[p + "attn_v.weight"].T).reshape(t, nkv, hd)
        q = _rope_neox(_rms(q, w[p + "attn_q_norm.weight"], eps), hp["rope_base"])
        k = _rope_neox(_rms(k, w[p + "attn_k_norm.weight"], eps), hp["rope_base"])
        group = nh // nkv
        out = np.empty((t, nh, hd))
        for head in range(nh):
            kh, vh = k[:, head // group], v[:, head // group]
            scores = q[:, head] @ kh.T / np.sqrt(hd) + mask
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
            out[:, head] = scores @ vh
        x = x + out.reshape(t, nh * hd) @ w[p + "attn_output.weight"].T
        h = _rms(x, w[p + "ffn_norm.weight"], eps)
        gate = h @ w[p + "ffn_gate.weight"].T
        up = h @ w[p + "ffn_up.weight"].T
        x = x + ((gate / (1.0 + np.exp(-gate))) * up) @ w[p + "ffn_down.weight"].T
    return _rms(x, w["output_norm.weight"], eps)


def embed(
    path: str, tokens: list[int] | np.ndarray, *, pooling: str = "last", dim: int | None = None, normalize: bool = True
) -> np.ndarray:
    """The reference vector: pool, slice to ``dim`` (Matryoshka), L2-normalize."""
    states = hidden_states(path, tokens)
    vec = states[-1] if pooling == "last" else states.mean(axis=0)
    if dim is not None:
        vec = vec[:dim]
    if normalize:
        vec = vec / np.linalg.norm(vec)
    return vec


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
