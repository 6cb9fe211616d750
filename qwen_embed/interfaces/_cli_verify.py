"""``qwen-embed verify``: check a GGUF file against the official Transformers recipe.

qwen-embed verify Qwen3-Embedding-0.6B-Q8_0.gguf --reference Qwen/Qwen3-Embedding-0.6B
qwen-embed verify my-reranker-f16.gguf --reference ./Qwen3-Reranker-0.6B --json

Exit codes: 0 the file passed, 1 it failed, 2 it could not be verified (a missing file, a
download that failed, a missing extra; the reason is on stderr, and in the JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import QwenEmbedError

__all__ = ["add_parser", "run"]

#: Exit code when the verification could not run (argparse's usage errors exit 2 too).
CANNOT_VERIFY = 2


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``verify`` sub-command to ``commands`` (the ``add_subparsers`` object of the main parser)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "verify",
        help="check a GGUF file against the official Transformers recipe (needs qwen-embed[parity])",
        description=(
            "Run a built-in probe set through a GGUF file (an embedding model or a reranker) and through the "
            "official Transformers recipe on the checkpoint it was converted from; report token ids, EOS handling, "
            "pooling or head, per-text cosine or score differences, top-k agreement, and a verdict. "
            "Exit code 0: pass, 1: fail, 2: could not verify."
        ),
    )
    parser.add_argument("model", help="a .gguf file, or a catalog name or repo id (0.6B, qwen3-reranker-0.6b, ...)")
    parser.add_argument(
        "--reference",
        default=None,
        metavar="REPO_OR_DIR",
        help="the checkpoint it was converted from: a Transformers folder or a Hub repo id "
        "(default: the official repo its name or metadata points to)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON (for CI)")
    parser.add_argument("--details", action="store_true", help="a line per probe in the text report")
    parser.add_argument(
        "--kind", default="auto", choices=["auto", "embedding", "reranker"], help="default: read from the file"
    )
    parser.add_argument("--quant", default=None, help="for a catalog name or repo id: the quantization to fetch")
    parser.add_argument(
        "--backend", default="llama", choices=["llama", "torch"], help="the engine for the GGUF (default: llama)"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all this process may use)")
    parser.add_argument("--top-k", type=int, default=3, help="depth of the retrieval agreement check (default: 3)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of the GGUF repo")
    parser.add_argument("--reference-revision", default=None, help="branch, tag or commit of the reference repo")
    parser.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HUB_CACHE)")
    parser.add_argument("--token", default=None, help="Hub token for gated or private repos (default: HF_TOKEN)")
    parser.add_argument("--endpoint", default=None, help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--offline", action="store_true", help="use the cache only (like HF_HUB_OFFLINE=1)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Verify, print the report (text or JSON), and return 0 (pass), 1 (fail) or 2 (could not verify)."""
    from ..hub.options import HubOptions
    from ..verification import VerifyOptions, verify

    try:
        hub = HubOptions(
            revision=args.revision,
            cache_dir=args.cache_dir,
            token=args.token,
            endpoint=args.endpoint,
            local_files_only=args.offline,
            download_progress=sys.stderr.isatty(),
        )
        options = VerifyOptions(
            kind=args.kind,
            quant=args.quant,
            hub=hub,
            reference_revision=args.reference_revision,
            backend=args.backend,
            n_threads=args.threads,
            top_k=args.top_k,
        )
        report = verify(args.model, args.reference, options)
    except QwenEmbedError as error:
        print(f"qwen-embed verify: {type(error).__name__}: {error}", file=sys.stderr)
        if args.json:
            failure = {"passed": False, "exit_code": CANNOT_VERIFY, "error": {"type": type(error).__name__,
                       "message": str(error)}}  # fmt: skip
            print(json.dumps(failure, ensure_ascii=False, indent=2))
        return CANNOT_VERIFY
    print(report.to_json() if args.json else report.format(details=args.details))
    return report.exit_code
