"""The three webhook shapes, parsed and validated into events (input-formats.md 1.6, 1.7, 2.1-2.2).

Every error is a PayloadError whose message names the problem (and where: `Notification[3]`,
`batch[7].messageId`); a request with any malformed part is refused as a whole (400) and nothing
of it is stored.

An event's id is what makes redelivery harmless:
- Salesforce Outbound Message: the notification `Id` (`sfdc-om:<Id>`);
- Change Data Capture: the transaction key and the sequence number within the transaction
  (`sfdc-cdc:<transactionKey>:<sequenceNumber>`; one transaction can change several records, each
  change its own event);
- Segment: the `messageId` (`segment:<messageId>`).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime

import defusedxml.ElementTree as SafeET
import orjson
from defusedxml import DefusedXmlException

OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MAX_NOTIFICATIONS = 100
MAX_RECORDS_PER_EVENT = 100  # default of sync.max_records_per_event
MAX_VALUE_CHARS = 131_072  # default of sync.max_value_chars: a Salesforce Long Text Area holds as much
MAX_ID_CHARS = 255  # event and record ids are short (a UUID, 18 characters); they are index keys
MAX_JSON_DEPTH = 64  # webhooks nest a few levels; deeper documents would only make encoders recurse
SEGMENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")
CDC_TYPES = ("CREATE", "UPDATE", "DELETE", "UNDELETE")
GAP_TYPES = ("GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE", "GAP_OVERFLOW")
OBJECT_PREFIXES = {"003": "Contact", "00Q": "Lead", "001": "Account"}

ACK = ('<?xml version="1.0" encoding="UTF-8"?>'
       '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
       f'<notificationsResponse xmlns="{OUTBOUND_NS}"><Ack>true</Ack></notificationsResponse>'
       '</soapenv:Body></soapenv:Envelope>')


class PayloadError(ValueError):
    """A malformed webhook body; the message names the problem."""

    status = 400


class OverLimit(PayloadError):
    """An event over sync.max_records_per_event or sync.max_value_chars: the request is refused (413)."""

    status = 413


@dataclass
class Event:
    event_id: str
    channel: str  # salesforce_outbound | salesforce_cdc | segment
    change: str  # UPSERT (outbound), CDC change type, or the Segment message type
    timestamp: str | None  # ISO 8601 UTC: when the change happened at the source
    object: str | None = None  # Salesforce object (Contact, Lead, ...)
    record_ids: list[str] = field(default_factory=list)
    fields: dict = field(default_factory=dict)  # Salesforce: flat API fields; Segment: the message
    org_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Event:
        return cls(**json.loads(text))


def _iso(value) -> str | None:
    """A timestamp (ISO text or epoch milliseconds) as fixed-width UTC ISO text, None if unusable."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            ts = datetime.fromtimestamp(value / 1000.0, tz=UTC)
        else:
            text = str(value).strip()
            if text.endswith("Z"):
                text = text[:-1] + "+00:00"
            if len(text) > 5 and text[-5] in "+-" and text[-3] != ":" and "T" in text:
                text = text[:-2] + ":" + text[-2:]  # Salesforce REST: +0000
            ts = datetime.fromisoformat(text)
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _object_of(record_id: str | None, declared: str | None) -> str | None:
    if declared:
        return declared.split(":")[-1]
    if record_id and record_id[:3] in OBJECT_PREFIXES:
        return OBJECT_PREFIXES[record_id[:3]]
    return None


# ---------------------------------------------------------------------------------------------
# Salesforce Outbound Messages (SOAP)
# ---------------------------------------------------------------------------------------------
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_outbound(body: bytes) -> tuple[str, list[Event]]:
    """(OrganizationId, one event per Notification) from a SOAP Outbound Message."""
    root = _xml(body)
    notifications = root.find(f".//{{{OUTBOUND_NS}}}notifications")
    if notifications is None:
        raise PayloadError(f"SOAP body: no <notifications> element in namespace {OUTBOUND_NS}")
    org = (notifications.findtext(f"{{{OUTBOUND_NS}}}OrganizationId") or "").strip()
    if not org:
        raise PayloadError("notifications: OrganizationId is missing")
    items = notifications.findall(f"{{{OUTBOUND_NS}}}Notification")
    if not items:
        raise PayloadError("notifications: no Notification element")
    if len(items) > MAX_NOTIFICATIONS:
        raise PayloadError(f"notifications: {len(items)} Notification elements, at most {MAX_NOTIFICATIONS} allowed")
    events = []
    seen = set()
    for i, item in enumerate(items):
        where = f"Notification[{i}]"
        nid = (item.findtext(f"{{{OUTBOUND_NS}}}Id") or "").strip()
        if not nid:
            raise PayloadError(f"{where}: Id is missing")
        sobject = item.find(f"{{{OUTBOUND_NS}}}sObject")
        if sobject is None:
            raise PayloadError(f"{where}: sObject is missing")
        fields: dict[str, str | None] = {}
        for child in sobject:
            if len(child):
                continue  # nested relationship objects are not record fields
            nil = child.get(f"{{{XSI_NS}}}nil") == "true"
            fields[_local(child.tag)] = None if nil else (child.text or "")
        record_id = (fields.get("Id") or "").strip()
        if not record_id:
            raise PayloadError(f"{where}: sObject has no Id field")
        obj = _object_of(record_id, sobject.get(f"{{{XSI_NS}}}type"))
        if nid in seen:
            continue  # the same notification twice in one message: once is enough
        seen.add(nid)
        events.append(Event(event_id=f"sfdc-om:{nid}", channel="salesforce_outbound", change="UPSERT",
                            timestamp=_iso(fields.get("LastModifiedDate") or fields.get("SystemModstamp")),
                            object=obj, record_ids=[record_id], fields=fields, org_id=org))
    return org, events


def _xml(body: bytes) -> ET.Element:
    """The document's root, read by defusedxml in whatever encoding it declares (UTF-16 too): a
    document type declaration, and so any entity, is refused before anything is expanded."""
    try:
        return SafeET.fromstring(body, forbid_dtd=True)
    except DefusedXmlException:
        raise PayloadError("SOAP body: document type declarations are not accepted") from None
    except ET.ParseError as exc:
        raise PayloadError(f"SOAP body: not well-formed XML ({exc})") from None
    except LookupError as exc:  # an encoding Python does not know
        raise PayloadError(f"SOAP body: {exc}") from None


# An OrganizationId element in the raw bytes: what an unsigned Outbound Message claims to come from,
# found without parsing (so the allow-list is checked before any XML is read). ASCII-compatible
# encodings only: Salesforce sends UTF-8; anything else needs a signature.
_CLAIMED_ORG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?OrganizationId>\s*([0-9A-Za-z]{15,18})\s*</")


def claimed_org_id(body: bytes) -> str | None:
    """The first OrganizationId an Outbound Message's raw bytes hold, or None. Only a pre-check:
    the parsed message's OrganizationId is checked again (a comment could hold another one)."""
    match = _CLAIMED_ORG.search(body)
    return match.group(1).decode("ascii") if match else None


# ---------------------------------------------------------------------------------------------
# Change Data Capture (CometD JSON)
# ---------------------------------------------------------------------------------------------
_ADDRESS_PARTS = ("Street", "City", "State", "PostalCode", "Country", "StateCode", "CountryCode", "Latitude",
                  "Longitude", "GeocodeAccuracy")


def _flatten_cdc(body: dict) -> dict:
    """Nested compound fields to the flat API names the sources map: Name.FirstName -> FirstName,
    MailingAddress.City -> MailingCity, Address.City (Lead) -> City."""
    flat = {}
    for key, value in body.items():
        if key == "ChangeEventHeader":
            continue
        if isinstance(value, dict):
            if key == "Name":
                flat.update({k: v for k, v in value.items() if not isinstance(v, dict)})
            elif key.endswith("Address"):
                prefix = key[: -len("Address")]
                flat.update({prefix + k: v for k, v in value.items() if not isinstance(v, dict)})
            continue
        if isinstance(value, list):
            continue
        flat[key] = None if value is None else (value if isinstance(value, str) else json.dumps(value))
    return flat


def _cdc_messages(doc) -> list:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict) and isinstance(doc.get("events"), list):
        return doc["events"]
    return [doc]


def parse_cdc(body: bytes, max_records: int = MAX_RECORDS_PER_EVENT) -> list[Event]:
    """One event per change event: a CometD message `{"schema", "payload", "event"}` (or its
    `data` wrapper), a bare payload, or a list of them. An event with more than `max_records`
    record ids refuses the whole request (OverLimit)."""
    doc = _json(body, "CDC body")
    messages = _cdc_messages(doc)
    if not messages:
        raise PayloadError("CDC body: no change events")
    events = []
    for i, message in enumerate(messages):
        where = f"events[{i}]" if len(messages) > 1 else "CDC event"
        if isinstance(message, dict) and isinstance(message.get("data"), dict):
            message = message["data"]
        if not isinstance(message, dict):
            raise PayloadError(f"{where}: expected a JSON object")
        payload = message.get("payload", message)
        if not isinstance(payload, dict):
            raise PayloadError(f"{where}.payload: expected a JSON object")
        header = payload.get("ChangeEventHeader")
        if not isinstance(header, dict):
            raise PayloadError(f"{where}.payload: ChangeEventHeader is missing")
        change = header.get("changeType")
        if change not in CDC_TYPES + GAP_TYPES:
            raise PayloadError(f"{where}.ChangeEventHeader.changeType: {change!r} is not one of "
                               f"{', '.join(CDC_TYPES + GAP_TYPES)}")
        record_ids = header.get("recordIds")
        if not isinstance(record_ids, list) or not record_ids or not all(isinstance(r, str) and r for r in record_ids):
            raise PayloadError(f"{where}.ChangeEventHeader.recordIds: expected a non-empty list of ids")
        if len(record_ids) > max_records:
            raise OverLimit(f"{where}.ChangeEventHeader.recordIds: {len(record_ids)} record ids, at most "
                            f"{max_records} per event (sync.max_records_per_event)")
        key = header.get("transactionKey")
        if not isinstance(key, str) or not key:
            raise PayloadError(f"{where}.ChangeEventHeader.transactionKey is missing")
        sequence = header.get("sequenceNumber", 0)
        entity = header.get("entityName")
        if not isinstance(entity, str) or not entity:
            raise PayloadError(f"{where}.ChangeEventHeader.entityName is missing")
        fields = _flatten_cdc(payload)
        timestamp = _iso(fields.get("LastModifiedDate")) or _iso(header.get("commitTimestamp"))
        events.append(Event(event_id=f"sfdc-cdc:{key}:{sequence}", channel="salesforce_cdc", change=change,
                            timestamp=timestamp, object=entity, record_ids=list(record_ids), fields=fields))
    return events


# ---------------------------------------------------------------------------------------------
# Segment
# ---------------------------------------------------------------------------------------------
def parse_segment(body: bytes) -> list[Event]:
    """One event per message: a single Segment message or `{"batch": [...]}`."""
    doc = _json(body, "Segment body")
    if not isinstance(doc, dict):
        raise PayloadError("Segment body: expected a JSON object (a message or {\"batch\": [...]})")
    if "batch" in doc:
        batch = doc["batch"]
        if not isinstance(batch, list) or not batch:
            raise PayloadError("batch: expected a non-empty list of messages")
        messages = [(f"batch[{i}]", m) for i, m in enumerate(batch)]
    else:
        messages = [("message", doc)]
    events = []
    for where, m in messages:
        if not isinstance(m, dict):
            raise PayloadError(f"{where}: expected a JSON object")
        kind = m.get("type")
        if kind not in SEGMENT_TYPES:
            raise PayloadError(f"{where}.type: {kind!r} is not one of {', '.join(SEGMENT_TYPES)}")
        mid = m.get("messageId")
        if not isinstance(mid, str) or not mid.strip():
            raise PayloadError(f"{where}.messageId is missing")
        if len(mid) > 100:
            raise PayloadError(f"{where}.messageId: longer than 100 characters")
        if not any(isinstance(m.get(k), (str, int)) and str(m.get(k)).strip() for k in ("userId", "anonymousId")):
            raise PayloadError(f"{where}: needs userId or anonymousId")
        if kind == "alias" and not m.get("previousId"):
            raise PayloadError(f"{where}.previousId is missing (alias)")
        for name in ("traits", "context", "properties"):
            if name in m and m[name] is not None and not isinstance(m[name], dict):
                raise PayloadError(f"{where}.{name}: expected a JSON object")
        events.append(Event(event_id=f"segment:{mid}", channel="segment", change=kind,
                            timestamp=_iso(m.get("timestamp") or m.get("originalTimestamp") or m.get("receivedAt")),
                            fields=m))
    return events


def _json(body: bytes, what: str):
    # orjson: nesting deeper than 1024 and lone surrogates are errors (not a RecursionError, not a
    # string that no encoder can write later).
    if not body.strip():
        raise PayloadError(f"{what}: empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "surrogate" not in str(exc):
            raise PayloadError(f"{what}: not valid JSON ({exc})") from None
        # A lone surrogate ("\ud800", which JavaScript strings may hold) spoils one character, not
        # the event: the inbox stores it as U+FFFD (service._storable). The standard parser takes it.
        doc = _json_with_lone_surrogates(body, what)
    if _depth(doc) > MAX_JSON_DEPTH:
        raise PayloadError(f"{what}: nested deeper than {MAX_JSON_DEPTH} levels")
    return doc


def _json_with_lone_surrogates(body: bytes, what: str):
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # deeper than the interpreter's stack: orjson stopped first
        raise PayloadError(f"{what}: not valid JSON ({type(exc).__name__})") from None


def _depth(doc) -> int:
    """How deep a parsed JSON document nests (objects and lists), without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    return deepest


def parse_webhook(channel: str, body: bytes, max_records: int = MAX_RECORDS_PER_EVENT,
                  max_value_chars: int = MAX_VALUE_CHARS) -> tuple[str | None, list[Event]]:
    """(OrganizationId or None, events) of a webhook body of `channel`. Any failure to read the
    body is a PayloadError (400): a body the parsers did not foresee is still only a bad body."""
    try:
        if channel == "salesforce_outbound":
            org, events = parse_outbound(body)
        elif channel == "salesforce_cdc":
            org, events = None, parse_cdc(body, max_records)
        else:
            org, events = None, parse_segment(body)
    except PayloadError:
        raise
    except (ValueError, TypeError, LookupError, RecursionError, OverflowError) as exc:
        raise PayloadError(f"{channel} body: could not be read ({type(exc).__name__})") from None
    for event in events:
        _check_sizes(event, max_value_chars)
    return org, events


def _check_sizes(event: Event, limit: int) -> None:
    """OverLimit when a text of the event (a field value or key, at any depth) is longer than
    `limit`: the resolver compares texts pairwise, so one huge value would stall it. Ids longer
    than MAX_ID_CHARS are malformed."""
    if max(len(i) for i in [event.event_id, *event.record_ids]) > MAX_ID_CHARS:
        raise PayloadError(f"{event.event_id[:80]}: an event or record id is longer than {MAX_ID_CHARS} characters")
    stack = [("", event.fields)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{where}.{key}" if where else str(key), child) for key, child in value.items())
            stack.extend((f"a key of {where or 'the event'}", key) for key in value)
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(value))
        elif isinstance(value, str) and len(value) > limit:
            raise OverLimit(f"{event.event_id[:80]}: {where[:80]} holds {len(value)} characters, at most {limit} "
                            "(sync.max_value_chars)")
