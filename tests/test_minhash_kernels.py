"""Stitching's array steps against their definitions: the compiled MinHash kernel equals the
numpy MinHash of each page reduced per session (and its CUDA build, in numba's simulator, equals
the CPU build); band keys and page levels equal plain-Python references; the feature levels equal
on any array module."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.kernels.hashing import _mix
from resolver.kernels.minhash import EMPTY, agreements, band_keys, signatures
from resolver.ingest.sessions import minhash_rows
from resolver.persons.stitching import PairEvidence, feature_levels

HERE = Path(__file__).parent
HASHES = st.one_of(st.just(0), st.integers(1, 2**64 - 1))  # 0: an event without a page


def reference_signatures(page_hash: np.ndarray, offsets: np.ndarray, permutations: int) -> np.ndarray:
    rows = minhash_rows(page_hash, permutations)
    out = np.full((len(offsets) - 1, permutations), EMPTY, dtype=np.uint32)
    for s in range(len(offsets) - 1):
        if offsets[s + 1] > offsets[s]:
            out[s] = rows[offsets[s]:offsets[s + 1]].min(axis=0)
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(HASHES, max_size=8), max_size=12), st.integers(1, 40))
def test_compiled_signatures_equal_the_numpy_definition(sessions, permutations):
    page_hash = np.array([h for s in sessions for h in s], dtype=np.uint64)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sessions])]).astype(np.int64)
    got = signatures(page_hash, offsets, permutations)
    assert got.dtype == np.uint32 and got.shape == (len(sessions), permutations)
    np.testing.assert_array_equal(got, reference_signatures(page_hash, offsets, permutations))


@pytest.mark.slow
def test_cuda_build_equals_cpu_build_on_the_simulator():
    script = HERE / "_cudasim_minhash.py"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    spec = importlib.util.spec_from_file_location("_cudasim_minhash", script)
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    cpu = helper.signatures("cpu")
    assert (cpu != EMPTY).any() and (cpu == EMPTY).all(axis=1).any()  # pages, and a session without
    np.testing.assert_array_equal(np.array(json.loads(proc.stdout), dtype=np.uint32), cpu)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.one_of(st.just(int(EMPTY)), st.integers(0, 2**32 - 1)), min_size=6, max_size=6),
                min_size=1, max_size=10), st.integers(0, 5), st.integers(1, 6))
def test_band_keys_fold_splitmix_over_the_band(rows, start, width):
    sig = np.array(rows, dtype=np.uint32)
    stop = min(start + width, sig.shape[1])
    expected = []
    for row in rows:
        h = 0
        for value in row[start:stop]:
            h = _mix(h ^ value)
        expected.append(h if any(v != int(EMPTY) for v in row[start:stop]) else 0)
    assert band_keys(sig, start, stop).tolist() == expected


def _evidence(draw_pairs: list, permutations: int) -> PairEvidence:
    """Evidence of n pairs from hypothesis-drawn per-pair facts (gaps and signatures as rows)."""
    n = len(draw_pairs)

    def rows(key):
        pair = [i for i, p in enumerate(draw_pairs) for _ in p[key]]
        values = [v for p in draw_pairs for v in p[key]]
        return np.array(pair, dtype=np.int64), values

    ip_pair, ip_gap = rows("ip")
    subnet_pair, subnet_gap = rows("subnet")
    anon_pair, anon_sig = rows("anon")
    person_pair, person_sig = rows("person")
    flags = {k: np.array([p[k] for p in draw_pairs], dtype=bool) for k in
             ("has_network", "same_fingerprint", "has_device", "same_platform", "same_city", "same_country", "has_place")}
    return PairEvidence(n=n, ip_pair=ip_pair, ip_gap=np.array(ip_gap, np.int64), subnet_pair=subnet_pair,
                        subnet_gap=np.array(subnet_gap, np.int64), anon_pair=anon_pair,
                        anon_sig=np.array(anon_sig, np.uint32).reshape(-1, permutations), person_pair=person_pair,
                        person_sig=np.array(person_sig, np.uint32).reshape(-1, permutations), **flags)


PERMS = 8
SIG = st.lists(st.sampled_from([0, 1, 2, int(EMPTY)]), min_size=PERMS, max_size=PERMS)
GAPS = st.lists(st.sampled_from([0, 3600 * 10**9, 3600 * 10**9 + 1, 86400 * 10**9, 10**15, 10**16]), max_size=3)
PAIR = st.fixed_dictionaries({
    "ip": GAPS, "subnet": GAPS, "anon": st.lists(SIG, max_size=3), "person": st.lists(SIG, max_size=3),
    **{k: st.booleans() for k in ("has_network", "same_fingerprint", "has_device", "same_platform", "same_city",
                                  "same_country", "has_place")}})


@settings(max_examples=150, deadline=None)
@given(st.lists(PAIR, max_size=8))
def test_page_level_is_the_jaccard_estimate_of_the_unions(pairs):
    window = 7 * 86400 * 10**9
    levels = feature_levels(np, _evidence(pairs, PERMS), window, PERMS)
    assert levels.dtype == np.int8 and levels.shape == (len(pairs), 5)
    for p, row in zip(pairs, levels):
        a = np.min(np.array(p["anon"], np.uint32), axis=0) if p["anon"] else np.full(PERMS, EMPTY)
        b = np.min(np.array(p["person"], np.uint32), axis=0) if p["person"] else np.full(PERMS, EMPTY)
        jaccard = float(((a == b) & (a != EMPTY)).mean())
        both = (a != EMPTY).any() and (b != EMPTY).any()
        assert row[4] == (0 if not both else 4 if jaccard >= 0.5 else 3 if jaccard >= 0.25 else 2 if jaccard > 0 else 1)
        gap = min(p["ip"] + p["subnet"], default=None)
        assert row[1] == (0 if gap is None else 4 if gap <= 3600 * 10**9 else 3 if gap <= 86400 * 10**9
                          else 2 if gap <= window else 1)
        same_ip = any(g <= window for g in p["ip"])
        assert row[0] == (3 if same_ip else 2 if any(g <= window for g in p["subnet"]) else 1 if p["has_network"] else 0)


def test_agreements_count_shared_pages_only():
    a = np.array([[1, 2, EMPTY, 4]], dtype=np.uint32)
    b = np.array([[1, 3, EMPTY, 4]], dtype=np.uint32)
    assert agreements(a, b).tolist() == [2]
