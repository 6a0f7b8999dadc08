"""Shared fixtures: one generated dataset per test session (small, with every kind of noise).

They generate data and run the whole pipeline (tens of seconds): only tests marked `slow` may use
them, so that `python -m pytest -m "not slow"` (the fast loop) never builds them."""

from pathlib import Path

import pytest

from resolver.config import load_config

SLOW_FIXTURES = {"generated", "resolved", "stewarded"}


def pytest_collection_modifyitems(config, items):
    """A test that uses a slow session fixture (directly or through another fixture) must be marked slow."""
    unmarked = [item.nodeid for item in items
                if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError(f"tests using {sorted(SLOW_FIXTURES)} must be marked slow (pytest.mark.slow): "
                                + ", ".join(unmarked))


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Path:
    from resolver.synth.people import generate

    root = tmp_path_factory.mktemp("generated")
    generate(root, 6000, seed=11, chunk_people=2000, workers=1)
    return root


@pytest.fixture(scope="session")
def resolved(generated, tmp_path_factory):
    """The default (guarded) pipeline over the generated data, outputs written."""
    from resolver.pipeline import run

    config = load_config(generated / "resolver.yaml")
    config.run.output_dir = str(tmp_path_factory.mktemp("out-guarded"))
    return config, run(config)


@pytest.fixture(scope="session")
def stewarded(tmp_path_factory):
    """Two runs with a state and review decisions between them (resolver.state.review): the first run's
    outputs, the decisions made on them, and the second run's outputs (with the truth, so its
    report.html has every chart). Used by the review and report tests."""
    import shutil

    import pandas as pd

    from resolver.cli import EXIT_OK, main
    from resolver.synth.people import generate

    root = tmp_path_factory.mktemp("stewarded")
    generate(root, 2000, seed=7, chunk_people=2000, workers=1)
    config, state = root / "resolver.yaml", root / "state"
    assert main(["run", "--config", str(config), "--state", str(state), "-q"]) == EXIT_OK
    first = root / "out-first"
    shutil.copytree(root / "out", first)
    picks = _pick_decisions(first)
    for args in picks.values():
        assert main(["review", "decide", "--state", str(state), "--config", str(config), *args, "-q"]) == EXIT_OK
    assert main(["run", "--config", str(config), "--state", str(state), "--truth", str(root / "truth"), "-q"]) == EXIT_OK
    return {"root": root, "state": state, "config": config, "first": first, "second": root / "out", "picks": picks,
            "identity_first": pd.read_parquet(first / "identity_map.parquet")}


def _pick_decisions(out: Path) -> dict[str, list[str]]:
    """Decisions of every kind, chosen from the first run's outputs:
    - accept_new: two lead-only singletons the matcher never linked (a must-link the guards allow);
    - accept_guarded: two Salesforce Contacts in different persons (one person may hold one Contact
      id: the guard refuses the must-link);
    - reject_link / accept_link: two automatic merges that join two deterministic groups, one rejected (a
      cannot-link that splits them) and one confirmed (by item id, from `review list --links`);
    - reject_joined: two records that identifiers join (the cannot-link is reported as a conflict);
    - accept_chain_1 / accept_chain_2 / reject_chain: three more lead-only singletons, must-links
      L3-L4, L4-L5 and a cannot-link L3-L5 (one must-link is held back: no chain of links joins a
      rejected pair)."""
    import pandas as pd

    from resolver.state.review import review_items

    identity = pd.read_parquet(out / "identity_map.parquet")
    active = identity[identity["status"] == "active"]
    sizes = active.groupby("person_id")["record_id"].transform("size")
    singles = active[(sizes == 1) & (active["linked_by"] == "singleton")]
    leads = singles[singles["source"] == "sf_leads"]
    contacts = active[active["source"] == "sf_contacts"].drop_duplicates("person_id")
    links = pd.read_parquet(out / "match_links.parquet")
    # merges that only this link makes: two deterministic groups, one link between them
    groups = active.groupby("person_id")["deterministic_group"].nunique()
    two = links[(links["person_id_l"].map(groups) == 2) & (links["person_id_l"].map(links.groupby("person_id_l").size()) == 1)]
    joined = active[(sizes == 2) & active["source"].isin(["sf_contacts", "sf_leads"])]
    joined = joined[joined["linked_by"] != "probabilistic"]
    pair = joined.groupby("deterministic_group").filter(lambda g: len(g) == 2 and g["person_id"].nunique() == 1)
    pair = pair.sort_values(["deterministic_group", "record_id"])  # the first two rows: one group
    assert len(leads) >= 5 and len(contacts) >= 2 and len(two) >= 2 and len(pair) >= 2
    items = review_items(out, None, links=1 << 30)
    confirm = items[(items["kind"] == "link") & (items["record_key_l"] == two.iloc[1]["record_key_l"])
                    & (items["record_key_r"] == two.iloc[1]["record_key_r"])]
    assert len(confirm) == 1

    def key(row, side=""):
        return f"{row['source' + side]}:{row['record_key' + side]}"

    return {
        "accept_new": ["--pair", key(leads.iloc[0]), key(leads.iloc[1]), "--accept"],
        "accept_guarded": ["--pair", key(contacts.iloc[0]), key(contacts.iloc[1]), "--accept"],
        "reject_link": ["--pair", key(two.iloc[0], "_l"), key(two.iloc[0], "_r"), "--reject"],
        "accept_link": ["--item", confirm.iloc[0]["item_id"], "--accept", "--by", "steward-2"],
        "reject_joined": ["--pair", key(pair.iloc[0]), key(pair.iloc[1]), "--reject"],
        "accept_chain_1": ["--pair", key(leads.iloc[2]), key(leads.iloc[3]), "--accept"],
        "accept_chain_2": ["--pair", key(leads.iloc[3]), key(leads.iloc[4]), "--accept"],
        "reject_chain": ["--pair", key(leads.iloc[2]), key(leads.iloc[4]), "--reject"],
    }
