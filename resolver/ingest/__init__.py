"""Ingest: source files to tables. Files are planned in jobs and pieces and read by the engine
(plan), through the readers (readers, csv_cuts, cdp_shapes) into records, observations and event
edges (tables), with attributes in match form (attributes) and anonymous sessions (sessions);
normalization results are memoized across runs (memo) and unchanged files reloaded from their
snapshots (snapshots)."""
