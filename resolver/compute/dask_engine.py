"""The dask engine: an Engine (compute/engine.py) whose jobs run as Dask tasks on a cluster, with
results identical to the local engine's.

A cluster is started for the run (`LocalCluster` of CPU worker processes, or `LocalCUDACluster`
with one worker per GPU when dask-cuda is installed and the backend is the GPU), or the run joins a
running one (`engine.scheduler` / `--scheduler tcp://HOST:8786`). The stages map their jobs on it
like on any engine; compute/dispatch.py says which implementations the dask engine gets:

- **Ingest**: one task per source file, or per piece of a big file (files are the partitions);
  each task reads, normalizes and collapses its part's events, and the client combines the parts
  in plan order (`map_heavy`).
- **Candidate pairs and comparisons**: a task per bucket of keyed records (matching/pairs.py), each
  sent only its bucket's records, so no worker holds everyone's; the client gathers the pairs in
  the local engine's order and sums EM's statistics.
- **Connected components** (here): cuGraph's multi-GPU weakly connected components on dask-cudf
  where installed; otherwise min-label propagation over edge partitions the workers hold for
  every round (on a GPU backend as CuPy arrays on each dask-cuda worker's own GPU): partitions
  propose each node's smallest neighbour label, the client keeps the smallest and jumps
  pointers, until a round changes no label.
- **Golden records**: a survivorship task per bucket of persons (persons/golden_buckets.py).

Buckets grow with the data (about engine.ROWS_PER_BUCKET records each) unless `engine.partitions`
fixes their count, and a bucket's inputs are cut and scattered only when a task slot frees
(`map_lazily`), so memory per task and per worker does not grow with the dataset. The identity
policy (hub caps, limits, greedy rebuild), EM over the summed statistics and scoring run on the
client. Workers must see the source files and the state folder at the same paths.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from resolver.compute import engine as engines
from resolver.compute.heap import peak_rss_mb
from resolver.compute.backend import to_host
from resolver.compute.components import node_index_dtype, numbered_by_smallest_node


class EngineUnavailable(RuntimeError):
    """The dask engine cannot start here; the message says what is missing."""


@dataclass
class DaskEngine:
    client: object  # distributed.Client
    buckets: int  # partitions of pairs and golden records (at least)
    description: dict
    grow: bool = True  # more buckets for more rows (False: `engine.partitions` fixed the count)
    kind: str = "dask"

    def buckets_for(self, rows: int, rows_per_bucket: int | None = None) -> int:
        """Buckets for a stage over `rows` rows: the configured count, or enough to keep each
        bucket to about `rows_per_bucket` (default engine.ROWS_PER_BUCKET) rows, never fewer than
        two per worker."""
        if not self.grow:
            return self.buckets
        return max(self.buckets, engines.buckets_of(rows, rows_per_bucket))

    def map(self, fn, *iterables, **kwargs) -> list:
        """fn over the iterables on the cluster, results in order. Each result is fetched as soon
        as its task ends and its future released, so a worker holds only the results of tasks
        still running or not yet fetched, never all of them (memory per worker stays bounded)."""
        from distributed import as_completed

        futures = self.client.map(fn, *iterables, pure=False, **kwargs)
        position = {future.key: i for i, future in enumerate(futures)}
        results: list = [None] * len(futures)
        for future, result in as_completed(futures, with_results=True):
            results[position[future.key]] = result
            future.release()  # the worker may drop the result now
        self.client.run(_trim_memory)
        return results

    def map_lazily(self, fn, jobs: Iterable[tuple], in_flight: int | None = None, **kwargs) -> list:
        """fn(*job, **kwargs) for each job, results in order, with at most `in_flight` jobs (default:
        two per worker) on the cluster at once. A job's arguments are made only when a slot frees and
        are scattered, not put in the task graph: neither the client nor the workers ever hold more
        than `in_flight` jobs' inputs, however many jobs there are."""
        from distributed import as_completed

        in_flight = in_flight or 2 * max(self.description.get("workers", 1), 1)
        numbered = enumerate(jobs)
        position, results = {}, {}

        def submit(index: int, job: tuple):
            future = self.client.submit(_apply, fn, self.scatter(job), pure=False, **kwargs)
            position[future.key] = index
            return future

        running = as_completed([submit(i, job) for i, job in itertools.islice(numbered, in_flight)],
                               with_results=True)
        for future, result in running:
            results[position.pop(future.key)] = result
            future.release()
            following = next(numbered, None)
            if following is not None:
                running.add(submit(*following))
        self.client.run(_trim_memory)
        return [results[i] for i in range(len(results))]

    def map_heavy(self, fn, jobs: list[tuple], costs: list[float]) -> list:
        """A task per job (ingest: files are the partitions); the scheduler balances the costs."""
        return self.map(fn, *zip(*jobs)) if jobs else []

    def summary(self) -> dict:
        """The description, with each worker's peak memory so far."""
        return {**self.description, "worker_peak_rss_mb": self.worker_peak_rss_mb()}

    def worker_peak_rss_mb(self) -> list[float]:
        """Peak resident memory of each worker process so far (MB), in worker address order."""
        peaks = self.client.run(peak_rss_mb)
        return [round(peaks[address], 1) for address in sorted(peaks)]

    def broadcast(self, value):
        """`value` on every worker once (a future the tasks take as an argument)."""
        return self.client.scatter(value, broadcast=True, hash=False)

    def scatter(self, value):
        """`value` on one worker (a future a task takes as an argument): the data travels once,
        outside the task graph, and the client need not keep a copy."""
        return self.client.scatter([value], hash=False)[0]


def _trim_memory() -> None:
    """Hand the memory a finished stage freed back to the OS (glibc and Arrow keep freed memory
    for reuse, so a worker would otherwise stay at its ingest peak through every later stage)."""
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _apply(fn, job: tuple, **kwargs):
    return fn(*job, **kwargs)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@contextlib.contextmanager
def dask_engine(options, default_workers: int, gpu: bool = False) -> Iterator[DaskEngine]:
    """Start (or join) the cluster for one run; `options` is the config's EngineOptions."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise EngineUnavailable("the dask engine needs Dask: pip install 'resolver-identity[dask]'") from exc
    cluster = None
    workers = options.workers or default_workers
    if options.scheduler:
        try:
            client = Client(options.scheduler, timeout=options.connect_timeout)
        except OSError as exc:
            raise EngineUnavailable(f"cannot reach the Dask scheduler at {options.scheduler}: {exc}") from exc
        kind = "scheduler"
    elif gpu and _installed("dask_cuda"):
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster(n_workers=options.workers, memory_limit=options.memory_limit,
                                   rmm_pool_size=options.rmm_pool_size, enable_cudf_spill=options.spill,
                                   local_directory=options.local_directory, dashboard_address=None)
        client = Client(cluster)
        kind = "LocalCUDACluster"
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=options.threads_per_worker,
                               memory_limit=options.memory_limit, processes=True, dashboard_address=None,
                               local_directory=options.local_directory)
        client = Client(cluster)
        kind = "LocalCluster"
    try:
        n_workers = len(client.scheduler_info()["workers"])
        if n_workers == 0:
            client.wait_for_workers(1, timeout=options.connect_timeout)
            n_workers = len(client.scheduler_info()["workers"])
        buckets = options.partitions or 2 * max(n_workers, 1)
        engine = DaskEngine(client, buckets, {"engine": "dask", "cluster": kind, "workers": n_workers,
                                              "buckets": buckets, **({"scheduler": options.scheduler}
                                                                     if options.scheduler else {})},
                            grow=options.partitions is None)
        yield engine
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# ---------------------------------------------------------------------------------------------
# Connected components
# ---------------------------------------------------------------------------------------------
MAX_ROUNDS = 10_000


def connected_components(n_nodes: int, src: np.ndarray, dst: np.ndarray, engine: DaskEngine,
                         arrays: str = "numpy") -> np.ndarray:
    """Component label per node, numbered by each component's smallest node (as scipy numbers
    them): cuGraph's multi-GPU WCC where dask-cudf and cuGraph are installed, otherwise min-label
    propagation over edge partitions held by the workers, as `arrays` arrays ("cupy": on each
    dask-cuda worker's own GPU)."""
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    if n_nodes == 0 or len(src) == 0:
        return np.arange(n_nodes, dtype=np.int64)
    if _installed("cugraph") and _installed("dask_cudf"):
        smallest = _cugraph_dask_components(n_nodes, src, dst, engine)
    else:
        smallest = _label_propagation(n_nodes, src, dst, engine, arrays)
    return numbered_by_smallest_node(np, np.unique(smallest, return_inverse=True)[1].reshape(-1))


def _held_edges(src: np.ndarray, dst: np.ndarray, arrays: str):
    """An edge partition as the worker keeps it between rounds: int32 node ids while they fit, in
    `arrays`' memory (a dask-cuda worker's GPU for "cupy")."""
    xp = importlib.import_module(arrays)
    index = node_index_dtype(int(max(src.max(initial=0), dst.max(initial=0))) + 1)
    return xp.asarray(src, dtype=index), xp.asarray(dst, dtype=index)


def _partition_min_labels(edges: tuple, labels: np.ndarray, arrays: str) -> tuple[np.ndarray, np.ndarray]:
    """One edge partition's proposals, computed where the partition is held: each node it touches,
    and the smallest label among its neighbours' in this partition (on the host)."""
    xp = importlib.import_module(arrays)
    src, dst = edges
    labels = xp.asarray(labels)
    nodes = xp.concatenate([src, dst])
    offered = xp.concatenate([labels[dst], labels[src]])
    order = xp.lexsort(xp.stack([offered, nodes.astype(offered.dtype)]))
    nodes, offered = nodes[order], offered[order]
    first = xp.ones(len(nodes), dtype=bool)
    first[1:] = nodes[1:] != nodes[:-1]
    return to_host(nodes[first]).astype(np.int64), to_host(offered[first])


def _label_propagation(n_nodes: int, src: np.ndarray, dst: np.ndarray, engine: DaskEngine,
                       arrays: str = "numpy") -> np.ndarray:
    """Per node, the smallest node of its component, by min-label propagation over edge partitions
    the workers hold for every round (as `arrays` arrays: on dask-cuda workers, on their GPUs).
    Each round every partition proposes, for each node it touches, the smallest label among that
    node's neighbours there; the client takes the smallest proposal per node, jumps pointers (a
    node takes its label's label) and broadcasts the labels for the next round. A label is always
    a node of the same component no larger than the node, so labels only fall; the round that
    changes none is the last."""
    client = engine.client
    # Edges are 16 bytes on the client: partitions of 4M edges (64 MB).
    partitions = max(1, min(engine.buckets_for(len(src), rows_per_bucket=8 * engines.ROWS_PER_BUCKET), len(src)))
    bounds = np.linspace(0, len(src), partitions + 1).astype(np.int64)
    # Scattered (not put in the task graph, which would be shipped on every round), then moved
    # into the worker's array memory once; the futures keep them there until the last round.
    held = client.map(_held_edges, [engine.scatter(src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])],
                      [engine.scatter(dst[a:b]) for a, b in zip(bounds[:-1], bounds[1:])], arrays=arrays, pure=False)
    labels = np.arange(n_nodes, dtype=np.int64)
    try:
        for _ in range(MAX_ROUNDS):
            shared = engine.broadcast(labels)
            proposals = client.gather(client.map(_partition_min_labels, held, labels=shared, arrays=arrays,
                                                 pure=False))
            before = labels.copy()
            for nodes, offered in proposals:
                np.minimum.at(labels, nodes, offered)
            while True:  # pointer jumping
                jumped = labels[labels]
                if np.array_equal(jumped, labels):
                    break
                labels = jumped
            if np.array_equal(labels, before):
                return labels
    finally:
        client.cancel(held)
    raise RuntimeError(f"label propagation did not converge in {MAX_ROUNDS} rounds")  # pragma: no cover


def _cugraph_dask_components(n_nodes: int, src: np.ndarray, dst: np.ndarray, engine: DaskEngine) -> np.ndarray:
    """cuGraph's multi-GPU weakly connected components (26.x API: Graph(directed=False)
    .from_dask_cudf_edgelist, cugraph.dask.weakly_connected_components after comms.initialize);
    nodes without an edge are their own component. Returns per node the smallest node of its
    component."""
    import cudf
    import cugraph
    import cugraph.dask as dcg
    import cugraph.dask.comms.comms as comms
    import dask_cudf

    comms.initialize(p2p=True)
    try:
        edges = dask_cudf.from_cudf(cudf.DataFrame({"src": src, "dst": dst}), npartitions=engine.buckets)
        graph = cugraph.Graph(directed=False)
        graph.from_dask_cudf_edgelist(edges, source="src", destination="dst", renumber=True)
        found = dcg.weakly_connected_components(graph).compute().to_pandas()
    finally:
        comms.destroy()
    label = np.arange(n_nodes, dtype=np.int64) + n_nodes  # isolated nodes: a label of their own
    label[found["vertex"].to_numpy(np.int64)] = found["labels"].to_numpy(np.int64)
    smallest = np.full(int(label.max()) + 1, n_nodes, dtype=np.int64)
    np.minimum.at(smallest, label, np.arange(n_nodes, dtype=np.int64))
    return smallest[label]
