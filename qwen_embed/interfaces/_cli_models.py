"""What the ``qwen-embed`` subcommands share: the model and Hub flags, and loading a model from them.

A module of its own so that every subcommand module (``cli``, ``_cli_search``, ``_cli_verify``, ...)
imports it, and none imports ``cli``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..hub.catalog import DEFAULT_MODEL

__all__ = ["add_hub_options", "add_model_options", "load_model"]


def add_hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    parser.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HUB_CACHE)")
    parser.add_argument("--token", default=None, help="Hub token for gated or private repos (default: HF_TOKEN)")
    parser.add_argument("--endpoint", default=None, help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--offline", action="store_true", help="use the cache only (like HF_HUB_OFFLINE=1)")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="catalog size or repo id (default: 0.6B)")
    parser.add_argument("--quant", default=None, help="quantization (default: the catalog's, Q8_0 for embeddings)")
    parser.add_argument("--model-path", default=None, help="a local .gguf file instead of --model/--quant")
    parser.add_argument("--max-length", type=int, default=None, help="most tokens per text (default: 8192)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all this process may use)")
    parser.add_argument("--batch-size", type=int, default=None, help="most texts per decode (default: 64)")
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "llama", "torch"], help="engine (default: auto, the faster here)"
    )
    parser.add_argument("--dtype", default=None, help="torch engine: bfloat16, float32 or float16")
    add_hub_options(parser)


def load_model(
    cls: Any, args: argparse.Namespace, model: str, quant: str | None, *, path: str | None = None, **options: Any
) -> Any:
    """``cls`` (Embedder or Reranker) from ``path`` or else the Hub, with the command's engine and Hub options."""
    options.update(n_threads=args.threads, backend=args.backend, dtype=args.dtype)
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    if path:
        return cls(path, **options)
    from ..hub.options import HubOptions

    hub = HubOptions(
        revision=args.revision,
        cache_dir=args.cache_dir,
        token=args.token,
        endpoint=args.endpoint,
        local_files_only=args.offline,
    )
    return cls.from_pretrained(model, quant=quant, hub=hub, **options)
