"""Capacity benchmarking: measured cost curves (`resolver bench`) and a planner that answers "how
long, how many GPUs and how much memory for N events and M profiles" (`resolver capacity`).

`bench` generates data at a ladder of sizes, runs the pipeline on each available backend and
engine (each run its own process, repeated), and records per-stage seconds, throughput, peak
memory (host; GPU where present, sampled from the driver), candidate pairs per record and accuracy
against the generated truth, plus the machine it ran on. Per backend, engine and stage a power law
seconds = a * size^b is fitted in log-log space to the median of the repeats; `capacity` sums the
stages' predictions at the target size, with a prediction interval from the fit, and refuses to
extrapolate further than a stated factor beyond the largest measured size unless told to (and then
says so in its answer).

Stage drivers: ingest scales with input rows (CRM records + events); every other stage with CRM
records (profiles).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from resolver.compute.backend import BackendUnavailable, select_backend
from resolver.config import load_config
from resolver.outputs.evaluate import evaluate_outputs
from resolver.synth.people import generate
from resolver.synth.plain import generate_people

INGEST = "ingest (read + normalize, wall)"
GPU_MEMORY_GIB = {"h200": 141, "h100": 80, "a100": 80, "a100-40gb": 40, "l40s": 48, "l4": 24, "a10": 24}
USABLE_GPU_SHARE = 0.8  # of a GPU's memory, for the RMM pool (the rest: CUDA context, cuDF spill headroom)
MULTI_GPU_EFFICIENCY = 0.7  # parallel efficiency assumed past one GPU (shuffles over NVLink / the network)


class CapacityError(ValueError):
    """A capacity question that the measurements cannot answer (the message says why)."""


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def machine_info() -> dict:
    """What the measurements ran on: CPU model and cores, memory, GPUs, Python and library versions."""
    libraries = {}
    for name in ("resolver", "numpy", "pandas", "pyarrow", "scipy", "numba", "dask", "distributed", "cupy-cuda13x",
                 "cudf-cu13", "cugraph-cu13"):
        try:
            libraries[name] = version(name)
        except PackageNotFoundError:
            continue
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gib": round(memory / 2**30, 1), "gpus": _gpus(),
            "platform": platform.platform(), "python": platform.python_version(), "libraries": libraries}


class GpuMemorySampler:
    """Peak GPU memory in use (MiB, all GPUs summed) while it runs, from nvidia-smi every 0.2 s."""

    def __init__(self):
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                done = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                      capture_output=True, text=True, timeout=5, check=False)
                used = sum(float(x) for x in done.stdout.split()) if done.returncode == 0 else 0.0
                self.peak = max(self.peak, used)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------
def available_backends() -> list[str]:
    found = ["cpu"]
    try:
        select_backend("gpu")
        found.append("gpu")
    except BackendUnavailable:
        pass
    return found


def available_engines() -> list[str]:
    return ["local"] + (["dask"] if importlib.util.find_spec("distributed") is not None else [])


def _dataset(data_dir: Path, people: int, seed: int, shape: str = "crm") -> Path:
    """The generated data of a rung: Salesforce + Segment (crm), or one person file (people)."""
    target = data_dir / (f"people-{people}-seed-{seed}" if shape == "crm" else f"plain-{people}-seed-{seed}")
    if not (target / "manifest.json").exists():
        if shape == "people":
            generate_people(target, people, seed=seed, workers=1)
        else:
            generate(target, people, seed=seed, workers=1)
    return target


def measure_once(data: Path, out: Path, backend: str, engine: str) -> dict:
    """One run in its own process; its stages, throughput, peak memory and accuracy."""
    command = [sys.executable, "-m", "resolver", "run", "--config", str(data / "resolver.yaml"), "--out", str(out),
               "--quiet", "--backend", backend, "--engine", engine]
    sampler = GpuMemorySampler() if backend == "gpu" else None
    start = time.perf_counter()
    if sampler is not None:
        with sampler:
            subprocess.run(command, check=True)
    else:
        subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    summary = json.loads((out / "run_summary.json").read_text())
    config = load_config(data / "resolver.yaml")
    metrics = evaluate_outputs(out, data / "truth", config)
    records = summary["rows"]["resolved"] - summary["events"]
    pairs = (summary.get("matching") or {}).get("candidate_pairs", 0)
    return {
        "wall_s": wall,
        "stages": {s["stage"]: s["seconds"] for s in summary["stages"]},
        "records": records, "events": summary["events"], "input_rows": summary["rows"]["read"],
        "candidate_pairs": pairs, "pairs_per_record": pairs / max(records, 1),
        "records_per_s": records / wall, "events_per_s": summary["events"] / wall, "pairs_per_s": pairs / wall,
        "host_peak_mib": max(summary["peak_rss_mb"], summary.get("peak_worker_rss_mb", 0.0),
                             *summary.get("engine", {}).get("worker_peak_rss_mb", [])),
        "gpu_peak_mib": sampler.peak if sampler is not None else None,
        "cluster_f1": metrics["records"].get("cluster_f1"),
        "pairwise_f1": metrics["records"].get("pairwise_f1"),
    }


def _spread(values: list[float | None]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}


def summarize(runs: list[dict]) -> dict:
    """Median, min and max of each measure over the repeats of one configuration."""
    measures = [k for k in runs[0] if k != "stages"]
    out = {k: _spread([r[k] for r in runs]) for k in measures}
    stages = sorted({s for r in runs for s in r["stages"]})
    out["stages"] = {s: _spread([r["stages"].get(s) for r in runs]) for s in stages}
    return out


def run_ladder(sizes: list[int], repeat: int, backends: list[str], engines: list[str], data_dir: Path,
               work_dir: Path, seed: int = 1, report=None, shape: str = "crm") -> dict:
    """Measure every (size, backend, engine) `repeat` times on data of the `shape` (crm or
    people, as `resolver generate --shape`); fit the cost curves."""
    rows = []
    for people in sizes:
        data = _dataset(data_dir, people, seed, shape)
        for backend in backends:
            for engine in engines:
                runs = []
                for r in range(repeat):
                    if report:
                        report(f"{people:,} people, {backend}/{engine}, run {r + 1}/{repeat}")
                    runs.append(measure_once(data, work_dir / f"{people}-{backend}-{engine}-{r}", backend, engine))
                rows.append({"people": people, "backend": backend, "engine": engine, "repeats": repeat,
                             **summarize(runs)})
    return {"created": datetime.now(UTC).isoformat(), "machine": machine_info(),
            "settings": {"sizes": sizes, "repeat": repeat, "backends": backends, "engines": engines, "seed": seed,
                         "shape": shape},
            "rows": rows, "fits": fit_all(rows)}


# ---------------------------------------------------------------------------------------------
# Cost curves
# ---------------------------------------------------------------------------------------------
@dataclass
class PowerLaw:
    """log(seconds) = log_a + b * log(size), fitted by least squares; s is the residual standard
    deviation (log space), with the sizes' log mean and spread for prediction intervals."""

    log_a: float
    b: float
    s: float
    n: int
    mean_log_x: float
    sxx: float
    max_x: float

    def predict(self, x: float) -> float:
        return math.exp(self.log_a + self.b * math.log(x))

    def interval(self, x: float, z: float = 2.0) -> tuple[float, float]:
        """A prediction interval at x: the fit's residual spread, widened with the distance of
        log x from the measured sizes (so extrapolation is less certain)."""
        lx = math.log(x)
        spread = self.s * math.sqrt(1 + 1 / self.n + (lx - self.mean_log_x) ** 2 / self.sxx) if self.sxx > 0 else self.s
        centre = self.log_a + self.b * lx
        return math.exp(centre - z * spread), math.exp(centre + z * spread)

    def as_dict(self) -> dict:
        return {"a": math.exp(self.log_a), "slope": self.b, "residual_sd_log": self.s, "points": self.n,
                "largest_size": self.max_x, "mean_log_size": self.mean_log_x, "sxx": self.sxx}

    @classmethod
    def from_dict(cls, d: dict) -> PowerLaw:
        return cls(math.log(d["a"]), d["slope"], d["residual_sd_log"], d["points"], d["mean_log_size"], d["sxx"],
                   d["largest_size"])


def fit_power_law(x: np.ndarray, y: np.ndarray) -> PowerLaw:
    """Least squares in log-log space; a single size gives slope 1 (proportional) with no spread."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0)
    lx, ly = np.log(x[keep]), np.log(np.maximum(y[keep], 1e-6))
    n = len(lx)
    if n == 0:
        raise CapacityError("no positive measurements to fit")
    mean = float(lx.mean())
    sxx = float(((lx - mean) ** 2).sum())
    if n == 1 or sxx == 0:
        return PowerLaw(float(ly.mean() - mean), 1.0, 0.0, n, mean, 0.0, float(x[keep].max()))
    b = float(((lx - mean) * (ly - ly.mean())).sum() / sxx)
    log_a = float(ly.mean() - b * mean)
    residual = ly - (log_a + b * lx)
    s = float(math.sqrt((residual ** 2).sum() / max(n - 2, 1)))
    return PowerLaw(log_a, b, s, n, mean, sxx, float(x[keep].max()))


def stage_driver(stage: str, row: dict) -> float:
    """The size a stage scales with: input rows for ingest, CRM records for the rest."""
    if stage == INGEST:
        return row["input_rows"]["median"]
    return row["records"]["median"]


def pipeline_stages(stages) -> list[str]:
    """The run's own stages (not the per-source read / normalize seconds summed over the ingest
    workers, which are parts of the ingest stage)."""
    return [s for s in stages if not s.startswith(("read:", "normalize:"))]


def fit_all(rows: list[dict]) -> list[dict]:
    """One power law per (backend, engine, stage), plus the peak memories against CRM records."""
    fits = []
    for backend, engine in sorted({(r["backend"], r["engine"]) for r in rows}):
        mine = sorted((r for r in rows if r["backend"] == backend and r["engine"] == engine), key=lambda r: r["people"])
        stages = pipeline_stages(sorted({s for r in mine for s, v in r["stages"].items() if v is not None}))
        for stage in stages:
            points = [(stage_driver(stage, r), r["stages"][stage]["median"]) for r in mine if r["stages"].get(stage)]
            points = [p for p in points if p[0] > 0 and p[1] > 0]  # a stage without its input (no events)
            if not points:
                continue
            law = fit_power_law(np.array([p[0] for p in points]), np.array([p[1] for p in points]))
            fits.append({"backend": backend, "engine": engine, "measure": stage, **law.as_dict()})
        for measure in ("host_peak_mib", "gpu_peak_mib", "wall_s"):
            points = [(r["records"]["median"], r[measure]["median"]) for r in mine if r.get(measure)]
            if points:
                law = fit_power_law(np.array([p[0] for p in points]), np.array([p[1] for p in points]))
                fits.append({"backend": backend, "engine": engine, "measure": measure, **law.as_dict()})
    return fits


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------
def estimate(bench: dict, events: int, profiles: int, gpu: str = "none", engine: str = "local",
             max_factor: float = 10.0, allow_extrapolation: bool = False) -> dict:
    """Wall time, GPU count and memory per GPU (or host memory) for `profiles` CRM records and
    `events` events, from the bench's fitted curves; see the module docstring for the model."""
    backend = "cpu" if gpu == "none" else "gpu"
    if gpu != "none" and gpu not in GPU_MEMORY_GIB:
        raise CapacityError(f"unknown GPU {gpu!r} (known: {', '.join(sorted(GPU_MEMORY_GIB))}, or none)")
    fits = [f for f in bench["fits"] if f["backend"] == backend and f["engine"] == engine]
    # No GPU curves: answer from the CPU's, saying so (an estimate, with what it assumes).
    from_cpu = not fits and backend == "gpu"
    if from_cpu:
        fits = [f for f in bench["fits"] if f["backend"] == "cpu" and f["engine"] == engine]
    curves = "cpu" if from_cpu else backend
    if not fits:
        measured = sorted({(f["backend"], f["engine"]) for f in bench["fits"]})
        raise CapacityError(f"the bench has no {backend} measurements with the {engine} engine (it has: "
                            f"{', '.join(f'{b}/{e}' for b, e in measured) or 'none'}); run `resolver bench` "
                            f"on a machine with {'that GPU' if backend == 'gpu' else 'a CPU'} first")
    laws = {f["measure"]: PowerLaw.from_dict(f) for f in fits}
    stages = [m for m in laws if m not in ("host_peak_mib", "gpu_peak_mib", "wall_s")]
    if profiles <= 0:
        raise CapacityError("--profiles must be positive")
    targets = {stage: (profiles + events if stage == INGEST else profiles) for stage in stages}
    factors = {stage: targets[stage] / laws[stage].max_x for stage in stages}
    worst = max(factors.values())
    warnings = []
    if worst > max_factor:
        message = (f"the target is {worst:,.1f}x the largest measured size (limit {max_factor:g}x): "
                   f"measure larger sizes with `resolver bench`")
        if not allow_extrapolation:
            raise CapacityError(message + ", or pass --allow-extrapolation to see an estimate anyway")
        warnings.append("EXTRAPOLATED: " + message)
    per_stage = {}
    for stage in stages:
        low, high = laws[stage].interval(targets[stage])
        per_stage[stage] = {"seconds": laws[stage].predict(targets[stage]), "low": low, "high": high,
                            "slope": laws[stage].b, "size": targets[stage], "factor": factors[stage]}
    # What the stages do not cover (start-up, writing the outputs) as a share of the largest
    # measured run: wall = stages x (wall / stages there).
    largest = max((r for r in bench["rows"] if r["backend"] == curves and r["engine"] == engine),
                  key=lambda r: r["people"])
    measured_stages = sum(largest["stages"][s]["median"] for s in stages if largest["stages"].get(s))
    overhead = largest["wall_s"]["median"] / measured_stages if measured_stages > 0 else 1.0
    one_device = overhead * sum(s["seconds"] for s in per_stage.values())
    low = overhead * sum(s["low"] for s in per_stage.values())
    high = overhead * sum(s["high"] for s in per_stage.values())
    answer = {"target": {"profiles": profiles, "events": events}, "backend": backend, "engine": engine,
              "gpu": gpu, "warnings": warnings, "stages": per_stage}
    assumptions = [f"stage costs follow the power laws fitted to {bench['settings']['sizes']} people "
                   f"(median of {bench['settings']['repeat']} runs each) on {bench['machine']['cpu']}",
                   "ingest scales with input rows (CRM records + events), the other stages with CRM records",
                   "the data look like the generated data (duplicate rate, events per person, junk values)",
                   f"what the stages do not cover (start-up, writing outputs) keeps its share of the largest "
                   f"measured run (wall = {overhead:.2f} x the stages)"]
    if from_cpu:
        warnings.append(f"ESTIMATE: this bench has no GPU measurements; the answer comes from its CPU curves "
                        f"({bench['machine']['cpu']}, {bench['machine']['cores']} cores). Run `resolver bench "
                        f"--backends gpu` on a {gpu} machine for a measured answer")
        answer["estimated_from"] = "cpu curves"
        assumptions += ["GPU stages are taken to run no faster than this bench's CPU ones (an upper bound "
                        "on the time: the GPU's real speed-up is not measured)",
                        "GPU memory per record is taken to be the CPU run's host peak per record"]
    if backend == "gpu":
        memory_law = laws.get("host_peak_mib" if from_cpu else "gpu_peak_mib")
        if memory_law is None:
            raise CapacityError("the bench's gpu runs have no GPU memory measurements")
        need_gib = memory_law.predict(profiles) / 1024
        usable = GPU_MEMORY_GIB[gpu] * USABLE_GPU_SHARE
        gpus = max(1, math.ceil(need_gib / usable))
        speedup = 1 + (gpus - 1) * MULTI_GPU_EFFICIENCY
        answer.update({"gpus": gpus, "memory_per_gpu_gib": need_gib / gpus, "gpu_memory_gib": GPU_MEMORY_GIB[gpu],
                       "wall_s": one_device / speedup, "wall_s_low": low / speedup, "wall_s_high": high / speedup})
        assumptions += [f"a GPU's usable memory is {USABLE_GPU_SHARE:.0%} of its {GPU_MEMORY_GIB[gpu]} GiB "
                        f"(RMM pool; the rest for the CUDA context and cuDF spilling)",
                        "partitions are sized so that the measured peak memory per record holds on each GPU",
                        f"{MULTI_GPU_EFFICIENCY:.0%} parallel efficiency past one GPU (Dask-CUDA shuffles over "
                        f"NVLink or a fast network; slower networks cost more)"]
    else:
        memory_law = laws.get("host_peak_mib")
        need_gib = memory_law.predict(profiles) / 1024 if memory_law else None
        machine_gib = bench["machine"]["memory_gib"]
        answer.update({"host_memory_gib": need_gib, "machine_memory_gib": machine_gib,
                       "fits_in_memory": bool(need_gib is not None and need_gib <= machine_gib),
                       "wall_s": one_device, "wall_s_low": low, "wall_s_high": high})
        assumptions.append(f"one machine like the bench's ({bench['machine']['cores']} cores, {machine_gib} GiB)")
        if need_gib is not None and need_gib > machine_gib:
            warnings.append(f"needs about {need_gib:,.0f} GiB, more than this machine's {machine_gib} GiB: "
                            f"use the dask engine on more machines")
    answer["assumptions"] = assumptions
    answer["uncertainty"] = ("wall_s_low..wall_s_high is the sum of the stages' prediction intervals "
                             "(about 2 residual standard deviations in log space, widened with the distance "
                             "from the measured sizes)")
    return answer
