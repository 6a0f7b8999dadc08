"""Golden records on the run's engine: every person at once (persons.golden.build_golden), or bucket
by bucket of persons where the engine's workers each build a part (the dask engine); the table in
compute/dispatch.py chooses. Both give the same rows.

Bucket by bucket: persons are split into buckets by a hash of their id; each bucket's records go to one survivorship
job (persons.golden.build_golden), and the rows come back in person order. Buckets grow with the
data (Engine.buckets_for), and a bucket's inputs are cut only when a job slot frees, so memory per
job does not grow with the dataset.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from resolver.compute.backend import Backend
from resolver.compute.dispatch import choose
from resolver.compute.engine import Engine
from resolver.compute.frames import concat_in_order
from resolver.kernels.hashing import hash_strings
from resolver.ingest.memo import NormalizationMemo
from resolver.persons.golden import GoldenResult, build_golden, golden_fields, golden_summary


def golden_records(engine: Engine, backend: Backend, records: pd.DataFrame, record_person: pd.Series,
                   person_ids: pd.Series, config, normalized: dict[str, pd.Series],
                   memo: NormalizationMemo | None = None, person_rows: np.ndarray | None = None) -> GoldenResult:
    """Golden records and conflicts of the persons (`record_person`: each record's person id;
    `person_rows`, when known: each record's person's position in person_ids, -1 for none)."""
    build = GOLDEN_RECORDS[choose("golden", backend, engine)]
    return build(engine, records, record_person, person_ids, config, normalized, memo, person_rows)


def golden_records_whole(engine: Engine, records: pd.DataFrame, record_person: pd.Series, person_ids: pd.Series,
                         config, normalized: dict[str, pd.Series], memo: NormalizationMemo | None,
                         person_rows: np.ndarray | None = None) -> GoldenResult:
    return build_golden(records, record_person, person_ids, config, normalized, memo, person_rows)


def golden_records_in_buckets(engine: Engine, records: pd.DataFrame, record_person: pd.Series,
                              person_ids: pd.Series, config, normalized: dict[str, pd.Series],
                              memo: NormalizationMemo | None, person_rows: np.ndarray | None = None) -> GoldenResult:
    """build_golden, bucket by bucket of persons on `engine`: the same rows, in person order. The
    workers normalize without the run's memo (what matching put in match form is shipped)."""
    ids = person_ids.astype("str").reset_index(drop=True)
    holder = record_person.astype("str").reset_index(drop=True)
    buckets = engine.buckets_for(len(records))
    engine.description["golden_buckets"] = buckets
    bucket_of_person = (hash_strings(pa.array(ids.array, type=pa.large_string()), prefix=b"bucket:")
                        % np.uint64(buckets)).astype(np.int64)
    # Positions by codes, not a string-keyed index: one would hold every id as a Python object.
    person_of_record = (pd.Categorical(holder, categories=ids).codes.astype(np.int64) if person_rows is None
                        else np.asarray(person_rows, dtype=np.int64))  # -1: in no person
    record_bucket = np.where(person_of_record >= 0, bucket_of_person[np.maximum(person_of_record, 0)], -1)
    del person_of_record
    persons_of_bucket = [np.flatnonzero(bucket_of_person == b) for b in range(buckets)]

    def jobs():  # each bucket's rows are cut when a task slot frees
        for b in range(buckets):
            rows = np.flatnonzero(record_bucket == b)
            yield (records.iloc[rows].reset_index(drop=True), holder.iloc[rows].reset_index(drop=True),
                   ids.iloc[persons_of_bucket[b]].reset_index(drop=True), config,
                   {name: column.iloc[rows].reset_index(drop=True) for name, column in normalized.items()})

    # One bucket per worker at a time: a bucket's inputs are a slice of every record (memory).
    parts = engine.map_lazily(build_golden, jobs(), in_flight=max(engine.description.get("workers", 1), 1))
    golden_parts = [p.golden_records for p in parts]
    conflict_parts = [p.conflicts for p in parts]
    del parts
    # A bucket's golden rows are its persons, in order; its conflicts name them by id.
    golden = concat_in_order(golden_parts, np.concatenate(persons_of_bucket).argsort(kind="stable"))
    conflict_person = np.concatenate([
        mine[pd.Categorical(part["person_id"], categories=ids.iloc[mine]).codes.astype(np.int64)]
        for mine, part in zip(persons_of_bucket, conflict_parts)])
    fields = golden_fields(config)
    conflict_field = np.concatenate([pd.Categorical(part["field"], categories=fields).codes for part in conflict_parts])
    conflicts = concat_in_order(conflict_parts, np.lexsort((conflict_person, conflict_field)))
    return GoldenResult(golden, conflicts, golden_summary(golden, conflicts, fields))


# Golden records by implementation, as compute/dispatch.py names them.
GOLDEN_RECORDS = {"whole": golden_records_whole, "buckets": golden_records_in_buckets}
