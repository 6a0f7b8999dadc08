#!/usr/bin/env bash
# One prepared GPU check for a lent H200 (CuPy and numba-cuda installed there, no network), in
# under 8 minutes: the GPU test subset, then the benchmark; one table last.
#
#   here:   bash benchmarks/gpu_wheels.sh          # the missing pure-Python deps, into .whl/
#   device: bash benchmarks/gpu_check.sh           # (carry .whl); numbers also in $OUT/bench_gpu.json
#
# Without a GPU it is a dry run: the GPU tests skip and the benchmark measures the CPU side only
# (pass small sizes: --cpu-pairs 2000000 --cpu-edges 2000000 --cpu-sessions 200000 --e2e-sizes 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
# The wheels are for the device's CPython 3.12; elsewhere (a dry run) the local packages serve.
if ls .whl/*.whl >/dev/null 2>&1 && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp}
python3 - <<'PY'
import numba, numpy, pandas, pyarrow
from resolver.compute.backend import select_backend
from resolver.kernels.strings import available_targets
print("numpy", numpy.__version__, "pandas", pandas.__version__, "pyarrow", pyarrow.__version__, "numba", numba.__version__)
print("numba targets:", available_targets(), "| backend auto:", select_backend("auto").describe())
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
# GPU tests: the real-GPU subset, and the kernels' own tests (their simulator checks included).
timeout 300 python3 -m pytest -q -p no:cacheprovider -x tests/test_gpu.py tests/test_string_kernels.py \
  tests/test_minhash_kernels.py tests/test_backend_components.py 2>&1 | tee "$out/gpu_tests.log" | tail -25
left=$(( 470 - (SECONDS - started) ))
echo "tests took $((SECONDS - started)) s; benchmark gets ${left} s"
timeout "$left" python3 benchmarks/bench_gpu.py --json "$out/bench_gpu.json" --deadline $(( left - 20 )) "$@"
