"""Run the MinHash signature kernel with target="cuda" and print the signatures as JSON.

Meant to run under NUMBA_ENABLE_CUDASIM=1 (set before numba is imported, hence a separate
process): the simulator executes the CUDA build on the CPU, so the tests can compare it with the
CPU build without a GPU. `cases()` is shared with the test that compares.
"""

import json
import sys

import numpy as np


def cases():
    """(page_hash, offsets, permutations): sessions of 0 to 9 events, a few events without a page,
    a session of only those, and hashes near 0 and 2**64 (where the uint64 arithmetic wraps)."""
    rng = np.random.default_rng(3)
    page_hash = rng.integers(1, 2**63, 60, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    page_hash[[4, 11, 12, 13, 40]] = 0
    page_hash[[20, 21]] = [np.uint64(1), np.uint64(2**64 - 1)]
    offsets = np.array([0, 3, 4, 4, 11, 14, 23, 30, 39, 45, 52, 60], dtype=np.int64)  # 11 sessions, one empty
    return page_hash, offsets, 16


def signatures(target: str) -> np.ndarray:
    from resolver.kernels.minhash import signatures as compute

    page_hash, offsets, permutations = cases()
    return np.asarray(compute(page_hash, offsets, permutations, target=target))


if __name__ == "__main__":
    import warnings

    from numba import config

    if not config.ENABLE_CUDASIM:
        sys.exit("run me with NUMBA_ENABLE_CUDASIM=1")
    # The simulator runs the 64-bit hash in Python scalars, where the intended wrap-around warns.
    warnings.filterwarnings("ignore", message="overflow encountered in scalar", category=RuntimeWarning)
    print(json.dumps(signatures("cuda").tolist()))
