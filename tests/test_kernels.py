"""The compiled string hash equals its plain-Python definition, for any Unicode text."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.kernels.hashing import hash_bytes, hash_strings


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=300)), max_size=40), st.text(max_size=12))
def test_compiled_hash_matches_the_reference(values, prefix):
    got = hash_strings(pa.array(values, pa.string()), prefix=prefix.encode())
    expected = [0 if v is None else hash_bytes(v.encode(), prefix.encode()) for v in values]
    assert got.tolist() == expected


def test_sliced_and_chunked_arrays_hash_like_whole_ones():
    arr = pa.array(["a", "bé", None, "", "long" * 100])
    whole = hash_strings(arr)
    assert hash_strings(arr.slice(1, 3)).tolist() == whole[1:4].tolist()
    assert hash_strings(pa.chunked_array([arr.slice(0, 2), arr.slice(2)])).tolist() == whole.tolist()
    assert whole[2] == 0 and whole[3] != 0  # missing vs empty string


def test_hashes_spread_over_all_bits():
    hashes = hash_strings(pa.array([f"user-{i}" for i in range(20000)]))
    assert len(np.unique(hashes)) == 20000
    bits = np.unpackbits(hashes.view(np.uint8)).reshape(-1, 64).mean(axis=0)
    assert np.all((bits > 0.45) & (bits < 0.55))


@pytest.mark.slow
def test_numpy_without_row_stack_gets_the_alias_numba_cuda_calls():
    """numpy 2.5 (the GPU machines') has no np.row_stack; numba-cuda's compiler still calls it."""
    code = ("import numpy as np\n"
            "if hasattr(np, 'row_stack'):\n    del np.row_stack\n"
            "import resolver.kernels\n"
            "assert np.row_stack is np.vstack\n")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, env=env, timeout=120)
