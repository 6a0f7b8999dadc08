"""report.html: what each run writes, rendered in headless Chromium (every chart must draw, with no
console error and no request), self-contained, never in the way of the outputs, and rebuilt
without an erased person."""

import json
import re
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from resolver.cli import EXIT_OK, main
from resolver.config import load_config

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Every chart the report draws for a run with matching, events, a state with history and
# decisions, and the truth.
EXPECTED_CHARTS = {"stage_timings", "match_weights", "m_u", "model_weights", "cluster_sizes", "policy_actions", "hubs",
                   "review_bands", "waterfall_0", "conflicts", "pr_curve", "history_merges", "history_queue",
                   "history_fp"}


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium is not installed (apt-get install -y chromium); .ci/run installs it"
        if os.environ.get("CI_REQUIRE_BROWSER") == "1":  # CI: a missing browser is a failure, not a skip
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.mark.slow
def test_report_renders_in_chromium_and_every_chart_draws(stewarded, tmp_path):
    from playwright.sync_api import sync_playwright

    report = stewarded["second"] / "report.html"
    url = report.resolve().as_uri()
    console, errors, requests = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: console.append((m.type, m.text)))
            page.on("pageerror", lambda e: errors.append(str(e)))

            def route(r):
                requests.append(r.request.url)
                return r.continue_() if r.request.url == url else r.abort()

            page.route("**/*", route)
            page.goto(url)
            page.wait_for_function("document.documentElement.hasAttribute('data-charts-drawn')", timeout=30_000)
            charts = page.evaluate("""() => Array.from(document.querySelectorAll('[data-chart]')).map(e => ({
                name: e.dataset.chart, marks: Number(e.dataset.marks || 0), error: e.dataset.error || null,
                visible: Array.from(e.querySelectorAll('svg .mark')).filter(m => {
                    const b = m.getBoundingClientRect(); return b.width > 0 && b.height > 0; }).length}))""")
            failed = page.evaluate("document.documentElement.getAttribute('data-charts-failed')")
            # the model chart redraws for another blocking rule
            page.select_option("[data-chart=model_weights] select", index=1)
            redrawn = page.evaluate("document.querySelectorAll('[data-chart=model_weights] svg .mark').length")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert not [m for m in console if m[0] == "error"], console
    assert requests == [url]  # nothing but the page itself: no CDN, no font, no beacon
    names = {c["name"] for c in charts}
    assert EXPECTED_CHARTS <= names, EXPECTED_CHARTS - names
    for chart in charts:
        assert chart["error"] is None and chart["marks"] > 0 and chart["visible"] > 0, chart
    assert failed == "0"
    assert redrawn > 0
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000 and (tmp_path / "report.png").stat().st_size > 10_000


def _chart_data(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.DOTALL).group(1))


@pytest.mark.slow
def test_report_is_self_contained_and_shows_what_the_run_did(stewarded):
    page = (stewarded["second"] / "report.html").read_text()
    assert "<link" not in page and " src=" not in page and "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page  # the page may not load anything, even if it tried
    data = _chart_data(page)
    elements = set(re.findall(r'data-chart="([^"]+)"', page[:page.index("<script")]))
    assert elements == set(data["charts"])
    summary = json.loads((stewarded["second"] / "run_summary.json").read_text())
    charts = data["charts"]
    # the numbers are the run's: stages, the weight histogram, the review queue, clusters, history
    assert charts["stage_timings"]["labels"] == [s["stage"] for s in summary["stages"]]
    assert sum(charts["match_weights"]["series"][0]["values"]) == summary["matching"]["candidate_pairs"]
    queue = pd.read_parquet(stewarded["second"] / "review_queue.parquet")
    assert sum(sum(s["values"]) for s in charts["review_bands"]["series"]) == len(queue)
    persons = pd.read_parquet(stewarded["second"] / "persons.parquet")
    assert sum(charts["cluster_sizes"]["series"][0]["values"]) == int((persons["records"] > 0).sum())
    assert charts["history_merges"]["labels"] == ["1", "2"]
    assert charts["history_fp"]["series"][0]["values"] == [None, 0.5]
    # the waterfall of the top review item adds up to its match weight
    top = charts["waterfall_0"]
    assert sum(s["value"] for s in top["steps"]) == pytest.approx(top["total"], abs=1e-6)
    assert top["total"] == pytest.approx(queue["match_weight"].iloc[0])
    # precision / recall / F1 against the threshold, from the truth
    curve = {s["name"]: s["values"] for s in charts["pr_curve"]["series"]}
    assert set(curve) == {"precision", "recall", "f1"} and len(charts["pr_curve"]["x"]) > 10
    assert all(0 <= v <= 1 for values in curve.values() for v in values)
    assert curve["recall"] == sorted(curve["recall"], reverse=True)  # recall never rises with the threshold
    assert "review decisions applied in this run" in page.lower()


@pytest.mark.slow
def test_without_truth_the_report_says_so(stewarded):
    page = (stewarded["first"] / "report.html").read_text()
    assert "No truth given" in page
    data = _chart_data(page)
    assert "pr_curve" not in data["charts"]
    # a first run merged and split no one: a note, not a chart of zeros
    assert "history_merges" not in data["charts"] and "No person was merged or split in any run so far." in page
    assert data["charts"]["history_queue"]["x"] == ["1"]
    assert "history_fp" not in data["charts"]  # no decisions on automatic merges yet


@pytest.mark.slow
def test_a_report_that_cannot_be_built_never_costs_the_outputs(stewarded, tmp_path, monkeypatch):
    import resolver.outputs.report
    from resolver.pipeline import run

    def broken(*args, **kwargs):
        raise RuntimeError("chart data exploded")

    monkeypatch.setattr(resolver.outputs.report, "build_report", broken)
    config = load_config(stewarded["config"])
    config.run.output_dir = str(tmp_path / "out")
    run(config)
    out = tmp_path / "out"
    for name in ("identity_map", "persons", "golden_records", "review_queue", "match_links"):
        assert len(pd.read_parquet(out / f"{name}.parquet")) > 0
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["report"]["error"] == "RuntimeError: chart data exploded"
    assert "could not be built" in (out / "report.html").read_text()


@pytest.mark.slow
def test_forget_rebuilds_the_report_without_the_person(stewarded, tmp_path):
    from resolver.state.review import load_decisions

    root = tmp_path / "copy"
    shutil.copytree(stewarded["root"], root, ignore=shutil.ignore_patterns("out-first"))
    config, state, out = root / "resolver.yaml", root / "state", root / "out"
    queue = pd.read_parquet(out / "review_queue.parquet")
    top = queue.iloc[0]
    before = (out / "report.html").read_text()
    shown = [top["record_key_l"], str(top["email_l"])]
    assert all(value in before for value in shown)
    assert main(["forget", "--config", str(config), "--state", str(state), "--record", top["record_key_l"], "-q"]) == EXIT_OK
    after = (out / "report.html").read_text()
    assert not [value for value in shown if value in after]
    assert set(_chart_data(after)["charts"]) >= {"stage_timings", "cluster_sizes", "history_merges"}

    guarded = stewarded["picks"]["accept_guarded"][1]  # a record a decision names
    decisions = len(load_decisions(state))
    assert main(["forget", "--config", str(config), "--state", str(state), "--record", guarded.split(":", 1)[1],
                 "-q"]) == EXIT_OK
    left = load_decisions(state)
    assert len(left) == decisions - 1
    assert guarded.split(":", 1)[1] not in set(left["record_key_l"]) | set(left["record_key_r"])


def test_history_is_replaced_atomically(tmp_path, monkeypatch):
    import resolver.state.files
    from resolver.state.history import HISTORY_FILE, append_history, load_history

    row = {"run_id": "r1", "time": pd.Timestamp.now(tz="UTC"), "records": 3, "persons": 2, "kept": 0, "new": 2,
           "merged": 0, "split": 0, "links": 1, "review_queue": 1, "rejected_rows": 0, "decisions": 0, "accepted": 0,
           "rejected": 0, "auto_merge_decided": 0, "estimated_fp_rate": float("nan"), "seconds": 1.0, "output_dir": "x"}
    append_history(tmp_path, row)

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(resolver.state.files.os, "replace", crash)
    with pytest.raises(OSError):
        append_history(tmp_path, {**row, "run_id": "r2"})
    monkeypatch.undo()
    assert list(load_history(tmp_path)["run_id"]) == ["r1"]  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [".history.lock", HISTORY_FILE]
    append_history(tmp_path, {**row, "run_id": "r2"})
    assert list(load_history(tmp_path)["run_id"]) == ["r1", "r2"]


@pytest.mark.slow
def test_a_missing_truth_is_a_usage_error_before_the_run(stewarded, tmp_path, capsys):
    from resolver.cli import EXIT_CONFIG

    before = (stewarded["second"] / "run_summary.json").read_text()
    assert main(["run", "--config", str(stewarded["config"]), "--out", str(tmp_path / "out"),
                 "--truth", str(tmp_path / "no-truth"), "-q"]) == EXIT_CONFIG
    assert "no truth records" in " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert not (tmp_path / "out").exists() and (stewarded["second"] / "run_summary.json").read_text() == before
