"""The seeded fuzz run: n mutated inputs per family member, counted by family and outcome.

    python benchmarks/fuzz.py --family readers --n 1000 --seed 0
    python benchmarks/fuzz.py --family all --n 1000 --seed 0

Families are modules exposing `run(n: int, seed: int) -> list[dict]`, rows with keys family,
outcome and count (and optionally examples): benchmarks/fuzz_readers.py (input files of every
format) and, when present, benchmarks/fuzz_webhooks.py (webhook bodies). Prints a table, writes
benchmarks/results/fuzz-<families>-<time>.json, and exits 1 when any row's outcome is a failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

# Family name -> module. A family whose module is not there (written elsewhere, not merged yet) is
# reported as missing, not silently skipped.
FAMILIES = {"readers": "fuzz_readers", "webhooks": "fuzz_webhooks"}
# Outcomes that are findings: a crash, rows lost, a message of several lines; a family's module may
# name more (FAILURES: the webhooks' 5xx, timeouts, stalls).
FAILURES = {"crash", "unaccounted", "bad message"}
# Columns shown even when empty, so that a table says "0 crashes" instead of leaving them out.
SHOWN = ["clean", "rejects", "exit 3", "crash", "unaccounted", "bad message"]


def load(name: str):
    try:
        return importlib.import_module(FAMILIES[name])
    except ModuleNotFoundError as exc:
        if exc.name != FAMILIES[name]:
            raise
        return None


def table(rows: list[dict]) -> str:
    """Counts by family (rows) and outcome (columns), with totals."""
    seen = {r["outcome"] for r in rows}
    outcomes = [o for o in SHOWN if o in seen or o in FAILURES] + sorted(seen - set(SHOWN))
    families = sorted({r["family"] for r in rows})
    count = {(r["family"], r["outcome"]): r["count"] for r in rows}
    width = max([len("family"), len("total"), *map(len, families)])
    cols = [max(len(o), 6) for o in outcomes]
    lines = [" | ".join(["family".ljust(width), *(o.rjust(w) for o, w in zip(outcomes, cols)), "total"])]
    lines.append("-" * len(lines[0]))
    for family in [*families, "total"]:
        cells = [sum(count.get((f, o), 0) for f in families) if family == "total" else count.get((family, o), 0)
                 for o in outcomes]
        lines.append(" | ".join([family.ljust(width), *(str(c).rjust(w) for c, w in zip(cells, cols)),
                                 str(sum(cells)).rjust(5)]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=[*FAMILIES, "all"], default="all")
    parser.add_argument("--n", type=int, default=1000, help="inputs per family member (per format for readers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    names = list(FAMILIES) if args.family == "all" else [args.family]
    rows, seconds, missing, failing = [], {}, [], set(FAILURES)
    for name in names:
        module = load(name)
        if module is None:
            missing.append(name)
            print(f"family {name}: benchmarks/{FAMILIES[name]}.py is not there; not run", file=sys.stderr)
            continue
        start = time.perf_counter()
        rows += module.run(args.n, args.seed)
        failing |= set(getattr(module, "FAILURES", ()))
        seconds[name] = round(time.perf_counter() - start, 1)
    print(table(rows))
    failures = [r for r in rows if r["outcome"] in failing and r["count"]]
    for r in failures:
        for example in r.get("examples", []):
            print(f"{r['family']} {r['outcome']}: {example}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d-%H%M%S")
    path = args.out / f"fuzz-{'-'.join(names)}-{stamp}.json"
    path.write_text(json.dumps({"command": " ".join(["python", "benchmarks/fuzz.py", *sys.argv[1:]]),
                                "n": args.n, "seed": args.seed, "families": names, "missing": missing,
                                "seconds": seconds, "failures": sum(r["count"] for r in failures),
                                "rows": rows}, indent=1))
    print(f"{sum(r['count'] for r in rows)} inputs in {sum(seconds.values()):.0f} s, "
          f"{sum(r['count'] for r in failures)} failures; results: {path}")
    return 1 if failures or missing else 0


if __name__ == "__main__":
    sys.exit(main())
