"""The layout holds: import-linter's contracts in pyproject.toml (no import cycles between the
modules of a package or between packages; the layers cli > entry points > pipeline > stages >
shared leaves > compute > kernels). A new cycle or an import against the layers fails here, and so
in CI."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    done = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
         "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_the_architecture_figures_show_no_cycle():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from architecture import figures
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    found = figures()
    assert found["cycles"] == [], found["cycles"]
