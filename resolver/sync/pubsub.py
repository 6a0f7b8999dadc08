"""`resolver subscribe salesforce`: Change Data Capture from Salesforce's Pub/Sub API, the way
Salesforce delivers it (gRPC: subscribe and pull, not an HTTP push).

The client speaks the published pubsub_api.proto (resolver/sync/pubsub_api): it authenticates with
the session's `accesstoken`, `instanceurl` and `tenantid` (the org id) as gRPC metadata, asks for
events with FetchRequests (`num_requested` at a time, again once they have come), fetches each
event's Avro schema once (GetSchema) and decodes the payload with it (fastavro). A change event's
ChangeEventHeader lists its changed and nulled fields as bitmaps over the schema's fields; they are
turned back into field names, so the event becomes the CometD JSON the `/webhooks/salesforce/cdc`
endpoint takes, and follows the same path: parsed by payloads.parse_cdc, appended to the inbox,
resolved by the worker.

Replay ids: each response's events and its latest replay id are stored in one inbox transaction
(the inbox's `cursors` row `pubsub_replay:<topic>`), so a restart resumes right after the last stored event
(ReplayPreset.CUSTOM); a crash between the two cannot happen, and an event delivered twice is a
duplicate of its id (`sfdc-cdc:<transactionKey>:<sequenceNumber>`), stored once.
"""

from __future__ import annotations

import io
import json
from datetime import date, datetime, timedelta, timezone
import logging
import queue
import threading
from dataclasses import dataclass, field

from resolver.sync.payloads import PayloadError, parse_cdc

log = logging.getLogger("resolver.sync")

DEFAULT_ENDPOINT = "api.pubsub.salesforce.com:7443"
BATCH = 100  # events asked for at a time (the API allows at most 100 a FetchRequest)


@dataclass
class PubSubSession:
    """Where and as whom to subscribe: the Pub/Sub endpoint, the org's instance URL, its id (the
    tenant) and an OAuth access token (SALESFORCE_ACCESS_TOKEN, SALESFORCE_INSTANCE_URL,
    SALESFORCE_ORG_ID in the environment, for the CLI)."""

    access_token: str
    instance_url: str
    org_id: str
    endpoint: str = DEFAULT_ENDPOINT
    secure: bool = True  # TLS; False only for a local test server

    @property
    def metadata(self) -> tuple:
        return (("accesstoken", self.access_token), ("instanceurl", self.instance_url), ("tenantid", self.org_id))


def replay_key(topic: str) -> str:
    return f"pubsub_replay:{topic}"


def stored_replay(service, topic: str) -> str | None:
    """The replay id (hex) after the last event of `topic` the inbox holds, or None."""
    row = service.inbox.read(lambda tx: tx.one("SELECT position FROM cursors WHERE name = ?", (replay_key(topic),)))
    return row[0] if row else None


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------
def _record_schema(schema):
    """The record schema of a field type, also when optional (a union with null or string)."""
    if isinstance(schema, list):
        records = [s for s in schema if isinstance(s, dict) and s.get("type") == "record"]
        return records[0] if records else None
    return schema if isinstance(schema, dict) and schema.get("type") == "record" else None


def _bit_positions(bitmap: str) -> list[int]:
    """Positions of the set bits of a hex bitmap ("0x..."), least significant first."""
    value = int(bitmap[2:] if bitmap.lower().startswith("0x") else bitmap, 16)
    return [i for i in range(value.bit_length()) if value >> i & 1]


def bitmap_fields(schema: dict, bitmaps: list[str]) -> list[str]:
    """Field names of Pub/Sub's field bitmaps (changedFields, nulledFields, diffFields): the first,
    "0x...", sets one bit per top-level field of the schema; "<position>-0x..." sets one bit per
    field of the compound field at that position (Name.FirstName)."""
    fields = schema["fields"]
    names: list[str] = []
    for bitmap in bitmaps or []:
        if "-" in bitmap:
            parent, _, bits = bitmap.partition("-")
            compound = fields[int(parent)]
            nested = _record_schema(compound["type"])
            if nested is None:
                continue
            names += [f"{compound['name']}.{nested['fields'][i]['name']}" for i in _bit_positions(bits)
                      if i < len(nested["fields"])]
        else:
            names += [fields[i]["name"] for i in _bit_positions(bitmap) if i < len(fields)]
    return names


def decode(schema_json: str, payload: bytes) -> tuple[dict, dict]:
    """(the Avro schema as parsed JSON, the payload decoded with it)."""
    import fastavro

    schema = json.loads(schema_json)
    return schema, fastavro.schemaless_reader(io.BytesIO(payload), fastavro.parse_schema(schema))


DAYS_LIMIT = 100_000  # a date field's int counts days since 1970; a date-time's long, milliseconds


def _plain(name: str, value):
    """A decoded value as the CometD JSON has it: Salesforce's Avro dates (int days) and date-times
    (long milliseconds since 1970) of fields named ...Date / ...date as ISO text."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, int) and not isinstance(value, bool) and name.lower().endswith("date"):
        if abs(value) < DAYS_LIMIT:
            return (date(1970, 1, 1) + timedelta(days=value)).isoformat()
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    return value


def _present(value, nulled: set[str], prefix: str = ""):
    """A decoded record without the fields the event does not carry (null and not nulled)."""
    out = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if item is None and name not in nulled:
            continue
        out[key] = _present(item, nulled, f"{name}.") if isinstance(item, dict) else _plain(key, item)
    return out


def cometd_payload(schema: dict, record: dict) -> dict:
    """A decoded change event as the CometD JSON payload the CDC webhook takes: the header with its
    field bitmaps as names, and only the fields the change carries (set, or nulled on purpose)."""
    header = dict(record.get("ChangeEventHeader") or {})
    for key in ("changedFields", "nulledFields", "diffFields"):
        header[key] = bitmap_fields(schema, header.get(key) or [])
    nulled = set(header["nulledFields"])
    body = _present({k: v for k, v in record.items() if k != "ChangeEventHeader"}, nulled)
    return {"ChangeEventHeader": header, **body}


# ---------------------------------------------------------------------------------------------
# The subscription
# ---------------------------------------------------------------------------------------------
@dataclass
class Subscriber:
    """One topic's subscription into a SyncService: each response's events accepted, with the
    replay id, in one inbox transaction; `resolve` (a callable) then resolves what was accepted
    (the subscribe command's own worker; None when `serve` resolves the same store)."""

    service: object  # SyncService
    session: PubSubSession
    topic: str
    replay: str = "latest"  # where a first subscription starts: latest or earliest
    batch: int = BATCH
    resolve: object = None
    schemas: dict = field(default_factory=dict)
    received: int = 0
    unreadable: int = 0

    def _stub(self):
        import grpc

        from resolver.sync.pubsub_api import pubsub_api_pb2_grpc

        channel = grpc.secure_channel(self.session.endpoint, grpc.ssl_channel_credentials()) if self.session.secure \
            else grpc.insecure_channel(self.session.endpoint)
        return channel, pubsub_api_pb2_grpc.PubSubStub(channel)

    def _schema(self, stub, schema_id: str) -> str:
        from resolver.sync.pubsub_api import pubsub_api_pb2 as pb

        if schema_id not in self.schemas:
            self.schemas[schema_id] = stub.GetSchema(pb.SchemaRequest(schema_id=schema_id),
                                                     metadata=self.session.metadata).schema_json
        return self.schemas[schema_id]

    def first_request(self, wanted: int):
        """Where to start: right after the stored replay id, else the `replay` preset."""
        from resolver.sync.pubsub_api import pubsub_api_pb2 as pb

        stored = stored_replay(self.service, self.topic)
        if stored:
            return pb.FetchRequest(topic_name=self.topic, replay_preset=pb.ReplayPreset.CUSTOM,
                                   replay_id=bytes.fromhex(stored), num_requested=wanted)
        preset = pb.ReplayPreset.EARLIEST if self.replay == "earliest" else pb.ReplayPreset.LATEST
        return pb.FetchRequest(topic_name=self.topic, replay_preset=preset, num_requested=wanted)

    def _wanted(self, max_events: int | None) -> int:
        """Events to ask for next: a batch, or what is left of `max_events` (never more)."""
        return self.batch if max_events is None else max(1, min(self.batch, max_events - self.received))

    def events_of(self, stub, response) -> list:
        """The response's change events, parsed as the CDC webhook parses its bodies. An event that
        cannot be decoded or parsed is logged (its id, replay id and why) and counted in
        `unreadable`; the others go on (the webhook would answer 400 to its sender; here there is
        no sender to tell)."""
        events = []
        for consumer in response.events:
            try:
                schema, record = decode(self._schema(stub, consumer.event.schema_id), consumer.event.payload)
                events += parse_cdc(json.dumps({"payload": cometd_payload(schema, record)}).encode())
            except (PayloadError, ValueError, TypeError, KeyError, EOFError) as exc:
                self.unreadable += 1
                log.error("pubsub %s: event %s (replay id %s) unreadable: %s", self.topic, consumer.event.id,
                          consumer.replay_id.hex(), exc)
        return events

    def _store(self, events: list, replay_id: bytes) -> None:
        """The events and the replay id after them, in one inbox transaction."""
        from resolver.sync.service import SyncService

        def work(tx):
            counts = SyncService._accept(tx, events)
            if replay_id:
                tx.execute("INSERT INTO cursors (name, position) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                           "SET position = excluded.position", (replay_key(self.topic), replay_id.hex()))
            return counts

        self.service.inbox.submit(work).result()

    def run(self, stop: threading.Event | None = None, max_events: int | None = None) -> int:
        """Subscribe until `stop` is set, the server ends the stream, or `max_events` events came;
        returns how many events were received."""
        stop = stop or threading.Event()
        channel, stub = self._stub()
        requests: queue.Queue = queue.Queue()
        requests.put(self.first_request(self._wanted(max_events)))

        def outgoing():
            while True:
                item = requests.get()
                if item is None:
                    return
                yield item

        from resolver.sync.pubsub_api import pubsub_api_pb2 as pb

        stream = stub.Subscribe(outgoing(), metadata=self.session.metadata)
        try:
            for response in stream:
                events = self.events_of(stub, response)
                self._store(events, response.latest_replay_id)
                self.received += len(response.events)
                if events:
                    log.info("pubsub %s: %d change events stored", self.topic, len(events))
                if self.resolve is not None and events:
                    self.resolve()
                if stop.is_set() or (max_events is not None and self.received >= max_events):
                    break
                if response.pending_num_requested == 0:  # all asked for came: ask again
                    requests.put(pb.FetchRequest(topic_name=self.topic, num_requested=self._wanted(max_events)))
        finally:
            requests.put(None)
            stream.cancel()
            channel.close()
        return self.received
