"""Every choice of implementation by engine and backend, in one table.

A stage whose algorithm differs by where it runs asks `choose(stage, backend, engine)` for the name
of its implementation, and looks the name up in its own table of implementations (the way
nx-cugraph registers a backend's implementations of networkx's algorithms): stage bodies hold no
`if gpu` / `if engine` branch, and this file is the one place a reader finds them all. Every
implementation of a stage gives identical results; they differ in where the work and the memory go.

Keys: (engine kind, backend) where the backend is its path ("cpu", or "gpu", also the simulated
GPU) or, for connected components, its components library (Backend.components). ANY matches
every value.
"""

from __future__ import annotations

import contextlib

from resolver.compute.backend import Backend
from resolver.compute.dask_engine import dask_engine
from resolver.compute.engine import LOCAL, Engine, local_engine

ANY = "*"

CHOICES: dict[str, dict[tuple[str, str], str]] = {
    # Connected components (compute/cluster.py COMPONENTS), by the backend's components library:
    # scipy on the host; cuGraph or min-label hooking over CuPy on this process's GPU; on the
    # cluster, cuGraph's multi-GPU WCC where dask-cudf and cuGraph are installed, else min-label
    # propagation over edge partitions the workers hold (on a GPU backend, on their own GPUs).
    "components": {("local", "scipy"): "scipy", ("local", "cugraph"): "cugraph", ("local", "xp"): "xp",
                   ("dask", ANY): "dask"},
    # One blocking rule's candidate pairs (matching/blocking.py RULE_PAIRS): the compiled kernels on
    # the host, array operations (every pair found from its index) on the device.
    "rule_pairs": {(ANY, "cpu"): "compiled", (ANY, "gpu"): "xp"},
    # Where candidate pairs are made and compared when they are all held (matching/pairs.py
    # PAIR_SOURCES): on the backend (the state's levels reused on the host), or in buckets of
    # records on the cluster (on a GPU backend each dask-cuda worker makes and compares its buckets
    # on its own GPU); a local GPU run keeps its pairs on its device.
    "pairs": {("local", "cpu"): "held, reusing levels", ("dask", ANY): "buckets", ("local", "gpu"): "held"},
    # Pairs too many to hold: made bucket by bucket on the engine (EM statistics, then scores); on
    # a GPU backend each bucket's pairs are made and compared on a GPU: this process's (local
    # engine, memory: one bucket) or each dask-cuda worker's own.
    "streamed_pairs": {("local", ANY): "streamed", ("dask", ANY): "streamed"},
    # Golden records (pipeline): all persons at once, or buckets of persons, a task each.
    "golden": {("local", ANY): "whole", ("dask", ANY): "buckets"},
}

# Engines by config.engine.name: context managers that open one for a run and close it after.
ENGINES = {"local": local_engine, "dask": dask_engine}


def _backend_key(stage: str, backend: Backend) -> str:
    if stage == "components":
        return backend.components
    return "gpu" if backend.on_gpu_path else "cpu"


def choose(stage: str, backend: Backend, engine: Engine = LOCAL) -> str:
    """The name of `stage`'s implementation for this backend and engine."""
    table = CHOICES[stage]
    kind, key = engine.kind, _backend_key(stage, backend)
    for candidate in ((kind, key), (kind, ANY), (ANY, key)):
        if candidate in table:
            return table[candidate]
    raise KeyError(f"no {stage} implementation for the {kind} engine and the {key} backend")


@contextlib.contextmanager
def open_engine(options, default_workers: int, gpu: bool = False):
    """The engine of one run (`options`: the config's EngineOptions; options.name picks it)."""
    with ENGINES[options.name](options, default_workers, gpu=gpu) as engine:
        yield engine
