"""Big line-delimited and Parquet files are read in pieces, one ingest job each: the pieces together
give exactly the rows, row numbers and rejects of a whole-file read, and a run whose files are cut
into pieces gives the same persons and golden records as one that reads them whole."""

import json

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from _outputs import assert_same_outputs, generated_with_baseline
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.cli import EXIT_OK, main
from resolver.config import Config, load_config
from resolver.ingest.readers import read_source, split_file
from resolver.ingest.plan import plan_ingest


def _events_config(tmp_path, fmt: str, path: str, columns: dict) -> Config:
    spec = {"name": "web", "kind": "events", "format": fmt, "path": path, "timestamp": columns.pop("timestamp"),
            "attributes": columns}
    return Config.model_validate({"sources": [spec], "identity": {"types": {}}, "base_dir": tmp_path})


def _whole_and_pieced(config, path, target_bytes):
    source = config.sources[0]
    whole = read_source(config, source, files=[path])
    pieces = split_file(path, source.format, target_bytes)
    assert pieces is not None and len(pieces) > 1
    assert pieces[0].start == 0 and all(a.end == b.start for a, b in zip(pieces, pieces[1:]))
    parts = [read_source(config, source, files=[path], piece=p) for p in pieces]
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    rejects = pd.concat([p.rejects for p in parts], ignore_index=True)
    return whole, frame, rejects, sum(p.rows_read for p in parts)


def _jsonl_lines(n: int, bad_every: int, blank_every: int) -> bytes:
    lines = []
    for i in range(n):
        if bad_every and i % bad_every == bad_every - 1:
            lines.append(b'{"anonymousId": "broken' + str(i).encode())  # truncated JSON: a reject
        elif blank_every and i % blank_every == blank_every - 1:
            lines.append(b"")
        else:
            lines.append(orjson.dumps({"anonymousId": f"a{i % 97}", "userId": f"u{i % 31}",
                                       "timestamp": f"2024-01-01T00:{i % 60:02d}:00Z", "messageId": f"m{i}"}))
    return b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n"


@settings(max_examples=25, deadline=None)
@given(n=st.integers(50, 400), bad_every=st.sampled_from([0, 7, 53]), blank_every=st.sampled_from([0, 11]),
       target=st.integers(200, 3000))
def test_jsonl_pieces_read_like_the_whole_file(tmp_path_factory, n, bad_every, blank_every, target):
    tmp_path = tmp_path_factory.mktemp("jsonl")
    path = tmp_path / "events.jsonl"
    path.write_bytes(_jsonl_lines(n, bad_every, blank_every))
    config = _events_config(tmp_path, "jsonl", "events.jsonl",
                            {"timestamp": "timestamp", "anonymous_id": "anonymousId", "user_id": "userId"})
    whole, frame, rejects, rows_read = _whole_and_pieced(config, path, target)
    pd.testing.assert_frame_equal(whole.frame, frame)
    pd.testing.assert_frame_equal(whole.rejects, rejects)
    assert whole.rows_read == rows_read


def test_tealium_pieces_read_like_the_whole_file(tmp_path):
    lines = [orjson.dumps({"tealium_visitor_id": f"v{i % 41}", "tealium_timestamp_epoch": str(1704067200 + i),
                           "customer_email": f"p{i % 13}@example.com"}) for i in range(600)]
    lines[100] = b"{not json"
    path = tmp_path / "tealium.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    config = _events_config(tmp_path, "tealium", "tealium.jsonl",
                            {"timestamp": "timestamp", "anonymous_id": "tealium_visitor_id", "email": "customer_email"})
    whole, frame, rejects, rows_read = _whole_and_pieced(config, path, 5000)
    pd.testing.assert_frame_equal(whole.frame, frame)
    pd.testing.assert_frame_equal(whole.rejects, rejects)
    assert rejects["row"].tolist() == [101]


def test_parquet_row_group_pieces_read_like_the_whole_file(tmp_path):
    n = 5000
    table = pa.table({"anonymousId": [f"a{i % 211}" for i in range(n)], "userId": [f"u{i % 53}" for i in range(n)],
                      "timestamp": ["2024-01-01T00:00:00Z"] * n})
    path = tmp_path / "events.parquet"
    pq.write_table(table, path, row_group_size=700)
    config = _events_config(tmp_path, "parquet", "events.parquet",
                            {"timestamp": "timestamp", "anonymous_id": "anonymousId", "user_id": "userId"})
    whole, frame, rejects, rows_read = _whole_and_pieced(config, path, 1000)
    pd.testing.assert_frame_equal(whole.frame, frame)
    assert frame["_row"].to_numpy().tolist() == list(range(1, n + 1))
    assert rows_read == n


def _csv_text(n: int, bad_every: int, blank_every: int, crlf: bool, invalid_utf8_every: int) -> bytes:
    """A Salesforce-like export: quoted fields with newlines, delimiters and doubled quotes; blank
    lines; rows with too many fields; rows holding bytes that are not UTF-8."""
    newline = b"\r\n" if crlf else b"\n"
    lines = [b"Id,Email,Street,Note"]
    for i in range(n):
        if bad_every and i % bad_every == bad_every - 1:
            bad = f"{i},extra,fields,in,this,row".encode()
            lines.append(bad + b"\xfe" if invalid_utf8_every else bad)  # sends pyarrow to the fallback reader
        elif blank_every and i % blank_every == blank_every - 1:
            lines.append(b"")
        else:
            street = f'"{i} Main St{newline.decode()}Apt {i % 9}"' if i % 3 == 0 else f"{i} Elm Rd"
            note = '"said ""hi"", left"' if i % 5 == 0 else ('"a,b"' if i % 4 == 0 else "")
            line = f"{i},p{i}@example.com,{street},{note}".encode()
            if invalid_utf8_every and i % invalid_utf8_every == 0:
                line = line.replace(b"@", b"\xff@")
            lines.append(line)
    return b"\xef\xbb\xbf" + newline.join(lines) + newline


def _csv_config(tmp_path) -> Config:
    spec = {"name": "crm", "kind": "records", "format": "csv", "path": "contacts.csv", "key": "Id",
            "attributes": {"email": "Email", "street": "Street", "company": "Note"}}
    return Config.model_validate({"sources": [spec], "identity": {"types": {}}, "base_dir": tmp_path})


@settings(max_examples=30, deadline=None)
@given(n=st.integers(20, 300), bad_every=st.sampled_from([0, 13]), blank_every=st.sampled_from([0, 17]),
       crlf=st.booleans(), invalid_utf8_every=st.sampled_from([0, 29]), target=st.integers(100, 3000))
def test_csv_pieces_read_like_the_whole_file(tmp_path_factory, n, bad_every, blank_every, crlf, invalid_utf8_every,
                                             target):
    tmp_path = tmp_path_factory.mktemp("csv")
    path = tmp_path / "contacts.csv"
    path.write_bytes(_csv_text(n, bad_every, blank_every, crlf, invalid_utf8_every))
    config = _csv_config(tmp_path)
    if len(path.read_bytes()) <= target * 1.5:
        target = len(path.read_bytes()) // 3
    whole, frame, rejects, rows_read = _whole_and_pieced(config, path, target)
    pd.testing.assert_frame_equal(whole.frame, frame)
    pd.testing.assert_frame_equal(whole.rejects, rejects)
    assert whole.rows_read == rows_read


def test_a_csv_piece_that_starts_with_a_byte_order_mark_keeps_it(tmp_path):
    # Files joined by a tool that writes a BOM hold one inside: data, kept as a whole-file read keeps it
    # (the parsers drop one where their text starts, which is the file's start only for the first piece).
    body = b"".join(b"\xef\xbb\xbf" + f"{i},p{i}@example.com,{i} Elm Rd,\n".encode() for i in range(300))
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"\xef\xbb\xbfId,Email,Street,Note\n" + body)
    whole, frame, rejects, rows_read = _whole_and_pieced(_csv_config(tmp_path), path, 1000)
    assert whole.frame["Id"].str.startswith("\ufeff").all() and whole.rows_read == rows_read == 300
    pd.testing.assert_frame_equal(whole.frame, frame)


def test_csv_pieces_start_at_record_ends(tmp_path):
    """A cut never falls inside a quoted field, even where the field holds many newlines."""
    body = "Id,Street\n" + "".join(f'{i},"line one\nline two\nline three {i}"\n' for i in range(400))
    path = tmp_path / "contacts.csv"
    path.write_text(body)
    pieces = split_file(path, "csv", 500)
    assert pieces is not None and len(pieces) > 5
    data = path.read_bytes()
    for piece in pieces[1:]:
        assert data[piece.start:piece.start + 1].isdigit() and data[piece.start - 1:piece.start] == b"\n"
        assert int(data[piece.start:].split(b",", 1)[0]) == piece.first_row - 1  # the row's own Id


def test_small_files_and_other_encodings_are_not_cut(tmp_path):
    from resolver.config import CsvOptions

    path = tmp_path / "a.csv"
    path.write_text("id,email\n" + "".join(f"{i},p{i}@x.com\n" for i in range(1000)))
    assert split_file(path, "csv", 100) is not None
    assert split_file(path, "csv", 100, CsvOptions(encoding="utf-16")) is None  # a newline is not one byte
    small = tmp_path / "a.jsonl"
    small.write_text('{"a": 1}\n')
    assert split_file(small, "jsonl", 1 << 20) is None
    assert split_file(small, "jsonl", 0) is None  # 0: whole files


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = generated_with_baseline(tmp_path_factory.mktemp("pieces"), 1200, seed=5)
    body = yaml.safe_load((root / "resolver.yaml").read_text())
    body.setdefault("run", {})["partition_bytes"] = 100_000  # the events file in ~20 pieces, CSVs in several
    (root / "pieces.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return root


def _same_outputs(a, b):
    assert_same_outputs(a, b)


@pytest.mark.slow
def test_a_run_in_pieces_gives_the_whole_file_runs_outputs(world):
    config = load_config(world / "pieces.yaml")
    jobs = plan_ingest(config)
    assert sum(job.piece is not None for job in jobs) >= 5
    assert any(job.piece is not None and config.sources[job.source_index].format == "csv" for job in jobs)
    out = world / "pieced"
    assert main(["run", "--config", str(world / "pieces.yaml"), "--out", str(out), "-q", "--backend", "cpu"]) == EXIT_OK
    _same_outputs(world / "local", out)
    summary = json.loads((out / "run_summary.json").read_text())
    read = next(s for s in summary["stages"] if s["stage"] == "read:segment")
    assert read["files"] == 1 and read["jobs"] >= 5
    whole = json.loads((world / "local" / "run_summary.json").read_text())
    for key in ("rows", "records", "events", "persons", "identifiers"):
        assert whole[key] == summary[key], key


@pytest.mark.slow
def test_the_dask_engine_reads_the_pieces_as_partitions(world):
    pytest.importorskip("distributed")
    out = world / "dask-pieced"
    assert main(["run", "--config", str(world / "pieces.yaml"), "--out", str(out), "-q", "--backend", "cpu",
                 "--engine", "dask", "--workers", "2"]) == EXIT_OK
    _same_outputs(world / "local", out)


@pytest.mark.slow
def test_an_incremental_run_reuses_the_unchanged_pieces(world, tmp_path):
    state = tmp_path / "state"
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["run", "--config", str(world / "pieces.yaml"), "--out", str(first), "-q", "--backend", "cpu",
                 "--state", str(state)]) == EXIT_OK
    assert main(["run", "--config", str(world / "pieces.yaml"), "--out", str(second), "-q", "--backend", "cpu",
                 "--state", str(state)]) == EXIT_OK
    _same_outputs(first, second)
    summary = json.loads((second / "run_summary.json").read_text())
    assert summary["incremental"]["parts_loaded_from_state"] == len(plan_ingest(load_config(world / "pieces.yaml")))
    assert np.all(pd.read_parquet(state / "versions" / sorted(p.name for p in (state / "versions").iterdir())[-1]
                                  / "files.parquet")["path"].value_counts() == 1)
