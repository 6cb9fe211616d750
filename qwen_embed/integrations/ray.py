"""Embed a Ray Dataset across a cluster, one Embedder per actor (``pip install "qwen-embed[ray]"``).

>>> import ray
>>> from qwen_embed.integrations.ray import embed_dataset
>>> ds = ray.data.read_parquet("s3://bucket/passages/")                      # doctest: +SKIP
>>> out = embed_dataset(ds, model="0.6B", num_actors=8, cpus_per_actor=4)        # doctest: +SKIP
>>> out.write_parquet("s3://bucket/vectors/")                                # doctest: +SKIP

Or with your own ``map_batches`` call, the callable class :class:`EmbedBatch`::

    ds.map_batches(EmbedBatch, fn_constructor_kwargs={"model": "0.6B"}, batch_format="pyarrow",
                   compute=ray.data.ActorPoolStrategy(size=8), num_cpus=4)

Each actor loads its model once (a catalog model is downloaded once per node into the
Hugging Face cache, which locks concurrent downloads) and runs llama.cpp on as many threads
as Ray gave the actor CPUs. The vectors equal :meth:`~qwen_embed.Embedder.encode`'s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, cast

import numpy as np

from ..calls import EncodeCall, Side
from ..errors import ConfigurationError
from ..hub.catalog import DEFAULT_MODEL
from ._common import require

__all__ = ["EmbedBatch", "check_cluster_room", "embed_dataset"]


class EmbedBatch:
    """A callable class for ``Dataset.map_batches``: adds an embedding column to each batch.

    Args:
        model: A ``.gguf`` path (reachable from every node), a catalog name (``"0.6B"``) or a
            Hub repo id; default: the catalog's default model.
        quant: Quantization of a catalog or Hub model.
        embedder_options: Options of :class:`~qwen_embed.Embedder` and ``from_pretrained``.
        column: The column with the texts.
        output_column: The column to add: a fixed-size list of float32 for Arrow batches, a
            2-D array for NumPy batches, one array per row for pandas.
        side: ``"document"`` (as ``encode_documents``) or ``"query"`` (as ``encode_queries``).
        task, instruction, dim, normalize, long_text: As in :meth:`~qwen_embed.Embedder.encode_iter`.
        n_threads: llama.cpp threads; default: the CPUs Ray assigned to this actor.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        quant: str | None = None,
        embedder_options: Mapping[str, Any] | None = None,
        column: str = "text",
        output_column: str = "embedding",
        side: str = "document",
        task: str | None = None,
        instruction: str | None = None,
        dim: int | None = None,
        normalize: bool | None = None,
        long_text: str | None = None,
        n_threads: int | None = None,
    ) -> None:
        from ..embedder import Embedder

        if side not in ("document", "query"):
            raise ConfigurationError(f"side={side!r} is not one of 'document', 'query'.")
        options = dict(embedder_options or {})
        options.setdefault("n_threads", n_threads or assigned_cpus())
        if "hub" not in options:  # a HubOptions given carries its own download_progress
            options.setdefault("download_progress", False)
        self.embedder = Embedder.from_pretrained(
            os.fspath(model) if model is not None else DEFAULT_MODEL, quant=quant, **options
        )
        self.column, self.output_column = column, output_column
        self._call = EncodeCall(side=cast(Side, side), task=task, instruction=instruction, dim=dim, normalize=normalize,
                                long_text=long_text, show_progress=False)  # fmt: skip
        self.dim = int(self.embedder.run([], self._call).vectors.shape[1])

    def embed(self, texts: list[str]) -> np.ndarray:
        """The vectors of ``texts``: one ``(n, dim)`` float32 array."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embedder.run(texts, self._call).vectors

    def __call__(self, batch: Any) -> Any:
        """Add the embedding column to a pyarrow Table, a pandas DataFrame or a dict of NumPy arrays."""
        if isinstance(batch, Mapping):
            out = dict(batch)
            out[self.output_column] = self.embed(self._texts(batch[self.column]))
            return out
        if hasattr(batch, "append_column"):  # pyarrow.Table
            import pyarrow as pa

            vectors = self.embed(self._texts(batch.column(self.column).to_pylist()))
            values = pa.array(vectors.reshape(-1), type=pa.float32())
            return batch.append_column(self.output_column, pa.FixedSizeListArray.from_arrays(values, self.dim))
        if hasattr(batch, "assign"):  # pandas.DataFrame
            vectors = self.embed(self._texts(batch[self.column].tolist()))
            return batch.assign(**{self.output_column: list(vectors)})
        raise ConfigurationError(f"EmbedBatch takes Arrow, pandas or NumPy batches, not {type(batch).__name__}")

    def _texts(self, values: Any) -> list[str]:
        texts = list(values)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ConfigurationError(
                    f"column {self.column!r}: row {i} of the batch is {type(text).__name__}, not str; "
                    "fill or drop missing texts first (ds.filter(...))."
                )
        return texts


def embed_dataset(
    ds: Any,
    *,
    column: str = "text",
    output_column: str = "embedding",
    model: str | os.PathLike[str] | None = None,
    quant: str | None = None,
    embedder_options: Mapping[str, Any] | None = None,
    side: str = "document",
    task: str | None = None,
    instruction: str | None = None,
    dim: int | None = None,
    normalize: bool | None = None,
    long_text: str | None = None,
    num_actors: int = 1,
    cpus_per_actor: int = 1,
    batch_size: int = 256,
) -> Any:
    """``ds`` with an ``embedding`` column, computed by a pool of ``num_actors`` actors.

    Lazy, as Ray Data is: the work runs when the result is consumed (``write_parquet``,
    ``take_all``, ``iter_batches``). Row order follows Ray's ``preserve_order`` setting; keep
    an id column to join on.

    Args:
        ds: A ``ray.data.Dataset`` with a text column.
        column, output_column, model, quant, embedder_options, side, task, instruction, dim,
            normalize, long_text: See :class:`EmbedBatch`.
        num_actors: Actors (each holds one model).
        cpus_per_actor: CPUs Ray reserves per actor; each actor runs that many llama.cpp threads.
            ``num_actors * cpus_per_actor`` must leave at least one of the cluster's CPUs free: Ray
            Data reads and writes the dataset in tasks of their own, and with every CPU held by an
            actor they never get one and the job waits forever.
        batch_size: Rows per call (each call packs them into decodes).

    Raises:
        ConfigurationError: A count is not a positive int, or (Ray initialized) the actors would hold
            every CPU of the cluster.
    """
    data = require("ray.data", extra="ray", what="qwen_embed.integrations.ray")
    for name, value in (("num_actors", num_actors), ("cpus_per_actor", cpus_per_actor), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be a positive int, not {value!r}")
    check_cluster_room(num_actors, cpus_per_actor)
    options = {
        "quant": quant, "embedder_options": dict(embedder_options or {}), "column": column,
        "output_column": output_column, "side": side, "task": task, "instruction": instruction,
        "dim": dim, "normalize": normalize, "long_text": long_text, "n_threads": cpus_per_actor,
    }  # fmt: skip
    return ds.map_batches(
        EmbedBatch,
        fn_constructor_args=(os.fspath(model) if model is not None else None,),
        fn_constructor_kwargs=options,
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=data.ActorPoolStrategy(size=num_actors),
        num_cpus=cpus_per_actor,
    )


def check_cluster_room(num_actors: int, cpus_per_actor: int) -> None:
    """ConfigurationError when the actors would take every CPU of the running Ray cluster (nothing left to
    read or write the dataset: Ray Data would wait forever). Checked only once Ray is initialized."""
    import ray

    if not ray.is_initialized():
        return
    total = float(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
    held = num_actors * cpus_per_actor
    if held < total:
        return
    room = int(total) - 1  # one CPU left for the read and write tasks
    if room >= cpus_per_actor:
        advice = f"use num_actors={room // cpus_per_actor} or fewer (with cpus_per_actor={cpus_per_actor})"
    elif room >= 1:
        advice = f"use cpus_per_actor={room} or fewer, with num_actors=1"
    else:
        advice = "start Ray with more CPUs (ray.init(num_cpus=...)): one actor needs one, and the reads another"
    raise ConfigurationError(
        f"num_actors={num_actors} x cpus_per_actor={cpus_per_actor} = {held} CPUs, and this Ray cluster has "
        f"{total:g}: nothing would be left for Ray Data's read and write tasks, and the job would wait "
        f"forever. Leave at least one CPU free: {advice}."
    )


def assigned_cpus() -> int:
    """The CPUs Ray assigned to this worker (at least 1), or all this process may use outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)  # type: ignore[no-untyped-call]
            if cpus >= 1:
                return int(cpus)
    except ImportError:
        pass
    from .._config import default_threads

    return default_threads()
