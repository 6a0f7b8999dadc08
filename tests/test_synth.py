"""Tests for resolver.synth.people: determinism, ground truth coverage and the realism the engine relies on."""

from __future__ import annotations

import importlib.resources
import re
from collections import defaultdict
from pathlib import Path

import orjson
import pandas as pd
import phonenumbers
import pyarrow.parquet as pq
import pytest

from resolver.synth.people import generate

JUNK_EMAILS = {"test@test.com", "asdf@asdf.com", "noreply@example.com", "test@example.com"}
JUNK_USER_IDS = {"anonymous", "null", "-1", "undefined"}
JUNK_PHONE_DIGITS = {"12345", "0000000000", "5551212", "1234567890"}
ZERO_AD_ID = "00000000-0000-0000-0000-000000000000"


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small")
    generate(out, 600, seed=7, chunk_people=200, workers=1)
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """A larger sample where rare noise (kiosks, junk values) shows up reliably."""
    out = tmp_path_factory.mktemp("sample")
    generate(out, 5000, seed=3, chunk_people=2000, workers=1)
    return out


def read_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.columns = [c.lower() for c in frame.columns]
    return frame


def contacts(out: Path) -> pd.DataFrame:
    return pd.concat([read_csv(out / "salesforce" / "Contact_a.csv"), read_csv(out / "salesforce" / "Contact_b.csv")],
                     ignore_index=True)


def leads(out: Path) -> pd.DataFrame:
    return read_csv(out / "salesforce" / "Lead.csv")


def jsonl_events(out: Path) -> list[dict]:
    events = []
    for path in sorted((out / "segment").glob("events-*.jsonl")):
        events += [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return events


def batch_events(out: Path) -> list[dict]:
    return orjson.loads((out / "segment" / "batch-00000.json").read_bytes())["batch"]


def all_events(out: Path) -> list[dict]:
    return jsonl_events(out) + batch_events(out)


def records_truth(out: Path) -> pd.DataFrame:
    return pq.read_table(out / "truth" / "records.parquet").to_pandas()


def events_truth(out: Path) -> pd.DataFrame:
    return pq.read_table(out / "truth" / "events.parquet").to_pandas()


def person_of_record(out: Path) -> dict[tuple[str, str], int]:
    truth = records_truth(out)
    return dict(zip(zip(truth["source"], truth["record_key"]), truth["person_id"]))


def person_of_event(out: Path) -> dict[str, int]:
    truth = events_truth(out)
    return dict(zip(truth["message_id"], truth["person_id"]))


def sf_id18(id15: str) -> str:
    """Reference implementation of the Salesforce case-folding checksum."""
    suffix = ""
    for start in range(0, 15, 5):
        bits = sum(1 << i for i, ch in enumerate(id15[start:start + 5]) if "A" <= ch <= "Z")
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return id15 + suffix


def normalized_email(raw: str) -> str:
    email = raw.strip().lower()
    local, _, domain = email.partition("@")
    local = local.split("+", 1)[0]
    if domain in ("gmail.com", "googlemail.com"):
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


def phone_digits(raw: str) -> str:
    return re.sub(r"\D", "", raw)[-10:]


def tree_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# ---- determinism ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_same_seed_gives_identical_bytes_for_any_worker_count(small, tmp_path):
    generate(tmp_path, 600, seed=7, chunk_people=200, workers=2)
    expected, actual = tree_bytes(small), tree_bytes(tmp_path)
    assert sorted(expected) == sorted(actual)
    for name in expected:
        assert expected[name] == actual[name], name


@pytest.mark.slow
def test_different_seed_differs(small, tmp_path):
    generate(tmp_path, 600, seed=8, chunk_people=200, workers=1)
    for name in ["salesforce/Contact_a.csv", "salesforce/Lead.csv", "segment/events-00000.jsonl"]:
        assert (small / name).read_bytes() != (tmp_path / name).read_bytes(), name


@pytest.mark.slow
def test_more_events_per_person_keeps_the_crm_files_and_the_truth_complete(small, tmp_path):
    manifest = generate(tmp_path, 600, seed=7, chunk_people=200, workers=1, events_per_person=30)
    for name in ["salesforce/Contact_a.csv", "salesforce/Contact_b.csv", "salesforce/Lead.csv"]:
        assert (small / name).read_bytes() == (tmp_path / name).read_bytes(), name
    baseline = orjson.loads((small / "manifest.json").read_bytes())
    assert manifest["events_per_person"] == 30 and "events_per_person" not in baseline  # default: as before
    assert manifest["events"] > 3 * baseline["events"]
    truth = pq.read_table(tmp_path / "truth" / "events.parquet")
    assert truth.num_rows == manifest["events"]
    with pytest.raises(ValueError):
        generate(tmp_path / "bad", 10, events_per_person=0.5)


@pytest.mark.slow
def test_manifest_progress_and_config(tmp_path):
    seen = []
    manifest = generate(tmp_path, 450, seed=1, chunk_people=200, workers=1, progress=seen.append)
    assert seen == [200, 400, 450]
    assert orjson.loads((tmp_path / "manifest.json").read_bytes()) == manifest
    assert manifest["people"] == 450 and manifest["seed"] == 1
    assert manifest["contacts"] == len(contacts(tmp_path))
    assert manifest["leads"] == len(leads(tmp_path))
    assert manifest["events"] == len(events_truth(tmp_path)) == len(all_events(tmp_path))
    assert manifest["deleted_rows"] == (contacts(tmp_path)["isdeleted"] == "true").sum() + (
        leads(tmp_path)["isdeleted"] == "true").sum()
    for name in manifest["files"]:
        assert (tmp_path / name).is_file(), name
    assert {"junk_emails", "junk_user_ids", "kiosks", "households", "zero_ad_id_devices"} <= set(manifest["noise"])
    packaged = importlib.resources.files("resolver") / "defaults" / "synthetic.yaml"
    assert (tmp_path / "resolver.yaml").read_bytes() == packaged.read_bytes()


@pytest.mark.slow
def test_tiny_runs_and_stale_files_are_removed(tmp_path):
    generate(tmp_path, 5, seed=0, chunk_people=2, workers=1)
    assert (tmp_path / "segment" / "events-00002.jsonl").exists()
    manifest = generate(tmp_path, 1, seed=0, workers=1)
    assert not (tmp_path / "segment" / "events-00002.jsonl").exists()
    assert manifest["files"] == sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert len(records_truth(tmp_path)) == len(contacts(tmp_path)) + len(leads(tmp_path))


# ---- ground truth covers everything exactly once -------------------------------------------------
@pytest.mark.slow
def test_truth_covers_every_csv_row_exactly_once(small):
    truth = records_truth(small)
    assert list(truth.columns) == ["source", "record_key", "person_id"]
    assert str(truth["person_id"].dtype) == "int64"
    rows = [("sf_contacts", key) for key in contacts(small)["id"]] + [("sf_leads", key) for key in leads(small)["id"]]
    assert sorted(rows) == sorted(zip(truth["source"], truth["record_key"]))
    assert len(set(rows)) == len(rows)


@pytest.mark.slow
def test_truth_covers_every_event_exactly_once(small):
    truth = events_truth(small)
    assert list(truth.columns) == ["source", "message_id", "person_id", "anonymous_id", "user_id"]
    written = [("segment", e) for e in jsonl_events(small)] + [("segment_batch", e) for e in batch_events(small)]
    assert len(truth) == len(written)
    assert truth["message_id"].is_unique
    by_id = truth.set_index("message_id")
    for source, event in written:
        row = by_id.loc[event["messageId"]]
        assert row["source"] == source
        assert (row["anonymous_id"] if pd.notna(row["anonymous_id"]) else None) == event.get("anonymousId")
        assert (row["user_id"] if pd.notna(row["user_id"]) else None) == event.get("userId")


@pytest.mark.slow
def test_event_files_parse_and_batch_shape(small):
    for path in (small / "segment").glob("events-*.jsonl"):
        for line in path.read_bytes().splitlines():
            event = orjson.loads(line)
            assert event["type"] in {"identify", "track", "page", "alias"}
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["timestamp"])
            assert event.get("anonymousId") or event.get("userId")
    body = orjson.loads((small / "segment" / "batch-00000.json").read_bytes())
    assert list(body) == ["batch"] and isinstance(body["batch"], list) and body["batch"]
    assert len(body["batch"]) <= 2000
    assert len((small / "segment" / "batch-00000.json").read_bytes()) < 500_000


# ---- Salesforce realism --------------------------------------------------------------------------
@pytest.mark.slow
def test_headers_quoting_and_line_endings(small):
    a = (small / "salesforce" / "Contact_a.csv").read_bytes()
    b = (small / "salesforce" / "Contact_b.csv").read_bytes()
    assert a.startswith(b'"Id","AccountId","FirstName","LastName","Email",') and b"\r\n" not in a
    assert a.split(b"\n")[1].startswith(b'"003')  # every value quoted
    assert b.startswith(b'"ID","ACCOUNTID","FIRSTNAME",') and b.split(b"\n")[0].endswith(b"\r")
    lead_header = (small / "salesforce" / "Lead.csv").read_bytes().split(b"\n")[0].decode()
    assert lead_header.split(",")[:3] == ["Id", "FirstName", "LastName"]
    a_columns = read_csv(small / "salesforce" / "Contact_a.csv").columns
    assert list(read_csv(small / "salesforce" / "Contact_b.csv").columns) == list(a_columns)


@pytest.mark.slow
def test_ids_have_both_lengths_and_valid_checksums(sample):
    ids = pd.concat([contacts(sample)["id"], leads(sample)["id"]])
    assert set(ids.str.len()) == {15, 18}
    share18 = (ids.str.len() == 18).mean()
    assert 0.6 < share18 < 0.8
    assert sf_id18("0036000000QKv5T") == "0036000000QKv5TAAT"  # the documented example
    for value in ids:
        assert sf_id18(value[:15]) == value if len(value) == 18 else re.fullmatch(r"[0-9A-Za-z]{15}", value)
    assert set(contacts(sample)["id"].str[:3]) == {"003"} and set(leads(sample)["id"].str[:3]) == {"00Q"}
    accounts = contacts(sample)["accountid"]
    assert set(accounts[accounts != ""].str[:3]) == {"001"}
    # 15-char ids are case-sensitive: some differ from another only by letter case
    keys = pd.concat([contacts(sample)["id"], leads(sample)["id"]]).str[:15]
    assert keys.is_unique and not keys.str.lower().is_unique


@pytest.mark.slow
def test_merges_and_conversions_point_at_the_same_person(sample):
    person = person_of_record(sample)
    contact, lead = contacts(sample), leads(sample)
    contact_person = {key[:15]: person[("sf_contacts", key)] for key in contact["id"]}
    lead_person = {key[:15]: person[("sf_leads", key)] for key in lead["id"]}

    merged = contact[contact["masterrecordid"] != ""]
    assert len(merged) > 0 and (merged["isdeleted"] == "true").all()
    for key, master in zip(merged["id"], merged["masterrecordid"]):
        assert contact_person[master[:15]] == person[("sf_contacts", key)]
        assert master[:15] != key[:15]
    converted = lead[lead["isconverted"] == "true"]
    assert len(converted) > 0 and (converted["converteddate"] != "").all()
    for key, target in zip(converted["id"], converted["convertedcontactid"]):
        assert contact_person[target[:15]] == person[("sf_leads", key)]
    assert (lead.loc[lead["isconverted"] == "false", "convertedcontactid"] == "").all()
    merged_leads = lead[lead["masterrecordid"] != ""]
    assert len(merged_leads) > 0 and (merged_leads["isdeleted"] == "true").all()
    for key, master in zip(merged_leads["id"], merged_leads["masterrecordid"]):
        assert lead_person[master[:15]] == person[("sf_leads", key)]
    references = pd.concat([merged["masterrecordid"], converted["convertedcontactid"]])
    assert set(references.str.len()) == {15, 18}
    plain_deletes = contact[(contact["isdeleted"] == "true") & (contact["masterrecordid"] == "")]
    assert len(plain_deletes) > 0
    # unmerged live duplicates: a person with two live contacts
    live = contact[contact["isdeleted"] == "false"]
    live_people = pd.Series([person[("sf_contacts", key)] for key in live["id"]])
    assert live_people.duplicated().any()


@pytest.mark.slow
def test_volumes_are_in_the_expected_ranges(sample):
    people = 5000
    crm_rows = len(contacts(sample)) + len(leads(sample))
    assert 1.0 <= crm_rows / people <= 1.15
    events = events_truth(sample)
    users = events["person_id"].nunique()
    assert 0.65 < users / people < 0.75
    assert 5 < len(events) / users < 7.5


@pytest.mark.slow
def test_multiline_streets_and_formats(small):
    contact, lead = contacts(small), leads(small)
    assert contact["mailingstreet"].str.contains("\n").any() and lead["street"].str.contains("\n").any()
    assert (small / "salesforce" / "Contact_b.csv").read_bytes().count(b"\r\n") == len(
        read_csv(small / "salesforce" / "Contact_b.csv")) + 1
    assert contact["createddate"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z").all()
    birth = contact["birthdate"]
    assert birth[birth != ""].str.fullmatch(r"\d{4}-\d\d-\d\d").all()
    assert set(contact["isdeleted"]) == {"true", "false"}
    assert (lead["company"] != "").all()


@pytest.mark.slow
def test_names_carry_realistic_noise(sample):
    first = pd.concat([contacts(sample)["firstname"], leads(sample)["firstname"]])
    last = pd.concat([contacts(sample)["lastname"], leads(sample)["lastname"]])
    assert first.isin(["Bill", "Bob", "Peggy", "Liz", "Jim", "Kate"]).any()
    assert first.str.startswith(("Dr. ", "Mr. ", "Ms. ", "Mrs. ")).any()
    assert (first != first.str.strip()).any()
    assert (first.str.isupper() & (first.str.len() > 3)).any()
    assert pd.concat([first, last]).str.contains("[éëüøñ]").any()
    assert last.str.contains("'").any()


@pytest.mark.slow
def test_emails_are_unique_per_person_and_noisy(sample):
    person = person_of_record(sample)
    owners = defaultdict(set)
    raw = []
    for source, frame in (("sf_contacts", contacts(sample)), ("sf_leads", leads(sample))):
        for key, email in zip(frame["id"], frame["email"]):
            if email and email.strip().lower() not in JUNK_EMAILS:
                owners[normalized_email(email)].add(person[(source, key)])
            raw.append(email)
    assert all(len(people) == 1 for people in owners.values())
    raw = pd.Series(raw)
    assert (raw == "").mean() > 0.02
    assert (raw != raw.str.strip()).any() and (raw != raw.str.lower()).any()
    assert raw.str.contains(r"\+").any() and raw.str.contains("googlemail.com").any()
    assert raw.str.strip().str.lower().isin(JUNK_EMAILS).any()


@pytest.mark.slow
def test_phones_are_mostly_valid_and_households_share_them(sample):
    person = person_of_record(sample)
    values, owners = [], defaultdict(set)
    for source, frame in (("sf_contacts", contacts(sample)), ("sf_leads", leads(sample))):
        for key, phone, mobile in zip(frame["id"], frame["phone"], frame["mobilephone"]):
            for raw in (phone, mobile):
                if raw:
                    values.append(raw)
                    if phone_digits(raw) not in JUNK_PHONE_DIGITS:
                        owners[phone_digits(raw)].add(person[(source, key)])
    valid = sum(phonenumbers.is_valid_number(phonenumbers.parse(v, "US")) for v in values
                if re.search(r"\d{5}", re.sub(r"\D", "", v)))
    assert valid / len(values) > 0.85
    assert any(re.sub(r"\D", "", v) in JUNK_PHONE_DIGITS for v in values)
    assert any(v.startswith("+44") for v in values) and any(v.startswith("(") for v in values)
    shared = [people for people in owners.values() if len(people) > 1]
    assert shared, "no household shares a phone"
    assert all(max(people) - min(people) <= 3 for people in shared)  # only within a household


# ---- Segment realism -----------------------------------------------------------------------------
@pytest.mark.slow
def test_event_fields_follow_the_spec(sample):
    events = all_events(sample)
    types = pd.Series([e["type"] for e in events]).value_counts()
    assert set(types.index) == {"identify", "track", "page", "alias"}
    identify = [e for e in events if e["type"] == "identify"]
    assert all(e["userId"] and "traits" in e for e in identify)
    trait_keys = set().union(*(e["traits"] for e in identify))
    assert {"email", "firstName", "first_name", "lastName", "last_name", "phone"} <= trait_keys
    assert all("event" in e and "properties" in e for e in events if e["type"] == "track")
    assert all(e["properties"]["url"].startswith("https://") for e in events if e["type"] == "page")
    devices = [e["context"]["device"] for e in events if "device" in e["context"]]
    assert {d["type"] for d in devices} == {"web", "ios", "android"}
    assert all(("advertisingId" in d) == (d["type"] != "web") for d in devices)
    assert any("traits" in e["context"] and "email" in e["context"]["traits"] for e in events)
    assert any("userId" in e and e["userId"] is None for e in events)  # analytics.js sends null
    assert any("userId" not in e for e in events)  # mobile SDKs leave it out
    assert any("anonymousId" not in e for e in events)  # server-side calls


@pytest.mark.slow
def test_alias_previous_id_belongs_to_the_same_person(sample):
    truth = events_truth(sample)
    anon_people = truth.dropna(subset=["anonymous_id"]).groupby("anonymous_id")["person_id"].agg(set).to_dict()
    person = person_of_event(sample)
    aliases = [e for e in all_events(sample) if e["type"] == "alias"]
    assert aliases
    for event in aliases:
        assert event["userId"] and event["previousId"] != event["anonymousId"]
        assert anon_people[event["previousId"]] == {person[event["messageId"]]}


@pytest.mark.slow
def test_identify_emails_match_the_person(sample):
    person = person_of_event(sample)
    crm_person = person_of_record(sample)
    identify_emails = defaultdict(set)
    for event in all_events(sample):
        if event["type"] == "identify" and event["traits"].get("email"):
            identify_emails[person[event["messageId"]]].add(normalized_email(event["traits"]["email"]))
    assert identify_emails and all(len(emails) == 1 for emails in identify_emails.values())
    crm_emails = defaultdict(set)
    for source, frame in (("sf_contacts", contacts(sample)), ("sf_leads", leads(sample))):
        for key, email in zip(frame["id"], frame["email"]):
            if email:
                crm_emails[crm_person[(source, key)]].add(normalized_email(email))
    both = [p for p in identify_emails if p in crm_emails]
    matched = sum(identify_emails[p] <= crm_emails[p] for p in both)
    assert matched / len(both) > 0.9


@pytest.mark.slow
def test_user_ids_are_one_per_person_apart_from_junk(sample):
    truth = events_truth(sample).dropna(subset=["user_id"])
    junk = truth["user_id"].isin(JUNK_USER_IDS)
    assert junk.any()
    assert (truth[~junk].groupby("user_id")["person_id"].nunique() == 1).all()
    assert (truth[~junk].groupby("person_id")["user_id"].nunique() == 1).all()
    assert truth.loc[~junk, "user_id"].str.contains("@").any()  # email used as userId


@pytest.mark.slow
def test_cookies_rotate_and_some_users_reset_often(sample):
    truth = events_truth(sample).dropna(subset=["anonymous_id"])
    per_person = truth.groupby("person_id")["anonymous_id"].nunique()
    assert per_person.max() >= 6 and (per_person >= 2).mean() > 0.2


@pytest.mark.slow
def test_shared_kiosk_devices_and_family_tablets(sample):
    person = person_of_event(sample)
    device_people, device_users, anon_people = defaultdict(set), defaultdict(set), defaultdict(set)
    ad_ids = []
    for event in all_events(sample):
        device = event["context"].get("device")
        if device:
            device_people[device["id"]].add(person[event["messageId"]])
            if event.get("userId"):
                device_users[device["id"]].add(event["userId"])
            ad_ids.append(device.get("advertisingId"))
        if event.get("anonymousId"):
            anon_people[event["anonymousId"]].add(person[event["messageId"]])
    kiosks = [d for d, people in device_people.items() if len(people) > 10]
    assert kiosks
    assert all(len(device_users[d]) > 10 for d in kiosks)  # each logs in with their own userId
    assert max(len(people) for people in anon_people.values()) > 10  # the kiosk's single anonymousId
    tablets = [d for d, people in device_people.items() if len(people) == 2]
    assert any(len(device_users[d]) == 2 and max(device_people[d]) - min(device_people[d]) <= 3 for d in tablets)
    assert ZERO_AD_ID in ad_ids


@pytest.mark.slow
def test_carrier_nat_ips_are_shared_widely(sample):
    person = person_of_event(sample)
    ip_people = defaultdict(set)
    for event in all_events(sample):
        if "ip" in event["context"]:
            ip_people[event["context"]["ip"]].add(person[event["messageId"]])
    sizes = sorted(len(people) for people in ip_people.values())
    assert sizes[-1] > 100  # a NAT gateway
    assert sizes[len(sizes) // 2] <= 4  # most IPs are one household's


def test_phone_number_spaces_hold_the_largest_dataset_without_collisions():
    """Home phones are numbered people + household (up to 2 * MAX_PEOPLE): every such index gets its
    own London number, and an index outside a bijection's space is refused, never walked forever."""
    import numpy as np

    from resolver.synth.columns import permute
    from resolver.synth.people import MAX_PEOPLE, _london_numbers

    index = np.concatenate([np.arange(0, 2 * MAX_PEOPLE, 997), [10**7 - 1, 10**7, 2 * MAX_PEOPLE - 1]])
    numbers = _london_numbers(np.random.default_rng(1).random(len(index)), 7, index, np.ones(len(index), bool))
    assert len(np.unique(numbers)) == len(index)
    assert set(np.unique(numbers // 10**7)) <= {3, 7, 8}
    with pytest.raises(ValueError, match="must lie in"):
        permute(np.array([5, 10**7]), 10**7, 7, purpose=2)
    with pytest.raises(ValueError, match="at most"):
        generate("/nonexistent-never-written", MAX_PEOPLE + 1)
