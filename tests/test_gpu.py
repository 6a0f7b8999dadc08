"""On a real GPU (skipped elsewhere): every GPU primitive equals its CPU counterpart on inputs large
enough to fill the device, and the whole pipeline gives the cpu backend's outputs.

benchmarks/gpu_check.sh runs this file on a lent H200; CI has no GPU and checks the same code
paths in numba's CUDA simulator (test_backend_equivalence.py, test_string_kernels.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from resolver.compute.backend import BackendUnavailable, select_backend

try:
    GPU = select_backend("gpu")
except BackendUnavailable as exc:  # no CuPy, no device, or numba cannot see it
    pytest.skip(f"no GPU here: {exc}", allow_module_level=True)

import cupy as cp  # noqa: E402

HERE = Path(__file__).parent


def _env_with_repo() -> dict:
    """The environment with the repository prepended to PYTHONPATH: replacing it would drop the
    folder the GPU machine's extra wheels were installed into (benchmarks/gpu_check.sh)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}


def _names(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzéüñ李😀 "))
    return [None if rng.random() < 0.02 else "".join(rng.choice(letters, k)) for k in rng.integers(0, 20, n)]


@pytest.mark.parametrize("method", ["jaro", "jaro_winkler", "levenshtein_similarity", "jaccard_ngrams", "jaccard_tokens"])
def test_string_kernels_equal_the_cpu_build(method):
    from resolver.kernels import strings

    enc = strings.encode(_names(50_000, 1))
    rng = np.random.default_rng(2)
    left, right = rng.integers(0, len(enc), 2_000_000), rng.integers(0, len(enc), 2_000_000)
    fn = getattr(strings, method)
    cpu = fn(enc, left, right, target="cpu")
    gpu = fn(enc, cp.asarray(left), cp.asarray(right), target="cuda")
    np.testing.assert_array_equal(cp.asnumpy(gpu), cpu)


def test_hashing_equals_the_cpu_build():
    from resolver.kernels.hashing import hash_strings

    values = pa.array(_names(300_000, 3), type=pa.large_string())
    np.testing.assert_array_equal(cp.asnumpy(hash_strings(values, b"k:", target="cuda", xp=cp)),
                                  hash_strings(values, b"k:"))


def test_pair_generation_equals_the_compiled_one():
    from resolver.matching.blocking import BlockingKeys, rule_pairs, rule_pairs_xp

    rng = np.random.default_rng(4)
    n = 400_000
    keys = rng.integers(1, 40_000, (3, n)).astype(np.uint64)
    keys[:, rng.random(n) < 0.1] = 0
    labels = rng.integers(0, n // 2, n)
    blocking = BlockingKeys(["a", "b", "c"], keys, [])
    for rule in range(3):
        expected = rule_pairs(blocking, rule, labels)
        got = rule_pairs_xp(cp, cp.asarray(keys), rule, cp.asarray(labels), chunk=1 << 22)
        np.testing.assert_array_equal(cp.asnumpy(got[0]), expected[0])
        np.testing.assert_array_equal(cp.asnumpy(got[1]), expected[1])


def test_scoped_pairs_and_refined_blocks_equal_the_cpu_ones():
    """matching.link_type's pair scope and BlockingRule.refine on the device give the host's keys,
    plan and pairs."""
    import pandas as pd

    from resolver.compute.backend import CPU
    from resolver.matching.blocking import PairScope, build_blocking_keys, rule_pairs, rule_pairs_xp
    from resolver.config import BlockingConfig, BlockingRule

    rng = np.random.default_rng(6)
    n = 200_000
    attrs = {"last": pd.Series(rng.choice([f"s{i}" for i in range(40)], n), dtype="str"),
             "first": pd.Series(rng.choice([f"f{i}" for i in range(300)] + [None], n), dtype="str"),
             "dob": pd.Series(rng.choice([f"19{i:02d}-01-01" for i in range(90)], n), dtype="str")}
    config = BlockingConfig(max_block_size=400, rules=[
        BlockingRule(name="last", keys=["last"], refine=["first", "dob"]),
        BlockingRule(name="first", keys=["first"], refine=[])])
    labels = rng.integers(0, n // 2, n)
    for link_type in ("link_only", "dedupe_only"):
        groups = rng.integers(0, 3, n)
        scope = PairScope(link_type, groups)
        host = build_blocking_keys(config, attrs, np.ones(n, bool), backend=CPU, scope=scope)
        device = build_blocking_keys(config, attrs, np.ones(n, bool), backend=GPU, scope=scope)
        np.testing.assert_array_equal(device.keys, host.keys)
        assert [vars(p) for p in device.plans] == [vars(p) for p in host.plans]
        for rule in range(2):
            expected = rule_pairs(host, rule, labels, scope)
            got = rule_pairs_xp(cp, cp.asarray(host.keys), rule, cp.asarray(labels), chunk=1 << 22,
                                scope=scope.on(cp))
            np.testing.assert_array_equal(cp.asnumpy(got[0]), expected[0])
            np.testing.assert_array_equal(cp.asnumpy(got[1]), expected[1])


def test_components_equal_scipy():
    from resolver.compute.components import connected_components
    from resolver.compute.cluster import connected_components as scipy_components

    rng = np.random.default_rng(5)
    n = 2_000_000
    src, dst = rng.integers(0, n, 1_500_000), rng.integers(0, n, 1_500_000)
    expected = scipy_components(n, src, dst)
    np.testing.assert_array_equal(cp.asnumpy(connected_components(n, cp.asarray(src), cp.asarray(dst), cp)), expected)
    if GPU.components == "cugraph":
        from resolver.compute.components import cugraph_components

        np.testing.assert_array_equal(cp.asnumpy(cugraph_components(n, cp.asarray(src), cp.asarray(dst))), expected)


def test_sufficient_statistics_and_weights_equal_numpy():
    from resolver.matching.model import pattern_counts, probabilities

    rng = np.random.default_rng(6)
    levels = rng.integers(0, 5, (3_000_000, 8)).astype(np.int8)
    rule = rng.integers(0, 8, 3_000_000).astype(np.int8)
    for a, b in zip(pattern_counts(cp.asarray(levels), cp.asarray(rule)), pattern_counts(levels, rule)):
        np.testing.assert_array_equal(a, b)
    weights = rng.normal(0, 10, 1_000_000)
    np.testing.assert_allclose(cp.asnumpy(probabilities(cp.asarray(weights))), probabilities(weights), rtol=1e-12)


def test_pipeline_outputs_equal_the_cpu_backend(tmp_path):
    from resolver.synth.people import generate

    generate(tmp_path, 20_000, seed=9, workers=os.cpu_count() or 2)
    proc = subprocess.run([sys.executable, str(HERE / "_backend_equivalence.py"), str(tmp_path / "resolver.yaml")],
                          capture_output=True, text=True, timeout=900, check=False,
                          env=_env_with_repo())
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"]["backend"] == "gpu" and result["backend"]["arrays"] == "cupy"
    same = {k: v for k, v in result.items() if k.startswith("same_")}
    assert all(same.values()), same
    assert result["max_relative_weight_difference"] <= 1e-9


def test_stitching_kernels_equal_the_cpu_build():
    from resolver.kernels.minhash import band_keys, signatures
    from resolver.persons.stitching import PairEvidence, feature_levels

    rng = np.random.default_rng(7)
    events, sessions, permutations = 3_000_000, 400_000, 32
    page_hash = rng.integers(0, 2**63, events, dtype=np.uint64) * np.uint64(2)  # some 0: no page
    offsets = np.concatenate([[0], np.sort(rng.integers(0, events, sessions - 1)), [events]]).astype(np.int64)
    cpu = signatures(page_hash, offsets, permutations)
    gpu = signatures(cp.asarray(page_hash), cp.asarray(offsets), permutations, target="cuda", xp=cp)
    np.testing.assert_array_equal(cp.asnumpy(gpu), cpu)
    for start in range(0, permutations, 4):
        np.testing.assert_array_equal(cp.asnumpy(band_keys(gpu, start, start + 4)), band_keys(cpu, start, start + 4))

    n, rows = 500_000, 2_000_000
    flags = {k: rng.random(n) < 0.5 for k in ("has_network", "same_fingerprint", "has_device", "same_platform",
                                              "same_city", "same_country", "has_place")}
    evidence = PairEvidence(n=n, ip_pair=rng.integers(0, n, rows), ip_gap=rng.integers(0, 10**16, rows),
                            subnet_pair=rng.integers(0, n, rows), subnet_gap=rng.integers(0, 10**16, rows),
                            anon_pair=rng.integers(0, n, rows), anon_sig=cpu[rng.integers(0, sessions, rows)],
                            person_pair=rng.integers(0, n, rows), person_sig=cpu[rng.integers(0, sessions, rows)],
                            **flags)
    window = 7 * 86400 * 10**9
    np.testing.assert_array_equal(cp.asnumpy(feature_levels(cp, evidence, window, permutations)),
                                  feature_levels(np, evidence, window, permutations))


def test_stitching_outputs_equal_the_cpu_backend(tmp_path):
    from resolver.synth.people import generate

    generate(tmp_path, 3000, seed=11, workers=os.cpu_count() or 2, visitors=True)
    proc = subprocess.run([sys.executable, str(HERE / "_backend_equivalence.py"), str(tmp_path / "resolver.yaml")],
                          capture_output=True, text=True, timeout=900, check=False,
                          env=_env_with_repo())
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["same_anonymous_map"] and result["same_stitch_review"], result
    assert result["stitching"][0] == result["stitching"][1] and result["stitching"][0]["stitched_probabilistic"] > 0
