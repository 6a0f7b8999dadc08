"""Cost of an incremental run: add 1% new contacts to a resolved state and resolve again, against a
full run over the same data.

    python benchmarks/bench_incremental.py                    # 1M people (about 1.03M CRM records)
    python benchmarks/bench_incremental.py --people 20000     # a quick one

Records-only data is generated once (cached under --data). Each run is its own process, timed with
its peak RSS (/usr/bin/time). The runs, in order, on a copy of the data:
  1. full run with a state (what the incremental run starts from),
  2. the new contacts are added (a new Contact file: copies of existing contacts with new ids, half
     with a first-name typo, a third with a new email),
  3. incremental run with that state,
  4. full run over the same data without a state (normalizes, compares and trains from scratch).
Prints a Markdown table; results go to --results as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def _data(people: int, root: Path) -> Path:
    target = root / f"records-{people}-seed-1"
    if not (target / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "resolver", "generate", "--people", str(people), "--seed", "1",
                        "--out", str(target), "--no-events", "--quiet"], check=True)
    return target


def _workdir(data: Path, work: Path) -> Path:
    """A copy of the dataset whose CSVs are links (the new contacts go into a file of their own)."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "salesforce").mkdir(parents=True)
    for csv in (data / "salesforce").glob("*.csv"):
        (work / "salesforce" / csv.name).symlink_to(csv.resolve())
    shutil.copy(data / "resolver.yaml", work / "resolver.yaml")
    return work


def _add_contacts(work: Path, share: float, seed: int = 7) -> int:
    """New contacts in a file of their own, with the first Contact file's columns."""
    files = sorted((work / "salesforce").glob("Contact*.csv"))
    total = sum(len(pd.read_csv(p, dtype=str, usecols=[0])) for p in files)
    first = pd.read_csv(files[0], dtype=str, keep_default_na=False)
    sample = first.sample(n=min(int(total * share), len(first)), random_state=seed).reset_index(drop=True)
    sample["Id"] = [f"0035g00N{i:07d}" for i in range(len(sample))]  # 15-character Salesforce ids
    typo = np.arange(len(sample)) % 2 == 0
    sample.loc[typo, "FirstName"] = sample.loc[typo, "FirstName"].str[:-1] + "e"
    fresh = np.arange(len(sample)) % 3 == 0
    sample.loc[fresh, "Email"] = [f"new{i}@example.org" for i in range(int(fresh.sum()))]
    sample.to_csv(work / "salesforce" / "Contact_zz_new.csv", index=False, quoting=1)
    return len(sample)


def _run(config: Path, out: Path, *extra: str) -> dict:
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "resolver", "run", "--config", str(config),
                           "--out", str(out), "--quiet", *extra], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    summary = json.loads((out / "run_summary.json").read_text())
    stages = {s["stage"]: s["seconds"] for s in summary["stages"]}
    return {"wall_s": round(wall, 1), "peak_rss_gib": round(peak_kib / 2**20, 2), "records": summary["rows"]["resolved"],
            "candidate_pairs": summary["matching"]["candidate_pairs"],
            "pairs_compared": summary.get("incremental", {}).get("pairs_compared", summary["matching"]["candidate_pairs"]),
            "normalized_share": 1 - summary.get("incremental", {}).get("normalization", {}).get("remembered_share", 0.0),
            "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--share", type=float, default=0.01, help="new contacts, as a share of the contacts")
    parser.add_argument("--data", default=str(HERE / "data" / "incremental"))
    parser.add_argument("--results", default=str(HERE / "results" / "incremental.json"))
    args = parser.parse_args()

    data = _data(args.people, Path(args.data))
    work = _workdir(data, Path(args.data) / "work")
    config, state = work / "resolver.yaml", work / "state"
    rows = {"full run, writing the state": _run(config, work / "out", "--state", str(state))}
    added = _add_contacts(work, args.share)
    rows[f"incremental run (+{added:,} contacts)"] = _run(config, work / "out", "--state", str(state))
    rows["full run, same data, no state"] = _run(config, work / "out-full")
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps({"people": args.people, "added": added, "runs": rows}, indent=2))

    base = rows["full run, same data, no state"]["wall_s"]
    print(f"\n{args.people:,} people, +{added:,} new contacts ({args.share:.0%}); {Path(args.results)}")
    print("| run | wall s | vs full | peak RSS GiB | records | candidate pairs | pairs compared | values normalized |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['wall_s']} | {r['wall_s'] / base:.2f} | {r['peak_rss_gib']} | {r['records']:,} | "
              f"{r['candidate_pairs']:,} | {r['pairs_compared']:,} | {r['normalized_share']:.1%} |")
    print("\nstage seconds (incremental / full):")
    inc = rows[f"incremental run (+{added:,} contacts)"]["stages"]
    full = rows["full run, same data, no state"]["stages"]
    for stage in full:
        if ":" in stage and stage.startswith(("read", "normalize")):
            continue
        print(f"  {stage}: {inc.get(stage, 0):.1f} / {full[stage]:.1f}")


if __name__ == "__main__":
    main()
