"""Fuzzed readers: a mutated input file of any format ends clean, with rejects, or refused with a
one-line error (exit 3); never a crash, never a lost row.

The formats and mutations are benchmarks/fuzz_readers.py's (benchmarks/fuzz.py runs 1,000 files
per format from a seed). Files are read in a child process, so a segfault in pyarrow is a failed
test here, not the end of pytest.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import fuzz_readers as fz  # noqa: E402

pytestmark = pytest.mark.slow  # reads in a child process


@pytest.fixture(scope="module")
def checker():
    child = fz.Checker(timeout_s=60)
    yield child
    child.close()


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(fz.FORMATS), kind=st.sampled_from(fz.MUTATIONS), seed=st.integers(0, 2**32 - 1))
def test_a_mutated_file_is_read_rejected_or_refused_never_crashes_or_loses_rows(checker, tmp_path_factory, fmt,
                                                                                 kind, seed):
    rng = random.Random(seed)
    content = fz.mutate(fmt, kind, rng, rng.choice([1, 5, 40]))
    folder = tmp_path_factory.mktemp("case")
    fz.write_case(folder, fmt, content)
    result = checker.check(folder, fmt, fz.piece_bytes(content, rng))
    assert result["outcome"] not in fz.FAILURES, result


# What pyarrow 26 crashed on (SIGSEGV): a parse block starting with `null`, where a file or a piece
# starts, after a CR, or after a space. Every such line is a reject naming its line.
NON_OBJECT_LINES = [b"null", b"1", b'"text"', b"[1, 2]", b"true", b"false", b" null", b"{} null"]

_READ_PIECES = """
import json, sys
from pathlib import Path
from resolver.config import Config
from resolver.ingest.readers import read_source
from resolver.ingest.plan import plan_ingest
config = Config.model_validate({"sources": [{"name": "web", "kind": "events", "format": "jsonl",
    "path": "events.jsonl", "key": "messageId", "identifiers": {"user_id": "userId"}}],
    "identity": {"types": {"user_id": {"priority": 1}}}, "base_dir": sys.argv[1],
    "run": {"partition_bytes": int(sys.argv[2])}})
kept, rejects = [], []
for job in plan_ingest(config):
    raw = read_source(config, config.sources[0], [Path(f) for f in job.files], job.piece)
    kept += raw.frame["_row"].tolist()
    rejects += list(zip(raw.rejects["row"].tolist(), raw.rejects["reason"].tolist()))
print(json.dumps({"pieces": len(plan_ingest(config)), "kept": kept, "rejects": rejects}))
"""


def _read_in_child(folder: Path, partition_bytes: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _READ_PIECES, str(folder), str(partition_bytes)], env=env,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("partition_bytes", [0, 40])
def test_lines_that_are_not_objects_are_rejects_with_their_line_numbers(tmp_path, partition_bytes):
    # Each junk line stands first in the file and, with 40-byte pieces, first in a piece.
    lines, junk = [], []
    for i, bad in enumerate(NON_OBJECT_LINES):
        junk.append(len(lines) + 1)
        lines += [bad, json.dumps({"messageId": f"m{i}", "userId": f"u{i}"}).encode()]
    lines.append(b"{}\rnull")  # pyarrow also starts a block after a lone CR
    junk.append(len(lines))
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    result = _read_in_child(tmp_path, partition_bytes)
    if partition_bytes:
        assert result["pieces"] > 5
    assert sorted(row for row, _ in result["rejects"]) == junk
    assert all(reason == "not a JSON object" or reason.startswith("invalid JSON") for _, reason in result["rejects"])
    assert sorted(result["kept"]) == [n for n in range(1, len(lines) + 1) if n not in junk]


def test_a_file_of_nothing_but_nulls_is_all_rejects(tmp_path):
    (tmp_path / "events.jsonl").write_bytes(b"null\n" * 5000)  # more lines than the line-by-line limit
    result = _read_in_child(tmp_path, 0)
    assert result["kept"] == []
    assert [row for row, _ in result["rejects"]] == list(range(1, 5001))
    assert {reason for _, reason in result["rejects"]} == {"not a JSON object"}
