"""`resolver forget`: every output and state file is scanned afterwards for the erased values, and a
re-run over the same sources suppresses them."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resolver.cli import EXIT_CONFIG, EXIT_OK, main
from resolver.ingest.memo import raw_value_keys
from resolver.state.store import StateStore
from resolver.synth.people import generate


def _texts(folder: Path) -> list[str]:
    """Every value of every file under folder, as text (Parquet decoded, others read)."""
    out = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            out.append(path.name + "\n" + frame.astype(str).to_csv(index=False) + " ".join(map(str, frame.columns)))
        else:
            out.append(path.read_text(encoding="utf-8", errors="replace"))
    return out


def _found(values: set, folders: list[Path]) -> set:
    blob = "\n".join(t for f in folders for t in _texts(f)).lower()
    return {v for v in values if v.lower() in blob}


@pytest.fixture()
def world(tmp_path):
    generate(tmp_path, 600, seed=21, workers=1)
    config = tmp_path / "resolver.yaml"
    state = tmp_path / "state"
    assert main(["run", "--config", str(config), "--state", str(state), "-q"]) == EXIT_OK
    return tmp_path, config, state


def _victim(out: Path) -> tuple[str, dict]:
    """A person with several records, an email and a phone."""
    identity = pd.read_parquet(out / "identity_map.parquet")
    identifiers = pd.read_parquet(out / "identifier_map.parquet")
    linked = identifiers[identifiers["status"] == "linked"]
    emails = linked[linked["id_type"] == "email"].groupby("person_id", observed=True)["value"].first()
    phones = linked[linked["id_type"] == "phone"].groupby("person_id", observed=True)["value"].first()
    sizes = identity[identity["status"] == "active"].groupby("person_id").size()
    candidates = sorted(set(emails.index) & set(phones.index) & set(sizes[sizes >= 2].index))
    person = candidates[0]
    mine = identity[identity["person_id"] == person]
    return person, {"email": emails[person], "phone": phones[person], "keys": set(mine["record_key"].astype(str))}


@pytest.mark.slow
def test_forget_by_email_leaves_no_trace_and_suppresses_reingest(world):
    root, config, state = world
    out = root / "out"
    person, pii = _victim(out)
    erased = {pii["email"], pii["phone"], person, *pii["keys"]}
    assert _found(erased, [out]) == erased  # present before

    assert main(["forget", "--config", str(config), "--state", str(state), "--email", pii["email"].upper()]) == EXIT_OK

    assert _found(erased, [out, state]) == set()
    audit = StateStore(state).load().audit
    assert audit["action"].tolist() == ["forget"] and audit["selector"].tolist() == ["email"]
    assert audit["records"].item() == len(pii["keys"]) and audit["identifiers"].item() >= 2
    assert len(list((state / "versions").iterdir())) == 1  # no older version still holds the person

    # The sources still hold the person: the next run suppresses them and counts it.
    assert main(["run", "--config", str(config), "--state", str(state), "-q"]) == EXIT_OK
    summary = pd.read_json(out / "run_summary.json", typ="series")
    assert summary["rows"]["suppressed"] >= len(pii["keys"]) and summary["rows"]["accounted"]
    assert summary["suppressed"]["records"] == summary["rows"]["suppressed"]
    assert _found({pii["email"], pii["phone"], *pii["keys"]}, [out, state]) == set()


@pytest.mark.slow
def test_forget_by_record_and_person(world):
    root, config, state = world
    out = root / "out"
    person, pii = _victim(out)
    key = min(pii["keys"])
    assert main(["forget", "--config", str(config), "--state", str(state), "--record", key]) == EXIT_OK
    assert _found({key, pii["email"]}, [out, state]) == set()
    persons = pd.read_parquet(out / "persons.parquet")
    assert person not in set(persons["person_id"])

    other = persons["person_id"].iloc[0]
    golden = pd.read_parquet(out / "golden_records.parquet")
    assert other in set(golden["person_id"])
    assert main(["forget", "--config", str(config), "--state", str(state), "--person", other]) == EXIT_OK
    assert other not in set(pd.read_parquet(out / "golden_records.parquet")["person_id"])
    assert len(StateStore(state).load().audit) == 2


@pytest.mark.slow
def test_forget_needs_a_state(world, capsys):
    _, config, _ = world
    assert main(["forget", "--config", str(config), "--email", "x@y.com"]) == EXIT_CONFIG
    assert "state" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# No trace: every byte of the state and the outputs, for every value of every record of the person
# ---------------------------------------------------------------------------------------------
# A lead of the victim's own (another email, phone and name), first a person of its own, then
# deleted and merged into the victim's live lead (as Salesforce does with a duplicate).
TWIN = {"Id": "00Q5g0000Zz9Er1", "FirstName": "Quillonetta", "LastName": "Zebedeeworth",
        "Email": "  Twin.Of-Victim+Promo@FastMail.COM ", "Phone": "(628) 204-7731",
        "MobilePhone": "6282047731999"}  # an invalid number: a policy action names it


def _unique_lead(leads: pd.DataFrame, taken: str) -> pd.Series:
    """A live, unconverted lead with an email and a phone that no other row of any source holds."""
    live = leads[(leads["IsDeleted"] == "false") & leads["Email"].notna() & leads["Phone"].notna()
                 & leads["ConvertedContactId"].isna() & leads["MasterRecordId"].isna()]
    for _, row in live.iterrows():
        if taken.count(row["Email"].strip().lower()) == 1 and taken.count(row["Phone"]) == 1:
            return row
    raise AssertionError("no lead with a unique email and phone")


# A Segment identify of the victim's: what it carries besides the email is the victim's too.
EVENT = {"messageId": "msg-victim-erase-7731", "anonymous_id": "anon-victim-erase-7731",
         "user_id": "u_victim_erase_7731", "device_id": "dev-victim-erase-7731", "ip": "172.58.201.77"}


def _with_event(events_file: Path, victim: pd.Series) -> None:
    import json

    message = {"messageId": EVENT["messageId"], "type": "identify", "timestamp": "2024-02-01T10:00:00.000Z",
               "anonymousId": EVENT["anonymous_id"], "userId": EVENT["user_id"],
               "traits": {"email": victim["Email"]},
               "context": {"ip": EVENT["ip"], "device": {"id": EVENT["device_id"], "type": "ios"}}}
    with open(events_file, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(message) + "\n")


def _with_twin(lead_file: Path, original: str, victim: pd.Series | None) -> None:
    """Lead.csv as generated plus the twin: live on its own, or (with `victim`) deleted and merged
    into the victim's lead."""
    import csv
    import io

    columns = original.splitlines()[0].split(",")
    twin = {column: "" for column in columns}
    twin.update(TWIN, IsDeleted="false", IsConverted="false", CreatedDate="2021-03-01T10:00:00.000Z",
                LastModifiedDate="2021-03-02T10:00:00.000Z")
    if victim is not None:
        twin.update(IsDeleted="true", MasterRecordId=victim["Id"], LastModifiedDate="2022-05-02T10:00:00.000Z")
    line = io.StringIO()
    csv.DictWriter(line, fieldnames=columns).writerow(twin)
    lead_file.write_text(original + line.getvalue(), encoding="utf-8")


def _needles(config_path: Path, identifiers: list[tuple[str, str]], records: list[tuple[str, str]],
             events: list[tuple[str, str]]) -> tuple[set[str], set[int]]:
    """What must not survive of these values: (identifier type, raw value), (source, record key),
    (events source, event id). Each as given and normalized (the project's normalizers, as an
    identifier and, for emails and phones, as an attribute), and the unsalted 64-bit hashes the
    project makes of them (identifier hashes, record member keys, event id hashes, memo keys)."""
    from resolver.ingest.attributes import normalize_attribute
    from resolver.config import load_config
    from resolver.ids import record_member_keys
    from resolver.normalize import hash_identifiers, normalize_identifier

    config = load_config(config_path)
    raws = [raw for _, raw in identifiers + records + events]
    texts = {raw.strip() for raw in raws}
    ints = set(raw_value_keys(pd.Series(raws, dtype="str")).tolist())
    for id_type, raw in identifiers:
        kind = config.identity.types[id_type].normalizer
        normalized, _ = normalize_identifier(kind, pd.Series([raw], dtype="str"), default_region=config.run.default_region,
                                             email_options=config.identity.email.model_dump())
        if pd.isna(normalized.iloc[0]):  # invalid: no normalized form, no hash
            continue
        texts.add(normalized.iloc[0])
        ints |= set(hash_identifiers(id_type, normalized).tolist())
        if kind in ("email", "phone"):
            texts.add(normalize_attribute(kind, pd.Series([raw], dtype="str"), config).iloc[0])
    for source, key in records:
        key_18, _ = normalize_identifier("sfid", pd.Series([key], dtype="str"))
        texts.add(key_18.iloc[0])
        ints |= set(record_member_keys(pd.DataFrame({"source": [source], "source_key": key_18})).tolist())
    for source, event_id in events:
        ints |= set(hash_identifiers(f"event:{source}", pd.Series([event_id], dtype="str")).tolist())
    assert all(isinstance(t, str) and len(t) >= 10 for t in texts) and 0 not in ints
    return {t.lower() for t in texts}, ints


def _hash_forms(ints: set[int]) -> tuple[set[str], set[bytes]]:
    """A 64-bit hash as text (decimal unsigned and signed, 16 hex digits) and as 8 raw bytes."""
    import struct

    texts, binary = set(), set()
    for h in ints:
        signed = h - (1 << 64) if h >= 1 << 63 else h
        texts |= {str(h), str(signed), f"{h:016x}"}
        binary |= {struct.pack("<Q", h), struct.pack(">Q", h)}
    return texts, binary


def _traces(folders: list[Path], texts: set[str], ints: set[int]) -> list[str]:
    """Where any needle occurs: every file's raw bytes (lower-cased), and every Parquet column's
    decoded values as text and as integers (unsigned and signed)."""
    import pyarrow.parquet as pq

    hash_texts, hash_bytes = _hash_forms(ints)
    words = texts | hash_texts
    found = []
    for path in sorted(p for folder in folders for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        lowered = data.lower()
        found += [f"{path}: bytes {w!r}" for w in words if w.encode() in lowered]
        found += [f"{path}: 64-bit {b.hex()}" for b in hash_bytes if b in data]
        if path.suffix != ".parquet":
            continue
        table = pq.read_table(path)
        for name in table.column_names:
            values = table.column(name).to_pylist()
            blob = "\n".join(map(str, values)).lower()
            found += [f"{path}:{name} text {w!r}" for w in words if w in blob]
            numbers = {v % (1 << 64) for v in values if isinstance(v, int) and not isinstance(v, bool)}
            found += [f"{path}:{name} int {h}" for h in numbers & ints]
    return found


def _others(out: Path, erased: set) -> dict[str, pd.DataFrame]:
    """The outputs' rows of everyone else, as they are."""
    tables = {}
    for name in ("identity_map", "identifier_map", "persons", "golden_records", "conflicts"):
        frame = pd.read_parquet(out / f"{name}.parquet")
        tables[name] = frame[~frame["person_id"].astype(str).isin(erased)].reset_index(drop=True)
    return tables


@dataclass
class MergedTwin:
    root: Path
    config: Path
    state: Path
    out: Path
    victim: dict  # the live lead's row as in Lead.csv
    person: str  # the person of both leads
    texts: set  # what must leave no trace (_needles)
    ints: set


@pytest.fixture()
def merged_twin(tmp_path) -> MergedTwin:
    """The issue's case: a deleted lead (its own email, phone and name) merged into a live one. The
    deleted lead was a person of its own in an earlier run, so the state's history names it too."""
    generate(tmp_path, 600, seed=21, workers=1)
    config, state, out = tmp_path / "resolver.yaml", tmp_path / "state", tmp_path / "out"
    lead_file = tmp_path / "salesforce" / "Lead.csv"
    original = lead_file.read_text(encoding="utf-8")
    taken = "\n".join(p.read_text(encoding="utf-8") for p in [*(tmp_path / "salesforce").glob("*.csv"),
                                                              *(tmp_path / "segment").iterdir()]).lower()
    assert TWIN["Email"].strip().lower() not in taken and TWIN["Phone"] not in taken
    assert not any(value.lower() in taken for value in EVENT.values())
    victim = _unique_lead(pd.read_csv(lead_file, dtype=str), taken)
    _with_event(tmp_path / "segment" / "events-00000.jsonl", victim)
    _with_twin(lead_file, original, None)
    assert main(["run", "--config", str(config), "--state", str(state), "-q"]) == EXIT_OK
    identity = pd.read_parquet(out / "identity_map.parquet")
    alone = identity.loc[identity["record_key"] == TWIN["Id"], "person_id"].item()
    first = identity.loc[identity["record_key"] == victim["Id"], "person_id"].item()
    assert first != alone
    _with_twin(lead_file, original, victim)
    assert main(["run", "--config", str(config), "--state", str(state), "-q"]) == EXIT_OK
    identity = pd.read_parquet(out / "identity_map.parquet")
    twin = identity[identity["record_key"] == TWIN["Id"]]
    person = twin["person_id"].item()
    assert twin["status"].item() == "merged"
    assert person == identity.loc[identity["record_key"] == victim["Id"], "person_id"].item()
    merges = pd.read_parquet(out / "lineage.parquet").query("event == 'merge'")
    assert {person, first, alone} == {person, *merges.loc[merges["person_id"] == person, "other_id"]}
    identifiers = [(kind, row[column]) for row in (victim, TWIN)
                   for kind, column in (("email", "Email"), ("phone", "Phone"), ("sf_lead_id", "Id"))]
    identifiers += [(kind, EVENT[kind]) for kind in ("anonymous_id", "user_id", "device_id")]
    texts, ints = _needles(config, identifiers, [("sf_leads", victim["Id"]), ("sf_leads", TWIN["Id"])],
                           [("segment", EVENT["messageId"])])
    texts |= {TWIN["FirstName"].lower(), TWIN["LastName"].lower()}
    ints |= set(raw_value_keys(pd.Series([TWIN["FirstName"], TWIN["LastName"]], dtype="str")).tolist())
    before = _traces([state], texts, ints)
    assert any("/memo/" in t for t in before) and any("persons.parquet" in t for t in before)
    return MergedTwin(tmp_path, config, state, out, victim.to_dict(), person, texts, ints)


@pytest.mark.slow
def test_forget_leaves_no_trace_of_values_linked_to_no_person(merged_twin):
    """Values that link nothing are the person's too when only their data carried them: an IP
    (non-evidence) seen only on their event, and an invalid phone of their (merged) lead. The
    outputs name the person on those rows, so forget erases them, and the next run does not bring
    them back."""
    t = merged_twin
    texts, ints = _needles(t.config, [("ip", EVENT["ip"]), ("phone", TWIN["MobilePhone"])], [], [])
    assert _traces([t.out], texts, ints)
    ip = pd.read_parquet(t.out / "identifier_map.parquet").query("value == @EVENT['ip']")
    assert ip[["status", "person_id"]].values.tolist() == [["observed", t.person]]
    invalid = pd.read_parquet(t.out / "policy_actions.parquet").query("value == @TWIN['MobilePhone']")
    assert invalid[["action", "count", "person_id"]].values.tolist() == [["invalid", 1, t.person]]

    assert main(["forget", "--config", str(t.config), "--state", str(t.state), "--email", t.victim["Email"],
                 "-q"]) == EXIT_OK
    assert not (found := _traces([t.out, t.state], texts, ints)), "\n".join(found)
    tombstones = StateStore(t.state).load().tombstones
    assert (tombstones["kind"] == "observed").sum() == 1  # the IP: suppressed as a value, never a record

    assert main(["run", "--config", str(t.config), "--state", str(t.state), "-q"]) == EXIT_OK
    assert not (found := _traces([t.out, t.state], texts, ints)), "\n".join(found)


def test_shared_observed_values_and_actions_name_no_person():
    """An observed value or a policy action counts rows of several persons (or of no record):
    it names nobody, as it is other people's data too."""
    from resolver.graph.guards import EDGE_STATES, OBSERVED
    from resolver.persons.tables import action_persons, observed_by

    # Records 0, 1 (persons 0 and 1); identifier nodes 2 (an email of person 0), 3, 4 (IPs).
    labels = np.array([0, 1, 0, 2, 3])
    edges = pd.DataFrame({"src": [0, 2, 0, 1], "dst": [2, 3, 4, 4]})
    status = pd.Categorical.from_codes([0, OBSERVED, OBSERVED, OBSERVED], categories=EDGE_STATES)
    seen = observed_by(2, labels, np.array([True, True, False, False]), np.array([False, True, True]), edges, status)
    assert seen.tolist() == [-1, 0, -1]  # IP 3 only on person 0's event; IP 4 on both persons' records

    # Value 1 on two records of person pA; 2 on records of pA and pB; 3 counts a row no record holds.
    actions = pd.DataFrame({"action": "invalid", "source": "s", "id_type": "phone", "value": ["1", "2", "3"],
                            "reason": "r", "count": [2, 2, 2]})
    flagged = pd.DataFrame({"record_id": [0, 1, 0, 2, 0], "action": "invalid", "source": "s", "id_type": "phone",
                            "value": ["1", "1", "2", "2", "3"], "reason": "r"})
    got = action_persons(actions, flagged, pd.Series(["pA", "pA", "pB"], dtype="str"))
    assert got.isna().tolist() == [False, True, True] and got[0] == "pA"


def test_suppressed_records_take_their_action_counts_along():
    from resolver.state.erasure import without_rows

    actions = pd.DataFrame({"action": "invalid", "source": "s", "id_type": "phone", "value": ["1", "2"],
                            "reason": "r", "count": [1, 3]})
    flags = pd.DataFrame({"record_pos": [4, 5], "action": "invalid", "id_type": "phone", "value": ["1", "2"],
                          "reason": "r"})
    kept = without_rows(actions, flags)
    assert kept[["value", "count"]].values.tolist() == [["2", 2]]


@pytest.mark.slow
def test_forget_leaves_no_trace_of_merged_records_memo_or_person_keys(merged_twin):
    """Erased by the live lead's email, nothing of either lead survives in any byte of the state or
    the outputs (not in the memo, not as an unsalted person key, now or after the next run), and
    everyone else stays as they were."""
    t = merged_twin
    others = _others(t.out, {t.person})

    assert main(["forget", "--config", str(t.config), "--state", str(t.state), "--email", t.victim["Email"],
                 "-q"]) == EXIT_OK

    assert not (found := _traces([t.out, t.state], t.texts, t.ints)), "\n".join(found)
    persons = StateStore(t.state).load().persons
    assert (persons["status"] == "forgotten").sum() >= 2  # ids once issued are still never given again
    after = _others(t.out, {t.person})
    for name, frame in others.items():
        pd.testing.assert_frame_equal(after[name], frame, obj=name)

    # The sources still hold both leads: the next run suppresses them, and leaves no trace either.
    assert main(["run", "--config", str(t.config), "--state", str(t.state), "-q"]) == EXIT_OK
    assert pd.read_json(t.out / "run_summary.json", typ="series")["suppressed"]["records"] == 2
    assert not (found := _traces([t.out, t.state], t.texts, t.ints)), "\n".join(found)
    again = _others(t.out, {t.person})
    for name in ("identity_map", "persons", "golden_records"):
        kept = again[name]["person_id"].isin(set(others[name]["person_id"]))
        assert kept.mean() > 0.95, name  # the others keep their ids


SERVE_ONLY = " Serve.Only.Person+News@GMail.com"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_forget_leaves_no_trace_in_the_sync_store(merged_twin):
    """The same with `serve`'s store in the state directory: it imported the batch's persons (the
    earlier ones too) and identifiers, and resolved a webhook that named the person; after
    `forget`, no byte of the store, its inbox or their journals holds a trace."""
    pytest.importorskip("starlette")
    from _sync_helpers import SECRET, identify, segment, signed
    from starlette.testclient import TestClient

    from resolver.config import load_config
    from resolver.sync.app import create_app
    from resolver.sync.service import SyncService

    t = merged_twin
    service = SyncService(load_config(t.config), t.state, f"sqlite:///{t.state / 'sync.db'}")
    body = segment([identify("msg-victim-1", user_id="sync-user-7731", email=t.victim["Email"].upper(),
                             phone=TWIN["Phone"]),
                    identify("msg-serve-only-1", anonymous_id="anon-serve-only-5521", email=SERVE_ONLY)])
    with TestClient(create_app(service, secret=SECRET, org_ids=[])) as client:
        assert client.post("/webhooks/segment", content=body, headers=signed(body)).status_code == 200
        assert service.wait_resolved(timeout=30)
    service.close()
    assert _traces([t.state], t.texts, t.ints)  # the store holds the person now

    assert main(["forget", "--config", str(t.config), "--state", str(t.state), "--email", t.victim["Email"],
                 "-q"]) == EXIT_OK

    assert (t.state / "sync.db").exists()
    texts = t.texts | {"sync-user-7731"}
    assert not (found := _traces([t.out, t.state], texts, t.ints)), "\n".join(found)

    # A person only serve knows (no batch run saw it), erased by its email as the customer typed it.
    texts, ints = _needles(t.config, [("email", SERVE_ONLY), ("anonymous_id", "anon-serve-only-5521")], [], [])
    assert _traces([t.state], texts, ints)
    assert main(["forget", "--config", str(t.config), "--state", str(t.state), "--email", SERVE_ONLY, "-q"]) == EXIT_OK
    assert not (found := _traces([t.out, t.state], texts, ints)), "\n".join(found)


def test_an_erased_observed_value_goes_from_a_later_record_which_stays():
    from resolver.ids import salted
    from resolver.state.erasure import OBSERVED_KIND, suppress
    from resolver.ingest.tables import SourceTables

    salt = "0123456789abcdef" * 4
    records = pd.DataFrame({"source": ["crm", "crm"], "record_key": ["a", "b"], "source_key": ["a", "b"]})
    obs = pd.DataFrame({"record_pos": [0, 0, 1], "hash": np.array([11, 22, 33], np.uint64), "value": ["ip", "x", "e"]})
    part = SourceTables("crm", 2, records=records, observations=obs, resolved=2)
    tombstones = pd.DataFrame({"kind": [OBSERVED_KIND, "identifier"],
                               "salted_hash": salted(np.array([11, 33], np.uint64), salt)})
    counts = suppress([part], tombstones, salt)
    assert part.records["record_key"].tolist() == ["a"]  # b held an erased identifier; a only an erased IP
    assert part.observations["value"].tolist() == ["x"]
    assert (counts.records, counts.identifier_values) == (1, 1)
