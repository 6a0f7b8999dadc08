"""Mapping for serve: an event's fields -> the identifiers and attribute values a batch run would
take from the same record, through the same source configuration and the batch's normalizers
(identifier normalizers, blocklist, attribute kinds), vectorized per group of events and memoized.

The memos are bounded (each cleared past 500,000 entries): raw identifier value -> normalized form,
attribute value -> (display, match form), (type or record kind, value) -> 64-bit member key.
"""

from __future__ import annotations

import pandas as pd

from resolver.config import Config, ConfigError, SourceConfig, field_kind
from resolver.ingest.tables import built_attribute
from resolver.ingest.attributes import normalize_attribute
from resolver.normalize import Blocklist, hash_identifiers, normalize_identifier
from resolver.persons.golden import NORMALIZED_DISPLAY
from resolver.sync.payloads import Event

OBJECT_ID_TYPES = {"Contact": ("sf_contact_id", "contact"), "Lead": ("sf_lead_id", "lead"),
                   "Account": ("sf_account_id", "account")}


def path_value(obj: dict, path: str):
    """A dotted path into a JSON object (`context.device.id`)."""
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def record_field(obj: dict, column: str):
    """A Salesforce record's field by API name (records are flat)."""
    return obj.get(column)


def value_text(value) -> str | None:
    """A JSON value as text (booleans as true/false); None when missing, blank or not a scalar."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value) if not isinstance(value, bool) else ("true" if value else "false")
    return text if text.strip() else None


def built_value(get, row: dict, spec) -> str | None:
    """A built attribute (a date from its parts, joined columns) of one record, as the batch builds
    it (resolver.ingest.tables.built_attribute); None when it makes no value."""
    value = built_attribute(spec, [pd.Series([value_text(get(row, c))], dtype="str") for c in spec.columns]).iloc[0]
    return None if pd.isna(value) else str(value)


def sync_name(source: str) -> str:
    """The source name of what serve received for `source` (the export's source in the batch)."""
    return f"{source}_sync"


def with_sync_sources(config: Config) -> Config:
    """The config with each source's export source just before it (same trust), unless the config
    lists it already: what serve received is a newer version of the same records, so it ranks
    just above them in source_priority, in serve as in the batch run that reads the export."""
    names = {s.name for s in config.sources}
    sources = []
    for source in config.sources:
        if sync_name(source.name) not in names and not source.name.endswith("_sync"):
            sources.append(source.model_copy(update={"name": sync_name(source.name)}))
        sources.append(source)
    return config.model_copy(update={"sources": sources})


class Mapping:
    """One configuration's mapping of events, with its memos (shared by the threads resolving)."""

    def __init__(self, config: Config):
        self.config = config
        bl = config.identity.blocklist
        self.blocklist = Blocklist.from_config(bl.values, bl.patterns, bl.vendor_lists)
        self.types = config.identity.types
        self._identifier_cache: dict[tuple[str, str], str | None] = {}
        self._attribute_cache: dict[tuple[str, str], object] = {}
        self._hash_cache: dict[tuple[str, str], int] = {}
        self._mapping: dict[tuple[str, bool], list[tuple[str, str]]] = {}  # see mapped
        self.objects = self._object_sources(config)  # Salesforce object -> its records source
        self.segment = self._segment_source(config)  # the events source of Segment messages

    @staticmethod
    def _object_sources(config: Config) -> dict[str, SourceConfig]:
        by_name = {s.name: s for s in config.sources}
        out = {}
        for obj, name in config.sync.objects.items():
            if name not in by_name or by_name[name].kind != "records":
                raise ConfigError(f"sync.objects.{obj}: {name!r} is not a records source")
            out[obj] = by_name[name]
        for source in config.sources:
            if source.system != "salesforce" or source.kind != "records":
                continue
            key_types = {t for t, cols in source.identifier_columns().items() if source.key in cols}
            for obj, (id_type, word) in OBJECT_ID_TYPES.items():
                if obj not in out and (id_type in key_types or word in source.name.lower()):
                    out[obj] = source
        return out

    @staticmethod
    def _segment_source(config: Config) -> SourceConfig | None:
        if config.sync.segment_source:
            return next(s for s in config.sources if s.name == config.sync.segment_source)
        return next((s for s in config.sources if s.system == "segment"), None)

    def warm_identifiers(self, id_type: str, raws: list[str]) -> dict[str, str | None]:
        """Normalize (and remember) the values not seen yet; returns what it normalized."""
        todo = list(dict.fromkeys(r for r in raws if (id_type, r) not in self._identifier_cache))
        if not todo:
            return {}
        spec = self.types[id_type]
        normalized, _ = normalize_identifier(spec.normalizer, pd.Series(todo, dtype="str"),
                                             default_region=self.config.run.default_region,
                                             email_options=self.config.identity.email.model_dump())
        blocked = self.blocklist.blocked(id_type, normalized).notna().to_numpy()
        if len(self._identifier_cache) > 500_000:
            self._identifier_cache.clear()
        values = normalized.mask(blocked)
        hashes = hash_identifiers(id_type, values)
        if len(self._hash_cache) > 500_000:
            self._hash_cache.clear()
        done = {}
        for raw, value, h in zip(todo, values, hashes):
            kept = done[raw] = None if pd.isna(value) else str(value)
            self._identifier_cache[(id_type, raw)] = kept
            if kept is not None:
                self._hash_cache[(id_type, kept)] = int(h)
        return done

    def identifier(self, id_type: str, raw) -> str | None:
        """`raw` normalized as the batch normalizes identifiers of this type (None: missing,
        invalid or blocked)."""
        raw = value_text(raw)
        if raw is None:
            return None
        try:
            return self._identifier_cache[(id_type, raw)]
        except KeyError:  # not seen yet (or the memo was cleared meanwhile, by another thread)
            return self.warm_identifiers(id_type, [raw]).get(raw, self._identifier_cache.get((id_type, raw)))

    def warm_attributes(self, field: str, raws: list[str]) -> None:
        """Put the values not seen yet in (display, match form), as golden records show them."""
        todo = list(dict.fromkeys(r for r in raws if (field, r) not in self._attribute_cache))
        if not todo:
            return
        kind = field_kind(self.config, field)
        matches = normalize_attribute(kind, pd.Series(todo, dtype="str"), self.config)
        if len(self._attribute_cache) > 500_000:
            self._attribute_cache.clear()
        for raw, match in zip(todo, matches):
            if pd.isna(match):
                out = (None, None)
            elif kind == "number":
                out = (f"{match:g}", f"{match:g}")
            elif kind in NORMALIZED_DISPLAY:
                out = (str(match), str(match))
            else:
                out = (raw.strip(), str(match))
            self._attribute_cache[(field, raw)] = out

    def attribute(self, field: str, raw) -> tuple[str | None, str | None]:
        """(display value, match form) of one golden field value, as the batch's golden records
        show and compare it."""
        raw = value_text(raw)
        if raw is None:
            return None, None
        if (field, raw) not in self._attribute_cache:
            self.warm_attributes(field, [raw])
        return self._attribute_cache[(field, raw)]

    def prepare(self, events: list[Event]) -> None:
        """Vectorized work for a batch of events, before they are resolved one by one (and outside
        the write transaction): every identifier and attribute value they carry is normalized in
        one call per type and remembered."""
        identifiers: dict[str, list[str]] = {}
        attributes: dict[str, list[str]] = {}
        for event in events:
            if event.channel == "segment":
                source, rows, get = self.segment, [event.fields], path_value
            else:
                source, get = self.objects.get(event.object or ""), record_field
                rows = [event.fields]
                if source is not None:  # every record the event names (its key is an identifier too)
                    rows = [{**event.fields, source.key: event.fields.get(source.key) or record_id}
                            for record_id in event.record_ids or [None]]
            if source is None:
                continue
            mapped = self.mapped(source)
            for row in rows:
                for id_type, column in mapped:
                    if (text := value_text(get(row, column))) is not None:
                        identifiers.setdefault(id_type, []).append(text)
            for name, cols in source.attribute_columns().items():
                attributes.setdefault(name, []).extend(t for c in cols if (t := value_text(get(rows[0], c))) is not None)
            for name, spec in source.built_attributes().items():
                if (t := built_value(get, rows[0], spec)) is not None:
                    attributes.setdefault(name, []).append(t)
        for id_type, raws in identifiers.items():
            if self.types[id_type].evidence:  # the others never link (and are not stored)
                self.warm_identifiers(id_type, raws)
        for name, raws in attributes.items():
            self.warm_attributes(name, raws)

    def match_forms(self, field: str, raws: list[str | None]) -> list[str | None]:
        """The match form of each value (None stays None), normalized together and remembered."""
        self.warm_attributes(field, [r for r in raws if r is not None])
        return [None if r is None else self.attribute(field, r)[1] for r in raws]

    def mapped(self, source: SourceConfig, evidence: bool = False) -> list[tuple[str, str]]:
        """(identifier type, column) of a source's identifiers and links (`evidence`: only the
        types that link), worked out once per source (it is asked for every event)."""
        key = (source.name, evidence)
        if key not in self._mapping:
            mapped = [(t, c) for t, cols in source.identifier_columns().items() for c in cols]
            mapped += [(link.type, link.column) for link in source.links]
            self._mapping[key] = [(t, c) for t, c in mapped if not evidence or self.types[t].evidence]
        return self._mapping[key]

    def identifiers(self, source: SourceConfig, row: dict, getter=None) -> list[tuple[str, str]]:
        """(type, normalized value) of the linking identifiers a row holds, strongest first."""
        get = getter or record_field
        found: dict[tuple[str, str], None] = {}
        for id_type, column in self.mapped(source, evidence=True):
            value = self.identifier(id_type, get(row, column))
            if value is not None:
                found[(id_type, value)] = None
        # strongest first (identity.types priority), as the batch anchors events
        return sorted(found, key=lambda tv: (self.types[tv[0]].priority, tv[0], tv[1]))

    def attributes(self, source: SourceConfig, row: dict, field_ts: dict, getter=None, default_ts=None) -> dict:
        """field -> (display, match form, timestamp) of the source's attributes (first non-empty column)."""
        get = getter or record_field
        out = {}
        for name, cols in source.attribute_columns().items():
            for col in cols:
                display, match = self.attribute(name, get(row, col))
                if display is not None:
                    out[name] = (display, match, field_ts.get(col, default_ts))
                    break
        for name, spec in source.built_attributes().items():
            display, match = self.attribute(name, built_value(get, row, spec))
            if display is not None:
                out[name] = (display, match, max((field_ts.get(c, default_ts) for c in spec.columns),
                                                 key=lambda t: t or ""))
        return out

    def identifier_hash(self, id_type: str, value: str) -> int:
        """The identifier's 64-bit hash (the batch's member key of it)."""
        return self.member(id_type, value)

    def record_key(self, source: SourceConfig, raw: str) -> str:
        """A Salesforce record's key as stored: normalized as its key identifier type when it has one."""
        key_types = [t for t, cols in source.identifier_columns().items() if source.key in cols]
        if key_types:
            value = self.identifier(key_types[0], raw)
            if value is not None:
                return value
        return raw.strip()

    def record_member(self, source: SourceConfig, key: str) -> int:
        """A record's member key as the next batch run computes it: it reads what serve received
        from the export source (sync_name), so the record is keyed by that source's name."""
        return self.member(f"record:{sync_name(source.name)}", key)

    def member(self, kind: str, value: str) -> int:
        """The 64-bit member key of (identifier type or record kind, value), remembered."""
        if (kind, value) not in self._hash_cache:
            self._hash_cache[(kind, value)] = int(hash_identifiers(kind, pd.Series([value], dtype="str"))[0])
        return self._hash_cache[(kind, value)]
