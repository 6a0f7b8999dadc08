"""GPU kernel benchmark: string comparisons per second (GPU and the CPU kernel on all cores) and
connected-components edges per second (CuPy and numpy), with the GPU memory peak.

    python benchmarks/bench_gpu.py [--pairs 200000000] [--cpu-pairs 20000000] [--edges 100000000]

Without a CUDA device it measures the CPU side only and says so. Prints one Markdown table last.
End-to-end records per second per backend is added with `--backend gpu` (issue 4).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from resolver.backend.components import connected_components
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


def comparisons_per_second(method: str, n_pairs: int, target: str, xp) -> float:
    enc = strings.encode(_names(100_000, seed=1))
    rng = np.random.default_rng(2)
    left = xp.asarray(rng.integers(0, len(enc), n_pairs))
    right = xp.asarray(rng.integers(0, len(enc), n_pairs))
    fn = {"jaro_winkler": strings.jaro_winkler, "levenshtein": strings.levenshtein_similarity}[method]

    def run():
        out = fn(enc, left, right, target=target)
        if xp is not np:
            xp.cuda.Device().synchronize()
        return out

    return n_pairs / _timed(run)


def components_edges_per_second(n_edges: int, xp) -> float:
    rng = np.random.default_rng(3)
    n_nodes = n_edges // 2
    src = xp.asarray(rng.integers(0, n_nodes, n_edges))
    dst = xp.asarray(rng.integers(0, n_nodes, n_edges))

    def run():
        out = connected_components(n_nodes, src, dst, xp)
        if xp is not np:
            xp.cuda.Device().synchronize()
        return out

    return n_edges / _timed(run, repeat=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200_000_000, help="pairs per GPU comparison run")
    parser.add_argument("--cpu-pairs", type=int, default=20_000_000, help="pairs per CPU comparison run")
    parser.add_argument("--edges", type=int, default=100_000_000, help="edges for connected components (GPU)")
    parser.add_argument("--cpu-edges", type=int, default=10_000_000)
    args = parser.parse_args()

    gpu = "cuda" in strings.available_targets()
    cp = None
    if gpu:
        import cupy as cp
    rows = []
    for method in ("jaro_winkler", "levenshtein"):
        cpu_rate = comparisons_per_second(method, args.cpu_pairs, "cpu", np)
        gpu_rate = comparisons_per_second(method, args.pairs, "cuda", cp) if gpu else None
        rows.append((f"{method} comparisons/s", gpu_rate, cpu_rate))
    cpu_cc = components_edges_per_second(args.cpu_edges, np)
    gpu_cc = components_edges_per_second(args.edges, cp) if gpu else None
    rows.append(("connected components edges/s", gpu_cc, cpu_cc))
    peak = cp.get_default_memory_pool().total_bytes() / 2**30 if gpu else None

    print(f"\nCPU cores: {os.cpu_count()}; GPU: {'yes' if gpu else 'none visible (CPU side only)'}")
    print("| measure | GPU | CPU (all cores) | GPU / CPU |")
    print("|---|---:|---:|---:|")
    for name, g, c in rows:
        ratio = f"{g / c:.1f}x" if g else "-"
        print(f"| {name} | {g:,.0f} | {c:,.0f} | {ratio} |" if g else f"| {name} | - | {c:,.0f} | - |")
    print(f"| GPU memory pool peak (GiB) | {peak:.2f} | | |" if peak is not None else "| GPU memory pool peak | - | | |")


if __name__ == "__main__":
    main()
