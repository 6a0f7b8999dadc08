"""What a run takes from the state and what it hands on: the state at the start of a run
(persistent ids, and for an incremental run the memo, the model, the cached keys and levels, the
source snapshots), and the state it commits with its outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from resolver.config import Config
from resolver.ingest.memo import NormalizationMemo
from resolver.ingest.plan import Snapshots
from resolver.matching.reuse import Reuse
from resolver.state.review import load_decisions
from resolver.state.store import State, StateStore, config_digest

if TYPE_CHECKING:
    from resolver.ingest.tables import SourceTables
    from resolver.resolution import Resolution


@dataclass
class StartingState:
    """The state a run starts from (every field None without a state directory). `incremental`:
    the previous run had the same configuration and `--full` was not asked for, so what it
    normalized, keyed, compared and trained is reused."""

    directory: Path | None = None
    store: StateStore | None = None
    recovered: dict | None = None  # a commit a kill interrupted, repaired before the run
    previous: State | None = None
    digest: str = ""
    incremental: bool = False
    memo: NormalizationMemo | None = None
    reuse: Reuse | None = None
    decisions: pd.DataFrame | None = None
    snapshots: Snapshots | None = None


def state_in(config: Config, state_dir: Path | None, full: bool) -> StartingState:
    """The state directory's current version, repaired first if a kill interrupted a commit."""
    digest = config_digest(config)
    if state_dir is None:
        return StartingState(digest=digest)
    store = StateStore(state_dir)
    recovered = store.recover()
    previous = store.load()
    incremental = not full and previous.config_digest == digest and previous.runs > 0
    memo = NormalizationMemo(tables=previous.memo if incremental else {},
                             folder=store.current() / "memo" if incremental and store.current() else None)
    return StartingState(
        directory=state_dir, store=store, recovered=recovered, previous=previous, digest=digest,
        incremental=incremental, memo=memo,
        reuse=Reuse(previous.model, previous.pairs, previous.keys) if incremental else None,
        decisions=load_decisions(state_dir),
        snapshots=Snapshots(previous.snapshots, previous.files, digest, reuse=incremental),
    )


def state_summary(start: StartingState, res: Resolution, parts: list[SourceTables]) -> dict:
    """The run summary's persistent_ids and incremental sections (a run with a state)."""
    matching = res.matching or {}
    return {
        "persistent_ids": {"state": str(start.directory), "previous_run": start.previous.run_id,
                           **res.carried.counts},
        "incremental": {"incremental": start.incremental, "normalization": start.memo.stats(),
                        "parts_loaded_from_state": sum(p.loaded for p in parts),
                        **({"pairs_compared": matching["pairs_compared"],
                            "pairs_reused": matching["pairs_reused"]} if matching else {})},
    }


def next_state(start: StartingState, res: Resolution) -> State:
    """The state this run hands on."""
    previous, match = start.previous, res.match
    return State(members=res.carried.members, persons=res.carried.persons, lineage=res.lineage,
                 tombstones=previous.tombstones, audit=previous.audit, salt=previous.salt,
                 runs=previous.runs + 1, config_digest=start.digest, memo=start.memo.handed_on(),
                 model=match.model.to_dict() if match is not None else None,
                 pairs=match.pair_cache if match is not None else None,
                 keys=match.key_cache if match is not None else None)
