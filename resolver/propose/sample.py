"""A sample of each input file as raw text, the way the readers would see it.

`resolver init` decides column kinds and counts blocking pairs on the first rows of each file
(`--sample-rows`, 20k by default), not on the whole file. Values stay raw strings, as in
`resolver/ingest/readers.py`: Parquet categories become their values, timestamps ISO text with a "T",
JSON scalars their JSON spelling; an empty string is missing. The file's row count is exact when
the sample reached its end (or from Parquet metadata), else estimated from its newlines.
"""

from __future__ import annotations

import csv
import glob
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from resolver.ingest.readers import InputError, one_line

FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
           ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_DELIMITERS = ",;\t|"


@dataclass
class FileSample:
    """One input (a file, or the files of one glob) and the first rows of it."""

    pattern: str  # what the user named: a file or a glob
    files: list[Path]
    format: str  # csv | parquet | jsonl
    frame: pd.DataFrame  # the sampled rows: one str column per input column (header as written, trimmed)
    rows: int  # rows in all the files (exact when `exact`)
    exact: bool
    csv: dict = field(default_factory=dict)  # delimiter / encoding, when not the defaults

    @property
    def sampled(self) -> int:
        return len(self.frame)


def format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{path}: cannot tell the format from the extension {suffix!r} "
                         f"(known: {', '.join(sorted(FORMATS))})")
    return FORMATS[suffix]


def expand(pattern: str) -> list[Path]:
    """The files a DATA argument names: itself, or what its glob matches (sorted)."""
    if glob.has_magic(pattern):
        files = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
    else:
        files = [Path(pattern)] if Path(pattern).is_file() else []
    if not files:
        raise InputError(f"{pattern}: no such file")
    return files


def sample_input(pattern: str, sample_rows: int) -> FileSample:
    """The first `sample_rows` rows of the files a DATA argument names (file after file)."""
    files = expand(pattern)
    fmt = format_of(files[0])
    reader = {"csv": _csv_sample, "parquet": _parquet_sample, "jsonl": _jsonl_sample}[fmt]
    frames, rows, exact, options = [], 0, True, {}
    for path in files:
        want = sample_rows - sum(len(f) for f in frames)
        try:
            if want <= 0:
                rows += _count_rows(path, fmt, options)
                exact = exact and fmt == "parquet"
                continue
            frame, file_rows, file_exact, file_options = reader(path, want)
        except OSError as exc:  # deleted after the glob, a dangling link, no permission
            raise InputError(f"{path}: cannot read: {one_line(exc)}") from exc
        options = options or file_options
        frames.append(frame)
        rows += file_rows
        exact = exact and file_exact
    names = {c.casefold(): c for c in reversed(frames[0].columns)}  # later files: headers as the first spells them
    frames = [frames[0]] + [f.rename(columns=lambda c: names.get(c.casefold(), c)) for f in frames[1:]]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return FileSample(pattern, files, fmt, frame, rows, exact, options)


def _text_frame(columns: dict[str, pa.Array | pa.ChunkedArray]) -> pd.DataFrame:
    """Raw text columns -> a frame of str (NA where missing or empty)."""
    out = {}
    for name, arr in columns.items():
        series = pd.Series(arr.to_pylist(), dtype="str")
        out[name] = series.where(series != "")
    return pd.DataFrame(out)


def _unique_names(names: list[str]) -> list[str]:
    """Header names trimmed (the readers match them trimmed and case-insensitively); a repeat keeps
    a suffix so that no column is lost (the detector skips it: a config cannot name it)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        base = name.strip()
        key = base.casefold()
        seen[key] = seen.get(key, 0) + 1
        out.append(base if seen[key] == 1 else f"{base} [repeated {seen[key]}]")
    return out


# ------------------------------------------------------------------------------------------ CSV
def _sniff(head: bytes) -> tuple[str, str]:
    """(delimiter, encoding) from the first bytes of a CSV."""
    encoding = "utf-8"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sample
            encoding, text = "cp1252", head.decode("cp1252", errors="replace")
        else:
            text = head[:exc.start].decode("utf-8")
    first = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    try:
        delimiter = csv.Sniffer().sniff(text[:65536], delimiters=_DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","
    if delimiter not in first:  # the sniffer guessed from the data: trust the header line
        counts = {d: first.count(d) for d in _DELIMITERS}
        delimiter = max(counts, key=counts.get) if max(counts.values()) else ","
    return delimiter, encoding


def _csv_sample(path: Path, want: int):
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    if not head.strip():
        raise InputError(f"{path}: empty file (no header row)")
    delimiter, encoding = _sniff(head)
    with open(path, "rb") as f:
        reader = csv.reader(io.TextIOWrapper(f, encoding="utf-8-sig" if encoding == "utf-8" else encoding,
                                             errors="replace", newline=""), delimiter=delimiter)
        header = next(reader, None)
    if not header:
        raise InputError(f"{path}: the first line is blank (no header row)")
    names = [f"c{i}" for i in range(len(header))]
    stream = pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1, use_threads=False,
                                        encoding="utf8" if encoding == "utf-8" else encoding, block_size=1 << 20),
        parse_options=pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
                                          invalid_row_handler=lambda row: "skip"),
        convert_options=pa_csv.ConvertOptions(column_types={n: pa.string() for n in names},
                                              strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    batches, got, exhausted = [], 0, True
    for batch in stream:
        batches.append(batch)
        got += batch.num_rows
        if got >= want:
            exhausted = False
            break
    table = pa.Table.from_batches(batches, schema=stream.schema).slice(0, want)
    if not exhausted:
        try:  # the sample ended exactly at the end of the file
            exhausted = stream.read_next_batch() is None
        except StopIteration:
            exhausted = True
    frame = _text_frame(dict(zip(_unique_names(header), table.columns)))
    options = {k: v for k, v in (("delimiter", delimiter), ("encoding", encoding))
               if v != {"delimiter": ",", "encoding": "utf-8"}[k]}
    rows = len(frame) if exhausted else _count_rows(path, "csv", options, sampled=(len(frame), _bytes_of(table)))
    return frame, rows, exhausted, options


def _bytes_of(table: pa.Table) -> int:
    return int(sum(pc.sum(pc.utf8_length(c)).as_py() or 0 for c in table.columns)) + table.num_rows * table.num_columns


def _count_rows(path: Path, fmt: str, options: dict, sampled: tuple[int, int] | None = None) -> int:
    """Rows of a file: Parquet metadata; else its newlines (less the header): quoted newlines count
    too, so it is an estimate."""
    if fmt == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    newlines = 0
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            newlines += int(np.count_nonzero(np.frombuffer(chunk, np.uint8) == ord("\n")))
    return max(newlines - (1 if fmt == "csv" else 0), sampled[0] if sampled else 0)


# -------------------------------------------------------------------------------------- Parquet
def _arrow_text(arr: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """A column as the Parquet reader turns it into text (None: nested, not a scalar column)."""
    kind = arr.type
    if pa.types.is_dictionary(kind):
        arr, kind = arr.cast(kind.value_type), kind.value_type
    if pa.types.is_nested(kind):
        return None
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        text = [None if v is None else v.decode("utf-8", "replace") for v in arr.to_pylist()]
        return pa.chunked_array([pa.array(text, pa.string())])
    text = arr.cast(pa.string())
    if pa.types.is_timestamp(kind):
        text = pc.replace_substring(text, " ", "T", max_replacements=1)
    return text


def _parquet_sample(path: Path, want: int):
    try:
        pf = pq.ParquetFile(path)
        batch = next(pf.iter_batches(batch_size=want), None)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:  # UnicodeDecodeError: a column name not UTF-8
        raise InputError(f"{path}: cannot read Parquet: {one_line(exc)}") from exc
    table = pa.Table.from_batches([batch]) if batch is not None else pf.schema_arrow.empty_table()
    while any(pa.types.is_struct(t) for t in table.schema.types):
        table = table.flatten()
    columns = {}
    for name, column in zip(_unique_names(table.column_names), table.columns):
        text = _arrow_text(column)
        if text is not None:
            columns[name] = text
    rows = pf.metadata.num_rows
    return _text_frame(columns), rows, True, {}


# ---------------------------------------------------------------------------------------- JSONL
def _flat(obj: dict, prefix: str = "") -> dict[str, str | None]:
    """Dotted paths of the scalars of one JSON object, in the readers' spelling."""
    out: dict[str, str | None] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        elif isinstance(value, list):
            continue  # not a scalar: no column
        elif value is None or isinstance(value, str):
            out[name] = value
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = repr(value)
    return out


def _jsonl_sample(path: Path, want: int):
    rows: list[dict] = []
    exhausted = True
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            if len(rows) >= want:
                exhausted = False
                break
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                rows.append(_flat(obj))
    names = list(dict.fromkeys(k for row in rows for k in row))
    frame = pd.DataFrame({n: pd.Series([row.get(n) for row in rows], dtype="str") for n in names})
    frame = frame.where(frame != "")
    total = len(frame) if exhausted else _count_rows(path, "jsonl", {}, sampled=(len(frame), 0))
    return frame, total, exhausted, {}


_SAFE_NAME = re.compile(r"[^a-z0-9_]+")


def source_name(path: Path) -> str:
    """A source name from a file stem: lower case, runs of other characters -> "_"."""
    stem = path.name.split(".")[0] if path.suffix else path.stem
    return _SAFE_NAME.sub("_", stem.lower()).strip("_") or "source"

