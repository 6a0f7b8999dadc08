"""Where a `resolver run` spends its time: cProfile over one run, per-function totals, and the stage log.

    .venv/bin/python benchmarks/profile_run.py --config path/to/resolver.yaml
    .venv/bin/python benchmarks/profile_run.py --config resolver.yaml --top 40 --sort tottime --out /tmp/run.prof

The run happens in this process (jobs a worker pool would take run here too when the config has one
source file; with more, the workers' time shows as waiting), outputs written as usual. Prints the
stage log (seconds per stage), then the `--top` functions by `--sort` (cumulative or tottime).
The raw profile goes to `--out` (default profile_run.prof next to the config's output folder) for
snakeviz / pstats. cProfile adds overhead to Python-level calls, not to numba, numpy or Arrow
kernels: shares are what to read, not absolute seconds.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--sort", default="cumulative", choices=["cumulative", "tottime"])
    parser.add_argument("--out", help="where to write the raw profile")
    parser.add_argument("--filter", default="", help="only functions whose file:name contains this")
    args = parser.parse_args()

    from resolver.config import load_config
    from resolver.pipeline import run

    config = load_config(args.config)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    result = run(config)
    profile.disable()
    wall = time.perf_counter() - start
    for stage in result.summary["stages"]:
        print(f"{stage['stage']:<40} {stage['seconds']:>8.2f} s")
    print(f"{'run (profiled)':<40} {wall:>8.2f} s")
    out = Path(args.out) if args.out else Path(config.run.output_dir).parent / "profile_run.prof"
    profile.dump_stats(str(out))
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text).sort_stats(args.sort)
    stats.print_stats(args.filter, args.top) if args.filter else stats.print_stats(args.top)
    print(text.getvalue())
    print(f"profile: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
