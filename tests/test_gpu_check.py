"""The GPU check's dry run (no GPU: the CUDA builds in numba's simulator) reaches every stage and
reports each check, and a failure in one check or stage never loses the others' rows."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=600, env=env)
    rows = [json.loads(line) for line in open(tmp_path / "gpu_check.jsonl")]
    return proc, rows


@pytest.mark.slow
def test_the_dry_run_reaches_every_stage_and_the_simulated_kernels_equal_the_cpu(tmp_path):
    proc, rows = _run(tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {r["stage"] for r in rows} == set(gpu_check.STAGES)
    by_check = {(r["stage"], r["check"]): r for r in rows}
    assert by_check[("probe", "numba-cuda trivial kernel")]["status"] == "ok"
    equal = [r for r in rows if r["stage"] == "equal"]
    assert len(equal) == 10 and all(r["status"] == "ok" for r in equal), equal
    assert by_check[("e2e", "gpu outputs == cpu outputs")]["status"] == "ok"
    assert by_check[("dask", "dask gpu outputs == local cpu outputs")]["status"] == "ok"
    assert "components dask" in by_check[("dask", "dask engine, gpu backend (300 people)")]["detail"]
    assert not [r for r in rows if r["status"] in ("error", "crashed", "timeout", "failed")]
    assert "| stage | check | status |" in proc.stdout  # the table, last


def test_a_check_that_raises_becomes_a_row_and_the_stage_goes_on(tmp_path):
    rec = gpu_check.Recorder(tmp_path / "rows.jsonl", "equal")
    with rec.check("breaks") as r:
        raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS\nsecond line")
    with rec.check("works") as r:
        r.update(value=3, unit="pairs")
    rows = [json.loads(line) for line in open(tmp_path / "rows.jsonl")]
    assert [(r["check"], r["status"]) for r in rows] == [("breaks", "error"), ("works", "ok")]
    assert "CUDA_ERROR_ILLEGAL_ADDRESS" in rows[0]["detail"]


@pytest.mark.slow
@pytest.mark.parametrize("budget", ["5"])
def test_stages_past_the_budget_are_reported_skipped_and_the_table_still_prints(tmp_path, budget):
    proc, rows = _run(tmp_path, "--dry-run", "--budget", budget, "--stages", "probe,equal")
    assert proc.returncode == 0
    assert [(r["stage"], r["status"]) for r in rows] == [("probe", "skipped"), ("equal", "skipped")]
    assert "2 rows" in proc.stdout


@pytest.mark.slow
def test_a_stage_whose_process_dies_leaves_a_row_and_the_next_stage_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(gpu_check.STAGES, "nonesuch", 60)  # the stage process fails: no such stage there
    rows = gpu_check.drive(["nonesuch", "probe"], tmp_path / "rows.jsonl", dry=True, budget=120)
    assert (rows[0]["stage"], rows[0]["status"]) == ("nonesuch", "crashed")
    assert "KeyError" in rows[0]["detail"]
    assert {r["stage"] for r in rows[1:]} == {"probe"} and len(rows) > 2
