"""Noised pseudopeople datasets for benchmarks/quality.py; runs inside benchmarks/.venv-pseudopeople.

    benchmarks/.venv-pseudopeople/bin/python benchmarks/quality_pseudopeople.py --noise x5 --seed 1 --out DIR

Generates, from pseudopeople 1.3.1's bundled sample data (the fictional "Anytown, WA" population,
all years: ``year=None``), the American Community Survey, the Current Population Survey, Women,
Infants and Children and the 1040 tax filings, with pseudopeople's own ``generate_*`` functions and
a fixed seed, and writes each one as pseudopeople returns it (its own column names, nulls as nulls;
pandas categoricals written as plain strings, values unchanged) to DIR/<dataset>.parquet, plus
DIR/config.json: the exact pseudopeople configuration used for each dataset.

Noise levels:

- ``default``: pseudopeople's default configuration (every column noise type's cell_probability is
  0.01 or 0.0 in 1.3.1; row noise as shipped).
- ``x5``: every column noise type's ``cell_probability`` of every column of the dataset is 5 times
  its default, capped at 0.5 (no default reaches the cap: 0.01 -> 0.05, 0.0 stays 0.0); the
  per-character ``token_probability`` of typos/OCR/phonetic errors, the other noise parameters
  and row noise (omit_row, do_not_respond) stay at their defaults. So a column with six noise
  types (first_name: blank, nickname, fake name, phonetic, OCR, typo) is noised in about 26% of
  cells instead of about 6%.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import pandas as pd
import pseudopeople as psp

DATASETS = {  # file stem -> (pseudopeople dataset name, generator)
    "acs": ("american_community_survey", psp.generate_american_community_survey),
    "cps": ("current_population_survey", psp.generate_current_population_survey),
    "wic": ("women_infants_and_children", psp.generate_women_infants_and_children),
    "taxes_1040": ("taxes_1040", psp.generate_taxes_1040),
}
X5_FACTOR = 5.0
X5_CAP = 0.5


def noise_config(dataset: str, noise: str) -> dict:
    """The pseudopeople config (one dataset) for a noise level: see the module docstring."""
    default = psp.get_config()[dataset]
    if noise == "default":
        return {dataset: default}
    if noise != "x5":
        raise ValueError(f"unknown noise level {noise!r}")
    config = copy.deepcopy(default)
    for noise_types in config.get("column_noise", {}).values():
        for params in noise_types.values():
            if "cell_probability" in params:
                params["cell_probability"] = min(X5_CAP, params["cell_probability"] * X5_FACTOR)
    return {dataset: config}


def plain(df: pd.DataFrame) -> pd.DataFrame:
    """Categoricals as plain strings (values unchanged, nulls kept)."""
    out = df.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--noise", choices=["default", "x5"], required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    used = {}
    for stem in [d for d in args.datasets.split(",") if d]:
        name, generate = DATASETS[stem]
        config = noise_config(name, args.noise)
        start = time.perf_counter()
        df = plain(generate(seed=args.seed, config=config, year=None))
        df.to_parquet(args.out / f"{stem}.parquet", index=False)
        used[stem] = {"dataset": name, "generator": generate.__name__, "seed": args.seed, "year": None,
                      "rows": len(df), "columns": list(df.columns), "config": config,
                      "seconds": round(time.perf_counter() - start, 2)}
        print(f"[quality_pseudopeople] {stem} ({args.noise}): {len(df):,} rows in {used[stem]['seconds']} s",
              file=sys.stderr, flush=True)
    info = {"pseudopeople": psp.__version__, "noise": args.noise, "x5": {"factor": X5_FACTOR, "cap": X5_CAP},
            "datasets": used}
    (args.out / "config.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
