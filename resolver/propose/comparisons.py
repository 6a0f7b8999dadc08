"""Comparisons by kind (the levels of configs/synthetic.yaml and of Splink's tutorials).

- names: Jaro-Winkler 0.92 / 0.80, with term-frequency adjustment (a common surname counts less);
  first names also with the nickname level (Bill = William);
- birth dates: `date` (exact, day/month swapped, within 1 and 10 years); a date the normalizer
  cannot read is compared as text, exact or one character off;
- emails `email` (same local part, same domain), phones `phone` (same last 7 digits);
- postcodes: exact or one character off (Levenshtein, at 1 - 1/length): a typo in a postcode is
  common and a neighbouring code is weak evidence, so it gets a level of its own, below exact;
- street numbers, ids, state, country, gender, initials, date parts: exact;
- street and city: Jaro-Winkler 0.90 / 0.70 (streets) and 0.92 / 0.80 with tf_adjust (cities); a
  house number and a street are joined into one address, compared by Levenshtein 0.90 / 0.75 (a
  move changes both at once: two comparisons would count it twice).
"""

from __future__ import annotations

import pandas as pd

import resolver.propose.kinds as K
from resolver.propose.mapping import Attribute

_ORDER = (K.FIRST_NAME, K.MIDDLE, K.LAST_NAME, K.FULL_NAME, K.BIRTH_DATE, K.YEAR, K.MONTH, K.DAY, K.ID, K.EMAIL,
          K.PHONE, K.STREET_NUMBER, K.STREET, K.CITY, K.POSTCODE, K.STATE, K.COUNTRY, K.GENDER)


def _one_typo(values: pd.Series) -> float:
    """The Levenshtein similarity of one edit at the values' most common length."""
    lengths = values.dropna().astype("str").str.len()
    length = int(lengths.mode().iloc[0]) if len(lengths) else 5
    return round(max(0.5, 1 - 1 / max(length, 2)) - 0.005, 3)


def comparison(attr: Attribute, values: pd.Series | None = None) -> dict:
    """One comparison for one attribute, by its kind."""
    base = {"name": attr.name, "column": attr.name}
    kind = attr.kind
    if kind == K.FIRST_NAME:
        return base | {"method": "jaro_winkler", "thresholds": [0.92, 0.80], "nicknames": True, "tf_adjust": True}
    if kind in (K.LAST_NAME, K.FULL_NAME):
        return base | {"method": "jaro_winkler", "thresholds": [0.92, 0.80], "tf_adjust": True}
    if kind == K.MIDDLE:
        single = values is not None and values.dropna().astype("str").str.strip().str.len().le(2).mean() > 0.9
        return base | ({"method": "exact"} if single else {"method": "jaro_winkler", "thresholds": [0.92, 0.80]})
    if kind == K.BIRTH_DATE:
        if attr.normalizer == "date":
            return base | {"method": "date", "years": [1, 10]}
        return base | {"method": "levenshtein", "thresholds": [_one_typo(values) if values is not None else 0.895]}
    if kind == K.EMAIL:
        return base | {"method": "email"}
    if kind == K.PHONE:
        return base | {"method": "phone", "digits": 7}
    if kind == K.POSTCODE:
        return base | {"method": "levenshtein", "thresholds": [_one_typo(values) if values is not None else 0.795]}
    if kind == K.STREET and attr.join:  # number and street: a typo, a neighbour, another address
        return base | {"method": "levenshtein", "thresholds": [0.90, 0.75]}
    if kind == K.STREET:
        return base | {"method": "jaro_winkler", "thresholds": [0.90, 0.70]}
    if kind == K.CITY:
        return base | {"method": "jaro_winkler", "thresholds": [0.92, 0.80], "tf_adjust": True}
    return base | {"method": "exact"}


def comparisons(attributes: dict[str, Attribute], values: dict[str, pd.Series]) -> list[dict]:
    """Every attribute's comparison, names first, in a stable order."""
    ordered = sorted(attributes.values(), key=lambda a: (_ORDER.index(a.kind) if a.kind in _ORDER else len(_ORDER),
                                                         a.name))
    return [comparison(a, values.get(a.name)) for a in ordered if a.compared]
