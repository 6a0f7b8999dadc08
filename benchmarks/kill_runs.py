"""Kill `resolver run` with SIGKILL at seeded random points, n times, and judge what each kill left.

    python benchmarks/kill_runs.py --n 50 --seed 0

Each trial copies a seeded state and outputs and runs on grown inputs (tests/_crash.py: two CSV
sources, 2 ingest workers), killed either at a named crash point (every step of the commit, or
with the ingest workers up) or after a random delay in [0, 1.5 x an uninterrupted run's time].
Then: which of the run's processes outlived it (5 s grace), whether the outputs and CURRENT name
the same run as left (consistent), after the next start's repair (repaired) or not at all
(inconsistent), and whether a rerun writes the uninterrupted run's outputs byte for byte. Prints
one row per trial and a summary by kill point; writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _crash as crash  # noqa: E402

NAMED = [*crash.COMMIT_POINTS, "workers-idle"]


def kill_plan(rng: random.Random, n: int, seconds: float) -> list[tuple[str | None, float | None]]:
    """Per trial: a named crash point (half the trials) or a delay after which it is killed."""
    return [(rng.choice(NAMED), None) if rng.random() < 0.5 else (None, round(rng.uniform(0, 1.5 * seconds), 2))
            for _ in range(n)]


def phase(trial: Path, seed: Path) -> str:
    """Where a kill at a random moment landed, from what it left on disk."""
    if (trial / "state" / "COMMITTING").exists():
        return "in commit"
    return "before commit" if crash.outputs_run(trial) == crash.outputs_run(seed) else "after commit"


def one_trial(inputs: Path, seed: Path, reference: Path, trial: Path, point: str | None, delay: float | None) -> dict:
    proc, tag = crash.start_trial(inputs, seed, trial, crash_at=point)
    workers, killed = crash.watch(proc, tag, kill_after=delay)
    left = crash.survivors(tag)
    where = point or (phase(trial, seed) if killed else "finished")
    verdict, recovery = crash.judge(trial)
    crash.rerun(inputs, trial)
    return {"kill": point or f"t={delay:.2f}s", "where": where, "killed": killed, "outcome": verdict,
            "recovery": recovery, "workers_seen": len(workers), "surviving_workers": len(left),
            "rerun_identical": crash.differing_outputs(trial / "out", reference / "out") == []}


def summary_rows(trials: list[dict]) -> list[dict]:
    by = {}
    for t in trials:
        row = by.setdefault(t["where"], Counter())
        row.update({"trials": 1, t["outcome"]: 1, "surviving_workers": t["surviving_workers"],
                    "rerun_identical": int(t["rerun_identical"])})
    return [{"kill point": where, **{k: counts[k] for k in ("trials", "consistent", "repaired", "inconsistent",
                                                              "surviving_workers", "rerun_identical")}}
            for where, counts in by.items()]


def table(rows: list[dict]) -> str:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = [" | ".join(c.ljust(widths[c]) for c in columns), "-|-".join("-" * widths[c] for c in columns)]
    return "\n".join([*lines, *(" | ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        parser.error("finds a killed run's workers in /proc: Linux only")
    logging.getLogger("resolver.state.store").setLevel(logging.ERROR)  # the repair's one line, once per trial
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"kill_runs-{datetime.now(timezone.utc).strftime('%Y-%m-%d-%H%M%S')}.json"
    work = Path(tempfile.mkdtemp(prefix="kill_runs-"))
    trials = []
    try:
        started = time.monotonic()
        inputs, seed, reference = crash.prepare(work)
        seconds = (time.monotonic() - started) / 2
        for i, (point, delay) in enumerate(kill_plan(random.Random(args.seed), args.n, seconds)):
            trials.append({"trial": i, **one_trial(inputs, seed, reference, work / f"trial-{i}", point, delay)})
            shutil.rmtree(work / f"trial-{i}")
            print(" ".join(f"{k}={v}" for k, v in trials[-1].items()), flush=True)
            # Written after every trial: an interrupted benchmark keeps what it measured.
            path.write_text(json.dumps({"command": f"benchmarks/kill_runs.py --n {args.n} --seed {args.seed}",
                                        "trials_done": len(trials), "run_seconds": round(seconds, 2),
                                        "summary": summary_rows(trials), "trials": trials}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{table(trials)}\n\n{table(summary_rows(trials))}\n\n{path}")
    return 0 if all(t["outcome"] != "inconsistent" and not t["surviving_workers"] for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
