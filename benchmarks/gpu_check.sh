#!/usr/bin/env bash
# The GPU check on a lent GPU machine (CuPy and numba-cuda installed there, no network): installs
# the carried wheels, then runs benchmarks/gpu_check.py, whose stages (probe, GPU == CPU, speed, end
# to end) each run in their own process with their own time budget and append their rows to
# $OUT/gpu_check.jsonl as they come; the table prints last, failed rows included. About 6.5 minutes.
#
#   here:   bash benchmarks/gpu_wheels.sh          # the missing pure-Python deps, into .whl/
#   device: bash benchmarks/gpu_check.sh           # (carry .whl)
#   here:   python benchmarks/gpu_check.py --dry-run   # the same stages without a GPU
#
# No `set -e`: a failing step must not take the table with it.
cd "$(dirname "$0")/.." || exit 1
# The wheels are for the device's CPython 3.12; elsewhere (a dry run) the local packages serve.
if ls .whl/*.whl >/dev/null 2>&1 && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || echo "wheel install failed; going on with what the machine has"
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
python3 benchmarks/gpu_check.py --out "${OUT:-/tmp}" "$@"
