"""Run history: one row of counts per run, kept in STATE/history.parquet.

The file is appended to by rewriting it whole into a temporary file and renaming it over the old
one (under a lock), after the run's state is committed: a crash leaves the previous history (at
worst without the crashed run's row), never a torn file. It holds counts only (no identifiers,
no record keys), so erasure has nothing to remove from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from resolver.state.files import state_lock, write_atomically
from resolver.state.review import decision_counts, load_decisions

HISTORY_FILE = "history.parquet"
HISTORY_COLUMNS = {
    "run_id": "str", "time": "datetime64[ns, UTC]", "records": "int64", "persons": "int64",
    "kept": "int64", "new": "int64", "merged": "int64", "split": "int64",
    "links": "int64", "review_queue": "int64", "rejected_rows": "int64",
    "decisions": "int64", "accepted": "int64", "rejected": "int64",
    "auto_merge_decided": "int64", "estimated_fp_rate": "float64", "seconds": "float64", "output_dir": "str",
}


def load_history(state_dir: Path | None) -> pd.DataFrame:
    """Every run's row, oldest first (empty without a state or before the first run)."""
    if state_dir is None or not (Path(state_dir) / HISTORY_FILE).exists():
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in HISTORY_COLUMNS.items()})
    return pd.read_parquet(Path(state_dir) / HISTORY_FILE)


def history_row(summary: dict, review_queue: pd.DataFrame | None, decisions: pd.DataFrame) -> dict:
    """This run's row, from its summary, its review queue and the decisions recorded so far."""
    ids = summary.get("persistent_ids") or {}
    matching = summary.get("matching") or {}
    counts = decision_counts(decisions)
    fp = counts["estimated_fp_rate"]
    return {
        "run_id": summary["run_id"],
        "time": pd.Timestamp(summary.get("finished") or summary["started"]),
        "records": int(sum(summary.get("records", {}).values())),
        "persons": int(summary["persons"]["total"]),
        "kept": int(ids.get("kept", 0)), "new": int(ids.get("new", summary["persons"]["total"])),
        "merged": int(ids.get("merged_away", 0)), "split": int(ids.get("split_off", 0)),
        "links": int((matching.get("decisions") or {}).get("link", 0)),
        "review_queue": len(review_queue) if review_queue is not None else 0,
        "rejected_rows": int(summary["rows"]["rejected"]),
        "decisions": counts["decisions"], "accepted": counts["accepted"], "rejected": counts["rejected"],
        "auto_merge_decided": counts["auto_merge_decided"],
        "estimated_fp_rate": float("nan") if fp is None else float(fp),
        "seconds": float(summary.get("seconds", np.nan)),
        "output_dir": str(summary.get("output_dir", "")),
    }


def with_row(history: pd.DataFrame, row: dict) -> pd.DataFrame:
    frame = pd.DataFrame([row])
    frame = frame.astype({c: t for c, t in HISTORY_COLUMNS.items() if c in frame})
    if not len(history):
        return frame.reset_index(drop=True)
    return pd.concat([history, frame], ignore_index=True)


def append_history(state_dir: Path, row: dict) -> pd.DataFrame:
    """Append a run's row to the state's history, atomically; returns the whole history."""
    state_dir = Path(state_dir)
    with state_lock(state_dir, "history"):
        history = with_row(load_history(state_dir), row)
        write_atomically(history, state_dir / HISTORY_FILE)
    return history


def current_row(summary: dict, review_queue: pd.DataFrame | None, state_dir: Path | None) -> dict:
    return history_row(summary, review_queue, load_decisions(state_dir))
