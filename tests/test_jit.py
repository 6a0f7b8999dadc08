"""The numba compile time of a run is reported apart from the work (resolver/compute/jit.py)."""

from numba import njit

from resolver.compute.jit import jit_seconds
from resolver.resolution import StageLog


def test_a_stage_reports_the_kernels_it_compiled_and_a_second_call_compiles_nothing():
    @njit  # a fresh function: always compiled here, never taken from a cache
    def add(a, b):
        return a + b

    log = StageLog()
    before = jit_seconds()
    with log.stage("compiles"):
        assert add(1, 2) == 3
    with log.stage("runs"):
        assert add(3, 4) == 7
    compiled = log.stages[0]["jit_seconds"]
    assert 0 < compiled <= log.stages[0]["seconds"]
    assert "jit_seconds" not in log.stages[1]
    assert abs((jit_seconds() - before) - compiled) < 1e-3  # rounded to 0.1 ms in the log
