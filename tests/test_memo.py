"""The normalization memo: remembered values give exactly what normalizing gives, only unseen
values are normalized, thread pools share the memo they are given, and what is handed on is this run's values."""

from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from resolver.ingest.memo import NormalizationMemo, memoized_column
from resolver.normalize import normalize_email


class Counting:
    """normalize_email, counting the values it is asked to normalize."""

    def __init__(self):
        self.calls = 0

    def __call__(self, values: pd.Series) -> pd.Series:
        self.calls += len(values)
        return normalize_email(values)


VALUES = pd.Series(["A@X.com", "a@x.com", None, "bad", "A@X.com", "  b@y.org "], dtype="str")


def test_remembered_values_equal_fresh_normalization_and_are_not_normalized_again():
    expected = normalize_email(VALUES)
    first, count = NormalizationMemo(), Counting()
    got = memoized_column(first, "identifier:email", VALUES, count)
    pd.testing.assert_series_equal(got, expected, check_names=False)
    assert count.calls == 4 + 1  # each distinct value once, and what a missing value becomes

    second, count = NormalizationMemo(tables=first.handed_on()), Counting()
    more = pd.concat([VALUES, pd.Series(["new@z.net"], dtype="str")], ignore_index=True)
    got = memoized_column(second, "identifier:email", more, count)
    pd.testing.assert_series_equal(got, normalize_email(more), check_names=False)
    assert count.calls == 1 + 1 and second.stats()["remembered"] == 4


def test_thread_pools_share_the_memo_they_are_given():
    memo = NormalizationMemo()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda name: memoized_column(memo, name, VALUES, normalize_email), ["a", "b"]))
    assert set(memo.handed_on()) == {"a", "b"}


def test_the_memo_handed_on_holds_only_this_runs_values():
    first = NormalizationMemo()
    memoized_column(first, "e", VALUES, normalize_email)
    second = NormalizationMemo(tables=first.handed_on())
    memoized_column(second, "e", pd.Series(["a@x.com"], dtype="str"), normalize_email)
    table = second.handed_on()["e"]
    assert len(table) == 1 and table["out0"].tolist() == ["a@x.com"]
    assert "raw" not in table.columns  # keyed by hashes: no raw text is kept
