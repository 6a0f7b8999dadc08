"""GA4 BigQuery export rows, Adobe XDM ExperienceEvents and Tealium events are read natively
(shapes from ../shared/reference/input-formats.md) and resolved with CRM records."""

import json

import pandas as pd
import pytest
import yaml

from resolver.cli import EXIT_OK, main
from resolver.config import load_config
from resolver.ingest.readers import read_source

GA4_LOGIN = {
    "event_date": "20240602", "event_timestamp": 1717350011905123, "event_name": "login", "user_id": "u_102938",
    "user_pseudo_id": "1197596843.1673515099",
    "event_params": [{"key": "ga_session_id", "value": {"int_value": 1717349900}},
                     {"key": "page_location", "value": {"string_value": "https://shop.example/account"}}],
    "user_properties": [], "device": {"category": "mobile", "operating_system": "iOS", "browser": "Safari",
                                      "advertising_id": None},
    "geo": {"country": "United States", "region": "California", "city": "San Francisco"}, "platform": "WEB",
    "stream_id": "1234567890",
}
GA4_ANONYMOUS = {  # the same browser before login; BigQuery's JSON export may give INT64 as text
    **GA4_LOGIN, "event_timestamp": "1717349900000001", "event_name": "page_view", "user_id": None,
    "event_params": [{"key": "page_location", "value": {"string_value": "https://shop.example/shoes"}},
                     {"key": "engagement_time_msec", "value": {"int_value": "5210"}}],
}
ADOBE = {
    "_id": "7d9c2f1e-5b3a-4c8d-9e0f-1a2b3c4d5e6f", "timestamp": "2024-06-02T17:40:11.905Z",
    "eventType": "web.webpagedetails.pageViews",
    "identityMap": {"ECID": [{"id": "48503474123000906551802434436405419541", "authenticatedState": "ambiguous",
                              "primary": False}],
                    "CRMID": [{"id": "003A", "authenticatedState": "authenticated", "primary": True}],
                    "Email": [{"id": "Jane.ONeil@Mailbox.org", "authenticatedState": "authenticated", "primary": False}]},
    "web": {"webPageDetails": {"URL": "https://shop.example/account", "name": "account"}},
}
TEALIUM = {"tealium_visitor_id": "01754649AD73005A6D584D2732C401078005B0700093C", "tealium_event": "user_login",
           "tealium_timestamp_epoch": 1717350011, "customer_email": "jane.oneil@mailbox.org",
           "event_id": "t-1"}


@pytest.fixture()
def world(tmp_path):
    (tmp_path / "ga4").mkdir()
    (tmp_path / "adobe").mkdir()
    (tmp_path / "tealium").mkdir()
    (tmp_path / "crm").mkdir()
    lines = [json.dumps(GA4_ANONYMOUS), json.dumps(GA4_LOGIN), "{not json", "[1, 2]"]
    (tmp_path / "ga4" / "events_20240602.json").write_text("\n".join(lines) + "\n")
    (tmp_path / "adobe" / "events.jsonl").write_text(json.dumps(ADOBE) + "\n")
    (tmp_path / "tealium" / "events.jsonl").write_text(json.dumps(TEALIUM) + "\n")
    pd.DataFrame({"Id": ["003A", "003B"], "Email": ["jane.oneil@mailbox.org", "sam@proton.me"],
                  "UserId": ["u_102938", "u_555"], "LastName": ["O'Neil", "Stone"]}).to_csv(
        tmp_path / "crm" / "Contact.csv", index=False)
    config = {
        "run": {"output_dir": "out", "workers": 1},
        "sources": [
            {"name": "crm", "kind": "records", "format": "csv", "path": "crm/*.csv", "key": "Id",
             "attributes": {"email": "Email", "last_name": "LastName"},
             "identifiers": {"crm_id": "Id", "email": "Email", "user_id": "UserId"}},
            {"name": "ga4", "system": "ga4", "kind": "events", "format": "ga4", "path": "ga4/*.json", "key": "_event_id",
             "timestamp": "event_timestamp",
             "attributes": {"page": "event_params.page_location", "city": "geo.city"},
             "identifiers": {"ga_client_id": "user_pseudo_id", "user_id": "user_id"}},
            {"name": "adobe", "system": "adobe", "kind": "events", "format": "adobe", "path": "adobe/*.jsonl",
             "key": "_id", "timestamp": "timestamp",
             "identifiers": {"ecid": "identityMap.ECID", "crm_id": "identityMap.CRMID", "email": "identityMap.Email"}},
            {"name": "tealium", "system": "tealium", "kind": "events", "format": "tealium", "path": "tealium/*.jsonl",
             "key": "event_id", "timestamp": "timestamp",
             "identifiers": {"tealium_visitor_id": "tealium_visitor_id", "email": "customer_email"}},
        ],
        "identity": {"types": {
            "user_id": {"normalizer": "trim", "priority": 1, "limit": 1, "strong": True},
            "crm_id": {"normalizer": "trim", "priority": 2, "limit": 1, "strong": True},
            "email": {"normalizer": "email", "priority": 3, "limit": 5, "strong": True},
            "ecid": {"normalizer": "trim", "priority": 4, "limit": 10, "hub_cap": 5},
            "ga_client_id": {"normalizer": "trim", "priority": 5, "limit": 10, "hub_cap": 5},
            "tealium_visitor_id": {"normalizer": "lower", "priority": 6, "limit": 10, "hub_cap": 5},
        }},
    }
    (tmp_path / "resolver.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp_path


def _frame(world, name):
    config = load_config(world / "resolver.yaml")
    source = next(s for s in config.sources if s.name == name)
    return read_source(config, source)


def test_ga4_rows_are_flattened_with_params_and_microsecond_times(world):
    read = _frame(world, "ga4")
    frame = read.frame
    assert list(frame["event_timestamp"]) == ["2024-06-02T17:38:20.000001Z", "2024-06-02T17:40:11.905123Z"]
    assert list(frame["event_params.page_location"]) == ["https://shop.example/shoes", "https://shop.example/account"]
    assert list(frame["user_id"].fillna("-")) == ["-", "u_102938"]
    assert list(frame["geo.city"]) == ["San Francisco", "San Francisco"]
    assert frame["_event_id"].iloc[1] == "1197596843.1673515099|1717350011905123|login||"
    rejects = read.rejects.sort_values("row")
    assert list(rejects["row"]) == [3, 4]
    assert rejects["reason"].iloc[0].startswith("invalid JSON") and rejects["reason"].iloc[1] == "not a JSON object"
    assert read.rows_read == 4


def test_adobe_identity_map_gives_each_namespaces_id_and_state(world):
    frame = _frame(world, "adobe").frame
    assert frame["identityMap.ECID"].iloc[0] == "48503474123000906551802434436405419541"
    assert frame["identityMap.CRMID"].iloc[0] == "003A"
    assert frame["identityMap.Email"].iloc[0] == "Jane.ONeil@Mailbox.org"


def test_tealium_epoch_seconds_become_a_timestamp(world):
    frame = _frame(world, "tealium").frame
    assert frame["timestamp"].iloc[0] == "2024-06-02T17:40:11Z"


@pytest.mark.slow
def test_the_shapes_resolve_with_the_crm(world):
    assert main(["run", "--config", str(world / "resolver.yaml"), "-q", "--backend", "cpu"]) == EXIT_OK
    summary = json.loads((world / "out" / "run_summary.json").read_text())
    assert summary["rows"]["accounted"] and summary["rows"]["rejected"] == 2
    identifiers = pd.read_parquet(world / "out" / "identifier_map.parquet")
    person = identifiers.set_index(["id_type", "value"])["person_id"]
    jane = person[("crm_id", "003A")]
    # GA4: the login row ties the browser to the user id the CRM holds; the earlier anonymous row joins through it.
    assert person[("ga_client_id", "1197596843.1673515099")] == jane
    # Tealium: the visitor id (lower-cased) joins through the email; Adobe's ECID through its email.
    assert person[("tealium_visitor_id", "01754649ad73005a6d584d2732c401078005b0700093c")] == jane
    assert person[("ecid", "48503474123000906551802434436405419541")] == jane
    assert person[("crm_id", "003B")] != jane
