"""Running a benchmarked tool in its own process, and the tools' own virtualenvs.

Shared by benchmarks/compare_splink.py and benchmarks/quality.py:

- ``measure(cmd, ...)``: runs one command alone (its own process group), sampling the RSS of its
  whole process tree every 0.1 s; kills it on a timeout, a memory cap, a nearly full disk (DuckDB
  spills there) or when the machine is about to run out of memory; returns a ``RunResult`` with the
  status, wall time and peak RSS (the highest sampled tree sum, or the kernel's max RSS of the
  largest single process if higher).
- ``venv_python(folder, requirements, check)``: a virtualenv created on first use with
  ``python3 -m venv`` + ``pip install``; reused while ``check`` (a Python snippet) passes.
  ``splink_python()`` (benchmarks/.venv-splink, splink==5.0.0) and ``pseudopeople_python()``
  (benchmarks/.venv-pseudopeople, pseudopeople==1.3.1) are the two the benchmarks use; neither
  tool is ever imported into the resolver environment. ``BENCH_PIP_FIND_LINKS`` (a folder of
  wheels) is passed to pip as ``--find-links`` when set.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

HERE = Path(__file__).resolve().parent
SPLINK_VENV = HERE / ".venv-splink"
SPLINK_REQUIREMENTS = ["splink==5.0.0", "psutil", "pyarrow", "pandas"]
SPLINK_CHECK = "import splink, duckdb, psutil, pyarrow, pandas; assert splink.__version__ == '5.0.0'"
PSEUDOPEOPLE_VENV = HERE / ".venv-pseudopeople"
PSEUDOPEOPLE_REQUIREMENTS = ["pseudopeople==1.3.1", "pyarrow"]
PSEUDOPEOPLE_CHECK = "import pseudopeople, pyarrow; assert pseudopeople.__version__ == '1.3.1'"


def make_logger(name: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return log


_log = make_logger("bench")


@dataclass
class RunResult:
    status: str = "not run"          # ok | timeout | oom | disk full | failed (rc=N) | killed (signal N)
    returncode: int | None = None
    wall_s: float | None = None
    peak_rss_bytes: int | None = None
    tree_rss_bytes: int | None = None  # highest sampled sum over the process tree
    max_single_rss_bytes: int | None = None  # kernel ru_maxrss of the largest single process
    log: str | None = None
    extra: dict = field(default_factory=dict)


def _tree_rss(root: psutil.Process) -> int:
    total = 0
    try:
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(cmd: list[str], cwd: Path, log_path: Path, timeout: float, max_rss: int, min_free_disk: int = 0,
            log: Callable[[str], None] = _log) -> RunResult:
    """Run cmd alone, sampling the RSS of its process tree every 0.1 s; kill it on timeout, memory cap
    or when the disk under cwd gets below min_free_disk bytes (DuckDB spills there)."""
    result = RunResult(log=str(log_path))
    log(f"running: {' '.join(cmd)}")
    with open(log_path, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:  # already gone; wait4 below still reaps it
            root = None
        peak, killed_for = 0, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _tree_rss(root) if root is not None else 0)
            elapsed = time.perf_counter() - start
            low_memory = psutil.virtual_memory().available < 512 * 2**20
            low_disk = shutil.disk_usage(cwd).free < min_free_disk
            if killed_for is None and (elapsed > timeout or peak > max_rss or low_memory or low_disk):
                killed_for = "timeout" if elapsed > timeout else "disk full" if low_disk else "oom"
                log(f"killing {proc.pid} ({killed_for}: {elapsed:.0f} s, {peak / 2**30:.1f} GiB tree RSS)")
                os.killpg(proc.pid, signal.SIGKILL)  # the tool's own process group (start_new_session)
            time.sleep(0.1)
        result.wall_s = round(time.perf_counter() - start, 3)
    proc.returncode = os.waitstatus_to_exitcode(status)
    result.returncode = proc.returncode
    result.tree_rss_bytes = peak
    result.max_single_rss_bytes = usage.ru_maxrss * 1024
    result.peak_rss_bytes = max(peak, result.max_single_rss_bytes)
    tail = log_path.read_text(errors="replace")[-20_000:]
    if killed_for:
        result.status = killed_for
    elif proc.returncode == 0:
        result.status = "ok"
    elif "out of memory" in tail.lower() or "memoryerror" in tail.lower() or proc.returncode in (-9, 137):
        result.status = "oom"  # SIGKILL from outside is most likely the kernel's OOM killer
    elif proc.returncode < 0:
        result.status = f"killed (signal {-proc.returncode})"
    else:
        result.status = f"failed (rc={proc.returncode})"
    log(f"{result.status}: {result.wall_s:.1f} s, peak RSS {result.peak_rss_bytes / 2**30:.2f} GiB")
    return result


def last_line(path: Path | str | None, limit: int = 300) -> str | None:
    """The last non-empty line of a log file (what a failed run said last), shortened."""
    if not path or not Path(path).exists():
        return None
    for line in reversed(Path(path).read_text(errors="replace").splitlines()):
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return None


def venv_python(folder: Path, requirements: list[str], check: str, log: Callable[[str], None] = _log) -> Path:
    """folder/bin/python with `requirements` installed, created on first use (reused while `check` runs)."""
    python = folder / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0:
        return python
    base = shutil.which("python3") or sys.executable
    log(f"creating {folder} with {base} and installing {' '.join(requirements)}")
    subprocess.run([base, "-m", "venv", str(folder)], check=True)
    extra = ["--find-links", os.environ["BENCH_PIP_FIND_LINKS"]] if os.environ.get("BENCH_PIP_FIND_LINKS") else []
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *extra, *requirements], check=True)
    subprocess.run([str(python), "-c", check], check=True)
    return python


def splink_python(log: Callable[[str], None] = _log) -> Path:
    """benchmarks/.venv-splink/bin/python with splink 5.0.0, created on first use."""
    return venv_python(SPLINK_VENV, SPLINK_REQUIREMENTS, SPLINK_CHECK, log)


def pseudopeople_python(log: Callable[[str], None] = _log) -> Path:
    """benchmarks/.venv-pseudopeople/bin/python with pseudopeople 1.3.1, created on first use."""
    return venv_python(PSEUDOPEOPLE_VENV, PSEUDOPEOPLE_REQUIREMENTS, PSEUDOPEOPLE_CHECK, log)
