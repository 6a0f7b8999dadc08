"""The gpu backend gives the cpu backend's answers.

Without a GPU, its code paths run simulated (numpy arrays, the CUDA kernels in numba's simulator,
group-bys through the cuDF code path on pandas) in a subprocess, on generated data, and every
output is compared. The pieces are also checked one by one against their CPU counterparts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.compute.backend import (
    CPU,
    BackendUnavailable,
    select_backend,
    simulated_gpu,
)
from resolver.compute.components import numbered_by_smallest_node
from resolver.compute.frames import Aggregate, group_aggregate
from resolver.matching.blocking import BlockingKeys, rule_pairs, rule_pairs_xp
from resolver.cli import main
from resolver.synth.people import generate

HERE = Path(__file__).parent


def _simulated_comparison(config: Path, *extra: str) -> dict:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.run(
        [sys.executable, str(HERE / "_backend_equivalence.py"), str(config), "--u-sample-pairs", "1000", *extra],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_identical(result: dict, min_pairs: int = 100, components: str = "xp") -> None:
    assert result["backend"]["kernels"] == "cuda" and result["backend"]["components"] == components
    same = {k: v for k, v in result.items() if k.startswith("same_")}
    assert same and all(same.values()), same
    assert result["max_relative_weight_difference"] <= 1e-9
    assert result["candidate_pairs"][0] == result["candidate_pairs"][1] > min_pairs
    assert result["decisions"][0] == result["decisions"][1]


@pytest.mark.slow
def test_gpu_code_paths_give_the_cpu_outputs_with_events(tmp_path):
    generate(tmp_path, 1600, seed=11, workers=1)  # 188 candidate pairs, 7 to review, visitors stitched
    result = _simulated_comparison(tmp_path / "resolver.yaml")
    _assert_identical(result)
    assert result["decisions"][0]["review"] > 0


@pytest.mark.slow
def test_gpu_code_paths_give_the_cpu_outputs_with_many_links(tmp_path):
    generate(tmp_path, 3000, seed=5, workers=1, events=False)
    result = _simulated_comparison(tmp_path / "resolver.yaml", "--permissive")
    _assert_identical(result)
    assert result["decisions"][0]["link"] >= 5  # the second graph pass has probabilistic edges


@pytest.mark.slow
def test_a_streamed_gpu_run_compares_its_buckets_on_the_device_and_gives_the_cpu_outputs(tmp_path):
    generate(tmp_path, 1500, seed=5, workers=1, events=False)
    result = _simulated_comparison(tmp_path / "resolver.yaml", "--permissive", "--stream")
    _assert_identical(result, min_pairs=50)
    cpu, gpu = result["streamed"]
    assert cpu["compared_on"] == "host" and gpu["compared_on"] == "cuda"
    assert gpu["pair_comparisons"] == cpu["pair_comparisons"] == result["candidate_pairs"][0]


@pytest.mark.slow
def test_dask_workers_make_and_compare_their_pair_buckets_on_their_own_gpus_and_give_the_cpu_outputs(tmp_path):
    """Held, then streamed, pairs on a 2-worker cluster (one process and one cpu run for both)."""
    generate(tmp_path, 1500, seed=5, workers=1, events=False)
    result = _simulated_comparison(tmp_path / "resolver.yaml", "--permissive", "--gpu-engine", "dask",
                                   "--then-streamed")
    _assert_identical(result, min_pairs=50, components="dask")  # components: on the workers' GPUs
    # held: made and compared in buckets on the workers, then gathered
    assert result["streamed"] == [None, None]
    assert result["in_buckets"][0] is None and result["in_buckets"][1]["compared_on"] == "workers' GPUs"
    streamed = result["then_streamed"]
    same = {k: v for k, v in streamed.items() if k.startswith("same_")}
    assert same and all(same.values()), same
    assert streamed["streamed"]["compared_on"] == "workers' GPUs"
    assert streamed["streamed"]["passes"] == 2


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 3), st.integers(1, 30), st.integers(1, 64), st.integers(0, 2**31))
def test_array_pair_generation_equals_the_compiled_one(n, n_rules, n_values, chunk, seed):
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, n_values + 1, (n_rules, n)).astype(np.uint64)  # 0 = no key
    labels = rng.integers(0, max(1, n // 2), n).astype(np.int64)
    blocking = BlockingKeys(["r"] * n_rules, keys, [])
    for rule in range(n_rules):
        expected = rule_pairs(blocking, rule, labels)
        got = rule_pairs_xp(np, keys, rule, labels, chunk=chunk)
        assert np.array_equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])


def test_array_pair_generation_on_a_large_block():
    """Row inversion of the triangular pair index stays exact for blocks of thousands."""
    n = 6000
    keys = np.ones((1, n), np.uint64)
    keys[0, ::2] = 7
    labels = np.arange(n)
    expected = rule_pairs(BlockingKeys(["r"], keys, []), 0, labels)
    got = rule_pairs_xp(np, keys, 0, labels, chunk=1 << 20)
    assert len(got[0]) == 2 * (3000 * 2999 // 2)
    assert np.array_equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 200), st.integers(1, 12), st.integers(0, 2**31))
def test_dataframe_group_bys_equal_the_host_ones(n, n_groups, seed):
    """The cuDF code path (run here on pandas, whose API cuDF follows) equals the numpy one,
    including groups without rows."""
    rng = np.random.default_rng(seed)
    key = rng.integers(0, n_groups, n)
    specs = {
        "rows": Aggregate(None, "count"),
        "total": Aggregate(rng.integers(0, 50, n).astype(np.int64), "sum"),
        "kinds": Aggregate(rng.integers(0, 4, n), "nunique"),
        "first": Aggregate(rng.integers(-10**12, 10**12, n).astype(np.int64), "min", fill=np.iinfo(np.int64).max),
        "last": Aggregate(rng.integers(-10**12, 10**12, n).astype(np.int64), "max", fill=np.iinfo(np.int64).min),
    }
    host = group_aggregate("host", key, specs, n_groups)
    frames = group_aggregate("pandas", key, specs, n_groups)
    for name in specs:
        assert host[name].dtype == frames[name].dtype, name
        assert np.array_equal(host[name], frames[name]), name


def test_unknown_group_by_is_refused():
    with pytest.raises(ValueError, match="median"):
        group_aggregate("host", np.zeros(1, int), {"x": Aggregate(np.zeros(1), "median")}, 1)


def test_component_numbering_follows_the_smallest_node():
    labels = np.array([5, 2, 5, 9, 2, 9, 0])
    assert numbered_by_smallest_node(np, labels).tolist() == [0, 1, 0, 2, 1, 2, 3]


def test_backend_selection_without_a_gpu():
    assert select_backend("cpu") is CPU
    auto = select_backend("auto")
    assert auto.name == "cpu" and "auto chose cpu" in auto.note
    with pytest.raises(BackendUnavailable, match="CuPy|CUDA|numba"):
        select_backend("gpu")
    with pytest.raises(ValueError, match="unknown backend"):
        select_backend("tpu")
    with pytest.raises(BackendUnavailable, match="NUMBA_ENABLE_CUDASIM"):
        simulated_gpu()  # this process runs numba without the simulator


@pytest.mark.slow
def test_cli_gpu_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    generate(tmp_path, 50, seed=1, workers=1, events=False)
    code = main(["run", "--config", str(tmp_path / "resolver.yaml"), "--backend", "gpu", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("backend unavailable:") and "resolver-identity[gpu]" in err
    assert not (tmp_path / "out").exists()  # nothing was written


@pytest.mark.slow
def test_auto_backend_runs_on_cpu_and_says_why(tmp_path):
    from resolver.config import load_config
    from resolver.pipeline import run

    generate(tmp_path, 200, seed=2, workers=1, events=False)
    config = load_config(tmp_path / "resolver.yaml")
    config.run.workers = 1
    res = run(config, write=False)
    assert res.summary["backend"]["backend"] == "cpu"
    assert "auto chose cpu" in res.summary["backend"]["note"]
    assert len(pd.unique(res.identity_map["person_id"])) > 0
