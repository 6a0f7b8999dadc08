"""Killing `resolver run` (SIGKILL) and judging what it leaves: tests/test_crash.py and
benchmarks/kill_runs.py.

A scenario: a first run over two small CSV sources seeds a state and outputs; the inputs then gain
rows (so the next run ingests again, on a pool of 2 workers, and no new person appears), and every
trial copies the seed and runs on those inputs, killed at a named crash point
(resolver/crashpoints.py) or after a delay. The trial's processes carry a tag in their environment,
so that the workers of a killed run can be found in /proc after their parent is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
run: {workers: 2}
sources:
  - name: crm
    format: csv
    path: crm.csv
    key: Id
    timestamp: Modified
    attributes: {first_name: FirstName, email: Email}
    identifiers: {email: [Email]}
  - name: leads
    format: csv
    path: leads.csv
    key: Id
    timestamp: Modified
    attributes: {first_name: FirstName, email: Email}
    identifiers: {email: [Email]}
identity:
  types:
    email: {normalizer: email, priority: 1, limit: 5, strong: true}
"""
HEADER = "Id,FirstName,Email,Modified\n"
CRM = ["a1,Ann,ann@x.com,2020-01-01", "a2,Ann,ANN@x.com,2020-02-01", "b1,Bob,bob@x.com,2021-01-01"]
LEADS = ["l1,Ann,ann@x.com,2022-01-01", "l2,Cy,cy@x.com,2022-01-01"]
ADDED = {"crm.csv": "a3,Ann,ann@x.com,2023-01-01", "leads.csv": "l3,Bob,bob@x.com,2023-01-01"}

# Every crash point of a run's commit, in order, and what the next start must do after a kill there.
COMMIT_POINTS = {
    "journal-written": "rolled back", "outputs-staged": "rolled back", "state-written": "rolled back",
    "outputs-retired": "rolled back", "outputs-swapped": "rolled forward", "current-flipped": "rolled forward",
    "history-appended": "rolled forward",
}
VOLATILE = {"run_summary.json", "report.html"}  # the run id, times and durations


def env(**extra: str) -> dict:
    """The environment of a `resolver` subprocess: this checkout first on the path."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_args(inputs: Path, trial: Path) -> list[str]:
    return [sys.executable, "-m", "resolver", "run", "--config", str(inputs / "resolver.yaml"),
            "--state", str(trial / "state"), "--out", str(trial / "out"), "-q"]


def prepare(root: Path) -> tuple[Path, Path, Path]:
    """The inputs (after the first run's rows gained ADDED), the seed (state and outputs of the
    first run) and the reference (the seed, then an uninterrupted run on the inputs)."""
    inputs, seed, reference = root / "inputs", root / "seed", root / "reference"
    inputs.mkdir(parents=True)
    (inputs / "resolver.yaml").write_text(CONFIG)
    (inputs / "crm.csv").write_text(HEADER + "\n".join(CRM) + "\n")
    (inputs / "leads.csv").write_text(HEADER + "\n".join(LEADS) + "\n")
    subprocess.run(run_args(inputs, seed), env=env(), check=True, capture_output=True, timeout=300)
    for name, row in ADDED.items():
        with open(inputs / name, "a") as handle:
            handle.write(row + "\n")
    shutil.copytree(seed, reference)
    subprocess.run(run_args(inputs, reference), env=env(), check=True, capture_output=True, timeout=300)
    return inputs, seed, reference


def start_trial(inputs: Path, seed: Path, trial: Path, crash_at: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start a run on a copy of the seed in `trial`; returns it and its processes' tag."""
    shutil.copytree(seed, trial)
    tag = uuid.uuid4().hex
    extra = {"RESOLVER_TEST_TAG": tag, **({"RESOLVER_CRASH_AT": crash_at} if crash_at else {})}
    proc = subprocess.Popen(run_args(inputs, trial), env=env(**extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    return proc, tag


def tagged(tag: str) -> set[int]:
    """Live (not zombie) processes whose environment holds the tag (Linux: /proc)."""
    found = set()
    needle = f"RESOLVER_TEST_TAG={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and \
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.add(int(entry.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def watch(proc: subprocess.Popen, tag: str, kill_after: float | None = None) -> tuple[set[int], bool]:
    """Wait for the run to end (SIGKILL it after `kill_after` seconds); returns the processes of
    the trial seen besides the run itself (its workers) and whether it was killed."""
    seen, started = set(), time.monotonic()
    while proc.poll() is None:
        seen |= tagged(tag) - {proc.pid}
        if kill_after is not None and time.monotonic() - started >= kill_after:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.02)
    proc.stderr.close()
    return seen, proc.returncode == -signal.SIGKILL


def survivors(tag: str, within: float = 5.0) -> set[int]:
    """The trial's processes still alive `within` seconds after its run died (none, at best);
    they are killed once counted, so that a failing check leaks nothing."""
    deadline = time.monotonic() + within
    while (left := tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


def outputs_run(trial: Path) -> str | None:
    summary = trial / "out" / "run_summary.json"
    return json.loads(summary.read_text())["run_id"] if summary.exists() else None


def current_run(trial: Path) -> str | None:
    """The run CURRENT names, read as it is on disk (no recovery)."""
    pointer = trial / "state" / "CURRENT"
    if not pointer.exists():
        return None
    manifest = trial / "state" / "versions" / pointer.read_text().strip() / "manifest.json"
    return json.loads(manifest.read_text())["run_id"]


def judge(trial: Path) -> tuple[str, str | None]:
    """'consistent' (the kill left outputs and CURRENT naming the same run), 'repaired' (the next
    start's recovery made them so) or 'inconsistent'; and what the recovery did. The state must
    load either way."""
    from resolver.state.store import StateStore

    untouched = agree(trial)
    store = StateStore(trial / "state")
    outcome = store.recover()
    store.load()
    verdict = "inconsistent" if not agree(trial) else "consistent" if untouched and outcome is None else "repaired"
    return verdict, outcome


def agree(trial: Path) -> bool:
    """No commit pending, and the outputs and CURRENT name the same run."""
    run = current_run(trial)
    return run is not None and outputs_run(trial) == run and not (trial / "state" / "COMMITTING").exists()


def leftovers(trial: Path) -> list[str]:
    """Temporary folders and files a commit leaves beside the outputs and in the state."""
    names = [p.name for p in trial.iterdir() if p.name.startswith(".")]
    names += [p.name for p in (trial / "state").iterdir() if p.name.startswith((".pending", ".CURRENT"))]
    return names + [p.name for p in (trial / "state" / "versions").iterdir() if p.name.startswith(".")]


def differing_outputs(a: Path, b: Path) -> list[str]:
    """Output files whose bytes differ (or that only one has), less the volatile ones."""
    names = {p.name for p in a.iterdir()} | {p.name for p in b.iterdir()}
    return sorted(n for n in names - VOLATILE
                  if not ((a / n).exists() and (b / n).exists() and (a / n).read_bytes() == (b / n).read_bytes()))


def rerun(inputs: Path, trial: Path) -> None:
    subprocess.run(run_args(inputs, trial), env=env(), check=True, capture_output=True, timeout=300)
