"""Webhook payloads in the shapes Salesforce and Segment send (input-formats.md 1.6, 1.7, 2.1), and a
batch run with a state for the sync service to start from."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import yaml

ORG_ID = "00D5g000004XXXXEA4"  # 18 characters, checksum suffix included
SECRET = "test-secret"
OUTBOUND_TOKEN = "test-outbound-token"  # in the Outbound Message endpoint URL: ?token=...
OUTBOUND_BY_TOKEN = f"/webhooks/salesforce/outbound?token={OUTBOUND_TOKEN}"


def outbound(notifications: list[tuple[str, str, dict]], org: str = ORG_ID) -> bytes:
    """notifications: (notification id, sObject type, fields)."""
    items = []
    for nid, kind, fields in notifications:
        body = "".join(f"<sf:{k}>{v}</sf:{k}>" if v is not None else f'<sf:{k} xsi:nil="true"/>'
                       for k, v in fields.items())
        items.append(f'<Notification><Id>{nid}</Id><sObject xsi:type="sf:{kind}" '
                     f'xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{body}</sObject></Notification>')
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f'<OrganizationId>{org}</OrganizationId><ActionId>04k5g000000XXXXAAA</ActionId>'
        '<SessionId xsi:nil="true"/>'
        '<EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/60.0/00D5g000004XXXX</EnterpriseUrl>'
        '<PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/60.0/00D5g000004XXXX</PartnerUrl>'
        + "".join(items) + "</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


def cdc(entity: str, change: str, record_ids: list[str], body: dict | None = None, key: str | None = None,
        sequence: int = 1, changed: list[str] | None = None, commit_ms: int = 1717350011000) -> bytes:
    header = {"entityName": entity, "recordIds": record_ids, "changeType": change,
              "changeOrigin": "com/salesforce/api/rest/60.0;client=IntegrationUser",
              "transactionKey": key or str(uuid.uuid4()), "sequenceNumber": sequence,
              "commitTimestamp": commit_ms, "commitNumber": 11223344556677, "commitUser": "0055g00000ABCDEAA4",
              "changedFields": changed or [], "nulledFields": [], "diffFields": []}
    return json.dumps({"schema": "Xy12AbCdEfGhIjKlMnOp-w", "payload": {"ChangeEventHeader": header, **(body or {})},
                       "event": {"replayId": 2142496}}).encode()


def segment(messages: list[dict]) -> bytes:
    return json.dumps({"batch": messages} if len(messages) != 1 else messages[0]).encode()


def identify(message_id: str, user_id: str | None = None, anonymous_id: str | None = None, **traits) -> dict:
    message = {"type": "identify", "messageId": message_id, "traits": traits,
               "timestamp": "2024-06-02T17:40:11.905Z", "context": {"ip": "203.0.113.7"}}
    if user_id:
        message["userId"] = user_id
    if anonymous_id:
        message["anonymousId"] = anonymous_id
    return message


def signed(data: bytes, now: float | None = None) -> dict:
    """The signature headers of a body, or of a lookup's raw path (and query), made `now`."""
    from resolver.sync.app import signed_headers

    return signed_headers(SECRET, data, now)


def with_sync(config_path: Path, name: str, **sync) -> Path:
    """A copy of a config (same folder, so relative paths hold) with a `sync` section."""
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    raw["sync"] = {**raw.get("sync", {}), **sync}
    out = config_path.with_name(name)
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out


def postgres_url() -> str | None:
    """The PostgreSQL server the tests use; CI (CI_REQUIRE_POSTGRES=1) fails without one."""
    url = os.environ.get("RESOLVER_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI_REQUIRE_POSTGRES") == "1":
            pytest.fail("CI_REQUIRE_POSTGRES=1 but RESOLVER_TEST_POSTGRES_URL is not set: .ci/run must start PostgreSQL")
        pytest.skip("no PostgreSQL server (set RESOLVER_TEST_POSTGRES_URL)")
    return url


def fresh_postgres_database(url: str) -> tuple[str, callable]:
    """A new empty database on the server at `url`, and a function that drops it."""
    from urllib.parse import urlparse, urlunparse

    import psycopg

    name = f"resolver_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    new_url = urlunparse(urlparse(url)._replace(path=f"/{name}"))

    def drop() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return new_url, drop
