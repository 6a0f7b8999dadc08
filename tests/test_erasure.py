"""`resolver forget`: every output and state file is scanned afterwards for the erased values, and a
re-run over the same sources suppresses them."""

from pathlib import Path

import pandas as pd
import pytest

from resolver.cli import EXIT_CONFIG, EXIT_OK, main
from resolver.state import StateStore
from resolver.synth import generate


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


def test_forget_needs_a_state(world, capsys):
    _, config, _ = world
    assert main(["forget", "--config", str(config), "--email", "x@y.com"]) == EXIT_CONFIG
    assert "state" in capsys.readouterr().err
