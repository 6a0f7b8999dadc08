"""The GPU check: one prepared run on a lent GPU machine that reports whatever it reaches.

    device: bash benchmarks/gpu_check.sh            # installs the carried wheels, then runs this
    here:   python benchmarks/gpu_check.py --dry-run  # the same stages on the CPU (CUDA simulator)

Four stages run one after another, each in a process of its own with its own time budget, so that
a crash, a hang or an error in one still leaves the others' numbers:

- probe: versions, the device, a trivial numba-cuda kernel, CuPy's int64 scatter_min;
- equal: every GPU kernel against its CPU build at scale (string similarities, hashing, MinHash,
  candidate pairs, connected components against scipy);
- speed: kernel throughput timed with CUDA events (median of 5), the CPU kernels on all cores;
- e2e: a generated person file resolved on the cpu and the gpu backend, outputs compared.

Every result is appended to OUT/gpu_check.jsonl the moment it exists; the table printed last shows
every row, the failed ones with their error. Sizes follow the free device memory. A dry run (no
GPU: NUMBA_ENABLE_CUDASIM=1 runs the CUDA builds in numba's simulator on numpy arrays) uses tiny
sizes and is what CI runs (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import types
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# stage -> the seconds it may take (the whole check: 6.5 minutes)
STAGES = {
    "probe": 45,
    "equal": 100,
    "speed": 90,
    "e2e": 110,
    "dask": 45,
}
SIZES = {
    "gpu": {"pairs": 20_000_000, "hash_values": 5_000_000, "sessions": 2_000_000, "keys": 4_000_000,
            "edges": 1_000_000_000, "equal_edges": 20_000_000, "cpu_pairs": 20_000_000, "cpu_edges": 20_000_000,
            "people": 1_000_000, "dask_people": 100_000},
    "dry": {"pairs": 300, "hash_values": 300, "sessions": 30, "keys": 3_000, "edges": 200_000,
            "equal_edges": 50_000, "cpu_pairs": 200_000, "cpu_edges": 200_000, "people": 600, "dask_people": 300},
}
COMPONENT_BYTES_PER_EDGE = 45  # int32 ids: edges, their roots and masks per round (85 with int64, traced)


class Recorder:
    """Rows of one stage, each appended to the JSONL file as soon as it exists."""

    def __init__(self, path: Path, stage: str):
        self.path, self.stage = path, stage

    def emit(self, check: str, status: str, value=None, unit: str = "", detail: str = "", seconds: float = 0.0):
        row = {"stage": self.stage, "check": check, "status": status, "value": value, "unit": unit,
               "detail": detail, "seconds": round(seconds, 3)}
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        print(json.dumps(row, default=str), flush=True)

    @contextmanager
    def check(self, name: str):
        """Time one check; an exception becomes an "error" row with its last line, and the stage goes on."""
        start = time.perf_counter()
        result: dict = {}
        try:
            yield result
        except Exception as exc:  # every failure is a row, never the end of the check
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            self.emit(name, "error", detail=last[:300], seconds=time.perf_counter() - start)
            return
        self.emit(name, result.get("status", "ok"), result.get("value"), result.get("unit", ""),
                  result.get("detail", ""), time.perf_counter() - start)


# ------------------------------------------------------------------------------------- devices


def _cupy():
    """CuPy when it sees a device, else None."""
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:
        return None


def _target(cp) -> str | None:
    """The numba target the GPU side uses: "cuda" on a GPU or under the simulator, else None."""
    from numba import config, cuda

    return "cuda" if (cp is not None or config.ENABLE_CUDASIM) and cuda.is_available() else None


def _free_bytes(cp) -> int:
    return int(cp.cuda.runtime.memGetInfo()[0]) if cp is not None else 0


def _sync(cp) -> None:
    if cp is not None:
        cp.cuda.Device().synchronize()


def _median_seconds(fn, cp, repeat: int = 5) -> float:
    """Median of `repeat` timed calls after a warm-up: CUDA events on a GPU, wall time elsewhere."""
    fn()
    _sync(cp)
    times = []
    for _ in range(repeat):
        if cp is not None:
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, stop) / 1000)
        else:
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def _names(n: int, seed: int) -> list[str]:
    sys.path.insert(0, str(HERE))
    from bench_gpu import _names as names

    return names(n, seed)


# --------------------------------------------------------------------------------------- stages


def _add_one(x, out):
    i = cuda.grid(1)  # noqa: F821  (bound when compiled, see stage_probe)
    if i < x.shape[0]:
        out[i] = x[i] + 1


def stage_probe(rec: Recorder, sizes: dict, cp) -> None:
    import numba
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    with rec.check("versions") as r:
        r["detail"] = (f"python {sys.version.split()[0]}, numpy {np.__version__}, pandas {pd.__version__}, "
                       f"pyarrow {pa.__version__}, numba {numba.__version__}, numba-cuda {version('numba-cuda')}, "
                       f"cupy {version('cupy-cuda13x') if version('cupy-cuda13x') != '-' else version('cupy-cuda12x')}, "
                       f"dask {version('dask')}, dask-cuda {version('dask-cuda')}")
    with rec.check("device") as r:
        if cp is None:
            r.update(status="skipped", detail="no CUDA device visible to CuPy")
        else:
            props = cp.cuda.runtime.getDeviceProperties(0)
            free, total = cp.cuda.runtime.memGetInfo()
            r.update(value=round(total / 2**30, 1), unit="GiB",
                     detail=f"{props['name'].decode()}, {free / 2**30:.1f} GiB free, "
                            f"driver {cp.cuda.runtime.driverGetVersion()}, runtime {cp.cuda.runtime.runtimeGetVersion()}")
    with rec.check("numba-cuda trivial kernel") as r:
        from numba import cuda

        if _target(cp) is None:
            r.update(status="skipped", detail="numba sees no GPU (and the simulator is off)")
        else:
            import resolver.kernels  # noqa: F401  (numpy 2.5's missing np.row_stack, aliased first)

            # `cuda` as a global name of the kernel, which the simulator swaps for its own
            add_one = cuda.jit(types.FunctionType(_add_one.__code__, {"cuda": cuda}, "_add_one"))
            x = np.arange(4096, dtype=np.int64)
            out = cuda.device_array_like(x)
            add_one[16, 256](cuda.to_device(x), out)
            ok = bool((out.copy_to_host() == x + 1).all())
            r.update(status="ok" if ok else "failed", detail="simulated" if cp is None else "")
    with rec.check("cupy int64 scatter_min") as r:
        if cp is None:
            r.update(status="skipped", detail="no CuPy device")
        else:
            import cupyx

            rng = np.random.default_rng(1)
            target = rng.integers(0, 2**40, 1000)
            index, values = rng.integers(0, 1000, 100_000), rng.integers(0, 2**40, 100_000)
            expected = target.copy()
            np.minimum.at(expected, index, values)
            got = cp.asarray(target)
            cupyx.scatter_min(got, cp.asarray(index), cp.asarray(values))
            r["status"] = "ok" if bool((cp.asnumpy(got) == expected).all()) else "failed"
    with rec.check("backend gpu") as r:
        from resolver.compute.backend import BackendUnavailable, select_backend

        try:
            r["detail"] = str(select_backend("gpu").describe())
        except BackendUnavailable as exc:
            r.update(status="skipped", detail=str(exc))


def stage_equal(rec: Recorder, sizes: dict, cp) -> None:
    import numpy as np
    import pyarrow as pa

    from resolver.kernels import strings

    target = _target(cp)
    xp = cp if cp is not None else np
    if target is None:
        rec.emit("all", "skipped", detail="no GPU and no CUDA simulator")
        return
    n = sizes["pairs"]
    enc = strings.encode(_names(50_000 if cp is not None else 200, seed=1))
    rng = np.random.default_rng(2)
    left, right = rng.integers(0, len(enc), n), rng.integers(0, len(enc), n)
    device = enc if cp is None else strings.Encoded(cp.asarray(enc.offsets), cp.asarray(enc.codes), cp.asarray(enc.valid))
    d_left, d_right = xp.asarray(left), xp.asarray(right)
    methods = {"jaro": strings.jaro, "jaro_winkler": strings.jaro_winkler,
               "levenshtein": strings.levenshtein_similarity, "jaccard_ngrams": strings.jaccard_ngrams,
               "jaccard_tokens": strings.jaccard_tokens}
    for name, fn in methods.items():
        with rec.check(f"{name} == cpu ({n:,} pairs)") as r:
            cpu = fn(enc, left, right, target="cpu")
            gpu = fn(device, d_left, d_right, target=target)
            gpu = cp.asnumpy(gpu) if cp is not None else np.asarray(gpu)
            differ = int((~((cpu == gpu) | (np.isnan(cpu) & np.isnan(gpu)))).sum())
            r.update(status="ok" if differ == 0 else "failed", value=differ, unit="pairs differ")
    with rec.check(f"jaro_winkler levels (cut in the kernel) == cpu ({n:,} pairs)") as r:
        cuts = [0.95, 0.88, 0.7]
        cpu = strings.similarity_levels("jaro_winkler", enc, left, right, cuts, 2, 5, 0.1)
        gpu = strings.similarity_levels("jaro_winkler", device, d_left, d_right, cuts, 2, 5, 0.1, target=target)
        gpu = cp.asnumpy(gpu) if cp is not None else np.asarray(gpu)
        differ = int((cpu != gpu).sum())
        r.update(status="ok" if differ == 0 else "failed", value=differ, unit="pairs differ")
    with rec.check(f"hash_strings == cpu ({sizes['hash_values']:,} values)") as r:
        from resolver.kernels.hashing import hash_strings

        values = pa.array(_names(sizes["hash_values"], seed=3), pa.large_string())
        cpu = hash_strings(values, prefix=b"email:")
        gpu = hash_strings(values, prefix=b"email:", target=target, xp=xp)
        gpu = cp.asnumpy(gpu) if cp is not None else np.asarray(gpu)
        differ = int((cpu != gpu).sum())
        r.update(status="ok" if differ == 0 else "failed", value=differ, unit="values differ")
    with rec.check(f"minhash == cpu ({sizes['sessions']:,} sessions)") as r:
        from resolver.kernels.minhash import signatures

        events = sizes["sessions"] * 8
        page_hash = rng.integers(0, 2**63, events, dtype=np.uint64) * np.uint64(2)
        offsets = np.arange(0, events + 1, 8, dtype=np.int64)
        cpu = signatures(page_hash, offsets, 32)
        gpu = signatures(xp.asarray(page_hash), xp.asarray(offsets), 32, target=target, xp=xp)
        gpu = cp.asnumpy(gpu) if cp is not None else np.asarray(gpu)
        r["status"] = "ok" if np.array_equal(cpu, gpu) else "failed"
    with rec.check(f"candidate pairs == cpu ({sizes['keys']:,} keyed records)") as r:
        from resolver.matching.blocking import rule_pairs_of, rule_pairs_xp

        keys = rng.integers(1, max(2, sizes["keys"] // 4), (2, sizes["keys"]), dtype=np.uint64)
        labels = np.arange(sizes["keys"], dtype=np.int64)
        expected = rule_pairs_of(keys, 1, labels)
        got = rule_pairs_xp(xp, xp.asarray(keys), 1, xp.asarray(labels))
        got = [cp.asnumpy(g) if cp is not None else np.asarray(g) for g in got[:2]]
        same = np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
        r.update(status="ok" if same else "failed", value=len(expected[0]), unit="pairs")
    with rec.check(f"components == scipy ({sizes['equal_edges']:,} edges)") as r:
        from resolver.compute.cluster import connected_components as scipy_components
        from resolver.compute.components import connected_components

        e = sizes["equal_edges"]
        src, dst = rng.integers(0, e, e), rng.integers(0, e, e)
        expected = scipy_components(e, src, dst)
        got = connected_components(e, xp.asarray(src), xp.asarray(dst), xp)
        got = cp.asnumpy(got) if cp is not None else np.asarray(got)
        r["status"] = "ok" if np.array_equal(got, expected) else "failed"


def stage_speed(rec: Recorder, sizes: dict, cp) -> None:
    import numpy as np

    from resolver.kernels import strings

    enc = strings.encode(_names(100_000, seed=1))
    rng = np.random.default_rng(2)
    cores = os.cpu_count() or 1
    for name, fn in (("jaro_winkler", strings.jaro_winkler), ("levenshtein", strings.levenshtein_similarity)):
        with rec.check(f"{name} cpu, {cores} cores") as r:
            n = sizes["cpu_pairs"]
            left, right = rng.integers(0, len(enc), n), rng.integers(0, len(enc), n)
            seconds = _median_seconds(lambda: fn(enc, left, right, target="cpu"), None, repeat=3)
            r.update(value=f"{n / seconds:.3g}", unit="pairs/s")
        with rec.check(f"{name} gpu") as r:
            if cp is None:
                r.update(status="skipped", detail="no GPU (the simulator is not timed)")
                continue
            n = sizes["pairs"] * 10
            device = strings.Encoded(cp.asarray(enc.offsets), cp.asarray(enc.codes), cp.asarray(enc.valid))
            left, right = cp.random.randint(0, len(enc), n), cp.random.randint(0, len(enc), n)
            seconds = _median_seconds(lambda: fn(device, left, right, target="cuda"), cp)
            r.update(value=f"{n / seconds:.3g}", unit="pairs/s", detail="random pairs, float similarities")
        if cp is not None:
            with rec.check(f"{name} gpu, levels, pairs sorted by left") as r:
                left = cp.sort(left)  # candidate order: a warp's pairs share their left record
                seconds = _median_seconds(lambda: strings.similarity_levels(
                    name, device, left, right, [0.9, 0.7], 2, 4, 0.1 if name == "jaro_winkler" else 0.0,
                    target="cuda"), cp)
                r.update(value=f"{n / seconds:.3g}", unit="pairs/s", detail="int8 levels out of the kernel")
    with rec.check("components cpu (scipy)") as r:
        from resolver.compute.cluster import connected_components as scipy_components

        e = sizes["cpu_edges"]
        src, dst = rng.integers(0, e // 2, e), rng.integers(0, e // 2, e)
        seconds = _median_seconds(lambda: scipy_components(e // 2, src, dst), None, repeat=3)
        r.update(value=f"{e / seconds:.3g}", unit="edges/s", detail=f"{e:,} edges")
    with rec.check("components gpu") as r:
        if cp is None:
            r.update(status="skipped", detail="no GPU")
        else:
            from resolver.compute.components import connected_components

            e = int(min(sizes["edges"], 0.8 * _free_bytes(cp) / COMPONENT_BYTES_PER_EDGE))
            src = cp.random.randint(0, e // 2, e, dtype=cp.int32)
            dst = cp.random.randint(0, e // 2, e, dtype=cp.int32)
            seconds = _median_seconds(lambda: connected_components(e // 2, src, dst, cp), cp, repeat=3)
            r.update(value=round(seconds, 2), unit="s", detail=f"{e:,} edges ({e / seconds:.3g} edges/s)")


def stage_e2e(rec: Recorder, sizes: dict, cp) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from _backend_equivalence import same_frame

    people = sizes["people"]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        _resolve_both(rec, people, Path(tmp), cp, same_frame)


def _resolve_both(rec: Recorder, people: int, folder: Path, cp, same_frame) -> None:
    from resolver.compute.backend import CPU, BackendUnavailable, select_backend, simulated_gpu
    from resolver.config import load_config
    from resolver.pipeline import run
    from resolver.synth.people import generate

    with rec.check(f"generate {people:,} people") as r:
        generate(folder, people, seed=1, workers=os.cpu_count() or 2, events=False)
        r["detail"] = str(folder)
    results = {}
    try:
        gpu_backend = select_backend("gpu") if cp is not None else simulated_gpu()
    except BackendUnavailable as exc:
        rec.emit("gpu backend", "skipped", detail=str(exc))
        gpu_backend = None
    for name, backend in (("cpu", CPU), ("gpu", gpu_backend)):
        if backend is None:
            continue
        with rec.check(f"resolve on {name}" + (" (simulated)" if name == "gpu" and cp is None else "")) as r:
            config = load_config(folder / "resolver.yaml")
            config.run.workers = os.cpu_count() or 2
            if cp is None and config.matching is not None:  # simulated: u from 1,000 random pairs, not 2M
                config.matching.model.u_sample_pairs = 1000
                config.matching.model.allow_unhealthy = True
            start = time.perf_counter()
            results[name] = run(config, write=False, backend=backend)
            r.update(value=round(time.perf_counter() - start, 2), unit="s",
                     detail=f"{len(results[name].identity_map):,} records, "
                            f"{(results[name].matching or {}).get('candidate_pairs', 0):,} pairs")
    if len(results) == 2:
        cpu, gpu = results["cpu"], results["gpu"]
        _compare_outputs(rec, "gpu outputs == cpu outputs", cpu, gpu, same_frame)


def _compare_outputs(rec: Recorder, check: str, cpu, gpu, same_frame) -> None:
    """One row: whether two runs gave the same partition, persons and scored pairs."""
    with rec.check(check) as r:
        checks = {"partition": bool(cpu.identity_map["person_id"].equals(gpu.identity_map["person_id"])),
                  "persons": same_frame(cpu.persons, gpu.persons)}
        if cpu.matching is not None:
            checks["scored pairs"] = same_frame(cpu.scored_pairs, gpu.scored_pairs)
        differ = [k for k, same in checks.items() if not same]
        r.update(status="failed" if differ else "ok", detail=", ".join(differ) or "partition, persons, scored pairs")


def stage_dask(rec: Recorder, sizes: dict, cp) -> None:
    """The mission's shape on one machine: the gpu backend on the dask engine (dask-cuda's
    LocalCUDACluster, one worker on the one GPU; simulated: a 2-worker CPU LocalCluster), whose
    workers make, compare and count their pair buckets and hold the components' edges on their
    GPU; its outputs against the local cpu run's."""
    sys.path.insert(0, str(ROOT / "tests"))
    from _backend_equivalence import same_frame

    from resolver.compute.backend import CPU, select_backend, simulated_gpu
    from resolver.config import load_config
    from resolver.pipeline import run
    from resolver.synth.people import generate

    with tempfile.TemporaryDirectory(prefix="gpu-check-dask-") as tmp:
        folder = Path(tmp)
        generate(folder, sizes["dask_people"], seed=2, workers=os.cpu_count() or 2, events=False)
        config = load_config(folder / "resolver.yaml")
        if cp is None and config.matching is not None:
            config.matching.model.u_sample_pairs = 1000
            config.matching.model.allow_unhealthy = True
        cpu = run(config, write=False, backend=CPU)
        config.engine.name, config.engine.workers = "dask", 1 if cp is not None else 2
        with rec.check(f"dask engine, gpu backend ({sizes['dask_people']:,} people)") as r:
            start = time.perf_counter()
            gpu = run(config, write=False, backend=select_backend("gpu") if cp is not None else simulated_gpu())
            engine, matching = gpu.summary["engine"], gpu.matching or {}
            r.update(value=round(time.perf_counter() - start, 2), unit="s",
                     detail=f"{engine.get('cluster')} x {engine.get('workers')}, components "
                            f"{gpu.summary['backend'].get('components')}, pairs compared on "
                            f"{(matching.get('buckets') or matching.get('streamed') or {}).get('compared_on')}")
        _compare_outputs(rec, "dask gpu outputs == local cpu outputs", cpu, gpu, same_frame)


STAGE_FUNCTIONS = {"probe": stage_probe, "equal": stage_equal, "speed": stage_speed, "e2e": stage_e2e,
                   "dask": stage_dask}


# --------------------------------------------------------------------------------------- driver


def run_stage(stage: str, jsonl: Path, dry: bool) -> None:
    """One stage, in this process (the driver starts one process per stage)."""
    cp = None if dry else _cupy()
    STAGE_FUNCTIONS[stage](Recorder(jsonl, stage), SIZES["dry" if dry or cp is None else "gpu"], cp)


def drive(stages: list[str], jsonl: Path, dry: bool, budget: float) -> list[dict]:
    """Every stage in a process of its own; one that crashes or runs past its time leaves a row
    saying so, and the next one starts. Stages that would pass the whole budget are skipped."""
    started = time.perf_counter()
    for stage in stages:
        left = budget - (time.perf_counter() - started)
        limit = min(STAGES[stage], left)
        if limit < 10:
            Recorder(jsonl, stage).emit("(stage)", "skipped", detail=f"{left:.0f} s of the budget left")
            continue
        command = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--jsonl", str(jsonl)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        if dry:
            command.append("--dry-run")
            env["NUMBA_ENABLE_CUDASIM"] = "1"
        begin = time.perf_counter()
        try:
            proc = subprocess.run(command, env=env, timeout=limit, capture_output=True, text=True)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                Recorder(jsonl, stage).emit("(stage)", "crashed", value=proc.returncode, unit="exit code",
                                            detail=last[:300], seconds=time.perf_counter() - begin)
        except subprocess.TimeoutExpired:
            Recorder(jsonl, stage).emit("(stage)", "timeout", detail=f"stopped after {limit:.0f} s",
                                        seconds=time.perf_counter() - begin)
    return [json.loads(line) for line in open(jsonl)] if jsonl.exists() else []


def table(rows: list[dict]) -> str:
    lines = ["| stage | check | status | value | detail | s |", "|---|---|---|---|---|---|"]
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']} {r['unit']}".strip()
        lines.append(f"| {r['stage']} | {r['check']} | {r['status']} | {value} | {r['detail']} | {r['seconds']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="no GPU: tiny sizes, CUDA kernels in numba's simulator")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated, in order (default: all)")
    parser.add_argument("--budget", type=float, default=390, help="seconds for the whole check (default 390)")
    parser.add_argument("--out", default=os.environ.get("OUT", tempfile.gettempdir()), help="folder for gpu_check.jsonl")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--jsonl", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        run_stage(args.stage, Path(args.jsonl), args.dry_run)
        return
    jsonl = Path(args.out) / "gpu_check.jsonl"
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    jsonl.unlink(missing_ok=True)
    rows = drive([s.strip() for s in args.stages.split(",") if s.strip()], jsonl, args.dry_run, args.budget)
    print(table(rows))
    bad = [r for r in rows if r["status"] in ("failed", "error", "crashed", "timeout")]
    print(f"\n{len(rows)} rows, {len(bad)} failed; rows in {jsonl}")


if __name__ == "__main__":
    main()
