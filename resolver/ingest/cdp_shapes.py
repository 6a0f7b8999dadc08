"""CDP event shapes read natively: each turns one parsed JSON event into the flat, dotted-path
form the source mapping reads (see README, "CDP event formats").

- `ga4`: Google Analytics 4 BigQuery export rows (newline-delimited JSON, as `bq extract` or the
  BigQuery API give them). `event_params` and `user_properties` (arrays of {key, value: {string_value,
  int_value, float_value, double_value}}) become `event_params.<key>` / `user_properties.<key>`;
  `event_timestamp` (INT64 microseconds, a number or a string) becomes ISO 8601 UTC; `_event_id`
  is made from user_pseudo_id, event_timestamp, event_name, event_bundle_sequence_id and
  batch_event_index (GA4 has no event id; these identify a row of the export).
- `adobe`: Adobe Experience Platform XDM ExperienceEvents. `identityMap.<Namespace>` (an array
  of {id, authenticatedState, primary}) becomes the namespace's id: the primary one, else the
  first authenticated one, else the first; `identityState.<Namespace>` keeps its
  authenticatedState. `_id` is the event id and `timestamp` is already RFC 3339.
- `tealium`: Tealium event data (flat JSON): `tealium_timestamp_epoch` (seconds) becomes ISO 8601
  UTC in `timestamp` when no timestamp is given; `tealium_visitor_id` stays as sent (use the
  `lower` normalizer: Tealium ids are case-sensitive, the docs advise lower-casing).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

SHAPES = ("ga4", "adobe", "tealium")


def _iso_from_epoch(value: Any, per_second: int) -> str | None:
    """ISO 8601 UTC text of an epoch number (or numeric text) in 1/per_second units; None when it
    is not a number (the row keeps no time; ingest then treats it as unknown)."""
    try:
        ticks = int(value)
    except (TypeError, ValueError):
        return None
    seconds, fraction = divmod(ticks, per_second)
    try:
        moment = datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    digits = len(str(per_second)) - 1
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction:0{digits}d}" if digits else "") + "Z"


def _ga4_value(value: Any) -> Any:
    """The set member of a GA4 value record (string, int, double or float)."""
    if not isinstance(value, dict):
        return None
    for kind in ("string_value", "int_value", "double_value", "float_value"):
        if value.get(kind) is not None:
            return value[kind]
    return None


def _ga4_params(items: Any) -> dict:
    if not isinstance(items, list):
        return {}
    return {item["key"]: _ga4_value(item.get("value")) for item in items
            if isinstance(item, dict) and isinstance(item.get("key"), str)}


def ga4(event: dict) -> dict:
    out = dict(event)
    out["event_params"] = _ga4_params(event.get("event_params"))
    out["user_properties"] = _ga4_params(event.get("user_properties"))
    micros = event.get("event_timestamp")
    out["event_timestamp"] = _iso_from_epoch(micros, 1_000_000)
    parts = [event.get(k) for k in ("user_pseudo_id", "event_timestamp", "event_name", "event_bundle_sequence_id",
                                    "batch_event_index")]
    out["_event_id"] = "|".join("" if p is None else str(p) for p in parts) if micros is not None else None
    return out


def _chosen_identity(entries: Any) -> dict | None:
    if not isinstance(entries, list):
        return None
    entries = [e for e in entries if isinstance(e, dict) and e.get("id") not in (None, "")]
    for test in (lambda e: e.get("primary") is True, lambda e: e.get("authenticatedState") == "authenticated",
                 lambda e: True):
        for entry in entries:
            if test(entry):
                return entry
    return None


def adobe(event: dict) -> dict:
    out = dict(event)
    identity_map = event.get("identityMap")
    flat = {}
    if isinstance(identity_map, dict):
        for namespace, entries in identity_map.items():
            chosen = _chosen_identity(entries)
            if chosen is not None:
                flat[namespace] = str(chosen["id"])
                flat[f"{namespace}.authenticatedState"] = chosen.get("authenticatedState")
    out["identityMap"] = {k: v for k, v in flat.items() if "." not in k}
    out["identityState"] = {k.split(".")[0]: v for k, v in flat.items() if "." in k}
    return out


def tealium(event: dict) -> dict:
    out = dict(event)
    if out.get("timestamp") is None and "tealium_timestamp_epoch" in event:
        out["timestamp"] = _iso_from_epoch(event["tealium_timestamp_epoch"], 1)
    return out


TRANSFORMS = {"ga4": ga4, "adobe": adobe, "tealium": tealium}
