"""Probabilistic matching, in the order the data flows: blocking keys (blocking) -> candidate pairs
and their comparison levels (pairs, compare; incremental reuse in reuse) -> the Fellegi-Sunter
model trained without labels (train, model) -> scores and decisions (score), as one straight
line (match). Before a run, the blocking plan (plan); after it, the explained links and review
queue (explain)."""
