"""Probabilistic matching as one straight line (match_records): blocking keys (blocking.py) ->
candidate pairs and their comparison levels (pairs.py, compare.py) -> the model, trained
without labels (train.py, model.py) -> scores and decisions: link, review, no link (score.py).
The per-comparison explanation of each decision is explain.py's.

Runs after the deterministic graph: pairs already in one deterministic person are not compared,
and the accepted links go back into the graph, where the same guards apply to them.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from resolver.compute.backend import CPU, Backend
from resolver.compute.engine import LOCAL, Engine
from resolver.config import Config
from resolver.ingest.attributes import match_attributes
from resolver.matching.blocking import BlockingKeys, build_blocking_keys, pair_scope
from resolver.matching.compare import PreparedComparison, prepare_all
from resolver.matching.model import FSModel
from resolver.matching.pairs import pair_source
from resolver.matching.score import DECISIONS, WEIGHT_BINS, decide, model_health, vetoes
from resolver.matching.reuse import MatchCaches, Reuse
from resolver.matching.train import TrainingDesign, train_model

# MatchResult.steward per pair: a review decision applied to it (resolver/state/review.py).
STEWARD_NONE, STEWARD_ACCEPTED, STEWARD_REJECTED, STEWARD_HELD = 0, 1, 2, 3
HELD_REASON = "cannot-link: would join two records a reviewer rejected"


@dataclass
class MatchResult:
    """Scored candidate pairs kept for output (probability >= the lower of review and
    scored_pairs_min), with their levels for explanations."""

    left: np.ndarray  # int64 record positions
    right: np.ndarray
    rule: np.ndarray  # int8 blocking rule index
    probability: np.ndarray
    weight: np.ndarray
    levels: np.ndarray  # (n, K) int8
    tf: np.ndarray  # (n, K) float64 extra bits
    decision: np.ndarray  # int8 index into DECISIONS
    model: FSModel
    blocking: BlockingKeys
    prepared: list[PreparedComparison]
    candidates: int
    summary: dict = field(default_factory=dict)
    cut_type: np.ndarray | None = None  # per pair: type code whose limit cut its link (-1 = none)
    veto: np.ndarray | None = None  # per pair: the must_agree comparison that disagrees (-1 = none)
    attributes: dict | None = None  # the records' attributes in match form (reused by survivorship)
    pair_cache: pd.DataFrame | None = None  # every candidate pair's levels by pair hash (for the state)
    key_cache: pd.DataFrame | None = None  # every record's blocking keys by record hash (for the state)
    steward: np.ndarray | None = None  # per pair: 0, or a review decision applied (resolver.state.review)

    def links(self) -> np.ndarray:
        return np.flatnonzero(self.decision == DECISIONS.index("link"))

    def release_comparison_inputs(self) -> None:
        """Keep only what explanations read of the comparisons (names, level labels, values): their
        per-record codes and encodings, and the attributes, are done with once the pairs are
        scored and the review decisions applied (memory)."""
        self.prepared = [p.for_explanations() for p in self.prepared]
        self.attributes = None

    def release_explanation_inputs(self) -> None:
        """Once the links and the review queue are explained, the comparisons' values are not read
        again (the state takes the model and the caches): they go (memory)."""
        self.prepared = [replace(p, values=p.values.iloc[:0]) for p in self.prepared]

    def decision_counts(self) -> dict[str, int]:
        counts = np.bincount(self.decision, minlength=len(DECISIONS))
        return {d: int(c) for d, c in zip(DECISIONS, counts)}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Scoring and decisions
# ---------------------------------------------------------------------------------------------


def match_records(records: pd.DataFrame, labels: np.ndarray, config: Config, model_path: Path | None = None,
                  stage=None, backend: Backend = CPU, reuse: Reuse | None = None,
                  member_keys: np.ndarray | None = None, attributes: dict[str, pd.Series] | None = None,
                  engine: Engine = LOCAL) -> MatchResult:
    """Score the candidate pairs of the active records; `labels` are the deterministic persons.

    Keys -> pairs -> levels -> model -> scores -> decisions. Where the pairs are made and compared
    (held on the backend, or bucket by bucket on the engine) is the pair source's business
    (resolver.matching.pairs); on a GPU backend they stay on the device from blocking to scoring,
    and only the pairs kept for output (and EM's level patterns) come back to the host. With a
    state (`member_keys`), keys and levels it holds are reused and the run's are handed on."""
    matching = config.matching
    timer = stage or _no_stage
    active = ~records["is_deleted"].to_numpy(bool)
    labels = labels[: len(records)]
    rules = [r.name for r in matching.blocking.rules]
    with timer("match:attributes", rows_in=len(records)):
        if attributes is None:
            attributes = match_attributes(records, config)
        prepared = prepare_all(matching.comparisons, attributes, config.run.workers)
        on_backend = [p.on(backend.xp) for p in prepared]
    compared_columns = list(dict.fromkeys(c for p in prepared for c in p.config.columns))
    caches = MatchCaches.of(reuse, member_keys, attributes, compared_columns)
    known, known_keys = caches.known_keys(len(rules))
    scope = pair_scope(matching.link_type, records["source"])  # link_only / dedupe_only: which pairs may be made
    with timer("match:blocking", rows_in=int(active.sum())) as entry:
        blocking = build_blocking_keys(matching.blocking, attributes, active, backend=backend, known=known,
                                       known_keys=known_keys, scope=scope)
        entry["keyed_again"] = int(len(records) if known is None else (~known).sum())
        source = pair_source(blocking, labels, prepared, on_backend, backend, engine, scope, caches,
                             matching.stream_above_pairs)
        entry["rows_out"] = source.made
    key_cache = caches.key_cache(blocking.raw_keys)
    blocking.raw_keys = blocking.blocks = None  # only the state's key cache reads them; pairs are made (memory)
    stored_model = reuse.model if reuse is not None else None
    with timer("match:compare", rows_in=source.made) as entry:
        entry["rows_out"] = source.compare(train=model_path is None and stored_model is None)
    with timer("match:train"):
        if model_path is not None:
            model = _loaded_model(model_path, prepared, rules)
        elif stored_model is not None:
            model = FSModel.from_dict(stored_model, prepared, rules, "the state's model.json")
            model.training = {**model.training, "loaded_from": "state"}
        else:
            counts, candidates = source.statistics()
            model = train_model(on_backend, None, None, labels, active, matching.model,
                                TrainingDesign.of(config, prepared), backend, counts=counts,
                                n_candidates=candidates, scope=scope)
    with timer("match:score", rows_in=source.made) as entry:
        scored = source.scored(model, min(matching.scored_pairs_min, matching.thresholds.review))
        entry["rows_in"], entry["rows_out"] = scored.candidates, len(scored.left)
    result = MatchResult(
        left=scored.left, right=scored.right, rule=scored.rule, probability=scored.probability, weight=scored.weight,
        levels=scored.levels, tf=scored.tf, decision=np.zeros(len(scored.left), np.int8), model=model,
        blocking=blocking, prepared=prepared, candidates=scored.candidates, attributes=attributes,
    )
    compared = scored.candidates if scored.compared is None else scored.compared
    _decide_and_summarize(result, config, scored.per_rule, compared, scored.histogram)
    result.summary.update(source.summary)
    result.key_cache, result.pair_cache = key_cache, source.pair_cache()
    return result


def _loaded_model(model_path: Path, prepared: list[PreparedComparison], rules: list[str]) -> FSModel:
    model = FSModel.load(model_path, prepared, rules)
    model.training = {**model.training, "loaded_from": str(model_path)}
    return model


def _decide_and_summarize(result: MatchResult, config: Config, per_rule, compared: int, histogram: np.ndarray) -> None:
    """Vetoes, decisions and the summary of scored pairs, `compared` of the result's candidates
    compared in this run (the others' levels came from the state)."""
    thresholds = config.matching.thresholds
    result.veto = vetoes(result.prepared, result.levels)
    result.decision = decide(result.probability, thresholds.auto_merge, thresholds.review, result.veto >= 0)
    health = model_health(result.model, config)
    if health["auto_merge_withheld"]:  # an unfit model merges nothing on its own: its links wait for review
        result.decision[result.decision == DECISIONS.index("link")] = DECISIONS.index("review")
    result.summary = _summary(result, result.candidates, per_rule, config)
    result.summary["model_health"] = health
    result.summary["pairs_compared"] = compared
    result.summary["pairs_reused"] = result.candidates - compared
    result.summary["weight_histogram"] = {"edges": WEIGHT_BINS.tolist(), "counts": histogram.tolist()}


def _summary(result: MatchResult, candidates: int, per_rule: list[int], config: Config) -> dict:
    matching = config.matching
    return {
        "link_type": matching.link_type,
        "candidate_pairs": candidates,
        "pairs_per_rule": dict(zip(result.blocking.rules, per_rule)),
        "blocking_plan": [
            {"rule": p.name, "keyed_records": p.keyed_records, "blocks": p.blocks, "pairs_in_blocks": p.pairs,
             "capped_blocks": p.capped_blocks, "capped_records": p.capped_records, "capped_pairs": p.capped_pairs,
             "refined_blocks": p.refined_blocks, "refined_pairs": p.refined_pairs, "refine_missing": p.refine_missing}
            for p in result.blocking.plans
        ],
        "blocking_warnings": result.blocking.warnings(matching.blocking.max_block_size),
        "thresholds": {"auto_merge": matching.thresholds.auto_merge, "review": matching.thresholds.review},
        "decisions": result.decision_counts(),
        "model": result.model.training,
        "match_rate_by_rule": dict(zip(result.model.rules, map(float, result.model.match_rate))),
        "prior": result.model.prior,
    }


@contextmanager
def _no_stage(name: str, rows_in: int | None = None):
    """Stand-in for StageLog.stage when matching runs outside a pipeline."""
    yield {}


