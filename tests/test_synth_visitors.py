"""The web-visitor layer of the synthetic generator (resolver/synth/visitors.py, `generate --visitors`):
opt-in without changing a byte of the existing output, deterministic, every anonymous id in the truth,
each behaviour with its signature, the four shapes readable with the generated config, and the
existing pipeline running on it with every row accounted for."""

import hashlib
import json
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from resolver.synth import visitors as sv
from resolver.cli import EXIT_OK, main
from resolver.config import load_config
from resolver.ingest.readers import read_source
from resolver.synth.people import generate

pytestmark = pytest.mark.slow  # generates datasets (and runs the pipeline on one)

# sha256[:16] of every file of generate(d, 300, seed=3, chunk_people=120, workers=1[, events=False]) as the
# generator wrote them before the visitor layer existed (commit 00e5e86 on main).
BEFORE = {
    True: {"manifest.json": "996839647bc765e4", "resolver.yaml": "d2a4168a503e0464",
           "salesforce/Contact_a.csv": "fab5d08ef460e029", "salesforce/Contact_b.csv": "efef0128f5ee9439",
           "salesforce/Lead.csv": "f5a9abeaf1e381e1", "segment/batch-00000.json": "791893f87c1023a8",
           "segment/events-00000.jsonl": "288d4370318eda2c", "segment/events-00001.jsonl": "080978b1d2ef4709",
           "segment/events-00002.jsonl": "e3c54c48a9527ed2", "truth/events.parquet": "6eed2406a51fb469",
           "truth/records.parquet": "a88383ecb5ac1835"},
    False: {"manifest.json": "9543d68002952845", "resolver.yaml": "6cb23095501d4dfc",
            "salesforce/Contact_a.csv": "fab5d08ef460e029", "salesforce/Contact_b.csv": "efef0128f5ee9439",
            "salesforce/Lead.csv": "f5a9abeaf1e381e1", "truth/events.parquet": "12cc4123152390f0",
            "truth/records.parquet": "a88383ecb5ac1835"},
}
ID_TYPES = {"segment_visitors": "anonymous_id", "ga4_visitors": "ga_client_id",
            "tealium_visitors": "tealium_visitor_id", "adobe_visitors": "ecid"}
PERSON_KINDS = {"logs_in_later", "never_logs_in", "second_device", "cookie_reset", "vpn", "work_device",
                "home_device_logs_in"}


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted(root.rglob("*")) if p.is_file()}


def _lines(paths) -> list[dict]:
    return [orjson.loads(line) for path in sorted(paths) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("visitors")
    manifest = generate(out, 2000, seed=11, workers=1, chunk_people=800, visitors=True)
    return out, manifest


@pytest.fixture(scope="module")
def events(world):
    """Every visitor event as (source, anonymous id, ip, user agent, screen, city, url, login, user, hour)."""
    out, _ = world
    rows = []
    for e in _lines(out.glob("segment/visitors-*.jsonl")):
        c = e["context"]
        rows.append(("segment_visitors", e["anonymousId"], c["ip"], c["userAgent"],
                     f"{c['screen']['width']}x{c['screen']['height']}", c["location"]["city"], e["properties"]["url"],
                     e["type"] == "identify", e["userId"], e["timestamp"]))
    for e in _lines(out.glob("ga4/events_*.json")):
        params = {p["key"]: p["value"] for p in e["event_params"]}
        stamp = pd.Timestamp(e["event_timestamp"] // 1000, unit="ms", tz="UTC").isoformat()
        rows.append(("ga4_visitors", e["user_pseudo_id"], None, None, None, e["geo"]["city"],
                     params["page_location"]["string_value"], e["event_name"] == "login", e["user_id"], stamp))
    for e in _lines(out.glob("tealium/visitors-*.jsonl")):
        stamp = pd.Timestamp(e["tealium_timestamp_epoch"], unit="s", tz="UTC").isoformat()
        rows.append(("tealium_visitors", e["tealium_visitor_id"], e["client_ip"], e["user_agent"],
                     e["screen_resolution"], None, e["page_url"], e["tealium_event"] == "user_login",
                     e.get("customer_id"), stamp))
    for e in _lines(out.glob("adobe/visitors-*.jsonl")):
        ident = e["identityMap"]
        rows.append(("adobe_visitors", ident["ECID"][0]["id"], e["environment"]["ipV4"],
                     e["environment"]["browserDetails"]["userAgent"],
                     f"{e['device']['screenWidth']}x{e['device']['screenHeight']}", e["placeContext"]["geo"]["city"],
                     e["web"]["webPageDetails"]["URL"], e["eventType"] == "userAccount.login",
                     ident.get("CRMID", [{}])[0].get("id"), e["timestamp"]))
    frame = pd.DataFrame(rows, columns=["source", "anonymous_id", "ip", "user_agent", "screen", "city", "url", "login",
                                        "user", "time"])
    frame["hour"] = pd.to_datetime(frame["time"], format="ISO8601", utc=True).dt.hour
    return frame


@pytest.fixture(scope="module")
def truth(world):
    return pd.read_parquet(world[0] / "truth" / "visitors.parquet")


def test_without_the_flag_every_file_is_byte_identical_to_before(tmp_path):
    for events in (True, False):
        plain, explicit = tmp_path / f"plain-{events}", tmp_path / f"explicit-{events}"
        generate(plain, 300, seed=3, chunk_people=120, workers=1, events=events)
        generate(explicit, 300, seed=3, chunk_people=120, workers=1, events=events, visitors=False)
        assert _hashes(plain) == BEFORE[events]
        assert _hashes(explicit) == BEFORE[events]


def test_with_the_flag_the_existing_files_are_unchanged_and_the_manifest_only_gains(tmp_path):
    generate(tmp_path / "with", 300, seed=3, chunk_people=120, workers=1, visitors=True)
    generate(tmp_path / "without", 300, seed=3, chunk_people=120, workers=1)
    with_hashes = _hashes(tmp_path / "with")
    for name, digest in BEFORE[True].items():
        if name not in ("manifest.json", "resolver.yaml"):
            assert with_hashes[name] == digest, name
    added = set(with_hashes) - set(BEFORE[True])
    assert {"truth/visitors.parquet", "truth/visitor_events.parquet", "segment/visitors-00002.jsonl",
            "tealium/visitors-00000.jsonl", "adobe/visitors-00001.jsonl"} <= added
    assert any(name.startswith("ga4/events_2024") for name in added)
    manifest = json.loads((tmp_path / "with" / "manifest.json").read_text())
    before = json.loads((tmp_path / "without" / "manifest.json").read_text())
    assert sorted(set(manifest["files"]) - set(before["files"])) == sorted(added)
    assert set(manifest["files"]) == set(with_hashes)
    visitors = manifest.pop("visitors")
    manifest["files"] = before["files"]
    assert manifest == before
    assert visitors["persons"] > 0 and visitors["kind_cookie_reset"] > 0 and visitors["carrier_nat_ips"] >= 6


def test_same_seed_same_bytes_for_any_workers(tmp_path):
    generate(tmp_path / "a", 700, seed=5, chunk_people=250, workers=1, visitors=True)
    generate(tmp_path / "b", 700, seed=5, chunk_people=250, workers=1, visitors=True)
    generate(tmp_path / "c", 700, seed=5, chunk_people=250, workers=2, visitors=True)
    a = _hashes(tmp_path / "a")
    assert a == _hashes(tmp_path / "b") == _hashes(tmp_path / "c")
    generate(tmp_path / "d", 700, seed=6, chunk_people=250, workers=1, visitors=True)
    assert _hashes(tmp_path / "d")["truth/visitors.parquet"] != a["truth/visitors.parquet"]


def test_a_later_run_without_the_flag_removes_stale_visitor_files(tmp_path):
    generate(tmp_path, 200, seed=1, workers=1, visitors=True)
    generate(tmp_path, 200, seed=1, workers=1)
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and ("visitor" in p.name or p.parent.name == "ga4")]
    assert leftovers == []


def test_every_anonymous_id_and_every_event_has_a_truth_row(world, events, truth):
    out, manifest = world
    assert not truth.duplicated(["source", "anonymous_id"]).any()
    seen = set(map(tuple, events[["source", "anonymous_id"]].drop_duplicates().to_numpy()))
    assert seen == set(map(tuple, truth[["source", "anonymous_id"]].to_numpy()))
    event_truth = pd.read_parquet(out / "truth" / "visitor_events.parquet")
    assert len(event_truth) == len(events) == sum(manifest["visitors"][f"events_{s}"]
                                                 for s in ("segment", "ga4", "tealium", "adobe"))
    assert not event_truth.duplicated(["source", "event_key"]).any()
    counts = event_truth.groupby(["source", "anonymous_id"]).size()
    assert (counts.reindex(pd.MultiIndex.from_frame(truth[["source", "anonymous_id"]])).to_numpy()
            == truth["events"].to_numpy()).all()
    # An id's events belong to its person (tablets: to whichever member is at it; strangers: nobody).
    merged = event_truth.merge(truth[["source", "anonymous_id", "person_id", "kind"]], on=["source", "anonymous_id"],
                               suffixes=("", "_id"))
    single = merged[merged["kind"] != "household_tablet"]
    assert (single["person_id"].fillna(-1) == single["person_id_id"].fillna(-1)).all()
    # Every person id is a real person of the CRM truth.
    records = pd.read_parquet(out / "truth" / "records.parquet")
    assert set(truth["person_id"].dropna().astype(int)) <= set(records["person_id"]) | set(range(2000))
    assert truth.loc[truth["kind"] == "stranger", "person_id"].isna().all()
    assert truth.loc[truth["kind"] != "stranger", "person_id"].notna().all()


def test_anonymous_id_formats(truth):
    by_source = dict(tuple(truth.groupby("source")["anonymous_id"]))
    assert by_source["segment_visitors"].str.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}").all()
    assert by_source["ga4_visitors"].str.fullmatch(r"[1-9]\d{9}\.17\d{8}").all()
    assert by_source["tealium_visitors"].str.fullmatch(r"[0-9a-f]{45}").all()
    ecid = by_source["adobe_visitors"]
    assert ecid.str.fullmatch(r"\d{38}").all()
    assert ecid.map(lambda v: int(v[:19]) < 2**63 and int(v[19:]) < 2**63).all()
    assert set(truth["source"]) == set(ID_TYPES)


def test_logs_in_later_ids_are_anonymous_first_then_log_in_once(events, truth):
    ordered = events.sort_values("time", kind="stable")
    logins = ordered[ordered["login"]]
    login_ids = set(map(tuple, logins[["source", "anonymous_id"]].to_numpy()))
    logs_in = set(map(tuple, truth.loc[truth["logs_in"], ["source", "anonymous_id"]].to_numpy()))
    assert login_ids == logs_in and logs_in
    assert not logins.duplicated(["source", "anonymous_id"]).any()
    first = ordered.groupby(["source", "anonymous_id"]).first()
    assert not first.loc[list(logs_in), "login"].any()  # anonymous first
    assert logins["user"].notna().all() and ordered.loc[~ordered["login"], "user"].isna().all()
    assert set(truth.loc[truth["logs_in"], "kind"]) == {"logs_in_later", "work_device", "home_device_logs_in"}
    # The user id a login carries is the person's (one user id per person, never shared).
    person = truth.set_index(["source", "anonymous_id"])["person_id"]
    users = logins.assign(person=[person[k] for k in map(tuple, logins[["source", "anonymous_id"]].to_numpy())])
    assert users.groupby("user")["person"].nunique().max() == 1
    assert users.groupby("person")["user"].nunique().max() == 1


def test_cookie_resets_share_device_and_home_with_an_earlier_id_and_never_log_in(events, truth):
    resets = truth[truth["kind"] == "cookie_reset"]
    assert len(resets) > 50 and not resets["logs_in"].any()
    primaries = truth[truth["kind"].isin(["logs_in_later", "never_logs_in"])].set_index("person_id")
    assert primaries.index.is_unique
    for row in resets.itertuples():
        primary = primaries.loc[row.person_id]
        assert (primary.user_agent, primary.screen, primary.home_ip) == (row.user_agent, row.screen, row.home_ip)
        assert primary.last_seen < row.first_seen and primary.source == row.source
    ips = events[events["ip"].notna()].groupby(["source", "anonymous_id"])["ip"].agg(set)
    for row in resets.itertuples():
        if (row.source, row.anonymous_id) in ips.index:
            assert ips[(row.source, row.anonymous_id)] == {row.home_ip}


def test_home_devices_that_log_in_share_the_home_ip_with_their_owners_primary(events, truth):
    home = truth[truth["kind"] == "home_device_logs_in"]
    assert len(home) > 50 and home["logs_in"].all() and home["person_id"].notna().all()
    primaries = truth[truth["kind"].isin(["logs_in_later", "never_logs_in"])].set_index("person_id")
    ips = events.groupby(["source", "anonymous_id"])["ip"].agg(set)
    for row in home.itertuples():
        primary = primaries.loc[row.person_id]
        assert row.home_ip == primary.home_ip and row.user_agent != primary.user_agent
        if row.source != "ga4_visitors":  # GA4 exports carry no IP
            assert row.home_ip in ips[(row.source, row.anonymous_id)]


def test_second_devices_use_the_home_ip_at_the_same_hours_with_the_same_interests(events, truth):
    second = truth[truth["kind"] == "second_device"]
    assert len(second) > 100 and not second["logs_in"].any()
    primaries = truth[truth["kind"].isin(["logs_in_later", "never_logs_in"])].set_index("person_id")
    ips = events.groupby(["source", "anonymous_id"])["ip"].agg(set)
    category = events["url"].str.extract(r"/(?:products|blog)/([a-z]+)/")[0]
    categories = events.assign(category=category).dropna(subset=["category"]).groupby(
        ["source", "anonymous_id"])["category"].agg(lambda c: c.value_counts().index[:3].tolist())
    hours = events.groupby(["source", "anonymous_id"])["hour"].agg(lambda h: set(h))
    shared_interest = shared_hours = 0
    for row in second.itertuples():
        primary = primaries.loc[row.person_id]
        key, primary_key = (row.source, row.anonymous_id), (primary.source, primary.anonymous_id)
        assert row.user_agent != primary.user_agent and row.home_ip == primary.home_ip
        if row.source != "ga4_visitors":  # GA4 exports carry no IP
            assert row.home_ip in ips[key] and row.home_ip in ips[primary_key]
        shared_interest += bool(set(categories.get(key, [])) & set(categories.get(primary_key, [])))
        near = {(h + d) % 24 for h in hours[primary_key] for d in (-2, -1, 0, 1, 2)}
        shared_hours += bool(hours[key] & near)
    assert shared_interest > 0.8 * len(second)
    assert shared_hours > 0.6 * len(second)


def test_households_share_one_home_ip_and_some_share_a_tablet(events, truth):
    people = truth[truth["home_ip"].notna() & truth["person_id"].notna() & (truth["kind"] != "household_tablet")]
    per_ip = people.groupby("home_ip").agg(persons=("person_id", "nunique"), households=("household_id", "nunique"))
    assert per_ip["persons"].max() <= 4 and (per_ip["households"] == 1).all()
    assert (per_ip["persons"] >= 2).sum() >= 10
    tablets = truth[truth["kind"] == "household_tablet"]
    assert len(tablets) >= 5
    assert tablets["shared"].all() and (tablets["users"] >= 2).all() and not tablets["logs_in"].any()
    assert tablets["user_agent"].str.contains("iPad|SM-X710").all()
    assert not truth.loc[truth["kind"] != "household_tablet", "shared"].any()
    # A tablet sits on its household's network.
    household_ip = people.groupby("household_id")["home_ip"].first()
    on_network = [household_ip[row.household_id] == row.home_ip for row in tablets.itertuples()
                  if row.household_id in household_ip.index]
    assert on_network and all(on_network)


def test_tablet_owner_is_the_member_with_most_events(world, truth):
    event_truth = pd.read_parquet(world[0] / "truth" / "visitor_events.parquet")
    tablets = truth[truth["kind"] == "household_tablet"]
    used = event_truth.merge(tablets[["source", "anonymous_id", "person_id", "household_id"]],
                             on=["source", "anonymous_id"], suffixes=("", "_owner"))
    assert (used["person_id"] >= used["household_id"]).all() and (used["person_id"] < used["household_id"] + 4).all()
    users = used.groupby(["source", "anonymous_id"])["person_id"].nunique()
    assert (users >= 2).all() and len(users) == len(tablets)
    assert (users.sort_index() == tablets.set_index(["source", "anonymous_id"])["users"].sort_index()).all()
    per_member = used.groupby(["source", "anonymous_id", "person_id"]).size()
    top = per_member.groupby(level=[0, 1]).max()
    for row in tablets.itertuples():
        assert per_member[(row.source, row.anonymous_id, row.person_id)] == top[(row.source, row.anonymous_id)]


def test_nat_ips_are_shared_by_many_visitors(world, events, truth):
    pools = sv._ip_pools(2000, 11)
    carrier, corporate = set(pools.carrier.to_pylist()), set(pools.corporate.to_pylist())
    datacenter = set(pools.datacenter.to_pylist())
    with_ip = events[events["ip"].notna()]
    ids_per_ip = with_ip.groupby("ip")["anonymous_id"].nunique()
    on_carrier = with_ip[with_ip["ip"].isin(carrier)]
    assert set(on_carrier["ip"]) == carrier and len(carrier) == world[1]["visitors"]["carrier_nat_ips"]
    assert ids_per_ip[list(carrier)].min() >= 20
    assert on_carrier["user_agent"].str.contains("iPhone|Android").all()
    assert on_carrier["user_agent"].str.contains(" Mobile").all()
    assert len({ip.rsplit(".", 1)[0] for ip in carrier}) <= 5  # a few /24 blocks
    on_corporate = with_ip[with_ip["ip"].isin(corporate)]
    assert ids_per_ip[list(corporate)].min() >= 20
    assert on_corporate["hour"].between(13, 21).all()
    # Residential IPs (homes, strangers) are shared by at most a household's devices.
    residential = ids_per_ip.drop(list(carrier | corporate | datacenter), errors="ignore")
    assert residential.max() <= 4 * 8
    # An IP always geolocates to the same city.
    located = events[events["ip"].notna() & events["city"].notna()]
    assert (located.groupby("ip")["city"].nunique() == 1).all()


def test_vpn_sessions_come_from_datacenter_ips(events, truth):
    datacenter = set(sv._ip_pools(2000, 11).datacenter.to_pylist())
    windows = truth[truth["kind"] == "vpn"]
    assert len(windows) > 10 and not windows["logs_in"].any() and windows["home_ip"].isna().all()
    ips = events[events["ip"].notna()].groupby(["source", "anonymous_id"])["ip"].agg(set)
    for row in windows.itertuples():
        if (row.source, row.anonymous_id) in ips.index:
            assert ips[(row.source, row.anonymous_id)] <= datacenter
    hops = truth[truth["kind"].isin(["logs_in_later", "never_logs_in"]) & truth["vpn"]]
    assert len(hops) > 10
    for row in hops.itertuples():
        if (row.source, row.anonymous_id) in ips.index:
            seen = ips[(row.source, row.anonymous_id)]
            assert seen & datacenter and row.home_ip in seen


def test_strangers_are_nobody_and_never_log_in(events, truth):
    strangers = truth[truth["kind"] == "stranger"]
    assert len(strangers) == 700 and strangers["person_id"].isna().all() and not strangers["logs_in"].any()
    assert strangers["carrier_nat"].any() and strangers["corporate_nat"].any()
    assert set(strangers["source"]) == set(ID_TYPES)


def test_each_shape_has_its_share_and_ids_stay_in_one_shape_per_household(truth):
    persons = truth[truth["person_id"].notna()]
    assert (persons.groupby("household_id")["source"].nunique() == 1).all()
    share = truth.groupby("source").size() / len(truth)
    assert 0.3 < share["segment_visitors"] < 0.5
    for source in ("ga4_visitors", "tealium_visitors", "adobe_visitors"):
        assert 0.12 < share[source] < 0.28


def test_the_four_shapes_read_with_the_generated_config(world, events):
    out, _ = world
    config = load_config(out / "resolver.yaml")
    names = [s.name for s in config.sources]
    assert names[:4] == ["sf_contacts", "sf_leads", "segment", "segment_batch"] and names[4:] == list(ID_TYPES)
    types = config.identity.types
    for name in ("ga_client_id", "tealium_visitor_id", "ecid"):
        assert types[name].hub_cap == types["anonymous_id"].hub_cap
    assert types["tealium_visitor_id"].normalizer == "lower"
    assert config.stitching is not None and set(config.stitching.anonymous_types) == set(ID_TYPES.values())
    sessions = {source.name: source.session for source in config.sources[4:]}
    assert all("page" in fields for fields in sessions.values())
    assert all("ip" in sessions[name] and "user_agent" in sessions[name] and "screen" in sessions[name]
               for name in ("segment_visitors", "tealium_visitors", "adobe_visitors"))
    event_truth = pd.read_parquet(out / "truth" / "visitor_events.parquet")
    for source in config.sources[4:]:
        read = read_source(config, source)
        frame = read.frame
        assert len(read.rejects) == 0 and read.rows_read == len(frame) == (events["source"] == source.name).sum()
        assert frame[source.key].notna().all() and frame[source.key].is_unique
        assert set(frame[source.key]) == set(event_truth.loc[event_truth["source"] == source.name, "event_key"])
        assert frame[source.timestamp].notna().all()
        for column in source.identifiers[ID_TYPES[source.name]] if isinstance(
                source.identifiers[ID_TYPES[source.name]], list) else [source.identifiers[ID_TYPES[source.name]]]:
            assert frame[column].notna().all()


def test_the_pipeline_runs_on_visitor_data_with_every_row_accounted(world, truth):
    out, manifest = world
    assert main(["run", "--config", str(out / "resolver.yaml"), "-q", "--backend", "cpu"]) == EXIT_OK
    summary = json.loads((out / "out" / "run_summary.json").read_text())
    assert summary["rows"]["accounted"] and summary["rows"]["rejected"] == 0
    for source, key in (("segment_visitors", "segment"), ("ga4_visitors", "ga4"), ("tealium_visitors", "tealium"),
                        ("adobe_visitors", "adobe")):
        assert summary["sources"][source]["rows_read"] == manifest["visitors"][f"events_{key}"]
        assert summary["sources"][source]["accounted"]
    assert summary["stitching"]["anonymous_ids"] >= len(truth)
    # Deterministic stitching works today: an id that logs in ends up with its person's CRM records.
    identifiers = pd.read_parquet(out / "out" / "identifier_map.parquet")
    identity = pd.read_parquet(out / "out" / "identity_map.parquet")
    records = pd.read_parquet(out / "truth" / "records.parquet")
    crm = identity.merge(records, on=["source", "record_key"], suffixes=("", "_true")).dropna(subset=["person_id"])
    crm_person = crm.groupby("person_id_true")["person_id"].agg(lambda x: x.mode().iloc[0])
    ids = truth.assign(id_type=truth["source"].map(ID_TYPES),
                       value=np.where(truth["source"] == "tealium_visitors", truth["anonymous_id"].str.lower(),
                                      truth["anonymous_id"]))
    resolved = ids.merge(identifiers[["id_type", "value", "person_id"]], on=["id_type", "value"], how="left",
                         suffixes=("", "_resolved"))
    assert resolved["person_id_resolved"].notna().all()
    logged = resolved[resolved["logs_in"]].assign(crm=lambda f: f["person_id"].map(crm_person)).dropna(subset=["crm"])
    assert (logged["person_id_resolved"] == logged["crm"]).mean() > 0.8


def test_visitors_without_crm_events(tmp_path):
    generate(tmp_path, 150, seed=4, workers=1, events=False, visitors=True)
    assert not list(tmp_path.glob("segment/events-*")) and list(tmp_path.glob("segment/visitors-*"))
    config = load_config(tmp_path / "resolver.yaml")
    assert [s.name for s in config.sources] == ["sf_contacts", "sf_leads", *ID_TYPES]
    for source in config.sources[2:]:
        assert len(read_source(config, source).rejects) == 0


def test_cli_generate_visitors(tmp_path):
    assert main(["generate", "--people", "60", "--seed", "2", "--out", str(tmp_path), "--visitors", "-q"]) == EXIT_OK
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "visitors" in manifest and (tmp_path / "truth" / "visitors.parquet").exists()
    assert "ga4_visitors" in (tmp_path / "resolver.yaml").read_text()
