"""GPU benchmark: string comparisons per second (GPU, and the CPU kernel on all cores), connected
components edges per second, and end-to-end records per second of the pipeline on each backend,
with the GPU memory peak.

    python benchmarks/bench_gpu.py [--pairs 200000000] [--edges 1000000000] [--e2e-sizes 1000000,10000000]

Without a CUDA device it measures the CPU side only and says so (a dry run: use small sizes).
Prints one Markdown table last; --json FILE also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from resolver.compute.components import connected_components
from resolver.kernels import strings


def _names(n: int, seed: int) -> list[str]:
    """Name-length strings (4-14 letters, some accents), like first and last names."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzéèüñ"))
    lengths = rng.integers(4, 15, n)
    return ["".join(rng.choice(letters, k)) for k in lengths]


def _timed(fn, repeat: int = 3) -> float:
    fn()  # compile / warm up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _random_rows(n_rows: int, n: int, seed: int, xp):
    if xp is np:
        return np.random.default_rng(seed).integers(0, n_rows, n)
    xp.random.seed(seed)
    return xp.random.randint(0, n_rows, n, dtype=xp.int64)


def comparisons_per_second(method: str, n_pairs: int, target: str, xp) -> float:
    """Pairs of random name-length strings per second; on the GPU the strings and pairs are on
    the device before timing starts (as in the pipeline)."""
    enc = strings.encode(_names(100_000, seed=1))
    if xp is not np:
        enc = strings.Encoded(xp.asarray(enc.offsets), xp.asarray(enc.codes), xp.asarray(enc.valid))
    left = _random_rows(len(enc), n_pairs, 2, xp)
    right = _random_rows(len(enc), n_pairs, 3, xp)
    fn = {"jaro_winkler": strings.jaro_winkler, "levenshtein": strings.levenshtein_similarity}[method]

    def run():
        out = fn(enc, left, right, target=target)
        if xp is not np:
            xp.cuda.Device().synchronize()
        return out

    return n_pairs / _timed(run)


def components_edges_per_second(n_edges: int, xp) -> float:
    """Edges per second of connected components on a random graph of n_edges / 2 nodes."""
    n_nodes = n_edges // 2
    src = _random_rows(n_nodes, n_edges, 4, xp)
    dst = _random_rows(n_nodes, n_edges, 5, xp)

    def run():
        out = connected_components(n_nodes, src, dst, xp)
        if xp is not np:
            xp.cuda.Device().synchronize()
        return out

    return n_edges / _timed(run, repeat=1)


def minhash_sessions_per_second(n_sessions: int, target: str, xp, permutations: int = 32) -> float:
    """Sessions of 8 page views per second signed by the MinHash kernel (visitor stitching); on the
    GPU the page hashes are on the device before timing starts."""
    from resolver.kernels.minhash import signatures

    rng = np.random.default_rng(6)
    page_hash = xp.asarray(rng.integers(1, 2**63, n_sessions * 8, dtype=np.uint64))
    offsets = xp.arange(0, n_sessions * 8 + 1, 8, dtype=xp.int64)

    def run():
        out = signatures(page_hash, offsets, permutations, target=target, xp=xp)
        if xp is not np:
            xp.cuda.Device().synchronize()
        return out

    return n_sessions / _timed(run)


class GpuMemoryPeak:
    """Largest device memory in use while the block runs, sampled every 20 ms from the driver (so it
    counts CuPy's pool, numba's allocations and everything else on the device)."""

    def __init__(self, cp):
        self.cp, self.peak, self._stop = cp, 0, threading.Event()

    def _used(self) -> int:
        free, total = self.cp.cuda.runtime.memGetInfo()
        return total - free

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used())
            time.sleep(0.02)

    def __enter__(self):
        self.baseline = self._used()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._used())

    @property
    def gib(self) -> float:
        return (self.peak - self.baseline) / 2**30


def end_to_end(sizes: list[int], backends: list[str], workdir: Path, cp=None, deadline: float = float("inf")) -> list[dict]:
    """Generate (or reuse) records-only datasets and resolve each on each backend; after a small
    warm-up run per backend, so numba's compilation is not timed. A run (or a generation) that
    would end after `deadline` (perf_counter seconds), judged from the last one of the same kind
    scaled by size, is skipped and reported as such, so the table is always printed."""
    from resolver.compute.backend import select_backend
    from resolver.config import load_config
    from resolver.pipeline import run
    from resolver.synth.people import generate

    cores = os.cpu_count() or 2

    seconds_per_person: dict[str, float] = {}  # "generate" or a backend -> last rate

    def fits(kind: str, people: int) -> bool:
        expected = 1.3 * seconds_per_person.get(kind, 0.0) * people
        if time.perf_counter() + expected <= deadline:
            return True
        print(f"skipped {kind} at {people:,} people: about {expected:.0f} s would pass the deadline", flush=True)
        return False

    def dataset(people: int) -> Path | None:
        folder = workdir / f"records-{people}"
        if not (folder / "resolver.yaml").exists():
            if not fits("generate", people):
                return None
            start = time.perf_counter()
            generate(folder, people, seed=1, workers=cores, events=False)
            seconds_per_person["generate"] = (time.perf_counter() - start) / people
            print(f"generated {people:,} people in {time.perf_counter() - start:.1f} s", flush=True)
        return folder

    def resolve(folder: Path, backend_name: str):
        config = load_config(folder / "resolver.yaml")
        config.run.workers = cores
        return run(config, write=False, backend=select_backend(backend_name))

    rows = []
    warm = dataset(5_000)
    for name in backends:
        resolve(warm, name)
    for people in sizes:
        folder = dataset(people)
        for name in backends:
            if folder is None or not fits(name, people):
                continue
            peak = GpuMemoryPeak(cp) if (cp is not None and name == "gpu") else None
            start = time.perf_counter()
            if peak:
                with peak:
                    res = resolve(folder, name)
            else:
                res = resolve(folder, name)
            seconds = time.perf_counter() - start
            seconds_per_person[name] = seconds / people
            stages = res.summary["stages"]
            ingest = sum(s["seconds"] for s in stages if s["stage"].startswith("ingest"))
            rows.append({
                "people": people, "backend": name, "records": len(res.identity_map), "seconds": seconds,
                "records_per_s": len(res.identity_map) / seconds,
                "after_ingest_s": seconds - ingest,
                "candidate_pairs": (res.matching or {}).get("candidate_pairs", 0),
                "stages": {s["stage"]: s["seconds"] for s in stages if ":" in s["stage"] and not s["stage"].startswith(("read:", "normalize:"))},
                "gpu_peak_gib": peak.gib if peak else None,
            })
            print(json.dumps(rows[-1]), flush=True)
            del res
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200_000_000, help="pairs per GPU comparison run")
    parser.add_argument("--cpu-pairs", type=int, default=20_000_000, help="pairs per CPU comparison run")
    parser.add_argument("--edges", type=int, default=1_000_000_000, help="edges for connected components (GPU)")
    parser.add_argument("--cpu-edges", type=int, default=10_000_000)
    parser.add_argument("--sessions", type=int, default=20_000_000, help="sessions per GPU MinHash run")
    parser.add_argument("--cpu-sessions", type=int, default=2_000_000)
    parser.add_argument("--e2e-sizes", default="1000000,10000000", help="people per end-to-end run ('' = skip)")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "resolver-bench-gpu"))
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--deadline", type=float, default=float("inf"),
                        help="seconds from the start after which no end-to-end run starts that would not finish")
    args = parser.parse_args()
    deadline = time.perf_counter() + args.deadline

    gpu = "cuda" in strings.available_targets()
    cp = None
    if gpu:
        import cupy as cp
    rows = []
    for method in ("jaro_winkler", "levenshtein"):
        cpu_rate = comparisons_per_second(method, args.cpu_pairs, "cpu", np)
        gpu_rate = comparisons_per_second(method, args.pairs, "cuda", cp) if gpu else None
        rows.append((f"{method} comparisons/s", gpu_rate, cpu_rate))
        print(rows[-1], flush=True)
    cpu_cc = components_edges_per_second(args.cpu_edges, np)
    gpu_cc = None
    if gpu:
        with GpuMemoryPeak(cp) as cc_peak:
            gpu_cc = components_edges_per_second(args.edges, cp)
        cp.get_default_memory_pool().free_all_blocks()
    rows.append((f"connected components edges/s ({args.edges:,} GPU / {args.cpu_edges:,} CPU edges)", gpu_cc, cpu_cc))
    print(rows[-1], flush=True)
    gpu_mh = minhash_sessions_per_second(args.sessions, "cuda", cp) if gpu else None
    rows.append(("MinHash signatures, sessions/s (8 pages, 32 permutations)", gpu_mh,
                 minhash_sessions_per_second(args.cpu_sessions, "cpu", np)))
    print(rows[-1], flush=True)
    sizes = [int(x) for x in args.e2e_sizes.split(",") if x]
    e2e = end_to_end(sizes, ["cpu", "gpu"] if gpu else ["cpu"], Path(args.workdir), cp, deadline) if sizes else []
    if args.json:
        Path(args.json).write_text(json.dumps({"kernels": rows, "end_to_end": e2e,
                                               "gpu_peak_gib_components": cc_peak.gib if gpu else None}, indent=2))

    print(f"\nCPU cores: {os.cpu_count()}; GPU: {'yes' if gpu else 'none visible (CPU side only)'}")
    print("| measure | GPU | CPU (all cores) | GPU / CPU |")
    print("|---|---:|---:|---:|")
    for name, g, c in rows:
        print(f"| {name} | {g:,.0f} | {c:,.0f} | {g / c:.1f}x |" if g else f"| {name} | - | {c:,.0f} | - |")
    for people in sizes:
        mine = {r["backend"]: r for r in e2e if r["people"] == people}
        c, g = mine.get("cpu"), mine.get("gpu")
        if not (c and g):
            rate = {k: f"{r['records_per_s']:,.0f}" if r else "-" for k, r in (("gpu", g), ("cpu", c))}
            print(f"| end to end records/s ({people:,} people) | {rate['gpu']} | {rate['cpu']} | "
                  "not both: no GPU, or skipped at the deadline |")
            continue
        records = c["records"]
        line = f"| end to end records/s, {records:,} records ({people:,} people)"
        print(f"{line} | {g['records_per_s']:,.0f} | {c['records_per_s']:,.0f} | {c['seconds'] / g['seconds']:.1f}x |")
        line = f"| after ingest, seconds ({people:,} people)"
        print(f"{line} | {g['after_ingest_s']:.1f} | {c['after_ingest_s']:.1f} | {c['after_ingest_s'] / g['after_ingest_s']:.1f}x |")
    peaks = [r["gpu_peak_gib"] for r in e2e if r["gpu_peak_gib"] is not None] + ([cc_peak.gib] if gpu else [])
    print(f"| GPU memory peak (GiB, over all runs) | {max(peaks):.2f} | | |" if peaks else "| GPU memory peak | - | | |")


if __name__ == "__main__":
    main()
