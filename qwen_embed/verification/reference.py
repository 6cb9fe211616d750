"""The official Transformers recipes, written out from the QwenLM/Qwen3-Embedding README.

This module is the yardstick, so it shares nothing with the code it measures: the prompt
strings, the instruction format, the pooling and the scoring are written here again, from the
README, not imported from :mod:`qwen_embed.text`. It needs the ``parity`` extra (PyTorch and
Transformers), imported only when a reference is loaded. Weights run in float32.

- Embedding (README, "Transformers Usage"): ``AutoTokenizer`` (its post-processor appends
  ``<|endoftext|>``) and ``AutoModel``; queries as ``Instruct: {task}\\nQuery:{text}``, documents
  bare; the final hidden state at the last token (the EOS), L2-normalized.
- Reranker: ``AutoModelForCausalLM``; ``prefix + "<Instruct>: {instruction}\\n<Query>: {query}\\n
  <Document>: {doc}" + suffix``; the score is ``softmax([l_no, l_yes])[yes]`` at the last position.

Texts are tokenized with ``split_special_tokens=True``: a control-token look-alike written in a
query or document (a literal ``<|endoftext|>``) stays plain text, as it does in this library. The
tokenizer called as the README calls it would read it as the control token; :meth:`parses_control`
says where that happens, so the report can show it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .._config import default_threads
from ..errors import ModelNotFoundError, UnsupportedModelError

__all__ = [
    "EMBEDDING_QUERY_FORMAT",
    "EOS_TEXT",
    "RERANK_BODY_FORMAT",
    "RERANK_INSTRUCTION",
    "RERANK_PREFIX",
    "RERANK_SUFFIX",
    "ReferenceEmbedder",
    "ReferenceReranker",
    "check_checkpoint",
]

#: The README's query format (no space after ``Query:``).
EMBEDDING_QUERY_FORMAT = "Instruct: {task}\nQuery:{text}"
#: The token the official embedding recipe pools at.
EOS_TEXT = "<|endoftext|>"
RERANK_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
RERANK_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
RERANK_BODY_FORMAT = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
RERANK_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
MAX_LENGTH = 8192

_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")


def _require(module: str) -> ModuleType:
    from ..integrations import MissingExtraError

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"verify's reference (the official Transformers recipe) needs the {module!r} package, which is not "
            f'installed ({error}). Install it with: pip install "qwen-embed[parity]"'
        ) from error


def check_checkpoint(folder: Path) -> Path:
    """``folder`` if it holds a Transformers checkpoint (config, weights, tokenizer), else an error naming the gap."""
    if not folder.is_dir():
        raise ModelNotFoundError(f"The reference {folder} is not a folder; pass a checkpoint folder or a Hub repo id.")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        missing.append("weights (*.safetensors)")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        missing.append("a tokenizer (tokenizer.json)")
    if missing:
        raise ModelNotFoundError(
            f"The reference folder {folder} lacks {', '.join(missing)}: it must be a Transformers checkpoint "
            "such as a download of Qwen/Qwen3-Embedding-0.6B."
        )
    return folder


class _Reference:
    """What both recipes share: torch, the tokenizer, float32 weights, a thread count restored on close."""

    def __init__(self, folder: Path, *, n_threads: int | None) -> None:
        self.torch: Any = _require("torch")
        self.transformers: Any = _require("transformers")
        self.folder = check_checkpoint(folder)
        self._previous_threads = int(self.torch.get_num_threads())
        self.torch.set_num_threads(n_threads or default_threads())
        self.tokenizer: Any = self.transformers.AutoTokenizer.from_pretrained(str(folder), padding_side="left")
        self.model: Any = None

    def _load(self, class_name: str) -> Any:
        loader = getattr(self.transformers, class_name)
        major, minor = (int(p) for p in self.transformers.__version__.split(".")[:2])
        key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
        logging = self.transformers.utils.logging
        bars = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()  # quiet unless the caller's own settings say otherwise
        try:
            model = loader.from_pretrained(str(self.folder), **{key: self.torch.float32})
        finally:
            if bars:
                logging.enable_progress_bar()
        return model.eval()

    @property
    def description(self) -> str:
        """The recipe in words, with the Transformers version."""
        return f"Transformers {self.transformers.__version__}, float32"

    def token_text(self, token: int) -> str:
        """The reference tokenizer's name for a token id."""
        return str(self.tokenizer.convert_ids_to_tokens(int(token)))

    def parses_control(self, text: str) -> bool:
        """Whether the tokenizer, called as the README calls it, reads a control token inside ``text``."""
        plain = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        parsed = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return list(plain) != list(parsed)

    def close(self) -> None:
        """Drop the weights and restore torch's thread count."""
        self.model = None
        self.torch.set_num_threads(self._previous_threads)


class ReferenceEmbedder(_Reference):
    """The Qwen3-Embedding README recipe in float32.

    Args:
        folder: A Transformers checkpoint (``Qwen/Qwen3-Embedding-0.6B`` or a local copy).
        n_threads: torch's CPU threads while it runs.
    """

    def __init__(self, folder: Path, *, n_threads: int | None = None) -> None:
        super().__init__(folder, n_threads=n_threads)
        eos = self.tokenizer.convert_tokens_to_ids(EOS_TEXT)
        if not isinstance(eos, int) or eos == self.tokenizer.unk_token_id:
            raise UnsupportedModelError(f"The reference tokenizer in {folder} has no {EOS_TEXT} token: not Qwen3.")
        self.eos_id: int = eos
        self.appended = self._appended()
        self.model = self._load("AutoModel")

    def _appended(self) -> list[int]:
        """The ids the tokenizer itself appends to a text (``[<|endoftext|>]`` for the current official one)."""
        with_special = self.tokenizer("x", split_special_tokens=True)["input_ids"]
        bare = self.tokenizer("x", add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return list(with_special[len(bare) :]) if list(with_special[: len(bare)]) == list(bare) else []

    @property
    def appends_eos(self) -> bool:
        """Whether the tokenizer appends ``<|endoftext|>`` itself (early revisions did not; the README's
        first recipe then appended it by hand, as :meth:`tokenize` does)."""
        return self.appended == [self.eos_id]

    @staticmethod
    def query(task: str, text: str) -> str:
        """A query in the official format."""
        return EMBEDDING_QUERY_FORMAT.format(task=task, text=text)

    def tokenize(self, text: str) -> list[int]:
        """The ids the model reads: the text (truncated to 8192 with the EOS kept), then ``<|endoftext|>``."""
        if self.appends_eos:
            ids = self.tokenizer(text, truncation=True, max_length=MAX_LENGTH, split_special_tokens=True)["input_ids"]
            return list(ids)
        ids = self.tokenizer(
            text, add_special_tokens=False, truncation=True, max_length=MAX_LENGTH - 1, split_special_tokens=True
        )["input_ids"]
        return [*ids, self.eos_id]

    def encode(self, token_ids: list[list[int]]) -> np.ndarray:
        """Unit vectors (float64): the last token's final hidden state of each sequence, normalized."""
        torch = self.torch
        out = np.empty((len(token_ids), int(self.model.config.hidden_size)), dtype=np.float64)
        with torch.no_grad():
            for i, ids in enumerate(token_ids):
                batch = torch.tensor([ids], dtype=torch.long)
                hidden = self.model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state[0, -1]
                out[i] = torch.nn.functional.normalize(hidden.double(), p=2, dim=0).numpy()
        return out


class ReferenceReranker(_Reference):
    """The Qwen3-Reranker README recipe in float32.

    Args:
        folder: A Transformers checkpoint (``Qwen/Qwen3-Reranker-0.6B`` or a local copy).
        n_threads: torch's CPU threads while it runs.
    """

    def __init__(self, folder: Path, *, n_threads: int | None = None) -> None:
        super().__init__(folder, n_threads=n_threads)
        ids = [self.tokenizer.convert_tokens_to_ids(t) for t in ("yes", "no")]
        if not all(isinstance(i, int) and i != self.tokenizer.unk_token_id for i in ids):
            raise UnsupportedModelError(f"The reference tokenizer in {folder} has no 'yes'/'no' tokens: not Qwen3.")
        self.yes_id, self.no_id = int(ids[0]), int(ids[1])
        self.prefix: list[int] = list(self.tokenizer.encode(RERANK_PREFIX, add_special_tokens=False))
        self.suffix: list[int] = list(self.tokenizer.encode(RERANK_SUFFIX, add_special_tokens=False))
        self.model = self._load("AutoModelForCausalLM")

    @staticmethod
    def body(query: str, document: str, instruction: str = RERANK_INSTRUCTION) -> str:
        """The part of the prompt the README's recipe tokenizes (and truncates) per pair."""
        return RERANK_BODY_FORMAT.format(instruction=instruction, query=query, document=document)

    def tokenize(self, query: str, document: str, *, instruction: str = RERANK_INSTRUCTION) -> list[int]:
        """``prefix + body + suffix``, the body cut to fit 8192 tokens as the README does."""
        budget = MAX_LENGTH - len(self.prefix) - len(self.suffix)
        body = self.tokenizer(
            self.body(query, document, instruction),
            truncation="longest_first",
            max_length=budget,
            return_attention_mask=False,
            split_special_tokens=True,
        )["input_ids"]
        return [*self.prefix, *body, *self.suffix]

    def head(self) -> np.ndarray:
        """``w_yes - w_no`` of the LM head (float64): the direction the score is read along."""
        weight = self.model.get_output_embeddings().weight
        direction: np.ndarray = (weight[self.yes_id] - weight[self.no_id]).detach().double().numpy()
        return direction

    def log_odds(self, token_ids: list[list[int]]) -> np.ndarray:
        """``l_yes - l_no`` at the last position of each sequence (float64)."""
        torch = self.torch
        out = np.empty(len(token_ids), dtype=np.float64)
        with torch.no_grad():
            for i, ids in enumerate(token_ids):
                batch = torch.tensor([ids], dtype=torch.long)
                logits = self.model(input_ids=batch, attention_mask=torch.ones_like(batch), logits_to_keep=1).logits
                last = logits[0, -1].double()
                out[i] = float(last[self.yes_id] - last[self.no_id])
        return out
