"""Crash consistency of batch runs (README: "Crash consistency"): `resolver run` killed with SIGKILL
at every step of its commit, and at seeded random moments, leaves outputs and a CURRENT that name
the same run, or the next start repairs them; a rerun then writes the outputs of an uninterrupted
run, byte for byte. The workers of a killed run die with it. (benchmarks/kill_runs.py kills more.)"""

import json
import random
import shutil
import subprocess
import sys
import time

import _crash as crash
import pandas as pd
import pytest

from resolver.cli import EXIT_OK, main
from resolver.state.history import load_history
from resolver.state.store import StateStore

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes in /proc"),
              pytest.mark.slow]  # pipeline runs in subprocesses, killed


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    started = time.monotonic()
    inputs, seed, reference = crash.prepare(root)
    return root, inputs, seed, reference, (time.monotonic() - started) / 2


@pytest.fixture(scope="module")
def commit_kills(scenario):
    """One run killed at each crash point of the commit (all started at once: 2 cores)."""
    root, inputs, seed, _, _ = scenario
    procs = {point: crash.start_trial(inputs, seed, root / point, crash_at=point)[0] for point in crash.COMMIT_POINTS}
    for proc in procs.values():
        proc.wait(timeout=300)
        proc.stderr.close()
    return {point: proc.returncode for point, proc in procs.items()}


def _rerun(inputs, trial) -> dict:
    assert main(["run", "--config", str(inputs / "resolver.yaml"), "--state", str(trial / "state"),
                 "--out", str(trial / "out"), "-q"]) == EXIT_OK
    return json.loads((trial / "out" / "run_summary.json").read_text())


@pytest.mark.parametrize("point", list(crash.COMMIT_POINTS))
def test_a_kill_at_each_step_of_the_commit_is_repaired_by_the_next_run(scenario, commit_kills, point):
    root, inputs, seed, reference, _ = scenario
    trial = root / point
    assert commit_kills[point] == -9  # the run did reach the point and die there
    forward = crash.COMMIT_POINTS[point] == "rolled forward"
    # On disk before any repair: a commit is pending; the outputs are the killed run's once swapped.
    assert (trial / "state" / "COMMITTING").exists()
    killed_run = crash.outputs_run(trial)
    if point == "outputs-retired":
        assert killed_run is None  # killed between the swap's two renames: no output folder
    else:
        assert (killed_run != crash.outputs_run(seed)) == forward
    flipped = point in ("current-flipped", "history-appended")
    assert crash.current_run(trial) == (killed_run if flipped else crash.current_run(seed))
    summary = _rerun(inputs, trial)
    assert summary["recovered_commit"] == crash.COMMIT_POINTS[point]
    assert crash.agree(trial) and crash.outputs_run(trial) == summary["run_id"]
    assert crash.leftovers(trial) == []
    assert crash.differing_outputs(trial / "out", reference / "out") == []
    history = load_history(trial / "state")["run_id"].tolist()
    killed = [killed_run] if forward else []
    assert history == load_history(seed / "state")["run_id"].tolist() + killed + [summary["run_id"]]


def test_workers_die_with_their_killed_parent(scenario):
    root, inputs, seed, _, _ = scenario
    proc, tag = crash.start_trial(inputs, seed, root / "workers", crash_at="workers-idle")
    workers, killed = crash.watch(proc, tag)
    assert killed and len(workers) >= 1  # the pool was up when the run died
    assert crash.survivors(tag) == set()
    assert crash.judge(root / "workers") == ("consistent", None)  # killed long before its commit


def test_kills_at_random_moments_leave_consistent_outputs_and_no_workers(scenario):
    root, inputs, seed, reference, seconds = scenario
    rng = random.Random(0)
    delays = [rng.uniform(0.2, 1.0) * seconds for _ in range(2)]
    for i, delay in enumerate(delays):
        trial = root / f"random-{i}"
        proc, tag = crash.start_trial(inputs, seed, trial)
        crash.watch(proc, tag, kill_after=delay)
        assert crash.survivors(tag) == set()
        assert crash.judge(trial)[0] in ("consistent", "repaired")
        _rerun(inputs, trial)
        assert crash.differing_outputs(trial / "out", reference / "out") == []


def test_a_forget_killed_after_its_outputs_swap_keeps_the_erasure(scenario):
    """Erased outputs beside a state without the tombstones would let the next run bring the
    person back: forget commits like a run, and the repair rolls it forward."""
    root, inputs, _, reference, _ = scenario
    trial = root / "forget"
    shutil.copytree(reference, trial)
    proc = subprocess.run([sys.executable, "-m", "resolver", "forget", "--config", str(inputs / "resolver.yaml"),
                           "--state", str(trial / "state"), "--out", str(trial / "out"), "--email", "cy@x.com"],
                          env=crash.env(RESOLVER_CRASH_AT="outputs-swapped"), capture_output=True, timeout=300)
    assert proc.returncode == -9
    assert "l2" not in set(pd.read_parquet(trial / "out" / "identity_map.parquet")["record_key"])
    assert StateStore(trial / "state").recover() == "rolled forward"
    assert len(StateStore(trial / "state").load().tombstones) == 2  # the record and the identifier
    summary = _rerun(inputs, trial)
    assert summary["rows"]["suppressed"] == 1
    assert "l2" not in set(pd.read_parquet(trial / "out" / "identity_map.parquet")["record_key"])
