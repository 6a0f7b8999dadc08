"""The deterministic identity graph: nodes and edges from the ingested tables (build), the guards against over-merging (guards)."""
