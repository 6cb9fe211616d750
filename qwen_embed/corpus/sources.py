"""Where a corpus comes from: a ``.txt``/``.jsonl``/``.csv``/``.parquet`` file, stdin, or an iterable.

Every source is read as a stream of ``(id, text)`` pairs, a line, a CSV row or a Parquet
batch at a time, so a corpus of any size is read in bounded memory. ``id`` is the
value of ``id_field`` as a ``str``, or ``None`` when no ``id_field`` is given (the job then
uses the row number). Problems are reported with the line or row they are on.
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigurationError
from .errors import CorpusSourceError, SourceNotFoundError
from .ids import unique_ids

__all__ = ["FORMATS", "Source", "open_source", "text_lines"]

logger = logging.getLogger(__name__)

#: Formats by name, with the file suffixes that select them.
FORMATS: dict[str, tuple[str, ...]] = {
    "txt": (".txt", ".text"),
    "jsonl": (".jsonl", ".ndjson"),
    "csv": (".csv",),
    "tsv": (".tsv",),
    "parquet": (".parquet", ".pq"),
}
_BY_SUFFIX = {suffix: name for name, suffixes in FORMATS.items() for suffix in suffixes}
_PARQUET_BATCH = 1024

Row = tuple[str | None, str]


def text_lines(handle: IO[bytes], *, name: str) -> Iterator[str]:
    """The lines of a UTF-8 byte stream without their line ends; a leading BOM is dropped.

    Raises:
        CorpusSourceError: A line is not valid UTF-8 (the message gives the line number).
    """
    for lineno, raw in enumerate(handle, 1):
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise CorpusSourceError(
                f"{name}: line {lineno} is not valid UTF-8 (byte {raw[error.start]:#04x} at byte {error.start + 1} "
                "of the line); convert the file to UTF-8 first, for example with iconv -f latin1 -t utf-8."
            ) from None
        if line.endswith("\n"):
            line = line[:-2] if line.endswith("\r\n") else line[:-1]
        yield line


@dataclass(frozen=True)
class Source:
    """A corpus, ready to be read as ``(id, text)`` rows.

    Attributes:
        name: The file (or ``"<stdin>"``, ``"<iterable>"``) for messages and the manifest.
        format: ``"txt"``, ``"jsonl"``, ``"csv"``, ``"tsv"``, ``"parquet"`` or ``"iterable"``.
        text_field: Field (JSON key, CSV column, Parquet column) holding the text.
        id_field: Field holding the row's id, or ``None``.
        unique_ids: Whether :meth:`rows` raises :class:`~qwen_embed.corpus.DuplicateIdError` at
            an id that an earlier row has (only with an ``id_field``).
    """

    name: str
    format: str
    text_field: str
    id_field: str | None
    _origin: Any = None
    unique_ids: bool = False

    def rows(self) -> Iterator[Row]:
        """The rows in order: ``(id or None, text)``."""
        if self.format == "iterable":
            rows = self._iterable_rows()
        elif self.format == "parquet":
            rows = self._parquet_rows()
        else:
            rows = self._file_rows()
        return unique_ids(rows, self.name) if self.unique_ids and self.id_field is not None else rows

    def count(self) -> int | None:
        """The number of rows if it is cheap to know (for a progress bar's ETA), else ``None``."""
        if self.format == "iterable":
            return len(self._origin) if isinstance(self._origin, Sized) else None
        if self.format == "parquet":
            return sum(int(_parquet_file(p).metadata.num_rows) for p in _parquet_files(Path(self._origin)))
        if self.format in ("txt", "jsonl") and self._origin != "-":
            return _count_lines(Path(self._origin))
        return None

    # ------------------------------------------------------------------ readers

    def _file_rows(self) -> Iterator[Row]:
        stdin = self._origin == "-"
        handle: IO[bytes] = sys.stdin.buffer if stdin else open(self._origin, "rb")
        try:
            if self.format == "txt":
                for line in text_lines(handle, name=self.name):
                    yield None, line
            elif self.format == "jsonl":
                yield from self._jsonl_rows(handle)
            else:
                yield from self._csv_rows(handle)
        finally:
            if not stdin:
                handle.close()

    def _jsonl_rows(self, handle: IO[bytes]) -> Iterator[Row]:
        blank, first_blank = 0, 0
        for lineno, line in enumerate(text_lines(handle, name=self.name), 1):
            if not line.strip():  # not a row (many tools end a file with an empty line): counted, reported once
                blank += 1
                first_blank = first_blank or lineno
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise CorpusSourceError(f"{self.name}: line {lineno} is not valid JSON ({error.msg}).") from None
            if isinstance(record, str) and self.id_field is None:
                yield None, record
            elif isinstance(record, Mapping):
                yield self._pick(record, f"line {lineno}")
            else:
                raise CorpusSourceError(
                    f"{self.name}: line {lineno} is a JSON {type(record).__name__}; each line must be an object "
                    f'with a {self.text_field!r} field, such as {{"{self.text_field}": "..."}}.'
                )
        if blank:
            logger.warning(
                "%s: skipped %d blank line%s (the first: line %d); blank lines are not rows",
                self.name, blank, "" if blank == 1 else "s", first_blank,
            )  # fmt: skip

    def _csv_rows(self, handle: IO[bytes]) -> Iterator[Row]:
        _allow_long_fields()
        stream = codecs.getreader("utf-8-sig")(handle)
        # strict: a quote left open is an error at the end of the file, not the rest of the file in one field
        reader = csv.DictReader(stream, delimiter="\t" if self.format == "tsv" else ",", strict=True)
        start = 1  # the line the record being read starts on
        try:
            fields = reader.fieldnames or []
            for name in (self.text_field, self.id_field):
                if name is not None and name not in fields:
                    raise CorpusSourceError(
                        f"{self.name} has no column {name!r}; its header is {', '.join(map(repr, fields)) or 'empty'}. "
                        "Pass text_field= / id_field= (--text-field / --id-field) with one of those."
                    )
            start = reader.line_num + 1
            for record in reader:
                yield self._pick(record, f"line {start}")
                start = reader.line_num + 1
        except UnicodeDecodeError:
            raise CorpusSourceError(
                f"{self.name}: near line {reader.line_num + 1}: not valid UTF-8; convert the file to UTF-8 first."
            ) from None
        except csv.Error as error:
            if str(error) == "unexpected end of data":
                raise CorpusSourceError(
                    f"{self.name}: line {start}: a quoted field starts there and is never closed (the file ends "
                    f'inside it, at line {reader.line_num}); close the quote, or double a quote meant as text ("").'
                ) from None
            raise CorpusSourceError(f"{self.name}: line {reader.line_num}: {error}") from None

    def _parquet_rows(self) -> Iterator[Row]:
        columns = [self.text_field] + ([self.id_field] if self.id_field else [])
        row = 0
        for path in _parquet_files(Path(self._origin)):
            for batch in _parquet_file(path).iter_batches(batch_size=_PARQUET_BATCH, columns=columns):
                texts = batch.column(self.text_field).to_pylist()
                ids = batch.column(self.id_field).to_pylist() if self.id_field else [None] * len(texts)
                for record_id, text in zip(ids, texts):
                    yield self._checked(record_id, text, f"row {row}")
                    row += 1

    def _iterable_rows(self) -> Iterator[Row]:
        for i, item in enumerate(self._origin):
            if isinstance(item, str) and self.id_field is None:
                yield None, item
            elif isinstance(item, Mapping):
                yield self._pick(item, f"item #{i}")
            else:
                want = "a str or a dict" if self.id_field is None else f"a dict with {self.id_field!r}"
                raise CorpusSourceError(f"corpus item #{i} is {type(item).__name__}; each item must be {want}.")

    def _pick(self, record: Mapping[str, Any], where: str) -> Row:
        if self.text_field not in record:
            keys = ", ".join(map(repr, list(record)[:10])) or "none"
            raise CorpusSourceError(
                f"{self.name}: {where} has no {self.text_field!r} field (its fields: {keys}); "
                "pass text_field= (--text-field) to name the one with the text."
            )
        if self.id_field is not None and self.id_field not in record:
            raise CorpusSourceError(f"{self.name}: {where} has no {self.id_field!r} field (the id_field).")
        record_id = record[self.id_field] if self.id_field is not None else None
        return self._checked(record_id, record[self.text_field], where)

    def _checked(self, record_id: Any, text: Any, where: str) -> Row:
        if not isinstance(text, str):
            what = "null" if text is None else f"a {type(text).__name__}"
            raise CorpusSourceError(f"{self.name}: {where}: {self.text_field!r} is {what}, not a string.")
        if self.id_field is None:
            return None, text
        if record_id is None or isinstance(record_id, (dict, list)):
            raise CorpusSourceError(f"{self.name}: {where}: {self.id_field!r} is {record_id!r}; ids must be scalars.")
        return str(record_id), text


def open_source(
    source: str | os.PathLike[str] | Iterable[str | Mapping[str, Any]],
    *,
    text_field: str = "text",
    id_field: str | None = None,
    format: str | None = None,
    unique_ids: bool = False,
) -> Source:
    """Check a corpus source (it exists, its format is known, its fields are there) without reading it.

    Args:
        source: A file path (``"-"`` is stdin), a folder of Parquet files, or an iterable of
            ``str`` or dicts.
        text_field: The field with the text (JSON key, CSV/Parquet column, dict key).
        id_field: The field with each row's id (stored as a string), or ``None``.
        format: ``"txt"``, ``"jsonl"``, ``"csv"``, ``"tsv"`` or ``"parquet"``; default: from the suffix.
        unique_ids: Make reading the rows raise :class:`~qwen_embed.corpus.DuplicateIdError` at a
            repeated id (with an ``id_field``; about 16 bytes of memory a row).

    Raises:
        SourceNotFoundError: No such file.
        CorpusSourceError: Unknown format, or a field that the file's header or schema lacks.
    """
    for label, value in (("text_field", text_field), ("id_field", id_field)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigurationError(f"{label} must be a non-empty str, not {value!r}")
    if format is not None and format not in FORMATS:
        raise ConfigurationError(f"format={format!r} is not one of {', '.join(FORMATS)}")
    if not isinstance(source, (str, os.PathLike)):
        if isinstance(source, (bytes, bytearray, Mapping)) or not isinstance(source, Iterable):
            raise ConfigurationError(
                f"source must be a file path or an iterable of str or dicts, not {type(source).__name__}"
            )
        return Source("<iterable>", "iterable", text_field, id_field, source, unique_ids)
    if os.fspath(source) == "-":
        return _checked_format(Source("<stdin>", format or "txt", text_field, id_field, "-", unique_ids))
    path = Path(os.path.expanduser(os.fspath(source)))
    if not path.exists():
        raise SourceNotFoundError(f"corpus file not found: {path}")
    name = format or _format_of(path)
    if path.is_dir() and name != "parquet":
        raise SourceNotFoundError(f"{path} is a folder; pass a file (a folder is read only as a Parquet dataset).")
    return _checked_format(Source(str(path), name, text_field, id_field, path, unique_ids))


def _format_of(path: Path) -> str:
    if path.is_dir():
        return "parquet"
    name = _BY_SUFFIX.get(path.suffix.lower())
    if name is None:
        known = ", ".join(s for suffixes in FORMATS.values() for s in suffixes)
        raise CorpusSourceError(
            f"{path.name}: unknown corpus format {path.suffix or '(no suffix)'!r}; use a file ending in {known}, "
            "or pass format= (--format)."
        )
    return name


def _checked_format(source: Source) -> Source:
    if source.format == "txt" and source.id_field is not None:
        raise ConfigurationError(
            f"{source.name} is plain text (one text per line): it has no fields, so id_field={source.id_field!r} "
            "cannot apply; rows are numbered instead."
        )
    if source.format == "parquet":
        files = _parquet_files(Path(source._origin))
        if not files:
            raise SourceNotFoundError(
                f"{source.name} is a folder with no .parquet files in it; pass a file (.txt, .jsonl, .csv, .parquet)."
            )
        names = _parquet_file(files[0]).schema_arrow.names
        for field in (source.text_field, source.id_field):
            if field is not None and field not in names:
                raise CorpusSourceError(
                    f"{files[0].name} has no column {field!r}; its columns are {', '.join(map(repr, names))}. "
                    "Pass text_field= / id_field= (--text-field / --id-field) with one of those."
                )
    return source


def _parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(  # one level: the layout embed_corpus, Spark and Ray write
        p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".parquet", ".pq") and p.name[0] not in "._"
    )


def _parquet_file(path: Path) -> Any:
    from .store import require_pyarrow

    require_pyarrow("reading a Parquet corpus")
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ...
        raise CorpusSourceError(f"{path}: not a readable Parquet file ({error}).") from error


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def _allow_long_fields() -> None:
    """Let the csv module read fields longer than its 128 KiB default (long documents)."""
    limit = 2**31 - 1
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)
