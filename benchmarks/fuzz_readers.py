"""Reader fuzzing: a valid input file of each source format, mutated, read through the real ingest
path (plan_ingest's pieces, read_source, ingest_source, cross-piece duplicate keys) in a child
process, so that a crash inside pyarrow is an outcome here instead of the end of the run.

Mutations: byte flips, truncation, inserted non-object JSON lines, bad encodings, huge and deep
fields, byte-order marks, NULs, wrong value types, CR/LF mixes, empty files, unreadable paths
(a dangling link or a folder matched by the glob).

Outcomes of one file:
- clean: every row read, none rejected;
- rejects: some rows rejected, each with a reason;
- exit 3: the file as a whole refused with InputError, one line naming the file (the CLI's exit 3);
- crash: any other exception (the CLI would print a traceback), or the child process died or hung;
- unaccounted: rows read differ from the rows in the file (where they can be counted without the
  reader), a row is numbered twice, or read != resolved + rejected + suppressed;
- bad message: an InputError of several lines, or one that does not name the file.

`run(n, seed)` (the benchmarks/fuzz.py family interface) checks n files of every format.
tests/test_fuzz_readers.py draws from the same mutations with hypothesis.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import random
import select
import subprocess
import sys
import traceback
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = ("csv", "parquet", "jsonl", "segment", "ga4", "adobe", "tealium")
MUTATIONS = ("none", "byte_flip", "truncate", "non_objects", "bad_encoding", "huge_field", "bom", "nul",
             "wrong_type", "line_ends", "empty", "unreadable")
FAILURES = ("crash", "unaccounted", "bad message")
EXTENSION = {"csv": "csv", "parquet": "parquet", "segment": "json"}  # others: jsonl

_EVENT_TYPES = {"user_id": {"priority": 1, "limit": 1, "strong": True},
                "email": {"normalizer": "email", "priority": 2, "limit": 5, "strong": True},
                "anonymous_id": {"priority": 3, "limit": 20, "hub_cap": 5}}
_RECORDS = {"kind": "records", "key": "Id", "timestamp": "LastModifiedDate", "deleted": "IsDeleted",
            "attributes": {"first_name": "FirstName"}, "identifiers": {"email": "Email", "user_id": "UserId"}}
SOURCES = {
    "csv": _RECORDS,
    "parquet": _RECORDS,
    "jsonl": {"kind": "events", "key": "messageId", "timestamp": "timestamp",
              "identifiers": {"user_id": "userId", "anonymous_id": "anonymousId", "email": "traits.email"}},
    "segment": {"kind": "events", "key": "messageId", "timestamp": "timestamp",
                "identifiers": {"user_id": "userId", "anonymous_id": "anonymousId", "email": "traits.email"}},
    "ga4": {"kind": "events", "key": "_event_id", "timestamp": "event_timestamp",
            "attributes": {"page": "event_params.page_location"},
            "identifiers": {"anonymous_id": "user_pseudo_id", "user_id": "user_id"}},
    "adobe": {"kind": "events", "key": "_id", "timestamp": "timestamp",
              "identifiers": {"anonymous_id": "identityMap.ECID", "email": "identityMap.Email"}},
    "tealium": {"kind": "events", "key": "event_id", "timestamp": "timestamp",
                "identifiers": {"anonymous_id": "tealium_visitor_id", "email": "customer_email"}},
}
_NON_OBJECTS = [b"null", b"1", b"-2.5e3", b'"text"', b"[1, 2]", b"[]", b"true", b"false", b" null",
                b"{} null", b"null {}", b"{}\rnull", b"[{}]"]
_WRONG_VALUES = [42, 3.5, True, None, {"x": 1}, [1, 2], [], {}, "", 10**30]


# ---------------------------------------------------------------------------------- valid inputs


def people(rng: random.Random, n: int) -> list[dict]:
    return [{"id": f"003{rng.randrange(16**12):012X}", "email": f"p{i}.{rng.randrange(1000)}@mail.example",
             "first": rng.choice(["Ann", "José", "Zoë", "李", "O'Neil", 'Quo"te', "Comma, Jr"]),
             "user": f"u{rng.randrange(10**6)}", "anon": f"a-{rng.randrange(16**8):08x}",
             "ts": f"2024-0{rng.randrange(1, 10)}-1{rng.randrange(10)}T12:00:0{rng.randrange(10)}Z"}
            for i in range(n)]


def row(fmt: str, p: dict, i: int) -> dict:
    """One input row of `fmt` for person `p`: a CRM record, or an event in the format's shape."""
    if fmt in ("csv", "parquet"):
        return {"Id": p["id"], "FirstName": p["first"], "Email": p["email"], "UserId": p["user"],
                "LastModifiedDate": p["ts"], "IsDeleted": "false"}
    if fmt in ("jsonl", "segment"):
        return {"messageId": f"m{i}", "type": "identify", "timestamp": p["ts"], "userId": p["user"],
                "anonymousId": p["anon"], "traits": {"email": p["email"], "firstName": p["first"]}}
    if fmt == "ga4":
        return {"event_timestamp": 1717350011905123 + i, "event_name": "page_view", "user_id": p["user"],
                "user_pseudo_id": p["anon"], "event_bundle_sequence_id": i,
                "event_params": [{"key": "page_location", "value": {"string_value": "https://shop.example/"}},
                                 {"key": "ga_session_id", "value": {"int_value": 1717349900 + i}}]}
    if fmt == "adobe":
        return {"_id": f"e-{i}", "timestamp": p["ts"], "eventType": "web.webpagedetails.pageViews",
                "identityMap": {"ECID": [{"id": p["anon"], "authenticatedState": "ambiguous", "primary": False}],
                                "Email": [{"id": p["email"], "authenticatedState": "authenticated"}]}}
    return {"tealium_visitor_id": p["anon"].upper(), "tealium_event": "view", "event_id": f"t-{i}",
            "tealium_timestamp_epoch": 1717350011 + i, "customer_email": p["email"]}


def encode(fmt: str, rows: list, rng: random.Random) -> bytes:
    """The file of `rows` in `fmt`; rows of the JSON formats may be any JSON value, given as bytes
    when they are to be written as they are (a non-object line)."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator=rng.choice(["\n", "\r\n"]))
        writer.writerow(list(SOURCE_COLUMNS))
        writer.writerows([[r.get(c, "") for c in SOURCE_COLUMNS] for r in rows])
        return out.getvalue().encode()
    if fmt == "parquet":
        return _parquet(pa.Table.from_pylist(rows) if rows else _empty_table(), rng)
    items = [r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode() for r in rows]
    if fmt == "segment":
        return b'{"batch": [' + b",".join(items) + b"]}"
    return b"".join(line + b"\n" for line in items)


SOURCE_COLUMNS = ("Id", "FirstName", "Email", "UserId", "LastModifiedDate", "IsDeleted")


def _empty_table() -> pa.Table:
    return pa.table({c: pa.array([], pa.string()) for c in SOURCE_COLUMNS})


def _parquet(table: pa.Table, rng: random.Random) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=rng.choice([7, 50, 1000]))  # several groups: pieces
    return out.getvalue()


# ------------------------------------------------------------------------------------ mutations


def mutate(fmt: str, kind: str, rng: random.Random, n: int) -> bytes | str:
    """A mutated file of `fmt`: its bytes, or "dangling" / "folder" for a path that cannot be read."""
    rows = [row(fmt, p, i) for i, p in enumerate(people(rng, n))]
    if kind == "unreadable":
        return rng.choice(["dangling", "folder"])
    if kind in _STRUCTURAL:
        return _STRUCTURAL[kind](fmt, rows, rng)
    return _BYTEWISE[kind](encode(fmt, rows, rng), rng)


def _byte_flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= rng.randint(1, 255)
    return bytes(out)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data))]


def _bom(data: bytes, rng: random.Random) -> bytes:
    bom = rng.choice([codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF8 * 2])
    if rng.random() < 0.3:  # a BOM mid-file: files concatenated by a tool that writes one
        cut = data.find(b"\n", rng.randrange(len(data))) + 1
        return data[:cut] + bom + data[cut:]
    return bom + data


def _nul(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 5)):
        out[rng.randrange(len(out) + 1):0] = b"\x00" * rng.choice([1, 1, 3, 100])
    return bytes(out)


def _line_ends(data: bytes, rng: random.Random) -> bytes:
    how = rng.choice(["crlf", "cr", "mixed", "no final", "blank lines"])
    if how == "crlf":
        return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if how == "cr":
        return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r")
    if how == "no final":
        return data.rstrip(b"\r\n")
    lines = data.split(b"\n")
    for _ in range(rng.randint(1, 5)):
        lines.insert(rng.randrange(len(lines) + 1), rng.choice([b"", b" ", b"\t", b"\r", b"\x0b", b"  "]))
    joined = b"\n".join(lines)
    return joined if how == "blank lines" else joined.replace(b"\n", b"\r", rng.randint(1, 5))


def _bad_encoding_bytes(data: bytes, rng: random.Random) -> bytes:
    """Invalid UTF-8 inside values, or the whole file in another encoding."""
    if rng.random() < 0.3:
        text = data.decode("utf-8")
        return text.encode(rng.choice(["utf-16", "utf-16-be", "cp1252", "latin-1"]), "replace")
    out = bytearray(data)
    for _ in range(rng.randint(1, 5)):
        bad = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\x80"])
        out[rng.randrange(len(out) + 1):0] = bad
    return bytes(out)


_BYTEWISE = {"none": lambda data, rng: data, "byte_flip": _byte_flip, "truncate": _truncate, "bom": _bom,
             "nul": _nul, "line_ends": _line_ends}


def _non_objects(fmt: str, rows: list, rng: random.Random) -> bytes:
    """Lines (batch items) that are JSON but not objects; sometimes every one of them."""
    if fmt in ("csv", "parquet"):  # their equivalent: rows of nothing but nulls / junk lines
        if fmt == "parquet":
            return _parquet(pa.table({c: pa.nulls(len(rows), pa.string()) for c in SOURCE_COLUMNS}), rng)
        data = encode(fmt, rows, rng)
        junk = [b"null", b",,,,,", b'"', b"[1, 2]", b",,,,,,,,,,"]
        lines = data.split(b"\n")
        for _ in range(rng.randint(1, 5)):
            lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(junk))
        return b"\n".join(lines)
    junk = [rng.choice(_NON_OBJECTS) for _ in range(rng.randint(1, 20))]
    if rng.random() < 0.25:
        return encode(fmt, junk * rng.randint(1, 50), rng)
    for item in junk:
        rows.insert(rng.randrange(len(rows) + 1), item)
    return encode(fmt, rows, rng)


def _mapped(fmt: str) -> list[str]:
    source = SOURCES[fmt]
    return [source["key"], source["timestamp"], *(c for c in source["identifiers"].values())]


def _set_path(obj: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        nxt = obj.get(name)
        if not isinstance(nxt, dict):
            nxt = obj[name] = {}
        obj = nxt
    obj[leaf] = value


def _wrong_type(fmt: str, rows: list, rng: random.Random) -> bytes:
    """Mapped values of another type: numbers, objects, arrays; Parquet columns of other types;
    CSV rows with too many or too few fields."""
    if fmt == "csv":
        data = encode(fmt, rows, rng).split(b"\n")
        for _ in range(rng.randint(1, 5)):
            i = rng.randrange(1, len(data))
            data[i] = data[i] + b",extra" if rng.random() < 0.5 else data[i].rpartition(b",")[0]
        return b"\n".join(data)
    if fmt == "parquet":
        table = pa.Table.from_pylist(rows)
        col = rng.choice(list(SOURCE_COLUMNS))
        n = len(rows)
        values = rng.choice([
            pa.array(range(n), pa.int64()), pa.array([i / 3 for i in range(n)], pa.float64()),
            pa.array([[str(i)] for i in range(n)], pa.list_(pa.string())),
            pa.array([{"x": str(i)} for i in range(n)], pa.struct([("x", pa.string())])),
            pa.array([i % 2 == 0 for i in range(n)], pa.bool_()),
            pa.array([b"\xff\xfe" + bytes([i % 256]) for i in range(n)], pa.binary()),
            pa.array([i * 10**9 for i in range(n)], pa.timestamp("ns")),
            pa.array([str(i % 3) for i in range(n)], pa.string()).dictionary_encode(),
            pa.nulls(n, pa.null()),
        ])
        return _parquet(table.set_column(table.schema.get_field_index(col), col, values), rng)
    for r in rng.sample(range(len(rows)), k=min(len(rows), rng.randint(1, 10))):
        _set_path(rows[r], rng.choice(_mapped(fmt)), rng.choice(_WRONG_VALUES))
    return encode(fmt, rows, rng)


def _huge_field(fmt: str, rows: list, rng: random.Random) -> bytes:
    """A value of megabytes, or (JSON) nested 100,000 deep."""
    i = rng.randrange(len(rows))
    if fmt not in ("csv", "parquet") and rng.random() < 0.3:
        depth = rng.choice([1000, 100_000])
        deep = b"[" * depth + b"]" * depth
        body = orjson.dumps(rows[i])
        rows[i] = body[:-1] + b',"deep":' + deep + b"}"
        return encode(fmt, rows, rng)
    big = "x" * rng.choice([70_000, 1 << 20, 3 << 20])
    if fmt in ("csv", "parquet"):
        rows[i]["Email"] = big
    else:
        _set_path(rows[i], rng.choice(_mapped(fmt)), big)
    return encode(fmt, rows, rng)


def _bad_encoding(fmt: str, rows: list, rng: random.Random) -> bytes:
    if fmt == "parquet":  # binary columns holding invalid UTF-8
        table = pa.Table.from_pylist(rows)
        bad = pa.array([v.encode() + (b"\xff" if rng.random() < 0.3 else b"") for v in table.column("Email").to_pylist()])
        return _parquet(table.set_column(table.schema.get_field_index("Email"), "Email", bad), rng)
    return _bad_encoding_bytes(encode(fmt, rows, rng), rng)


def _empty(fmt: str, rows: list, rng: random.Random) -> bytes:
    if fmt == "parquet":
        return _parquet(_empty_table(), rng) if rng.random() < 0.5 else b""
    choices = [b"", b"\n", b"\n\n\n", b"   ", codecs.BOM_UTF8, b"\x00"]
    if fmt == "csv":
        choices.append(encode(fmt, [], rng))  # a header and no rows
    if fmt == "segment":
        choices += [b'{"batch": []}', b"{}", b"[]"]
    return rng.choice(choices)


_STRUCTURAL = {"non_objects": _non_objects, "wrong_type": _wrong_type, "huge_field": _huge_field,
               "bad_encoding": _bad_encoding, "empty": _empty}


# ----------------------------------------------------------------- rows, counted without the reader


def rows_in(fmt: str, data: bytes) -> int | None:
    """Input rows in `data` when they can be counted independently of the readers: data rows of a
    CSV (csv module over Latin-1, which keeps every byte), non-blank lines of a JSONL, messages of a
    Segment batch, rows of a Parquet file; None when the file is not of its format at all."""
    try:
        if fmt == "parquet":
            return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        if fmt == "csv":
            records = [r for r in csv.reader(io.StringIO(data.decode("latin-1"), newline="")) if r]
            return len(records) - 1 if records else None
        text = data.removeprefix(codecs.BOM_UTF8)
        if fmt == "segment":
            return _segment_messages(text)
        return sum(1 for line in text.split(b"\n") if line.strip())
    except Exception:  # noqa: BLE001 - an unparseable file: the reader must refuse it (exit 3)
        return None


def _segment_messages(text: bytes) -> int | None:
    def batch(body) -> int:
        if isinstance(body, dict) and isinstance(body.get("batch"), list):
            return len(body["batch"])
        raise ValueError("not a batch")

    try:
        return batch(orjson.loads(text))
    except orjson.JSONDecodeError:
        return sum(batch(orjson.loads(line)) for line in text.split(b"\n") if line.strip())


# ------------------------------------------------------------------------------ one file, checked


def write_case(folder: Path, fmt: str, content: bytes | str) -> Path:
    """The input file (or unreadable path) in `folder`, as the source's glob matches it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"input.{EXTENSION.get(fmt, 'jsonl')}"
    if content == "dangling":
        path.symlink_to(folder / "gone")
    elif content == "folder":
        path.mkdir()
    else:
        path.write_bytes(content)
    return path


def check(folder: str, fmt: str, partition_bytes: int) -> dict:
    """Read the input in `folder` like a run does, in pieces of about `partition_bytes`; the
    outcome and the row counts."""
    from resolver.config import Config
    from resolver.ingest.tables import Vocabulary, ingest_source, reject_cross_file_duplicates
    from resolver.ingest.readers import InputError, read_source
    from resolver.normalize import Blocklist
    from resolver.ingest.plan import plan_ingest

    path = folder + "/input." + EXTENSION.get(fmt, "jsonl")
    source = {"name": "src", "format": fmt, "path": "input.*", **SOURCES[fmt]}
    config = Config.model_validate({"sources": [source], "identity": {"types": _EVENT_TYPES}, "base_dir": folder,
                                    "run": {"partition_bytes": partition_bytes, "workers": 1}})
    source = config.sources[0]
    vocab = Vocabulary.from_config(config)
    lists = config.identity.blocklist
    blocklist = Blocklist.from_config(lists.values, lists.patterns, lists.vendor_lists)
    expected = None if not os.path.isfile(path) else rows_in(fmt, Path(path).read_bytes())
    try:
        parts, numbers, reasons = [], [], []
        for job in plan_ingest(config):
            raw = read_source(config, source, files=[Path(f) for f in job.files], piece=job.piece)
            numbers += raw.frame["_row"].tolist() + raw.rejects["row"].tolist()
            reasons += raw.rejects["reason"].tolist()
            parts.append(ingest_source(config, source, raw, blocklist, vocab))
        reject_cross_file_duplicates(config, parts)
    except InputError as exc:
        message = str(exc)
        ok = "\n" not in message and (path in message or "input.*" in message)
        return {"outcome": "exit 3" if ok else "bad message", "detail": message[:300], "expected": expected}
    except Exception as exc:  # noqa: BLE001 - the CLI would end with a traceback: that is the finding
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {"outcome": "crash", "detail": f"{type(exc).__name__}: {str(exc)[:200]} at {where.filename}:{where.lineno}",
                "expected": expected}
    read = sum(p.rows_read for p in parts)
    rejected = sum(len(r) for p in parts for r in p.rejects)
    settled = sum(p.resolved + p.suppressed for p in parts) + rejected
    problems = []
    if expected is not None and read != expected:
        problems.append(f"{read} rows read, {expected} in the file")
    if len(set(numbers)) != len(numbers):
        problems.append("a row number repeats")
    if settled != read:
        problems.append(f"{read} read != {settled} resolved + rejected + suppressed")
    if any(not r for r in reasons):
        problems.append("a reject without a reason")
    outcome = "unaccounted" if problems else "rejects" if rejected else "clean"
    return {"outcome": outcome, "detail": "; ".join(problems), "expected": expected, "read": read,
            "rejected": rejected}


class Checker:
    """A child process that checks one folder at a time (imports paid once); a child that dies or
    hangs is reported as a crash and replaced."""

    def __init__(self, timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([root, str(Path(__file__).resolve().parent), env.get("PYTHONPATH", "")])
        return subprocess.Popen([sys.executable, "-c", "import fuzz_readers; fuzz_readers.serve()"], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def check(self, folder: Path, fmt: str, partition_bytes: int) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        self.proc.stdin.write(json.dumps([str(folder), fmt, partition_bytes]).encode() + b"\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout_s)
        line = self.proc.stdout.readline() if ready else b""
        if line:
            return json.loads(line)
        if not ready:
            self.proc.kill()
        code = self.proc.wait()
        self.proc = None
        what = f"no answer in {self.timeout_s:.0f} s" if not ready else f"the process died (exit {code})"
        return {"outcome": "crash", "detail": what, "expected": None}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def serve() -> None:
    """The child's loop: a JSON [folder, format, partition_bytes] a line in, a result a line out."""
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing the reader prints can garble the answers
    for line in sys.stdin:
        folder, fmt, partition = json.loads(line)
        out.write(json.dumps(check(folder, fmt, partition)) + "\n")
        out.flush()


# --------------------------------------------------------------------------------- the seeded run


def case(fmt: str, index: int, seed: int) -> tuple[str, bytes | str, int]:
    """The mutation kind, file content and piece size of case `index` of `fmt` (seeded)."""
    rng = random.Random(f"{seed}:{fmt}:{index}")
    kind = MUTATIONS[index % len(MUTATIONS)]
    content = mutate(fmt, kind, rng, rng.choice([1, 5, 40, 300]))
    return kind, content, piece_bytes(content, rng)


def piece_bytes(content: bytes | str, rng: random.Random) -> int:
    """0 (files read whole), or a piece size giving 2 to about 12 pieces, their boundaries anywhere."""
    size = len(content) if isinstance(content, bytes) else 0
    return rng.choice([0, size // rng.randint(2, 12) + 1])


def run(n: int, seed: int, folder: Path | None = None, jobs: int = 2) -> list[dict]:
    """n mutated files of every format, checked by `jobs` child processes; rows of (family,
    outcome, count), with up to five failing examples per family and outcome."""
    import shutil
    import tempfile
    import threading
    from concurrent.futures import ThreadPoolExecutor

    base = Path(tempfile.mkdtemp(prefix="fuzz-readers-", dir=folder))
    mine = threading.local()
    checkers: list[Checker] = []

    def one(fmt: str, index: int) -> tuple[str, dict]:
        if not hasattr(mine, "checker"):
            mine.checker = Checker()
            checkers.append(mine.checker)
        kind, content, partition = case(fmt, index, seed)
        where = base / f"{fmt}-{index}"
        write_case(where, fmt, content)
        try:
            return f"readers/{fmt}/{kind}", mine.checker.check(where, fmt, partition) | {"case": index}
        finally:
            shutil.rmtree(where, ignore_errors=True)

    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:  # threads only wait on the child processes
            results = list(pool.map(one, *zip(*[(fmt, i) for fmt in FORMATS for i in range(n)])))
    finally:
        for checker in checkers:
            checker.close()
        shutil.rmtree(base, ignore_errors=True)
    return summarize(results)


def summarize(results: list[tuple[str, dict]]) -> list[dict]:
    from collections import Counter

    counts = Counter((family, r["outcome"]) for family, r in results)
    examples: dict[tuple[str, str], list[str]] = {}
    for family, r in results:
        if r["outcome"] in FAILURES:
            examples.setdefault((family, r["outcome"]), []).append(f"case {r['case']}: {r['detail']}")
    return [{"family": family, "outcome": outcome, "count": count,
             **({"examples": examples[family, outcome][:5]} if (family, outcome) in examples else {})}
            for (family, outcome), count in sorted(counts.items())]
