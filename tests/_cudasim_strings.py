"""Run every string kernel with target="cuda" and print the results as JSON.

Meant to run under NUMBA_ENABLE_CUDASIM=1 (set before numba is imported, hence a separate
process): the numba CUDA simulator executes the CUDA build on the CPU, so the test suite can compare
it with the CPU build without a GPU. `cases()` is shared with the test that compares.
"""

import json
import sys

import numpy as np

VALUES = [
    "", None, "a", "martha", "marhta", "dwayne", "duane", "jean-luc  picard", "picard jean luc",
    "José Muñoz", "Jose Munoz", "北京市 朝阳区", "北京 朝阳", "😀 smile 😀", "smile 😀",
    "𝔘𝔫𝔦", "ab", "ba", "  ", "x" * 500, "x" * 499 + "y",
]


def cases():
    """(values, left, right): ~50 pairs covering nulls, empties, Unicode and a 500-char string."""
    rng = np.random.default_rng(7)
    n = len(VALUES)
    left = np.concatenate([np.arange(n), rng.integers(0, n, 30), [19, 19, 0]])
    right = np.concatenate([np.roll(np.arange(n), 1), rng.integers(0, n, 30), [20, 0, 1]])
    return VALUES, left.astype(np.int64), right.astype(np.int64)


def similarities(target: str) -> dict:
    from resolver.kernels import strings

    values, left, right = cases()
    enc = strings.encode(values)
    return {
        "jaro": strings.jaro(enc, left, right, target=target),
        "jaro_winkler": strings.jaro_winkler(enc, left, right, 0.1, target=target),
        "levenshtein": strings.levenshtein_similarity(enc, left, right, target=target),
        "ngrams2": strings.jaccard_ngrams(enc, left, right, 2, target=target),
        "ngrams3": strings.jaccard_ngrams(enc, left, right, n=3, target=target),
        "tokens": strings.jaccard_tokens(enc, left, right, target=target),
        # levels cut inside the kernel (CUDA) or from the similarities (CPU)
        "jw_levels": strings.similarity_levels("jaro_winkler", enc, left, right, [0.95, 0.88, 0.7], 2, 5, 0.1,
                                               target=target).astype(np.float64),
        "lev_levels": strings.similarity_levels("levenshtein", enc, left, right, [0.9, 0.6], 3, 6, null=1,
                                                target=target).astype(np.float64),
        # every string against itself: a similarity of exactly 1.0 reaches the 1.0 threshold (>=)
        "jw_levels_boundary": strings.similarity_levels("jaro_winkler", enc, left, left, [1.0, 0.9], 2, 5, 0.1,
                                                        target=target).astype(np.float64),
        # the two-table form: right rows read from a second encoding
        "jw_other": strings.jaro_winkler(
            enc, left, right[::-1] % 5, other=strings.encode(values[:5]), target=target
        ),
    }


if __name__ == "__main__":
    from numba import config

    if not config.ENABLE_CUDASIM:
        sys.exit("run me with NUMBA_ENABLE_CUDASIM=1")
    results = similarities("cuda")
    assert all(isinstance(v, np.ndarray) for v in results.values())
    print(json.dumps({k: v.tolist() for k, v in results.items()}))
