"""Batch <-> serve consistency.

Batch -> serve: at start, when the state's live version is not the one the store last imported,
the batch run's outputs (run.output_dir: identifier_map, golden_records) and the state's person
table are loaded into the store: the batch's persons and ids, its linked identifiers (the batch
is authoritative for every value it resolved), its golden fields (a field that serve changed later
than the batch's value keeps serve's value: last-modified wins), and the blocking keys of every
golden record (for the probabilistic step). Persons the batch merged or retired are marked so.

Serve -> batch: `resolver sync export` writes what serve received as sources the batch reads
natively: per Salesforce records source one CSV with the API field names (the latest value of
every field, IsDeleted for deleted records), and the Segment messages as JSONL. The config lists
them as sources with the same mapping (the export prints the YAML); the next batch run then
resolves them with everything else, and because a new person's id is the smallest member hash of
what it holds, the batch gives serve's new persons the ids serve gave them.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from resolver.config import Config
from resolver.ids import format_person_ids, to_signed
from resolver.state.files import replace_atomically, write_text_atomically
from resolver.state.store import StateStore
from resolver.sync.forget import ERASED_PAYLOAD, add_suppressed
from resolver.sync.mapping import sync_name
from resolver.sync.store import Store, StoreError, Tx, now_iso, set_meta

log = logging.getLogger("resolver.sync")


def _iso(value) -> str | None:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).tz_localize("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ") if pd.Timestamp(value).tzinfo is None \
        else pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def import_batch(store: Store, config: Config, state_dir: Path, resolver) -> dict | None:
    """Load the latest batch run into the store (once per state version); None when up to date."""
    states = StateStore(state_dir)
    folder = states.current()
    if folder is None:
        return None
    version = folder.name
    if store.meta("batch_version") == version:
        return None
    state = states.load()
    out = config.output_path()
    needed = [out / "identifier_map.parquet", out / "golden_records.parquet"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise StoreError(f"the state {state_dir} has a batch run but its outputs are missing: {', '.join(missing)}")
    summary_path = out / "run_summary.json"
    if summary_path.exists():
        run_id = json.loads(summary_path.read_text(encoding="utf-8")).get("run_id")
        if run_id and state.run_id and run_id != state.run_id:
            log.warning("outputs in %s are from run %s, the state's live version from run %s", out, run_id, state.run_id)

    identifiers = pd.read_parquet(out / "identifier_map.parquet", columns=["id_type", "value", "person_id", "status"])
    identifiers = identifiers[(identifiers["status"].astype(str) == "linked") & identifiers["person_id"].notna()]
    golden = pd.read_parquet(out / "golden_records.parquet")
    persons = state.persons
    ids = format_person_ids(persons["person_key"].to_numpy(np.uint64)) if len(persons) else pd.Series([], dtype="str")
    status = persons["status"].astype(str).to_numpy() if len(persons) else np.array([], dtype=object)
    created = [_iso(t) for t in persons["created_at"]] if len(persons) else []
    live = set(golden["person_id"].astype(str))
    fields = [f for f in resolver.fields if f in golden.columns]

    person_rows = [(p, "batch", c or now_iso(), s) for p, s, c in zip(ids, status, created)]
    person_rows += [(p, "batch", now_iso(), "active") for p in live - set(ids)]
    identifier_rows = list(zip(identifiers["id_type"].astype(str), identifiers["value"].astype(str),
                               identifiers["person_id"].astype(str)))
    golden_rows = []
    for field in fields:
        values = golden[field]
        has = values.notna().to_numpy()
        sources = golden.get(f"{field}__source", pd.Series([None] * len(golden)))
        keys = golden.get(f"{field}__record_key", pd.Series([None] * len(golden)))
        times = golden.get(f"{field}__timestamp", pd.Series([None] * len(golden)))
        for i in np.flatnonzero(has):
            golden_rows.append((str(golden["person_id"].iat[i]), field, str(values.iat[i]),
                                None if pd.isna(sources.iat[i]) else str(sources.iat[i]),
                                None if pd.isna(keys.iat[i]) else str(keys.iat[i]), _iso(times.iat[i])))
    block_rows = []
    if resolver.matcher is not None and len(golden):
        rows = golden[fields].astype("str").where(golden[fields].notna(), None).to_dict("records")
        keys = resolver.matcher.keys(rows)
        for r in range(keys.shape[0]):
            for i in np.flatnonzero(keys[r] != 0):
                block_rows.append((r, to_signed(int(keys[r, i])), str(golden["person_id"].iat[i])))
    gone = [p for p, s in zip(ids, status) if s != "active"]

    def load(tx: Tx) -> dict:
        tx.executemany("INSERT INTO persons (person_id, origin, created_at, status) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (person_id) DO UPDATE SET status = excluded.status", person_rows)
        tx.executemany("INSERT INTO identifiers (id_type, value, person_id, origin) VALUES (?, ?, ?, 'batch') "
                       "ON CONFLICT (id_type, value) DO UPDATE SET person_id = excluded.person_id, origin = 'batch'",
                       identifier_rows)
        tx.executemany("INSERT INTO golden (person_id, field, value, source, record_key, last_modified, event_id) "
                       "VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (person_id, field) DO UPDATE SET "
                       "value = excluded.value, source = excluded.source, record_key = excluded.record_key, "
                       "last_modified = excluded.last_modified, event_id = NULL "
                       "WHERE golden.event_id IS NULL OR golden.last_modified IS NULL "
                       "OR (excluded.last_modified IS NOT NULL AND excluded.last_modified >= golden.last_modified)",
                       golden_rows)
        tx.executemany("DELETE FROM golden WHERE person_id = ?", [(p,) for p in gone])
        tx.executemany("DELETE FROM block_keys WHERE person_id = ?", [(p,) for p in gone] +
                       [(p,) for p in live])
        tx.executemany("INSERT INTO block_keys (rule, key, person_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                       block_rows)
        # Records serve received follow their identifiers to the batch's persons.
        for source, key, obj in tx.all("SELECT source, record_key, object FROM records"):
            id_type = _key_type(config, source)
            if id_type is None:
                continue
            row = tx.one("SELECT person_id FROM identifiers WHERE id_type = ? AND value = ?", (id_type, key))
            if row:
                tx.execute("UPDATE records SET person_id = ? WHERE source = ? AND record_key = ?", (row[0], source, key))
        add_suppressed(tx, state.tombstones)  # erased people stay erased in serve too
        set_meta(tx, "batch_version", version)
        set_meta(tx, "batch_run_id", state.run_id or "")
        set_meta(tx, "batch_imported_at", now_iso())
        return {"version": version, "persons": len(live), "identifiers": len(identifier_rows)}

    return store.write(load)


def _key_type(config: Config, source_name: str) -> str | None:
    source = next((s for s in config.sources if s.name == source_name), None)
    if source is None:
        return None
    return next((t for t, cols in source.identifier_columns().items() if source.key in cols), None)


def export(service, out_dir: Path) -> dict:
    """Write what serve received as batch sources; returns the files and the sources to configure."""
    config: Config = service.config
    out_dir.mkdir(parents=True, exist_ok=True)

    def read(tx: Tx):
        records = tx.all("SELECT source, record_key, fields, deleted, last_modified FROM records ORDER BY source, record_key")
        # Erased events' payloads are blanked: nothing of them goes to the batch.
        segment = tx.all("SELECT payload FROM events WHERE channel = 'segment' AND payload <> ? ORDER BY seq",
                         (ERASED_PAYLOAD,))
        return records, segment

    records, segment = service.store.read(read)
    written: dict[str, str] = {}
    sources = []
    by_source: dict[str, list] = {}
    for source, key, fields, deleted, last in records:
        by_source.setdefault(source, []).append((key, json.loads(fields), deleted, last))
    for name, rows in by_source.items():
        source = next(s for s in config.sources if s.name == name)
        referenced = source.referenced_columns()  # every column the source maps must be in the header
        columns = referenced + sorted({api for _, f, _, _ in rows for api in f} - set(referenced))
        path = out_dir / f"{name}.csv"
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\n")
            writer.writerow(columns)
            for key, fields, deleted, last in rows:
                values = {api: held[0] for api, held in fields.items()}
                values.setdefault(source.key, key)
                if source.timestamp and not values.get(source.timestamp):
                    values[source.timestamp] = last
                if source.deleted:
                    values[source.deleted] = "true" if deleted else values.get(source.deleted, "false")
                writer.writerow(["" if values.get(c) is None else str(values.get(c)) for c in columns])
        replace_atomically(tmp, path)
        written[name] = str(path)
        sources.append({**source.model_dump(exclude_defaults=True), "name": sync_name(name), "path": str(path),
                        "format": "csv", "csv": {"delimiter": ",", "encoding": "utf-8"}})
    if segment and service.resolver.segment is not None:
        source = service.resolver.segment
        path = out_dir / "segment.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(json.loads(payload)["fields"], separators=(",", ":")) + "\n" for (payload,) in segment)
        replace_atomically(tmp, path)
        written[source.name] = str(path)
        sources.append({**source.model_dump(exclude_defaults=True), "name": sync_name(source.name), "path": str(path),
                        "format": "jsonl", "kind": "events"})
    return {"files": written, "records": len(records), "segment_events": len(segment), "sources": sources}


def add_export_sources(config_path: Path, sources: list[dict]) -> None:
    """Rewrite a YAML config so that it reads the export: each export source goes just before the
    source it copies (so it ranks above it in source_priority), replacing an earlier copy."""
    import yaml

    raw = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    by_name = {s["name"]: s for s in sources}
    out = []
    for source in raw.get("sources", []):
        if source.get("name") in by_name:
            continue
        extra = by_name.get(sync_name(source.get("name", "")))
        if extra is not None:
            out.append(extra)
        out.append(source)
    raw["sources"] = out
    write_text_atomically(Path(config_path), yaml.safe_dump(raw, sort_keys=False),
                          tmp=Path(config_path).with_suffix(".yaml.tmp"))
