#!/usr/bin/env bash
# One prepared GPU check for a lent H200 (CuPy and numba-cuda installed there, no network).
# Pure-Python dependencies travel as wheels in .whl/ (see the device README); run from the repo root:
#   bash benchmarks/gpu_check.sh            # GPU tests, then the kernel benchmark; a table last
# On a machine without a GPU it runs the simulator tests and the CPU half of the benchmark (dry run).
set -euo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
python3 - <<'PY'
from resolver.kernels.strings import available_targets
print("targets:", available_targets())
PY
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_string_kernels.py tests/test_backend_components.py
timeout 300 python3 benchmarks/bench_gpu.py "$@"
