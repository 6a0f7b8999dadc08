"""Read one configured source into a raw string table plus a table of rejected rows.

Every input row (CSV data row, JSONL line, Segment batch message, Parquet row) ends up either in
`frame` or in `rejects`, so `rows_read == len(frame) + len(rejects)` always holds. A problem with
a whole file (no header, missing column, not a batch file) raises InputError instead.

Values stay raw: strings exactly as written (not trimmed, not type-inferred); only an empty
string becomes NA. Normalisation is a later stage's job.
"""

from __future__ import annotations

import codecs
import csv
import gc
import io
import mmap
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from resolver.config import Config, CsvOptions, SourceConfig
from resolver.ingest.csv_cuts import record_cuts
from resolver.ingest.cdp_shapes import TRANSFORMS

REJECT_COLUMNS = ["source", "file", "row", "field", "reason", "raw"]
RAW_LIMIT = 200  # characters of offending text kept in rejects.raw

_JSON_CHUNK = 64 << 20  # bytes of JSONL handed to pyarrow at once (bounds memory per call)
_JSON_SLOW_LINES = 2_000  # a failing JSONL piece this small is parsed line by line

Reject = tuple[int, str | None, str, str | None]  # row, field, reason, raw


class InputError(Exception):
    """A whole input file cannot be used; the message names the file (and column or field)."""


def unreadable(source: SourceConfig, path: Path | str, exc: OSError) -> InputError:
    """The error for a file that cannot be stat'ed, opened or read: a dangling link, a file deleted
    after the glob matched it, a folder, no permission."""
    return InputError(f"source {source.name!r}: {path}: cannot read: {one_line(exc)}")


def one_line(exc: Exception) -> str:
    """An exception's reason on one line: an OS error's without the path (the message names it
    already); pyarrow's Parquet errors end in newlines."""
    return getattr(exc, "strerror", None) or " ".join(str(exc).split())


@dataclass
class SourceFrame:
    source: str
    frame: pd.DataFrame  # referenced columns (str, NA when absent/empty) + "_file" + "_row"
    rejects: pd.DataFrame  # REJECT_COLUMNS
    rows_read: int  # len(frame) + len(rejects)
    files: list[str]


@dataclass
class _Part:
    """What one file (or piece of a file) yielded: string columns, their row numbers, rejects."""

    columns: dict[str, pa.Array | pa.ChunkedArray]
    rows: np.ndarray  # int64, 1-based row numbers of the kept rows
    rejects: list[Reject] = field(default_factory=list)


@dataclass(frozen=True)
class Piece:
    """The part of one file that one ingest job reads: bytes [start, end) of a line-delimited file
    (both at line starts), or rows [start, end) of a Parquet file (counted from 0, whatever its row
    groups); `first_row` is the number of its first line (row) in the file, so rejects name the same
    rows as a whole-file read."""

    start: int
    end: int
    first_row: int


SPLITTABLE_FORMATS = frozenset({"csv", "jsonl", "ga4", "adobe", "tealium", "parquet"})
# Encodings in which a newline, quote or delimiter byte is always that character (so a file can be
# cut at a byte offset); a CSV in any other encoding is read whole.
_BYTE_CUTTABLE_CODECS = frozenset({"utf-8", "ascii", "iso8859-1", "iso8859-15", "cp1252"})


def split_file(path: Path, fmt: str, target_bytes: int, csv_options: CsvOptions | None = None) -> list[Piece] | None:
    """Pieces of about `target_bytes` each, in file order, or None when the file is small or its
    format cannot be cut (a Segment batch is one JSON body; a CSV in an encoding that is not cut
    at bytes). A CSV is cut at record ends: quoted fields may hold newlines. An unreadable file
    raises OSError."""
    if fmt not in SPLITTABLE_FORMATS or target_bytes <= 0 or os.path.getsize(path) <= target_bytes:
        return None
    if fmt == "csv":
        pieces = _csv_pieces(path, target_bytes, csv_options or CsvOptions())
    elif fmt == "parquet":
        try:
            pieces = _row_range_pieces(path, target_bytes)
        except (pa.ArrowInvalid, UnicodeDecodeError):  # a damaged footer: column names not UTF-8
            return None  # not Parquet: read whole, and the read names the problem
    else:
        pieces = _line_pieces(path, target_bytes)
    return pieces if pieces is not None and len(pieces) > 1 else None


def _csv_pieces(path: Path, target_bytes: int, options: CsvOptions) -> list[Piece] | None:
    """Cut at the first record end at or past each multiple of `target_bytes`; a piece's
    first_row is the data-row number of its first record (the header is not a data row)."""
    try:
        codec = codecs.lookup(options.encoding).name
    except LookupError:
        return None  # read whole: the read names the unknown encoding
    if codec not in _BYTE_CUTTABLE_CODECS or max(ord(options.delimiter), ord(options.quotechar)) > 127:
        return None
    cuts = record_cuts(path, target_bytes, options.delimiter, options.quotechar)
    starts = [(0, 1)] + [(offset, records) for offset, records in cuts]
    ends = [offset for offset, _ in cuts] + [os.path.getsize(path)]
    return [Piece(start, end, first_row) for (start, first_row), end in zip(starts, ends)]


def _line_pieces(path: Path, target_bytes: int) -> list[Piece]:
    """Cut after the first newline at or past each multiple of `target_bytes`; a piece's first line
    number counts the newlines before it. Read through one reused buffer, not a memory map: a map
    would leave every page of the file resident in this process."""
    size = os.path.getsize(path)
    buffer = bytearray(min(_JSON_CHUNK, size))
    with open(path, "rb") as f:
        cuts = [0]
        while cuts[-1] + target_bytes < size:
            f.seek(cuts[-1] + target_bytes)
            f.readline()  # to the end of the line the cut falls in
            if f.tell() >= size:
                break
            cuts.append(f.tell())
        cuts.append(size)
        f.seek(0)
        pieces, first_row = [], 1
        for start, end in zip(cuts[:-1], cuts[1:]):
            pieces.append(Piece(start, end, first_row))
            first_row += _count_newlines(f, end - start, buffer)
    return pieces


def _count_newlines(f, length: int, buffer: bytearray) -> int:
    """Newline bytes in the next `length` bytes of `f`."""
    count, view = 0, memoryview(buffer)
    while length > 0:
        got = f.readinto(view[:min(len(buffer), length)])
        if not got:
            break
        count += int(np.count_nonzero(np.frombuffer(buffer, np.uint8, got) == ord("\n")))
        length -= got
    return count


def _row_range_pieces(path: Path, target_bytes: int) -> list[Piece]:
    """Equal row ranges, one per `target_bytes` of the file: a file written as one row group (the
    usual pandas / pyarrow default up to a million rows) can be cut too."""
    rows = pq.ParquetFile(path).metadata.num_rows
    count = max(1, min(rows, -(-os.path.getsize(path) // target_bytes)))
    bounds = [rows * i // count for i in range(count + 1)]
    return [Piece(start, end, start + 1) for start, end in zip(bounds, bounds[1:])]


def _read_row_range(pf: pq.ParquetFile, piece: Piece, columns: list[str]) -> pa.Table:
    """Rows [start, end) of a Parquet file: the row groups that hold them, sliced."""
    meta = pf.metadata
    group_rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    group_start = np.concatenate([[0], np.cumsum(group_rows)]).astype(np.int64)
    first = int(np.searchsorted(group_start, piece.start, side="right")) - 1
    last = int(np.searchsorted(group_start, piece.end, side="left"))
    table = pf.read_row_groups(range(first, last), columns=columns)
    return table.slice(piece.start - int(group_start[first]), piece.end - piece.start)


def read_source(config: Config, source: SourceConfig, files: list[Path] | None = None,
                piece: Piece | None = None) -> SourceFrame:
    """Read every file of `source` (in sorted order), or just `files`, or one `piece` of the one
    file in `files`, into one frame of raw strings plus rejects."""
    files = config.source_files(source) if files is None else files
    if not files:
        pattern = Path(source.path)
        if not pattern.is_absolute():
            pattern = config.base_dir / pattern
        raise InputError(f"source {source.name!r}: no files match {os.path.abspath(pattern)}")
    columns = source.referenced_columns()
    reader = _READERS[source.format]
    tables: list[pa.Table] = []
    rejects: list[tuple] = []
    nulls = source.csv.null_values if source.format == "csv" else ()
    for path in files:
        # One file at a time; only the referenced columns of each stay in memory until the end.
        try:
            for part in reader(path, source, columns, piece):
                tables.append(_part_table(part, columns, str(path), nulls))
                rejects.extend((source.name, str(path), *r) for r in sorted(part.rejects, key=lambda r: r[0]))
        except OSError as exc:
            raise unreadable(source, path, exc) from exc
    frame = pa.concat_tables(tables) if tables else _part_table(None, columns, "")
    reject_frame = _reject_frame(rejects)
    return SourceFrame(
        source=source.name,
        frame=frame.to_pandas(),
        rejects=reject_frame,
        rows_read=frame.num_rows + len(reject_frame),
        files=[str(p) for p in files],
    )


# ----------------------------------------------------------------------------------------- CSV


def _read_csv(path: Path, source: SourceConfig, columns: list[str], piece: Piece | None = None) -> Iterable[_Part]:
    encoding = _codec_name(source, source.csv.encoding)
    header = _csv_header(path, source, encoding)
    where = _match_columns(columns, header, path, source, "header")
    text = _CsvText(path, piece)
    binary = None
    if not text.starts_with_bom:  # pyarrow drops a BOM where its text starts: right for a file, not a piece
        try:
            with _quiet_undecodable_rows():
                binary, rows, rejects = _csv_arrow(text, source, encoding, len(header), where)
        except (pa.ArrowInvalid, UnicodeDecodeError):
            # pyarrow gives up on the whole file for a few things a row-level reader survives: a bad
            # row that is also invalid UTF-8, an undecodable byte in a non-UTF-8 file, a header
            # without a newline, a row bigger than a parse block.
            pass
    if binary is None:
        binary, rows, rejects = _csv_python(text, source, encoding, len(header), where)
    strings, bad_text, keep = _decode_text(binary, rows, "UTF-8" if encoding == "utf-8" else source.csv.encoding)
    yield _Part(strings, rows if keep is None else rows[keep], rejects + bad_text)


@dataclass(frozen=True)
class _CsvText:
    """The bytes one CSV read parses: the whole file, or one piece of it. Only the piece at the
    start of the file holds the header; rows are numbered from the piece's first data row."""

    path: Path
    piece: Piece | None

    @property
    def has_header(self) -> bool:
        return self.piece is None or self.piece.start == 0

    @property
    def rows_before(self) -> int:
        return 0 if self.piece is None else self.piece.first_row - 1

    @property
    def starts_with_bom(self) -> bool:
        """A piece inside the file starts with a UTF-8 byte-order mark: data (a whole-file read
        keeps it), though the parsers drop one where their text starts."""
        if self.has_header:
            return False
        with open(self.path, "rb") as f:
            f.seek(self.piece.start)
            return f.read(3) == codecs.BOM_UTF8

    def _piece_bytes(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.piece.start)
            return f.read(self.piece.end - self.piece.start)

    def source(self):
        """What pyarrow reads: the path, or the piece's bytes."""
        return self.path if self.piece is None else pa.BufferReader(self._piece_bytes())

    def binary(self):
        """A binary stream of the text, for Python's csv module."""
        return open(self.path, "rb") if self.piece is None else io.BytesIO(self._piece_bytes())

    def where(self, line: int) -> str:
        if self.piece is None:
            return f"line {line}"
        return f"line {line} of the piece from byte {self.piece.start}"


def _csv_arrow(
    text: _CsvText, source: SourceConfig, encoding: str, width: int, where: dict[str, int]
) -> tuple[dict[str, pa.ChunkedArray], np.ndarray, list[Reject]]:
    """The fast reader: pyarrow, mapped columns only, as binary so bad UTF-8 cannot fail the file."""
    names = [f"c{i}" for i in range(width)]  # our own: real headers may repeat a name or its case
    wanted = sorted({names[i] for i in where.values()})
    rejects: list[Reject] = []
    # Single-threaded, pyarrow numbers records from 1 (the header, when the text has it; quoted
    # newlines and blank lines not counted), which gives the data-row ordinal.
    header_rows = 1 if text.has_header else 0

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        rejects.append((text.rows_before + row.number - header_rows, None, reason, row.text))
        return "skip"

    table = pa_csv.read_csv(
        text.source(),
        read_options=pa_csv.ReadOptions(
            column_names=names,
            skip_rows_after_names=header_rows,  # skipped by the parser so a quoted newline is fine
            use_threads=False,  # invalid rows only get a number single-threaded; no slower here
            encoding="utf8" if encoding == "utf-8" else encoding,
        ),
        parse_options=pa_csv.ParseOptions(
            delimiter=source.csv.delimiter,
            quote_char=source.csv.quotechar,
            newlines_in_values=True,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pa_csv.ConvertOptions(
            include_columns=wanted,
            column_types={name: pa.binary() for name in wanted},
            strings_can_be_null=False,
        ),
    )
    total = table.num_rows + len(rejects)
    ordinals = np.arange(text.rows_before + 1, text.rows_before + total + 1, dtype=np.int64)
    rows = np.setdiff1d(ordinals, [r[0] for r in rejects])
    return {col: table.column(names[i]) for col, i in where.items()}, rows, rejects


@contextmanager
def _quiet_undecodable_rows():
    """pyarrow decodes an invalid row's text before calling our handler; when the row is not UTF-8
    that fails, Python prints "Exception ignored ...", and pyarrow stops with ArrowInvalid (which
    sends the file to the fallback reader). Keep that expected failure off the user's screen."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, UnicodeDecodeError):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _csv_python(
    text: _CsvText, source: SourceConfig, encoding: str, width: int, where: dict[str, int]
) -> tuple[dict[str, pa.Array], np.ndarray, list[Reject]]:
    """The fallback reader: Python's csv module, row by row, same results as _csv_arrow.

    Undecodable bytes are kept as surrogates and turned back into bytes, so _decode_text can
    reject just the rows that hold them.
    """
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # pyarrow has no field limit either
    records: list[list[str]] = []
    rows: list[int] = []
    rejects: list[Reject] = []
    ordinal = text.rows_before
    with _csv_text(text.binary(), encoding, "surrogateescape", file_start=text.has_header) as f, _paused_gc():
        reader = csv.reader(f, delimiter=source.csv.delimiter, quotechar=source.csv.quotechar)
        try:
            if text.has_header:
                next(reader)
            for record in reader:
                if not record:
                    continue  # blank lines are not rows (pyarrow skips them too)
                ordinal += 1
                if len(record) != width:
                    reason = f"expected {width} fields, found {len(record)}"
                    rejects.append((ordinal, None, reason, source.csv.delimiter.join(record)))
                    continue
                rows.append(ordinal)
                records.append(record)
        except csv.Error as exc:
            where_ = f"source {source.name!r}: {text.path}: cannot parse CSV ({text.where(reader.line_num)})"
            raise InputError(f"{where_}: {exc}") from exc
        by_column = list(zip(*records)) if records else [()] * width
        del records  # freed while the collector is still paused
        binary = {col: _binary_column(by_column[i]) for col, i in where.items()}
        del by_column
    return binary, np.asarray(rows, dtype=np.int64), rejects


def _binary_column(values: Sequence[str]) -> pa.Array:
    try:
        return pa.array(values, pa.string()).cast(pa.binary())
    except UnicodeEncodeError:  # surrogates from undecodable bytes: give those bytes back
        return pa.array([v.encode("utf-8", "surrogateescape") for v in values], pa.binary())


def _csv_text(binary, encoding: str, errors: str, file_start: bool = True):
    """Text from a binary stream (closed with it). "-sig" drops the byte-order mark that
    Excel-saved UTF-8 exports start with (only at the file's start: elsewhere it is data)."""
    sig = encoding == "utf-8" and file_start
    return io.TextIOWrapper(binary, encoding="utf-8-sig" if sig else encoding, errors=errors, newline="")


def _csv_header(path: Path, source: SourceConfig, encoding: str) -> list[str]:
    # Python's csv module reads just the first record (which may hold quoted newlines).
    with _csv_text(open(path, "rb"), encoding, "replace") as f:
        header = next(csv.reader(f, delimiter=source.csv.delimiter, quotechar=source.csv.quotechar), None)
    if header is None:
        raise InputError(f"source {source.name!r}: {path}: empty file (no header row)")
    if not header:
        raise InputError(f"source {source.name!r}: {path}: the first line is blank (no header row)")
    return header


def _decode_text(
    binary: dict[str, pa.Array | pa.ChunkedArray], rows: np.ndarray, what: str
) -> tuple[dict[str, pa.Array | pa.ChunkedArray], list[Reject], np.ndarray | None]:
    """Cast binary columns to strings. Rows holding invalid UTF-8 become rejects (first bad field
    named) and are dropped; the mask returned (None when every row is good) says which rows stay.

    The vectorized cast validates a whole column; only when it fails do we look for the bad rows.
    """
    strings: dict[str, pa.Array | pa.ChunkedArray] = {}
    keep: np.ndarray | None = None
    rejects: list[Reject] = []
    for col, arr in binary.items():
        try:
            strings[col] = arr.cast(pa.string())
            continue
        except pa.ArrowInvalid:
            pass
        if keep is None:
            keep = np.ones(len(arr), dtype=bool)
        for i, value in enumerate(arr.to_pylist()):
            if value is None or not keep[i]:
                continue
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                keep[i] = False
                rejects.append((int(rows[i]), col, f"invalid {what} in field {col}", _raw(value)))
    if keep is None:
        return strings, rejects, None
    return {col: arr.filter(keep).cast(pa.string()) for col, arr in binary.items()}, rejects, keep


# -------------------------------------------------------------------------------------- Parquet


def _read_parquet(path: Path, source: SourceConfig, columns: list[str], piece: Piece | None = None) -> Iterable[_Part]:
    try:
        pf = pq.ParquetFile(path)
        leaves = _leaf_paths(pf.schema_arrow)
        where = _match_columns(columns, leaves, path, source, "columns")
        # Read only the top-level fields holding the wanted leaves, then flatten their structs.
        tops = sorted({_top_field(pf.schema_arrow, leaves[i]) for i in where.values()})
        if piece is None:
            table = _flatten(pf.read(columns=tops))
        else:
            table = _flatten(_read_row_range(pf, piece, tops))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, UnicodeDecodeError) as exc:  # OSError: also corrupt pages; UnicodeDecodeError: a column name not UTF-8
        raise InputError(f"source {source.name!r}: {path}: cannot read Parquet: {one_line(exc)}") from exc
    yield _arrow_part(table, where, leaves, path, source, piece.first_row if piece is not None else 1)


def _read_duckdb(path: Path, source: SourceConfig, columns: list[str], piece: Piece | None = None) -> Iterable[_Part]:
    """A DuckDB database's table or query (`source.table` / `source.query`), read only, as one Arrow
    table; its columns are checked and converted as Parquet's are. Row numbers count the result's
    rows from 1."""
    try:
        import duckdb
    except ImportError as exc:
        raise InputError(f"source {source.name!r}: format duckdb needs DuckDB: pip install duckdb") from exc
    sql = source.query if source.query is not None else f'SELECT * FROM "{source.table.replace(chr(34), chr(34) * 2)}"'
    try:
        with duckdb.connect(str(path), read_only=True) as db:
            table = _flatten(_arrow_table(db.execute(sql)))
    except duckdb.Error as exc:
        raise InputError(f"source {source.name!r}: {path}: cannot read DuckDB "
                         f"{'query' if source.query is not None else 'table ' + repr(source.table)}: {one_line(exc)}") from exc
    leaves = table.column_names
    yield _arrow_part(table, _match_columns(columns, leaves, path, source, "columns"), leaves, path, source, 1)


def _arrow_table(result) -> pa.Table:
    """A DuckDB result as an Arrow table (the method's name differs across DuckDB 1.x and 2.x)."""
    fetch = next(getattr(result, name) for name in ("to_arrow_table", "fetch_arrow_table", "arrow")
                 if hasattr(result, name))
    table = fetch()
    return table if isinstance(table, pa.Table) else table.read_all()


def _arrow_part(table: pa.Table, where: dict, leaves: list[str], path: Path, source: SourceConfig,
                first_row: int) -> _Part:
    """The wanted columns of an Arrow table as text: dictionary columns as their values, columns
    that hold bytes (or invalid UTF-8) decoded per row, the undecodable rows rejected."""
    strings: dict[str, pa.ChunkedArray] = {}
    binary: dict[str, pa.ChunkedArray] = {}
    for col, i in where.items():
        arr = table.column(leaves[i])
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)  # categorical columns: their values, not codes
        if _is_binary(arr.type) or not _valid_text(arr):
            binary[col] = arr.cast(pa.binary())  # may hold invalid UTF-8: rejected per row, as in CSV
        else:
            strings[col] = _to_string(arr, col, path, source)
    rows = np.arange(first_row, first_row + table.num_rows, dtype=np.int64)
    decoded, rejects, keep = _decode_text(binary, rows, "UTF-8")
    if keep is not None:
        strings = {col: arr.filter(keep) for col, arr in strings.items()}
        rows = rows[keep]
    return _Part(strings | decoded, rows, rejects)


def _is_binary(kind: pa.DataType) -> bool:
    return (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or pa.types.is_binary_view(kind)
    )


def _valid_text(arr: pa.ChunkedArray) -> bool:
    """False for a string column holding invalid UTF-8 (a damaged file): Parquet readers do not check."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return True
    try:
        arr.validate(full=True)
        return True
    except pa.ArrowInvalid:
        return False


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """Dotted paths of every non-struct field, the names Table.flatten() gives them."""
    out: list[str] = []

    def walk(prefix: str, fields: Iterable[pa.Field]) -> None:
        for f in fields:
            name = f"{prefix}{f.name}"
            if pa.types.is_struct(f.type):
                walk(name + ".", list(f.type))
            else:
                out.append(name)

    walk("", schema)
    return out


def _top_field(schema: pa.Schema, leaf: str) -> str:
    # A top-level name may itself contain dots, so find the field whose name prefixes the path.
    if leaf in schema.names:
        return leaf
    for name in schema.names:
        if leaf == name or leaf.startswith(name + "."):
            return name
    raise KeyError(leaf)


def _flatten(table: pa.Table) -> pa.Table:
    while any(pa.types.is_struct(t) for t in table.schema.types):
        table = table.flatten()
    return table


def _to_string(arr: pa.ChunkedArray, col: str, path: Path, source: SourceConfig) -> pa.ChunkedArray:
    kind = arr.type
    where = f"source {source.name!r}: {path}: column {col!r}"
    if pa.types.is_nested(kind):
        raise InputError(f"{where} has type {kind}; expected scalar values")
    try:
        text = arr.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"{where} of type {kind} cannot be read as text") from exc
    if pa.types.is_timestamp(kind):
        # Arrow writes "2024-06-02 17:40:11.905Z"; ISO 8601 puts a "T" between date and time.
        text = pc.replace_substring(text, " ", "T", max_replacements=1)
    return text


# ---------------------------------------------------------------------------------------- JSONL


def _read_jsonl(path: Path, source: SourceConfig, columns: list[str], piece: Piece | None = None) -> Iterable[_Part]:
    schema = _json_schema(columns)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return
        # Memory-mapped: pieces go to pyarrow without copies and the page cache holds the text.
        # The map closes when the last view of it is gone, so it is not closed explicitly.
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    start, stop, first_line = (piece.start, piece.end, piece.first_row) if piece is not None else (0, len(data), 1)
    if start == 0 and data[:3] == codecs.BOM_UTF8:  # some Windows tools write one
        start = len(codecs.BOM_UTF8)
    while start < stop:
        end = data.rfind(b"\n", start, start + _JSON_CHUNK) + 1 if start + _JSON_CHUNK < stop else stop
        if end <= start:  # one line longer than a piece
            end = data.find(b"\n", start, stop) + 1 or stop
        newlines = _newlines(data, start, end)
        yield from _jsonl_piece(data, start, end, newlines, first_line, columns, schema)
        first_line += len(newlines)
        start = end


def _newlines(data: mmap.mmap, start: int, end: int) -> np.ndarray:
    """Offsets, from `start`, of the newline bytes in data[start:end]."""
    return np.flatnonzero(np.frombuffer(data, np.uint8, end - start, start) == ord("\n"))


def _jsonl_piece(
    data: mmap.mmap,
    start: int,
    end: int,
    newlines: np.ndarray,
    first_line: int,
    columns: list[str],
    schema: pa.Schema | None,
) -> Iterable[_Part]:
    """Parse data[start:end] with pyarrow; on failure split it in two and retry, so that a few bad
    lines in a big file cost little, and parse small failing pieces line by line.

    pyarrow only sees text whose every line is one object ({...}): it crashes (SIGSEGV, pyarrow 26)
    on a parse block that starts with `null`, and it starts blocks at any CR or LF."""
    lines = _object_lines(data, start, end, newlines) if schema is not None else None
    if lines is not None:
        try:
            table = pa_json.read_json(
                pa.BufferReader(pa.py_buffer(data)[start:end]),
                parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
            )
            if table.num_rows == len(lines):  # else some line held two objects: no row numbers
                table = _flatten(table)
                strings = {col: table.column(col) for col in columns}
                for arr in strings.values():
                    arr.validate(full=True)  # pyarrow does not check UTF-8 inside strings
                yield _Part(strings, first_line + lines)
                return
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    half = len(newlines) // 2
    if half > _JSON_SLOW_LINES // 2 and schema is not None:
        middle = int(newlines[half - 1]) + 1  # just after a newline, so both halves are whole lines
        left, right = newlines[:half], newlines[half:] - middle
        yield from _jsonl_piece(data, start, start + middle, left, first_line, columns, schema)
        yield from _jsonl_piece(data, start + middle, end, right, first_line + half, columns, schema)
        return
    yield _jsonl_slow(data[start:end], first_line, columns)


def _object_lines(data: mmap.mmap, start: int, end: int, newlines: np.ndarray) -> np.ndarray | None:
    """Indexes of the lines of data[start:end] that are not blank, when every one of them starts
    with "{" and ends with "}" and no CR stands alone (pyarrow takes it for a line end); else None.
    Such text can only start a pyarrow block with "{", no object can span lines, and pyarrow's row
    count tells whether a line held two objects."""
    text = np.frombuffer(data, np.uint8, end - start, start)
    lines = len(newlines) + (text[-1] != ord("\n"))
    starts = np.concatenate(([0], newlines + 1))[:lines]
    ends = np.append(newlines, len(text))[:lines]
    if data.find(b"\r", start, end) >= 0:  # memchr first: most files hold no CR at all
        returns = np.flatnonzero(text == ord("\r"))
        if (text[np.minimum(returns + 1, len(text) - 1)] != ord("\n")).any():  # a CR last is alone too
            return None
    ends = ends - ((ends > starts) & (text[np.maximum(ends - 1, 0)] == ord("\r")))  # CRLF
    length = ends - starts
    blank = (length == 0) | ((length == 1) & np.isin(text[np.minimum(starts, len(text) - 1)], _BLANK_BYTES))
    filled = np.flatnonzero(~blank)
    if not ((text[starts[filled]] == ord("{")).all() and (text[ends[filled] - 1] == ord("}")).all()):
        return None
    return filled.astype(np.int64)


_BLANK_BYTES = np.frombuffer(b" \t", np.uint8)


def _jsonl_slow(data: bytes, first_line: int, columns: list[str]) -> _Part:
    """Line by line with orjson: every bad line becomes a reject carrying its line number."""
    extractor = _Extractor(columns)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the text after the final newline is not a line
    with _paused_gc():
        for offset, line in enumerate(lines):
            if not line.strip():
                continue  # blank lines are not rows
            number = first_line + offset
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                truncated = exc.msg.startswith("unexpected end of data")
                reason = "truncated line" if truncated else f"invalid JSON: {exc.msg}"
                extractor.reject(number, None, reason, line)
                continue
            extractor.add(number, obj, line)
    return extractor.part()


def _json_schema(columns: list[str]) -> pa.Schema | None:
    """Nested struct schema with every referenced dotted path as a string; None when a path is
    also the parent of another (pyarrow cannot type one field as both), which forces the slow path."""
    tree: dict[str, Any] = {}
    for col in columns:
        node = tree
        *parents, leaf = col.split(".")
        for name in parents:
            node = node.setdefault(name, {})
            if node is None:
                return None
        if leaf in node:
            return None
        node[leaf] = None

    def fields(node: dict[str, Any]) -> list[pa.Field]:
        return [pa.field(k, pa.string() if v is None else pa.struct(fields(v))) for k, v in node.items()]

    return pa.schema(fields(tree))


# -------------------------------------------------------------------------------------- Segment


def _read_segment(path: Path, source: SourceConfig, columns: list[str], piece: Piece | None = None) -> Iterable[_Part]:
    """A Segment HTTP batch body {"batch": [...]}, or a JSONL of such bodies; one row per message,
    numbered by its position among the file's messages (its index in `batch` for one batch)."""
    assert piece is None, "Segment batch files are read whole"
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    if not data.strip():
        raise InputError(f"source {source.name!r}: {path}: not a Segment batch file (empty)")
    batches: list[tuple[int | None, list]] = []
    try:
        batches.append((None, _batch_list(orjson.loads(data), path, source, None)))
    except orjson.JSONDecodeError:
        for number, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                body = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                where = f"source {source.name!r}: {path}: not a Segment batch file"
                raise InputError(f"{where} (line {number}: invalid JSON: {exc.msg})") from exc
            batches.append((number, _batch_list(body, path, source, number)))
    extractor = _Extractor(columns)
    row = 0
    with _paused_gc():
        for line, messages in batches:
            for index, message in enumerate(messages, 1):
                row += 1
                if not isinstance(message, dict):
                    where = f"line {line}, " if line is not None else ""
                    reason = f"not a JSON object ({where}batch item {index})"
                    extractor.reject(row, None, reason, message)
                    continue
                extractor.add(row, message, message)
    yield extractor.part()


def _batch_list(body: Any, path: Path, source: SourceConfig, line: int | None) -> list:
    if isinstance(body, dict) and isinstance(body.get("batch"), list):
        return body["batch"]
    where = f" (line {line})" if line is not None else ""
    raise InputError(
        f"source {source.name!r}: {path}: not a Segment batch file{where}: expected an object with a 'batch' list"
    )


# --------------------------------------------------------------------------------------- shared


class _Extractor:
    """Pulls dotted paths out of parsed JSON objects, one row at a time (the slow paths).

    `source` is what a reject's raw text is made from (the line's bytes, or the message itself),
    converted only when the row is rejected.
    """

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.paths = [tuple(col.split(".")) for col in columns]
        self.records: list[tuple[str | None, ...]] = []
        self.rows: list[int] = []
        self.rejects: list[Reject] = []

    def reject(self, row: int, field: str | None, reason: str, source: Any) -> None:
        raw = _raw(source if isinstance(source, (bytes, str)) else orjson.dumps(source))
        self.rejects.append((row, field, reason, raw))

    def add(self, row: int, obj: Any, source: Any) -> None:
        if type(obj) is not dict:
            self.reject(row, None, "not a JSON object", source)
            return
        record: list[str | None] = []
        for col, keys in zip(self.columns, self.paths):
            value = obj
            for key in keys:
                value = value.get(key) if type(value) is dict else None
                if value is None:
                    break  # an absent path is NA: events vary by type
            if value is None or type(value) is str:
                record.append(value)
            elif isinstance(value, (dict, list)):
                what = "an object" if isinstance(value, dict) else "an array"
                self.reject(row, col, f"field {col} is {what}, expected a value", source)
                return
            else:
                record.append(_scalar_text(value))
        self.records.append(tuple(record))
        self.rows.append(row)

    def part(self) -> _Part:
        by_column = list(zip(*self.records)) if self.records else [()] * len(self.columns)
        strings = {col: pa.array(vals, pa.string()) for col, vals in zip(self.columns, by_column)}
        return _Part(strings, np.asarray(self.rows, dtype=np.int64), self.rejects)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # JSON spelling, not Python's
    return repr(value)  # ints and floats, as Python (and orjson) print them


def _match_columns(
    wanted: list[str], found: list[str], path: Path, source: SourceConfig, what: str
) -> dict[str, int]:
    """Map each configured column to its index in `found`: exact spelling first, else the one
    name equal ignoring case (Data Loader ALL CAPS vs SOQL case)."""
    exact: dict[str, int] = {}
    folded: dict[str, list[int]] = {}
    for i, name in enumerate(found):
        exact.setdefault(name, i)
        folded.setdefault(name.strip().casefold(), []).append(i)
    where: dict[str, int] = {}
    missing: list[str] = []
    for col in wanted:
        candidates = folded.get(col.strip().casefold(), [])
        if col in exact:
            where[col] = exact[col]
        elif len(candidates) == 1:
            where[col] = candidates[0]
        elif candidates:
            names = ", ".join(found[i] for i in candidates)
            raise InputError(f"source {source.name!r}: {path}: column {col!r} is ambiguous; {what} has {names}")
        else:
            missing.append(col)
    if missing:
        listed = ", ".join(repr(c) for c in missing)
        raise InputError(
            f"source {source.name!r}: {path}: column {listed} not found (case-insensitive) in {what}: "
            + ", ".join(found)
        )
    return where


@contextmanager
def _paused_gc():
    """Row-by-row loops keep millions of small objects alive; the cyclic collector would rescan
    them over and over (it doubles the time) though none of them can form a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _codec_name(source: SourceConfig, encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError as exc:
        raise InputError(f"source {source.name!r}: unknown encoding {encoding!r}") from exc


def _raw(text: bytes | str | None) -> str | None:
    """Offending text for rejects.raw: at most RAW_LIMIT characters, bad bytes shown as escapes."""
    if text is None:
        return None
    if isinstance(text, str):
        # Undecodable bytes read with "surrogateescape" become lone surrogates; show them as \xNN.
        text = text[: RAW_LIMIT * 4].encode("utf-8", "surrogateescape")
    return text[: RAW_LIMIT * 4].decode("utf-8", errors="backslashreplace")[:RAW_LIMIT]


def _part_table(part: _Part | None, columns: list[str], path: str, nulls: Sequence[str] = ()) -> pa.Table:
    """One file's rows as an Arrow table: empty strings, and cells that are one of `nulls` once
    trimmed (CSV null tokens: NA, NULL, \\N...), become null; then _file and _row."""
    n = 0 if part is None else len(part.rows)
    data: dict[str, Any] = {}
    tokens = pa.array(sorted(set(nulls)), pa.string()) if nulls else None
    for col in columns:
        arr = pa.array([], pa.string()) if part is None else part.columns[col]
        missing = pc.equal(pc.binary_length(arr), 0)
        if tokens is not None:
            missing = pc.or_(missing, pc.is_in(pc.utf8_trim_whitespace(arr), value_set=tokens))
        data[col] = pc.if_else(missing, pa.scalar(None, pa.string()), arr)
    data["_file"] = pa.repeat(pa.scalar(path, pa.string()), n)
    data["_row"] = pa.array(np.empty(0, np.int64) if part is None else part.rows, pa.int64())
    return pa.table(data)


def _reject_frame(rejects: list[tuple]) -> pd.DataFrame:
    source, file, row, field_, reason, raw = (list(c) for c in zip(*rejects)) if rejects else ([],) * 6
    return pd.DataFrame(
        {
            "source": pd.array(source, dtype="str"),
            "file": pd.array(file, dtype="str"),
            "row": np.asarray(row, dtype=np.int64),
            "field": pd.array(field_, dtype="str"),
            "reason": pd.array(reason, dtype="str"),
            "raw": pd.array([_raw(r) for r in raw], dtype="str"),
        },
        columns=REJECT_COLUMNS,
    )


def _read_shaped(path: Path, source: SourceConfig, columns: list[str], piece: Piece | None = None) -> Iterable[_Part]:
    """Newline-delimited JSON events of a CDP shape (resolver/ingest/cdp_shapes.py: ga4, adobe,
    tealium), each reshaped before its columns are taken; bad lines become rejects with their line
    number. Pieces of _SHAPED_LINES lines keep memory bounded."""
    transform = TRANSFORMS[source.format]
    with open(path, "rb") as f:
        if piece is None:
            data, first_line = f.read(), 1
        else:
            f.seek(piece.start)
            data, first_line = f.read(piece.end - piece.start), piece.first_row
    if piece is None or piece.start == 0:
        data = data.removeprefix(codecs.BOM_UTF8)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for start in range(0, len(lines), _SHAPED_LINES):
        extractor = _Extractor(columns)
        with _paused_gc():
            for offset, line in enumerate(lines[start:start + _SHAPED_LINES]):
                if not line.strip():
                    continue
                number = first_line + start + offset
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    extractor.reject(number, None, f"invalid JSON: {exc.msg}", line)
                    continue
                if type(obj) is not dict:
                    extractor.reject(number, None, "not a JSON object", line)
                    continue
                extractor.add(number, transform(obj), line)
        yield extractor.part()


_SHAPED_LINES = 200_000
_READERS = {"csv": _read_csv, "parquet": _read_parquet, "jsonl": _read_jsonl, "segment": _read_segment,
            "ga4": _read_shaped, "adobe": _read_shaped, "tealium": _read_shaped, "duckdb": _read_duckdb}
