"""Local engine against the dask engine (a LocalCluster started for the run), on the same
generated data: wall time, peak memory of the client and of each worker, buckets.

    python benchmarks/bench_engines.py                          # 1M people (records only)
    python benchmarks/bench_engines.py --people 20000 --events  # a quick one, with events
    python benchmarks/bench_engines.py --people 1000000 --workers 2

Each run is its own process, timed with its peak RSS (/usr/bin/time); the dask workers' peaks come
from the run summary. Both runs must give the same persons and golden records (checked). Prints a
Markdown table; results go to --results as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def _data(people: int, events: bool, root: Path) -> Path:
    target = root / f"{'people' if events else 'records'}-{people}-seed-1"
    if not (target / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "resolver", "generate", "--people", str(people), "--seed", "1",
                        "--out", str(target), "--quiet", *([] if events else ["--no-events"])], check=True)
    return target


def _run(config: Path, out: Path, *extra: str) -> dict:
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "resolver", "run", "--config", str(config),
                           "--out", str(out), "--quiet", "--backend", "cpu", *extra],
                          check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    summary = json.loads((out / "run_summary.json").read_text())
    engine = summary["engine"]
    return {"wall_s": round(wall, 1), "client_peak_rss_gib": round(int(done.stderr.strip().splitlines()[-1]) / 2**20, 2),
            "worker_peak_rss_gib": [round(mb / 1024, 2) for mb in engine.get("worker_peak_rss_mb", [])],
            "workers": engine.get("workers"), "buckets": engine.get("buckets"), "records": summary["rows"]["resolved"],
            "persons": summary["persons"]["total"]}


def _same(a: Path, b: Path) -> bool:
    return all(pd.read_parquet(a / f"{t}.parquet").equals(pd.read_parquet(b / f"{t}.parquet"))
               for t in ("identity_map", "persons", "golden_records"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--events", action="store_true", help="with Segment events (default: CRM records only)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", default=str(HERE / "data" / "engines"))
    parser.add_argument("--results", default=str(HERE / "results" / "engines.json"))
    args = parser.parse_args()

    rows = []
    for people in args.people:
        data = _data(people, args.events, Path(args.data))
        config = data / "resolver.yaml"
        local = _run(config, data / "out-local")
        dask = _run(config, data / "out-dask", "--engine", "dask", "--workers", str(args.workers))
        same = _same(data / "out-local", data / "out-dask")
        rows.append({"people": people, "local": local, "dask": dask, "identical": same})
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(rows, indent=2))
    print("| people | records | engine | wall s | vs local | client peak GiB | worker peaks GiB | buckets | identical |")
    print("|---:|---:|---|---:|---:|---:|---|---:|---|")
    for row in rows:
        for name in ("local", "dask"):
            r = row[name]
            print(f"| {row['people']:,} | {r['records']:,} | {name} | {r['wall_s']} | {r['wall_s'] / row['local']['wall_s']:.2f} "
                  f"| {r['client_peak_rss_gib']} | {', '.join(map(str, r['worker_peak_rss_gib'])) or '-'} "
                  f"| {r['buckets'] or '-'} | {'yes' if row['identical'] else 'NO'} |")


if __name__ == "__main__":
    main()
