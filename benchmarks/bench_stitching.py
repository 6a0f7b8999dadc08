"""Anonymous visitor stitching at scale: a generated dataset with web-visitor traffic (Segment, GA4,
Tealium, Adobe: logins, never-logged-in visitors, cookie resets, households, carrier and corporate
NAT, VPN hops, strangers), resolved on the CPU with stitching on, then scored against the truth.

    python benchmarks/bench_stitching.py                        # ~10M events (600k people)
    python benchmarks/bench_stitching.py --people 20000         # a quick one

The run is its own process, timed with its peak RSS (/usr/bin/time) and with its ingest workers'
peak from the run summary. Prints a Markdown table (events, sessions, candidates, stitches, seconds
per stage, peak memory, precision and recall); results go to --results as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _data(people: int, seed: int, root: Path) -> Path:
    target = root / f"visitors-{people}-seed-{seed}"
    if not (target / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "resolver", "generate", "--people", str(people), "--seed", str(seed),
                        "--visitors", "--out", str(target), "--quiet"], check=True)
    return target


def _events_in_input(manifest: dict) -> int:
    """Every event row the generator wrote: the persons' own Segment events plus all visitor traffic."""
    visitors = manifest.get("visitors", {})
    return manifest["events"] + sum(v for k, v in visitors.items() if k.startswith("events_"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=600_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--data", default=str(HERE / "data" / "stitching"))
    parser.add_argument("--results", default=str(HERE / "results" / "stitching.json"))
    args = parser.parse_args()

    data = _data(args.people, args.seed, Path(args.data))
    manifest = json.loads((data / "manifest.json").read_text())
    out = data / "out"
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "resolver", "run", "--config",
                           str(data / "resolver.yaml"), "--out", str(out), "--quiet", "--backend", "cpu"],
                          check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    summary = json.loads((out / "run_summary.json").read_text())
    evaluated = subprocess.run([sys.executable, "-m", "resolver", "evaluate", "--config", str(data / "resolver.yaml"),
                                "--truth", str(data / "truth"), "--out", str(out), "--quiet"],
                               check=True, capture_output=True, text=True)
    metrics = json.loads(evaluated.stdout)
    stages = {s["stage"]: s for s in summary["stages"]}
    ingest = next(s for name, s in stages.items() if name.startswith("ingest"))
    stitch_stage = next(s for name, s in stages.items() if name.startswith("stitching"))
    stitching = summary.get("stitching", {})
    row = {
        "people": args.people, "events": _events_in_input(manifest), "rows_read": summary["rows"]["read"],
        "records": sum(summary["records"].values()), "wall_s": round(wall, 1),
        "ingest_s": round(ingest["seconds"], 1), "stitching_s": round(stitch_stage["seconds"], 1),
        "sessions": stitch_stage.get("rows_in") or 0,
        "client_peak_rss_gib": round(int(done.stderr.strip().splitlines()[-1]) / 2**20, 2),
        "ingest_worker_peak_rss_gib": round(summary.get("peak_worker_rss_mb", 0) / 1024, 2),
        "stitching": stitching, "metrics": metrics.get("stitching", {}),
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(row, indent=2))
    m = row["metrics"]
    print("| people | events | records | sessions | anonymous ids | candidate pairs | wall s | ingest s | stitching s "
          "| client peak GiB | ingest worker peak GiB | deterministic | probabilistic | review | precision (prob.) "
          "| recall (prob.) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {row['people']:,} | {row['events']:,} | {row['records']:,} | {row['sessions']:,} "
          f"| {stitching.get('anonymous_ids', 0):,} | {stitching.get('candidate_pairs', 0):,} "
          f"| {row['wall_s']} | {row['ingest_s']} | {row['stitching_s']} | {row['client_peak_rss_gib']} "
          f"| {row['ingest_worker_peak_rss_gib']} | {stitching.get('stitched_deterministic', 0):,} "
          f"| {stitching.get('stitched_probabilistic', 0):,} | {stitching.get('review', 0):,} "
          f"| {_rounded(m.get('probabilistic_precision'))} | {_rounded(m.get('probabilistic_recall'))} |")


def _rounded(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
