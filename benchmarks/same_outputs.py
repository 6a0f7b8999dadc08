"""Behaviour unchanged: every output table of a set of runs, byte for byte, before and after a change.

    python benchmarks/same_outputs.py save /tmp/same      # with the code before the change
    python benchmarks/same_outputs.py check /tmp/same     # with the code after it: exit 1 on a difference

`save` generates a dataset (CRM + Segment events, 3,000 people, seed 7) into DIR/data and runs the
cases below with the code of the tree this file is in, keeping each case's outputs under
DIR/saved/. `check` generates the dataset again and compares it with DIR/data byte for byte (the
generator is code too), runs the same cases on DIR/data and compares every output. Runs always
write to the same paths (DIR/run/...) and are moved afterwards, because outputs name their input
files and a different path would be a difference of its own.

Cases:
- local: `resolver run` on the generated data, plus `resolver evaluate`;
- dask: the same run on a 2-worker Dask cluster (skipped when dask is not installed);
- streamed: matching.stream_above_pairs 0, so every pair is made, compared and scored by bucket;
- state: four steps on one state directory: a run, a review decision and a second run (the
  incremental path), a forget and a third run;
- febrl3, febrl4, pp_1040: the benchmark configs of benchmarks/quality_configs on their prepared
  data (benchmarks/data/quality/<task>, written by benchmarks/quality.py; skipped when absent).

Compared: every file of every output folder, byte for byte, except run_summary.json and model.json,
compared as JSON without the keys that hold times, run ids and memory peaks, and report.html, which
renders those (its tables come from the compared files).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
QUALITY = (ROOT / "benchmarks" / "data" / "quality").resolve()  # one path whichever tree runs (outputs name it)
CONFIGS = ROOT / "benchmarks" / "quality_configs"
QUALITY_TASKS = {"febrl3": "febrl3-none", "febrl4": "febrl4-none", "pp_1040": "pp_1040-default"}
VOLATILE = {"run_id", "previous_run", "started", "finished", "seconds", "jit_seconds", "timings", "peak_rss_mb",
            "peak_worker_rss_mb",
            "worker_peak_rss_mb", "wall_seconds", "previous_run_id", "recovered_commit", "engine",
            "output_dir", "state_dir", "created", "trained_at"}
RENDERED = {"report.html"}


def resolver(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "resolver", *args], cwd=cwd, env=env, text=True,
                          capture_output=True)
    if done.returncode not in (0, 2):  # 2: the model health warning, still a finished run
        raise SystemExit(f"resolver {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def generate(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    resolver("generate", "--people", "3000", "--seed", "7", "--out", str(folder), "--quiet")


def write_config(source: Path, target: Path, **matching) -> Path:
    config = yaml.safe_load(source.read_text())
    base = source.parent
    for item in config.get("sources", []):
        if not Path(item["path"]).is_absolute():
            item["path"] = str((base / item["path"]).resolve())
    if matching:
        config.setdefault("matching", {}).update(matching)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def case_local(work: Path, data: Path) -> dict[str, Path]:
    out = work / "out"
    resolver("run", "--config", str(data / "resolver.yaml"), "--out", str(out), "--quiet")
    (out / "evaluate.json").write_text(resolver("evaluate", "--config", str(data / "resolver.yaml"),
                                                "--truth", str(data / "truth"), "--out", str(out)))
    return {"out": out}


def case_dask(work: Path, data: Path) -> dict[str, Path]:
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        return {}
    out = work / "out"
    resolver("run", "--config", str(data / "resolver.yaml"), "--out", str(out), "--quiet",
             "--engine", "dask", "--workers", "2")
    return {"out": out}


def case_streamed(work: Path, data: Path) -> dict[str, Path]:
    config = write_config(data / "resolver.yaml", work / "streamed.yaml", stream_above_pairs=0)
    out = work / "out"
    resolver("run", "--config", str(config), "--out", str(out), "--quiet")
    return {"out": out}


def case_state(work: Path, data: Path) -> dict[str, Path]:
    config, state, outputs = str(data / "resolver.yaml"), work / "state", {}
    out = work / "out"

    def step(name: str) -> None:
        resolver("run", "--config", config, "--out", str(out), "--state", str(state), "--quiet")
        shutil.copytree(out, work / name)
        outputs[name] = work / name

    step("run-1")
    items = json.loads(resolver("review", "list", "--state", str(state), "--out", str(out), "--json"))
    if items:
        resolver("review", "decide", "--state", str(state), "--out", str(out), "--item", items[0]["item_id"],
                 "--accept", "--by", "same_outputs")
    step("run-2")
    email = _an_email(out)
    resolver("forget", "--config", config, "--state", str(state), "--out", str(out), "--email", email, "--quiet")
    shutil.copytree(out, work / "forgotten")
    outputs["forgotten"] = work / "forgotten"
    step("run-3")
    return outputs


def _an_email(out: Path) -> str:
    import pyarrow.parquet as pq

    golden = pq.read_table(out / "golden_records.parquet", columns=["email"]).column("email").to_pylist()
    return sorted(e for e in golden if e)[len(golden) // 3]


def quality_case(task: str):
    def run(work: Path, data: Path) -> dict[str, Path]:
        folder = QUALITY / QUALITY_TASKS[task]
        if not folder.is_dir():
            return {}
        config = write_config(CONFIGS / f"{task}.yaml", work / "config.yaml")
        text = yaml.safe_load(config.read_text())
        for item in text["sources"]:  # the templates' paths are relative to the task's folder
            item["path"] = str(folder / Path(item["path"]).name)
        config.write_text(yaml.safe_dump(text, sort_keys=False))
        out = work / "out"
        resolver("run", "--config", str(config), "--out", str(out), "--quiet")
        return {"out": out}
    return run


CASES = {"local": case_local, "dask": case_dask, "streamed": case_streamed, "state": case_state,
         **{task: quality_case(task) for task in QUALITY_TASKS}}


def run_cases(root: Path, into: Path, only: list[str]) -> None:
    data = root / "data"
    for name in only:
        work = root / "run" / name
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        outputs = CASES[name](work, data)
        if not outputs:
            print(f"{name:10} skipped (not available here)")
            continue
        for label, folder in outputs.items():
            target = into / name / label
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(folder, target)
        print(f"{name:10} ran: {', '.join(outputs)}")
        shutil.rmtree(work)


def without_volatile(value):
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def differences(saved: Path, now: Path) -> list[str]:
    found = []
    names = sorted({p.relative_to(saved) for p in saved.rglob("*") if p.is_file()}
                   | {p.relative_to(now) for p in now.rglob("*") if p.is_file()})
    for name in names:
        a, b = saved / name, now / name
        if name.name in RENDERED:
            continue
        if not a.exists() or not b.exists():
            found.append(f"{name}: only in {'the check' if b.exists() else 'the saved run'}")
        elif name.name in ("run_summary.json", "model.json"):
            if without_volatile(json.loads(a.read_text())) != without_volatile(json.loads(b.read_text())):
                found.append(f"{name}: differs (beyond times and run ids)")
        elif not filecmp.cmp(a, b, shallow=False):
            found.append(f"{name}: differs")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["save", "check"])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    args = parser.parse_args()
    root = args.dir.resolve()
    only = [c for c in args.cases.split(",") if c]
    if args.mode == "save":
        generate(root / "data")
        run_cases(root, root / "saved", only)
        print(f"saved in {root / 'saved'}")
        return 0
    generate(root / "data-check")
    found = [f"generated data: {d}" for d in differences(root / "data", root / "data-check")]
    shutil.rmtree(root / "data-check")
    shutil.rmtree(root / "now", ignore_errors=True)
    run_cases(root, root / "now", only)
    for name in only:
        if (root / "saved" / name).exists() or (root / "now" / name).exists():
            found += [f"{name}/{d}" for d in differences(root / "saved" / name, root / "now" / name)]
    for line in found:
        print("DIFFERENT " + line)
    print("same outputs" if not found else f"{len(found)} difference(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
