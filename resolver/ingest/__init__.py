"""Ingest: source files to tables. readers (CSV, Parquet, JSONL, CDP shapes) -> tables (records, observations, event edges), planned in pieces (plan) with the normalization memo (memo)."""
