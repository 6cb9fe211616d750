"""``qwen-embed demo``: the whole path on small random-weight models built here (no download).

qwen-embed demo                      # build, embed, rank, then delete the models
qwen-embed demo --save demo-models   # keep them, for --model-path, rerank --model and serve --reranker

The models are Qwen3-architecture GGUF files with seeded random weights
(:mod:`qwen_embed.testing`): the mechanics are real (llama.cpp, prompts, pooling, the
reranker's yes/no head), the rankings are not meaningful. It needs only the base install.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

__all__ = ["EMBEDDING_FILE", "RERANKER_FILE", "add_parser", "build_models", "run"]

#: Names of the generated files in ``--save DIR``.
EMBEDDING_FILE = "qwen3-embedding-demo.gguf"
RERANKER_FILE = "qwen3-reranker-demo.gguf"

QUERIES = ["What is GGUF?", "How do I make embeddings faster on a CPU?"]
DOCUMENTS = [
    "GGUF is the single-file model format of llama.cpp, holding weights and metadata.",
    "Packing many texts into one batch and skipping unused outputs speeds up embedding.",
    "The Great Wall of China is visible from many places.",
]


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` sub-command to ``commands`` (the ``add_subparsers`` object of the main parser)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="build small random-weight embedding and reranker models and run them (no download)",
        description=(
            "Build a small random-weight Qwen3 embedding model and a Qwen3 reranker model, embed a few queries "
            "and documents, and rank the documents: the whole path without a download. Random weights: the "
            "scores show the mechanics, not retrieval quality."
        ),
    )
    parser.add_argument(
        "--save",
        metavar="DIR",
        default=None,
        help=f"keep the models in DIR ({EMBEDDING_FILE}, {RERANKER_FILE}); default: a temporary folder, deleted",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all this process may use)")
    return parser


def build_models(folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the demo embedding model and reranker into ``folder``; returns their paths.

    Each file is built under a temporary name in ``folder`` and renamed into place, so an
    interrupted build leaves no half-written model under the final name.
    """
    from ..testing import make_model, make_reranker_model

    target = Path(folder).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".qwen-embed-demo-", dir=target))
    try:
        embedding = make_model(staging / EMBEDDING_FILE, shape="small", name="qwen3-embedding-demo (random weights)")
        reranker = make_reranker_model(
            staging / RERANKER_FILE, shape="small", name="qwen3-reranker-demo (random weights)"
        )
        os.replace(embedding, target / EMBEDDING_FILE)
        os.replace(reranker, target / RERANKER_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / EMBEDDING_FILE, target / RERANKER_FILE


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """The ``demo`` command: build, embed, rank; prints each step on ``out`` (stdout)."""
    out = out or sys.stdout
    if args.save is not None:
        return _demo(Path(args.save), args.threads, out, saved=True)
    with tempfile.TemporaryDirectory(prefix="qwen-embed-demo-") as folder:
        return _demo(Path(folder), args.threads, out, saved=False)


def _demo(folder: Path, threads: int | None, out: TextIO, *, saved: bool) -> int:
    from ..embedder import Embedder
    from ..reranker import Reranker

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    say("Building two small Qwen3 models with random weights (no download) ...")
    embedding_path, reranker_path = build_models(folder)
    say(f"  embedding model: {embedding_path}")
    say(f"  reranker model:  {reranker_path}")
    say()
    with Embedder(embedding_path, n_threads=threads) as emb:
        say(f"1. {emb}")
        queries = emb.encode_queries(QUERIES)  # "Instruct: {task}\nQuery:{text}", the official query format
        documents = emb.encode_documents(DOCUMENTS)  # documents: no instruction
        say(f"   encode_queries: {len(QUERIES)} queries -> {queries.shape[0]} x {queries.shape[1]} float32")
        say(f"   encode_documents: {len(DOCUMENTS)} documents -> {documents.shape[0]} x {documents.shape[1]} float32")
        scores = queries @ documents.T  # unit vectors: dot product = cosine
        for query, row in zip(QUERIES, scores):
            best = int(row.argmax())
            say(f"   {query!r}: closest document #{best} (cosine {row[best]:.3f})")
    say()
    with Reranker(reranker_path, n_threads=threads) as reranker:
        say(f"2. {reranker}")
        ranked = reranker.rank(QUERIES[0], DOCUMENTS)
        say(f"   rank({QUERIES[0]!r}, {len(DOCUMENTS)} documents), best first:")
        for entry in ranked:
            say(f"   p(yes) {entry['score']:.3f}  #{entry['corpus_id']}  {DOCUMENTS[entry['corpus_id']][:60]}")
    say()
    say("Random weights: the numbers show the mechanics, not retrieval quality.")
    say("Real models: qwen-embed download 0.6B (then --model 0.6B, the default), or qwen-embed quants 0.6B.")
    if saved:
        say()
        say("The models are kept; try:")
        say(f'  qwen-embed embed "some text" --model-path {embedding_path}')
        say(f'  qwen-embed rerank "What is GGUF?" "A file format." "A city." --model {reranker_path}')
        say(f"  qwen-embed serve --model-path {embedding_path} --reranker {reranker_path}")
    return 0
