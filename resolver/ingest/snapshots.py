"""Source snapshots: the ingested tables of a source's files, kept in the state so that a later run
whose files have not changed loads them instead of reading and normalizing the files again.

Ingesting is a pure function of the files' contents and the configuration, so a snapshot is keyed
by both: the configuration digest, the source's own settings, the identifier vocabulary and, per
file, its path, size and SHA-256. Hashing a file costs a read of it; as git does, a file whose
size and modification time are unchanged since the last run keeps the SHA-256 recorded then.

A snapshot folder holds the part's tables as Parquet (records, their match attributes,
observations, event nodes and edges, rejects, policy actions, event ids), the keys of the values
its normalization looked up in the memo (so that the memo the run hands on still holds them), and
meta.json with the part's counts. Parts from which erased data was suppressed, and event parts
ingested again because an earlier file repeated their event ids, are never snapshotted: they are
ingested again each run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from resolver.version import __version__
from resolver.ingest.tables import SourceTables

SNAPSHOT_FORMAT = 4
FILE_COLUMNS = {"path": "str", "size": "int64", "mtime_ns": "int64", "sha256": "str"}
_TABLES = ("records", "attributes", "observations", "event_nodes", "event_edges", "sessions", "flagged")


@dataclass(frozen=True)
class FileFingerprint:
    path: str
    size: int
    mtime_ns: int
    sha256: str


def fingerprint_files(paths: list[str], known: pd.DataFrame | None) -> list[FileFingerprint]:
    """Size, modification time and SHA-256 of each file; the hash is read from `known` (the previous
    run's fingerprints) when size and modification time match it."""
    remembered = {}
    if known is not None and len(known):
        remembered = {p: (s, m, h) for p, s, m, h in known[list(FILE_COLUMNS)].itertuples(index=False)}
    out = []
    for path in paths:
        stat = os.stat(path)
        size, mtime = int(stat.st_size), int(stat.st_mtime_ns)
        old = remembered.get(path)
        if old is not None and old[0] == size and old[1] == mtime:
            digest = old[2]
        else:
            with open(path, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        out.append(FileFingerprint(path, size, mtime, digest))
    return out


def fingerprint_table(prints: list[FileFingerprint]) -> pd.DataFrame:
    if not prints:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in FILE_COLUMNS.items()})
    return pd.DataFrame([vars(p) for p in prints]).astype(FILE_COLUMNS)


def snapshot_key(config_digest: str, source_settings: str, vocabulary: tuple, prints: list[FileFingerprint]) -> str:
    """What a part's ingested tables depend on, hashed: equal keys give equal tables."""
    payload = json.dumps({"format": SNAPSHOT_FORMAT, "resolver": __version__, "config": config_digest,
                          "source": source_settings, "vocabulary": vocabulary,
                          "files": [(p.path, p.size, p.sha256) for p in prints]})
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame | None:
    frames = [f for f in frames if f is not None]
    if not frames:
        return None
    non_empty = [f for f in frames if len(f)]
    return pd.concat(non_empty, ignore_index=True) if non_empty else frames[0].iloc[:0]


def memo_keys(seen: dict) -> pd.DataFrame:
    """The memo keys a part's normalization looked up (name, key; sorted per name), from its memo
    lookups (NormalizationMemo.seen)."""
    names, keys = [], []
    if seen:
        for name, lookups in sorted(seen.items()):
            found = np.unique(np.concatenate([k for k, _ in lookups] + [f["key"].to_numpy(np.uint64) for _, f in lookups]))
            names.append(np.full(len(found), name, dtype=object))
            keys.append(found)
    if not keys:
        return pd.DataFrame({"name": pd.Series(dtype="str"), "key": pd.Series(dtype="uint64")})
    return pd.DataFrame({"name": pd.Series(np.concatenate(names), dtype="str"), "key": np.concatenate(keys)})


def save_snapshot(part: SourceTables, seen: dict, folder: Path) -> None:
    """Write one part's tables, and the memo keys its lookups (`seen`) name, into `folder`."""
    folder.mkdir(parents=True)
    for name in _TABLES:
        table = getattr(part, name)
        if table is not None:
            table.to_parquet(folder / f"{name}.parquet", index=False)
    for name, frames in (("rejects", part.rejects), ("actions", part.actions)):
        table = _concat(frames)
        if table is not None:
            table.to_parquet(folder / f"{name}.parquet", index=False)
    if part.event_ids is not None:
        pd.DataFrame({"id": part.event_ids}).to_parquet(folder / "event_ids.parquet", index=False)
    memo_keys(seen).to_parquet(folder / "memo_keys.parquet", index=False)
    meta = {"format": SNAPSHOT_FORMAT, "name": part.name, "rows_read": part.rows_read, "resolved": part.resolved,
            "events": part.events}
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def load_snapshot(folder: Path) -> tuple[SourceTables, pd.DataFrame]:
    """A part as it was ingested, and the memo keys its normalization looked up."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))

    def table(name: str) -> pd.DataFrame | None:
        path = folder / f"{name}.parquet"
        return pd.read_parquet(path) if path.exists() else None

    part = SourceTables(meta["name"], meta["rows_read"], resolved=meta["resolved"], events=meta["events"])
    for name in _TABLES:
        setattr(part, name, table(name))
    part.rejects = [t for t in (table("rejects"),) if t is not None]
    part.actions = [t for t in (table("actions"),) if t is not None]
    ids = table("event_ids")
    part.event_ids = ids["id"].to_numpy(np.uint64) if ids is not None else None
    part.seconds = {"read": 0.0, "normalize": 0.0}
    return part, table("memo_keys")


class SnapshotWriter:
    """Writes the snapshots of a run's newly ingested parts into a pending folder of the state, in
    a background thread while the run goes on; `finish` waits for them and names every snapshot
    the next state keeps (the new ones, and those loaded from the previous state)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.writing: dict[str, Future] = {}
        self.kept: dict[str, Path] = {}

    def start(self, parts: list[SourceTables], previous: dict[str, Path], lookups: dict[str, dict]) -> None:
        for part in parts:
            key = part.snapshot
            if key is None or key in self.kept or key in self.writing:
                continue
            if part.loaded:
                self.kept[key] = previous[key]
            else:  # a shallow copy: the tables stay referenced after the graph build drops them from the part
                self.writing[key] = self.pool.submit(save_snapshot, dataclasses.replace(part), lookups.get(key, {}),
                                                     self.folder / key)

    def finish(self) -> dict[str, Path]:
        for key, done in self.writing.items():
            done.result()
            self.kept[key] = self.folder / key
        return dict(sorted(self.kept.items()))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.folder, ignore_errors=True)
