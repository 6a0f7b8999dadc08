"""Deterministic synthetic person file with ground truth: the plain shape (``resolver generate --shape people``).

``generate_people(out_dir, people, seed)`` writes one flat table of person records, the kind of file
Splink and Zingg are benchmarked with, in which every record is labelled with the true person it
belongs to. Output layout (all under ``out_dir``)::

    people.parquet          unique_id, first_name, last_name, birth_date (yyyy-mm-dd), city, postcode,
                            email, phone: raw values as a form or an export would hold them, null when missing
    truth/records.parquet   source ("people"), record_key (= unique_id), person_id: the layout of the CRM
                            generator's truth, so `resolver evaluate --truth OUT/truth` scores a run
    resolver.yaml           a records source over people.parquet (email and phone as guarded identifiers)
                            and a probabilistic ``matching:`` section with Splink-tutorial blocking rules
    manifest.json           parameters, record counts, records-per-person histogram, null and noise counts

Records per person: every person has one record plus duplicates: 70% have 1 record, 20% have 2, 7%
have 3 and 3% have 4 (RECORDS_PER_PERSON; mean 1.43 records per person). The first record of a person
carries CRM-level noise (resolver/synth/people.py CRM_NAMES), the duplicates the heavier
DUPLICATE_NAMES noise (more typos, nicknames, titles, case and spaces). Records are shuffled within
each chunk, and unique_id is an opaque bijection of (person id, record ordinal): it tells nothing
about the person.

Noise, per record: names as above (typos, nicknames, ASCII folding of accents, titles, case, stray
spaces); emails written the ways people write them (case, gmail dots, +tags, googlemail.com, spaces)
and, on 30% of duplicates, the person's older address (alt_local / alt_domain); phones in twelve US
and UK formats, and in households that share a home phone that phone on half the records; on 4% of
duplicates the person has moved (another city and postcode); 3% of birth dates carry a typo (day and
month swapped where the day is at most 12, else one of year, month or day one off). Each column is
missing (null) on its own share of records (NULL_RATES: 4% of first names up to 15% of phones).

People: households of 2-4 people (about 8% of people) share a surname, an address and sometimes a
home phone, as in the CRM generator; 3% of households live in London. Names: the constant tables of
resolver/synth/tables.py (the head: ~90 first names, ~130 surnames, with accents and nicknames) are
extended by a deterministic tail of syllable-built ASCII names (FIRST_VOCABULARY first names,
LAST_VOCABULARY surnames in all) drawn with Zipf-Mandelbrot weights 1 / (rank + offset) (exponent 1;
the offset keeps the commonest surname near 1% and the commonest first name near 5%, as in census
data): the number of distinct names keeps growing with the population, and name blocks do not grow
in proportion to it.

How it scales: as resolver/synth/people.py. People are generated in chunks of ``chunk_people``
consecutive person ids; chunk ``i`` draws everything from its own generator (``SeedSequence(seed)``
spawn key ``i``), workers write per-chunk part files and the parent appends them in chunk order, so
the output is byte-identical for any ``workers``. Emails, phone numbers and unique ids are bijections
of the global person id, never random draws.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from resolver.synth.columns import (
    count, dates, num, patch, permute, rank_within, run_chunks, take, text, where, write_ipc,
)
from resolver.synth.people import (
    BIRTH_FIRST_DAY, BIRTH_LAST_DAY, CRM_NAMES, DUPLICATE_NAMES, HOUSEHOLD_SHARED_PHONE_RATE, MAX_PEOPLE,
    RECORDS_SCHEMA, UK_RATE, FirstVocab, LastVocab, _ChunkTask, _email_domains, _email_local_parts, _EmailNoise,
    _emails, _first_names, _formatted_phones, _homes, _household_layout, _last_names, _phone_numbers, _Plan,
    _shared_pools,
)
from resolver.synth.tables import (
    CITY_NAMES, FIRST_ASCII, FIRST_GENDER, FIRST_INITIALS, FIRST_LETTERS, FIRST_NAMES, FIRST_NICKNAMES,
    HAS_NICKNAME, LAST, LAST_ASCII, LAST_LETTERS, LAST_NAMES,
)

__all__ = ["generate_people", "RECORDS_PER_PERSON", "MEAN_RECORDS_PER_PERSON", "COLUMNS", "NULL_RATES",
           "first_vocabulary", "last_vocabulary"]

SOURCE = "people"
RECORDS_PER_PERSON = (0.70, 0.20, 0.07, 0.03)  # P(1), P(2), P(3), P(4) records
MEAN_RECORDS_PER_PERSON = sum((k + 1) * p for k, p in enumerate(RECORDS_PER_PERSON))  # 1.43
MAX_RECORDS = len(RECORDS_PER_PERSON)
COLUMNS = ["unique_id", "first_name", "last_name", "birth_date", "city", "postcode", "email", "phone"]
NULL_RATES = {"first_name": 0.04, "last_name": 0.04, "birth_date": 0.10, "city": 0.08, "postcode": 0.10,
              "email": 0.12, "phone": 0.15}
ALT_EMAIL_RATE = 0.30        # of duplicates: the person's older address
HOME_PHONE_RATE = 0.5        # of records of people whose household shares a home phone
MOVED_RATE = 0.04            # of duplicates: another city and postcode
BIRTH_TYPO_RATE = 0.03       # of records
FIRST_VOCABULARY = 5_000     # first names in all (head + generated tail)
LAST_VOCABULARY = 100_000    # surnames in all
FIRST_OFFSET, LAST_OFFSET = 3.0, 10.0   # Zipf-Mandelbrot offsets: weight of rank r is 1 / (r + offset)
NAME_STREAM = 0x5EED_0A3E    # seed of the fixed shuffle of generated names (never the data seed)
UNIQUE_ID_PURPOSE = 7        # permute() purpose of unique ids (people.py uses 1-5)

PLAIN_EMAILS = _EmailNoise(missing=0.0)  # missing emails are nulls here (NULL_RATES), not empty strings
PEOPLE_SCHEMA = pa.schema([(c, pa.string()) for c in COLUMNS])


# ----------------------------------------------------------------------------------------------
# Name vocabularies: the constant tables as head, a generated tail
# ----------------------------------------------------------------------------------------------
_ONSETS = ["B", "Br", "C", "Ch", "D", "Dr", "F", "G", "Gr", "H", "J", "K", "Kr", "L", "M", "N", "P", "Pr",
           "R", "S", "Sh", "St", "T", "Tr", "V", "W", "Z"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
_MIDDLES = ["l", "n", "r", "s", "t", "m", "nd", "rr", "ll", "v", "k", "d"]
_LAST_ENDINGS = ["son", "er", "ley", "ton", "man", "ez", "ski", "ova", "ard", "well", "berg", "ford", "en",
                 "ing", "is", "o", "a", "sen", "ari", "ov"]
_FIRST_ENDINGS = [("a", 1), ("o", 0), ("ie", 1), ("y", 0), ("el", 0), ("an", 0), ("en", 0), ("ia", 1),
                  ("us", 0), ("ina", 1), ("ette", 1), ("is", 0), ("on", 0), ("ra", 1), ("ley", 1)]


def _shuffled(names: list[str], exclude: set[str], size: int, stream: int) -> list[str]:
    """``size`` distinct names not in ``exclude``, in a fixed pseudo-random order."""
    order = np.random.default_rng([NAME_STREAM, stream]).permutation(len(names))
    out, seen = [], set(exclude)
    for i in order:
        name = names[i]
        if name not in seen:
            seen.add(name)
            out.append(name)
            if len(out) == size:
                return out
    raise ValueError("the syllable grammar makes too few names")


@functools.lru_cache(maxsize=1)
def last_vocabulary() -> LastVocab:
    """LAST_NAMES (ranks 0..129, in their table order) then generated ASCII surnames."""
    short = [o + v + m + e for o in _ONSETS for v in _VOWELS for m in _MIDDLES for e in _LAST_ENDINGS]
    long = [o + v + m + w + e for o in _ONSETS for v in _VOWELS for m in _MIDDLES for w in _VOWELS[:5]
            for e in _LAST_ENDINGS]
    tail = _shuffled(short + long, set(LAST_NAMES), LAST_VOCABULARY - len(LAST_NAMES), 1)
    lower = [t.lower() for t in tail]
    return LastVocab(pa.concat_arrays([LAST, text(tail)]), pa.concat_arrays([LAST_ASCII, text(tail)]),
                     pa.concat_arrays([LAST_LETTERS, text(lower)]))


@functools.lru_cache(maxsize=1)
def first_vocabulary() -> FirstVocab:
    """The first names of resolver/synth/tables.py (ranks 0..89) then generated ASCII first names."""
    grammar = [(o + v + m + e, g) for o in _ONSETS for v in _VOWELS for m in _MIDDLES for e, g in _FIRST_ENDINGS]
    gender_of = dict(grammar)
    head = set(FIRST_NAMES.to_pylist())
    tail = _shuffled([name for name, _ in grammar], head, FIRST_VOCABULARY - len(FIRST_NAMES), 2)
    tail_text = text(tail)
    return FirstVocab(
        names=pa.concat_arrays([FIRST_NAMES, tail_text]),
        nicknames=pa.concat_arrays([FIRST_NICKNAMES, text([""] * len(tail))]),
        has_nickname=np.concatenate([HAS_NICKNAME, np.zeros(len(tail), bool)]),
        gender=np.concatenate([FIRST_GENDER, np.array([gender_of[t] for t in tail], np.int64)]),
        ascii=pa.concat_arrays([FIRST_ASCII, tail_text]),
        letters=pa.concat_arrays([FIRST_LETTERS, text(t.lower() for t in tail)]),
        initials=pa.concat_arrays([FIRST_INITIALS, text(t[0].lower() for t in tail)]),
    )


@functools.lru_cache(maxsize=4)
def _zipf_cdf(size: int, offset: float) -> np.ndarray:
    weights = 1.0 / (np.arange(size, dtype=np.float64) + offset)
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def _zipf(rng: np.random.Generator, size: int, offset: float, n: int) -> np.ndarray:
    """n ranks in [0, size) with P(rank r) proportional to 1 / (r + offset)."""
    return np.minimum(np.searchsorted(_zipf_cdf(size, offset), rng.random(n), side="right"), size - 1)


# ----------------------------------------------------------------------------------------------
# One chunk
# ----------------------------------------------------------------------------------------------
@dataclass
class _Persons:
    pid: np.ndarray
    size: np.ndarray               # household size
    rank: np.ndarray               # rank in the household
    uk: np.ndarray
    first: np.ndarray              # row in first_vocabulary()
    last: np.ndarray               # row in last_vocabulary()
    email_local: pa.Array
    email_domain: pa.Array
    alt_local: pa.Array
    alt_domain: pa.Array
    mobile: np.ndarray
    home: np.ndarray
    shares_home_phone: np.ndarray
    city: np.ndarray               # row in US_CITIES (London when uk)
    postcode: pa.Array
    birth_day: np.ndarray          # days since 1970-01-01


def _draw_persons(rng: np.random.Generator, plan: _Plan, first_pid: int, n: int) -> _Persons:
    """The people of one chunk, drawn the way people.py's _draw_people draws them (households share
    the head's surname, address and home phone), with names from the long-tailed vocabularies."""
    pools = _shared_pools(plan)
    first_vocab, last_vocab = first_vocabulary(), last_vocabulary()
    pid = np.arange(first_pid, first_pid + n, dtype=np.int64)
    head, size, rank = _household_layout(rng, n)
    household = pid[head]
    uk = (rng.random(n) < UK_RATE)[head]
    last = _zipf(rng, LAST_VOCABULARY, LAST_OFFSET, n)[head]
    first = _zipf(rng, FIRST_VOCABULARY, FIRST_OFFSET, n)
    company = rng.integers(0, plan.companies, n)
    modulus = plan.number_modulus
    email_local = _email_local_parts(rng, first, last, permute(pid, modulus, plan.seed, purpose=3),
                                     first_vocab, last_vocab)
    email_domain = _email_domains(rng, company, pools)
    alt_local = _email_local_parts(rng, first, last, permute(pid + plan.people, modulus, plan.seed, purpose=3),
                                   first_vocab, last_vocab)
    alt_domain = _email_domains(rng, company, pools)
    homes = _homes(rng, head, uk)
    mobile = _phone_numbers(rng, plan.seed, pid, uk)
    home = _phone_numbers(rng, plan.seed, plan.people + household, uk)[head]
    shares_home_phone = (size >= 2) & (rng.random(n) < HOUSEHOLD_SHARED_PHONE_RATE)[head]
    birth_day = rng.integers(BIRTH_FIRST_DAY, BIRTH_LAST_DAY + 1, n)
    return _Persons(pid, size, rank, uk, first, last, email_local, email_domain, alt_local, alt_domain, mobile,
                    home, shares_home_phone, homes.city, homes.postal_code, birth_day)


def _city_names(uk: np.ndarray, city: np.ndarray) -> pa.Array:
    return where(uk, "London", take(CITY_NAMES, city))


def _birth_dates(rng: np.random.Generator, days: np.ndarray, stats: dict) -> pa.Array:
    """ISO dates; BIRTH_TYPO_RATE of them with a typo: day and month swapped (day <= 12, day != month),
    else the year, month or day one off (the day kept valid)."""
    n = len(days)
    typo = rng.random(n) < BIRTH_TYPO_RATE
    kind, sign = rng.integers(0, 3, n), np.where(rng.random(n) < 0.5, -1, 1)
    d64 = days.astype("datetime64[D]")
    year = d64.astype("datetime64[Y]").astype(np.int64) + 1970
    month = d64.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (d64 - d64.astype("datetime64[M]")).astype(np.int64) + 1
    swap = typo & (day <= 12) & (day != month)
    off = typo & ~swap
    new_year = np.where(off & (kind == 0), year + sign, year)
    new_month = np.where(swap, day, np.where(off & (kind == 1), (month - 1 + sign) % 12 + 1, month))
    new_day = np.where(swap, month, np.where(off & (kind == 2), np.clip(day + sign, 1, 28), day))
    new_day = np.where(off & (kind == 1), np.minimum(new_day, 28), new_day)  # a valid day in the new month
    months = (new_year - 1970) * 12 + new_month - 1
    out = (months.astype("datetime64[M]").astype("datetime64[D]") + (new_day - 1)).astype(np.int64)
    count(stats, "birth_date_typos", typo.sum())
    return dates(np.where(typo, out, days))


def _records(rng: np.random.Generator, task: _ChunkTask, stats: dict) -> tuple[pa.Table, pa.Table]:
    """The chunk's rows of people.parquet and of truth/records.parquet."""
    plan = task.plan
    p = _draw_persons(rng, plan, task.first_pid, task.size)
    n_records = 1 + rng.choice(MAX_RECORDS, size=task.size, p=RECORDS_PER_PERSON)
    person = np.repeat(np.arange(task.size), n_records)
    ordinal = rank_within(n_records)
    person, ordinal = person[order := rng.permutation(len(person))], ordinal[order]
    duplicate = ordinal > 0
    n = len(person)
    first_vocab, last_vocab = first_vocabulary(), last_vocabulary()

    first = _first_names(rng, p.first[person], CRM_NAMES, stats, first_vocab)
    last = _last_names(rng, p.last[person], CRM_NAMES, stats, last_vocab)
    first = patch(first, duplicate,
                  lambda _: _first_names(rng, p.first[person[duplicate]], DUPLICATE_NAMES, stats, first_vocab))
    last = patch(last, duplicate,
                 lambda _: _last_names(rng, p.last[person[duplicate]], DUPLICATE_NAMES, stats, last_vocab))

    use_alt = duplicate & (rng.random(n) < ALT_EMAIL_RATE)
    local = where(use_alt, take(p.alt_local, person), take(p.email_local, person))
    domain = where(use_alt, take(p.alt_domain, person), take(p.email_domain, person))
    email = _emails(rng, local, domain, PLAIN_EMAILS)

    uk = p.uk[person]
    use_home = p.shares_home_phone[person] & (rng.random(n) < HOME_PHONE_RATE)
    phone = _formatted_phones(rng, np.where(use_home, p.home[person], p.mobile[person]), uk)

    moved = duplicate & (rng.random(n) < MOVED_RATE)
    city, postcode = _city_names(uk, p.city[person]), take(p.postcode, person)
    if moved.any():
        new_home = _homes(rng, np.arange(int(moved.sum())), uk[moved])
        city = patch(city, moved, lambda _: _city_names(uk[moved], new_home.city))
        postcode = patch(postcode, moved, lambda _: new_home.postal_code)
    birth = _birth_dates(rng, p.birth_day[person], stats)

    columns = {"first_name": first, "last_name": last, "birth_date": birth, "city": city, "postcode": postcode,
               "email": email, "phone": phone}
    for name, rate in NULL_RATES.items():  # one draw per column, in NULL_RATES order
        missing = rng.random(n) < rate
        columns[name] = where(missing, pa.scalar(None, pa.string()), columns[name])
        count(stats, f"null_{name}", missing.sum())

    space = 10 ** max(6, len(str(MAX_RECORDS * plan.people)))
    key = permute(p.pid[person] * MAX_RECORDS + ordinal, space, plan.seed, purpose=UNIQUE_ID_PURPOSE)
    unique_id = num(key + space)  # one more leading digit: every id has the same width
    table = pa.table({"unique_id": unique_id, **columns}, schema=PEOPLE_SCHEMA)
    truth = pa.table({"source": pa.repeat(pa.scalar(SOURCE, pa.string()), n), "record_key": unique_id,
                      "person_id": pa.array(p.pid[person], pa.int64())}, schema=RECORDS_SCHEMA)

    count(stats, "people", task.size)
    count(stats, "records", n)
    for k in range(1, MAX_RECORDS + 1):
        count(stats, f"people_with_{k}_records", (n_records == k).sum())
    count(stats, "households", ((p.rank == 0) & (p.size >= 2)).sum())
    count(stats, "household_people", (p.size >= 2).sum())
    count(stats, "household_phone_values", use_home.sum())
    count(stats, "uk_people", p.uk.sum())
    count(stats, "alt_emails", use_alt.sum())
    count(stats, "moved", moved.sum())
    return table, truth


def _run_chunk(task: _ChunkTask) -> dict:
    rng = np.random.default_rng(np.random.SeedSequence(task.plan.seed, spawn_key=(task.index,)))
    stats: dict[str, int] = {}
    table, truth = _records(rng, task, stats)
    write_ipc(task.part("people.arrow"), table)
    write_ipc(task.part("records.arrow"), truth)
    return stats


# ----------------------------------------------------------------------------------------------
# Config, manifest, orchestration
# ----------------------------------------------------------------------------------------------
RESOLVER_YAML = """\
# resolver configuration for the data written by `resolver generate --shape people`.
# Paths are relative to this file. Score a run with:
#   resolver run --config resolver.yaml && resolver evaluate --config resolver.yaml --truth truth
run:
  output_dir: out
  default_region: US          # phone numbers without a country code are parsed in this region

sources:
  - name: people
    kind: records
    format: parquet
    path: people.parquet
    key: unique_id
    attributes:
      first_name: first_name
      last_name: last_name
      birth_date: birth_date
      city: city
      postcode: postcode
      email: email
      phone: phone
    identifiers:
      email: email
      phone: phone

identity:
  # Guarded identifiers: a person holds at most `limit` values; a value shared by more than
  # `hub_cap` records stops being evidence; a phone may not join two people with different emails
  # (household members sharing a home phone).
  types:
    email: {normalizer: email, priority: 3, limit: 5, hub_cap: 8, strong: true}
    phone: {normalizer: phone, priority: 5, limit: 5, hub_cap: 8, strong: true, link_limits: {email: 1}}

matching:
  link_type: dedupe_only
  blocking:
    max_block_size: 500
    rules:                    # Splink-tutorial style
      - {name: full_name, keys: [first_name, last_name]}
      - {name: surname_dob, keys: [last_name, birth_date]}
      - {name: email, keys: [email]}
      - {name: phone7, keys: ["last_digits(phone, 7)"]}
      - {name: surname_postcode, keys: [last_name, postcode]}
      - {name: forename_postcode, keys: [first_name, postcode]}
      - {name: name_prefix_city, keys: ["prefix(first_name, 3)", "prefix(last_name, 3)", city]}
  comparisons:
    - {name: first_name, column: first_name, method: jaro_winkler, thresholds: [0.92, 0.80], nicknames: true,
       tf_adjust: true, must_agree: true}
    - {name: last_name, column: last_name, method: jaro_winkler, thresholds: [0.92, 0.80], tf_adjust: true}
    - {name: birth_date, column: birth_date, method: date, years: [1, 10]}
    - {name: email, column: email, method: email}
    - {name: phone, column: phone, method: phone, digits: 7}
    - {name: city, column: city, method: exact, tf_adjust: true}
    - {name: postcode, column: postcode, method: exact}
  thresholds: {auto_merge: 0.85, review: 0.70}
"""


def _manifest(plan: _Plan, stats: dict) -> dict:
    records = stats.get("records", 0)
    return {
        "generator": "resolver.synth.plain", "shape": "people", "people": plan.people, "seed": plan.seed,
        "chunk_people": plan.chunk_people, "chunks": plan.chunks, "records": records,
        "records_per_person": {"documented": dict(zip(range(1, MAX_RECORDS + 1), RECORDS_PER_PERSON)),
                               "people": {k: stats.get(f"people_with_{k}_records", 0)
                                          for k in range(1, MAX_RECORDS + 1)},
                               "mean": round(records / max(plan.people, 1), 4)},
        "vocabulary": {"first_names": FIRST_VOCABULARY, "last_names": LAST_VOCABULARY,
                       "zipf_offsets": {"first_name": FIRST_OFFSET, "last_name": LAST_OFFSET}},
        "nulls": {c: stats.get(f"null_{c}", 0) for c in NULL_RATES},
        "noise": {k: stats.get(k, 0) for k in ("name_typos", "nicknames", "alt_emails", "moved", "birth_date_typos",
                                                "households", "household_people", "household_phone_values",
                                                "uk_people")},
        "files": ["manifest.json", "people.parquet", "resolver.yaml", "truth/records.parquet"],
    }


def generate_people(out_dir: str | Path, people: int, seed: int = 0, *, chunk_people: int = 100_000,
                    workers: int = 2, progress: Callable[[int], None] | None = None) -> dict:
    """Write people.parquet, truth/records.parquet, resolver.yaml and manifest.json to ``out_dir``.

    Output is a pure function of (people, seed, chunk_people): byte-identical for any ``workers``.
    ``progress(n_people_done)`` is called after each chunk. Returns the manifest. With workers > 1
    chunks run in spawned processes, so scripts must call this under ``if __name__ == "__main__":``.
    """
    if people < 1 or chunk_people < 1 or seed < 0:
        raise ValueError("people and chunk_people must be positive, seed non-negative")
    if people > MAX_PEOPLE:
        raise ValueError(f"at most {MAX_PEOPLE:,} people per dataset (got {people:,})")
    out = Path(out_dir)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    plan = _Plan(int(people), int(seed), int(chunk_people), events=False)
    parts_dir = tempfile.mkdtemp(prefix=".parts-", dir=out)
    tasks = [_ChunkTask(plan, i, str(out), parts_dir) for i in range(plan.chunks)]
    try:
        with contextlib.ExitStack() as files:
            writers = {
                "people.arrow": files.enter_context(
                    pq.ParquetWriter(out / "people.parquet", PEOPLE_SCHEMA, compression="zstd")),
                "records.arrow": files.enter_context(
                    pq.ParquetWriter(out / "truth" / "records.parquet", RECORDS_SCHEMA, compression="zstd")),
            }

            def append_parts(task: _ChunkTask) -> None:  # the chunk's parts appended to the files, then removed
                for name, writer in writers.items():
                    with pa.memory_map(str(task.part(name))) as source:
                        writer.write_table(pa.ipc.open_file(source).read_all())
                    task.part(name).unlink()

            totals = run_chunks(tasks, _run_chunk, workers, append_parts, progress)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    (out / "resolver.yaml").write_text(RESOLVER_YAML, encoding="utf-8")
    manifest = _manifest(plan, totals)
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
                                        + b"\n")
    return manifest

