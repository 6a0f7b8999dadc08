"""Group-by aggregates per dense group number: cuDF when installed (gpu backend), otherwise on the
host with numpy. The dataframe path is one function over a dataframe module, so it runs unchanged
on cuDF and on pandas, whose API cuDF follows (CI checks it with pandas).

Every aggregate returns one value per group 0..n_groups-1; a group without rows gets `fill`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
import pandas as pd

HOW = ("count", "sum", "min", "max", "nunique")


@dataclass(frozen=True)
class Aggregate:
    values: np.ndarray | None  # per row (None for "count")
    how: str  # one of HOW
    fill: int | float = 0  # for groups without rows


def _host(key: np.ndarray, spec: Aggregate, n_groups: int) -> np.ndarray:
    if spec.how == "count":
        return np.bincount(key, minlength=n_groups).astype(np.int64)
    values = np.asarray(spec.values)
    if spec.how == "sum":
        out = np.bincount(key, weights=values, minlength=n_groups)
        return out.astype(values.dtype) if values.dtype.kind in "iu" else out
    if spec.how == "nunique":
        return _nunique(key, values, n_groups)
    present = np.zeros(n_groups, dtype=bool)
    present[key] = True
    info = np.iinfo(values.dtype) if values.dtype.kind in "iu" else None
    if spec.how == "min":
        acc = np.full(n_groups, info.max if info else np.inf, dtype=values.dtype)
        np.minimum.at(acc, key, values)
    else:
        acc = np.full(n_groups, info.min if info else -np.inf, dtype=values.dtype)
        np.maximum.at(acc, key, values)
    return np.where(present, acc, spec.fill).astype(values.dtype)


def _nunique(key: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Distinct values per group. Small non-negative integers (codes) are their own codes, and
    (group, value) pairs are marked in a table when it is small; else both are sorted out."""
    small = values.dtype.kind in "iu" and len(values) and 0 <= values.min() and values.max() < len(values)
    codes = values.astype(np.int64) if small else np.unique(values, return_inverse=True)[1].reshape(-1)
    span = max(int(codes.max(initial=-1)) + 1, 1)
    pair = key.astype(np.int64) * span + codes
    if n_groups * span <= 4 * len(key) + 1024:
        seen = np.zeros(n_groups * span, dtype=bool)
        seen[pair] = True
        return seen.reshape(n_groups, span).sum(axis=1).astype(np.int64)
    return np.bincount(np.unique(pair) // span, minlength=n_groups).astype(np.int64)


def _dataframe(df: ModuleType, key: np.ndarray, specs: dict[str, Aggregate], n_groups: int) -> dict[str, np.ndarray]:
    """One groupby over a dataframe module (cudf or pandas): DataFrame(...).groupby("key").agg(...)."""
    columns = {"key": key}
    agg = {}
    for name, spec in specs.items():
        columns[name] = key if spec.how == "count" else spec.values  # "count" of a never-null copy of the key
        agg[name] = spec.how
    frame = df.DataFrame(columns)
    grouped = frame.groupby("key", sort=True).agg(agg)
    if hasattr(grouped, "to_pandas"):  # cuDF
        grouped = grouped.to_pandas()
    out = {}
    for name, spec in specs.items():
        column = grouped[name].reindex(range(n_groups), fill_value=spec.fill)
        dtype = np.int64 if spec.how in ("count", "nunique") else np.asarray(spec.values).dtype
        out[name] = column.to_numpy().astype(dtype)
    return out


def group_aggregate(engine: str, key: np.ndarray, specs: dict[str, Aggregate], n_groups: int) -> dict[str, np.ndarray]:
    """Aggregates per group: engine "host" (numpy), "cudf" (cuDF groupby, imported here) or
    "pandas" (the same dataframe code with pandas)."""
    key = np.asarray(key, dtype=np.int64)
    for name, spec in specs.items():
        if spec.how not in HOW:
            raise ValueError(f"{name}: unknown aggregate {spec.how!r} (expected one of {', '.join(HOW)})")
    if engine == "host":
        return {name: _host(key, spec, n_groups) for name, spec in specs.items()}
    if engine == "cudf":
        import cudf as module
    elif engine == "pandas":
        import pandas as module
    else:
        raise ValueError(f"unknown group-by engine {engine!r}")
    if len(key) == 0:
        return {name: _host(key, spec, n_groups) for name, spec in specs.items()}
    return _dataframe(module, key, specs, n_groups)


def concat_in_order(parts: list[pd.DataFrame], order: np.ndarray) -> pd.DataFrame:
    """pd.concat(parts).take(order), built one column at a time and emptying the parts as it goes:
    the caller holds the parts and one column besides, where a whole concatenation and its
    reordered copy would be three times the table (golden records at 10M records: gigabytes)."""
    columns = list(parts[0].columns)
    out = {}
    for name in columns:
        column = pd.concat([p.pop(name) for p in parts], ignore_index=True)
        out[name] = column.take(order).reset_index(drop=True)
        del column
    return pd.DataFrame(out, columns=columns)
