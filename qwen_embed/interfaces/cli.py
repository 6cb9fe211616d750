"""The ``qwen-embed`` command line (``python -m qwen_embed`` too).

qwen-embed embed "What is GGUF?" --prompt query -o vectors.npy
qwen-embed embed -f texts.txt --model 4B --quant Q4_K_M -o vectors.jsonl
qwen-embed download 0.6B --quant Q8_0
qwen-embed quants 4B
qwen-embed doctor
qwen-embed serve --model 0.6B --port 8000
qwen-embed rerank "What is GGUF?" "A file format." "A city." --top-k 1
qwen-embed demo --save demo-models   # small random-weight models, no download
qwen-embed verify Qwen3-Embedding-0.6B-Q8_0.gguf --reference Qwen/Qwen3-Embedding-0.6B --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..calls import AGGREGATES, RERANK_LONG_TEXT, RerankCall
from ..errors import ConfigurationError, QwenEmbedError
from ..hub.catalog import CATALOG, DEFAULT_MODEL, DEFAULT_QUANT
from . import _cli_demo, _cli_search, _cli_verify
from ._cli_models import add_hub_options as _hub_options
from ._cli_models import add_model_options as _model_options
from ._cli_models import load_model as _load_model

__all__ = ["main"]


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

    embed = commands.add_parser(
        "embed",
        help="embed texts (arguments, a file, or stdin); with -o FOLDER, a streaming, resumable corpus job",
    )
    embed.add_argument("texts", nargs="*", help="texts to embed")
    embed.add_argument(
        "-f", "--file", default=None, help="one text per line (.txt), .jsonl, .csv, .tsv or .parquet; '-' for stdin"
    )
    embed.add_argument(
        "-o",
        "--output",
        default=None,
        help="out.npy or out.jsonl, or a folder (vectors/) for a Parquet corpus job (default: JSON Lines on stdout)",
    )
    embed.add_argument("--text-field", default="text", help="JSON key or column with the text (default: text)")
    embed.add_argument("--id-field", default=None, help="corpus job: JSON key or column with each row's id")
    embed.add_argument("--format", default=None, choices=["txt", "jsonl", "csv", "tsv", "parquet"], help="-f's format")
    embed.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="corpus job: keep the shards a run with the same settings finished (default: on)",
    )
    embed.add_argument("--shard-rows", type=int, default=10_000, help="corpus job: rows per Parquet file")
    embed.add_argument("--npy", default=None, help="corpus job: also write the vectors as one .npy matrix")
    embed.add_argument(
        "--allow-duplicate-ids", action="store_true", help="corpus job: keep rows whose id repeats (default: stop)"
    )
    embed.add_argument("--side", default=None, choices=["query", "document"], help="which side --prompt NAME applies")
    embed.add_argument("--prompt", default=None, help="query, document, or a prompt name (qwen-embed prompts)")
    embed.add_argument("--instruction", default=None, help="a task instruction, in the official query format")
    embed.add_argument("--dim", type=int, default=None, help="Matryoshka output dimension")
    embed.add_argument("--long-text", default="error", choices=["error", "truncate", "chunk"])
    embed.add_argument(
        "--deterministic",
        action="store_true",
        help="each text decoded alone: bit-identical vectors whatever the batch (slower); a corpus job then reuses "
        "only vectors made so",
    )
    embed.add_argument("--no-progress", action="store_true", help="no progress bar")
    _model_options(embed)

    commands.add_parser("doctor", help="check that this machine runs the library correctly")
    commands.add_parser("prompts", help="list the prompt names")

    rerank = commands.add_parser("rerank", help="rank documents for a query with a Qwen3-Reranker")
    rerank.add_argument("query", type=_query_text, help="the query")
    rerank.add_argument("documents", nargs="*", help="documents to rank")
    rerank.add_argument(
        "-f", "--file", default=None, help="UTF-8, one document per line (blank lines skipped); '-' for stdin"
    )
    rerank.add_argument("--top-k", type=int, default=None, help="print only the best N (default: all)")
    rerank.add_argument("--instruction", default=None, help="task instruction (default: the README's web search one)")
    rerank.add_argument("--raw", action="store_true", help="print the log-odds l_yes - l_no instead of p(yes)")
    rerank.add_argument(
        "--long-text", choices=RERANK_LONG_TEXT, default="truncate",
        help="a pair over --max-length: cut the document's end (the official recipe; the output says how many "
        "tokens were dropped), score every window of it (chunk: the best window's span is printed), or error",
    )  # fmt: skip
    rerank.add_argument("--aggregate", choices=AGGREGATES, default="max", help="with --long-text chunk: how window "
                        "scores make the document's (default: max)")  # fmt: skip
    rerank.add_argument("--no-progress", action="store_true", help="no progress bar")
    _model_options(rerank)  # --model: a reranker size (0.6B, 4B, 8B) or repo id

    serve = commands.add_parser(
        "serve",
        help="an OpenAI-compatible embedding server (needs qwen-embed[server])",
        conflict_handler="resolve",  # its --threads replaces the shared one (another default)
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=_port_number, default=8000, help="port to bind, 0-65535 (default: 8000)")
    serve.add_argument("--served-model-name", default=None, help="model name clients send (default: from the file)")
    serve.add_argument("--max-inputs", type=_positive_count, default=2048, help="most inputs per request (2048)")
    serve.add_argument(
        "--max-request-tokens", type=_positive_count, default=1_000_000, help="most tokens per request (1000000)"
    )
    serve.add_argument("--max-body-bytes", type=_bytes, default=32 * 2**20, help="largest request body (32MiB)")
    serve.add_argument("--body-timeout", type=_seconds, default=60.0, help="seconds to send a body (60)")
    serve.add_argument("--header-timeout", type=_seconds, default=10.0, help="seconds to send the headers (10)")
    serve.add_argument("--shutdown-timeout", type=_seconds, default=30.0, help="seconds to drain on stop (30)")
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' ($QWEN_EMBED_API_KEY)")
    serve.add_argument("--cors-origin", action="append", default=[], help="allow browser calls from this origin")
    serve.add_argument("--allowed-host", action="append", default=[], help="another name clients may use in Host")
    serve.add_argument("--no-host-check", action="store_true", help="accept any Host header (no DNS-rebinding guard)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error", "critical"])
    serve.add_argument("--no-access-log", action="store_true", help="no log line per request")
    serve.add_argument("--long-text", default="error", choices=["error", "truncate", "chunk"])
    serve.add_argument("--reranker", metavar="MODEL", help="serve POST /v1/rerank too: 0.6B, 4B, 8B, repo id or .gguf")
    serve.add_argument("--reranker-quant", default=None, help="the reranker's quantization (default: the catalog's)")
    serve.add_argument("--served-reranker-name", default=None, help="reranker name clients send (default: the file)")
    serve.add_argument("--no-embedder", action="store_true", help="serve only the --reranker (no /v1/embeddings)")
    serve.add_argument(
        "--index",
        metavar="INDEX_OR_FOLDER",
        default=None,
        help="serve POST /v1/search over this index (or corpus folder indexed by qwen-embed index); the model "
        "defaults to the index's file and settings (needs qwen-embed[search])",
    )
    _model_options(serve)
    serve.add_argument(
        "--model", default=None, help="catalog size or repo id (default: 0.6B; with --index: the index's model file)"
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=None,
        help="engine threads (default: every CPU this process may use but one, at least 1, which leaves the "
        "server a core: small requests stay quick beside large ones; $QWEN_EMBED_NUM_THREADS if set)",
    )
    _cli_verify.add_parser(commands)
    _cli_demo.add_parser(commands)
    _cli_search.add_parsers(commands)
    return parser


def _load_embedder(args: argparse.Namespace, **options: Any) -> Any:
    from ..embedder import Embedder

    return _load_model(
        Embedder, args, args.model, args.quant, path=args.model_path, max_length=args.max_length, **options
    )


def _read_texts(args: argparse.Namespace) -> list[str]:
    """The texts of a small-input run: arguments, then ``-f FILE`` (any corpus format) or stdin lines."""
    from ..corpus.sources import open_source, text_lines

    texts = list(args.texts)
    if args.file is not None and args.file != "-":
        source = open_source(args.file, text_field=args.text_field, format=args.format)
        texts.extend(text for _, text in source.rows())
    elif args.file == "-" or (not texts and not sys.stdin.isatty()):
        texts.extend(text_lines(sys.stdin.buffer, name="<stdin>"))
    if not texts:
        raise ConfigurationError("nothing to embed: pass texts, -f FILE, or pipe one text per line on stdin")
    return texts


def _call_side(args: argparse.Namespace) -> tuple[str, str | None, str | None]:
    """``(side, task, instruction)`` from ``--prompt``, ``--side`` and ``--instruction``."""
    if args.prompt in (None, "none"):
        return args.side or "document", None, args.instruction
    if args.prompt == "query":
        return "query", None, args.instruction
    if args.prompt in ("document", "passage"):
        return "document", None, args.instruction
    return args.side or "query", args.prompt, args.instruction


def _is_folder(output: str) -> bool:
    path = Path(output)
    return output.endswith(("/", os.sep)) or path.is_dir() or not path.suffix


def _embed(args: argparse.Namespace) -> int:
    if args.output is not None and _is_folder(args.output):
        return _embed_corpus(args)
    if args.id_field is not None or args.npy is not None:
        raise ConfigurationError("--id-field and --npy apply to a corpus job: give -o a folder, such as -o vectors/")
    output = _checked_output(Path(args.output)) if args.output else None
    tmp = _temp_beside(output) if output is not None else None  # proves the folder writable before anything else
    try:
        texts = _read_texts(args)
        vectors = _vectors(args, texts)
        if output is None:
            return _print_jsonl(vectors)
        assert tmp is not None
        with open(tmp, "wb") as handle:
            if output.suffix.lower() == ".npy":
                _np().save(handle, vectors)
            else:
                for i, vector in enumerate(vectors):
                    handle.write(_jsonl_row(i, vector).encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, output)
    except KeyboardInterrupt:
        where = f"; {output} was not written (an earlier file there is unchanged)" if output is not None else ""
        print(f"qwen-embed embed: interrupted{where}", file=sys.stderr)
        return 130
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    print(f"{len(texts)} vectors of {vectors.shape[1]} dims -> {output}", file=sys.stderr)
    return 0


def _vectors(args: argparse.Namespace, texts: list[str]) -> Any:
    side, task, instruction = _call_side(args)
    progress = None if args.no_progress else sys.stderr.isatty()
    with _load_embedder(
        args, long_text=args.long_text, show_progress=progress, deterministic=args.deterministic
    ) as emb:
        if instruction is not None:
            return emb.encode(texts, instruction=instruction, dim=args.dim)
        if side == "query":
            return emb.encode_queries(texts, task=task, dim=args.dim)
        return emb.encode_documents(texts, task=task, dim=args.dim)


def _np() -> Any:
    import numpy as np

    return np


def _jsonl_row(index: int, vector: Any) -> str:
    return json.dumps({"index": index, "embedding": [round(float(x), 7) for x in vector]}) + "\n"


def _print_jsonl(vectors: Any) -> int:
    return _write_stdout(_jsonl_row(i, vector) for i, vector in enumerate(vectors))


def _write_stdout(lines: Iterable[str]) -> int:
    """Write ``lines`` to stdout; 141 (as ``cat`` under SIGPIPE) when the reader has gone, else 0."""
    try:
        for line in lines:
            sys.stdout.write(line)
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has gone; stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        return 141
    return 0


def _checked_output(output: Path) -> Path:
    if output.suffix.lower() not in (".npy", ".jsonl"):
        raise ConfigurationError(
            f"--output must end in .npy or .jsonl (any case), or name a folder for a corpus job, not {output.name!r}"
        )
    if output.is_dir():
        raise ConfigurationError(f"--output {output} is a folder; name a file such as {output / 'vectors.npy'}")
    parent = output.parent
    if not parent.is_dir():
        raise ConfigurationError(f"cannot write {output}: the folder {parent} does not exist")
    return output


def _temp_beside(output: Path) -> Path:
    import tempfile

    try:
        fd, name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    except OSError as error:
        raise ConfigurationError(f"cannot write {output}: {error.strerror} ({output.parent})") from error
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)  # the final file gets the usual mode, not mkstemp's 0600
    os.close(fd)
    return Path(name)


def _embed_corpus(args: argparse.Namespace) -> int:
    """``-o FOLDER``: a streaming, resumable corpus job (Parquet shards and a manifest)."""
    import logging

    from ..corpus import check_npy_path, embed_corpus, open_source, prepare_output_folder

    if args.file is not None:
        open_source(args.file, text_field=args.text_field, id_field=args.id_field, format=args.format)  # checks now
        source: Any = args.file
    elif args.texts:
        source = list(args.texts)
    elif not sys.stdin.isatty():
        source = "-"
    else:
        raise ConfigurationError("nothing to embed: pass -f FILE (or texts, or pipe one text per line on stdin)")
    folder = prepare_output_folder(args.output)
    if args.npy is not None:
        check_npy_path(args.npy)
    side, task, instruction = _call_side(args)
    progress = not args.no_progress and sys.stderr.isatty()
    handler = None
    if not progress:  # a log line per shard instead of a bar (batch jobs, log files)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("qwen-embed embed: %(message)s"))
        logging.getLogger("qwen_embed.corpus").addHandler(handler)
        logging.getLogger("qwen_embed.corpus").setLevel(logging.INFO)
    try:
        with _load_embedder(args, long_text=args.long_text, deterministic=args.deterministic) as emb:
            result = embed_corpus(
                source,
                folder,
                embedder=emb,
                text_field=args.text_field,
                id_field=args.id_field,
                source_format=args.format,
                side=side,
                task=task,
                instruction=instruction,
                dim=args.dim,
                resume=args.resume,
                shard_rows=args.shard_rows,
                npy=args.npy,
                show_progress=progress,
                allow_duplicate_ids=args.allow_duplicate_ids,
                deterministic=args.deterministic,
            )
    except KeyboardInterrupt:
        print(
            f"qwen-embed embed: interrupted; the finished shards in {folder} are kept: run the same command "
            "again to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        if handler is not None:
            logging.getLogger("qwen_embed.corpus").removeHandler(handler)
    print(
        f"{result.rows} rows of {result.dim} dims in {result.shards} shards -> {folder} "
        f"({result.embedded_rows} embedded now, {result.reused_rows} kept)",
        file=sys.stderr,
    )
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import run_checks

    checks = run_checks(sys.stdout)
    return 0 if all(c.ok for c in checks) else 1


def _prompts(args: argparse.Namespace) -> int:
    from ..text.prompts import DEFAULT_REGISTRY

    for name in DEFAULT_REGISTRY.list_prompts():
        prompt = DEFAULT_REGISTRY.get_prompt(name)
        print(f"{name:<24} {prompt.description or prompt.query or '(no instruction)'}")
    return 0


def _rerank(args: argparse.Namespace) -> int:
    """JSON Lines on stdout, best first: ``{"rank", "index", "score", "document"}``."""
    from ..reranker import Reranker

    documents = list(args.documents)
    if args.file is not None or (not documents and not sys.stdin.isatty()):
        documents.extend(_document_lines(args.file))
    if not documents:
        raise ConfigurationError("nothing to rank: pass documents after the query, -f FILE, or one per line on stdin")
    progress = None if args.no_progress else sys.stderr.isatty()
    reranker = _load_model(
        Reranker, args, args.model, args.quant, path=args.model_path, max_length=args.max_length, show_progress=progress
    )
    if args.top_k is not None and args.top_k < 1:
        raise ConfigurationError(f"--top-k must be a positive int, not {args.top_k}")
    call = RerankCall(instruction=args.instruction, raw=args.raw, long_text=args.long_text, aggregate=args.aggregate)
    with reranker:
        result = reranker.run([(args.query, d) for d in documents], call)
    order = _np().argsort(-result.scores, kind="stable")[: args.top_k]

    def row(position: int, i: int) -> str:
        entry: dict[str, Any] = {"rank": position, "index": i, "score": round(float(result.scores[i]), 7),
                                 "document": documents[i]}  # fmt: skip
        receipt, span = result.receipts[i], result.best_spans[i]
        if span is not None:
            entry.update(span=list(span), windows=receipt.chunks)
        if receipt.truncated:
            entry.update(truncated=True, dropped_tokens=receipt.dropped_tokens)
        return json.dumps(entry, ensure_ascii=False) + "\n"

    return _write_stdout(row(position, int(i)) for position, i in enumerate(order.tolist(), start=1))


def _query_text(text: str) -> str:
    """argparse type of ``rerank``'s query: refused when blank (the server answers 400 there)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the query is empty; give the text to rank the documents against")
    return text


def _document_lines(file: str | None) -> list[str]:
    """``rerank -f FILE`` (``None`` or ``-``: stdin): one document per UTF-8 line, a leading BOM dropped.

    Blank lines are not documents: they are skipped, and their count is reported on stderr.
    """
    from ..corpus import open_source, text_lines

    if file is None or file == "-":
        name, lines = "<stdin>", text_lines(sys.stdin.buffer, name="<stdin>")
    else:
        source = open_source(file, format="txt")  # one line per error: missing, a folder, invalid UTF-8 (with the line)
        name, lines = source.name, (text for _, text in source.rows())
    documents = []
    blank = 0
    for line in lines:
        if line.strip():
            documents.append(line)
        else:
            blank += 1
    if blank:
        plural = "line" if blank == 1 else "lines"
        print(f"qwen-embed rerank: skipped {blank} blank {plural} of {name} (not documents)", file=sys.stderr)
    return documents


def _serve(args: argparse.Namespace) -> int:
    import os

    from .server import ENV_API_KEY, ServerOptions, default_model_name, serve

    api_key = args.api_key if args.api_key is not None else os.environ.get(ENV_API_KEY) or None
    options = ServerOptions(  # checked before the model loads
        model_name=args.served_model_name,
        host=args.host,
        max_inputs=args.max_inputs,
        max_request_tokens=args.max_request_tokens,
        max_body_bytes=args.max_body_bytes,
        body_timeout=args.body_timeout,
        api_key=api_key,
        cors_origins=tuple(args.cors_origin),
        allowed_hosts=tuple(args.allowed_host),
        check_host=not args.no_host_check,
        reranker_name=args.served_reranker_name,
        **({"batch_texts": args.batch_size} if args.batch_size else {}),
    )
    if args.no_embedder and not args.reranker:
        raise ConfigurationError("--no-embedder leaves nothing to serve; add --reranker MODEL (e.g. 0.6B)")
    if args.no_embedder and args.index:
        raise ConfigurationError("--index needs the embedding model that embeds the queries; drop --no-embedder")
    if args.threads is None:
        from ._server_options import default_engine_threads

        args.threads = default_engine_threads()
    index = _open_serve_index(args.index) if args.index else None
    emb = reranker = None
    try:
        emb = None if args.no_embedder else _load_serve_embedder(args, index)
        reranker = _load_serve_reranker(args) if args.reranker else None
        names = [
            *([args.served_model_name or default_model_name(emb)] if emb is not None else []),
            *([f"reranker {args.served_reranker_name or default_model_name(reranker)}"] if reranker else []),
            *([f"index {index.path}"] if index is not None else []),
        ]

        def ready(url: str) -> None:
            print(f"qwen-embed: serving {' and '.join(names)} on {url}/v1", file=sys.stderr, flush=True)

        serve(
            emb,
            options,
            reranker=reranker,
            index=index,
            port=args.port,
            log_level=args.log_level,
            access_log=not args.no_access_log,
            header_timeout=args.header_timeout,
            shutdown_timeout=args.shutdown_timeout,
            on_ready=ready,
        )
    finally:
        for part in (emb, reranker, index):
            if part is not None:
                part.close()
    return 0


def _open_serve_index(path: str) -> Any:
    """``serve --index``: the index (of a corpus folder), which must record how its vectors were made."""
    from ..search import SearchIndex

    index = SearchIndex.open(path)
    if index.recipe is None:
        index.close()
        raise ConfigurationError(
            f"{index.path} records no embedding recipe, so the server cannot embed queries for it; build it with "
            "qwen-embed index (or SearchIndex.create(..., recipe=...))"
        )
    return index


def _load_serve_embedder(args: argparse.Namespace, index: Any) -> Any:
    """The embedding model; with ``--index``, the index's file (unless ``--model-path``/``--model`` name another)
    and its settings (dim, normalize, pooling), as ``qwen-embed search`` loads it."""
    if index is None:
        args.model = args.model or DEFAULT_MODEL
        return _load_embedder(args, long_text=args.long_text)
    from ..embedder import Embedder

    recipe = index.recipe
    options = {"dim": recipe.dim, "normalize": recipe.normalize, "pooling": recipe.pooling}
    options.update(long_text=args.long_text, max_length=args.max_length)
    if args.model_path is None and args.model is None:
        recorded = Path(recipe.model_path) if recipe.model_path else None
        if recorded is None or not recorded.is_file():
            raise ConfigurationError(
                f"the index's model {recipe.model_file} is not at {recorded}; pass --model-path FILE or --model NAME"
            )
        return _load_model(Embedder, args, str(recorded), None, path=str(recorded), **options)
    model = args.model or DEFAULT_MODEL
    return _load_model(Embedder, args, model, args.quant or recipe.quant, path=args.model_path, **options)


def _load_serve_reranker(args: argparse.Namespace) -> Any:
    """``serve --reranker``: a catalog size, a repo id or a local .gguf, with the command's threads and hub options."""
    from ..reranker import Reranker

    return _load_model(Reranker, args, args.reranker, args.reranker_quant, show_progress=False)


def _number_in(kind: type[int] | type[float], low: float, high: float, what: str, hint: str = "") -> Any:
    """An argparse type: a number of ``kind`` with ``low <= value <= high``, else ``not WHAT: TEXT HINT``."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}{hint}")
        return value

    return parse


_port_number = _number_in(int, 0, 65535, "a port", " (0 to 65535; 0 picks a free one)")
_positive_count = _number_in(int, 1, float("inf"), "a whole number of at least 1")
_seconds = _number_in(float, 1e-9, 1e9, "a number of seconds above 0")


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
    from ..hub.download import fetch_model

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
    from .._memory import format_size
    from ..hub.download import list_quants

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
        print(f"{q.quant:<{width}}  {format_size(q.size):>10}  {'yes' if q.cached else 'no':<6}  {q.filename}{parts}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {
        "download": _download,
        "quants": _quants,
        "embed": _embed,
        "doctor": _doctor,
        "prompts": _prompts,
        "rerank": _rerank,
        "serve": _serve,
        "verify": _cli_verify.run,
        "demo": _cli_demo.run,
        "index": _cli_search.index,
        "search": _cli_search.search,
    }[args.command]
    try:
        return handler(args)
    except QwenEmbedError as error:
        print(f"qwen-embed {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
