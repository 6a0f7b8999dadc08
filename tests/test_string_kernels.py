"""The compiled string kernels equal their references for any Unicode text: rapidfuzz for Jaro,
Jaro-Winkler and Levenshtein, plain-Python sets for the Jaccards; the CUDA build (run by the numba
CUDA simulator in a subprocess) equals the CPU build."""

import importlib.util
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import Jaro, JaroWinkler, Levenshtein

from resolver.kernels import strings as sk
from resolver.kernels.strings import encode

HERE = Path(__file__).parent

# Few letters so pairs share characters: accents (ÿ/Ā straddle Jaro's table), a combining mark,
# CJK, astral emoji and maths letters, whitespace.
ALPHABET = "abcAé\u0301ñßÿĀ中文字😀🙃𝔘 \t"
TEXT = st.one_of(st.text(alphabet=ALPHABET, max_size=30), st.text(max_size=200))
VALUES = st.lists(st.one_of(st.none(), TEXT), min_size=1, max_size=12)


# -- references ----------------------------------------------------------------------------------


def ngram_set(s: str, n: int) -> set:
    if len(s) < n:
        return {s} if s else set()
    return {s[i : i + n] for i in range(len(s) - n + 1)}


def token_set(s: str) -> set:
    return set(re.split(r"[ \t\n\v\f\r]+", s)) - {""}


def set_jaccard(a: set, b: set) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def ngram_jaccard(a: str, b: str, n: int) -> float:
    return set_jaccard(ngram_set(a, n), ngram_set(b, n))


REFERENCES = {
    "jaro": (sk.jaro, {}, Jaro.similarity),
    "jaro_winkler": (
        sk.jaro_winkler, {}, lambda a, b: JaroWinkler.similarity(a, b, prefix_weight=0.1)
    ),
    "jaro_winkler_0.25": (
        sk.jaro_winkler, {"prefix_weight": 0.25},
        lambda a, b: JaroWinkler.similarity(a, b, prefix_weight=0.25),
    ),
    "levenshtein": (sk.levenshtein_similarity, {}, Levenshtein.normalized_similarity),
    "ngrams1": (sk.jaccard_ngrams, {"n": 1}, lambda a, b: ngram_jaccard(a, b, 1)),
    "ngrams2": (sk.jaccard_ngrams, {}, lambda a, b: ngram_jaccard(a, b, 2)),
    "ngrams3": (sk.jaccard_ngrams, {"n": 3}, lambda a, b: ngram_jaccard(a, b, 3)),
    "tokens": (sk.jaccard_tokens, {}, lambda a, b: set_jaccard(token_set(a), token_set(b))),
}


def expected(reference, a, b) -> float:
    return float("nan") if a is None or b is None else reference(a, b)


def assert_matches(name, left_values, right_values, left, right, other=False):
    fn, kwargs, reference = REFERENCES[name]
    enc = encode(left_values)
    kwargs = {**kwargs, "other": encode(right_values)} if other else kwargs
    got = fn(enc, np.asarray(left), np.asarray(right), **kwargs)
    want = [expected(reference, left_values[i], right_values[j]) for i, j in zip(left, right)]
    assert got.dtype == np.float64 and got.shape == (len(left),)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=name)


def decode(enc, i):
    if not enc.valid[i]:
        return None
    codes = enc.codes[enc.offsets[i] : enc.offsets[i + 1]]
    return codes.astype("<u4").tobytes().decode("utf-32-le")


# -- similarities against their references --------------------------------------------------------


@pytest.mark.parametrize("name", REFERENCES)
@settings(max_examples=200, deadline=None)
@given(values=VALUES, data=st.data())
def test_kernel_equals_reference(name, values, data):
    rows = st.integers(0, len(values) - 1)
    pairs = data.draw(st.lists(st.tuples(rows, rows), min_size=1, max_size=20))
    left, right = zip(*pairs)
    assert_matches(name, values, values, left, right)


@pytest.mark.parametrize("name", REFERENCES)
@settings(max_examples=50, deadline=None)
@given(a=VALUES, b=VALUES, data=st.data())
def test_two_tables_equal_reference(name, a, b, data):
    pairs = data.draw(
        st.lists(st.tuples(st.integers(0, len(a) - 1), st.integers(0, len(b) - 1)), max_size=20)
    )
    left, right = zip(*pairs) if pairs else ((), ())
    assert_matches(name, a, b, list(left), list(right), other=True)


def _long_strings() -> list:
    rng = random.Random(3)
    base = "".join(rng.choice("abcdé中😀 ") for _ in range(3000))
    edited = list(base)
    for _ in range(200):
        edited[rng.randrange(len(edited))] = rng.choice("xyz文🙃 ")
    return [
        base, "".join(edited), base[::-1], "a" * 3000, "a" * 2999 + "b", "😀" * 2500, "", None,
        "a", base[:40],
    ]


@pytest.mark.parametrize("name", REFERENCES)
def test_very_long_strings(name):
    values = _long_strings()
    n = len(values)
    left, right = np.divmod(np.arange(n * n), n)
    assert_matches(name, values, values, left, right)


def test_levenshtein_bit_parallel_and_dp_paths_meet():
    """After the common prefix and suffix are trimmed, a first side shorter than 63 chars takes
    Myers' bit vectors, a longer one the DP row; both must match rapidfuzz either side of the cut,
    for any code points (no table: the masks are computed from the string)."""
    rng = random.Random(12)
    values = []
    for length in (1, 2, 3, 31, 61, 62, 63, 64, 65, 90):
        for alphabet in ("ab", "abcde", "aĀé", "a中😀"):
            values.append("".join(rng.choice(alphabet) for _ in range(length)))
    values += ["x" + "ab" * 31 + "y", "z" + "ab" * 31 + "w", "ab" * 40, "ba" * 40]
    n = len(values)
    left, right = np.divmod(np.arange(n * n), n)
    assert_matches("levenshtein", values, values, left, right)


@pytest.mark.parametrize("name", ["jaro", "jaro_winkler"])
def test_jaro_bit_parallel_and_flag_paths_meet(name):
    """Short strings whose first side is all below U+0100 take the bit-mask path, the rest the
    flag path; both must match rapidfuzz on either side of the cut (63/64 chars, U+00FF/U+0100)."""
    rng = random.Random(11)
    values = []
    for length in (1, 2, 3, 31, 62, 63, 64, 65, 90):
        for alphabet in ("ab", "abcde", "aÿé", "aĀé", "a中"):
            values.append("".join(rng.choice(alphabet) for _ in range(length)))
    n = len(values)
    left, right = np.divmod(np.arange(n * n), n)
    assert_matches(name, values, values, left, right)


def test_known_values():
    enc = encode(["martha", "marhta", "dwayne", "duane", "dixon", "dicksonx"])
    jw = sk.jaro_winkler(enc, [0, 2, 4], [1, 3, 5])
    np.testing.assert_allclose(jw, [0.961111111, 0.84, 0.813333333], atol=1e-9)
    assert sk.levenshtein_similarity(enc, [0], [1])[0] == pytest.approx(1 - 2 / 6)


def test_empty_and_null_rules():
    enc = encode(["", "", "a b", None, "   "])
    left, right = [0, 0, 0, 3, 2, 4], [1, 2, 3, 0, 3, 0]
    for fn in (sk.jaro, sk.jaro_winkler, sk.levenshtein_similarity, sk.jaccard_ngrams):
        np.testing.assert_array_equal(fn(enc, left, right), [1.0, 0.0, np.nan, np.nan, np.nan, 0.0])
    # all-space strings have no tokens, like the empty string
    tokens = sk.jaccard_tokens(enc, left, right)
    np.testing.assert_array_equal(tokens, [1.0, 0.0, np.nan, np.nan, np.nan, 1.0])


def test_tokens_are_sets_split_on_any_run_of_whitespace():
    enc = encode(["  john   smith john ", "smith\tjohn", "john paul smith"])
    np.testing.assert_allclose(sk.jaccard_tokens(enc, [0, 0], [1, 2]), [1.0, 2 / 3])


def test_bad_arguments_are_clear_errors():
    enc = encode(["a", "b"])
    with pytest.raises(IndexError, match="right row"):
        sk.jaro(enc, [0], [2])
    with pytest.raises(IndexError, match="left row"):
        sk.jaro(enc, [-1], [0])
    with pytest.raises(ValueError, match="differ in length"):
        sk.jaro(enc, [0, 1], [0])
    with pytest.raises(ValueError, match="unknown target"):
        sk.jaro(enc, [0], [0], target="tpu")
    with pytest.raises(ValueError, match="prefix_weight"):
        sk.jaro_winkler(enc, [0], [0], prefix_weight=0.3)
    with pytest.raises(ValueError, match="n must"):
        sk.jaccard_ngrams(enc, [0], [0], n=0)
    assert sk.jaro(enc, [], []).shape == (0,)


def test_available_targets_always_has_cpu():
    assert sk.available_targets()[0] == "cpu"


@pytest.mark.skipif("cuda" in sk.available_targets(), reason="a GPU (or the simulator) is here")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match='use target="cpu"'):
        sk.jaro(encode(["a"]), [0], [0], target="cuda")


# -- encoding ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXT), max_size=30))
def test_encode_round_trips(values):
    enc = encode(values)
    assert (enc.offsets.dtype, enc.codes.dtype, enc.valid.dtype) == (np.int64, np.uint32, bool)
    assert [decode(enc, i) for i in range(len(values))] == values
    assert enc.lengths.tolist() == [0 if v is None else len(v) for v in values]


def test_encode_accepts_sliced_chunked_and_pandas_inputs():
    values = ["a", "bé", None, "", "中文😀", "long" * 100]
    whole = encode(values)
    arr = pa.array(values, pa.string())
    inputs = {
        "slice": (arr.slice(1, 4), values[1:5]),
        "chunked": (pa.chunked_array([arr.slice(0, 2), arr.slice(2)]), values),
        "large_string": (pa.array(values, pa.large_string()).slice(3), values[3:]),
        "series_arrow": (pd.Series(values, dtype=pd.ArrowDtype(pa.string())), values),
        "series_str": (pd.Series(values, dtype="str"), values),
        "series_object": (pd.Series(values, dtype=object), values),
        "empty": ([], []),
        "all_null": (pa.array([None, None], pa.string()), [None, None]),
        "string_view": (pa.array(values, pa.string_view()), values),
    }
    for label, (data, want) in inputs.items():
        enc = encode(data)
        assert [decode(enc, i) for i in range(len(enc))] == want, label
    assert whole.codes.tolist() == [ord(c) for v in values if v for c in v]
    with pytest.raises(TypeError, match="needs strings"):
        encode(pa.array([1, 2]))


def test_null_slot_with_bytes_behind_it_is_empty():
    """Arrow lets a null slot span bytes; it must still decode to a null of length 0."""
    offsets = pa.py_buffer(np.array([0, 3, 6], dtype=np.int32).tobytes())
    validity = pa.py_buffer(np.packbits([0, 1], bitorder="little").tobytes())
    arr = pa.Array.from_buffers(pa.string(), 2, [validity, offsets, pa.py_buffer(b"abcdef")])
    enc = encode(arr)
    assert enc.valid.tolist() == [False, True]
    assert enc.lengths.tolist() == [0, 3] and decode(enc, 1) == "def"


# -- the CUDA build, on the simulator --------------------------------------------------------------


@pytest.mark.slow
def test_cuda_build_equals_cpu_build_on_the_simulator():
    script = HERE / "_cudasim_strings.py"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    cuda = json.loads(proc.stdout)

    spec = importlib.util.spec_from_file_location("_cudasim_strings", script)
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    cpu = helper.similarities("cpu")
    assert cuda.keys() == cpu.keys()
    for name, values in cpu.items():
        assert not np.isnan(values).all(), name
        np.testing.assert_array_equal(np.array(cuda[name], dtype=np.float64), values, err_msg=name)


@pytest.mark.parametrize("name", REFERENCES)
def test_parallel_build_over_many_chunks(name):
    """More pairs and rows than the serial cut-off, so the parallel builds (chunks, each with its
    own scratch) run; a few long strings land in some chunks only."""
    rng = random.Random(5)
    first = ["anna", "anne", "jon", "john", "jöhn", "zoë", "李", "mohammed", "muhammad", ""]
    first.append(None)
    last = ["smith", "smyth", "o'brien", "obrien", "nguyễn", "nguyen", "王 小明", "😀"]
    values = [
        None if f is None else f"{f} {rng.choice(last)}" for f in rng.choices(first, k=3000)
    ] + ["ab" * 700, "ba" * 700]
    left = [rng.randrange(len(values)) for _ in range(6000)] + [3000, 3001]
    right = [rng.randrange(len(values)) for _ in range(6000)] + [3001, 0]
    assert len(values) > sk._SERIAL_MAX and len(left) > 2 * sk._CHUNK
    assert_matches(name, values, values, left, right)


@pytest.fixture(scope="module")
def gpu_jaro_on_the_cpu():
    """The GPU's Jaro-Winkler source (match masks computed in registers, no table), compiled for
    the CPU so that hypothesis can compare it with rapidfuzz quickly."""
    from numba import njit

    return sk._compile(njit, {"_IN_REGISTERS": True})["_jaro_winkler"]


@settings(max_examples=300, deadline=None)
@given(a=TEXT, b=TEXT)
def test_the_register_jaro_of_the_gpu_equals_rapidfuzz(gpu_jaro_on_the_cpu, a, b):
    ca = np.array([ord(c) for c in a], dtype=np.uint32)
    cb = np.array([ord(c) for c in b], dtype=np.uint32)
    scratch = np.zeros(sk._TABLE + len(a) + len(b), dtype=np.int64)
    got = gpu_jaro_on_the_cpu(ca, 0, len(a), cb, 0, len(b), scratch, 0.1)
    assert got == pytest.approx(JaroWinkler.similarity(a, b, prefix_weight=0.1), abs=1e-12)


def test_similarity_levels_cut_the_similarities_at_the_thresholds():
    values = ["martha", "marhta", "dwayne", "duane", None, "", "jon", "john", "xyz"]
    enc = encode(values)
    left, right = np.array([0, 2, 4, 5, 6, 0, 8, 0]), np.array([1, 3, 0, 5, 7, 8, 8, 4])
    levels = sk.similarity_levels("jaro_winkler", enc, left, right, [0.95, 0.85, 0.7], 2, 9, 0.1, null=1)
    expected = []
    for a, b in zip(left, right):
        if values[a] is None or values[b] is None:
            expected.append(1)
            continue
        sim = JaroWinkler.similarity(values[a], values[b], prefix_weight=0.1)
        expected.append(next((2 + q for q, cut in enumerate([0.95, 0.85, 0.7]) if sim >= cut), 9))
    assert levels.dtype == np.int8 and levels.tolist() == expected
    with pytest.raises(ValueError, match="unknown algorithm"):
        sk.similarity_levels("soundex", enc, left, right, [0.5], 2, 3)
