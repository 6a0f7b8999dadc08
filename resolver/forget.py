"""`resolver forget`: erase a person (GDPR / CCPA) from a run's outputs, the state and the sync
service's store, all or nothing (what is erased and how it stays erased: resolver/state/erasure.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from resolver.config import Config
from resolver.ids import format_person_ids, person_key, record_member_keys, salted
from resolver.outputs.postgres_out import postgres_url, write_postgres
from resolver.outputs.report import REPORT_FILE, report_from_outputs
from resolver.outputs.writers import OUTPUT_TABLES, stage_rewrite
from resolver.persons.merge_candidates import MERGE_CANDIDATES_CSV
from resolver.state.erasure import (
    OBSERVED_KIND, ErasureError, erase_rows, forget_person_keys, key_derived, select_erasure,
)
from resolver.state.review import forget_decisions
from resolver.state.store import StateStore
from resolver.sync.forget import erase as erase_in_sync_store
from resolver.sync.forget import store_url_for
from resolver.sync.store import Store


def forget(config: Config, state_dir, kind: str, value: str) -> dict:
    """Erase what `kind`/`value` selects from the outputs and the state; returns the audit entry."""
    out = config.output_path()
    if not (out / "identity_map.parquet").exists():
        raise ErasureError(f"{out}: no outputs of a run to erase from")
    if state_dir is None:
        raise ErasureError("forget needs the state directory (--state or run.state_dir): the tombstones live there")
    outputs = {name: pd.read_parquet(out / file) for name, file in OUTPUT_TABLES.items() if (out / file).exists()}
    erasure = select_erasure(kind, value, outputs, config)

    store = StateStore(state_dir)
    state = store.load()
    identity = outputs["identity_map"]
    erased_records = identity[identity["record_id"].isin(erasure.record_ids)]
    member_keys = record_member_keys(erased_records.reset_index(drop=True))
    erased_members = np.concatenate([member_keys, erasure.identifier_hashes])
    person_keys = np.array([person_key(p) for p in erasure.persons if p.startswith("p")], dtype=np.uint64)
    # Earlier persons (merged or retired, never a live one) whose key is an erased value's hash.
    earlier = key_derived(state.persons, erased_members) & (state.persons["status"].astype("str") != "active").to_numpy()
    forgotten = np.union1d(person_keys, state.persons["person_key"].to_numpy(np.uint64)[earlier])
    erasure.former = set(format_person_ids(forgotten)) - erasure.persons

    removed = {}
    changed = {}
    for name, frame in outputs.items():
        drop = erase_rows(name, frame, erasure)
        removed[name] = int(drop.sum())
        if drop.any():
            changed[name] = frame[~drop].reset_index(drop=True)
    # The report shows records, review items and golden values: it is rebuilt without the person.
    page = report_from_outputs(out, {**outputs, **changed}, state_dir)
    files = {REPORT_FILE: page}
    if "merge_candidates" in changed:  # its CSV twin too
        files[MERGE_CANDIDATES_CSV] = changed["merge_candidates"].to_csv(index=False)

    now = pd.Timestamp.now(tz="UTC")
    members = state.members
    gone = np.isin(members["member_key"].to_numpy(np.uint64), erased_members) | \
        np.isin(members["person_key"].to_numpy(np.uint64), person_keys)
    state.members = members[~gone].reset_index(drop=True)
    state.persons = forget_person_keys(state.persons, forgotten, state.salt)
    state.lineage = state.lineage[~erase_rows("lineage", state.lineage, erasure)].reset_index(drop=True)
    new_tombstones = pd.DataFrame({
        "kind": ["record"] * len(member_keys) + np.where(np.isin(erasure.identifier_hashes, erasure.observed),
                                                         OBSERVED_KIND, "identifier").tolist(),
        "salted_hash": salted(erased_members, state.salt),
        "created_at": now,
    })
    state.tombstones = pd.concat([state.tombstones, new_tombstones], ignore_index=True).drop_duplicates("salted_hash")
    review_items = removed.get("review_queue", 0)
    entry = {
        "time": now, "action": "forget", "selector": kind, "persons": len(erasure.persons),
        "records": len(erasure.record_ids), "identifiers": len(erasure.identifier_hashes),
        "review_items": review_items, "run_id": state.run_id or "",
    }
    state.audit = pd.concat([state.audit, pd.DataFrame([entry])], ignore_index=True)
    # The memo, cached pairs and keys are keyed by hashes that cannot be traced to a record (and
    # a deleted or merged record's values are in no output to look for): caches that held the
    # person's are dropped whole (the next run normalizes, keys and compares everything once).
    if len(erasure.record_ids) or len(erasure.identifier_hashes):
        state.memo = {}
    if len(erasure.record_ids):
        state.pairs = state.keys = None
    state.snapshots = {}  # source snapshots hold the records as read: the next run ingests everything again
    # The erased outputs and the erased state go live together (a kill between them would leave
    # a state without the tombstones beside erased outputs: the next run would bring them back).
    store.commit_run(state, f"forget-{now.strftime('%Y%m%dT%H%M%S%f')}", out,
                     lambda folder: stage_rewrite(out, folder, changed, files=files), keep=1)
    entry["review_decisions"] = forget_decisions(state_dir, member_keys)
    if config.run.postgres is not None:  # the loaded tables too
        write_postgres(out, postgres_url(config.run.postgres.url_env), config.run.postgres.db_schema)
    result = {**entry, "time": now.isoformat(), "rows_removed": removed}
    url = store_url_for(config, Path(state_dir))
    if url is not None:  # what `serve` keeps about them goes too
        sync_store = Store(url)
        try:
            result["sync_store"] = erase_in_sync_store(sync_store, erasure.persons | erasure.former, erasure.values,
                                                       tombstones=new_tombstones)
        finally:
            sync_store.close()
    return result
