"""Capacity tooling: cost curves measured by `resolver bench` and the estimates of `resolver capacity`."""
