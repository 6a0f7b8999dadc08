"""Matching before a run: which attribute columns matching reads, and the blocking plan (pair
counts per rule and the largest blocks) from the records sources alone (`resolver plan`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from resolver.config import Config, ConfigError
from resolver.compute.engine import LocalEngine
from resolver.ingest.plan import attributes_of, plan_ingest, run_jobs
from resolver.ingest.tables import Vocabulary, reject_cross_file_duplicates
from resolver.ingest.attributes import match_attributes, matching_columns
from resolver.matching.blocking import build_blocking_keys, pair_scope
from resolver.matching.growth import identifier_people, pair_growth


def matching_attributes(config: Config, attributes: dict[str, pd.Series] | None) -> dict[str, pd.Series] | None:
    """The attribute columns matching reads (None when there are no records)."""
    return None if attributes is None else {column: attributes[column] for column in matching_columns(config)}


def plan_matching(config: Config):
    """Blocking plan from the records alone: pair counts per rule and the largest blocks, before
    any pair is made (reads and normalizes the records sources; events are not needed), the
    records, and each rule's pair-growth exponent (resolver/matching/growth.py)."""
    if config.matching is None:
        raise ConfigError("the configuration has no `matching` section to plan")
    vocab = Vocabulary.from_config(config)
    jobs = [job for job in plan_ingest(config) if config.sources[job.source_index].kind == "records"]
    parts = run_jobs(config, jobs, vocab, LocalEngine(config.run.workers))
    reject_cross_file_duplicates(config, parts)
    records = pd.concat([p.records for p in parts], ignore_index=True)
    active = ~records["is_deleted"].to_numpy(bool)
    if config.matching.enabled:
        attributes = matching_attributes(config, attributes_of(parts))
    else:  # the jobs put in match form only what golden records need
        attributes = match_attributes(records, config)
    scope = pair_scope(config.matching.link_type, records["source"])
    blocking = build_blocking_keys(config.matching.blocking, attributes, active, scope=scope)
    offsets = np.cumsum([0] + [len(p.records) for p in parts])
    record = np.concatenate([p.observations["record_pos"].to_numpy(np.int64) + offset
                             for p, offset in zip(parts, offsets)])
    value = np.concatenate([p.observations["hash"].to_numpy(np.uint64) for p in parts])
    people = identifier_people(record, value, len(records))
    growth = [pair_growth(np.where(active, keys, 0), people) for keys in blocking.raw_keys]
    return blocking, len(records), growth
