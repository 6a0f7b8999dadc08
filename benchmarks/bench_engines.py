"""Local engine against the dask engine (a LocalCluster started for the run), on the same
generated data: wall time, peak memory of the client and of each worker, buckets.

    python benchmarks/bench_engines.py                          # 1M people (records only)
    python benchmarks/bench_engines.py --people 20000 --events  # a quick one, with events
    python benchmarks/bench_engines.py --people 1000000 --workers 2

    # 10M people: 10.8M CRM records in 2.5 GB of Salesforce CSVs
    python benchmarks/bench_engines.py --people 10000000 --data /work/bench --cap-gib 20

    # out of core: 50M Segment events in one 25 GB JSONL file, with 1.56M CRM records
    python benchmarks/bench_engines.py --people 1440000 --events-per-person 50 --seed 3 --one-events-file \
        --data /work/bench --whole-file-cap-gib 16

Each run is its own process, timed with its peak RSS (/usr/bin/time); the dask workers' peaks come
from the run summary, the local engine's ingest workers' peak from its `peak_worker_rss_mb`. Both
runs must give the same persons and golden records (checked). "All processes" is the largest sum
of anonymous resident memory (RSS less file-backed pages) over the run's processes, sampled twice
a second. Big files (CSV at record ends, JSONL, Parquet) are read in pieces of
`run.partition_bytes` (256 MiB) by both engines; `--whole-file-cap-gib G` adds a local run that reads
each file whole (partition_bytes 0, the engine before pieces), stopped when its processes together
pass G GiB. Prints a Markdown table; results go to --results as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil

HERE = Path(__file__).resolve().parent


def _data(people: int, events: bool, events_per_person: float | None, one_file: bool, root: Path, seed: int) -> Path:
    per = f"-epp-{events_per_person:g}" if events_per_person else ""
    target = root / f"{'people' if events else 'records'}-{people}{per}-seed-{seed}{'-one-file' if one_file else ''}"
    if not (target / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "resolver", "generate", "--people", str(people), "--seed", str(seed),
                        "--out", str(target), "--quiet", *([] if events else ["--no-events"]),
                        *(["--events-per-person", str(events_per_person)] if events_per_person else [])], check=True)
    if one_file and not (target / "segment" / "events-all.jsonl").exists():
        _join_event_files(target / "segment")
    return target


def _join_event_files(folder: Path) -> None:
    """All events-*.jsonl in one file (as one big daily export would come), each part deleted once
    appended so the disk never holds two copies."""
    parts = sorted(folder.glob("events-*.jsonl"))
    joined = folder / "events-all.jsonl.partial"
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 16 << 20)
            part.unlink()
    joined.rename(folder / "events-all.jsonl")


def _tree_rss(process: psutil.Process) -> int:
    """Anonymous resident memory of a process and its children: RSS less file-backed pages (a
    memory-mapped input file's pages are the page cache's, not the run's)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            info = p.memory_info()
            total += info.rss - info.shared
        except psutil.NoSuchProcess:
            pass
    return total


def _run(config: Path, out: Path, *extra: str, cap_gib: float | None = None) -> dict:
    """One run in its own process; with `cap_gib`, stopped when it and its children together hold
    more than that (the row then says so instead of failing the benchmark)."""
    start = time.perf_counter()
    command = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "resolver", "run", "--config", str(config),
               "--out", str(out), "--quiet", "--backend", "cpu", *extra]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched, tree_peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        tree_peak = max(tree_peak, _tree_rss(watched))
        if cap_gib is not None and tree_peak > cap_gib * 2**30:
            for p in [watched, *watched.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            proc.wait()
            return {"stopped": f"over {cap_gib:g} GiB after {time.perf_counter() - start:.0f} s",
                    "wall_s": None, "tree_peak_rss_gib": round(tree_peak / 2**30, 2)}
        time.sleep(0.5)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:  # the row says so (the last line of the error), the benchmark goes on
        last = [line for line in stderr.strip().splitlines() if line.strip() and not line.strip().isdigit()]
        return {"stopped": f"failed after {time.perf_counter() - start:.0f} s: {last[-1][:160] if last else proc.returncode}",
                "wall_s": None, "tree_peak_rss_gib": round(tree_peak / 2**30, 2)}
    wall = time.perf_counter() - start
    summary = json.loads((out / "run_summary.json").read_text())
    engine = summary["engine"]
    reads = [s for s in summary["stages"] if s["stage"].startswith("read:")]
    workers = [mb / 1024 for mb in engine.get("worker_peak_rss_mb", [])] or [summary.get("peak_worker_rss_mb", 0) / 1024]
    return {"wall_s": round(wall, 1), "client_peak_rss_gib": round(int(stderr.strip().splitlines()[-1]) / 2**20, 2),
            "worker_peak_rss_gib": [round(w, 2) for w in workers], "tree_peak_rss_gib": round(tree_peak / 2**30, 2),
            "workers": engine.get("workers"), "buckets": _buckets(engine), "records": sum(summary["records"].values()),
            "events": summary["events"], "ingest_jobs": sum(s.get("jobs", 0) for s in reads),
            "persons": summary["persons"]["total"]}


def _buckets(engine: dict) -> str | None:
    """Pair / golden-record buckets of a dask run (they grow with the data), None for local."""
    if "buckets" not in engine:
        return None
    return f"{engine.get('pair_buckets', engine['buckets'])} / {engine.get('golden_buckets', engine['buckets'])}"


def _same(a: Path, b: Path) -> bool:
    return all(pd.read_parquet(a / f"{t}.parquet").equals(pd.read_parquet(b / f"{t}.parquet"))
               for t in ("identity_map", "persons", "golden_records"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--events", action="store_true", help="with Segment events (default: CRM records only)")
    parser.add_argument("--events-per-person", type=float, default=None, help="generate with more events (implies --events)")
    parser.add_argument("--one-events-file", action="store_true", help="join the Segment event files into one")
    parser.add_argument("--cap-gib", type=float, default=None,
                        help="stop any run whose processes together pass this many GiB (a row says so)")
    parser.add_argument("--whole-file-cap-gib", type=float, default=None,
                        help="also run the local engine reading files whole, stopped past this many GiB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", default=str(HERE / "data" / "engines"))
    parser.add_argument("--results", default=str(HERE / "results" / "engines.json"))
    args = parser.parse_args()

    rows = []
    events = args.events or bool(args.events_per_person)
    for people in args.people:
        data = _data(people, events, args.events_per_person, args.one_events_file, Path(args.data), args.seed)
        config = data / "resolver.yaml"
        row = {"people": people, "local": _run(config, data / "out-local", cap_gib=args.cap_gib),
               "dask": _run(config, data / "out-dask", "--engine", "dask", "--workers", str(args.workers),
                            cap_gib=args.cap_gib)}
        finished = not (row["local"].get("stopped") or row["dask"].get("stopped"))
        row["identical"] = _same(data / "out-local", data / "out-dask") if finished else None
        if args.whole_file_cap_gib:
            whole = data / "whole-files.yaml"
            whole.write_text(config.read_text().replace("run:\n", "run:\n  partition_bytes: 0\n", 1))
            row["local, whole files"] = _run(whole, data / "out-whole", cap_gib=args.whole_file_cap_gib)
            if not (row["local, whole files"].get("stopped") or row["local"].get("stopped")):
                row["local, whole files"]["identical"] = _same(data / "out-local", data / "out-whole")
        rows.append(row)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(rows, indent=2))
    print("| people | records | events | engine | ingest jobs | wall s | vs local | client peak GiB | worker peaks GiB "
          "| all processes GiB | buckets (pairs / golden) | identical |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---|")
    for row in rows:
        for name in ("local", "dask", "local, whole files"):
            r = row.get(name)
            if r is None:
                continue
            if r.get("stopped"):
                print(f"| {row['people']:,} | | | {name} | | {r['stopped']} | | | | {r['tree_peak_rss_gib']} | | |")
                continue
            ratio = f"{r['wall_s'] / row['local']['wall_s']:.2f}" if row["local"].get("wall_s") else "-"
            print(f"| {row['people']:,} | {r['records']:,} | {r['events']:,} | {name} | {r['ingest_jobs']} | {r['wall_s']} "
                  f"| {ratio} | {r['client_peak_rss_gib']} "
                  f"| {', '.join(map(str, r['worker_peak_rss_gib'])) or '-'} | {r['tree_peak_rss_gib']} "
                  f"| {r['buckets'] or '-'} | {_identical(r.get('identical', row['identical']))} |")


def _identical(same: bool | None) -> str:
    return "-" if same is None else "yes" if same else "NO"


if __name__ == "__main__":
    main()
