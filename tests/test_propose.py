"""`resolver init`: column kinds by content, rules by pair counts under a budget, a config that loads."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from resolver.matching.blocking import build_blocking_keys
from resolver.cli import EXIT_CONFIG, EXIT_INPUT, EXIT_OK, main
from resolver.config import BlockingConfig, BlockingRule, load_config
from resolver.normalize import normalize_date
from resolver.propose import kinds as K
from resolver.propose import propose, write
from resolver.propose import rules as R

DATA = Path(__file__).parent / "data"
RNG = np.random.default_rng(7)
N = 300

FIRST = ["william", "mary", "james", "elizabeth", "robert", "margaret", "thomas", "susan", "michael", "jennifer",
         "david", "katherine", "richard", "patricia", "joseph", "rebecca", "daniel", "deborah", "christopher", "emily"]
LAST = ["okonkwo", "vandermeer", "kowalczyk", "thibodeaux", "abernathy", "nakamura", "fitzwilliam", "oyelaran",
        "szymanski", "castellano", "brennan", "haverford", "lindqvist", "moriarty", "quattrone", "ramaswamy",
        "sutherland", "takahashi", "whitcombe", "yilmaz", "zielinski", "delacroix", "eriksen", "gallagher"]
LAST += [a + b + c for a in ("ko", "ma", "th", "be", "ru", "sa") for b in ("var", "len", "dor", "mis", "tak")
         for c in ("ik", "sen", "ova", "ez", "ley")]  # 150 more surnames, made up
CITIES = ["port macquarie", "mount isa", "lake cargelligo", "north sydney", "springwood", "ballarat", "st kilda",
          "west ryde", "bathurst", "new lambton", "toowoomba", "east maitland", "glen innes", "wagga wagga",
          "point cook", "coffs harbour", "san remo", "fort street", "valley heights", "heathcote"]


def pick(values, n=N):
    return [values[i] for i in RNG.integers(0, len(values), n)]


def _frame() -> pd.DataFrame:
    """Neutral column names: content alone must tell the kinds apart."""
    days = pd.Timestamp("1940-01-01") + pd.to_timedelta(RNG.integers(0, 60 * 365, N), unit="D")
    return pd.DataFrame({
        "c_first": [v.title() for v in pick(FIRST)],
        "c_last": pick(LAST),
        "c_city": pick(CITIES),
        "c_id": [f"{v:09d}" for v in RNG.choice(10**9, N, replace=False)],
        "c_iso": days.strftime("%Y-%m-%d"),
        "c_compact": days.strftime("%Y%m%d"),
        "c_us": days.strftime("%m/%d/%Y"),
        "c_phone": [f"({a}) {b}-{c:04d}" for a, b, c in zip(pick([212, 415, 617, 312, 503]), RNG.integers(201, 989, N),
                                                             RNG.integers(0, 10000, N))],
        "c_email": [f"{f}.{l}{i}@example.org" for i, (f, l) in enumerate(zip(pick(FIRST), pick(LAST)))],
        "c_postcode": [f"{v:04d}" for v in pick(list(range(2000, 3000, 7)))],
        "c_street": [f"{n} {w} {t}" for n, w, t in zip(RNG.integers(1, 999, N), pick(LAST),
                                                        pick(["st", "road", "ave"]))],
        "c_constant": ["x"] * N,
        "c_empty": [None] * (N - 1) + ["1"],
    })


@pytest.fixture(scope="module")
def detected():
    frame = _frame()
    return {c: K.detect_column(c, frame[c]) for c in frame.columns}


@pytest.mark.parametrize("column, kind", [
    ("c_first", K.FIRST_NAME), ("c_last", K.LAST_NAME), ("c_city", K.CITY), ("c_id", K.ID),
    ("c_iso", K.BIRTH_DATE), ("c_compact", K.BIRTH_DATE), ("c_us", K.BIRTH_DATE), ("c_phone", K.PHONE),
    ("c_email", K.EMAIL), ("c_postcode", K.POSTCODE), ("c_street", K.STREET), ("c_constant", K.CONSTANT),
    ("c_empty", K.EMPTY),
])
def test_kinds_come_from_content(detected, column, kind):
    assert detected[column].kind == kind, detected[column]


def test_date_formats_are_named_and_read_by_the_date_normalizer(detected):
    assert [detected[c].detail["format"] for c in ("c_iso", "c_compact", "c_us")] == ["YYYY-MM-DD", "YYYYMMDD",
                                                                                      "MM/DD/YYYY"]
    assert all(detected[c].detail["readable"] for c in ("c_iso", "c_compact", "c_us"))
    assert normalize_date(_frame()["c_compact"]).notna().all()  # YYYYMMDD stays a date


def test_a_day_first_date_is_not_taken_for_a_us_date():
    values = pd.Series(["31/01/1980", "02/03/1975", "15/11/1990", "28/02/1966"] * 20)
    found = K.detect_column("c", values)
    assert found.kind == K.BIRTH_DATE and found.detail["format"] == "DD/MM/YYYY"
    assert not found.detail["readable"]  # the normalizer reads MM/DD/YYYY: init compares it as text


def test_names_break_ties_content_cannot():
    words = pd.Series(pick(LAST))
    assert K.detect_column("x", words).kind == K.LAST_NAME
    assert K.detect_column("suburb", words).kind == K.CITY
    frame = pd.DataFrame({"id": range(N), "surname": words, "town": pick(LAST)})
    found = {d.column: d.kind for d in K.detect_frame(frame)[0]}
    assert found == {"id": K.KEY, "surname": K.LAST_NAME, "town": K.CITY}


def test_ids_phones_and_numbers_are_not_confused():
    assert K.detect_column("c", pd.Series([f"{v:03d}-{w:02d}-{x:04d}" for v, w, x in zip(
        RNG.integers(1, 899, N), RNG.integers(1, 99, N), RNG.integers(1, 9999, N))])).kind == K.ID
    assert K.detect_column("c", pd.Series(RNG.integers(1_000_000, 9_999_999, N).astype(str))).kind == K.ID  # 7 digits
    assert K.detect_column("age", pd.Series(RNG.integers(0, 99, N).astype(str))).kind == K.NUMBER
    assert K.detect_column("c", pd.Series(["+44 20 7946 0%03d" % v for v in range(N)])).kind == K.PHONE
    assert K.detect_column("spouse_first_name", pd.Series(pick(FIRST))).kind == K.OTHER_ENTITY


def test_year_month_day_columns_make_one_birth_date():
    frame = pd.DataFrame({"id": range(N), "yob": RNG.integers(1930, 2005, N).astype(str),
                          "mob": RNG.integers(1, 13, N).astype(str), "dob_day": RNG.integers(1, 29, N).astype(str)})
    found = {d.column: d for d in K.detect_frame(frame)[0]}
    assert [found[c].kind for c in ("yob", "mob", "dob_day")] == [K.YEAR, K.MONTH, K.DAY]
    lone = K.detect_frame(frame[["id", "mob"]])[0]
    assert lone[1].kind == K.NUMBER  # a month alone is no date


# ------------------------------------------------------------------------------------ FEBRL
@pytest.fixture(scope="module")
def febrl(tmp_path_factory):
    folder = tmp_path_factory.mktemp("febrl")
    shutil.copy(DATA / "febrl3_head1000.csv", folder / "febrl3.csv")
    proposal = propose([str(folder / "febrl3.csv")], out=folder / "resolver.yaml")
    write(proposal)
    return proposal, folder / "resolver.yaml"


def test_febrl_columns_are_detected(febrl):
    proposal, _ = febrl
    kinds = {d.column: d.kind for d in proposal.sources[0].detections}
    assert kinds["rec_id"] == K.KEY
    assert kinds["given_name"] == K.FIRST_NAME
    assert kinds["surname"] == K.LAST_NAME
    assert kinds["date_of_birth"] == K.BIRTH_DATE
    assert kinds["postcode"] == K.POSTCODE
    assert kinds["soc_sec_id"] == K.ID
    assert kinds["suburb"] == K.CITY and kinds["address_1"] == K.STREET


def test_febrl_config_loads_and_runs_with_canonical_attributes(febrl):
    proposal, path = febrl
    config = load_config(path)
    source = config.sources[0]
    assert source.key == "rec_id" and config.source_files(source) == [path.parent / "febrl3.csv"]
    assert source.attributes["first_name"] == "given_name"
    assert source.attributes["birth_date"] == "date_of_birth"  # YYYYMMDD: the date normalizer by its name
    assert config.matching.normalizer("birth_date") == "date"
    assert config.matching.model.model_dump() == type(config.matching.model)().model_dump()  # defaults only
    methods = {c.name: c.method for c in config.matching.comparisons}
    assert methods["first_name"] == "jaro_winkler" and methods["birth_date"] == "date" and methods["ssn"] == "exact"
    assert not config.identity.types  # no emails or phones: no identifiers
    text = path.read_text()
    assert "given_name" in text and "first name:" in text and "pairs" in text


def test_febrl_rules_leave_each_field_out_once_and_record_their_pairs(febrl):
    proposal, path = febrl
    assert proposal.rules and proposal.weak_fields == []
    assert proposal.total_pairs <= proposal.budget
    written = yaml.safe_load(path.read_text())["matching"]["blocking"]["rules"]
    assert [r["name"] for r in written] == [c.name for c in proposal.rules]
    for c in proposal.rules:
        assert f"# {c.pairs:,} pairs" in path.read_text()


def test_pair_counts_are_the_plan_counts(febrl):
    """With the whole file sampled, a candidate's count is what resolver plan counts."""
    proposal, _ = febrl
    from resolver.propose import _normalized, _records_frame

    frame, source = _records_frame(proposal.sources)
    attributes = _normalized(frame, proposal.sources, proposal.types, proposal.normalizers, "US")
    plan = build_blocking_keys(BlockingConfig(max_block_size=R.MAX_BLOCK_SIZE,
                                              rules=[BlockingRule(**c.rule) for c in proposal.candidates]),
                               attributes, np.ones(len(frame), dtype=bool))
    assert [p.pairs for p in plan.plans] == [c.pairs for c in proposal.candidates]


# ----------------------------------------------------------------------------------- budget
def _common_value_frame(n: int = 3000) -> dict[str, pd.Series]:
    rng = np.random.default_rng(3)
    city = np.where(rng.random(n) < 0.95, "springfield", rng.choice(["shelbyville", "ogdenville"], n))
    return {
        "first_name": pd.Series(rng.choice(FIRST, n)),
        "last_name": pd.Series(rng.choice(LAST, n)),
        "city": pd.Series(city),
        "birth_date": pd.Series((pd.Timestamp("1950-01-01") + pd.to_timedelta(rng.integers(0, 3000, n), unit="D"))
                                .strftime("%Y-%m-%d")),
        "postal_code": pd.Series(rng.integers(1000, 1010, n).astype(str)),
    }


def test_rule_selection_respects_the_budget_and_drops_over_cap_rules():
    attributes = _common_value_frame()
    n = len(attributes["city"])
    extra = [R.Candidate("city_alone", ["city"], 100)]
    cands = R.candidates({a: 1 for a in attributes}, []) + extra
    R.count(cands, attributes, np.zeros(n, dtype=np.int64), [n], [n])
    by_name = {c.name: c for c in cands}
    assert by_name["city_alone"].capped > 0.9  # one block of ~2,850 records, over the cap of 500
    budget = 20_000  # first_postcode and last_city make ~22k pairs each: over it alone
    chosen = R.choose(cands, budget)
    assert chosen and sum(c.pairs for c in chosen) <= budget
    assert "city_alone" not in {c.name for c in chosen}
    assert by_name["city_alone"].verdict.startswith("dropped")
    assert any(c.verdict.startswith("dropped") and "over the budget" in c.verdict for c in cands)
    # With a budget nothing fits, nothing is chosen.
    assert R.choose(cands, 0) == []
    # Every rule finds probable matches no other finds: the budget, not the gain, stops the choice.
    found = {c.name: np.arange(len(cands)) == i for i, c in enumerate(cands)}
    chosen = R.choose(cands, 3_000, found)
    assert 1 < len(chosen) and sum(c.pairs for c in chosen) <= 3_000
    assert any("would pass the budget" in c.verdict for c in cands)
    assert len(R.choose(cands, 10**9, found)) > len(chosen)


def test_sampled_counts_scale_to_the_whole_file():
    keys = pd.Series(["a"] * 10 + [f"u{i}" for i in range(90)])
    cands = [R.Candidate("k", ["k"], 0)]
    R.count(cands, {"k": keys}, np.zeros(100, dtype=np.int64), [100], [1000], cap=500)
    assert cands[0].pairs == round(45 * 1000 * 999 / (100 * 99))  # 10 sampled rows stand for ~100
    R.count(cands, {"k": keys}, np.zeros(100, dtype=np.int64), [100], [10_000], cap=500)
    assert cands[0].pairs == 0 and cands[0].capped > 0  # ~1,000 records: over the cap


def test_default_budget():
    assert R.default_budget(1000) == 1_000_000
    assert R.default_budget(10_000_000) == 500_000_000


# -------------------------------------------------------------------------- files and the CLI
def _write_people(path: Path, n: int = 400, email: bool = True) -> None:
    rng = np.random.default_rng(11)
    people = pd.DataFrame({
        "CustomerID": [f"C{i:05d}" for i in range(n)],
        "GivenName": rng.choice(FIRST, n), "FamilyName": rng.choice(LAST, n),
        "Born": (pd.Timestamp("1950-01-01") + pd.to_timedelta(rng.integers(0, 20000, n), unit="D"))
        .strftime("%Y-%m-%d"),
        "Zip": rng.integers(10000, 10400, n).astype(str),
        "Notes": ["a long free text note about this customer and their preferences"] * n,
    })
    if email:
        names = zip(people.GivenName, people.FamilyName)
        people["Mail"] = [f"{f}.{last}.{i}@example.com" for i, (f, last) in enumerate(names)]
    people.to_csv(path, index=False)


def test_two_files_link_and_dedupe_with_shared_attributes(tmp_path):
    _write_people(tmp_path / "crm.csv")
    _write_people(tmp_path / "shop.csv")
    proposal = propose([str(tmp_path / "crm.csv"), str(tmp_path / "shop.csv")], out=tmp_path / "r.yaml")
    write(proposal)
    config = load_config(tmp_path / "r.yaml")
    assert proposal.link_type == "link_and_dedupe"
    assert [s.name for s in config.sources] == ["crm", "shop"]
    assert config.sources[0].attributes == config.sources[1].attributes
    assert set(config.sources[0].attributes) == {"first_name", "last_name", "birth_date", "postal_code", "email"}
    assert config.identity.types["email"].limit == 5  # personal emails: an identifier, as synthetic.yaml declares it
    assert "phone" not in config.identity.types


def test_cli_init_writes_a_loadable_config_and_names_problems(tmp_path, capsys):
    _write_people(tmp_path / "people.csv", email=False)
    out = tmp_path / "conf" / "resolver.yaml"
    assert main(["init", str(tmp_path / "people.csv"), "--out", str(out), "--quiet"]) == EXIT_OK
    config = load_config(out)
    assert config.sources[0].path == "../people.csv" and config.sources[0].key == "CustomerID"
    edited = out.read_text() + "# edited by hand\n"
    out.write_text(edited)
    assert main(["init", str(tmp_path / "people.csv"), "--out", str(out)]) == EXIT_CONFIG  # never over a config
    assert out.read_text() == edited
    assert main(["init", str(tmp_path / "people.csv"), "--out", str(out), "--force", "-q"]) == EXIT_OK
    out.unlink()
    assert main(["init", str(tmp_path / "people.csv"), "--name", "a", "--name", "b", "--out", str(out)]) == EXIT_CONFIG
    pd.DataFrame({"first": pick(FIRST, 50), "last": pick(LAST, 50)}).to_csv(tmp_path / "nokey.csv", index=False)
    assert main(["init", str(tmp_path / "nokey.csv"), "--out", str(out)]) == EXIT_INPUT
    assert "record key" in capsys.readouterr().err
    assert main(["init", str(tmp_path / "missing.csv"), "--out", str(out)]) == EXIT_INPUT


def test_exclude_leaves_a_column_out(tmp_path):
    _write_people(tmp_path / "people.csv")
    proposal = propose([str(tmp_path / "people.csv")], out=tmp_path / "r.yaml", exclude=("Zip",))
    assert "postal_code" not in proposal.sources[0].attributes
    assert proposal.sources[0].detection("Zip").kind == K.EXCLUDED


def test_parquet_and_jsonl_are_read_as_the_readers_read_them(tmp_path):
    n = 300
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({
        "pid": np.arange(n),
        "first_name": pd.Categorical(rng.choice(FIRST, n)),
        "last_name": rng.choice(LAST, n),
        "dob": pd.Timestamp("1950-01-01") + pd.to_timedelta(rng.integers(0, 20000, n), unit="D"),
    })
    frame.to_parquet(tmp_path / "p.parquet", index=False)
    with open(tmp_path / "j.jsonl", "w") as f:
        for row in frame.itertuples():
            f.write(f'{{"id": {row.pid}, "person": {{"given": "{row.first_name}", "family": "{row.last_name}"}}, '
                    f'"born": "{row.dob:%Y-%m-%d}"}}\n')
    (tmp_path / "s.csv").write_text("key;vorname;nachname\n" + "".join(
        f"{i};{a};{b}\n" for i, (a, b) in enumerate(zip(frame.first_name, frame.last_name))))
    proposal = propose([str(tmp_path / "p.parquet"), str(tmp_path / "j.jsonl"), str(tmp_path / "s.csv")],
                       out=tmp_path / "r.yaml")
    write(proposal)
    config = load_config(tmp_path / "r.yaml")
    parquet, jsonl, semicolon = config.sources
    assert parquet.format == "parquet" and parquet.attributes["birth_date"] == "dob"  # a timestamp column: ISO text
    assert jsonl.format == "jsonl" and jsonl.attributes["first_name"] == "person.given"
    assert jsonl.attributes["last_name"] == "person.family" and jsonl.key == "id"
    assert semicolon.csv.delimiter == ";" and semicolon.attributes["first_name"] == "vorname"
    assert proposal.link_type == "link_and_dedupe"


def test_bare_digit_strings_are_phones_only_when_the_name_says_so():
    numbers = pd.Series([f"{a}{b:07d}" for a, b in zip(pick([212, 415, 617]), RNG.integers(2_000_000, 9_999_999, N))])
    assert K.detect_column("loyalty_number", numbers).kind == K.ID
    assert K.detect_column("mobile", numbers).kind == K.PHONE


def test_a_repeated_header_is_skipped(tmp_path):
    (tmp_path / "r.csv").write_text("id,first,last,Last\n" + "".join(f"{i},{a},{b},{c}\n" for i, (a, b, c) in enumerate(
        zip(pick(FIRST), pick(LAST), pick(LAST)))))
    proposal = propose([str(tmp_path / "r.csv")], out=tmp_path / "r.yaml")
    assert [d.kind for d in proposal.sources[0].detections] == [K.KEY, K.FIRST_NAME, K.LAST_NAME, K.DUPLICATE]
    write(proposal)


def test_init_keeps_the_chosen_rules_under_a_given_budget(tmp_path):
    attributes = _common_value_frame()
    frame = pd.DataFrame({"row_id": range(len(attributes["city"]))} | {k: v for k, v in attributes.items()})
    frame.to_csv(tmp_path / "people.csv", index=False)
    proposal = propose([str(tmp_path / "people.csv")], out=tmp_path / "r.yaml", pair_budget=20_000)
    assert proposal.sources[0].detection("city").kind == K.CITY  # one value in 95% of the rows
    assert proposal.budget == 20_000 and 0 < proposal.total_pairs <= 20_000
    write(proposal)
    assert "Pair budget 20,000 (--pair-budget)" in (tmp_path / "r.yaml").read_text()


def test_link_only_compares_only_what_both_files_have(tmp_path):
    _write_people(tmp_path / "crm.csv", email=True)
    _write_people(tmp_path / "shop.csv", email=False)  # no email there: under link_only never compared
    proposal = propose([str(tmp_path / "crm.csv"), str(tmp_path / "shop.csv")], out=tmp_path / "r.yaml",
                       link_type="link_only")
    write(proposal)
    compared = {c["column"] for c in proposal.comparisons}
    assert "email" not in compared and {"first_name", "last_name", "birth_date"} <= compared
    both = propose([str(tmp_path / "crm.csv"), str(tmp_path / "shop.csv")], out=tmp_path / "b.yaml")
    assert "email" in {c["column"] for c in both.comparisons}  # link_and_dedupe: crm's duplicates share emails
