"""Stewardship: review decisions kept in the state and applied by the next run.

`resolver review list` shows the review queue (and, with `--links`, a sample of automatic merges
to audit); `resolver review decide` records an accept or reject of a pair of records in
STATE/decisions.parquet. Records are named by who they are across runs: their member key (the
64-bit hash of source + normalized record key, as the state's members), never by a run's
record_id. The file holds record keys, hashes, a probability, who decided and when: no attribute
values. It is an append-only log (the last decision about a pair counts), replaced atomically
(written to a temporary file, fsynced, renamed) under a lock.

The next run with that state applies the decisions (`apply_decisions`):

- accept = must-link: the pair is linked whatever its probability (also when it was no candidate
  pair or scored below the review band), as a probabilistic link; the identity guards still apply,
  and a link they refuse goes to the review queue with the guard's reason (and is counted as refused).
- reject = cannot-link: the probabilistic matcher never links the pair, neither directly nor through
  other probabilistic links: within the deterministic groups (what identifiers join), links are
  taken reviewer-accepted first, then strongest first, and a link that would put the two sides of a
  rejected pair into one person is held back (it goes to the review queue, reason
  HELD_REASON). A cannot-link does not split what identifiers join: when the two records are in
  one deterministic group, the run reports it as a conflict (`review_decisions.cannot_link_conflicts`).
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from resolver.compute.cluster import connected_components
from resolver.ids import item_ids, record_member_keys
from resolver.matching.compare import comparison_matrix
from resolver.matching.match import STEWARD_ACCEPTED, STEWARD_HELD, STEWARD_REJECTED
from resolver.matching.score import DECISIONS
from resolver.matching.model import match_weights, probabilities, tf_adjustments
from resolver.state.files import state_lock, write_atomically

DECISIONS_FILE = "decisions.parquet"
DECISION_COLUMNS = {
    "item_id": "str", "member_key_l": "uint64", "member_key_r": "uint64", "source_l": "str", "record_key_l": "str",
    "source_r": "str", "record_key_r": "str", "decision": "str", "probability": "float64", "band": "str",
    "decided_by": "str", "decided_at": "datetime64[ns, UTC]", "run_id": "str",
}
ACCEPT, REJECT = "accept", "reject"


class ReviewError(ValueError):
    """A review command that cannot be carried out (the message says what is missing)."""


def _empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})


def load_decisions(state_dir: Path | None) -> pd.DataFrame:
    """Every decision recorded in the state (oldest first); empty when there are none."""
    if state_dir is None or not (Path(state_dir) / DECISIONS_FILE).exists():
        return _empty(DECISION_COLUMNS)
    return pd.read_parquet(Path(state_dir) / DECISIONS_FILE)


def effective_decisions(decisions: pd.DataFrame) -> pd.DataFrame:
    """The last decision about each pair."""
    if not len(decisions):
        return decisions
    return decisions.drop_duplicates(["member_key_l", "member_key_r"], keep="last").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# resolver review list / decide
# ---------------------------------------------------------------------------------------------
def _record_keys(out_dir: Path) -> pd.DataFrame:
    """Per record_id of the outputs: source, record key, normalized key and member key."""
    identity = pd.read_parquet(out_dir / "identity_map.parquet",
                               columns=["record_id", "source", "record_key", "source_key", "status"])
    identity["member_key"] = record_member_keys(identity)
    return identity


def _outputs(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if not (out_dir / "identity_map.parquet").exists():
        raise ReviewError(f"{out_dir}: no outputs of a run (identity_map.parquet) to review")
    return out_dir


def _thresholds(out_dir: Path) -> tuple[float, float, str]:
    summary = json.loads((out_dir / "run_summary.json").read_text(encoding="utf-8"))
    thresholds = (summary.get("matching") or {}).get("thresholds") or {}
    return thresholds.get("auto_merge", 0.85), thresholds.get("review", 0.70), summary.get("run_id", "")


def review_items(out_dir: Path, state_dir: Path | None = None, links: int = 0, seed: int = 0) -> pd.DataFrame:
    """The review queue (highest probability first) with a stable item id per pair and the decision
    already recorded for it (if any); with `links`, also a seeded random sample of that many
    automatic merges to audit (what the estimated false-positive rate is made of)."""
    out_dir = _outputs(out_dir)
    keys = _record_keys(out_dir)
    member = keys.set_index("record_id")["member_key"]
    source_key = keys.set_index("record_id")["source_key"]
    frames = []
    queue_path = out_dir / "review_queue.parquet"
    if queue_path.exists():
        frames.append(pd.read_parquet(queue_path, columns=["record_id_l", "source_l", "record_key_l", "record_id_r",
                                                           "source_r", "record_key_r", "probability", "reason"])
                      .assign(kind="review"))
    links_path = out_dir / "match_links.parquet"
    if links and links_path.exists():
        merged = pd.read_parquet(links_path, columns=["record_id_l", "source_l", "record_key_l", "record_id_r",
                                                      "source_r", "record_key_r", "probability", "reason"])
        merged = merged.sample(n=min(links, len(merged)), random_state=seed).sort_values("probability")
        frames.append(merged.assign(kind="link"))
    if not frames:  # no matching in that run: nothing to review
        return pd.DataFrame({"item_id": pd.Series(dtype="str"), "kind": pd.Series(dtype="str"),
                             "probability": pd.Series(dtype="float64"),
                             **{c: pd.Series(dtype="str") for c in ("reason", "source_l", "record_key_l", "source_r",
                                                                     "record_key_r", "decision")},
                             "member_key_l": pd.Series(dtype="uint64"), "member_key_r": pd.Series(dtype="uint64"),
                             "source_key_l": pd.Series(dtype="str"), "source_key_r": pd.Series(dtype="str")})
    items = pd.concat(frames, ignore_index=True)
    mk_l = member.reindex(items["record_id_l"]).to_numpy(np.uint64)
    mk_r = member.reindex(items["record_id_r"]).to_numpy(np.uint64)
    items["item_id"] = item_ids(mk_l, mk_r)
    items["member_key_l"], items["member_key_r"] = np.minimum(mk_l, mk_r), np.maximum(mk_l, mk_r)
    items["source_key_l"] = source_key.reindex(items["record_id_l"]).to_numpy()
    items["source_key_r"] = source_key.reindex(items["record_id_r"]).to_numpy()
    decided = effective_decisions(load_decisions(state_dir))[["member_key_l", "member_key_r", "decision"]]
    items = items.merge(decided, on=["member_key_l", "member_key_r"], how="left")
    items["decision"] = items["decision"].fillna("")
    return items[["item_id", "kind", "probability", "reason", "source_l", "record_key_l", "source_r",
                  "record_key_r", "decision", "member_key_l", "member_key_r", "source_key_l", "source_key_r"]]


def _find_record(keys: pd.DataFrame, text: str) -> pd.Series:
    """A record by its key as in the file or normalized, optionally prefixed by its source
    (`sf_contacts:0035g...`)."""
    source = None
    if ":" in text and text.split(":", 1)[0] in set(keys["source"].astype(str)):
        source, text = text.split(":", 1)
    hit = (keys["record_key"].astype(str) == text) | (keys["source_key"].astype(str) == text)
    if source is not None:
        hit &= keys["source"].astype(str) == source
    found = keys[hit]
    if not len(found):
        raise ReviewError(f"no record with key {text!r} in the outputs")
    if found["member_key"].nunique() > 1:
        raise ReviewError(f"record key {text!r} is in several sources ({', '.join(sorted(found['source'].astype(str)))}); "
                          f"write SOURCE:KEY")
    return found.iloc[0]


def decide(state_dir: Path, out_dir: Path, accept: bool, pair: tuple[str, str] | None = None,
           item: str | None = None, by: str | None = None) -> dict:
    """Record a decision about a pair of records (by their keys, or by a review item's id) in
    the state, atomically; returns the row recorded."""
    if state_dir is None:
        raise ReviewError("review decisions live in the state: give --state (or run.state_dir)")
    out_dir = _outputs(out_dir)
    auto_merge, review_floor, run_id = _thresholds(out_dir)
    keys = _record_keys(out_dir)
    items = review_items(out_dir, state_dir, links=1 << 62)
    if item is not None:
        chosen = items[items["item_id"] == item]
        if not len(chosen):
            raise ReviewError(f"no review item or merged pair with id {item!r} in {out_dir}")
        row = chosen.iloc[0]
        left = keys[keys["member_key"] == row["member_key_l"]].iloc[0]
        right = keys[keys["member_key"] == row["member_key_r"]].iloc[0]
        probability = float(row["probability"])
    else:
        left, right = (_find_record(keys, k) for k in pair)
        if left["member_key"] == right["member_key"]:
            raise ReviewError("a pair needs two different records")
        lo, hi = sorted((np.uint64(left["member_key"]), np.uint64(right["member_key"])))
        known = items[(items["member_key_l"] == lo) & (items["member_key_r"] == hi)]
        probability = float(known["probability"].iloc[0]) if len(known) else float("nan")
    if left["member_key"] > right["member_key"]:
        left, right = right, left
    band = ("unscored" if np.isnan(probability) else "auto_merge" if probability >= auto_merge
            else "review" if probability >= review_floor else "below_review")
    entry = {
        "item_id": item_ids(np.array([left["member_key"]]), np.array([right["member_key"]]))[0],
        "member_key_l": np.uint64(left["member_key"]), "member_key_r": np.uint64(right["member_key"]),
        "source_l": str(left["source"]), "record_key_l": str(left["source_key"]),
        "source_r": str(right["source"]), "record_key_r": str(right["source_key"]),
        "decision": ACCEPT if accept else REJECT, "probability": probability, "band": band,
        "decided_by": by or getpass.getuser(), "decided_at": pd.Timestamp.now(tz="UTC"), "run_id": run_id,
    }
    state_dir = Path(state_dir)
    with state_lock(state_dir, "decisions"):
        table = pd.concat([load_decisions(state_dir), pd.DataFrame([entry])], ignore_index=True)
        write_atomically(table.astype(DECISION_COLUMNS), state_dir / DECISIONS_FILE)
    return entry


def forget_decisions(state_dir: Path, member_keys: np.ndarray) -> int:
    """Erasure: drop every decision about an erased record; returns how many went."""
    path = Path(state_dir) / DECISIONS_FILE
    if not path.exists():
        return 0
    with state_lock(state_dir, "decisions"):
        table = load_decisions(state_dir)
        gone = table["member_key_l"].isin(member_keys) | table["member_key_r"].isin(member_keys)
        if gone.any():
            write_atomically(table[~gone], path)
    return int(gone.sum())


def decision_counts(decisions: pd.DataFrame) -> dict:
    """Effective decisions so far; the estimated false-positive rate of automatic merges is the
    share rejected among decided pairs that scored at or above auto-merge (None when none)."""
    current = effective_decisions(decisions)
    auto = current[current["band"] == "auto_merge"]
    rejected_auto = int((auto["decision"] == REJECT).sum())
    return {
        "decisions": len(current),
        "accepted": int((current["decision"] == ACCEPT).sum()),
        "rejected": int((current["decision"] == REJECT).sum()),
        "auto_merge_decided": len(auto),
        "auto_merge_rejected": rejected_auto,
        "estimated_fp_rate": rejected_auto / len(auto) if len(auto) else None,
    }


# ---------------------------------------------------------------------------------------------
# Applying the decisions in a run
# ---------------------------------------------------------------------------------------------


@dataclass
class Constraints:
    """The decisions of a run, by this run's record positions (left < right)."""

    must_left: np.ndarray
    must_right: np.ndarray
    cannot_left: np.ndarray
    cannot_right: np.ndarray
    cannot_items: np.ndarray
    counts: dict = field(default_factory=dict)


def apply_decisions(decisions: pd.DataFrame, records: pd.DataFrame, match, member_keys: np.ndarray,
                    deterministic: np.ndarray) -> Constraints:
    """Turn the state's decisions into must-links and cannot-links on this run's match result, in
    place: a rejected pair among the scored pairs is never linked (decision no_link); an accepted
    pair is linked (added to the scored pairs, with its comparison levels and weights, when the
    matcher did not score it), unless the deterministic graph already joins it. The guards decide
    later, like for any probabilistic link. Pairs whose records are gone or inactive are counted."""
    current = effective_decisions(decisions)
    active = ~records["is_deleted"].to_numpy(bool)
    order = np.argsort(member_keys, kind="stable")
    sorted_keys = member_keys[order]

    def position(keys: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(sorted_keys, keys), max(len(sorted_keys) - 1, 0))
        found = (sorted_keys[at] == keys) if len(sorted_keys) else np.zeros(len(keys), bool)
        return np.where(found, order[at], -1)

    a = position(current["member_key_l"].to_numpy(np.uint64))
    b = position(current["member_key_r"].to_numpy(np.uint64))
    present = (a >= 0) & (b >= 0)
    present[present] = active[a[present]] & active[b[present]]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    accept = (current["decision"] == ACCEPT).to_numpy() & present
    reject = (current["decision"] == REJECT).to_numpy() & present
    n = len(records)
    if match.steward is None:
        match.steward = np.zeros(len(match.left), dtype=np.int8)
    pair_key = np.minimum(match.left, match.right) * np.int64(n) + np.maximum(match.left, match.right)

    rejected = np.isin(pair_key, lo[reject] * np.int64(n) + hi[reject])
    match.decision[rejected] = DECISIONS.index("no_link")
    match.steward[rejected] = STEWARD_REJECTED

    wanted = lo[accept] * np.int64(n) + hi[accept]
    scored = np.isin(pair_key, wanted)
    match.decision[scored] = DECISIONS.index("link")
    match.steward[scored] = STEWARD_ACCEPTED
    already = deterministic[lo[accept]] == deterministic[hi[accept]]
    missing = ~np.isin(wanted, pair_key[scored]) & ~already
    if missing.any():  # accepted pairs the matcher did not score: compare and weigh them now
        left, right = lo[accept][missing], hi[accept][missing]
        levels = comparison_matrix(match.prepared, left, right)
        rule = np.zeros(len(left), dtype=np.int64)  # scored under the first rule's prior
        tf = tf_adjustments(match.model, match.prepared, levels, rule, left)
        weight = match_weights(match.model, levels, rule, tf)
        match.left = np.concatenate([match.left, left])
        match.right = np.concatenate([match.right, right])
        match.rule = np.concatenate([match.rule, rule.astype(match.rule.dtype)])
        match.probability = np.concatenate([match.probability, probabilities(weight)])
        match.weight = np.concatenate([match.weight, weight])
        match.levels = np.concatenate([match.levels, levels.astype(match.levels.dtype)])
        match.tf = np.concatenate([match.tf, tf])
        match.decision = np.concatenate([match.decision, np.full(len(left), DECISIONS.index("link"), np.int8)])
        match.steward = np.concatenate([match.steward, np.full(len(left), STEWARD_ACCEPTED, np.int8)])
        if match.veto is not None:
            match.veto = np.concatenate([match.veto, np.full(len(left), -1, dtype=match.veto.dtype)])
    held = _hold_links_joining_rejected(match, deterministic, lo[reject], hi[reject])
    counts = {
        "decisions": len(current),
        "accepted": int((current["decision"] == ACCEPT).sum()),
        "rejected": int((current["decision"] == REJECT).sum()),
        "records_gone": int((~present).sum()),
        "must_links": int(accept.sum()),
        "must_links_already_joined": int(already.sum()),
        "must_links_added": int(missing.sum()),
        "cannot_links": int(reject.sum()),
        "cannot_links_blocked": int(rejected.sum()),
        "links_held_by_cannot_links": held,
    }
    return Constraints(lo[accept], hi[accept], lo[reject], hi[reject],
                       current["item_id"].to_numpy(object)[reject], counts)


def _hold_links_joining_rejected(match, deterministic: np.ndarray, cannot_a: np.ndarray, cannot_b: np.ndarray) -> int:
    """Hold back (decision review, steward STEWARD_HELD) the probabilistic links that would put both
    records of a rejected pair into one person, through any chain of links; returns how many.

    Works on deterministic groups (identifiers join records before any link): only the components of
    the group graph that hold both sides of a rejected pair are rebuilt, reviewer-accepted links
    first, then by probability, refusing a union that would join two sides."""
    links = match.links()
    ga, gb = deterministic[cannot_a], deterministic[cannot_b]
    apart = ga != gb  # in one group already: identifiers join them (reported as a conflict)
    if not len(links) or not apart.any():
        return 0
    ga, gb = ga[apart], gb[apart]
    la, lb = deterministic[match.left[links]], deterministic[match.right[links]]
    n_groups = int(deterministic.max()) + 1
    component = connected_components(n_groups, la, lb)
    risky = np.unique(component[ga][component[ga] == component[gb]])
    if not len(risky):
        return 0
    mine = np.flatnonzero(np.isin(component[la], risky))
    accepted = match.steward[links[mine]] == STEWARD_ACCEPTED
    mine = mine[np.lexsort((match.right[links[mine]], match.left[links[mine]], -match.probability[links[mine]],
                            ~accepted))]
    forbidden: dict[int, set] = {}
    for a, b in zip(ga.tolist(), gb.tolist()):
        forbidden.setdefault(a, set()).add(b)
        forbidden.setdefault(b, set()).add(a)
    parent: dict[int, int] = {}
    members: dict[int, set] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        members.setdefault(x, {x})
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    held = []
    for k in mine.tolist():
        ra, rb = find(int(la[k])), find(int(lb[k]))
        if ra == rb:
            continue
        if len(members[ra]) < len(members[rb]):
            ra, rb = rb, ra
        if any(forbidden.get(g, set()) & members[ra] for g in members[rb]):
            held.append(links[k])
            continue
        parent[rb] = ra
        members[ra] |= members.pop(rb)
    held = np.asarray(held, dtype=np.int64)
    match.decision[held] = DECISIONS.index("review")
    match.steward[held] = STEWARD_HELD
    return len(held)


def check_constraints(constraints: Constraints, labels: np.ndarray, deterministic: np.ndarray, match) -> dict:
    """After the graph: must-links the guards refused, and cannot-links joined anyway (by identifiers
    alone, or through other links), for the run summary."""
    steward_links = match.steward == STEWARD_ACCEPTED
    refused = int((steward_links & (match.decision == DECISIONS.index("guard_cut"))).sum())
    joined = labels[constraints.cannot_left] == labels[constraints.cannot_right]
    by_ids = deterministic[constraints.cannot_left] == deterministic[constraints.cannot_right]
    conflicts = [{"item_id": str(i), "joined_by": "identifiers" if d else "other links"}
                 for i, d in zip(constraints.cannot_items[joined], by_ids[joined])]
    linked = (labels[constraints.must_left] == labels[constraints.must_right]) & \
        (deterministic[constraints.must_left] != deterministic[constraints.must_right])
    return {**constraints.counts, "must_links_refused_by_guards": refused, "must_links_linked": int(linked.sum()),
            "cannot_link_conflicts": conflicts}
