"""The ``qwen-embed`` command line: ``download`` and ``quants`` (``python -m qwen_embed`` too)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__
from .catalog import CATALOG, DEFAULT_MODEL, DEFAULT_QUANT
from .errors import QwenEmbedError

__all__ = ["main"]


def _hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    parser.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HUB_CACHE)")
    parser.add_argument("--token", default=None, help="Hub token for gated or private repos (default: HF_TOKEN)")
    parser.add_argument("--endpoint", default=None, help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--offline", action="store_true", help="use the cache only (like HF_HUB_OFFLINE=1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwen-embed", description="Qwen3-Embedding vectors from GGUF models.")
    parser.add_argument("--version", action="version", version=f"qwen-embed {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sizes = ", ".join(m.size for m in CATALOG)
    download = commands.add_parser("download", help="download a model into the Hugging Face cache")
    download.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"{sizes}, or a repo id (default: 0.6B)")
    download.add_argument("--quant", default=DEFAULT_QUANT, help="Q8_0, Q4_K_M, f16, ... or auto (default: Q8_0)")
    download.add_argument("--filename", default=None, help="pick a file by name when several match the quant")
    download.add_argument("--memory-budget", type=_bytes, default=None, help="for --quant auto: e.g. 8GB")
    download.add_argument("--no-progress", action="store_true", help="no progress bar")
    _hub_options(download)

    quants = commands.add_parser("quants", help="list a model's quantizations and their sizes")
    quants.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"{sizes}, or a repo id (default: 0.6B)")
    _hub_options(quants)
    return parser


def _bytes(text: str) -> int:
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    value = text.strip().upper()
    number = value.rstrip("KMGIB")
    unit = value[len(number) :]
    try:
        return int(float(number) * units[unit])
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 8GB or 8000000000)") from None


def _download(args: argparse.Namespace) -> int:
    from .hub import fetch_model

    path, resolution = fetch_model(
        args.model,
        quant=args.quant,
        filename=args.filename,
        revision=args.revision,
        cache_dir=args.cache_dir,
        token=args.token,
        endpoint=args.endpoint,
        local_files_only=args.offline,
        memory_budget=args.memory_budget,
        progress=not args.no_progress,
    )
    print(f"{resolution.repo_id}@{resolution.revision} {resolution.quant}: {resolution.reason}", file=sys.stderr)
    print(path)
    return 0


def _quants(args: argparse.Namespace) -> int:
    from .hub import _size, list_quants

    files = list_quants(
        args.model,
        revision=args.revision,
        token=args.token,
        endpoint=args.endpoint,
        cache_dir=args.cache_dir,
        local_files_only=args.offline,
    )
    width = max([len(q.quant) for q in files] + [5])
    print(f"{'quant':<{width}}  {'size':>10}  cached  file")
    for q in files:
        parts = f" (+{len(q.filenames) - 1} parts)" if len(q.filenames) > 1 else ""
        print(f"{q.quant:<{width}}  {_size(q.size):>10}  {'yes' if q.cached else 'no':<6}  {q.filename}{parts}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"download": _download, "quants": _quants}[args.command]
    try:
        return handler(args)
    except QwenEmbedError as error:
        print(f"qwen-embed {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
