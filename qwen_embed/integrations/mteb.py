"""mteb: :class:`QwenEmbedEncoder`, run the MTEB benchmark on any GGUF quant (``pip install "qwen-embed[mteb]"``).

>>> import mteb
>>> from qwen_embed.integrations.mteb import QwenEmbedEncoder
>>> model = QwenEmbedEncoder(model="0.6B", quant="Q4_K_M")                # doctest: +SKIP
>>> results = mteb.evaluate(model, mteb.get_tasks(tasks=["SciFact"]))     # doctest: +SKIP

Instructions follow mteb's own Qwen3 registration: the task's instruction (mteb's task
prompt, or ``prompts_dict``) in Qwen's format ``Instruct: {instruction}\\nQuery:{text}`` for
queries and for symmetric tasks (STS, classification, clustering, ...), and no instruction
for retrieval documents. The metadata names the official model the file matches, with the
quant, engine and dim in ``experiment_kwargs`` so runs of different quants do not
overwrite each other in mteb's result cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ._common import require

require("mteb", extra="mteb", what="qwen_embed.integrations.mteb")

from mteb.models.abs_encoder import AbsEncoder  # noqa: E402
from mteb.models.model_meta import ModelMeta, ScoringFunction  # noqa: E402
from mteb.types import PromptType  # noqa: E402

from ..calls import EncodeCall  # noqa: E402
from ..embedder import Embedder  # noqa: E402
from ..hub.catalog import CATALOG, CatalogModel  # noqa: E402
from ..text.prompts import OFFICIAL_TEMPLATE  # noqa: E402
from ._common import ModelSource, Sides  # noqa: E402

__all__ = ["QwenEmbedEncoder", "qwen3_instruction_template"]

_CITATION = """@article{qwen3embedding,
  title={Qwen3 Embedding: Advancing Text Embedding and Reranking Through Foundation Models},
  author={Zhang, Yanzhao and Li, Mingxin and Long, Dingkun and Zhang, Xin and Lin, Huan and Yang, Baosong and
          Xie, Pengjun and Yang, An and Liu, Dayiheng and Lin, Junyang and Huang, Fei and Zhou, Jingren},
  journal={arXiv preprint arXiv:2506.05176},
  year={2025}
}"""


def qwen3_instruction_template(instruction: str | Mapping[str, str], prompt_type: PromptType | None = None) -> str:
    """The text put before a query: ``Instruct: {instruction}\\nQuery:``; nothing for documents."""
    if not instruction or prompt_type == PromptType.document:
        return ""
    if isinstance(instruction, Mapping):
        instruction = instruction[prompt_type.value] if prompt_type else next(iter(instruction.values()))
    before, _, _ = OFFICIAL_TEMPLATE.partition("{text}")
    return before.format(instruction=instruction)


class QwenEmbedEncoder(AbsEncoder):
    """An mteb encoder on a Qwen3-Embedding GGUF.

    Args:
        model: A ``.gguf`` path, a catalog name (``"0.6B"``) or a Hub repo id.
        embedder: An existing :class:`~qwen_embed.Embedder` instead.
        quant: Quantization of a catalog or Hub model (default: the catalog entry's, ``Q8_0``); for a
            local file ``None`` (default) or the file's own, checked at load.
        dim: Output dimension (Matryoshka); recorded in the metadata.
        embedder_options: Options of :class:`~qwen_embed.Embedder` and ``from_pretrained``.
        prompts_dict: Instructions by mteb task name, task type or prompt type, overriding the
            tasks' own (for example Qwen's ``task_prompts.json``).
        model_name: The ``org/name`` mteb records; default: the official model the file's shape
            matches, else ``local/<file name>``.
        revision: The revision mteb records (default: the Hub revision, else ``None``).
    """

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        embedder: Embedder | None = None,
        quant: str | None = None,
        dim: int | None = None,
        embedder_options: Mapping[str, Any] | None = None,
        prompts_dict: Mapping[str, str] | None = None,
        model_name: str | None = None,
        revision: str | None = None,
    ) -> None:
        self._sides = Sides(dim=dim)
        self._source = ModelSource(Embedder, model=model, instance=embedder, quant=quant, options=embedder_options)
        loaded: Embedder = self._source.get()
        self._sides.check(loaded)
        self.model = loaded
        self.instruction_template = qwen3_instruction_template
        self.prompts_dict = dict(prompts_dict) if prompts_dict else None
        if self.prompts_dict:
            self.validate_task_to_prompt_name(self.prompts_dict)
        self.mteb_model_meta = _model_meta(loaded, dim=dim, model_name=model_name, revision=revision)

    @property
    def embedder(self) -> Embedder:
        """The :class:`~qwen_embed.Embedder` in use."""
        return self.model  # type: ignore[no-any-return]

    def encode(
        self,
        inputs: Iterable[Mapping[str, Any]],
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every batch's ``text`` in one :meth:`~qwen_embed.Embedder.run` call; float32 ``(n, dim)``."""
        texts = [text for batch in inputs for text in batch["text"]]
        instruction = self.get_instruction(task_metadata, prompt_type)
        if isinstance(instruction, Mapping):
            instruction = next(iter(instruction.values()), "")
        show = kwargs.get("show_progress_bar")
        if prompt_type == PromptType.document or not instruction:
            call = EncodeCall(side="document", dim=self._sides.dim, show_progress=show)  # bare
        else:
            call = EncodeCall(side="query", instruction=instruction, dim=self._sides.dim, show_progress=show)
        return self.embedder.run(texts, call).vectors


def _catalog_match(embedder: Embedder) -> CatalogModel | None:
    layers = next((v for k, v in embedder.metadata.items() if k.endswith(".block_count")), None)
    for card in CATALOG:
        if card.native_dim == embedder.native_dim and card.layers == layers:
            return card
    return None


def _model_meta(embedder: Embedder, *, dim: int | None, model_name: str | None, revision: str | None) -> ModelMeta:
    card = _catalog_match(embedder)
    official = card.repo_id.removesuffix("-GGUF") if card else None
    resolution = embedder.resolution
    name = model_name or official or f"local/{embedder.model_path.stem}"
    return ModelMeta(
        loader=None,
        name=name,
        revision=revision or (resolution.revision if resolution else None),
        release_date=None,
        languages=None,
        n_parameters=card.parameters if card else None,
        memory_usage_mb=round(embedder.model_path.stat().st_size / 2**20),
        max_tokens=embedder.max_length,
        embed_dim=dim or embedder.dim,
        license="apache-2.0" if card else None,
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["GGUF"],
        reference=f"https://huggingface.co/{card.repo_id}" if card else None,
        similarity_fn_name=ScoringFunction.COSINE,  # type: ignore[arg-type]
        use_instructions=True,
        training_datasets=None,
        adapted_from=official if official != name else None,
        citation=_CITATION if card else None,
        experiment_kwargs={"quant": embedder.quantization, "engine": embedder.engine, "dim": dim or embedder.dim},
    )
