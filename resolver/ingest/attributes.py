"""Record attributes in match form: each attribute normalized once, by its kind, for blocking and comparison.

Records from different sources share attribute names (first_name, email, ...); a source that lacks
an attribute leaves it missing (NA), and missing never agrees with anything.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from resolver.config import Config, field_kind, golden_fields
from resolver.ingest.memo import NormalizationMemo, memoized_column
from resolver.keys import parse_key
from resolver.normalize import (
    Blocklist,
    normalize_date,
    normalize_email,
    normalize_name,
    normalize_phone,
    normalize_text,
    normalize_trim,
)


def _without_junk(kind: str, normalized: pd.Series, config: Config) -> pd.Series:
    """Junk emails and phones (test@..., noreply@..., 555-0000...) agree with each other without
    meaning anything: the identity blocklist applies to them as attributes too."""
    blocklist_config = config.identity.blocklist
    blocklist = Blocklist.from_config(blocklist_config.values, blocklist_config.patterns, blocklist_config.vendor_lists)
    reasons = blocklist.blocked(kind, normalized)
    return normalized.where(reasons.isna().to_numpy())


def normalize_attribute(kind: str, values: pd.Series, config: Config, memo: NormalizationMemo | None = None) -> pd.Series:
    """One attribute column in match form (NA where missing or unusable); each distinct value is
    normalized once, and not at all when the normalization memo already knows it."""
    return memoized_column(memo, f"attribute:{kind}", values, lambda v: _match_form(kind, v, config))


def _match_form(kind: str, values: pd.Series, config: Config) -> pd.Series:
    if kind in ("email", "phone"):
        return _without_junk(kind, _normalize(kind, values, config), config)
    return _normalize(kind, values, config)


def _normalize(kind: str, values: pd.Series, config: Config) -> pd.Series:
    if kind == "name":
        return normalize_name(values)
    if kind == "text":
        return normalize_text(values)
    if kind == "email":
        opts = config.identity.email
        return normalize_email(values, fold_gmail_dots=opts.fold_gmail_dots, fold_plus_tags=opts.fold_plus_tags)
    if kind == "phone":
        return normalize_phone(values, config.run.default_region)[0]
    if kind == "date":
        return normalize_date(values)
    if kind == "number":
        numbers = pd.to_numeric(normalize_trim(values), errors="coerce")
        return numbers.astype("float64")
    return normalize_trim(values)


def matching_columns(config: Config) -> list[str]:
    """Every attribute the matching section reads, in a stable order."""
    matching = config.matching
    columns: list[str] = []
    for rule in matching.blocking.rules:
        for key in rule.keys + rule.refine_keys:
            columns.extend(parse_key(key).columns)
    for comparison in matching.comparisons:
        columns.extend(comparison.columns)
    return list(dict.fromkeys(columns))


def attribute_kinds(config: Config) -> dict[str, str]:
    """Every attribute a run puts in match form, with its kind: what matching reads, then the
    golden record's fields (the ingest jobs compute them all, once per record)."""
    matching = config.matching is not None and config.matching.enabled
    columns = (matching_columns(config) if matching else []) + golden_fields(config)
    return {column: field_kind(config, column) for column in dict.fromkeys(columns)}


def match_attributes(records: pd.DataFrame, config: Config, kinds: dict[str, str] | None = None,
                     memo: NormalizationMemo | None = None,
                     known: dict[tuple[str, str], pd.Series] | None = None) -> dict[str, pd.Series]:
    """Normalized attribute columns (by default the ones matching reads), one value per record
    (index 0..n-1). `known`: (kind, attribute) -> the attribute already in that form (ingest
    normalized it as an identifier or a name), taken as it is."""
    if kinds is None:
        kinds = {column: config.matching.normalizer(column) for column in matching_columns(config)}
    known = known or {}

    def one(column: str) -> pd.Series:
        if (kinds[column], column) in known:
            return known[(kinds[column], column)]
        raw = records[column] if column in records else pd.Series(pd.NA, index=records.index, dtype="str")
        return normalize_attribute(kinds[column], raw.reset_index(drop=True), config, memo)

    # Arrow's string kernels release the GIL: columns are normalized side by side.
    with ThreadPoolExecutor(max_workers=max(1, config.run.workers)) as pool:
        return dict(zip(kinds, pool.map(one, kinds)))



# An attribute whose normalizer makes more than this share of its non-empty values missing, over
# at least NULLED_MIN_VALUES of them, is most likely of another kind (birth_year read as a date).
NULLED_SHARE, NULLED_MIN_VALUES = 0.5, 20


def normalization_report(config: Config, records: pd.DataFrame, attributes: dict[str, pd.Series] | None,
                         ) -> tuple[dict[str, dict], list[str]]:
    """Per attribute put in match form: its kind, where the kind came from, how many records hold
    a non-empty value and how many of those the normalizer made missing; and one warning line per
    attribute whose normalizer nulled most of them (with the setting that fixes it)."""
    report: dict[str, dict] = {}
    warnings: list[str] = []
    for name, normalized in (attributes or {}).items():
        if name not in records:
            continue
        raw = records[name].reset_index(drop=True)
        present = raw.notna().to_numpy().copy()
        nulled = present & normalized.reset_index(drop=True).isna().to_numpy()
        if nulled.any():  # whitespace only is no value: only the nulled ones can be (few, usually)
            blank = raw[nulled].astype("str").str.strip().eq("").to_numpy()
            present[np.flatnonzero(nulled)[blank]] = False
            nulled &= present
        kind = field_kind(config, name)
        origin = config.matching.normalizer_origin(name) if config.matching is not None else "guessed from its name"
        non_empty, lost = int(present.sum()), int(nulled.sum())
        report[name] = {"kind": kind, "kind_from": "matching.normalizers" if origin.startswith("set") else "name",
                        "non_empty": non_empty, "nulled": lost}
        if non_empty >= NULLED_MIN_VALUES and lost > NULLED_SHARE * non_empty:
            suggestion = _suggested_kind(raw[nulled], kind)
            warnings.append(
                f"attribute {name!r} is normalized as {kind} ({origin}), which made {lost / non_empty:.0%} of its "
                f"{non_empty:,} non-empty values missing: if it is not a {kind}, set its kind, e.g. "
                f"`matching.normalizers: {{{name}: {suggestion}}}` (name | text | email | phone | date | number | raw)")
    return report, warnings


def _suggested_kind(nulled: pd.Series, kind: str) -> str:
    """A kind that would keep the values a normalizer nulled: number when they read as numbers."""
    sample = nulled.iloc[:1000].astype("str").str.strip()
    numbers = pd.to_numeric(sample, errors="coerce")
    if kind != "number" and numbers.notna().mean() > 0.9:
        return "number"
    return "raw" if kind == "text" else "text"
