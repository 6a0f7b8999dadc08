"""Benchmark the deterministic pipeline on generated data.

    python benchmarks/bench_deterministic.py                 # 100k and 1M people
    python benchmarks/bench_deterministic.py --sizes 20000   # a quick one

For each size: generate the data (timed, cached under --data), resolve it in a fresh process
(wall time, peak RSS of that process, per-stage times), score it against the truth, and print a
Markdown table. Results also go to --results as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _generate(people: int, seed: int, data_root: Path) -> tuple[Path, float | None]:
    target = data_root / f"people-{people}-seed-{seed}"
    if (target / "manifest.json").exists():
        return target, None
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "resolver", "generate", "--people", str(people), "--seed", str(seed), "--out", str(target), "--quiet"],
        check=True,
    )
    return target, time.perf_counter() - start


def _resolve(data: Path) -> tuple[dict, float]:
    out = data / "out"
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "resolver", "run", "--config", str(data / "resolver.yaml"), "--out", str(out), "--quiet"],
        check=True,
    )
    wall = time.perf_counter() - start
    return json.loads((out / "run_summary.json").read_text()), wall


def _evaluate(data: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "resolver", "evaluate", "--config", str(data / "resolver.yaml"),
         "--truth", str(data / "truth"), "--out", str(data / "out")],
        check=True, capture_output=True, text=True,
    )
    return json.loads(done.stdout)


def _stage_groups(stages: list[dict]) -> dict[str, float]:
    """Per-stage seconds, with per-source read/normalize stages summed by kind."""
    groups: dict[str, float] = {}
    for entry in stages:
        name = entry["stage"].split(":")[0] if entry["stage"].startswith(("read:", "normalize:")) else entry["stage"]
        groups[name] = groups.get(name, 0.0) + entry["seconds"]
    return groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "deterministic.json")
    args = parser.parse_args()

    rows = []
    for people in args.sizes:
        data, gen_seconds = _generate(people, args.seed, args.data)
        summary, wall = _resolve(data)
        metrics = _evaluate(data)
        records = sum(v for k, v in summary["records"].items())
        events = summary["events"]
        rows.append(
            {
                "people": people,
                "crm_records": records,
                "events": events,
                "generate_s": gen_seconds,
                "resolve_wall_s": wall,
                "pipeline_s": summary["seconds"],
                "records_per_s": records / wall,
                "events_per_s": events / wall,
                "peak_rss_mib": summary["peak_rss_mb"],
                "peak_worker_rss_mib": summary.get("peak_worker_rss_mb", 0.0),
                "stages_s": _stage_groups(summary["stages"]),
                "record_pairwise_precision": metrics["records"]["pairwise_precision"],
                "record_pairwise_recall": metrics["records"]["pairwise_recall"],
                "event_pairwise_precision": metrics.get("events", {}).get("pairwise_precision"),
                "event_pairwise_recall": metrics.get("events", {}).get("pairwise_recall"),
            }
        )

    args.results.parent.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor()}
    args.results.write_text(json.dumps({"machine": machine, "runs": rows}, indent=2))

    print("| people | CRM records | events | generate s | resolve wall s | records/s | events/s | peak RSS MiB (main / worker) | record P / R | event P / R |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        gen = f"{r['generate_s']:.1f}" if r["generate_s"] is not None else "cached"
        ev = (
            f"{r['event_pairwise_precision']:.4f} / {r['event_pairwise_recall']:.4f}"
            if r["event_pairwise_precision"] is not None else "-"
        )
        print(
            f"| {r['people']:,} | {r['crm_records']:,} | {r['events']:,} | {gen} | {r['resolve_wall_s']:.1f} | "
            f"{r['records_per_s']:,.0f} | {r['events_per_s']:,.0f} | {r['peak_rss_mib']:,.0f} / {r['peak_worker_rss_mib']:,.0f} | "
            f"{r['record_pairwise_precision']:.4f} / {r['record_pairwise_recall']:.4f} | {ev} |"
        )
    print()
    print("per-stage seconds:")
    for r in rows:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages_s"].items())
        print(f"  {r['people']:,} people: {stages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
