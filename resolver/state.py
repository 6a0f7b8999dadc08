"""The state directory: what a run hands to the next one (persistent person ids, lineage, erasure
tombstones and the audit log), as Parquet files, updated atomically.

Layout (README: "State directory"):

    STATE/
      CURRENT                     name of the live version folder (replaced atomically)
      versions/NNNNNN-RUNID/
        manifest.json             format, run id, time, counts, the tombstone salt
        members.parquet           member_key (uint64) -> person_key (uint64): every record
                                  (hash of source + record key) and identifier (hash of type +
                                  value) of every person; hashes only, no PII
        persons.parquet           every person key ever issued: created_run, created_at, status
                                  (active / merged / forgotten), merged_into
        lineage.parquet           every merge and split, with run id and time
        tombstones.parquet        salted hashes of erased identifiers and records
        audit.parquet             one row per erasure: what kind, when, counts (no PII)
        memo/NAME.parquet         normalization memo: raw value -> normalized form, per normalizer
                                  (the distinct values of the last run; used under the same
                                  configuration digest only)
        model.json                the Fellegi-Sunter model incremental runs score with
        pairs.parquet             compared candidate pairs: both records' member keys and the
                                  comparison levels (reused while both records are unchanged)
        fingerprints.parquet      per record: member key and a hash of its compared attributes

A new version is written into a temporary folder, renamed into versions/, and only then does
CURRENT name it; a crash at any point leaves CURRENT on a complete earlier version. The two newest
versions are kept.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

STATE_FORMAT = 1
KEEP_VERSIONS = 2


class StateError(ValueError):
    """A state directory that cannot be used (the message names the file)."""


def _empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})


MEMBER_COLUMNS = {"member_key": "uint64", "person_key": "uint64"}
PERSON_COLUMNS = {"person_key": "uint64", "created_run": "str", "created_at": "datetime64[ns, UTC]",
                  "status": "str", "merged_into": "uint64", "records": "int64"}
LINEAGE_COLUMNS = {"run_id": "str", "time": "datetime64[ns, UTC]", "event": "str", "person_id": "str",
                   "other_id": "str", "records": "int64"}
TOMBSTONE_COLUMNS = {"kind": "str", "salted_hash": "uint64", "created_at": "datetime64[ns, UTC]"}
AUDIT_COLUMNS = {"time": "datetime64[ns, UTC]", "action": "str", "selector": "str", "persons": "int64",
                 "records": "int64", "identifiers": "int64", "review_items": "int64", "run_id": "str"}


@dataclass
class State:
    members: pd.DataFrame = field(default_factory=lambda: _empty(MEMBER_COLUMNS))
    persons: pd.DataFrame = field(default_factory=lambda: _empty(PERSON_COLUMNS))
    lineage: pd.DataFrame = field(default_factory=lambda: _empty(LINEAGE_COLUMNS))
    tombstones: pd.DataFrame = field(default_factory=lambda: _empty(TOMBSTONE_COLUMNS))
    audit: pd.DataFrame = field(default_factory=lambda: _empty(AUDIT_COLUMNS))
    salt: str = field(default_factory=lambda: secrets.token_hex(16))
    run_id: str | None = None  # the run that wrote this version
    runs: int = 0  # how many runs have written the state
    config_digest: str | None = None  # the configuration the memo, model and pairs were made under
    memo: dict[str, pd.DataFrame] = field(default_factory=dict)
    model: dict | None = None  # FSModel.to_dict()
    pairs: pd.DataFrame | None = None
    fingerprints: pd.DataFrame | None = None

    TABLES = ("members", "persons", "lineage", "tombstones", "audit")


class StateStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def versions(self) -> Path:
        return self.path / "versions"

    def current(self) -> Path | None:
        pointer = self.path / "CURRENT"
        if not pointer.exists():
            return None
        name = pointer.read_text(encoding="utf-8").strip()
        folder = self.versions / name
        if not (folder / "manifest.json").exists():
            raise StateError(f"{pointer}: names {name!r}, which has no manifest.json")
        return folder

    def load(self) -> State:
        """The live state, or a fresh empty one when the directory holds none yet."""
        folder = self.current()
        if folder is None:
            return State()
        manifest_path = folder / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise StateError(f"{manifest_path}: not JSON: {exc}") from exc
        if manifest.get("format") != STATE_FORMAT:
            raise StateError(f"{manifest_path}: state format {manifest.get('format')!r}, expected {STATE_FORMAT}")
        tables = {}
        for name in State.TABLES:
            try:
                tables[name] = pd.read_parquet(folder / f"{name}.parquet")
            except (OSError, ValueError) as exc:
                raise StateError(f"{folder / (name + '.parquet')}: cannot read: {exc}") from exc
        memo = {}
        for path in sorted((folder / "memo").glob("*.parquet")):
            memo[path.stem.replace("__", ":")] = pd.read_parquet(path)
        model_path = folder / "model.json"
        model = json.loads(model_path.read_text(encoding="utf-8")) if model_path.exists() else None
        optional = {name: pd.read_parquet(folder / f"{name}.parquet") if (folder / f"{name}.parquet").exists() else None
                    for name in ("pairs", "fingerprints")}
        return State(**tables, salt=manifest["salt"], run_id=manifest.get("run_id"), runs=manifest.get("runs", 0),
                     config_digest=manifest.get("config_digest"), memo=memo, model=model, **optional)

    def commit(self, state: State, run_id: str, keep: int = KEEP_VERSIONS) -> Path:
        """Write `state` as the new live version (atomically) and return its folder; only the
        `keep` newest versions stay (an erasure keeps 1, so no older version holds the person)."""
        self.versions.mkdir(parents=True, exist_ok=True)
        staging = self.versions / f".tmp-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            for name in State.TABLES:
                getattr(state, name).reset_index(drop=True).to_parquet(staging / f"{name}.parquet", index=False)
            if state.memo:
                (staging / "memo").mkdir()
                for name, table in state.memo.items():
                    table.to_parquet(staging / "memo" / f"{name.replace(':', '__')}.parquet", index=False)
            for name in ("pairs", "fingerprints"):
                if getattr(state, name) is not None:
                    getattr(state, name).reset_index(drop=True).to_parquet(staging / f"{name}.parquet", index=False)
            if state.model is not None:
                (staging / "model.json").write_text(json.dumps(state.model), encoding="utf-8")
            manifest = {
                "format": STATE_FORMAT, "run_id": run_id, "runs": state.runs, "salt": state.salt,
                "config_digest": state.config_digest,
                "written": pd.Timestamp.now(tz="UTC").isoformat(),
                "counts": {name: len(getattr(state, name)) for name in State.TABLES},
            }
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
            _fsync_tree(staging)
            name = f"{state.runs:06d}-{run_id}"
            final = self.versions / name
            os.replace(staging, final)
            pointer_tmp = self.path / f".CURRENT.tmp-{uuid.uuid4().hex[:8]}"
            pointer_tmp.write_text(name + "\n", encoding="utf-8")
            _fsync_file(pointer_tmp)
            os.replace(pointer_tmp, self.path / "CURRENT")  # the commit point
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._prune(live=name, keep=keep)
        return final

    def _prune(self, live: str, keep: int) -> None:
        names = sorted(p.name for p in self.versions.iterdir() if not p.name.startswith("."))
        for name in names[:-keep]:
            if name != live:
                shutil.rmtree(self.versions / name, ignore_errors=True)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            _fsync_file(path)


# ---------------------------------------------------------------------------------------------
# Persistent person ids
# ---------------------------------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _remix(key: np.ndarray, attempt: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = key ^ (np.uint64(attempt) * _GOLDEN)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


@dataclass
class CarriedIds:
    label_keys: np.ndarray  # per label: the person key it carries (persistent where it can be)
    lineage: pd.DataFrame  # this run's merges and splits
    persons: pd.DataFrame  # the state's person table after this run
    members: pd.DataFrame  # the state's member table after this run
    counts: dict


def carry_ids(previous: State, labels: np.ndarray, member_keys: np.ndarray, is_member: np.ndarray,
              is_record: np.ndarray, label_keys: np.ndarray, label_age: np.ndarray, is_person: np.ndarray,
              run_id: str, now: pd.Timestamp) -> CarriedIds:
    """Give this run's persons the ids of the previous run's.

    labels, member_keys, is_member, is_record: per node (records, then identifiers) of this run;
    label_keys: per label, the key a person would get from scratch (its smallest member key);
    label_age: per label, a time (int64 ns) that is smaller for older persons; is_person per label.

    Each previous person passes its id to its heir, the new person holding most of its records
    (then most of its members, then the oldest, then the smallest key). A person that is heir to
    several keeps the oldest of their ids (a merge; the others are retired); a person heir to none
    gets a new id (a split when it holds members of an earlier person, else simply new). New ids
    never reuse an id issued before.
    """
    from resolver.cluster import format_person_ids

    n_labels = len(label_keys)
    nodes = np.flatnonzero(is_member & is_person[labels])
    old_members = previous.members
    old_key_of = pd.Series(old_members["person_key"].to_numpy(np.uint64),
                           index=pd.Index(old_members["member_key"].to_numpy(np.uint64)))
    position = old_key_of.index.get_indexer(member_keys[nodes])
    found = position >= 0
    overlap = pd.DataFrame({
        "label": labels[nodes[found]],
        "old": old_key_of.to_numpy()[position[found]],
        "record": is_record[nodes[found]].astype(np.int64),
    })
    per_pair = overlap.groupby(["old", "label"], sort=True).agg(records=("record", "sum"), members=("record", "size"))
    per_pair = per_pair.reset_index()
    per_pair["age"] = label_age[per_pair["label"].to_numpy()]
    per_pair["fresh_key"] = label_keys[per_pair["label"].to_numpy()]
    heirs = per_pair.sort_values(["old", "records", "members", "age", "fresh_key"],
                                 ascending=[True, False, False, True, True], kind="stable")
    heirs = heirs.drop_duplicates("old", keep="first")

    persons = previous.persons.set_index("person_key", drop=False)
    created = persons["created_at"] if len(persons) else pd.Series(dtype="datetime64[ns, UTC]")
    heirs["created_at"] = created.reindex(heirs["old"].to_numpy()).to_numpy()
    claims = heirs.sort_values(["label", "created_at", "old"], kind="stable")
    keeper = claims.drop_duplicates("label", keep="first")
    merged_away = claims[~claims.index.isin(keeper.index)]

    out_keys = np.zeros(n_labels, dtype=np.uint64)
    kept = np.zeros(n_labels, dtype=bool)
    out_keys[keeper["label"].to_numpy()] = keeper["old"].to_numpy(np.uint64)
    kept[keeper["label"].to_numpy()] = True
    # New ids: the key from scratch unless an id issued before (or kept this run) already has it.
    issued = np.concatenate([persons.index.to_numpy(np.uint64), out_keys[kept]])
    fresh = np.flatnonzero(is_person & ~kept)
    candidates = label_keys[fresh].copy()
    clash = np.isin(candidates, issued)
    attempt = 0
    while clash.any():
        attempt += 1
        candidates[clash] = _remix(label_keys[fresh][clash], attempt)
        clash = np.isin(candidates, issued) | pd.Series(candidates).duplicated().to_numpy()
    out_keys[fresh] = candidates

    def text(keys) -> np.ndarray:
        return format_person_ids(np.asarray(keys, dtype=np.uint64)).to_numpy(object)

    merges = pd.DataFrame({
        "event": "merge",
        "person_id": text(out_keys[merged_away["label"].to_numpy()]),
        "other_id": text(merged_away["old"].to_numpy()),
        "records": merged_away["records"].to_numpy(np.int64),
    })
    split_rows = per_pair[~per_pair.set_index(["old", "label"]).index.isin(heirs.set_index(["old", "label"]).index)]
    splits = pd.DataFrame({
        "event": "split",
        "person_id": text(split_rows["old"].to_numpy()),
        "other_id": text(out_keys[split_rows["label"].to_numpy()]),
        "records": split_rows["records"].to_numpy(np.int64),
    })
    lineage = pd.concat([merges, splits], ignore_index=True)
    lineage.insert(0, "time", now)
    lineage.insert(0, "run_id", run_id)
    lineage = lineage.astype({"run_id": "str", "event": "str", "person_id": "str", "other_id": "str"})

    # The person table: every id ever issued, with this run's status.
    record_counts = np.bincount(labels[nodes[is_record[nodes]]], minlength=n_labels)
    active_keys = out_keys[is_person]
    table = previous.persons.copy()
    status = pd.Series(table["status"].to_numpy(object), index=table["person_key"].to_numpy(np.uint64))
    merged_into = pd.Series(table["merged_into"].to_numpy(np.uint64), index=status.index)
    for old, label in zip(merged_away["old"].to_numpy(np.uint64), merged_away["label"].to_numpy()):
        status[old] = "merged"
        merged_into[old] = out_keys[label]
    new_keys = out_keys[fresh]
    table = pd.DataFrame({
        "person_key": np.concatenate([status.index.to_numpy(np.uint64), new_keys]),
        "created_run": np.concatenate([table["created_run"].to_numpy(object), np.full(len(new_keys), run_id, object)]),
        "created_at": pd.concat([table["created_at"], pd.Series([now] * len(new_keys), dtype="datetime64[ns, UTC]")],
                                ignore_index=True),
        "status": np.concatenate([status.to_numpy(object), np.full(len(new_keys), "active", object)]),
        "merged_into": np.concatenate([merged_into.to_numpy(np.uint64), np.zeros(len(new_keys), np.uint64)]),
    })
    counts_by_key = pd.Series(record_counts[is_person], index=active_keys)
    table["records"] = counts_by_key.reindex(table["person_key"].to_numpy(np.uint64)).fillna(0).to_numpy(np.int64)
    table.loc[table["status"].eq("active") & ~table["person_key"].isin(active_keys), "status"] = "retired"
    table = table.astype({"created_run": "str", "status": "str"})
    members = pd.DataFrame({"member_key": member_keys[nodes], "person_key": out_keys[labels[nodes]]})
    split_off = np.isin(fresh, split_rows["label"].to_numpy())
    counts = {"kept": int(kept.sum()), "new": int((~split_off).sum()), "split_off": int(split_off.sum()),
              "merged_away": len(merged_away), "merge_events": len(merges), "split_events": len(splits)}
    return CarriedIds(out_keys, lineage, table, members, counts)
