"""The engine is an argument: every engine and backend has one implementation of every stage in the
dispatch table, the local engine keeps job order, and the pair sources agree on EM's statistics."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from resolver.compute import dask_engine
from resolver.compute.backend import CPU
from resolver.compute.cluster import COMPONENTS
from resolver.compute.dispatch import CHOICES, choose
from resolver.compute.engine import LOCAL, LocalEngine
from resolver.config import ComparisonConfig
from resolver.matching.blocking import RULE_PAIRS, BlockingKeys, PairScope, candidate_pairs
from resolver.matching.compare import prepare
from resolver.matching.pairs import PAIR_SOURCES, HeldPairs, pairs_in_buckets, pattern_statistics
from resolver.matching.reuse import MatchCaches
from resolver.persons.golden_buckets import GOLDEN_RECORDS


class _Dask:  # what choose reads of a DaskEngine
    kind = "dask"


BACKENDS = [CPU, replace(CPU, name="gpu", components="xp"), replace(CPU, name="gpu", components="cugraph")]
IMPLEMENTATIONS = {"components": COMPONENTS, "rule_pairs": RULE_PAIRS, "pairs": PAIR_SOURCES,
                   "streamed_pairs": {**PAIR_SOURCES, "never": None}, "golden": GOLDEN_RECORDS}


@pytest.mark.parametrize("stage", sorted(CHOICES))
def test_every_engine_and_backend_has_an_implementation_of_every_stage(stage):
    assert set(CHOICES) == set(IMPLEMENTATIONS)
    for engine in (LOCAL, _Dask()):
        for backend in BACKENDS:
            assert choose(stage, backend, engine) in IMPLEMENTATIONS[stage]


def test_the_table_gives_todays_choices():
    gpu = BACKENDS[1]
    # On a cluster components run on the workers, whatever the backend (on GPU workers, their GPUs).
    assert [choose("components", b, e) for e in (LOCAL, _Dask()) for b in BACKENDS] == \
        ["scipy", "xp", "cugraph", "dask", "dask", "dask"]
    # On a cluster every backend makes and compares pairs in buckets (dask-cuda workers on their own
    # GPUs); a local GPU run holds them on its device, or streams its buckets through it.
    assert choose("pairs", CPU, _Dask()) == choose("pairs", gpu, _Dask()) == "buckets"
    assert choose("pairs", gpu, LOCAL) == "held" and choose("pairs", CPU, LOCAL) == "held, reusing levels"
    assert all(choose("streamed_pairs", b, e) == "streamed" for b in BACKENDS for e in (LOCAL, _Dask()))
    assert choose("golden", gpu, _Dask()) == "buckets"


def test_no_engine_is_held_in_a_module_global():
    assert not hasattr(dask_engine, "active") and not hasattr(dask_engine, "_ACTIVE")


def test_the_local_engine_keeps_job_order_in_this_process_and_in_its_pool():
    jobs = [(2.0, float(i)) for i in range(5)]
    expected = [math.pow(*job) for job in jobs]
    assert LOCAL.map(math.pow, [2.0] * 5, [float(i) for i in range(5)]) == expected
    assert LOCAL.map_lazily(math.pow, iter(jobs)) == expected
    assert LocalEngine(workers=2).map_heavy(math.pow, jobs, costs=[1, 5, 2, 4, 3]) == expected
    assert LOCAL.map_heavy(math.pow, [], costs=[]) == []
    assert LOCAL.buckets_for(0) == 1 and LOCAL.buckets_for(10, rows_per_bucket=3) == 4


@pytest.mark.parametrize("link_type", [None, "link_only", "dedupe_only"])
def test_held_and_bucketed_pairs_give_the_same_pairs_levels_and_statistics(link_type):
    rng = np.random.default_rng(11)
    n = 300
    keys = rng.integers(0, 30, size=(3, n)).astype(np.uint64)
    labels = rng.integers(0, 250, size=n).astype(np.int64)
    scope = PairScope(link_type, rng.integers(0, 2, size=n)) if link_type else None
    prepared = [prepare(ComparisonConfig(name="c", column="c", method="exact"),
                        {"c": pd.Series(rng.choice(["a", "b", "c", None], size=n), dtype="str")})]
    held = HeldPairs(candidate_pairs(BlockingKeys(["r0", "r1", "r2"], keys, []), labels, CPU, scope), keys, prepared,
                     "cpu", MatchCaches())
    held.compare(train=True)
    (patterns, masks, counts), candidates = held.statistics()
    for buckets in (1, 4):
        pairs, levels, summed = pairs_in_buckets(LOCAL, keys, labels, prepared, buckets, scope)
        assert [x.tolist() for x in (pairs.left, pairs.right, pairs.rule)] == \
            [x.tolist() for x in (held.pairs.left, held.pairs.right, held.pairs.rule)]
        assert levels.tolist() == held.levels.tolist()
        per_rule, streamed = pattern_statistics(LOCAL, keys, labels, prepared, buckets, scope)
        assert per_rule == held.pairs.per_rule and sum(per_rule) == candidates
        for whole, other in zip((patterns, masks, counts), summed):
            assert np.array_equal(whole, other)
        for whole, other in zip((patterns, masks, counts), streamed):
            assert np.array_equal(whole, other)
