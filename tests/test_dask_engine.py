"""The dask engine gives the local engine's results: on a 2-worker LocalCluster and on a real
scheduler with workers started as separate processes (`dask scheduler`, `dask worker`)."""

import json
import os
import shutil
import socket
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
from _outputs import assert_same_outputs, generated_with_baseline
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.cli import EXIT_OK, main
from resolver.compute.cluster import connected_components
from resolver.matching.model import merge_pattern_counts, pattern_counts


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generated_with_baseline(tmp_path_factory.mktemp("dask"), 1500, seed=41)


def _same_outputs(a, b):
    assert_same_outputs(a, b, model=True)


@pytest.mark.slow
def test_local_cluster_gives_the_local_engines_outputs(world, monkeypatch):
    from resolver.compute import engine

    monkeypatch.setattr(engine, "ROWS_PER_BUCKET", 200)  # more buckets, as big data gets
    out = world / "dask-local"
    assert main(["run", "--config", str(world / "resolver.yaml"), "--out", str(out), "-q", "--backend", "cpu",
                 "--engine", "dask", "--workers", "2"]) == EXIT_OK
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["engine"]["cluster"] == "LocalCluster" and summary["engine"]["workers"] == 2
    assert summary["engine"]["buckets"] == 4 and summary["engine"]["golden_buckets"] > 4
    assert summary["engine"]["pair_buckets"] > 4
    _same_outputs(world / "local", out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_separate_scheduler_and_worker_processes_give_the_same_outputs(world, tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    scheduler = subprocess.Popen([shutil.which("dask") or "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = [subprocess.Popen([shutil.which("dask") or "dask", "worker", address, "--nworkers", "1", "--nthreads", "1",
                                 "--no-dashboard", "--local-directory", str(tmp_path / f"w{i}")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
    try:
        deadline = time.monotonic() + 60
        from distributed import Client

        while True:  # wait for both workers to join
            try:
                with Client(address, timeout=5) as client:
                    if len(client.scheduler_info()["workers"]) == 2:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the dask scheduler and workers did not come up"
            time.sleep(0.5)
        out = tmp_path / "out"
        assert main(["run", "--config", str(world / "resolver.yaml"), "--out", str(out), "-q", "--backend", "cpu",
                     "--engine", "dask", "--scheduler", address]) == EXIT_OK
        summary = json.loads((out / "run_summary.json").read_text())
        peaks = summary["engine"].pop("worker_peak_rss_mb")
        assert len(peaks) == 2 and all(p > 0 for p in peaks)
        assert summary["engine"] == {"engine": "dask", "cluster": "scheduler", "workers": 2, "buckets": 4,
                                     "pair_buckets": 4, "golden_buckets": 4, "scheduler": address}
        _same_outputs(world / "local", out)
    finally:
        for process in [*workers, scheduler]:
            process.terminate()
        for process in [*workers, scheduler]:
            process.wait(timeout=30)


@pytest.mark.slow
def test_an_unreachable_scheduler_is_a_clear_error(world, tmp_path, capsys):
    import yaml

    config = yaml.safe_load((world / "resolver.yaml").read_text())
    config["engine"] = {"connect_timeout": 2}
    (world / "impatient.yaml").write_text(yaml.safe_dump(config))
    port = _free_port()
    code = main(["run", "--config", str(world / "impatient.yaml"), "--out", str(tmp_path / "never"), "--engine", "dask",
                 "--scheduler", f"tcp://127.0.0.1:{port}", "--backend", "cpu"])
    assert code == 2
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in capsys.readouterr().err


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


@pytest.mark.slow
@settings(max_examples=10, deadline=None)
@given(edges=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=60),
       extra=st.integers(1, 45))
def test_label_propagation_finds_each_components_smallest_node(client, edges, extra):
    from resolver.compute.dask_engine import DaskEngine, _label_propagation

    n = max(max(e) for e in edges) + extra
    src = np.array([a for a, _ in edges], dtype=np.int64)
    dst = np.array([b for _, b in edges], dtype=np.int64)
    labels = connected_components(n, src, dst)
    smallest = np.full(labels.max() + 1, n)
    np.minimum.at(smallest, labels, np.arange(n))
    assert np.array_equal(_label_propagation(n, src, dst, DaskEngine(client, 3, {})), smallest[labels])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 1)), max_size=80), st.integers(1, 5))
def test_pattern_counts_summed_over_partitions_equal_the_whole(rows, parts):
    levels = np.array([[a, b] for a, b, _ in rows], dtype=np.int8).reshape(-1, 2)
    rule = np.array([r for _, _, r in rows], dtype=np.int64)
    whole = pattern_counts(levels, rule)
    cuts = np.array_split(np.arange(len(rows)), parts)
    merged = merge_pattern_counts([pattern_counts(levels[c], rule[c]) for c in cuts], 2)
    for a, b in zip(whole, merged):
        assert np.array_equal(a, b)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 6), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_concat_in_order_is_concat_then_take(sizes, seed):
    """The column-at-a-time assembly of golden-record buckets gives pd.concat(parts).take(order),
    dtypes included (text, categories, timestamps with gaps, booleans)."""
    from resolver.compute.frames import concat_in_order

    rng = np.random.default_rng(seed)
    sources = pd.CategoricalDtype(["crm", "leads", "web"])

    def part(n):
        return pd.DataFrame({
            "person_id": pd.Series([f"p{rng.integers(1000)}" for _ in range(n)], dtype="str"),
            "email": pd.Series([None if rng.random() < 0.3 else f"e{rng.integers(9)}@x.io" for _ in range(n)], dtype="str"),
            "email__source": pd.Series(rng.choice(sources.categories, n), dtype=sources),
            "email__timestamp": pd.to_datetime(rng.integers(0, 10**9, n), unit="s").where(rng.random(n) < 0.7),
            "needs_review": rng.random(n) < 0.5,
        })

    parts = [part(n) for n in sizes]
    expected = pd.concat(parts, ignore_index=True)
    order = rng.permutation(len(expected))
    expected = expected.take(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(concat_in_order(parts, order), expected)
