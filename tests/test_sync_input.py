"""The sync service against hostile input (issue 20, items 7 and 8): XML entity documents in any
encoding, bombs before and after authentication, deep JSON, forged log lines, org ids, expired
signatures, lookups signed over the raw path, events naming too many records. The real app
(TestClient) or the real `resolver serve` process, on a real batch run's state."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from _sync_helpers import ORG_ID, OUTBOUND_BY_TOKEN, OUTBOUND_TOKEN, SECRET, cdc, identify, outbound, segment, signed, with_sync
from test_sync import (  # noqa: F401 - `batch` is the module's fixture: one batch run for these tests
    NEW_CONTACT,
    _client,
    _copy,
    _free_port,
    _post,
    _rows,
    _service,
    _start_server,
    batch,
)

pytestmark = [pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
              pytest.mark.slow]  # every test serves the batch run's state (test_sync.batch: generated data, a run)
README = Path(__file__).resolve().parents[1] / "README.md"


def _entity_document(encoding: str) -> bytes:
    """An Outbound Message whose LastName is an entity (expanded, it would be stored)."""
    text = outbound([("04l5g00000ENT0001", "Contact", {"Id": NEW_CONTACT, "LastName": "&name;"})]).decode()
    text = text.replace('<?xml version="1.0" encoding="UTF-8"?>',
                        f'<?xml version="1.0" encoding="{encoding}"?><!DOCTYPE x [<!ENTITY name "Expanded">]>')
    return text.encode(encoding)


def _bomb(org: str = ORG_ID, encoding: str = "UTF-8") -> bytes:
    """An entity bomb (2.2 KB in UTF-8) in an Outbound Message that claims an organization: it
    expands to 7.2 MB, under expat's own amplification guard (which starts at 8 MiB). In UTF-16 a
    check of the raw bytes for `<!DOCTYPE` misses it."""
    levels = ['<!ENTITY l0 "' + "ha" * 600 + '">']
    levels += [f'<!ENTITY l{i} "' + f"&l{i - 1};" * 10 + '">' for i in range(1, 4)]
    levels += ['<!ENTITY l4 "' + "&l3;" * 6 + '">']
    text = outbound([("04l5g00000BOMB001", "Contact", {"Id": NEW_CONTACT, "LastName": "&l4;"})], org=org).decode()
    text = text.replace('encoding="UTF-8"?>', f'encoding="{encoding}"?><!DOCTYPE x [' + "".join(levels) + "]>")
    return text.encode(encoding)


def _stored(service) -> tuple[int, int]:
    inbox = service.inbox.read(lambda tx: tx.one("SELECT COUNT(*) FROM inbox"))[0]
    return inbox, _rows(service, "SELECT COUNT(*) FROM events")[0][0]


def test_xml_is_read_safely_in_any_encoding_and_only_after_authentication(batch, tmp_path):
    root = _copy(batch, tmp_path)
    service = _service(root)
    with _client(service) as client:
        before = _stored(service)
        for encoding in ("UTF-16", "UTF-8"):
            response = _post(client, "/webhooks/salesforce/outbound", _entity_document(encoding))
            assert response.status_code == 400, (encoding, response.text)
            assert "document type declarations" in response.json()["error"]
        # Unauthenticated bombs: 401 whether or not they are well-formed, so they were never parsed
        # (a parse would have answered 400), with the token too when they claim another org; one
        # with the token claiming the allow-listed org is parsed: 400, no DTD.
        assert _post(client, OUTBOUND_BY_TOKEN, _bomb(org="00D000000000001AAA"), sign=False).status_code == 401
        assert _post(client, OUTBOUND_BY_TOKEN, _bomb(org="00D000000000001AAA")[:-30],
                     sign=False).status_code == 401
        assert _post(client, OUTBOUND_BY_TOKEN, _bomb(encoding="UTF-16"), sign=False).status_code == 401
        assert _post(client, "/webhooks/salesforce/outbound", _bomb(), sign=False).status_code == 401
        assert _post(client, OUTBOUND_BY_TOKEN, _bomb(), sign=False).status_code == 400
        assert _post(client, "/webhooks/salesforce/outbound", _bomb()).status_code == 400
        assert _post(client, "/webhooks/salesforce/outbound", _bomb(encoding="UTF-16")).status_code == 400
        assert _stored(service) == before
        # A UTF-16 message without a DTD is read like its UTF-8 twin.
        good = outbound([("04l5g00000U160001", "Contact", {"Id": NEW_CONTACT, "LastName": "Sixteen"})]).decode()
        good = good.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
        assert _post(client, "/webhooks/salesforce/outbound", good).status_code == 200
        assert _rows(service, "SELECT event_id FROM events WHERE event_id LIKE 'sfdc-om:%U16%'") == \
            [("sfdc-om:04l5g00000U160001",)]
        # Unsigned and in UTF-16: the org cannot be found without parsing, so it needs a signature.
        unsigned = outbound([("04l5g00000U160002", "Contact", {"Id": NEW_CONTACT})]).decode()
        unsigned = unsigned.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
        assert _post(client, "/webhooks/salesforce/outbound", unsigned, sign=False).status_code == 401
        # An unsigned message whose parsed org is not the allow-listed one it shows in a comment.
        decoy = outbound([("04l5g00000DEC0001", "Contact", {"Id": NEW_CONTACT})], org="00D000000000001AAA")
        decoy = decoy.replace(b"<soapenv:Body>", f"<soapenv:Body><!--<OrganizationId>{ORG_ID}</OrganizationId>-->".encode())
        assert _post(client, "/webhooks/salesforce/outbound", decoy, sign=False).status_code == 401
    service.close()


def test_deep_json_is_400_without_a_traceback(batch, tmp_path, caplog):
    root = _copy(batch, tmp_path)
    service = _service(root)
    caplog.set_level(logging.DEBUG)
    deep = b'{"type": "identify", "messageId": "deep-1", "userId": "u", "traits": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with _client(service) as client:
        before = _stored(service)
        # (A lone surrogate is no reason to lose an event: test_sync's poison test has it accepted.)
        for path, body in [("/webhooks/segment", deep), ("/webhooks/salesforce/cdc", b"[" * 100_000)]:
            response = _post(client, path, body)
            assert response.status_code == 400, (path, response.text)
            assert "not valid JSON" in response.json()["error"]
        # Valid JSON, 1,000 deep (the fuzzer's find: it was stored by an encoder that recursed, 503).
        for path, base in [("/webhooks/segment", segment([identify("deep-2", user_id="u-deep")])),
                           ("/webhooks/salesforce/cdc", cdc("Contact", "CREATE", [NEW_CONTACT]))]:
            body = base.replace(b'"identify"' if b"identify" in base else b'"CREATE"',
                                (b'"identify"' if b"identify" in base else b'"CREATE"') + b', "x": '
                                + b"[" * 1000 + b"]" * 1000, 1)
            response = _post(client, path, body)
            assert response.status_code == 400, (path, response.text)
            assert "nested deeper than 64 levels" in response.json()["error"]
        assert _stored(service) == before
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    service.close()


def test_org_ids_are_compared_in_full_18_character_form(batch, tmp_path):
    from resolver.config import ConfigError
    from resolver.sync.app import create_app, org_id_18

    # Known pairs (the checksum: per 5-character chunk, bit i for an upper-case letter at i).
    assert org_id_18("00D000000000062") == "00D000000000062EAA"
    assert org_id_18("00D5g000004XXXX") == "00D5g000004XXXXEA4"
    assert org_id_18("00DAbCdE0000001") == "00DAbCdE0000001MFA"
    assert org_id_18("00D000000000062EAB") == "00D000000000062EAB"  # as given: it matches nothing
    assert org_id_18("not-an-org-id!!") is None
    root = _copy(batch, tmp_path)
    service = _service(root)
    with pytest.raises(ConfigError, match="checksum suffix"):
        create_app(service, secret=SECRET, org_ids=["00D000000000062EAB"])

    from starlette.testclient import TestClient

    # One org allow-listed by its 15-character id, one by its 18-character id.
    app = create_app(service, secret=SECRET, org_ids=["00D000000000062", "00D5g000004XXXXEA4"],
                     outbound_token=OUTBOUND_TOKEN)
    cases = [("00D000000000062EAA", 200), ("00D000000000062", 200), ("00D5g000004XXXX", 200),
             ("00D5g000004XXXXEA4", 200),
             ("00D000000000062EAB", 401), ("00D5g000004XXXXEAA", 401),  # differ only after character 15
             ("00D5g000004XXXXea4", 401), ("00d000000000062", 401), ("00D000000000063", 401)]
    with TestClient(app) as client:
        for n, (sent, expected) in enumerate(cases):
            message = outbound([(f"04l5g00000ORG{n:04d}", "Contact", {"Id": NEW_CONTACT, "LastName": "Org"})], org=sent)
            response = _post(client, OUTBOUND_BY_TOKEN, message, sign=False)
            assert response.status_code == expected, (sent, response.text)


def test_signatures_carry_a_timestamp_and_expire_after_five_minutes(batch, tmp_path):
    root = _copy(batch, tmp_path)
    service = _service(root)
    now = time.time()
    with _client(service) as client:
        def post(n: int, headers: dict) -> int:
            body = segment([identify(f"msg-ts-{n}", user_id=f"u-ts-{n}")])
            return client.post("/webhooks/segment", content=body, headers=headers(body)).status_code

        assert post(1, lambda b: signed(b, now - 290)) == 200
        assert post(2, lambda b: signed(b, now + 290)) == 200
        assert post(3, lambda b: signed(b, now - 310)) == 401
        assert post(4, lambda b: signed(b, now + 310)) == 401
        assert post(5, lambda b: {"X-Resolver-Signature": signed(b)["X-Resolver-Signature"]}) == 401  # no timestamp
        # The timestamp is part of what is signed: moving it forward breaks the signature.
        assert post(6, lambda b: {**signed(b, now - 310), "X-Resolver-Timestamp": str(int(now))}) == 401
        assert post(7, lambda b: {**signed(b), "X-Resolver-Timestamp": "１２３".encode()}) == 401
        # Lookups too: a signed lookup replayed after five minutes is refused.
        path = "/profiles/user_id/u-ts-1"
        assert client.get(path, headers=signed(path.encode(), now - 60)).status_code == 200
        assert client.get(path, headers=signed(path.encode(), now - 310)).status_code == 401
        assert client.get("/refetch", headers=signed(b"/refetch", now - 310)).status_code == 401
        assert client.get("/refetch", headers=signed(b"/refetch")).status_code == 200
    service.close()


def test_lookups_are_signed_over_the_raw_path_as_in_the_readme(batch, tmp_path):
    readme = README.read_text(encoding="utf-8")
    path = re.search(r"`(/profiles/phone/%2B\d+)`", readme).group(1)
    # The README's signing recipe, run as written.
    recipe = {"secret": SECRET}
    exec(re.search(r"```python\n(import hashlib, hmac, time\n.*?)```", readme, re.S).group(1), recipe)
    root = _copy(batch, tmp_path)
    service = _service(root)
    with _client(service) as client:
        body = segment([identify("msg-readme-1", user_id="u-readme-1", phone="+1 415 555 2671")])
        assert _post(client, "/webhooks/segment", body).status_code == 200
        response = client.get(path, headers=signed(path.encode()))
        assert response.status_code == 200, response.text
        assert recipe["path"] == path
        assert client.get(recipe["path"], headers=recipe["headers"]).json() == response.json()
        assert ["phone", "+14155552671"] in [[i["type"], i["value"]] for i in response.json()["identifiers"]]
        decoded = path.replace("%2B", "+")
        assert client.get(path, headers=signed(decoded.encode())).status_code == 401
        # The query string is signed with the path.
        query = path + "?fields=all"
        assert client.get(query, headers=signed(query.encode())).status_code == 200
        assert client.get(query, headers=signed(path.encode())).status_code == 401
    service.close()


def test_records_per_event_and_text_lengths_are_capped(batch, tmp_path):
    root = _copy(batch, tmp_path)
    config = with_sync(root / "data" / "resolver.yaml", "capped.yaml", max_records_per_event=3, max_value_chars=300)
    service = _service(root, config_name=config.name)
    ids = [f"0035g00000CAP{i:02d}" for i in range(10)]
    with _client(service) as client:
        before = _stored(service)
        response = _post(client, "/webhooks/salesforce/cdc", cdc("Contact", "DELETE", ids[:4]))
        assert response.status_code == 413
        assert response.json()["error"] == ("CDC event.ChangeEventHeader.recordIds: 4 record ids, at most 3 per "
                                             "event (sync.max_records_per_event)")
        assert _stored(service) == before
        assert _post(client, "/webhooks/salesforce/cdc", cdc("Contact", "DELETE", ids[:3])).status_code == 200
        # Texts: one over sync.max_value_chars refuses the request.
        long_name = cdc("Contact", "CREATE", [NEW_CONTACT], {"Name": {"LastName": "x" * 301}}, key="tx-long")
        response = _post(client, "/webhooks/salesforce/cdc", long_name)
        assert response.status_code == 413
        assert response.json()["error"] == ("sfdc-cdc:tx-long:1: LastName holds 301 characters, at most 300 "
                                            "(sync.max_value_chars)")
        deep_trait = segment([identify("msg-long-1", user_id="u-long", address={"street": ["y" * 301]})])
        response = _post(client, "/webhooks/segment", deep_trait)
        assert response.status_code == 413 and "traits.address.street[0] holds 301" in response.json()["error"]
        long_id = outbound([("N" * 256, "Contact", {"Id": NEW_CONTACT})])
        response = _post(client, "/webhooks/salesforce/outbound", long_id)
        assert response.status_code == 400 and "longer than 255 characters" in response.json()["error"]
        assert _stored(service)[0] == before[0] + 1
        fits = cdc("Contact", "CREATE", [NEW_CONTACT], {"Name": {"LastName": "x" * 300}}, key="tx-fits")
        assert _post(client, "/webhooks/salesforce/cdc", fits).status_code == 200
    service.close()
    service = _service(root)  # the default: 100
    with _client(service) as client:
        many = [f"0035g0000{i:06d}" for i in range(10_000)]
        response = _post(client, "/webhooks/salesforce/cdc", cdc("Contact", "DELETE", many))
        assert response.status_code == 413 and "10000 record ids, at most 100" in response.json()["error"]
        assert _post(client, "/webhooks/salesforce/cdc", cdc("Contact", "DELETE", many[:100])).status_code == 200
    service.close()


def test_serve_answers_healthz_during_bombs_and_logs_one_json_line_per_entry(batch, tmp_path, monkeypatch):
    """The real `resolver serve`: 10 clients send entity bombs (UTF-16 and UTF-8, unsigned, signed,
    and by URL token from the allow-listed org, which gets parsed) while /healthz stays fast; a messageId
    with a newline is one escaped JSON log line."""
    root = _copy(batch, tmp_path)
    monkeypatch.setenv("RESOLVER_SALESFORCE_ORG_IDS", ORG_ID)
    monkeypatch.setenv("RESOLVER_SALESFORCE_OUTBOUND_TOKEN", OUTBOUND_TOKEN)
    port = _free_port()
    with open(tmp_path / "serve.log", "wb") as log:
        proc = _start_server(root, port, log)
        try:
            utf16 = _bomb(encoding="UTF-16")
            bombs = [(utf16, {}), (_bomb(), {}), (utf16, signed(utf16)), (_bomb(org="00D000000000001AAA"), {})]
            statuses: list[int] = []
            stop = threading.Event()

            def send(worker: int) -> None:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                    while not stop.is_set():
                        body, headers = bombs[worker % len(bombs)]
                        statuses.append(http.post(OUTBOUND_BY_TOKEN, content=body, headers=headers).status_code)

            threads = [threading.Thread(target=send, args=(w,)) for w in range(10)]
            for t in threads:
                t.start()
            slowest = 0.0
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    start = time.perf_counter()
                    assert http.get("/healthz").status_code == 200
                    slowest = max(slowest, time.perf_counter() - start)
                    time.sleep(0.05)
                stop.set()
                for t in threads:
                    t.join()
                assert len(statuses) >= 30 and set(statuses) <= {400, 401}, statuses[:20]
                assert slowest < 0.5, f"/healthz took {slowest:.2f} s while bombs were sent"

                forged = "log-forge-1\nINFO resolver.sync: segment: forged entry"
                body = segment([identify(forged, user_id="u-forge-1")])
                assert http.post("/webhooks/segment", content=body, headers=signed(body)).status_code == 200
                time.sleep(0.3)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    lines = (tmp_path / "serve.log").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(entries) >= len(lines) - 5  # JSON lines (Python's own warnings aside)
    assert [line for line in lines if "forged entry" in line] == \
        [line for line in lines if "log-forge-1" in line]
    assert len([line for line in lines if "forged entry" in line]) == 1
    assert [e for e in entries if "log-forge-1" in e["message"]][0]["message"].count("\n") == 1
