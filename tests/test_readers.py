"""Readers: every input row lands in `frame` or `rejects`, with its row number; whole-file problems raise."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver.config import Config
from resolver.ingest import readers
from resolver.ingest.readers import REJECT_COLUMNS, InputError, read_source


def make_config(tmp_path: Path, **source) -> Config:
    spec = {"name": "src", "kind": "events", **source}
    return Config.model_validate({"sources": [spec], "identity": {"types": {}}, "base_dir": tmp_path})


def read(tmp_path: Path, **source):
    config = make_config(tmp_path, **source)
    result = read_source(config, config.sources[0])
    check_invariants(result, config.sources[0].referenced_columns())
    return result


def check_invariants(result, columns: list[str]) -> None:
    assert result.rows_read == len(result.frame) + len(result.rejects)
    assert list(result.frame.columns) == [*columns, "_file", "_row"]
    assert list(result.rejects.columns) == REJECT_COLUMNS
    for col in [*columns, "_file"]:
        assert result.frame[col].dtype == "str", col
    assert result.frame["_row"].dtype == np.int64
    assert result.rejects["row"].dtype == np.int64
    # No row is both kept and rejected, and no row number repeats within a file.
    seen = pd.concat(
        [result.frame[["_file", "_row"]].set_axis(["file", "row"], axis=1), result.rejects[["file", "row"]]]
    )
    assert not seen.duplicated().any()


def values(result, col: str) -> list:
    return [None if pd.isna(v) else v for v in result.frame[col]]


def write(path: Path, data: bytes | str, encoding: str = "utf-8") -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode(encoding))
    return path


CSV_SOURCE = dict(
    format="csv", path="Contact*.csv", key="Id", attributes={"first": "FirstName", "street": "MailingStreet"}
)


# ------------------------------------------------------------------------------------------ CSV


def test_csv_headers_match_case_insensitively(tmp_path):
    write(tmp_path / "Contact1.csv", "Id,FirstName,MailingStreet\n003A,Ann,1 Main\n")
    write(tmp_path / "Contact2.csv", "ID,FIRSTNAME,MAILINGSTREET,EXTRA\n003B,Bob,2 Side,x\n")
    result = read(tmp_path, **CSV_SOURCE)
    assert values(result, "Id") == ["003A", "003B"]
    assert values(result, "FirstName") == ["Ann", "Bob"]
    assert values(result, "_row") == [1, 1]
    assert [Path(f).name for f in result.files] == ["Contact1.csv", "Contact2.csv"]
    assert [Path(f).name for f in result.frame["_file"]] == ["Contact1.csv", "Contact2.csv"]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_csv_quoted_multiline_values_and_line_endings(tmp_path, newline):
    rows = [
        '"Id","FirstName","MailingStreet"',
        '"003A","Ann","1 Main St' + newline + 'Apt 4"',
        '"003B","Bob","2 Side"',
        '"003C","Cy","3 A' + newline + newline + 'B"',
        '"003D","Di",""',
    ]
    write(tmp_path / "Contact.csv", newline.join(rows) + newline)
    result = read(tmp_path, **CSV_SOURCE)
    streets = ["1 Main St" + newline + "Apt 4", "2 Side", "3 A" + newline * 2 + "B", None]
    assert values(result, "MailingStreet") == streets
    assert values(result, "_row") == [1, 2, 3, 4]
    assert values(result, "FirstName") == ["Ann", "Bob", "Cy", "Di"]  # no stray \r


@pytest.mark.parametrize("delimiter", ["\t", "|", ";", "^"])
def test_csv_delimiters(tmp_path, delimiter):
    header = delimiter.join(["Id", "FirstName", "MailingStreet"])
    text = header + "\n" + delimiter.join(["003A", "A,nn", '"x' + delimiter + 'y"']) + "\n"
    write(tmp_path / "Contact.csv", text)
    result = read(tmp_path, **CSV_SOURCE, csv={"delimiter": delimiter})
    assert values(result, "FirstName") == ["A,nn"]
    assert values(result, "MailingStreet") == ["x" + delimiter + "y"]


def test_csv_latin1_encoding(tmp_path):
    write(tmp_path / "Contact.csv", "Id,FirstName,MailingStreet\n003A,Zoë,Straße 1\n", encoding="latin-1")
    result = read(tmp_path, **CSV_SOURCE, csv={"encoding": "latin-1"})
    assert values(result, "FirstName") == ["Zoë"]
    assert values(result, "MailingStreet") == ["Straße 1"]


def test_csv_custom_quotechar(tmp_path):
    write(tmp_path / "Contact.csv", "Id,FirstName,MailingStreet\n003A,'O,Neil','a\nb'\n")
    result = read(tmp_path, **CSV_SOURCE, csv={"quotechar": "'"})
    assert values(result, "FirstName") == ["O,Neil"]
    assert values(result, "MailingStreet") == ["a\nb"]


def test_csv_all_quoted_values_are_strings_not_trimmed(tmp_path):
    text = (
        '"Id","FirstName","MailingStreet"\n'
        '"007","  Ann ","say ""hi"""\n'
        '"1.50","NA","null"\n'
        '"","",\n'
    )
    write(tmp_path / "Contact.csv", text)
    result = read(tmp_path, **CSV_SOURCE)
    assert values(result, "Id") == ["007", "1.50", None]  # never type-inferred
    assert values(result, "FirstName") == ["  Ann ", None, None]  # not trimmed; "NA" is a null token
    assert values(result, "MailingStreet") == ['say "hi"', None, None]
    # without null tokens, "NA" and "null" are values like any other
    result = read(tmp_path, **CSV_SOURCE, csv={"null_values": []})
    assert values(result, "FirstName") == ["  Ann ", "NA", None]
    assert values(result, "MailingStreet") == ['say "hi"', "null", None]


def test_csv_utf8_bom_is_not_part_of_the_first_header(tmp_path):
    write(tmp_path / "Contact.csv", "\ufeffId,FirstName,MailingStreet\n003A,Ann,x\n")
    assert values(read(tmp_path, **CSV_SOURCE), "Id") == ["003A"]


def test_csv_empty_file_is_an_error(tmp_path):
    write(tmp_path / "Contact.csv", b"")
    with pytest.raises(InputError, match="empty file \\(no header row\\)") as err:
        read(tmp_path, **CSV_SOURCE)
    assert "Contact.csv" in str(err.value)


@pytest.mark.parametrize("end", ["\n", "", "\r\n\r\n"])
def test_csv_header_only_file_has_no_rows(tmp_path, end):
    write(tmp_path / "Contact.csv", "Id,FirstName,MailingStreet" + end)
    result = read(tmp_path, **CSV_SOURCE)
    assert len(result.frame) == 0 and len(result.rejects) == 0 and result.rows_read == 0


def test_csv_missing_mapped_column_names_file_column_and_header(tmp_path):
    write(tmp_path / "Contact.csv", "Id,FirstName\n003A,Ann\n")
    with pytest.raises(InputError) as err:
        read(tmp_path, **CSV_SOURCE)
    message = str(err.value)
    assert str(tmp_path / "Contact.csv") in message
    assert "'MailingStreet'" in message
    assert "Id, FirstName" in message


def test_csv_wrong_field_counts_are_rejected_with_row_numbers(tmp_path):
    text = (
        "Id,FirstName,MailingStreet\n"
        '003A,Ann,"multi\nline"\n'  # row 1 spans two lines
        "003B,Bob\n"  # row 2: short
        "003C,Cy,x,extra\n"  # row 3: long
        "\n"  # blank lines are not rows
        "003D,Di,y\n"  # row 4
    )
    write(tmp_path / "Contact.csv", text)
    result = read(tmp_path, **CSV_SOURCE)
    assert values(result, "Id") == ["003A", "003D"]
    assert values(result, "_row") == [1, 4]
    rejects = result.rejects
    assert list(rejects["row"]) == [2, 3]
    assert list(rejects["reason"]) == ["expected 3 fields, found 2", "expected 3 fields, found 4"]
    assert list(rejects["raw"]) == ["003B,Bob", "003C,Cy,x,extra"]
    assert rejects["field"].isna().all()
    assert (rejects["source"] == "src").all()
    assert result.rows_read == 4


def test_csv_invalid_utf8_rejects_only_that_row(tmp_path):
    text = b"Id,FirstName,MailingStreet,Other\n003A,Ann,x,\xff\n003B,B\xffb,y,z\n003C,Cy,\xfe,z\n003D,Di,w,z\n"
    write(tmp_path / "Contact.csv", text)
    result = read(tmp_path, **CSV_SOURCE)
    assert values(result, "Id") == ["003A", "003D"]  # bad bytes in an unmapped column do no harm
    assert values(result, "_row") == [1, 4]
    assert list(result.rejects["row"]) == [2, 3]
    assert list(result.rejects["field"]) == ["FirstName", "MailingStreet"]
    reasons = ["invalid UTF-8 in field FirstName", "invalid UTF-8 in field MailingStreet"]
    assert list(result.rejects["reason"]) == reasons


def test_csv_rejects_of_both_kinds_keep_row_numbers_consistent(tmp_path):
    lines = [b"Id,FirstName,MailingStreet"]
    kept, rejected = [], []
    for i in range(1, 301):
        if i % 37 == 0:
            lines.append(b"%d,short" % i)
            rejected.append(i)
        elif i % 41 == 0:
            lines.append(b'%d,"bad\xff",z' % i)
            rejected.append(i)
        else:
            lines.append(b'%d,n,"line\nbreak"' % i)
            kept.append(i)
    write(tmp_path / "Contact.csv", b"\n".join(lines))
    result = read(tmp_path, **CSV_SOURCE)
    assert [int(v) for v in result.frame["Id"]] == kept
    assert list(result.frame["_row"]) == kept
    assert list(result.rejects["row"]) == rejected
    assert result.rows_read == 300


def test_csv_bad_row_that_is_also_invalid_utf8_does_not_fail_the_file(tmp_path):
    # pyarrow cannot hand such a row to its handler; the row-by-row fallback reader takes over.
    text = b'Id,FirstName,MailingStreet\n003A,Ann,"x\ny"\n003B,B\xffb\n003C,C\xffy,z\n003D,Di,w\n'
    write(tmp_path / "Contact.csv", text)
    result = read(tmp_path, **CSV_SOURCE)
    assert values(result, "Id") == ["003A", "003D"]
    assert values(result, "MailingStreet") == ["x\ny", "w"]
    assert values(result, "_row") == [1, 4]
    assert list(result.rejects["row"]) == [2, 3]
    assert list(result.rejects["reason"]) == ["expected 3 fields, found 2", "invalid UTF-8 in field FirstName"]
    assert list(result.rejects["raw"]) == ["003B,B\\xffb", "C\\xffy"]


def test_csv_undecodable_byte_in_a_single_byte_encoding_rejects_the_row(tmp_path):
    write(tmp_path / "Contact.csv", b"Id,FirstName,MailingStreet\n003A,Caf\xe9,x\n003B,\x81,y\n")
    result = read(tmp_path, **CSV_SOURCE, csv={"encoding": "cp1252"})
    assert values(result, "FirstName") == ["Café"]
    assert list(result.rejects["reason"]) == ["invalid cp1252 in field FirstName"]
    assert list(result.rejects["row"]) == [2]


def test_csv_fallback_reader_agrees_with_pyarrow(tmp_path, monkeypatch):
    text = (
        b'"Id","FirstName","MailingStreet","Other"\r\n'
        b'"003A","  Ann ","1 Main\r\nApt 4",""\r\n'
        b"\r\n"
        b'003B,Bob\r\n'
        b'"003C","",x,\xff\r\n'
        b'003D,D\xffi,y,z\r\n'
        b'003E,"say ""hi""",q,r,s\r\n'
        b'003F,"E\nF",,z'
    )
    write(tmp_path / "Contact.csv", text)
    fast = read(tmp_path, **CSV_SOURCE)

    def refuse(*args, **kwargs):
        raise pa.ArrowInvalid("forced")

    monkeypatch.setattr(readers, "_csv_arrow", refuse)
    slow = read(tmp_path, **CSV_SOURCE)
    pd.testing.assert_frame_equal(fast.frame, slow.frame)
    pd.testing.assert_frame_equal(fast.rejects.drop(columns="raw"), slow.rejects.drop(columns="raw"))
    assert values(fast, "_row") == [1, 3, 6]
    assert list(fast.rejects["row"]) == [2, 4, 5]


def test_csv_header_names_differing_only_in_case_are_ambiguous(tmp_path):
    write(tmp_path / "Contact.csv", "ID,id,FirstName,MailingStreet\n1,2,a,b\n")
    with pytest.raises(InputError, match="'Id' is ambiguous"):
        read(tmp_path, **CSV_SOURCE)
    write(tmp_path / "Contact.csv", "Id,ID,FirstName,MailingStreet\n1,2,a,b\n")
    assert values(read(tmp_path, **CSV_SOURCE), "Id") == ["1"]  # the exact spelling wins


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
cells = st.lists(st.sampled_from(["a", "B", " ", ",", '"', "\n", "\r\n", "é", ";"]), max_size=5).map("".join)


@FUZZ
@given(rows=st.lists(st.lists(cells, min_size=1, max_size=5), max_size=25), crlf=st.booleans(), arrow=st.booleans())
def test_csv_round_trips_what_pythons_csv_writer_wrote(tmp_path, monkeypatch, rows, crlf, arrow):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(["Id", "FirstName", "MailingStreet"])
    writer.writerows(rows)
    write(tmp_path / "Contact.csv", out.getvalue())
    monkeypatch.setattr(readers, "_csv_arrow", readers._csv_arrow if arrow else _refuse)
    result = read(tmp_path, **CSV_SOURCE)
    kept = [(i, row) for i, row in enumerate(rows, 1) if len(row) == 3]
    assert values(result, "_row") == [i for i, _ in kept]
    for n, col in enumerate(["Id", "FirstName", "MailingStreet"]):
        # whitespace only is a missing value (the null token "" once trimmed); the rest is kept as written
        assert values(result, col) == [row[n] if row[n].strip() else None for _, row in kept]
    assert list(result.rejects["row"]) == [i for i, row in enumerate(rows, 1) if len(row) != 3]


def _refuse(*args, **kwargs):
    raise pa.ArrowInvalid("forced fallback")


def test_no_files_match(tmp_path):
    with pytest.raises(InputError, match="no files match") as err:
        read(tmp_path, **CSV_SOURCE)
    assert str(tmp_path / "Contact*.csv") in str(err.value)


# ---------------------------------------------------------------------------------------- JSONL

JSONL_SOURCE = dict(
    format="jsonl",
    path="events-*.jsonl",
    key="messageId",
    attributes={"email": ["traits.email", "context.traits.email"], "device": "context.device.id", "user": "userId"},
)


def jsonl(*objs) -> str:
    return "".join((o if isinstance(o, str) else orjson.dumps(o).decode()) + "\n" for o in objs)


def test_jsonl_nested_paths_and_absent_paths(tmp_path):
    write(
        tmp_path / "events-1.jsonl",
        jsonl(
            {"messageId": "m1", "type": "identify", "userId": "u1", "traits": {"email": "A@x.com", "n": {"deep": [1]}}},
            {
                "messageId": "m2",
                "type": "track",
                "context": {"device": {"id": "D1"}, "traits": {"email": "b@x.com"}},
                "properties": [1, 2],
            },
            {"messageId": "m3", "context": "not an object", "userId": ""},
        ),
    )
    result = read(tmp_path, **JSONL_SOURCE)
    assert values(result, "messageId") == ["m1", "m2", "m3"]
    assert values(result, "traits.email") == ["A@x.com", None, None]
    assert values(result, "context.traits.email") == [None, "b@x.com", None]
    assert values(result, "context.device.id") == [None, "D1", None]
    assert values(result, "userId") == ["u1", None, None]  # "" is NA
    assert values(result, "_row") == [1, 2, 3]
    assert len(result.rejects) == 0


def test_jsonl_numbers_and_booleans_become_strings(tmp_path):
    text = jsonl({"messageId": 12, "userId": 1.5}, {"messageId": "m2", "userId": True}, {"messageId": None})
    write(tmp_path / "events-1.jsonl", text)
    result = read(tmp_path, **JSONL_SOURCE)
    assert values(result, "messageId") == ["12", "m2", None]
    assert values(result, "userId") == ["1.5", "true", None]


def test_jsonl_truncated_last_line_is_rejected_and_other_lines_kept(tmp_path):
    text = jsonl({"messageId": "m1"}, {"messageId": "m2"}) + '{"messageId": "m3", "userId": "u'
    write(tmp_path / "events-1.jsonl", text)
    result = read(tmp_path, **JSONL_SOURCE)
    assert values(result, "messageId") == ["m1", "m2"]
    assert list(result.rejects["row"]) == [3]
    assert list(result.rejects["reason"]) == ["truncated line"]
    assert result.rejects["raw"][0].startswith('{"messageId": "m3"')


def test_jsonl_bad_lines_are_rejected_with_reasons(tmp_path):
    text = jsonl(
        {"messageId": "m1"},
        "[1, 2]",  # line 2
        '"just a string"',  # line 3
        "{not json}",  # line 4
        {"messageId": "m5", "traits": {"email": {"nested": "x"}}},  # line 5
        {"messageId": "m6", "userId": ["a"]},  # line 6
        '{"messageId": "m7"} {"messageId": "m8"}',  # line 7: two objects on a line
        {"messageId": "m9"},
    )
    write(tmp_path / "events-1.jsonl", text)
    result = read(tmp_path, **JSONL_SOURCE)
    assert values(result, "messageId") == ["m1", "m9"]
    assert values(result, "_row") == [1, 8]
    rejects = result.rejects
    assert list(rejects["row"]) == [2, 3, 4, 5, 6, 7]
    reasons = list(rejects["reason"])
    assert reasons[0] == reasons[1] == "not a JSON object"
    assert reasons[2].startswith("invalid JSON: ")
    assert reasons[3] == "field traits.email is an object, expected a value"
    assert reasons[4] == "field userId is an array, expected a value"
    assert reasons[5].startswith("invalid JSON: ")
    assert list(rejects["field"].isna()) == [True, True, True, False, False, True]


def test_jsonl_blank_lines_are_skipped_and_line_numbers_kept(tmp_path):
    text = '{"messageId": "m1"}\n\n   \n{"messageId": "m4"}\r\n\n{"messageId": "m6"}'
    write(tmp_path / "events-1.jsonl", text)
    result = read(tmp_path, **JSONL_SOURCE)
    assert values(result, "messageId") == ["m1", "m4", "m6"]
    assert values(result, "_row") == [1, 4, 6]
    assert result.rows_read == 3


def test_jsonl_blank_lines_keep_the_fast_path(tmp_path, monkeypatch):
    def no_slow_path(*args, **kwargs):
        raise AssertionError("slow path used")

    monkeypatch.setattr(readers, "_jsonl_slow", no_slow_path)
    text = '\n{"messageId": "m2"}\r\n\r\n{"messageId": "m4", "userId": "u"}\n\n'
    write(tmp_path / "events-1.jsonl", text)
    result = read(tmp_path, **JSONL_SOURCE)
    assert values(result, "messageId") == ["m2", "m4"]
    assert values(result, "_row") == [2, 4]


def test_jsonl_utf8_bom_is_skipped(tmp_path):
    write(tmp_path / "events-1.jsonl", "\ufeff" + jsonl({"messageId": "m1"}, {"messageId": "m2"}))
    assert values(read(tmp_path, **JSONL_SOURCE), "messageId") == ["m1", "m2"]


def test_jsonl_invalid_utf8_line_is_rejected(tmp_path):
    text = b'{"messageId": "m1"}\n{"messageId": "m\xff2"}\n{"messageId": "m3"}\n'
    write(tmp_path / "events-1.jsonl", text)
    result = read(tmp_path, **JSONL_SOURCE)
    assert values(result, "messageId") == ["m1", "m3"]
    assert list(result.rejects["row"]) == [2]
    assert result.rejects["reason"][0].startswith("invalid JSON")


def test_jsonl_large_file_with_few_bad_lines_keeps_numbers_across_pieces(tmp_path, monkeypatch):
    # Small pieces force the chunking and the split-and-retry path through several levels.
    monkeypatch.setattr(readers, "_JSON_CHUNK", 4096)
    monkeypatch.setattr(readers, "_JSON_SLOW_LINES", 8)
    lines, bad = [], {50, 51, 333, 700, 999}
    for i in range(1, 1001):
        if i in bad:
            lines.append('{"messageId": "m' + str(i))
        elif i % 97 == 0:
            lines.append("")
        elif i % 89 == 0:
            lines.append(orjson.dumps({"messageId": i}).decode())  # a number: pyarrow refuses, slow path converts
        else:
            lines.append(orjson.dumps({"messageId": f"m{i}", "context": {"device": {"id": f"d{i}"}}}).decode())
    write(tmp_path / "events-1.jsonl", "\n".join(lines) + "\n")
    result = read(tmp_path, **JSONL_SOURCE)
    kept = [i for i in range(1, 1001) if i not in bad and i % 97 != 0]
    assert values(result, "_row") == kept
    assert values(result, "messageId") == [str(i) if i % 89 == 0 else f"m{i}" for i in kept]
    assert values(result, "context.device.id") == [None if i % 89 == 0 else f"d{i}" for i in kept]
    assert sorted(result.rejects["row"]) == sorted(bad)
    assert result.rows_read == len(kept) + len(bad)


def test_jsonl_several_files_concatenate_in_order(tmp_path):
    write(tmp_path / "events-2.jsonl", jsonl({"messageId": "b1"}))
    write(tmp_path / "events-1.jsonl", jsonl({"messageId": "a1"}, {"messageId": "a2"}))
    result = read(tmp_path, **JSONL_SOURCE)
    assert values(result, "messageId") == ["a1", "a2", "b1"]
    assert [Path(f).name for f in result.frame["_file"]] == ["events-1.jsonl"] * 2 + ["events-2.jsonl"]


json_values = st.one_of(st.none(), st.text(max_size=3), st.integers(-5, 5), st.booleans(), st.just({"x": 1}))
json_lines = st.one_of(
    st.fixed_dictionaries({}, optional={"messageId": json_values, "userId": json_values}).map(json.dumps),
    st.builds(lambda e, d: json.dumps({"messageId": "m", "traits": {"email": e}, "context": d}), json_values,
              st.sampled_from([None, "str", {"device": {"id": "d"}}, {"device": None}])),
    st.sampled_from(["", "  ", "[1]", '"s"', "{bad", '{"messageId": "m"} {"x": 1}']),
)


@FUZZ
@given(lines=st.lists(json_lines, max_size=40), slow_below=st.sampled_from([1, 4, 2000]))
def test_jsonl_matches_a_line_by_line_reading(tmp_path, monkeypatch, lines, slow_below):
    monkeypatch.setattr(readers, "_JSON_SLOW_LINES", slow_below)
    write(tmp_path / "events-1.jsonl", "\n".join(lines))
    result = read(tmp_path, **JSONL_SOURCE)
    expected_rows, expected_rejects, expected_email = [], [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            expected_rejects.append(number)
            continue
        email = obj.get("traits", {}).get("email") if isinstance(obj, dict) else None
        mapped = [obj.get("messageId"), obj.get("userId"), email] if isinstance(obj, dict) else []
        if not isinstance(obj, dict) or any(isinstance(v, (dict, list)) for v in mapped):
            expected_rejects.append(number)
            continue
        expected_rows.append(number)
        expected_email.append(None if email in (None, "") else email if isinstance(email, str) else json.dumps(email))
    assert values(result, "_row") == expected_rows
    assert values(result, "traits.email") == expected_email
    assert list(result.rejects["row"]) == expected_rejects


# -------------------------------------------------------------------------------------- Segment

SEGMENT_SOURCE = dict(JSONL_SOURCE, format="segment", path="batch-*.json")


def test_segment_batch_file(tmp_path):
    body = {
        "batch": [
            {"type": "identify", "messageId": "m1", "userId": "u1", "traits": {"email": "a@x.com"}},
            "not a message",
            {"type": "track", "messageId": "m3", "context": {"device": {"id": "D"}}},
        ],
        "sentAt": "2024-06-02T17:40:11.581Z",
    }
    write(tmp_path / "batch-1.json", orjson.dumps(body, option=orjson.OPT_INDENT_2))
    result = read(tmp_path, **SEGMENT_SOURCE)
    assert values(result, "messageId") == ["m1", "m3"]
    assert values(result, "_row") == [1, 3]
    assert values(result, "traits.email") == ["a@x.com", None]
    assert list(result.rejects["row"]) == [2]
    assert result.rejects["reason"][0].startswith("not a JSON object")
    assert result.rows_read == 3


def test_segment_jsonl_of_batches(tmp_path):
    text = jsonl({"batch": [{"messageId": "m1"}, {"messageId": "m2"}]}, {"batch": [{"messageId": "m3"}]})
    write(tmp_path / "batch-1.json", text)
    result = read(tmp_path, **SEGMENT_SOURCE)
    assert values(result, "messageId") == ["m1", "m2", "m3"]
    assert values(result, "_row") == [1, 2, 3]


@pytest.mark.parametrize("text", ['{"batch": [', '{"events": []}', "[1, 2]", '{"batch": []}\nnot json\n', ""])
def test_segment_malformed_file_is_an_error(tmp_path, text):
    write(tmp_path / "batch-1.json", text)
    with pytest.raises(InputError, match="batch-1.json"):
        read(tmp_path, **SEGMENT_SOURCE)


# -------------------------------------------------------------------------------------- Parquet


def test_parquet_nested_struct_case_insensitive_and_typed_values(tmp_path):
    table = pa.table(
        {
            "MessageID": ["m1", "m2", ""],
            "context": pa.array(
                [{"ip": "1.2.3.4", "device": {"id": "D1"}}, None, {"ip": None, "device": {"id": "D3"}}],
                pa.struct([("ip", pa.string()), ("device", pa.struct([("id", pa.string())]))]),
            ),
            "ts": pa.array(
                [dt.datetime(2024, 6, 2, 17, 40, 11, 905000), None, dt.datetime(2024, 1, 1)],
                pa.timestamp("ms", tz="UTC"),
            ),
            "n": pa.array([7, None, 9], pa.int64()),
            "flag": pa.array([True, False, None]),
            "day": pa.array([dt.date(2024, 1, 2), None, None], pa.date32()),
        }
    )
    pq.write_table(table, tmp_path / "part-0.parquet")
    source = dict(
        format="parquet", path="*.parquet", key="messageId", timestamp="ts",
        attributes={"ip": "context.ip", "device": "Context.Device.Id", "n": "n", "flag": "flag", "day": "day"},
    )
    result = read(tmp_path, **source)
    assert values(result, "messageId") == ["m1", "m2", None]
    assert values(result, "context.ip") == ["1.2.3.4", None, None]
    assert values(result, "Context.Device.Id") == ["D1", None, "D3"]
    assert values(result, "ts") == ["2024-06-02T17:40:11.905Z", None, "2024-01-01T00:00:00.000Z"]
    assert values(result, "n") == ["7", None, "9"]
    assert values(result, "flag") == ["true", "false", None]
    assert values(result, "day") == ["2024-01-02", None, None]
    assert values(result, "_row") == [1, 2, 3]


def test_parquet_binary_column_with_invalid_utf8_rejects_the_row(tmp_path):
    pq.write_table(pa.table({"id": pa.array([b"a", b"\xff", None], pa.binary())}), tmp_path / "part-0.parquet")
    result = read(tmp_path, format="parquet", path="*.parquet", key="id")
    assert values(result, "id") == ["a", None]
    assert values(result, "_row") == [1, 3]
    assert list(result.rejects["reason"]) == ["invalid UTF-8 in field id"]


def test_parquet_string_column_with_invalid_utf8_rejects_the_row(tmp_path):
    # A damaged file: Parquet readers give a string column without checking its UTF-8.
    ids = pa.array([b"a", b"\xff", None], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ids}), tmp_path / "part-0.parquet")
    result = read(tmp_path, format="parquet", path="*.parquet", key="id")
    assert values(result, "id") == ["a", None]
    assert values(result, "_row") == [1, 3]
    assert list(result.rejects["reason"]) == ["invalid UTF-8 in field id"]


def test_parquet_missing_column_is_an_error(tmp_path):
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "part-0.parquet")
    with pytest.raises(InputError, match=r"part-0.parquet.*'context.ip'"):
        read(tmp_path, format="parquet", path="*.parquet", key="id", attributes={"ip": "context.ip"})
