"""Parts for the reranker tests: random ``Qwen3ForCausalLM`` checkpoints (tied and untied) for
llama.cpp's converter, the official Transformers recipe, and llama.cpp's own RANK pooling as a
second reference. The vocabularies and the reranker GGUFs written directly (every head variant)
come from :mod:`qwen_embed.testing` (``reranker_vocabulary``, ``make_reranker_model``).

Nothing here reaches the Hub; the real Qwen2 vocabulary is used when ``../shared`` is there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from qwen_embed.testing import (
    REAL_THINK_IDS,
    THINK,
    Vocabulary,
    quantize_model,
    reranker_vocabulary,
)
from qwen_embed.testing import RerankerVariant as Variant
from qwen_embed.testing import make_reranker_model as make_reranker_gguf
from qwen_embed.text.rerank_prompt import DEFAULT_RERANK_INSTRUCTION, PREFIX, SUFFIX

from .parity_support import tokenizer_json

__all__ = [
    "REAL_THINK_IDS",
    "RERANK_SHAPE",
    "THINK",
    "OfficialReranker",
    "Variant",
    "make_causal_lm_checkpoint",
    "make_reranker_gguf",
    "quantized",
    "rank_pooling_scores",
    "reranker_vocabulary",
]

RERANK_SHAPE = {  # Q8_0 and the K-quants need rows that are multiples of 256
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
}


# ----------------------------------------------------------------------------- HF checkpoints


def make_causal_lm_checkpoint(
    directory: Path, vocab: Vocabulary, *, tied: bool, seed: int = 0, shape: dict[str, int] | None = None
) -> Path:
    """A random-weight ``Qwen3ForCausalLM`` (tied or untied head) with a reranker's tokenizer files.

    The "yes"/"no" rows of the head are scaled up so scores spread over (0, 1).
    """
    import torch
    from tokenizers import Tokenizer
    from transformers import Qwen3Config, Qwen3ForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    config = Qwen3Config(
        vocab_size=vocab.size,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tied,
        bos_token_id=None,
        eos_token_id=vocab.tokens.index("<|im_end|>"),
        pad_token_id=vocab.eos_id,
        **(shape or RERANK_SHAPE),
    )
    spec = tokenizer_json(vocab)
    spec["post_processor"] = None  # the Qwen3-Reranker tokenizer appends nothing
    known = {entry["content"] for entry in spec["added_tokens"]}
    for text in THINK:
        if text not in known:
            spec["added_tokens"].append(
                {"id": vocab.tokens.index(text), "content": text, "single_word": False, "lstrip": False,
                 "rstrip": False, "normalized": False, "special": False}
            )  # fmt: skip
    (directory / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")

    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).to(torch.float32)
    yes_id, no_id = vocab.tokens.index("yes"), vocab.tokens.index("no")
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    samples = [
        tokenizer.encode(PREFIX + f"<Instruct>: x\n<Query>: {q}\n<Document>: {d}" + SUFFIX).ids
        for q in ("what is it", "why")
        for d in ("", "a short one", "a longer document " * 6)
    ]
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
        head = model.get_output_embeddings().weight
        head[[yes_id, no_id]] *= 5.0  # the yes/no direction: log-odds spread over a few units
        # Centre the scores: every prompt ends with the same suffix token, whose state dominates h.
        h = torch.stack([model.model(torch.tensor([ids])).last_hidden_state[0, -1] for ids in samples])
        offset = (h @ (head[yes_id] - head[no_id])).mean()
        mean = h.mean(dim=0)
        head[yes_id] -= offset / (mean @ mean) * mean
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Qwen2Tokenizer",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "bos_token": None,
                "unk_token": None,
                "add_bos_token": False,
                "add_eos_token": False,
                "model_max_length": 32768,
                "padding_side": "left",
                "clean_up_tokenization_spaces": False,
            }
        ),
        encoding="utf-8",
    )
    return directory


class OfficialReranker:
    """The Qwen3-Reranker README's Transformers recipe (float32): left padding, body-only truncation,
    ``log_softmax([l_no, l_yes])`` at the last position."""

    def __init__(self, directory: Path, *, dtype: str = "float32", threads: int | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads or max(1, len(os.sched_getaffinity(0))))
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(directory, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, dtype)).eval()
        self.no_id = self.tokenizer.convert_tokens_to_ids("no")
        self.yes_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.prefix = self.tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix = self.tokenizer.encode(SUFFIX, add_special_tokens=False)

    def inputs(self, pairs: list[tuple[str, str]], *, instruction: str, max_length: int) -> Any:
        bodies = [f"<Instruct>: {instruction}\n<Query>: {q}\n<Document>: {d}" for q, d in pairs]
        encoded = self.tokenizer(
            bodies,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=max_length - len(self.prefix) - len(self.suffix),
        )
        for i, ids in enumerate(encoded["input_ids"]):
            encoded["input_ids"][i] = self.prefix + ids + self.suffix
        return self.tokenizer.pad(encoded, padding=True, return_tensors="pt", max_length=max_length)

    def token_ids(
        self, pairs: list[tuple[str, str]], *, instruction: str = DEFAULT_RERANK_INSTRUCTION, max_length: int = 8192
    ) -> list[list[int]]:
        batch = self.inputs(pairs, instruction=instruction, max_length=max_length)
        return [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]

    def scores(
        self,
        pairs: list[tuple[str, str]],
        *,
        instruction: str = DEFAULT_RERANK_INSTRUCTION,
        max_length: int = 8192,
        batch_size: int = 4,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(p_yes, log-odds)`` for each pair."""
        torch = self.torch
        probs, odds = [], []
        for start in range(0, len(pairs), batch_size):
            batch = self.inputs(pairs[start : start + batch_size], instruction=instruction, max_length=max_length)
            with torch.no_grad():
                logits = self.model(**batch, logits_to_keep=1).logits[:, -1, :]
            pair = torch.stack([logits[:, self.no_id], logits[:, self.yes_id]], dim=1)
            pair = pair.float()
            probs.append(torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp().numpy())
            odds.append((pair[:, 1] - pair[:, 0]).numpy())
        return np.concatenate(probs).astype(np.float64), np.concatenate(odds).astype(np.float64)


# ----------------------------------------------------------------------------- llama.cpp's RANK pooling


def rank_pooling_scores(path: Path, sequences: list[np.ndarray]) -> np.ndarray:
    """p(yes) from llama.cpp's own RANK pooling (``embeddings=True``), one sequence per decode."""
    import llama_cpp

    model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
    assert model, f"llama.cpp could not load {path}"
    n_cls = int(llama_cpp.llama_model_n_cls_out(model))
    labels = [llama_cpp.llama_model_cls_label(model, i).decode() for i in range(n_cls)]
    params = llama_cpp.llama_context_default_params()
    longest = max(len(s) for s in sequences)
    params.n_ctx = params.n_batch = params.n_ubatch = max(64, longest)
    params.embeddings = True
    params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_RANK
    params.n_threads = params.n_threads_batch = 2
    ctx = llama_cpp.llama_init_from_model(model, params)
    assert ctx
    out = []
    try:
        for tokens in sequences:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            arr = (llama_cpp.llama_token * len(tokens))(*[int(t) for t in tokens])
            batch = llama_cpp.llama_batch_get_one(arr, len(tokens))
            assert llama_cpp.llama_decode(ctx, batch) == 0
            values = llama_cpp.llama_get_embeddings_seq(ctx, 0)
            ranks = [values[i] for i in range(n_cls)]
            out.append(ranks[labels.index("yes")])
    finally:
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
    return np.asarray(out, dtype=np.float64)


def quantized(src: Path, quant: str) -> Path:
    """A quantized copy next to ``src``."""
    return quantize_model(src, src.with_name(f"{src.stem}-{quant}.gguf"), quant)
