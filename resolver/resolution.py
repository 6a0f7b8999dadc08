"""What a run returns: the Resolution (its output tables and run-summary sections, typed), the
StageLog that times each stage, and the run summary built from both.

The pipeline (resolver/pipeline.py) fills a Resolution stage by stage; the writers
(resolver/outputs/writers.py) and the state (resolver/state/store.py) read it.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

import pandas as pd

from resolver.version import __version__
from resolver.compute import heap
from resolver.compute.heap import peak_rss_mb
from resolver.compute.jit import jit_seconds

if TYPE_CHECKING:  # the stages' result types, named here; the stages import this module
    from resolver.ingest.tables import SourceTables
    from resolver.matching.match import MatchResult
    from resolver.matching.model import FSModel
    from resolver.state.store import CarriedIds

# Told of each stage as it starts ("start", its entry: name, rows in) and ends ("end", the entry with
# seconds, rows out, peak memory): the CLI's progress lines and JSON logs.
Reporter = Callable[[str, dict], None]


@dataclass
class StageLog:
    stages: list[dict] = field(default_factory=list)
    report: Reporter | None = None

    @contextmanager
    def stage(self, name: str, rows_in: int | None = None):
        entry = {"stage": name, "rows_in": rows_in, "rows_out": None}
        if self.report:
            self.report("start", entry)
        start, jit = time.perf_counter(), jit_seconds()
        yield entry
        heap.trim()  # what the stage freed goes back to the system
        entry["seconds"] = round(time.perf_counter() - start, 4)
        if jit_seconds() > jit:  # numba compiling (first run on this machine) or loading its cache
            entry["jit_seconds"] = round(jit_seconds() - jit, 4)
        entry["peak_rss_mb"] = round(peak_rss_mb(), 1)
        self.stages.append(entry)
        if self.report:
            self.report("end", entry)


# The records' columns read once golden records are built (their attributes are read until then).
RECORD_COLUMNS = ["record_id", "source", "record_key", "source_key", "trust", "timestamp", "is_deleted", "file", "row"]


@dataclass
class Resolution:
    records: pd.DataFrame  # RECORD_COLUMNS
    identity_map: pd.DataFrame
    identifier_map: pd.DataFrame
    persons: pd.DataFrame
    policy_actions: pd.DataFrame
    rejects: pd.DataFrame
    summary: dict
    match_links: pd.DataFrame | None = None
    review_queue: pd.DataFrame | None = None
    merge_candidates: pd.DataFrame | None = None  # guard-refused pairs of one Salesforce object (persons/merge_candidates)
    scored_pairs: pd.DataFrame | None = None
    blocking_keys: pd.DataFrame | None = None
    model: FSModel | None = None  # saved as model.json
    golden_records: pd.DataFrame | None = None
    conflicts: pd.DataFrame | None = None
    matching: dict | None = None  # run-summary section
    golden: dict | None = None  # run-summary section
    carried: CarriedIds | None = None  # when the run started from a state
    lineage: pd.DataFrame | None = None  # every merge and split so far (with a state)
    match: MatchResult | None = None  # its pair cache goes to the state
    anonymous_map: pd.DataFrame | None = None  # anonymous visitor stitching: anonymous id -> person
    stitch_review: pd.DataFrame | None = None
    stitching: dict | None = None  # run-summary section
    attributes: dict | None = None  # run-summary section: per attribute, its kind and values it nulled
    warnings: list[str] = field(default_factory=list)  # run-summary `warnings` (config and attributes)


def run_summary(guards: bool, parts: list[SourceTables], res: Resolution, log: StageLog, run_id: str,
                started: datetime) -> dict:
    """run_summary.json: every input row accounted for (read = resolved + rejected + suppressed,
    per source and in all), the output tables' counts, the sections the stages wrote, the stages."""
    per_source: dict[str, dict] = {}
    for p in parts:
        entry = per_source.setdefault(p.name, {"rows_read": 0, "resolved": 0, "rejected": 0, "suppressed": 0})
        entry["rows_read"] += p.rows_read
        entry["resolved"] += p.resolved
        entry["suppressed"] += p.suppressed
    for name, entry in per_source.items():
        entry["rejected"] = int((res.rejects["source"] == name).sum())
        entry["accounted"] = entry["rows_read"] == entry["resolved"] + entry["rejected"] + entry["suppressed"]
    read = sum(s["rows_read"] for s in per_source.values())
    resolved = sum(s["resolved"] for s in per_source.values())
    rejected = sum(s["rejected"] for s in per_source.values())
    suppressed = sum(s["suppressed"] for s in per_source.values())
    status_counts = res.identity_map["status"].value_counts().to_dict()
    sizes = res.persons["records"] if len(res.persons) else pd.Series(dtype=int)
    return {
        "run_id": run_id,
        "resolver_version": __version__,
        "started": started.isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
        "guards": guards,
        "rows": {"read": read, "resolved": resolved, "rejected": rejected, "suppressed": suppressed,
                 "accounted": read == resolved + rejected + suppressed},
        "sources": per_source,
        "records": {k: int(v) for k, v in status_counts.items()},
        "events": int(sum(p.events for p in parts)),
        "persons": {
            "total": len(res.persons),
            "known": int((~res.persons["is_anonymous"]).sum()) if len(res.persons) else 0,
            "anonymous": int(res.persons["is_anonymous"].sum()) if len(res.persons) else 0,
            "largest_by_records": int(sizes.max()) if len(sizes) else 0,
        },
        "identifiers": {k: int(v) for k, v in res.identifier_map["status"].value_counts().to_dict().items()},
        "policy_actions": {k: int(v) for k, v in res.policy_actions["action"].value_counts().to_dict().items()},
        "warnings": res.warnings,
        "attributes": res.attributes,
        "matching": res.matching,
        "golden": res.golden,
        **({"stitching": res.stitching} if res.stitching is not None else {}),
        "stages": log.stages,
        "jit_seconds": round(sum(stage.get("jit_seconds", 0.0) for stage in log.stages), 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_worker_rss_mb": round(peak_rss_mb("children"), 1),
    }
