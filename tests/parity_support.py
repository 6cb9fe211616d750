"""The parity harness's parts: a random Qwen3 checkpoint in Hugging Face format, the official
Transformers recipe, and llama.cpp's own converter taken from the llama-cpp-python sdist.

Nothing here reaches the Hub: the checkpoint is generated, the converter comes from the package
registry (``pip download llama-cpp-python==<installed version> --no-binary :all:``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from qwen_embed.testing import Vocabulary

PARITY_SHAPE = {  # K-quants need rows that are multiples of 256; 512 wide lets MRL dim=256 be a real slice
    "hidden_size": 512,
    "intermediate_size": 1024,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 64,
}
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CONTROL = 3


def tokenizer_json(vocab: Vocabulary) -> dict[str, Any]:
    """A ``tokenizers`` file for ``vocab`` as Qwen ships it: NFC, Qwen2 split, byte-level BPE, EOS appended."""
    eos = vocab.tokens[vocab.eos_id]
    added = [
        {
            "id": i,
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, (t, kind) in enumerate(zip(vocab.tokens, vocab.token_types))
        if kind == _CONTROL
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            ],
        },
        "post_processor": {  # what the official Qwen3-Embedding tokenizer does: append <|endoftext|>
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}}],
            "pair": [
                {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
                {"SpecialToken": {"id": eos, "type_id": 1}},
            ],
            "special_tokens": {eos: {"id": eos, "ids": [vocab.eos_id], "tokens": [eos]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(vocab.tokens)},
            "merges": [m.split(" ", 1) for m in vocab.merges],
        },
    }


def make_hf_checkpoint(
    directory: Path, vocab: Vocabulary, *, seed: int = 0, shape: dict[str, int] | None = None
) -> Path:
    """Write a random-weight ``Qwen3Model`` checkpoint (config, safetensors, tokenizer) to ``directory``."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    directory.mkdir(parents=True, exist_ok=True)
    config = Qwen3Config(
        vocab_size=len(vocab.tokens),
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=vocab.eos_id,
        torch_dtype="float32",
        **(shape or PARITY_SHAPE),
    )
    torch.manual_seed(seed)
    model = Qwen3Model(config)
    with torch.no_grad():  # non-trivial norms, so a mistake in their use would show
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
    model.save_pretrained(directory, safe_serialization=True)
    eos = vocab.tokens[vocab.eos_id]
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer_json(vocab)), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Qwen2Tokenizer",
                "eos_token": eos,
                "pad_token": eos,
                "bos_token": None,
                "unk_token": None,
                "add_bos_token": False,
                "add_eos_token": True,
                "model_max_length": 32768,
                "padding_side": "left",
                "clean_up_tokenization_spaces": False,
            }
        ),
        encoding="utf-8",
    )
    return directory


class OfficialRecipe:
    """The Qwen3-Embedding README's Transformers recipe: left padding, last-token pooling, L2 normalize."""

    def __init__(self, directory: Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(directory, padding_side="left")
        self.model = AutoModel.from_pretrained(directory, torch_dtype=torch.float32).eval()

    @staticmethod
    def detailed_instruct(task: str, query: str) -> str:
        return f"Instruct: {task}\nQuery:{query}"

    def encode(self, texts: list[str], *, dim: int | None = None, batch_size: int = 8) -> np.ndarray:
        torch = self.torch
        out = []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                texts[i : i + batch_size], padding=True, truncation=True, max_length=8192, return_tensors="pt"
            )
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"]
            left_padded = bool((mask[:, -1].sum() == mask.shape[0]).item())
            if left_padded:
                pooled = hidden[:, -1]
            else:
                lengths = mask.sum(dim=1) - 1
                pooled = hidden[torch.arange(hidden.shape[0]), lengths]
            if dim is not None:
                pooled = pooled[:, :dim]
            out.append(torch.nn.functional.normalize(pooled, p=2, dim=1).numpy())
        return np.concatenate(out)


# ----------------------------------------------------------------------------- the converter


def llama_cpp_source(cache: Path) -> Path:
    """``vendor/llama.cpp`` of the installed llama-cpp-python version, from its sdist on the package registry.

    ``QWEN_EMBED_LLAMA_CPP_SRC`` may point at an unpacked ``llama.cpp`` folder instead.
    """
    override = os.environ.get("QWEN_EMBED_LLAMA_CPP_SRC")
    if override:
        return Path(override)
    import llama_cpp

    version = llama_cpp.__version__
    root = cache / f"llama-cpp-python-{version}"
    target = root / "llama.cpp"
    if (target / "convert_hf_to_gguf.py").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
         f"llama-cpp-python=={version}", "-d", str(root)],
        check=True,
    )  # fmt: skip
    archive = next(root.glob("llama_cpp_python-*.tar.gz"))
    prefix = f"{archive.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    staging = root / "staging"
    with tarfile.open(archive) as tar:
        members = [
            m for m in tar.getmembers() if m.name.startswith(prefix) and m.name[len(prefix) :].startswith(wanted)
        ]
        tar.extractall(staging, members=members, filter="data")
    shutil.move(str(staging / prefix), str(target))
    shutil.rmtree(staging, ignore_errors=True)
    archive.unlink()
    return target


_CONVERT = """
import sys
sys.path.insert(0, {src!r})
sys.argv = ["convert_hf_to_gguf.py", *{args!r}]
import convert_hf_to_gguf
if {force_qwen2!r}:
    # A vocabulary trained by the tests is not the real Qwen2 one, so the converter cannot recognise
    # its pre-tokenizer by hashing; it uses the same Qwen2 split, so say so.
    from conversion.base import TextModel
    TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
convert_hf_to_gguf.main()
"""


def convert(src: Path, checkpoint: Path, out: Path, *, outtype: str, real_vocab: bool) -> Path:
    """Run llama.cpp's ``convert_hf_to_gguf.py`` on ``checkpoint``."""
    args = [str(checkpoint), "--outtype", outtype, "--outfile", str(out)]
    code = _CONVERT.format(src=str(src), args=args, force_qwen2=not real_vocab)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"convert_hf_to_gguf.py failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return out
