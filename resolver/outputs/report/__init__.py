"""The run report: one self-contained HTML file (report.html) per run.

Python gathers what each chart needs from the run's output tables into one JSON document; a
small hand-written script inside the page (report.js, inlined) draws every chart as SVG. No
library, no font, no request: the page opens offline. Every chart is an element with
data-chart="NAME"; the script gives it data-marks (the shapes it drew) or data-error.

`build_report` works from the output tables alone (plus the summary, the model, the state's run
history and decisions, and optionally the truth), so the same report is built by a run (from its
tables in memory) and by `resolver forget` (from the rewritten outputs: the report never keeps
an erased person).
"""

from __future__ import annotations

import html
import json
import math
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from resolver.ids import item_ids, record_member_keys
from resolver.outputs.evaluate import cluster_metrics, matching_metrics_of, read_truth_records
from resolver.outputs.writers import OUTPUT_TABLES
from resolver.state.history import history_row, load_history, with_row
from resolver.state.review import load_decisions

REPORT_FILE = "report.html"
TOP_CLUSTERS = 10
CLUSTER_RECORDS = 25
TOP_HUBS = 20
TOP_REVIEW = 10
NAME_FIELDS = ("first_name", "last_name", "email", "phone", "city")


def _asset(name: str) -> str:
    return resources.files("resolver.outputs.report").joinpath(name).read_text(encoding="utf-8")


def _e(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return html.escape(str(value))


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return f"{float(value):,.{digits}f}"


def _clean(obj):
    """JSON-safe: NaN and infinities become null, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _table(frame: pd.DataFrame, numeric: set[str] = frozenset()) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, row):
            if column in numeric:
                cells.append(f'<td class="n">{_num(value) if isinstance(value, (float, np.floating)) else _e(value)}</td>')
            else:
                cells.append(f"<td>{_e(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _chart(name: str) -> str:
    return f'<div class="chart" data-chart="{_e(name)}"></div>'


class _Report:
    def __init__(self):
        self.charts: dict[str, dict] = {}
        self.sections: list[tuple[str, str, str]] = []  # (anchor, title, body)

    def chart(self, name: str, spec: dict, empty: str = "No data for this chart in this run.") -> str:
        """The chart's placeholder, or, when the spec holds nothing to draw, a note saying so
        (never empty axes)."""
        if not _has_data(spec):
            return f'<p class="note empty-chart" data-empty-chart="{_e(name)}">{_e(empty)}</p>'
        self.charts[name] = spec
        return _chart(name)

    def section(self, anchor: str, title: str, body: str) -> None:
        self.sections.append((anchor, title, body))


def _has_data(spec: dict) -> bool:
    """Whether a chart spec has a value to draw: a non-zero bar, a finite point, a step, a weight."""
    kind = spec.get("type")
    if kind == "waterfall":
        return bool(spec.get("steps"))
    if kind == "weights":
        return bool(spec.get("labels"))
    values = [v for series in spec.get("series", []) for v in series.get("values", [])
              if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if kind == "line":
        return bool(values)
    return any(v != 0 for v in values)


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------
def _overview(r: _Report, summary: dict, tables: dict) -> None:
    rows = summary.get("rows", {})
    persons = summary.get("persons", {})
    matching = summary.get("matching") or {}
    decisions = matching.get("decisions") or {}
    cards = [
        ("rows read", rows.get("read")), ("rows resolved", rows.get("resolved")), ("rows rejected", rows.get("rejected")),
        ("persons", persons.get("total")), ("known / anonymous", f"{persons.get('known', 0):,} / {persons.get('anonymous', 0):,}"),
        ("largest person (records)", persons.get("largest_by_records")),
    ]
    if matching:
        cards += [("candidate pairs", matching.get("candidate_pairs")), ("auto-merged links", decisions.get("link")),
                  ("review queue", len(tables["review_queue"]) if tables.get("review_queue") is not None else 0)]
    ids = summary.get("persistent_ids")
    if ids:
        cards += [("ids kept / new", f"{ids.get('kept', 0):,} / {ids.get('new', 0):,}"),
                  ("merged away / split off", f"{ids.get('merged_away', 0):,} / {ids.get('split_off', 0):,}")]
    cards.append(("wall time", f"{summary.get('seconds', 0):.2f} s"))
    body = '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{_e(v if isinstance(v, str) else _num(v))}</div><div class="k">{_e(k)}</div></div>'
        for k, v in cards) + "</div>"
    if not rows.get("accounted", True):
        body += '<p class="warn">Not every input row is accounted for (read ≠ resolved + rejected + suppressed).</p>'
    warnings = summary.get("warnings") or []  # the configuration's, and attributes their normalizer nulled
    if warnings:
        body += '<p class="warn">Warnings:</p><ul>' + "".join(f"<li>{_e(w)}</li>" for w in warnings) + "</ul>"
    rejects = tables.get("rejects")
    if rejects is not None and len(rejects):
        by_reason = rejects.groupby(["source", "reason"], observed=True).size().reset_index(name="rows")
        by_reason = by_reason.sort_values("rows", ascending=False).head(15)
        body += "<h3>Rejected rows by reason</h3>" + _table(by_reason, {"rows"})
    r.section("overview", "Overview", body)


def _stages(r: _Report, summary: dict) -> None:
    stages = [s for s in summary.get("stages", []) if s.get("seconds") is not None]
    if not stages:
        r.section("stages", "Stage timings", '<p class="note">No stage timings in this run.</p>')
        return
    body = r.chart("stage_timings", {
        "type": "hbar", "labels": [s["stage"] for s in stages], "unit": " s", "labelWidth": 260,
        "series": [{"name": "seconds", "values": [float(s["seconds"]) for s in stages]}]})
    body += ('<p class="note">Wall seconds per stage; <code>read:</code> and <code>normalize:</code> rows are summed '
             "over worker processes (they run inside the ingest stage).</p>")
    r.section("stages", "Stage timings", body)


def _probability_weight(p: float) -> float:
    return math.log2(p / (1 - p))


def _matching(r: _Report, summary: dict, tables: dict, model: dict | None) -> None:
    matching = summary.get("matching")
    if not matching:
        r.section("matching", "Match weights and model", '<p class="note">No probabilistic matching in this run.</p>')
        return
    body = ""
    health = matching.get("model_health")
    hist = matching.get("weight_histogram")
    scored = tables.get("scored_pairs")
    thresholds = matching.get("thresholds", {})
    if hist:
        edges, counts = hist["edges"], hist["counts"]
        note = "every candidate pair (weights beyond the ends are counted in the end bins)"
    elif scored is not None and len(scored):
        edges = list(np.arange(-40.0, 41.0, 1.0))
        counts = np.histogram(np.clip(scored["match_weight"].to_numpy(), -40, 40), bins=edges)[0].tolist()
        note = "scored pairs kept in scored_pairs.parquet"
    else:
        edges, counts, note = None, None, ""
    if edges is not None:
        nonzero = [i for i, c in enumerate(counts) if c]
        lo, hi = (min(nonzero), max(nonzero) + 1) if nonzero else (0, len(counts))
        labels = [f"{edges[i]:g}" for i in range(lo, hi)]
        markers = []
        for name, p in (("review", thresholds.get("review")), ("auto-merge", thresholds.get("auto_merge"))):
            if p and 0 < p < 1:
                w = _probability_weight(p)
                markers.append({"at": (w - edges[lo]) / (edges[1] - edges[0]), "label": f"{name} ({w:.1f})"})
        body += "<h3>Match-weight distribution</h3>" + r.chart("match_weights", {
            "type": "vbar", "labels": labels, "log": True, "xLabel": "match weight (bits)", "markers": markers,
            "series": [{"name": "pairs", "values": counts[lo:hi]}]})
        body += f'<p class="note">Pairs per 1-bit bin of match weight ({_e(note)}), log scale; the dashed lines are the thresholds.</p>'
    if model:
        labels, m, u, h, weights = [], [], [], [], []
        for c in model["comparisons"]:
            for level in c["levels"]:
                labels.append(f"{c['name']}: {level['label']}")
                m.append(level["m"])
                u.append(level["u_random"])
                h.append(level.get("h", level["u_random"]))
                weights.append([level["weight_by_rule"][rule] for rule in model["rules"]])
        series = [{"name": "m (matches)", "values": m}, {"name": "u (random pairs)", "values": u}]
        if model.get("household_rate_by_rule"):
            series.insert(1, {"name": "h (one household, two people)", "values": h})
        body += "<h3>m and u per comparison level</h3>" + r.chart("m_u", {
            "type": "hbar", "labels": labels, "labelWidth": 240, "series": series})
        body += "<h3>Match weights per comparison level</h3>" + r.chart("model_weights", {
            "type": "weights", "labels": labels, "rules": model["rules"], "weights": weights})
        body += ('<p class="note">Weight = log2(m / u) with u over random record pairs; 0 where the rule blocks on '
                 "the compared column. Green: evidence for a match, red: against. A pair also loses the bits a "
                 "household explains (its household weight).</p>")
    if health and health.get("problems"):
        body += ("<p class=\"warn\">The model failed its health check"
                 + (" and merged nothing automatically" if health.get("auto_merge_withheld") else "") + ":</p><ul>"
                 + "".join(f"<li>{_e(w)}</li>" for w in health["problems"]) + "</ul>")
    r.section("matching", "Match weights and model", body)


def _clusters(r: _Report, tables: dict) -> None:
    persons, identity, golden = tables.get("persons"), tables.get("identity_map"), tables.get("golden_records")
    if persons is None or not len(persons):
        r.section("clusters", "Clusters", '<p class="note">No persons.</p>')
        return
    sizes = persons.loc[persons["records"] > 0, "records"].value_counts().sort_index()
    body = r.chart("cluster_sizes", {
        "type": "vbar", "labels": [str(int(s)) for s in sizes.index], "log": True, "xLabel": "records per person",
        "series": [{"name": "persons", "values": [int(v) for v in sizes.to_numpy()]}]})
    anonymous = int((persons["records"] == 0).sum())
    body += f'<p class="note">Persons by number of CRM records (log scale); {anonymous:,} anonymous persons (events only) not shown.</p>'
    # Only persons as large as the TOP_CLUSTERS-th largest can be among the largest: sort those alone.
    records = persons["records"].to_numpy()
    cut = max(len(records) - TOP_CLUSTERS, 0)
    floor = np.partition(records, cut)[cut]
    largest = persons[records >= floor].sort_values(["records", "person_id"], ascending=[False, True]).head(TOP_CLUSTERS)
    body += "<h3>Largest persons</h3>"
    golden_by_id = (golden[golden["person_id"].isin(largest["person_id"])].set_index("person_id")
                    if golden is not None and len(golden) else None)
    members = identity[identity["person_id"].isin(largest["person_id"])] if identity is not None else None
    for p in largest.itertuples(index=False):
        name = ""
        if golden_by_id is not None and p.person_id in golden_by_id.index:
            g = golden_by_id.loc[p.person_id]
            name = " ".join(str(g[f]) for f in NAME_FIELDS if f in g.index and pd.notna(g[f]))
        rows = members[members["person_id"] == p.person_id] if members is not None else pd.DataFrame()
        shown = [c for c in ("source", "record_key", "status", "linked_by", "match_probability") if c in rows.columns]
        body += (f"<details><summary><code>{_e(p.person_id)}</code> — {int(p.records):,} records, {int(p.sources)} "
                 f"source(s), {int(p.identifiers):,} identifiers — {_e(name)}</summary>"
                 + _table(rows[shown].head(CLUSTER_RECORDS), {"match_probability"})
                 + (f'<p class="note">first {CLUSTER_RECORDS} of {len(rows):,} records</p>' if len(rows) > CLUSTER_RECORDS else "")
                 + "</details>")
    r.section("clusters", "Clusters", body)


def _policy(r: _Report, tables: dict) -> None:
    actions = tables.get("policy_actions")
    if actions is None or not len(actions):
        r.section("policy", "Identifier policy", '<p class="note">No policy actions: no blocked values, hubs or cut links.</p>')
        return
    counts = actions.assign(id_type=actions["id_type"].fillna("")).groupby(
        ["action", "id_type"], observed=True).size().reset_index(name="n").sort_values(["action", "n"], ascending=[True, False])
    body = "<h3>Policy actions</h3>" + r.chart("policy_actions", {
        "type": "hbar", "labels": [f"{a} · {t}" if t else a for a, t in zip(counts["action"], counts["id_type"])],
        "series": [{"name": "actions", "values": counts["n"].astype(int).tolist()}]})
    body += ('<p class="note">blocked: junk values never used as identifiers; invalid: values that failed normalization; '
             "hub_capped: identifiers linked to too many records (no longer evidence); limit_cut: links cut because a "
             "person would hold more values of a limited type than allowed.</p>")
    hubs = actions[actions["action"] == "hub_capped"].sort_values("count", ascending=False).head(TOP_HUBS)
    if len(hubs):
        body += "<h3>Identifier hubs that were capped (no longer evidence)</h3>" + r.chart("hubs", {
            "type": "hbar", "labels": [f"{t}: {v}" for t, v in zip(hubs["id_type"], hubs["value"])],
            "series": [{"name": "records holding it", "values": hubs["count"].astype(int).tolist()}]})
        body += _table(hubs[["id_type", "value", "count", "reason"]], {"count"})
    else:
        body += '<p class="note">No identifier was capped as a hub.</p>'
    r.section("policy", "Identifier policy", body)


def _band_kind(reason: str) -> str:
    if reason.startswith("guard"):
        return "refused by a guard"
    if reason.startswith("cannot-link"):
        return "held by a rejection"
    if "never merged automatically" in reason:
        return "must-agree veto"
    return "review band"


def _review(r: _Report, summary: dict, tables: dict) -> None:
    queue = tables.get("review_queue")
    matching = summary.get("matching") or {}
    if queue is None:
        r.section("review", "Review queue", '<p class="note">No probabilistic matching in this run: no review queue.</p>')
        return
    body = ""
    applied = matching.get("review_decisions")
    if applied:
        counts = [(k.replace("_", " "), v) for k, v in applied.items() if k != "cannot_link_conflicts"]
        body += ("<h3>Review decisions applied in this run</h3>"
                 + _table(pd.DataFrame(counts, columns=["measure", "count"]), {"count"}))
        conflicts = applied.get("cannot_link_conflicts") or []
        if conflicts:
            body += (f'<p class="warn">{len(conflicts)} rejected pair(s) are still in one person (a cannot-link does not '
                     "split what identifiers join):</p>" + _table(pd.DataFrame(conflicts)))
    if not len(queue):
        r.section("review", "Review queue", body + '<p class="note">The review queue is empty.</p>')
        return
    probability = queue["probability"].to_numpy()
    lo = math.floor(min(probability.min(), matching.get("thresholds", {}).get("review", 0.7)) * 20) / 20
    edges = np.round(np.arange(lo, 1.0001, 0.05), 2)
    if len(edges) < 2:
        edges = np.array([lo, 1.0])
    band = np.clip(np.searchsorted(edges, probability, side="right") - 1, 0, len(edges) - 2)
    kinds = queue["reason"].astype(str).map(_band_kind).to_numpy()
    names = ["review band", "must-agree veto", "refused by a guard", "held by a rejection"]
    series = [{"name": k, "values": np.bincount(band[kinds == k], minlength=len(edges) - 1).astype(int).tolist()}
              for k in names if (kinds == k).any()]
    body += f"<h3>{len(queue):,} pairs to review, by probability band</h3>" + r.chart("review_bands", {
        "type": "vbar", "stacked": True, "xLabel": "match probability (bands of 0.05, from the value shown)",
        "labels": [f"{a:.2f}" for a in edges[:-1]], "series": series})
    candidates = tables.get("merge_candidates")
    if candidates is not None and len(candidates):
        body += (f'<h3>{len(candidates):,} duplicates to merge in Salesforce</h3><p class="note">Pairs of one '
                 "Salesforce object the model matched but a guard kept apart (each holds its own record id): the "
                 'CRM\'s own duplicates. <a href="merge_candidates.csv">merge_candidates.csv</a> lists them for '
                 "Salesforce's merge tools (object, MasterRecordId: the survivor by survivorship, "
                 "DuplicateRecordId); once merged there, the next run follows the merge.</p>"
                 + _table(candidates.head(10)[["object", "MasterRecordId", "DuplicateRecordId", "probability"]],
                          {"probability"}))
    top = queue.head(TOP_REVIEW)
    ids = _item_ids(top, tables.get("identity_map"))
    comparisons = [c[:-len("_level")] for c in queue.columns if c.endswith("_level")]
    body += (f"<h3>Top {len(top)} items</h3><p class=\"note\">Decide with <code>resolver review decide --state DIR "
             "--item ID --accept|--reject</code>.</p>")
    for i, (row, item) in enumerate(zip(top.to_dict("records"), ids)):
        steps = [{"label": f"prior ({row['blocking_rule']})", "value": float(row["prior_weight"])}]
        detail = []
        for c in comparisons:
            steps.append({"label": f"{c}: {row[f'{c}_level']}", "value": float(row[f"{c}_weight"])})
            detail.append({"comparison": c, "left": row[f"{c}_l"], "right": row[f"{c}_r"], "level": row[f"{c}_level"],
                           "weight": float(row[f"{c}_weight"])})
        if row.get("household_weight"):  # the bits lost because a household explains the pair as well
            steps.append({"label": "household", "value": float(row["household_weight"])})
        chart = r.chart(f"waterfall_{i}", {"type": "waterfall", "steps": steps, "total": float(row["match_weight"]),
                                             "probability": float(row["probability"])})
        body += (f"<details{' open' if i < 3 else ''}><summary><code>{_e(item)}</code> p = {row['probability']:.3f} — "
                 f"{_e(row['source_l'])}:{_e(row['record_key_l'])} ↔ {_e(row['source_r'])}:{_e(row['record_key_r'])} — "
                 f"{_e(row['reason'])}</summary>{chart}{_table(pd.DataFrame(detail), {'weight'})}</details>")
    r.section("review", "Review queue", body)


def _item_ids(rows: pd.DataFrame, identity: pd.DataFrame | None) -> list[str]:
    if identity is None or not len(rows):
        return [""] * len(rows)
    by_id = identity.set_index("record_id")
    keys = {}
    for side in ("l", "r"):
        picked = by_id.loc[rows[f"record_id_{side}"].to_numpy(), ["source", "source_key"]].reset_index(drop=True)
        keys[side] = record_member_keys(picked)
    return list(item_ids(keys["l"], keys["r"]))


def _conflicts(r: _Report, tables: dict) -> None:
    conflicts = tables.get("conflicts")
    if conflicts is None or not len(conflicts):
        r.section("conflicts", "Conflicts", '<p class="note">No conflicting values in any person.</p>')
        return
    per_field = conflicts.groupby("field", observed=True)["person_id"].nunique().sort_values(ascending=False)
    body = r.chart("conflicts", {"type": "hbar", "labels": [str(f) for f in per_field.index],
                                 "series": [{"name": "persons", "values": per_field.astype(int).tolist()}]})
    review = int(conflicts.loc[conflicts["needs_review"].fillna(False).astype(bool), "person_id"].nunique()) \
        if "needs_review" in conflicts else 0
    body += (f'<p class="note">Persons whose records disagree on each field (survivorship picked one value; see '
             f"conflicts.parquet). {review:,} persons have names that disagree beyond the similarity threshold.</p>")
    r.section("conflicts", "Conflicts", body)


def _truth(r: _Report, tables: dict, truth: pd.DataFrame | None, summary: dict) -> None:
    if truth is None:
        r.section("quality", "Quality against truth",
                  '<p class="note">No truth given: run with <code>--truth DIR</code> (the truth folder '
                  "<code>resolver generate</code> writes) for precision, recall and F1 curves.</p>")
        return
    truth = truth.rename(columns={"person_id": "true_person"})
    identity = tables["identity_map"]
    records = truth.merge(identity[["source", "record_key", "person_id", "status"]], on=["source", "record_key"], how="left")
    records = records[records["status"].astype("str").fillna("rejected") != "deleted"].reset_index(drop=True)
    metrics = cluster_metrics(records["person_id"], records["true_person"]).as_dict()
    body = _table(pd.DataFrame([{"scope": "CRM records", **{k: metrics[k] for k in (
        "pairwise_precision", "pairwise_recall", "pairwise_f1", "bcubed_precision", "bcubed_recall", "bcubed_f1",
        "overmerged_clusters", "split_true_persons")}}]), {"pairwise_precision", "pairwise_recall", "pairwise_f1",
                                                          "bcubed_precision", "bcubed_recall", "bcubed_f1"})
    scored, keys = tables.get("scored_pairs"), tables.get("blocking_keys")
    if scored is None or keys is None:
        body += '<p class="note">No probabilistic matching: no threshold curves.</p>'
        r.section("quality", "Quality against truth", body)
        return
    floor = max(0.5, float((summary.get("matching") or {}).get("scored_pairs_min", 0.5) or 0.5))
    thresholds = [round(t, 2) for t in np.arange(floor, 0.995, 0.01)]
    m = matching_metrics_of(identity, keys, scored, truth, thresholds)
    rows = m["thresholds"]
    body += "<h3>Matching precision, recall and F1 against the threshold</h3>" + r.chart("pr_curve", {
        "type": "line", "x": [row["threshold"] for row in rows], "yMax": 1.0, "xLabel": "probability threshold",
        "series": [{"name": k, "values": [row[k] for row in rows]} for k in ("precision", "recall", "f1")]})
    body += (f'<p class="note">Pairwise, over the {m["true_pairs_left_to_matching"]:,} true pairs the identifiers had not '
             f"joined; blocking recall {m['blocking_recall']:.3f}. Pairs scored below the output floor count as not "
             "linked.</p>")
    r.section("quality", "Quality against truth", body)


def _history(r: _Report, history: pd.DataFrame | None, persistent: bool) -> None:
    if history is None or not len(history):
        r.section("history", "Run history", '<p class="note">No history.</p>')
        return
    runs = [str(i + 1) for i in range(len(history))]
    if not persistent:  # one run: charts over runs would have a single point
        shown = history[["run_id", "records", "persons", "merged", "split", "links", "review_queue", "rejected_rows"]]
        r.section("history", "Run history", '<p class="note">This run had no state directory (<code>--state</code>): '
                  "no history is kept, so there is nothing to chart over runs. This run:</p>"
                  + _table(shown.tail(1), {"records", "persons", "merged", "split", "links", "review_queue",
                                           "rejected_rows"}))
        return
    body = ""

    def series(name: str, column: str) -> dict:
        return {"name": name, "values": [None if pd.isna(v) else float(v) for v in history[column]]}

    body += "<h3>Persons merged and split per run</h3>" + r.chart("history_merges", {
        "type": "vbar", "labels": runs, "xLabel": "run",
        "series": [{"name": "merged", "values": history["merged"].astype(int).tolist()},
                   {"name": "split", "values": history["split"].astype(int).tolist()}]},
        empty="No person was merged or split in any run so far.")
    body += "<h3>Review queue and rejected rows per run</h3>" + r.chart("history_queue", {
        "type": "line", "x": runs, "xLabel": "run",
        "series": [series("review queue", "review_queue"), series("rejected rows", "rejected_rows")]})
    fp = history["estimated_fp_rate"]
    if fp.notna().any():
        body += "<h3>Estimated false-positive rate of automatic merges</h3>" + r.chart("history_fp", {
            "type": "line", "x": runs, "xLabel": "run", "yMax": min(1.0, max(0.05, 1.2 * float(fp.max()))),
            "series": [series("est. FP rate", "estimated_fp_rate")]})
        body += ('<p class="note">Rejected / decided among the pairs reviewers decided that scored at or above '
                 "auto-merge, by the decisions recorded before each run.</p>")
    else:
        body += ('<p class="note">No estimated false-positive rate yet: it needs review decisions on pairs scored at or '
                 "above auto-merge (<code>resolver review list --links N</code> lists merged pairs to audit).</p>")
    shown = history[["run_id", "time", "records", "persons", "merged", "split", "links", "review_queue",
                     "rejected_rows", "decisions", "estimated_fp_rate"]].copy()
    shown.insert(0, "run", runs)
    shown["time"] = shown["time"].astype(str).str.slice(0, 19)
    body += _table(shown.iloc[::-1].head(30), {"records", "persons", "merged", "split", "links", "review_queue",
                                              "rejected_rows", "decisions", "estimated_fp_rate"})
    r.section("history", "Run history", body)


# ---------------------------------------------------------------------------------------------
def build_report(tables: dict[str, pd.DataFrame | None], summary: dict, model: dict | None = None,
                 history: pd.DataFrame | None = None, truth: pd.DataFrame | None = None,
                 persistent: bool = True) -> str:
    """The report page. `tables`: output tables by name (as OUTPUT_TABLES; missing ones may be None);
    `history`: the run history including this run; `truth`: truth records (source, record_key,
    person_id) for the quality curves."""
    r = _Report()
    _overview(r, summary, tables)
    _stages(r, summary)
    _matching(r, summary, tables, model)
    _clusters(r, tables)
    _policy(r, tables)
    _review(r, summary, tables)
    _conflicts(r, tables)
    _truth(r, tables, truth, summary)
    _history(r, history, persistent)
    data = json.dumps(_clean({"run_id": summary.get("run_id"), "charts": r.charts}), allow_nan=False)
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    nav = "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t, _ in r.sections)
    body = "".join(f'<section id="{a}"><h2>{_e(t)}</h2>{b}</section>' for a, t, b in r.sections)
    backend = summary.get("backend")
    meta = (f"run {_e(summary.get('run_id'))} · started {_e(summary.get('started'))} · resolver "
            f"{_e(summary.get('resolver_version'))}" + (f" · backend {_e(backend.get('backend', ''))}" if isinstance(backend, dict) else ""))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">"
        f"<title>resolver run {_e(summary.get('run_id'))}</title><style>{_asset('report.css')}</style></head><body>"
        f"<header><h1>resolver run report</h1><div class=\"meta\">{meta}</div></header><nav>{nav}</nav>"
        f"<main>{body}</main>"
        f'<script type="application/json" id="report-data">{data}</script>'
        f"<script>{_asset('report.js')}</script></body></html>\n"
    )


def tables_of(resolution) -> dict[str, pd.DataFrame | None]:
    return {name: getattr(resolution, name, None) for name in OUTPUT_TABLES}


def read_truth(path: Path) -> pd.DataFrame:
    """Truth records (evaluate.TRUTH_FORMAT: a truth folder, or a .parquet or .csv file)."""
    return read_truth_records(path)[["source", "record_key", "person_id"]]


def report_from_outputs(out_dir: Path, tables: dict[str, pd.DataFrame] | None = None,
                        state_dir: Path | None = None) -> str:
    """The report of an output folder as it is on disk (with `tables` replacing some of its tables):
    what `resolver forget` writes after removing a person."""
    out_dir = Path(out_dir)
    tables = dict(tables or {})
    loaded = {name: tables[name] if name in tables else pd.read_parquet(out_dir / file) if (out_dir / file).exists()
              else None for name, file in OUTPUT_TABLES.items()}
    summary = json.loads((out_dir / "run_summary.json").read_text(encoding="utf-8"))
    model = json.loads((out_dir / "model.json").read_text(encoding="utf-8")) if (out_dir / "model.json").exists() else None
    history = load_history(state_dir) if state_dir is not None else None
    try:
        return build_report(loaded, summary, model, history, None, persistent=state_dir is not None)
    except Exception as exc:  # noqa: BLE001 - the old page must go whatever happens
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>resolver run report</title>"
                f"</head><body><h1>resolver run report</h1><p>The report could not be rebuilt after an erasure: "
                f"{_e(type(exc).__name__)}: {_e(exc)}</p></body></html>\n")


def report_for_run(res, state_dir: Path | None, decisions: pd.DataFrame | None,
                   truth: Path | None = None) -> tuple[str, dict]:
    """A run's report page and its history row. A report that cannot be built never stops the
    run: the page then says why (and so does the summary, under `report`)."""
    started = time.perf_counter()
    row = history_row(res.summary, res.review_queue, decisions if decisions is not None else load_decisions(None))
    try:
        history = with_row(load_history(state_dir), row)
        truth_records = read_truth(truth) if truth is not None else None
        model = res.model.to_dict() if res.model is not None else None
        res.summary["report"] = {"file": REPORT_FILE, "truth": str(truth) if truth is not None else None}
        page = build_report(tables_of(res), res.summary, model, history, truth_records, persistent=state_dir is not None)
    except Exception as exc:  # noqa: BLE001 - the outputs matter more than their report
        res.summary["report"] = {"file": REPORT_FILE, "error": f"{type(exc).__name__}: {exc}"}
        page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>resolver run report</title>"
                f"</head><body><h1>resolver run report</h1><p>The report could not be built: {_e(type(exc).__name__)}: "
                f"{_e(exc)}</p><p>The run's other outputs are complete.</p></body></html>\n")
    res.summary["report"]["seconds"] = round(time.perf_counter() - started, 3)
    return page, row
