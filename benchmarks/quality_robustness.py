"""Robustness: adding any one documented blocking rule or comparison to a working config must never
lower F1 by more than 0.01.

    .venv/bin/python benchmarks/quality_robustness.py                       # FEBRL and pseudopeople (default noise)
    .venv/bin/python benchmarks/quality_robustness.py --tasks febrl3,pp_wic --noise default,x5

For each task (the data of benchmarks/quality.py), the working config is the one `resolver init`
writes for it; the additions are what that config's own documentation offers a user:

- every candidate blocking rule `resolver init` considered for this data and did not choose (its
  catalogue: the rules of Splink's tutorials and of configs/synthetic.yaml over the detected fields,
  listed with their pair counts in the config's comments), one at a time, appended to the rules;
- every attribute the config maps but does not compare, compared by its kind as init compares that
  kind (for an address joined from a house number and a street: the number and the street on their
  own, which is what a user who reads the data adds), one at a time; in a link_only config, only
  the attributes both files have (a field one file lacks is never compared: the health check
  refuses such a comparison, which is tested on its own).

Each variant runs in its own process one after the other; the table gives the config's F1
(cluster-implied pairwise, as benchmarks/quality.py), each addition's F1 and the change, and the
worst change per task. Results go to benchmarks/results/robustness-<date>.json.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import psutil
import yaml

from quality import resolver_config, run_resolver_config
from quality_data import DATA_ROOT, NOISE_LEVELS, TASKS, ensure_task, log
from quality_metrics import quality_metrics

HERE = Path(__file__).resolve().parent
DEFAULT_TASKS = ("febrl1", "febrl3", "febrl4", "pp_wic", "pp_1040", "pp_acs_1040", "pp_cps_1040")


def additions(init_yaml: Path, config: dict) -> list[tuple[str, dict]]:
    """(what, config) for every documented addition to `config` (written by init from init_yaml's
    data: its candidate rules are re-derived by resolver.propose on the same files)."""
    from resolver.propose import propose
    from resolver.propose.comparisons import comparison

    sources = config["sources"]
    proposal = propose([s["path"] for s in sources], out=init_yaml.parent / "again.yaml",
                       names=[s["name"] for s in sources], link_type=config["matching"].get("link_type"))
    chosen = {r["name"] for r in config["matching"]["blocking"]["rules"]}
    out = []
    for candidate in proposal.candidates:
        if candidate.name in chosen or candidate.pairs == 0 or candidate.verdict.startswith("dropped"):
            continue
        variant = copy.deepcopy(config)
        variant["matching"]["blocking"]["rules"].append(candidate.rule)
        out.append((f"+ rule {candidate.name} ({candidate.pairs:,} pairs)", variant))
    compared = {c["column"] for c in config["matching"]["comparisons"]}
    attributes = {a.name: a for p in proposal.sources for a in p.attributes.values()}
    holders = {name: sum(name in p.attributes for p in proposal.sources) for name in attributes}
    link_only = config["matching"].get("link_type") == "link_only"
    for name, attr in attributes.items():
        if name in compared or attr.kind in ("year", "month", "day"):
            continue
        if link_only and holders[name] < 2:  # never compared: every pair has one side without it
            continue
        variant = copy.deepcopy(config)
        variant["matching"]["comparisons"].append(comparison(attr))
        out.append((f"+ comparison {name} ({comparison(attr)['method']})", variant))
    return out


def score(run_dir: Path, config: dict, truth: pd.DataFrame, args) -> tuple[float | None, str]:
    config = copy.deepcopy(config)
    config["run"]["output_dir"] = str(run_dir / "out")
    path = run_dir / "resolver.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result, outputs = run_resolver_config(path, {}, run_dir, args)
    if outputs is None:
        return None, result.status
    metrics = quality_metrics(truth, outputs["clusters"], outputs.get("pairs"), None, outputs.get("groups"))
    return metrics["pairwise"]["f1"], result.status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--noise", default="default")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--data", type=Path, default=DATA_ROOT)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    noise = [n for n in args.noise.split(",") if n in NOISE_LEVELS]
    run_args = SimpleNamespace(configs="init", timeout=args.timeout, max_rss=int(0.9 * psutil.virtual_memory().total),
                               min_free_disk=4 << 30)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    args.results.mkdir(parents=True, exist_ok=True)
    results_path = args.results / f"robustness-{stamp}.json"
    report: dict = {"started": stamp, "tasks": {}}
    lines = ["| task | config F1 | additions | worst addition | its F1 | change | holds (>= -0.01) |", "|---|---|---|---|---|---|---|"]
    for name in tasks:
        task = TASKS[name]
        for level in task.noise_levels(noise):
            folder = ensure_task(task, level, args.data)
            truth = pd.read_csv(folder / "truth.csv", dtype=str, keep_default_na=False)
            label = name if level == "none" else f"{name} ({level})"
            root = folder / "runs" / "robustness"
            if root.exists():
                shutil.rmtree(root)
            base_dir = root / "base"
            base_dir.mkdir(parents=True)
            _, info = resolver_config(task, folder, base_dir, run_args)
            config = info["config"]
            base_f1, status = score(base_dir, config, truth, run_args)
            log(f"{label}: config F1 {base_f1} ({status})")
            rows = []
            for i, (what, variant) in enumerate(additions(base_dir / "init.yaml", config)):
                run_dir = root / f"v{i}"
                run_dir.mkdir()
                f1, status = score(run_dir, variant, truth, run_args)
                change = None if f1 is None or base_f1 is None else f1 - base_f1
                log(f"{label}: {what}: F1 {f1} ({status})")
                rows.append({"addition": what, "f1": f1, "change": change, "status": status})
            report["tasks"][label] = {"config_f1": base_f1, "additions": rows}
            results_path.write_text(json.dumps(report, indent=2) + "\n")
            scored = [r for r in rows if r["change"] is not None]
            worst = min(scored, key=lambda r: r["change"]) if scored else None
            lines.append(f"| {label} | {base_f1:.4f} | {len(rows)} | {worst['addition'] if worst else '-'} | "
                         f"{worst['f1']:.4f} | {worst['change']:+.4f} | {'yes' if not worst or worst['change'] >= -0.01 else 'NO'} |"
                         if worst else f"| {label} | {base_f1} | 0 | - | - | - | yes |")
    table = "\n".join(lines)
    report["table"] = table
    results_path.write_text(json.dumps(report, indent=2) + "\n")
    print(table)
    log(f"results: {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
