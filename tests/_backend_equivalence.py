"""Resolve one dataset on the cpu backend and on the gpu backend's code paths, and print how their
outputs compare as JSON.

    NUMBA_ENABLE_CUDASIM=1 python tests/_backend_equivalence.py CONFIG [--u-sample-pairs N] [--permissive]

Without a GPU the gpu backend runs simulated (numpy arrays, CUDA kernels in numba's simulator,
group-bys through the cuDF code path on pandas); on a GPU (no simulator) it is the real gpu
backend, so benchmarks/gpu_check.sh runs this same script as the full equivalence check.
"""

import json
import sys

import numpy as np
import pandas as pd


def same_frame(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=0)
        return True
    except AssertionError as exc:
        print(f"differs: {exc}", file=sys.stderr)
        return False


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300)))


def _compared(cpu, gpu) -> dict:
    """How two runs' outputs compare."""
    out = {
        "backend": gpu.summary["backend"],
        "records": len(cpu.identity_map),
        "persons": len(cpu.persons),
        "candidate_pairs": [r.matching["candidate_pairs"] if r.matching else 0 for r in (cpu, gpu)],
        "same_partition": bool(cpu.identity_map["person_id"].equals(gpu.identity_map["person_id"])),
        "same_persons": same_frame(cpu.persons, gpu.persons),
        "same_identifier_map": same_frame(cpu.identifier_map, gpu.identifier_map),
    }
    if cpu.matching is not None:
        out.update(
            same_blocking_keys=same_frame(cpu.blocking_keys, gpu.blocking_keys),
            same_scored_pairs=same_frame(cpu.scored_pairs, gpu.scored_pairs),
            same_links=same_frame(cpu.match_links, gpu.match_links),
            same_review_queue=same_frame(cpu.review_queue, gpu.review_queue),
            same_model=cpu.model.to_dict()["comparisons"] == gpu.model.to_dict()["comparisons"],
            max_relative_weight_difference=relative_difference(cpu.scored_pairs["match_weight"].to_numpy(),
                                                               gpu.scored_pairs["match_weight"].to_numpy()),
            decisions=[r.matching["decisions"] for r in (cpu, gpu)],
            streamed=[r.matching.get("streamed") for r in (cpu, gpu)],
            in_buckets=[r.matching.get("buckets") for r in (cpu, gpu)],
        )
    if cpu.anonymous_map is not None:  # visitor stitching: band keys, levels and scores on the backend
        out.update(same_anonymous_map=same_frame(cpu.anonymous_map, gpu.anonymous_map),
                   same_stitch_review=same_frame(cpu.stitch_review, gpu.stitch_review),
                   stitching=[{k: r.stitching[k] for k in ("stitched_probabilistic", "review", "candidate_pairs")}
                              for r in (cpu, gpu)])
    return out


def compare(config_path: str, u_sample_pairs: int, permissive: bool = False, stream: bool = False,
            gpu_engine: str = "local", then_streamed: bool = False) -> dict:
    """permissive: guards off and thresholds 0.2 / 0.1, so that many probabilistic links reach the
    graph (small generated sets are mostly resolved deterministically). The model may fail its
    health check (a u sample of a few thousand pairs is too small for it): this compares backends,
    not models, so it merges anyway. stream: both runs stream their pairs in buckets (the gpu one
    compares each bucket on the device). gpu_engine "dask": the gpu run on a 2-worker cluster, whose
    workers compare their pair buckets on their own (simulated) GPUs; the cpu run stays local.
    then_streamed: the gpu run again with streamed pairs, its outputs compared with the cpu run's
    under "then_streamed" (one process and one cpu run for both)."""
    from numba import config as numba_config

    from resolver.compute.backend import CPU, select_backend, simulated_gpu
    from resolver.config import load_config
    from resolver.pipeline import run

    config = load_config(config_path)
    config.run.workers = 1
    if config.matching is not None:
        config.matching.model.u_sample_pairs = u_sample_pairs
        config.matching.model.allow_unhealthy = True
        if stream:
            config.matching.stream_above_pairs = 0
    if permissive:
        config.identity.guards = False
        if config.matching is not None:
            config.matching.thresholds.auto_merge, config.matching.thresholds.review = 0.2, 0.1
    gpu_backend = simulated_gpu() if numba_config.ENABLE_CUDASIM else select_backend("gpu")
    cpu = run(config, write=False, backend=CPU)
    if gpu_engine == "dask":
        config.engine.name, config.engine.workers, config.engine.partitions = "dask", 2, 4
    gpu = run(config, write=False, backend=gpu_backend)
    out = _compared(cpu, gpu)
    if then_streamed and config.matching is not None:
        config.matching.stream_above_pairs = 0
        again = run(config, write=False, backend=gpu_backend)
        out["then_streamed"] = {**{k: v for k, v in _compared(cpu, again).items() if k.startswith("same_")},
                                "streamed": again.matching.get("streamed")}
    return out


if __name__ == "__main__":
    import warnings

    # The simulator runs the 64-bit hash in Python scalars, where the intended wrap-around warns.
    warnings.filterwarnings("ignore", message="overflow encountered in scalar", category=RuntimeWarning)
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--u-sample-pairs", type=int, default=2000)
    parser.add_argument("--permissive", action="store_true")
    parser.add_argument("--stream", action="store_true", help="both runs stream their pairs in buckets")
    parser.add_argument("--gpu-engine", choices=["local", "dask"], default="local")
    parser.add_argument("--then-streamed", action="store_true", help="the gpu run again, streamed, compared too")
    args = parser.parse_args()
    print(json.dumps(compare(args.config, args.u_sample_pairs, args.permissive, args.stream, args.gpu_engine,
                                     args.then_streamed)))
