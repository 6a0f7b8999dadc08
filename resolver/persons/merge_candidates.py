"""Merge candidates: pairs of two records of one Salesforce object that the model matched but a guard
refused to merge (each holds its own Contact id, and one person may hold one). They are the CRM's own
duplicates, which its admin merges in Salesforce; resolver cannot merge them for it.

Each pair gets a survivor (the master record) by the record-level criteria of survivorship: the
more trusted source (golden.source_priority, then trust), then the more recently modified record,
then the one read first. The CSV is the shape Salesforce's merge tools take: the object, the
master's Id and the duplicate's Id (`MasterRecordId`, `DuplicateRecordId`), with the probability
and the reason alongside.
"""

from __future__ import annotations

import pandas as pd

from resolver.config import Config
from resolver.persons.golden import source_ranks

MERGE_CANDIDATES_CSV = "merge_candidates.csv"
# Salesforce Id key prefixes of the objects merge works on.
OBJECT_OF_PREFIX = {"003": "Contact", "00Q": "Lead", "001": "Account"}
COLUMNS = ["object", "MasterRecordId", "DuplicateRecordId", "probability", "reason", "master_source",
           "duplicate_source", "master_person_id", "duplicate_person_id"]


def _object(key: str) -> str | None:
    return OBJECT_OF_PREFIX.get(str(key)[:3])


def merge_candidates(review_queue: pd.DataFrame | None, records: pd.DataFrame, config: Config) -> pd.DataFrame:
    """The review queue's guard-refused pairs of two records of one Salesforce object, survivor
    first, most probable first."""
    salesforce = {s.name for s in config.sources if s.system == "salesforce" and s.kind == "records"}
    if review_queue is None or not len(review_queue) or not salesforce:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c == "probability" else "object") for c in COLUMNS})
    refused = review_queue[review_queue["reason"].astype(str).str.startswith("guard")
                           & review_queue["source_l"].astype(str).isin(salesforce)
                           & review_queue["source_r"].astype(str).isin(salesforce)]
    ranks = source_ranks(config)
    timestamp = records.set_index("record_id")["timestamp"]
    rows = []
    for pair in refused.itertuples(index=False):
        left, right = pair.record_key_l, pair.record_key_r
        kind = _object(left)
        if kind is None or kind != _object(right):
            continue  # merge works within one object
        sides = [(pair.source_l, left, pair.record_id_l, pair.person_id_l),
                 (pair.source_r, right, pair.record_id_r, pair.person_id_r)]
        # survivorship per record: trusted source, then the newest, then the first read
        master, duplicate = sorted(sides, key=lambda s: (ranks.get(str(s[0]), len(ranks)),
                                                         -_nanoseconds(timestamp.get(s[2])), s[2]))
        rows.append([kind, master[1], duplicate[1], float(pair.probability), str(pair.reason), master[0], duplicate[0],
                     master[3], duplicate[3]])
    out = pd.DataFrame(rows, columns=COLUMNS)
    return out.sort_values(["probability", "MasterRecordId"], ascending=[False, True], kind="stable").reset_index(drop=True)


def _nanoseconds(value) -> int:
    """A timestamp as nanoseconds (missing: the oldest)."""
    if value is None or pd.isna(value):
        return -(2**62)
    return pd.Timestamp(value).value
