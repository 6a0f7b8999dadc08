"""Engines: where the stages' jobs run. A run opens one engine (resolver.compute.dispatch.open_engine)
and passes it to every stage that maps jobs: ingest (a job per file or piece), candidate pairs (a
job per bucket of keyed records), connected components and golden records.

The contract every engine keeps:

- `map(fn, *iterables, **kwargs)`: fn over the iterables, results in job order;
- `map_lazily(fn, jobs, in_flight=None, **kwargs)`: fn(*job) for each job tuple, results in job
  order, a job's arguments made only when a slot frees (at most `in_flight` jobs' inputs exist at
  once: memory);
- `map_heavy(fn, jobs, costs)`: jobs worth a worker each (ingest), results in job order;
- `buckets_for(rows, rows_per_bucket=None)`: how many buckets a stage over `rows` rows cuts;
- `kind` ("local" or "dask": the key of the implementation table, compute/dispatch.py),
  `description` (what the run summary says of the engine; stages add their bucket counts) and
  `summary()` (that description at the end of the run).

Results never depend on the engine: jobs are pure, and results come back in job order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from resolver.compute.workers import worker_pool
from resolver.crashpoints import crash_point

# Without a configured partition count, a stage makes a bucket per this many rows (a bucket's pairs
# are held at once), so a job's memory stays about the same however big the data.
ROWS_PER_BUCKET = 500_000


class Engine(Protocol):
    kind: str
    description: dict

    def map(self, fn: Callable, *iterables: Iterable, **kwargs) -> list: ...

    def map_lazily(self, fn: Callable, jobs: Iterable[tuple], in_flight: int | None = None, **kwargs) -> list: ...

    def map_heavy(self, fn: Callable, jobs: list[tuple], costs: list[float]) -> list: ...

    def buckets_for(self, rows: int, rows_per_bucket: int | None = None) -> int: ...

    def summary(self) -> dict: ...


def buckets_of(rows: int, rows_per_bucket: int | None = None) -> int:
    """Buckets of about `rows_per_bucket` (default ROWS_PER_BUCKET) rows, at least one."""
    return max(1, -(-rows // (rows_per_bucket or ROWS_PER_BUCKET)))


@dataclass(frozen=True)
class LocalEngine:
    """This process, and for heavy jobs (ingest) a pool of `workers` processes. It holds no state:
    what stages note in its description is not kept (the run summary says engine and workers)."""

    workers: int = 1
    kind: str = "local"

    @property
    def description(self) -> dict:
        return {"engine": "local", "workers": self.workers}

    def map(self, fn: Callable, *iterables: Iterable, **kwargs) -> list:
        return [fn(*args, **kwargs) for args in zip(*iterables)]

    def map_lazily(self, fn: Callable, jobs: Iterable[tuple], in_flight: int | None = None, **kwargs) -> list:
        return [fn(*job, **kwargs) for job in jobs]  # one at a time: only the job running exists

    def map_heavy(self, fn: Callable, jobs: list[tuple], costs: list[float]) -> list:
        """In a pool of up to `workers` processes (in this one when one would do). Costliest jobs
        first keeps every worker busy to the end; results come back in job order."""
        workers = min(self.workers, len(jobs))
        if workers <= 1:
            return [fn(*job) for job in jobs]
        order = sorted(range(len(jobs)), key=lambda i: -costs[i])
        with worker_pool(workers) as pool:
            futures = {i: pool.submit(fn, *jobs[i]) for i in order}
            results = [futures[i].result() for i in range(len(jobs))]
            crash_point("workers-idle")  # test-only (resolver/crashpoints.py): a kill with the workers up
            return results

    def buckets_for(self, rows: int, rows_per_bucket: int | None = None) -> int:
        return buckets_of(rows, rows_per_bucket)

    def summary(self) -> dict:
        return self.description


# The local engine outside a run (tests, tools): one process.
LOCAL = LocalEngine()


@contextlib.contextmanager
def local_engine(options, default_workers: int, gpu: bool = False) -> Iterator[LocalEngine]:
    """The local engine of one run (`options`, the config's EngineOptions, says nothing it needs)."""
    yield LocalEngine(default_workers)
