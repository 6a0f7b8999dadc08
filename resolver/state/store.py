"""The state directory: what a run hands to the next one (persistent person ids, lineage, erasure
tombstones and the audit log), as Parquet files, updated atomically.

Layout (README: "State directory"):

    STATE/
      CURRENT                     name of the live version folder (replaced atomically)
      COMMITTING                  the journal of a run's commit (StateStore.commit_run)
      versions/NNNNNN-RUNID/
        manifest.json             format, run id, time, counts, the tombstone salt
        members.parquet           member_key (uint64) -> person_key (uint64): every record
                                  (hash of source + record key) and identifier (hash of type +
                                  value) of every person; hashes only, no PII
        persons.parquet           every person key ever issued: created_run, created_at, status
                                  (active / merged / retired / forgotten: under its salted key),
                                  merged_into
        lineage.parquet           every merge and split, with run id and time
        tombstones.parquet        salted hashes of erased identifiers and records
        audit.parquet             one row per erasure: what kind, when, counts (no PII)
        memo/NAME.parquet         normalization memo: raw value -> normalized form, per normalizer
                                  (the distinct values of the last run; used under the same
                                  configuration digest only)
        model.json                the Fellegi-Sunter model incremental runs score with
        pairs.parquet             compared candidate pairs: a hash of both records' keys and
                                  compared attributes (sorted), and the comparison levels; reused
                                  while both records are unchanged
        keys.parquet              every record's blocking keys, by a hash of its key and
                                  attributes (sorted): only new or changed records are keyed again
        files.parquet             every source file's path, size, modification time and SHA-256
        sources/KEY/              a source snapshot: one ingest job's tables (records, attributes,
                                  observations, event nodes and edges, rejects, policy actions)
                                  as Parquet, keyed by the configuration and its files' hashes; a
                                  run whose files are unchanged loads them instead of ingesting
                                  (resolver/ingest/snapshots.py). Unchanged snapshots are hard links.

A new version is written into a temporary folder, renamed into versions/, and only then does
CURRENT name it; a crash at any point leaves CURRENT on a complete earlier version. The two newest
versions are kept. A run commits its outputs and its version together (commit_run): after a kill,
the next start rolls the commit forward or back (recover).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from resolver.config import Config
from resolver.ids import format_person_ids, remix_key
from resolver.crashpoints import crash_point
from resolver.state.files import file_lock, fsync_tree, link_tree, swap_into_place, write_text_atomically
from resolver.state.history import append_history, load_history

STATE_FORMAT = 1
PERSON_STATES = ("active", "merged", "retired", "forgotten")
KEEP_VERSIONS = 2
JOURNAL = "COMMITTING"  # a run's commit in progress (StateStore.commit_run)

log = logging.getLogger(__name__)


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
    keys: pd.DataFrame | None = None
    snapshots: dict[str, Path] = field(default_factory=dict)  # source snapshot key -> its folder
    files: pd.DataFrame | None = None  # the source files' fingerprints (resolver.ingest.snapshots)

    TABLES = ("members", "persons", "lineage", "tombstones", "audit")


def config_digest(config: Config) -> str:
    """What the state's memo, model and pairs depend on: identity, matching, survivorship and the
    default phone region (not the sources' paths or the run's folders)."""
    parts = config.model_dump_json(include={"identity", "matching", "golden", "stitching"}) + config.run.default_region
    return hashlib.sha256(parts.encode()).hexdigest()[:16]


class StateStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def versions(self) -> Path:
        return self.path / "versions"

    def current(self) -> Path | None:
        self.recover()
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
        paths = [folder / f"{name}.parquet" for name in State.TABLES] + sorted((folder / "memo").glob("*.parquet"))
        with ThreadPoolExecutor(max_workers=4) as pool:
            frames = dict(zip(paths, pool.map(_read, paths)))
        tables = {name: frames[folder / f"{name}.parquet"] for name in State.TABLES}
        memo = {}
        for path in paths[len(State.TABLES):]:
            if "key" in frames[path].columns:  # a memo of another layout is simply not used
                memo[path.stem.replace("__", ":")] = frames[path]
        model_path = folder / "model.json"
        model = json.loads(model_path.read_text(encoding="utf-8")) if model_path.exists() else None
        pairs = pd.read_parquet(folder / "pairs.parquet") if (folder / "pairs.parquet").exists() else None
        keys = pd.read_parquet(folder / "keys.parquet") if (folder / "keys.parquet").exists() else None
        optional = {"pairs": pairs if pairs is not None and "pair_hash" in pairs.columns else None, "keys": keys}
        sources = folder / "sources"
        optional["snapshots"] = {d.name: d for d in sorted(sources.iterdir()) if (d / "meta.json").exists()} \
            if sources.is_dir() else {}
        optional["files"] = _read(folder / "files.parquet") if (folder / "files.parquet").exists() else None
        return State(**tables, salt=manifest["salt"], run_id=manifest.get("run_id"), runs=manifest.get("runs", 0),
                     config_digest=manifest.get("config_digest"), memo=memo, model=model, **optional)

    def commit(self, state: State, run_id: str, keep: int = KEEP_VERSIONS) -> Path:
        """Write `state` as the new live version (atomically) and return its folder; only the
        `keep` newest versions stay (an erasure keeps 1, so no older version holds the person)."""
        name = self.write_version(state, run_id)
        self._point_to(name)  # the commit point
        self._prune(live=name, keep=keep)
        return self.versions / name

    def write_version(self, state: State, run_id: str) -> str:
        """Write `state` into a complete new version folder (not yet live) and return its name."""
        self.versions.mkdir(parents=True, exist_ok=True)
        name = _version_name(state, run_id)
        staging = self.versions / f".tmp-{name}"
        staging.mkdir()
        try:
            writes = {staging / f"{name}.parquet": getattr(state, name) for name in State.TABLES}
            if state.memo:
                (staging / "memo").mkdir()
                writes.update({staging / "memo" / f"{name.replace(':', '__')}.parquet": table
                               for name, table in state.memo.items()})
            if state.pairs is not None:
                writes[staging / "pairs.parquet"] = state.pairs
            if state.keys is not None:
                writes[staging / "keys.parquet"] = state.keys
            if state.files is not None:
                writes[staging / "files.parquet"] = state.files
            for key, snapshot in state.snapshots.items():  # unchanged files: links, not copies
                link_tree(snapshot, staging / "sources" / key)
            # Parquet encoding releases the GIL: the tables are written side by side.
            with ThreadPoolExecutor(max_workers=4) as pool:
                for done in [pool.submit(_write, frame, path) for path, frame in writes.items()]:
                    done.result()
            if state.model is not None:
                (staging / "model.json").write_text(json.dumps(state.model), encoding="utf-8")
            manifest = {
                "format": STATE_FORMAT, "run_id": run_id, "runs": state.runs, "salt": state.salt,
                "config_digest": state.config_digest,
                "written": pd.Timestamp.now(tz="UTC").isoformat(),
                "counts": {name: len(getattr(state, name)) for name in State.TABLES},
            }
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
            fsync_tree(staging)
            os.replace(staging, self.versions / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return name

    def _point_to(self, name: str) -> None:
        write_text_atomically(self.path / "CURRENT", name + "\n")

    def _tidy(self, live: str, keep: int) -> None:
        self._prune(live=live, keep=keep)
        for pending in self.path.glob(".pending-*"):  # snapshots of this run (now linked) or of crashed runs
            shutil.rmtree(pending, ignore_errors=True)

    # -----------------------------------------------------------------------------------------
    # A run's commit: its outputs and its state version go live together (README: "Crash
    # consistency"). Before anything is written, a journal (STATE/COMMITTING) names every folder
    # the commit will create. Then: the outputs are written into a staging folder beside the
    # output folder, the state version into versions/, the staging folder is renamed over the
    # outputs (the commit point), CURRENT is pointed at the version, the history row appended,
    # and the journal deleted. The staging folder disappears only by that rename, and the version
    # is complete before it, so after a kill the journal alone tells what happened: staging folder
    # gone and version there -> the outputs are this run's, roll forward (CURRENT, history); else
    # roll back (put the old outputs back if the kill fell between the swap's two renames, delete
    # the staging folder and the version). The commit lock tells a crashed commit from a live one.
    # -----------------------------------------------------------------------------------------
    def commit_run(self, state: State, run_id: str, out_dir: Path, write_outputs, history_row: dict | None = None,
                   keep: int = KEEP_VERSIONS) -> Path:
        """Commit `state` and the outputs `write_outputs(folder)` writes into `folder` (which it
        creates) as one step: after a crash at any moment, both are this run's or both the
        previous run's (once `recover` has run). Returns the new version's folder."""
        out_dir = Path(out_dir).absolute()
        journal = {"run_id": run_id, "version": _version_name(state, run_id), "out_dir": str(out_dir),
                   "staging": str(out_dir.parent / f".{out_dir.name}.tmp-{run_id}"),
                   "retired": str(out_dir.parent / f".{out_dir.name}.old-{run_id}"), "history": history_row}
        self.path.mkdir(parents=True, exist_ok=True)
        with _commit_lock(self.path, wait=True):
            # A fixed temporary name: a commit killed here leaves at most that one file.
            write_text_atomically(self.path / JOURNAL, json.dumps(journal, default=str),
                                  tmp=self.path / f".{JOURNAL}.tmp")
            crash_point("journal-written")
            try:
                write_outputs(Path(journal["staging"]))
                crash_point("outputs-staged")
                self.write_version(state, run_id)
                crash_point("state-written")
                swap_into_place(Path(journal["staging"]), out_dir, Path(journal["retired"]))
                crash_point("outputs-swapped")
            except BaseException:
                self._settle(journal)
                raise
            self._settle(journal)
        self._prune(live=journal["version"], keep=keep)
        return self.versions / journal["version"]

    def recover(self) -> str | None:
        """Finish or undo the commit of a run that was killed during it (see commit_run); returns
        what was done ("rolled forward" / "rolled back"), None when nothing needed it."""
        if not (self.path / JOURNAL).exists():
            return None
        with _commit_lock(self.path, wait=False) as held:
            if not held or not (self.path / JOURNAL).exists():  # a live commit, or just finished
                return None
            journal = json.loads((self.path / JOURNAL).read_text(encoding="utf-8"))
            outcome = self._settle(journal)
        for leftover in self.path.glob(".CURRENT.tmp-*"):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(self.pending(journal["run_id"]), ignore_errors=True)
        log.warning("state %s: the commit of run %s was interrupted; %s: the outputs in %s and CURRENT "
                    "name the same run", self.path, journal["run_id"], outcome, journal["out_dir"])
        return outcome

    def _settle(self, journal: dict) -> str:
        """Roll the journal's commit forward or back (the rule above); deletes the journal."""
        staging, retired, out_dir = (Path(journal[k]) for k in ("staging", "retired", "out_dir"))
        version = self.versions / journal["version"]
        if not staging.exists() and (version / "manifest.json").exists():
            self._point_to(journal["version"])
            crash_point("current-flipped")
            if journal["history"] is not None:
                _append_history_once(self.path, journal["history"])
            crash_point("history-appended")
            shutil.rmtree(retired, ignore_errors=True)
            outcome = "rolled forward"
        else:
            if not out_dir.exists() and retired.exists():  # killed between the swap's two renames
                os.replace(retired, out_dir)
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(self.versions / f".tmp-{journal['version']}", ignore_errors=True)
            shutil.rmtree(version, ignore_errors=True)
            outcome = "rolled back"
        (self.path / JOURNAL).unlink()
        return outcome

    def pending(self, run_id: str) -> Path:
        """A folder for what a run writes into the state before it commits (its source snapshots)."""
        return self.path / f".pending-{run_id}"

    def _prune(self, live: str, keep: int) -> None:
        names = sorted(p.name for p in self.versions.iterdir() if not p.name.startswith("."))
        for name in names[:-keep]:
            if name != live:
                shutil.rmtree(self.versions / name, ignore_errors=True)


def _version_name(state: State, run_id: str) -> str:
    return f"{state.runs:06d}-{run_id}"


def _commit_lock(folder: Path, wait: bool):
    """The state's commit lock (flock: released by the kernel when its holder dies); yields
    whether it is held (False: another process holds it and `wait` is False)."""
    return file_lock(folder / ".commit.lock", wait=wait)


def _append_history_once(state_dir: Path, row: dict) -> None:
    """Append a run's history row unless it is there (a roll forward may repeat the append)."""
    if row["run_id"] not in set(load_history(state_dir)["run_id"].astype(str)):
        append_history(state_dir, {**row, "time": pd.Timestamp(row["time"])})


def _write(frame: pd.DataFrame, path: Path) -> None:
    frame.reset_index(drop=True).to_parquet(path, index=False)


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise StateError(f"{path}: cannot read: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Persistent person ids
# ---------------------------------------------------------------------------------------------
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
    n_labels = len(label_keys)
    nodes = np.flatnonzero(is_member & is_person[labels])
    # Which earlier person each of this run's members belonged to (members are kept sorted by key).
    old_member_keys = previous.members["member_key"].to_numpy(np.uint64)
    old_person_keys = previous.members["person_key"].to_numpy(np.uint64)
    if len(old_member_keys) and not np.all(old_member_keys[1:] >= old_member_keys[:-1]):
        order = np.argsort(old_member_keys, kind="stable")
        old_member_keys, old_person_keys = old_member_keys[order], old_person_keys[order]
    nodes = nodes[np.argsort(member_keys[nodes], kind="stable")]  # sorted queries: a cache-friendly search
    at = np.minimum(np.searchsorted(old_member_keys, member_keys[nodes]), max(len(old_member_keys) - 1, 0))
    found = old_member_keys[at] == member_keys[nodes] if len(old_member_keys) else np.zeros(len(nodes), bool)
    old_of_node = old_person_keys[at[found]]
    label_of_node = labels[nodes[found]]
    # Overlaps: (earlier person, new person) -> records and members they share.
    olds, old_index = np.unique(old_of_node, return_inverse=True)
    pair_keys, pair_index = np.unique(old_index.reshape(-1).astype(np.int64) * n_labels + label_of_node,
                                      return_inverse=True)
    pair_records = np.bincount(pair_index.reshape(-1), weights=is_record[nodes[found]], minlength=len(pair_keys))
    pair_members = np.bincount(pair_index.reshape(-1), minlength=len(pair_keys))
    pair_old, pair_label = pair_keys // n_labels, pair_keys % n_labels
    # Each earlier person's heir: most records, most members, oldest, smallest key.
    order = np.lexsort((label_keys[pair_label], label_age[pair_label], -pair_members, -pair_records, pair_old))
    first = np.ones(len(order), dtype=bool)
    first[1:] = pair_old[order][1:] != pair_old[order][:-1]
    heir_pairs = order[first]
    is_heir_pair = np.zeros(len(pair_keys), dtype=bool)
    is_heir_pair[heir_pairs] = True
    # A new person heir to several keeps the oldest id (created first, then the smallest key).
    persons = previous.persons.sort_values("person_key", kind="stable").reset_index(drop=True)
    person_keys = persons["person_key"].to_numpy(np.uint64)
    created = persons["created_at"].to_numpy("datetime64[ns]").view(np.int64) if len(persons) else np.zeros(0, np.int64)
    pos = np.minimum(np.searchsorted(person_keys, olds), max(len(person_keys) - 1, 0))
    old_created = np.where(person_keys[pos] == olds, created[pos], np.iinfo(np.int64).max) if len(person_keys) \
        else np.full(len(olds), np.iinfo(np.int64).max)
    heir_old, heir_label = pair_old[heir_pairs], pair_label[heir_pairs]
    claim = np.lexsort((olds[heir_old], old_created[heir_old], heir_label))
    keeps = np.ones(len(claim), dtype=bool)
    keeps[1:] = heir_label[claim][1:] != heir_label[claim][:-1]
    keeper, merged_claims = claim[keeps], claim[~keeps]

    out_keys = np.zeros(n_labels, dtype=np.uint64)
    kept = np.zeros(n_labels, dtype=bool)
    out_keys[heir_label[keeper]] = olds[heir_old[keeper]]
    kept[heir_label[keeper]] = True
    merged_old = olds[heir_old[merged_claims]]
    merged_label = heir_label[merged_claims]
    merged_records = pair_records[heir_pairs][merged_claims].astype(np.int64)
    # New ids: the key from scratch unless an id issued before (or kept this run) already has it.
    issued = np.concatenate([person_keys, out_keys[kept]])
    fresh = np.flatnonzero(is_person & ~kept)
    candidates = label_keys[fresh].copy()
    clash = np.isin(candidates, issued)
    attempt = 0
    while clash.any():
        attempt += 1
        candidates[clash] = remix_key(label_keys[fresh][clash], attempt)
        clash = np.isin(candidates, issued) | pd.Series(candidates).duplicated().to_numpy()
    out_keys[fresh] = candidates
    split_pairs = np.flatnonzero(~is_heir_pair)

    def text(keys) -> np.ndarray:
        return format_person_ids(np.asarray(keys, dtype=np.uint64)).to_numpy(object)

    merges = pd.DataFrame({
        "event": "merge",
        "person_id": text(out_keys[merged_label]),
        "other_id": text(merged_old),
        "records": merged_records,
    })
    splits = pd.DataFrame({
        "event": "split",
        "person_id": text(olds[pair_old[split_pairs]]),
        "other_id": text(out_keys[pair_label[split_pairs]]),
        "records": pair_records[split_pairs].astype(np.int64),
    })
    lineage = pd.concat([merges, splits], ignore_index=True)
    lineage.insert(0, "time", now)
    lineage.insert(0, "run_id", run_id)
    lineage = lineage.astype({"run_id": "str", "event": "str", "person_id": "str", "other_id": "str"})

    # The person table: every id ever issued (sorted by key), with this run's status.
    record_counts = np.bincount(labels[nodes[is_record[nodes]]], minlength=n_labels)
    new_keys = out_keys[fresh]
    status = pd.Categorical(persons["status"].astype("str"), categories=PERSON_STATES).codes.astype(np.int8)
    merged_into = persons["merged_into"].to_numpy(np.uint64).copy()
    where = np.searchsorted(person_keys, merged_old)
    status[where] = PERSON_STATES.index("merged")
    merged_into[where] = out_keys[merged_label]
    keys = np.concatenate([person_keys, new_keys])
    status = np.concatenate([status, np.full(len(new_keys), PERSON_STATES.index("active"), np.int8)])
    active_keys = out_keys[is_person]
    active_order = np.argsort(active_keys, kind="stable")
    sorted_active = active_keys[active_order]
    at = np.minimum(np.searchsorted(sorted_active, keys), max(len(sorted_active) - 1, 0))
    live = (sorted_active[at] == keys) if len(sorted_active) else np.zeros(len(keys), bool)
    status[(status == PERSON_STATES.index("active")) & ~live] = PERSON_STATES.index("retired")
    order = np.argsort(keys, kind="stable")
    created_at = pd.concat([persons["created_at"].reset_index(drop=True),
                            pd.Series([now] * len(new_keys), dtype=persons["created_at"].dtype)], ignore_index=True)
    table = pd.DataFrame({
        "person_key": keys[order],
        "created_run": pd.concat([persons["created_run"].astype("str").reset_index(drop=True),
                                  pd.Series([run_id] * len(new_keys), dtype="str")], ignore_index=True).take(order)
                         .reset_index(drop=True),
        "created_at": created_at.take(order).reset_index(drop=True),
        "status": pd.Series(pd.Categorical.from_codes(status[order], categories=list(PERSON_STATES))).astype("str"),
        "merged_into": np.concatenate([merged_into, np.zeros(len(new_keys), np.uint64)])[order],
        "records": np.where(live, record_counts[is_person][active_order][at] if len(sorted_active) else 0,
                            0).astype(np.int64)[order],
    })
    members = pd.DataFrame({"member_key": member_keys[nodes], "person_key": out_keys[labels[nodes]]})  # sorted
    split_labels = np.unique(pair_label[split_pairs])
    split_off = np.isin(fresh, split_labels)
    counts = {"kept": int(kept.sum()), "new": int((~split_off).sum()), "split_off": int(split_off.sum()),
              "merged_away": len(merged_old), "merge_events": len(merges), "split_events": len(splits)}
    return CarriedIds(out_keys, lineage, table, members, counts)
