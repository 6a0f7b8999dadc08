"""`resolver bench` measures a ladder of sizes (repeated, with the machine recorded) and writes
JSON, a chart and a page; `resolver capacity` answers from those measurements, with its
assumptions and uncertainty, and refuses to extrapolate far beyond them unless told to."""

import json
import math

import numpy as np
import pytest

from resolver.bench.capacity import (
    GPU_MEMORY_GIB,
    INGEST,
    USABLE_GPU_SHARE,
    MULTI_GPU_EFFICIENCY,
    CapacityError,
    estimate,
    fit_power_law,
)
from resolver.cli import EXIT_CONFIG, EXIT_OK, main


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    code = main(["bench", "--sizes", "600,1200", "--repeat", "2", "--backends", "cpu", "--engines", "local",
                 "--data", str(root / "data"),
                 "--out", str(root / "out"), "-q"])
    assert code == EXIT_OK
    return root / "out"


@pytest.mark.slow
def test_bench_records_every_rung_repeated_with_the_machine(bench):
    result = json.loads((bench / "bench.json").read_text())
    assert [r["people"] for r in result["rows"]] == [600, 1200]
    for row in result["rows"]:
        assert row["repeats"] == 2 and row["backend"] == "cpu" and row["engine"] == "local"
        for measure in ("wall_s", "records_per_s", "events_per_s", "pairs_per_record", "host_peak_mib", "cluster_f1"):
            spread = row[measure]
            assert spread["min"] <= spread["median"] <= spread["max"], measure
        assert row["records"]["median"] > row["people"] * 0.9 and row["events"]["median"] > 0
        assert row["cluster_f1"]["median"] > 0.9
        assert INGEST in row["stages"] and "golden records" in row["stages"]
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and "numpy" in machine["libraries"]
    measures = {f["measure"] for f in result["fits"]}
    assert {INGEST, "persons", "wall_s", "host_peak_mib"} <= measures
    assert not any(m.startswith(("read:", "normalize:")) for m in measures)
    assert (bench / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (bench / "bench.html").read_text()
    assert "data:image/png;base64," in page and "<td>1,200</td>" in page and "slope" in page


@pytest.mark.slow
def test_capacity_answers_within_the_measured_range(bench, capsys):
    assert main(["capacity", "--from", str(bench / "bench.json"), "--profiles", "5000", "--events", "20000",
                 "--json"]) == EXIT_OK
    answer = json.loads(capsys.readouterr().out)
    assert answer["backend"] == "cpu" and not answer["warnings"]
    assert 0 < answer["wall_s_low"] <= answer["wall_s"] <= answer["wall_s_high"]
    assert answer["stages"][INGEST]["size"] == 25000 and answer["stages"]["persons"]["size"] == 5000
    assert answer["host_memory_gib"] > 0 and answer["fits_in_memory"]
    assert any("power laws" in a for a in answer["assumptions"])


@pytest.mark.slow
def test_capacity_refuses_to_extrapolate_unless_told(bench, capsys):
    far = ["capacity", "--from", str(bench / "bench.json"), "--profiles", "10000000", "--events", "100000000"]
    assert main(far) == EXIT_CONFIG
    assert "the largest measured size (limit 10x)" in capsys.readouterr().err
    assert main([*far, "--allow-extrapolation", "--json"]) == EXIT_OK
    answer = json.loads(capsys.readouterr().out)
    assert answer["warnings"][0].startswith("EXTRAPOLATED")
    # A CPU-only bench asked about a GPU: an estimate from its CPU curves, which says so (issue 23)
    assert main(["capacity", "--from", str(bench / "bench.json"), "--profiles", "5000", "--events", "1",
                 "--gpu", "h200"]) == EXIT_OK
    assert "ESTIMATE: this bench has no GPU measurements" in capsys.readouterr().out


def test_power_law_fit_recovers_a_known_curve_and_widens_away_from_it():
    rng = np.random.default_rng(3)
    x = np.array([1e4, 3e4, 1e5, 3e5, 1e6])
    y = 2e-4 * x ** 1.15 * np.exp(rng.normal(0, 0.03, len(x)))
    law = fit_power_law(x, y)
    assert abs(law.b - 1.15) < 0.05 and law.n == 5
    near_low, near_high = law.interval(3e5)
    far_low, far_high = law.interval(3e7)
    assert near_low < law.predict(3e5) < near_high
    assert math.log(far_high / far_low) > math.log(near_high / near_low)


def _bench_with(backend: str, seconds_per_record: float, mib_per_record: float) -> dict:
    """A bench whose measurements follow exact power laws (slope 1), to check the planner's arithmetic."""
    rows = []
    for people in (1000, 10000, 100000):
        records = people * 1.1
        stages = {INGEST: seconds_per_record * records, "persons": seconds_per_record * records}
        one = lambda v: {"median": v, "min": v, "max": v}  # noqa: E731
        rows.append({"people": people, "backend": backend, "engine": "local", "repeats": 1,
                     "records": one(records), "input_rows": one(records * 5), "wall_s": one(2 * stages[INGEST]),
                     "host_peak_mib": one(mib_per_record * records), "gpu_peak_mib": one(mib_per_record * records),
                     "stages": {k: one(v) for k, v in stages.items()}})
    from resolver.bench.capacity import fit_all

    return {"rows": rows, "fits": fit_all(rows), "settings": {"sizes": [1000, 10000, 100000], "repeat": 1},
            "machine": {"cpu": "test", "cores": 2, "memory_gib": 24.0}}


def test_gpu_estimate_sizes_the_cluster_by_measured_memory():
    bench = _bench_with("gpu", 1e-6, 0.5)
    answer = estimate(bench, events=1_000_000, profiles=1_000_000, gpu="h200")
    need_gib = 0.5 * 1_000_000 / 1024
    assert answer["gpus"] == math.ceil(need_gib / (GPU_MEMORY_GIB["h200"] * USABLE_GPU_SHARE))
    assert answer["memory_per_gpu_gib"] == pytest.approx(need_gib / answer["gpus"], rel=1e-6)
    stages = answer["stages"]
    assert stages["persons"]["seconds"] == pytest.approx(1e-6 * 1_000_000, rel=1e-6)
    assert stages[INGEST]["size"] == 2_000_000
    with pytest.raises(CapacityError, match="unknown GPU"):
        estimate(bench, 1, 1, gpu="tpu")


def test_a_gpu_question_without_gpu_curves_gets_an_estimate_from_the_cpu_curves_saying_so():
    bench = _bench_with("cpu", 1e-6, 0.5)
    answer = estimate(bench, events=1_000_000, profiles=1_000_000, gpu="h100")
    assert answer["estimated_from"] == "cpu curves"
    assert any(w.startswith("ESTIMATE: this bench has no GPU measurements") for w in answer["warnings"])
    assert any("no faster than this bench's CPU" in a for a in answer["assumptions"])
    cpu = estimate(bench, events=1_000_000, profiles=1_000_000)
    need_gib = 0.5 * 1_000_000 / 1024  # the host peak per record, as GPU memory
    assert answer["gpus"] == math.ceil(need_gib / (GPU_MEMORY_GIB["h100"] * USABLE_GPU_SHARE))
    speedup = 1 + (answer["gpus"] - 1) * MULTI_GPU_EFFICIENCY
    assert answer["wall_s"] == pytest.approx(cpu["wall_s"] / speedup, rel=1e-9)
    measured = estimate(_bench_with("gpu", 1e-6, 0.5), events=1_000_000, profiles=1_000_000, gpu="h100")
    assert "estimated_from" not in measured and not measured["warnings"]
