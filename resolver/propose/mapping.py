"""Detected columns -> a records source: key, canonical attributes, identifiers, timestamp.

Attribute names are the README's canonical ones (first_name, last_name, birth_date, email, phone,
street, city, postal_code, state, ...), so sources with different headers share them and the
name-based normalizer guess (`resolver.config.attribute_kind`) is right; where it would be wrong,
`normalizers` says which one the attribute needs.

Identifiers are conservative (a wrong identifier merges people): an email column is one when
most rows have a value and few values are shared by many rows (role and family addresses are);
a phone column only next to an email identifier, with `link_limits: {email: 1}` (a household
phone then cannot join two people with different emails). Other id-like columns (SSNs, national
ids) are compared, never joined on: a typo or a reused number would merge two people for good.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

import resolver.propose.kinds as K
from resolver.config import DateParts, JoinedColumns, attribute_kind
from resolver.ingest.tables import built_attribute
from resolver.propose.sample import FileSample

CANONICAL = {
    K.FIRST_NAME: "first_name", K.LAST_NAME: "last_name", K.FULL_NAME: "full_name", K.MIDDLE: "middle_name",
    K.EMAIL: "email", K.PHONE: "phone", K.BIRTH_DATE: "birth_date", K.POSTCODE: "postal_code",
    K.STREET_NUMBER: "street_number", K.STREET: "street", K.CITY: "city", K.STATE: "state", K.COUNTRY: "country",
    K.GENDER: "gender",
}
# The normalizer each kind needs (resolver.config.ATTRIBUTE_NORMALIZERS).
NORMALIZER = {
    K.FIRST_NAME: "name", K.LAST_NAME: "name", K.FULL_NAME: "name", K.MIDDLE: "name", K.EMAIL: "email",
    K.PHONE: "phone", K.BIRTH_DATE: "date", K.POSTCODE: "text", K.STREET_NUMBER: "text", K.STREET: "text",
    K.CITY: "text", K.STATE: "text", K.COUNTRY: "text", K.GENDER: "text", K.ID: "text", K.YEAR: "text",
}
EMAIL_TYPE = {"normalizer": "email", "priority": 3, "limit": 5, "hub_cap": 8, "strong": True}
PHONE_TYPE = {"normalizer": "phone", "priority": 5, "limit": 5, "hub_cap": 8, "strong": True,
              "link_limits": {"email": 1}}
_TIMESTAMP_WORDS = frozenset({"modified", "updated", "update", "changed", "systemmodstamp", "timestamp", "ts"})
_DELETED_WORDS = frozenset({"deleted", "removed", "isdeleted"})


@dataclass
class Attribute:
    name: str
    kind: str
    columns: list[str]  # one column; several for emails and phones (first non-empty wins)
    normalizer: str
    parts: dict[str, str] | None = None  # year/month/day columns of a composite birth date
    note: str = ""  # how the config expresses it, when that needs saying
    join: list[str] | None = None  # columns joined into one value (an address from number and street)
    compared: bool = True  # False: only blocking rules read it (its columns are compared joined)


@dataclass
class SourcePlan:
    name: str
    sample: FileSample
    detections: list[K.Detection]
    key: str
    attributes: dict[str, Attribute] = field(default_factory=dict)
    identifiers: dict[str, list[str]] = field(default_factory=dict)
    identifier_notes: list[str] = field(default_factory=list)
    timestamp: str | None = None
    deleted: str | None = None

    def detection(self, column: str) -> K.Detection:
        return next(d for d in self.detections if d.column == column)


def attribute_name(d: K.Detection, taken: set[str]) -> str:
    """The canonical name of a kind; an id gets `ssn` (SSN-shaped or so named) or its column's name."""
    if d.kind in CANONICAL and CANONICAL[d.kind] not in taken:
        return CANONICAL[d.kind]
    if d.kind == K.ID and (d.detail.get("ssn") or set(K.name_words(d.column)) & K.SSN_WORDS) and "ssn" not in taken:
        return "ssn"
    base = re.sub(r"[^a-z0-9_]+", "_", "_".join(K.name_words(d.column))).strip("_") or "column"
    base = base if re.match(r"[a-z_]", base) else f"c_{base}"
    name, i = base, 2
    while name in taken or name in CANONICAL.values():
        name, i = f"{base}_{i}", i + 1
    return name


def _date_note(d: K.Detection) -> tuple[str, str]:
    """(normalizer, note) of a birth-date column from its detected format."""
    fmt = d.detail.get("format", "")
    if d.detail.get("readable", True):
        return "date", (f"{fmt} is one of the date normalizer's formats (resolver/normalize.py); the attribute name "
                        "birth_date makes it a date")
    return "text", (f"{fmt} is not a format the date normalizer reads: compared as text (exact or one character "
                    "off), not as a date")


def map_source(name: str, sample: FileSample, detections: list[K.Detection], key: str) -> SourcePlan:
    plan = SourcePlan(name, sample, detections, key)
    taken: set[str] = set()
    # Of several columns of one kind (ids, streets), the plainest name gets the canonical one.
    for d in sorted(detections, key=lambda d: len(K.name_words(d.column))):
        if not d.compared or d.kind in (K.YEAR, K.MONTH, K.DAY):
            continue
        if d.kind in (K.EMAIL, K.PHONE) and CANONICAL[d.kind] in plan.attributes:
            plan.attributes[CANONICAL[d.kind]].columns.append(d.column)
            continue
        attr = attribute_name(d, taken)
        taken.add(attr)
        normalizer, note = NORMALIZER[d.kind], ""
        if d.kind == K.BIRTH_DATE:
            normalizer, note = _date_note(d)
        plan.attributes[attr] = Attribute(attr, d.kind, [d.column], normalizer, note=note)
    position = {d.column: i for i, d in enumerate(detections)}
    plan.attributes = dict(sorted(plan.attributes.items(), key=lambda kv: position[kv[1].columns[0]]))
    _date_parts(plan, detections, taken)
    _joined_address(plan)
    _identifiers(plan)
    for d in detections:
        words = set(K.name_words(d.column))
        if d.kind == K.TIMESTAMP and plan.timestamp is None and words & _TIMESTAMP_WORDS:
            plan.timestamp = d.column
        if d.kind == K.FLAG and plan.deleted is None and (words & _DELETED_WORDS):
            plan.deleted = d.column
    return plan


def _date_parts(plan: SourcePlan, detections: list[K.Detection], taken: set[str]) -> None:
    parts = {d.detail["part"]: d.column for d in detections if d.kind in (K.YEAR, K.MONTH, K.DAY)}
    if not parts or "birth_date" in plan.attributes:
        return
    if len(parts) == 3:
        spec = {"year": parts[K.YEAR], "month": parts[K.MONTH], "day": parts[K.DAY]}
        plan.attributes["birth_date"] = Attribute("birth_date", K.BIRTH_DATE, list(spec.values()), "date", parts=spec,
                                                  note="one date from the year, month and day columns")
        return
    why = "a birth year" if set(parts) == {K.YEAR} else "a part of a birth date (the others are missing)"
    for kind, column in parts.items():
        attr = f"birth_{kind}"
        taken.add(attr)
        plan.attributes[attr] = Attribute(attr, kind, [column], "text", note=why)


def _joined_address(plan: SourcePlan) -> None:
    """A house number and a street (and a unit, where there is one) are compared as one address: a
    person who moves changes them all at once, and separate comparisons would count the move twice
    (they are not independent). Number and street stay attributes of their own for the blocking
    rules."""
    number, street = plan.attributes.get("street_number"), plan.attributes.get("street")
    if number is None or street is None or "address" in plan.attributes:
        return
    unit = next((d.column for d in plan.detections if d.kind == K.UNIT), None)  # flats of one building differ
    columns = [number.columns[0], street.columns[0], *([unit] if unit else [])]
    plan.attributes["address"] = Attribute("address", K.STREET, columns, "text", join=columns,
                                           note=f"house number, street{' and unit' if unit else ''}, compared as "
                                                "one field")
    number.compared = street.compared = False


def _shared_share(values: pd.Series, many: int = 5) -> float:
    """Share of the rows with a value whose value more than `many` rows hold."""
    values = values.dropna().astype("str").str.strip().str.lower()
    if values.empty:
        return 0.0
    counts = values.map(values.value_counts())
    return float((counts > many).mean())


def _identifiers(plan: SourcePlan) -> None:
    frame = plan.sample.frame
    email = plan.attributes.get("email")
    if email is not None:
        values = pd.concat([frame[c] for c in email.columns], ignore_index=True)
        fill = frame[email.columns].notna().any(axis=1).mean()
        shared = _shared_share(values)
        if fill >= 0.2 and shared <= 0.02:
            plan.identifiers["email"] = list(email.columns)
            plan.identifier_notes.append(f"email: {fill:.0%} of the rows have one and {shared:.1%} share theirs "
                                         "with more than 5 rows: a personal identifier (limit 5 a person, hub cap 8)")
        else:
            plan.identifier_notes.append(f"email: compared, not an identifier ({fill:.0%} filled, {shared:.1%} of "
                                         "them shared by more than 5 rows)")
    phone = plan.attributes.get("phone")
    if phone is not None:
        values = pd.concat([frame[c] for c in phone.columns], ignore_index=True)
        shared = _shared_share(values)
        if "email" in plan.identifiers and shared <= 0.02:
            plan.identifiers["phone"] = list(phone.columns)
            plan.identifier_notes.append("phone: an identifier that may not join two different emails "
                                         "(link_limits {email: 1}: household phones)")
        else:
            plan.identifier_notes.append("phone: compared, not an identifier (" + (
                "no email identifier to guard it against household phones)" if "email" not in plan.identifiers
                else f"{shared:.1%} of the numbers shared by more than 5 rows)"))


def identity_types(plans: list[SourcePlan]) -> dict[str, dict]:
    used = {t for p in plans for t in p.identifiers}
    types = {}
    if "email" in used:
        types["email"] = dict(EMAIL_TYPE)
    if "phone" in used:
        types["phone"] = {k: v for k, v in PHONE_TYPE.items() if k != "link_limits" or "email" in used}
    return types


def explicit_normalizers(plans: list[SourcePlan]) -> dict[str, str]:
    """Attributes whose name-based normalizer would be wrong, with the one they need."""
    out = {}
    for plan in plans:
        for attr in plan.attributes.values():
            if attribute_kind(attr.name) != attr.normalizer:
                out[attr.name] = attr.normalizer
    return out


def attribute_values(plan: SourcePlan) -> dict[str, pd.Series]:
    """Each attribute's raw value per sampled row, as ingest takes it (the first non-empty column
    of a list; a date from its parts and joined columns built by resolver.ingest.tables.built_attribute)."""
    frame = plan.sample.frame
    out = {}
    for attr in plan.attributes.values():
        spec = JoinedColumns(join=attr.join) if attr.join else DateParts(**attr.parts) if attr.parts else None
        if spec is not None:
            columns = [frame[c].astype("str").reset_index(drop=True) for c in spec.columns]
            out[attr.name] = built_attribute(spec, columns).astype("str")
            continue
        values = frame[attr.columns[0]].astype("str")
        for column in attr.columns[1:]:
            values = values.fillna(frame[column].astype("str"))
        out[attr.name] = values.reset_index(drop=True)
    return out
