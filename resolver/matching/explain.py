"""Matching's outputs, once persons are made: the explained links (match_links), the review queue
(the review band, reviewers' holds and the guards' cuts, each with its reason), the scored pairs,
the blocking keys, the model and the run-summary `matching` section.

Reads the MatchResult's decisions after the guards' cuts and then releases what only the
explanations needed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from resolver.config import MatchingConfig
from resolver.graph.guards import PROBABILISTIC
from resolver.ingest.tables import Vocabulary
from resolver.matching.match import HELD_REASON, STEWARD_HELD, MatchResult
from resolver.matching.model import comparison_weights, household_adjustments
from resolver.matching.score import DECISIONS
from resolver.resolution import Resolution


def matching_outputs(res: Resolution, match: MatchResult, matching: MatchingConfig, vocab: Vocabulary) -> None:
    """Explained links and review queue, scored pairs, blocking keys, model, summary section."""
    person_ids = res.identity_map["person_id"]
    names = np.array(list(vocab.types) + [PROBABILISTIC], dtype=object)
    link, review, cut = (DECISIONS.index(d) for d in ("link", "review", "guard_cut"))
    links = np.flatnonzero(match.decision == link)
    steward = match.steward[links] == 1 if match.steward is not None else np.zeros(len(links), bool)
    res.match_links = explain(match, links, res.records, person_ids,
                              np.where(steward, "accepted by a reviewer", "auto-merge").astype(object))
    in_band = np.flatnonzero(match.decision == review)
    cut_rows = np.flatnonzero(match.decision == cut)
    cut_reason = [f"guard: would give one person more {names[t]} values than allowed" if t < len(vocab.types)
                  else f"guard: would make a person of more than {matching.max_person_records} records"
                  for t in (match.cut_type[cut_rows] if match.cut_type is not None else [])]
    rows = np.concatenate([in_band, cut_rows])
    band_reason = [
        f"{match.prepared[v].name} disagrees: never merged automatically"
        if v >= 0 and match.probability[i] >= matching.thresholds.auto_merge else "review band"
        for i, v in zip(in_band, match.veto[in_band])
    ]
    if match.steward is not None:  # links a reviewer's rejection holds back (resolver.state.review)
        band_reason = [HELD_REASON if match.steward[i] == STEWARD_HELD else r for i, r in zip(in_band, band_reason)]
    reasons = np.array(band_reason + cut_reason, dtype=object)
    order = np.argsort(-match.probability[rows], kind="stable")
    res.review_queue = explain(match, rows[order], res.records, person_ids, reasons[order])
    keep = match.probability >= matching.scored_pairs_min
    res.scored_pairs = pd.DataFrame(
        {
            "record_id_l": match.left[keep],
            "record_id_r": match.right[keep],
            "probability": match.probability[keep],
            "match_weight": match.weight[keep],
            "rule": pd.Categorical.from_codes(match.rule[keep].astype(np.int64), categories=match.blocking.rules),
            "decision": pd.Categorical.from_codes(match.decision[keep].astype(np.int64), categories=list(DECISIONS)),
        }
    )
    res.blocking_keys = pd.DataFrame(
        {"record_id": np.arange(len(res.records), dtype=np.int64),
         **{rule: match.blocking.keys[r] for r, rule in enumerate(match.blocking.rules)}}
    )
    res.model = match.model
    res.matching = {**match.summary, "decisions": match.decision_counts()}  # after the guards' cuts
    match.release_explanation_inputs()


def explain(result: MatchResult, rows: np.ndarray, records: pd.DataFrame, person_ids: pd.Series,
            reasons: np.ndarray | None = None) -> pd.DataFrame:
    """One row per pair: both records, the probability, and for each comparison both values, the
    level and its weight (the waterfall: prior_weight + the weights + household_weight = match_weight)."""
    left, right = result.left[rows], result.right[rows]

    def take(column: pd.Series, at: np.ndarray):
        # Row selection first: turning a whole Arrow-backed column into Python objects costs seconds.
        return column.take(at).to_numpy()

    frame = pd.DataFrame(
        {
            "record_id_l": left,
            "source_l": take(records["source"], left),
            "record_key_l": take(records["record_key"], left),
            "person_id_l": take(person_ids, left),
            "record_id_r": right,
            "source_r": take(records["source"], right),
            "record_key_r": take(records["record_key"], right),
            "person_id_r": take(person_ids, right),
            "probability": result.probability[rows],
            "match_weight": result.weight[rows],
            "decision": pd.Categorical.from_codes(result.decision[rows], categories=list(DECISIONS)),
            "reason": reasons if reasons is not None else "",
            "blocking_rule": np.asarray(result.blocking.rules, dtype=object)[result.rule[rows]],
            "prior_weight": result.model.prior_weights[result.rule[rows].astype(np.int64)],
            "household_weight": household_adjustments(result.model, result.levels[rows],
                                                      result.rule[rows].astype(np.int64), result.tf[rows]),
        }
    )
    weights = comparison_weights(result.model, result.levels[rows], result.rule[rows].astype(np.int64))
    for k, p in enumerate(result.prepared):
        level = result.levels[rows, k]
        frame[f"{p.name}_l"] = take(p.values, left)
        frame[f"{p.name}_r"] = take(p.values, right)
        frame[f"{p.name}_level"] = pd.Categorical.from_codes(level.astype(np.int64), categories=p.labels)
        frame[f"{p.name}_weight"] = weights[:, k] + result.tf[rows, k]
    return frame
