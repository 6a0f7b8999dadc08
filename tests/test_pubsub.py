"""`resolver subscribe salesforce` against a local gRPC server that implements Salesforce's published
pubsub_api.proto (Salesforce itself cannot be reached from CI): the session's metadata on every
call, schemas fetched once, Avro payloads decoded, field bitmaps read back as names, the events
resolved as the CDC webhook resolves them, and a restart resumed after the stored replay id."""

import io
import json
from concurrent import futures

import fastavro
import grpc
import pytest
from _sync_helpers import ORG_ID
from test_sync import _contact, _copy, _service, batch  # noqa: F401 - `batch`: the module's fixture

from resolver.cli import EXIT_OK, main
from resolver.sync.pubsub import bitmap_fields, cometd_payload, decode, stored_replay
from resolver.sync.pubsub_api import pubsub_api_pb2 as pb
from resolver.sync.pubsub_api import pubsub_api_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow  # the batch run of test_sync

TOKEN = "00D-session-token"
OPTIONAL = lambda t: ["null", t]  # noqa: E731
HEADER = {"type": "record", "name": "ChangeEventHeader", "fields": [
    {"name": "entityName", "type": "string"},
    {"name": "recordIds", "type": {"type": "array", "items": "string"}},
    {"name": "changeType", "type": {"type": "enum", "name": "ChangeType",
                                    "symbols": ["CREATE", "UPDATE", "DELETE", "UNDELETE", "GAP_CREATE", "GAP_UPDATE",
                                                "GAP_DELETE", "GAP_UNDELETE", "GAP_OVERFLOW", "SNAPSHOT"]}},
    {"name": "changeOrigin", "type": "string"},
    {"name": "transactionKey", "type": "string"},
    {"name": "sequenceNumber", "type": "int"},
    {"name": "commitTimestamp", "type": "long"},
    {"name": "commitNumber", "type": "long"},
    {"name": "commitUser", "type": "string"},
    {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
    {"name": "diffFields", "type": {"type": "array", "items": "string"}},
    {"name": "changedFields", "type": {"type": "array", "items": "string"}},
]}
SCHEMA = {"type": "record", "name": "ContactChangeEvent", "namespace": "com.sforce.eventbus", "fields": [
    {"name": "ChangeEventHeader", "type": HEADER},
    {"name": "Name", "type": OPTIONAL({"type": "record", "name": "Switchable_PersonName", "fields": [
        {"name": "Salutation", "type": OPTIONAL("string"), "default": None},
        {"name": "FirstName", "type": OPTIONAL("string"), "default": None},
        {"name": "LastName", "type": OPTIONAL("string"), "default": None}]}), "default": None},
    {"name": "Email", "type": OPTIONAL("string"), "default": None},
    {"name": "Phone", "type": OPTIONAL("string"), "default": None},
    {"name": "MailingAddress", "type": OPTIONAL({"type": "record", "name": "Address", "fields": [
        {"name": "Street", "type": OPTIONAL("string"), "default": None},
        {"name": "City", "type": OPTIONAL("string"), "default": None},
        {"name": "PostalCode", "type": OPTIONAL("string"), "default": None}]}), "default": None},
    {"name": "Birthdate", "type": OPTIONAL("int"), "default": None},
    {"name": "LastModifiedDate", "type": OPTIONAL("long"), "default": None},
]}
SCHEMA_ID = "Xy12AbCdEfGhIjKlMnOp-w"


def _event(record_id: str, sequence: int, email: str, first_name: str | None = None) -> bytes:
    """An UPDATE of a Contact's Email (top-level field 2), and of Name.FirstName (field 1, nested 1)."""
    changed = ["0x4"] if first_name is None else ["0x6", "1-0x2"]
    record = {"ChangeEventHeader": {
        "entityName": "Contact", "recordIds": [record_id], "changeType": "UPDATE",
        "changeOrigin": "com/salesforce/api/rest/60.0", "transactionKey": f"tx-{sequence:04d}",
        "sequenceNumber": sequence, "commitTimestamp": 1717350011000 + sequence, "commitNumber": 1,
        "commitUser": "0055g00000ABCDEAA4", "nulledFields": [], "diffFields": [], "changedFields": changed},
        "Name": None if first_name is None else {"Salutation": None, "FirstName": first_name, "LastName": None},
        "Email": email, "Phone": None, "MailingAddress": None, "Birthdate": None,
        "LastModifiedDate": 1956528011000 + sequence}  # 2032-01-01: newer than the batch
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(SCHEMA), record)
    return out.getvalue()


class FakePubSub(pb_grpc.PubSubServicer):
    """Salesforce's side: events in replay order; a FetchRequest gets up to num_requested of them
    after the requested replay id (CUSTOM) or from the first (EARLIEST)."""

    def __init__(self, payloads: list[bytes]):
        self.payloads = payloads
        self.requests: list = []
        self.schema_calls = 0

    def _authorized(self, context) -> None:
        metadata = dict(context.invocation_metadata())
        if metadata.get("accesstoken") != TOKEN or metadata.get("tenantid") != ORG_ID:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid session")

    def GetSchema(self, request, context):
        self._authorized(context)
        self.schema_calls += 1
        return pb.SchemaInfo(schema_json=json.dumps(SCHEMA), schema_id=request.schema_id)

    def Subscribe(self, request_iterator, context):
        self._authorized(context)
        cursor = None
        for request in request_iterator:
            self.requests.append(request)
            if cursor is None:
                cursor = int.from_bytes(request.replay_id, "big") if request.replay_preset == pb.ReplayPreset.CUSTOM else 0
            chosen = list(range(cursor, min(cursor + request.num_requested, len(self.payloads))))
            cursor += len(chosen)
            yield pb.FetchResponse(
                events=[pb.ConsumerEvent(event=pb.ProducerEvent(id=f"e{i}", schema_id=SCHEMA_ID, payload=self.payloads[i]),
                                         replay_id=(i + 1).to_bytes(8, "big")) for i in chosen],
                latest_replay_id=cursor.to_bytes(8, "big"), rpc_id="rpc", pending_num_requested=0)


@pytest.fixture
def salesforce(monkeypatch):
    def start(payloads):
        fake = FakePubSub(payloads)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_PubSubServicer_to_server(fake, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return fake, f"127.0.0.1:{port}"

    servers: list = []
    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", "https://example.my.salesforce.com")
    monkeypatch.setenv("SALESFORCE_ORG_ID", ORG_ID)
    yield start
    for server in servers:
        server.stop(grace=None)


def test_bitmaps_name_the_changed_fields_including_compound_ones():
    assert bitmap_fields(SCHEMA, ["0x4"]) == ["Email"]
    assert bitmap_fields(SCHEMA, ["0x6", "1-0x2"]) == ["Name", "Email", "Name.FirstName"]
    assert bitmap_fields(SCHEMA, ["0x50", "4-0x5"]) == ["MailingAddress", "LastModifiedDate",
                                                        "MailingAddress.Street", "MailingAddress.PostalCode"]
    schema, record = decode(json.dumps(SCHEMA), _event("0035g00000AAAAAAA1", 1, "a@b.co", "Jo"))
    payload = cometd_payload(schema, record)
    assert payload["ChangeEventHeader"]["changedFields"] == ["Name", "Email", "Name.FirstName"]
    assert payload["Name"] == {"FirstName": "Jo"} and payload["Email"] == "a@b.co" and "Phone" not in payload
    assert payload["LastModifiedDate"] == "2032-01-01T00:00:11.001000Z"


def test_change_events_resolve_like_the_webhook_and_a_restart_resumes(batch, tmp_path, salesforce):  # noqa: F811
    root = _copy(batch, tmp_path)
    contact = _contact(root)
    payloads = [_event(contact["id"], 1, "first.change@fastmail.com"),
                _event(contact["id"], 2, "second.change@fastmail.com", first_name="Jolene"),
                _event(contact["id"], 3, "third.change@fastmail.com")]
    fake, endpoint = salesforce(payloads)
    args = ["subscribe", "salesforce", "--config", str(root / "data" / "resolver.yaml"), "--state", str(root / "state"),
            "--topic", "/data/ContactChangeEvent", "--endpoint", endpoint, "--insecure", "--replay", "earliest", "-q"]
    assert main([*args, "--max-events", "2"]) == EXIT_OK
    assert fake.requests[0].replay_preset == pb.ReplayPreset.EARLIEST and fake.requests[0].topic_name == \
        "/data/ContactChangeEvent"
    service = _service(root)
    profile = service.profile("sf_contact_id", contact["id"])
    assert profile["person_id"] == contact["person_id"]
    assert profile["golden"]["email"] == "second.change@fastmail.com" and profile["golden"]["first_name"] == "Jolene"
    assert stored_replay(service, "/data/ContactChangeEvent") == (2).to_bytes(8, "big").hex()
    service.close()

    fake.requests.clear()
    assert main([*args, "--max-events", "1"]) == EXIT_OK  # a restart: after the stored replay id
    first = fake.requests[0]
    assert first.replay_preset == pb.ReplayPreset.CUSTOM and int.from_bytes(first.replay_id, "big") == 2
    service = _service(root)
    assert service.profile("sf_contact_id", contact["id"])["golden"]["email"] == "third.change@fastmail.com"
    events = service.store.read(lambda tx: tx.all("SELECT event_id FROM events WHERE event_id LIKE 'sfdc-cdc:tx-%' "
                                                  "ORDER BY event_id"))
    assert [e for (e,) in events] == ["sfdc-cdc:tx-0001:1", "sfdc-cdc:tx-0002:2", "sfdc-cdc:tx-0003:3"]
    service.close()


def test_a_refused_session_is_a_one_line_error(batch, tmp_path, salesforce, monkeypatch, capsys):  # noqa: F811
    root = _copy(batch, tmp_path)
    _, endpoint = salesforce([])
    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", "expired")
    code = main(["subscribe", "salesforce", "--config", str(root / "data" / "resolver.yaml"), "--state",
                 str(root / "state"), "--endpoint", endpoint, "--insecure", "--max-events", "1", "-q"])
    assert code == 2
    assert capsys.readouterr().err.strip().endswith("UNAUTHENTICATED: invalid session")
    monkeypatch.delenv("SALESFORCE_ORG_ID")
    assert main(["subscribe", "salesforce", "--config", str(root / "data" / "resolver.yaml"), "-q"]) == 2
    assert "SALESFORCE_ORG_ID" in capsys.readouterr().err


def test_an_unreadable_event_is_logged_and_the_others_go_on(batch, tmp_path, salesforce, capsys, caplog):  # noqa: F811
    root = _copy(batch, tmp_path)
    contact = _contact(root)
    fake, endpoint = salesforce([_event(contact["id"], 1, "before.garbage@fastmail.com"), b"\x07not avro",
                                 _event(contact["id"], 3, "after.garbage@fastmail.com")])
    assert main(["subscribe", "salesforce", "--config", str(root / "data" / "resolver.yaml"), "--state",
                 str(root / "state"), "--endpoint", endpoint, "--insecure", "--replay", "earliest",
                 "--max-events", "3"]) == EXIT_OK
    assert "3 change events received from /data/ChangeEvents, 1 unreadable (logged)" in capsys.readouterr().err
    assert any("e1" in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)
    service = _service(root)
    assert service.profile("sf_contact_id", contact["id"])["golden"]["email"] == "after.garbage@fastmail.com"
    service.close()
