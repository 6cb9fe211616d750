"""``qwen-embed index`` and ``qwen-embed search``: a corpus folder's index, and queries against it.

qwen-embed embed -f passages.jsonl --id-field doc_id -o vectors/
qwen-embed index vectors/ --precision int8
qwen-embed search vectors/ "What is GGUF?" --top-k 5 --reranker 0.6B
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

__all__ = ["add_parsers", "index", "search"]


def add_parsers(commands: Any) -> None:
    """Add the ``index`` and ``search`` subcommands to ``qwen-embed``'s subparsers."""
    from ._cli_models import add_hub_options as _hub_options

    index_cmd = commands.add_parser(
        "index", help="build or update the search index of a corpus folder (needs qwen-embed[search])"
    )
    index_cmd.add_argument("folder", help="a corpus job's output folder (qwen-embed embed -f FILE -o FOLDER)")
    index_cmd.add_argument(
        "--precision", default=None, choices=["float32", "float16", "int8", "binary"], help="stored vectors"
    )
    index_cmd.add_argument("--no-keep-float", action="store_true", help="int8/binary: no float32 copy for rescoring")
    index_cmd.add_argument("--exact-max-values", type=int, default=None, help="segments smaller are searched exactly")
    index_cmd.add_argument(
        "--graph-recall", type=float, default=None,
        help="a larger segment keeps an HNSW graph only if it finds this share of the top 10 (default 0.99; 0: any)",
    )  # fmt: skip
    index_cmd.add_argument(
        "--max-expansion-search", type=int, default=None, help="most graph candidates tuning tries (default 4096)"
    )
    index_cmd.add_argument(
        "--graph-visit-cost", type=float, default=None,
        help="a graph candidate's cost in rows of exact search; dearer graphs are not kept (default 4; 0: keep)",
    )  # fmt: skip
    index_cmd.add_argument("--rebuild", action="store_true", help="build the index anew (other options or settings)")
    index_cmd.add_argument("--source", default=None, help="the corpus source, if it moved since the job read it")
    index_cmd.add_argument("--format", default=None, choices=["txt", "jsonl", "csv", "tsv", "parquet"])
    index_cmd.add_argument("--no-text", action="store_true", help="keep no texts (no reranking, no text in results)")
    index_cmd.add_argument("--query-task", default=None, help="prompt name queries get (default: from the corpus)")
    index_cmd.add_argument("--query-instruction", default=None, help="instruction queries get instead")

    search_cmd = commands.add_parser(
        "search", help="search a corpus folder's index (or an index folder); JSON Lines, best first"
    )
    search_cmd.add_argument("index", help="a corpus folder with an index, or an index folder")
    search_cmd.add_argument("queries", nargs="*", help="queries (default: one per line on stdin)")
    search_cmd.add_argument("--top-k", type=int, default=10, help="results per query (default: 10)")
    search_cmd.add_argument("--reranker", metavar="MODEL", default=None, help="rerank with 0.6B, 4B, 8B, repo or .gguf")
    search_cmd.add_argument("--reranker-quant", default=None, help="the reranker's quantization")
    search_cmd.add_argument("--rerank-top", type=int, default=50, help="candidates the reranker scores (default: 50)")
    search_cmd.add_argument("--rescore", default=None, choices=["float", "quantized", "none"])
    search_cmd.add_argument("--exact", action="store_true", help="brute force, even where a segment has a graph")
    search_cmd.add_argument("--view", action="store_true", help="memory-map the graphs (an index larger than RAM)")
    search_cmd.add_argument("--model-path", default=None, help="the embedding model (default: the index's file)")
    search_cmd.add_argument("--model", default=None, help="or a catalog size or repo id to download it from")
    search_cmd.add_argument("--quant", default=None, help="with --model: its quantization (default: the index's)")
    search_cmd.add_argument("--threads", type=int, default=None, help="CPU threads")
    search_cmd.add_argument("--batch-size", type=int, default=None, help="most texts per decode")
    search_cmd.add_argument("--backend", default="auto", choices=["auto", "llama", "torch"])
    search_cmd.add_argument("--dtype", default=None, help="torch engine: bfloat16, float32 or float16")
    _hub_options(search_cmd)


def index(args: argparse.Namespace) -> int:
    """``qwen-embed index FOLDER``: one JSON line with what the update did."""
    from ..search import IndexOptions, index_corpus

    options = None
    tuning = {"exact_max_values": args.exact_max_values, "graph_recall": args.graph_recall,
              "max_expansion_search": args.max_expansion_search, "graph_visit_cost": args.graph_visit_cost}  # fmt: skip
    given = {name: value for name, value in tuning.items() if value is not None}
    if args.precision is not None or args.no_keep_float or given:
        options = IndexOptions(precision=args.precision or "float32", keep_float=not args.no_keep_float, **given)
    result = index_corpus(
        args.folder, options=options, texts=not args.no_text, source=args.source, source_format=args.format,
        query_task=args.query_task, query_instruction=args.query_instruction, rebuild=args.rebuild,
    )  # fmt: skip
    update = result.update
    print(json.dumps({
        "index": str(result.index), "rows": update.rows, "added": update.added, "replaced": update.replaced,
        "unchanged": update.unchanged, "deleted": update.deleted, "shards_read": result.shards_read,
        "shards_skipped": result.shards_skipped, "texts": result.texts, "generation": update.generation,
        "seconds": round(update.seconds, 3),
    }))  # fmt: skip
    return 0


def search(args: argparse.Namespace) -> int:
    """``qwen-embed search INDEX QUERY...``: a JSON line per hit, best first, query by query."""
    from ..search import Retriever, SearchIndex

    queries = list(args.queries)
    if not queries and not sys.stdin.isatty():
        queries = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    if not queries:
        raise ConfigurationError("nothing to search: pass queries after the index, or one per line on stdin")
    for name in ("top_k", "rerank_top"):
        if getattr(args, name) < 1:
            raise ConfigurationError(f"--{name.replace('_', '-')} must be at least 1")
    found = SearchIndex.open(args.index, view=args.view)
    try:
        recipe = found.recipe
        if recipe is None:
            raise ConfigurationError(f"{found.path} records no embedding model; it cannot embed queries for it")
        embedder = _load_embedder(args, recipe)
        try:
            reranker = _load_reranker(args) if args.reranker else None
            try:
                retriever = Retriever(embedder, found, reranker, rescore=args.rescore)
                results = retriever.search(queries, k=args.top_k, rerank_top=args.rerank_top,
                                           exact=True if args.exact else None)  # fmt: skip
            finally:
                if reranker is not None:
                    reranker.close()
        finally:
            embedder.close()
    finally:
        found.close()
    for query, hits in zip(queries, results):
        for rank, hit in enumerate(hits, start=1):
            line: dict[str, Any] = {"query": query, "rank": rank, "id": hit.id, "score": round(hit.score, 7),
                                    "vector_score": round(hit.vector_score, 7)}  # fmt: skip
            if hit.rerank_score is not None:
                line["rerank_score"] = round(hit.rerank_score, 7)
            if hit.text is not None:
                line["text"] = hit.text
            if hit.metadata is not None:
                line["metadata"] = hit.metadata
            print(json.dumps(line, ensure_ascii=False))
    return 0


def _load_embedder(args: argparse.Namespace, recipe: Any) -> Any:
    """The index's model with the index's settings: ``--model-path``, ``--model``, else the file it records."""
    from ..embedder import Embedder
    from ._cli_models import load_model as _load_model

    options = {"dim": recipe.dim, "normalize": recipe.normalize, "pooling": recipe.pooling, "show_progress": False}
    if args.model_path is None and args.model is None:
        recorded = Path(recipe.model_path) if recipe.model_path else None
        if recorded is None or not recorded.is_file():
            raise ConfigurationError(
                f"the index's model {recipe.model_file} is not at {recorded}; pass --model-path FILE or --model NAME"
            )
        return _load_model(Embedder, args, str(recorded), None, path=str(recorded), **options)
    return _load_model(Embedder, args, args.model, args.quant or recipe.quant, path=args.model_path, **options)


def _load_reranker(args: argparse.Namespace) -> Any:
    from ..reranker import Reranker
    from ._cli_models import load_model as _load_model

    path = args.reranker if args.reranker.endswith(".gguf") and Path(args.reranker).is_file() else None
    return _load_model(Reranker, args, args.reranker, args.reranker_quant, path=path, show_progress=False)
