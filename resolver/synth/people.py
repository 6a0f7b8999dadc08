"""Deterministic synthetic CRM + CDP data with ground truth.

``generate(out_dir, people, seed)`` writes a Salesforce + Segment dataset in which every row and every
event is labelled with the true person it belongs to, so that identity resolution can be scored.

Output layout (all under ``out_dir``)::

    resolver.yaml                 copy of resolver/defaults/synthetic.yaml (paths are relative to it)
    manifest.json                 parameters, row/event counts, noise counts, files written
    salesforce/Contact_a.csv      Bulk API 2.0 style: SOQL-case header, every value quoted, LF
    salesforce/Contact_b.csv      old Data Loader style: ALL-CAPS header, every value quoted, CRLF
    salesforce/Lead.csv           spreadsheet style: quoted only where needed, LF
    segment/events-00000.jsonl    Segment Spec messages, one JSON object per line, one file per chunk
    segment/batch-00000.json      one HTTP-API style ``{"batch": [...]}`` file (events not repeated in jsonl)
    truth/records.parquet         source ("sf_contacts"|"sf_leads"), record_key (Id as written), person_id
    truth/events.parquet          source ("segment"|"segment_batch"), message_id, person_id,
                                  anonymous_id, user_id (raw values as written, null when absent)

With ``visitors=True`` (resolver/synth/visitors.py) web-visitor traffic is added: segment/visitors-*.jsonl,
ga4/events_YYYYMMDD.json, tealium/visitors-*.jsonl, adobe/visitors-*.jsonl, truth/visitors.parquet and
truth/visitor_events.parquet; every other file is byte-identical to a run without it, except resolver.yaml
(visitor sources and identity types) and manifest.json (a ``visitors`` section and the new files).

With ``events=False`` the segment/ files are not written, truth/events.parquet is empty and
resolver.yaml has no Segment sources; the Salesforce and records truth files are unchanged.

How it scales: people are generated in chunks of ``chunk_people`` consecutive person ids. Chunk ``i``
draws everything from its own ``numpy.random.Generator`` (``SeedSequence(seed).spawn`` semantics), so a
chunk's bytes depend only on (people, seed, chunk_people, i). Workers write per-chunk part files and the
parent appends them in chunk order, so the output is byte-identical for any ``workers``. Values that
must be unique across chunks (Salesforce ids, emails, phone numbers, user ids) are bijections of the
global person id, never random draws (unique up to ~200M people for US phones and emails, 5M for
London numbers, 50M households for home IPs). Pools shared by all chunks (kiosks, carrier NAT IPs,
companies) are derived from the seed alone.

What makes it hard on purpose: name typos, nicknames, accents and titles; email case, spaces, gmail
dots, +tags and googlemail.com; phones in nine US and three UK formats plus junk values; 15/18-char
Salesforce ids; merged and live duplicate contacts; converted leads; households sharing a surname,
address and home phone; a family tablet used by two members; store kiosks whose single anonymousId and
device id are used by many people; carrier NAT IPs; rotating cookies; junk userIds and zeroed IDFAs.

Every generated string is drawn from the constant tables of resolver/synth/tables.py (checked to need
no JSON escaping), which is what lets the JSON lines be assembled by plain vectorized concatenation.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from resolver.synth import visitors as synth_visitors
from resolver.synth.columns import (
    DAY_MS, DAY_S, by_group, choice, const, count, dates, digit_codes, epoch_s, fixed_width, hex_strings, ips,
    iso_millis, join, message_ids, num, offsets, patch, permute, rank_within, run_chunks, scatter, sf_datetimes, take,
    text, to_numpy, uuids, where, wrap, write_ipc, write_lines,
)
from resolver.synth.tables import (
    ALIAS, AREA_CODES, BOOLEANS, CITY_NAMES, CITY_STATE_NAMES, CITY_STATES, CITY_ZIP3, COMPANY_NOUNS,
    COMPANY_STEMS, COMPANY_SUFFIXES, CONSUMER_COMPANIES, DEVICE_TYPE_WEIGHTS, DEVICE_TYPES, DIGITS2, DIGITS4,
    EMAIL_TAGS, EVENT_TYPES, EXCHANGES, FIRST_ASCII, FIRST_GENDER, FIRST_INITIALS, FIRST_LETTERS, FIRST_NAMES,
    FIRST_NICKNAMES, GENDER_TITLES, HAS_NICKNAME, IDENTIFY, JUNK_EMAILS, JUNK_PHONES, JUNK_USER_IDS, LAST,
    LAST_ASCII, LAST_LETTERS, LAST_NAMES, PAGE, PAGES, POOL_STREAM, PUBLIC_DOMAINS, SITE, STREETS, TRACK,
    TRACK_EVENTS, UK_COUNTRIES, UK_INCODE_LETTERS, UK_OUTCODES, UK_SUFFIXES, UNIT_LABELS, US_CITIES,
    US_COUNTRIES, US_SUFFIXES, USER_AGENTS, ZERO_AD_ID, ascii_letters,
)

__all__ = ["generate", "sf_ids", "CONTACT_COLUMNS", "LEAD_COLUMNS"]


# ----------------------------------------------------------------------------------------------
# Population rates (fractions of people unless stated otherwise)
# ----------------------------------------------------------------------------------------------
CONTACT_RATE = 0.78
LEAD_RATE_WITH_CONTACT = 0.20          # these leads are the ones that can be converted
LEAD_RATE_WITHOUT_CONTACT = 0.50
CONVERSION_RATE = 0.5                  # of leads whose person also has a contact
CONTACT_DUPLICATE_RATE = 0.04          # of contacts
DUPLICATE_MERGED_RATE = 0.6            # of duplicate contacts; the rest stay live
LEAD_DUPLICATE_RATE = 0.02             # of unconverted leads; always merged
RECYCLE_BIN_RATE = 0.01                # plain IsDeleted=true among the other rows
ID18_RATE = 0.7                        # share of ids (and of references) written as 18 chars
ACCOUNT_ID_RATE = 0.9
BIRTHDATE_RATE = 0.65
UK_RATE = 0.03                         # households living in London
HOUSEHOLD_UNIT_RATE = 0.0282           # P(unit is a 2-4 person household) -> ~8% of people
HOUSEHOLD_SHARED_PHONE_RATE = 0.5
UNIT_RATE = 0.12                       # addresses with an apartment/suite line
EVENT_USER_RATE = 0.70
USER_ID_RATE = 0.60                    # of all people; drawn among event users
USER_ID_IS_EMAIL_RATE = 0.10           # of people with a userId
COOKIE_RESET_RATE = 0.05
MAX_PEOPLE = 10_000_000                # phone number spaces (see _london_numbers) hold this many
MEAN_EVENTS = 5.6                      # geometric draw; raised to the cookie count afterwards
KIOSK_USER_RATE = 0.03                 # of logged-in event users
FAMILY_TABLET_RATE = 0.4               # of households whose first two members both log in
ZERO_IDFA_RATE_IOS = 0.30
ZERO_AAID_RATE_ANDROID = 0.05
CELLULAR_RATE = 0.45                   # mobile events seen from a carrier NAT IP
SERVER_SIDE_RATE = 0.03                # logged-in track events sent server-side (no anonymousId)
JUNK_USER_ID_RATE = 0.02               # of logged-out events
JUNK_LEAD_EMAIL_RATE = 0.008
JUNK_PHONE_RATE = 0.012
BATCH_PEOPLE_SHARE = 0.01
BATCH_MAX_EVENTS = 2000
BATCH_MAX_BYTES = 480_000              # Segment's HTTP batch limit is 500 KB
JSON_SLICE = 200_000                   # events per vectorized JSON assembly pass (bounds memory)

CRM_START, CRM_LAST_CREATE, CRM_END = epoch_s("2016-01-01"), epoch_s("2024-10-01"), epoch_s("2025-01-31")
LEAD_START = epoch_s("2015-06-01")
EVENT_START_MS = epoch_s("2024-01-01") * 1000
BIRTH_FIRST_DAY, BIRTH_LAST_DAY = epoch_s("1950-01-01") // DAY_S, epoch_s("2005-12-31") // DAY_S


CONTACT_COLUMNS = [
    "Id", "AccountId", "FirstName", "LastName", "Email", "Phone", "MobilePhone", "MailingStreet",
    "MailingCity", "MailingState", "MailingPostalCode", "MailingCountry", "Birthdate", "IsDeleted",
    "MasterRecordId", "CreatedDate", "LastModifiedDate",
]
LEAD_COLUMNS = [
    "Id", "FirstName", "LastName", "Email", "Phone", "MobilePhone", "Company", "Street", "City", "State",
    "PostalCode", "Country", "IsDeleted", "IsConverted", "ConvertedContactId", "ConvertedDate",
    "MasterRecordId", "CreatedDate", "LastModifiedDate",
]

# Salesforce ids: key prefix + pod "5g" + "0000" + 6 base-62 digits of (object base + record key).
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
SF_POD = "5g0000"
SF_ID_BASES = {"003": 26 * 62**5 + 7 * 62**4, "00Q": 11 * 62**5 + 40 * 62**4, "001": 37 * 62**5}
RECORD_KEY_SLOTS = 4  # record key = person_id * 4 + ordinal, so ids never collide across chunks






# ----------------------------------------------------------------------------------------------
# Salesforce ids
# ----------------------------------------------------------------------------------------------
_BASE62_CODES = np.frombuffer(BASE62.encode(), np.uint8)
_CHECKSUM_CODES = np.frombuffer(CHECKSUM_ALPHABET.encode(), np.uint8)


def _sf_id15_codes(prefix: str, record_keys: np.ndarray) -> np.ndarray:
    """(n, 15) codes of 15-char ids; sequential keys give realistic ids that differ only in letter case."""
    numbers = SF_ID_BASES[prefix] + np.asarray(record_keys, np.int64)
    powers = 62 ** np.arange(5, -1, -1, dtype=np.int64)
    head = np.frombuffer((prefix + SF_POD).encode(), np.uint8)
    return np.hstack([np.broadcast_to(head, (len(numbers), 9)), _BASE62_CODES[(numbers[:, None] // powers) % 62]])


def _sf_checksum_codes(id15: np.ndarray) -> np.ndarray:
    """The 3-char suffix: for each 5-char chunk, bit i is set when char i is an upper-case letter."""
    upper = (id15 >= ord("A")) & (id15 <= ord("Z"))
    bits = (upper.reshape(-1, 3, 5) * (1 << np.arange(5))).sum(axis=2)
    return _CHECKSUM_CODES[bits]


def sf_ids(prefix: str, record_keys: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """15-char and 18-char Salesforce ids for the given record keys."""
    id15 = _sf_id15_codes(prefix, record_keys)
    return fixed_width(id15), fixed_width(np.hstack([id15, _sf_checksum_codes(id15)]))


def _as_written(rng: np.random.Generator, id15: pa.Array, id18: pa.Array) -> pa.Array:
    """APIs return 18-char ids, people paste 15-char ones."""
    return where(rng.random(len(id15)) < ID18_RATE, id18, id15)


# ----------------------------------------------------------------------------------------------
# Plan and pools shared by all chunks
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    people: int
    seed: int
    chunk_people: int
    events: bool = True  # False: Salesforce CSVs + records truth only (no Segment events drawn or written)
    visitors: bool = False  # True: also the web-visitor layer (resolver/synth/visitors.py)
    mean_events: float = MEAN_EVENTS  # own events per user with events (geometric mean, before cookies)

    @property
    def chunks(self) -> int:
        return -(-self.people // self.chunk_people)

    @property
    def kiosks(self) -> int:
        return max(3, self.people // 5000)

    @property
    def nat_ips(self) -> int:
        return max(4, self.people // 50_000)

    @property
    def companies(self) -> int:
        return max(50, self.people // 25)

    @property
    def number_modulus(self) -> int:
        """10**d >= 2 * people: room for two unique numbers per person (primary and alternate email)."""
        return 10 ** max(4, len(str(2 * self.people)))

    @property
    def batch_people(self) -> int:
        return min(self.chunk_people, max(1, int(self.people * BATCH_PEOPLE_SHARE)))


@dataclass
class _Pools:
    kiosk_anon: pa.Array
    kiosk_device: pa.Array
    kiosk_ip: pa.Array
    nat_ip: pa.Array
    company_name: pa.Array
    company_domain: pa.Array


def _shared_pools(plan: _Plan) -> _Pools:
    rng = np.random.default_rng(np.random.SeedSequence(plan.seed, spawn_key=(POOL_STREAM,)))
    k, m = plan.kiosks, plan.nat_ips
    # Shared iPads in stores: upper-case ids as the iOS SDK writes them.
    kiosk_anon, kiosk_device = uuids(rng, k, upper=True), uuids(rng, k, upper=True)
    kiosk_ip = ips(rng.choice([64, 66, 208], k), rng.integers(0, 256, k), rng.integers(0, 256, k),
                    rng.integers(1, 255, k))
    # Carrier-grade NAT egress addresses (T-Mobile / Verizon / AT&T style ranges).
    nat_ip = ips(rng.choice([172, 174, 107], m), rng.choice([56, 58, 77, 205], m), rng.integers(0, 256, m),
                  rng.integers(1, 255, m))
    companies = np.arange(plan.companies)
    return _Pools(kiosk_anon, kiosk_device, kiosk_ip, nat_ip, _company_names(companies), _company_domains(companies))


def _company_parts(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stem, noun and suffix indexes; distinct for the first 40*20*8 companies, varied even for small pools."""
    stems, nouns = len(COMPANY_STEMS), len(COMPANY_NOUNS)
    stem = index % stems
    noun = (index // stems + 3 * stem) % nouns
    suffix = (index + index // (stems * nouns)) % len(COMPANY_SUFFIXES)
    return stem, noun, suffix


def _company_names(index: np.ndarray, with_suffix: bool = True) -> pa.Array:
    stem, noun, suffix = _company_parts(index)
    name = join(take(text(COMPANY_STEMS), stem), " ", take(text(COMPANY_NOUNS), noun))
    if not with_suffix:
        return name
    # "Acme Labs Inc.", "Acme Labs, Inc.", "Acme Labs"
    suffixes = text((s if s.startswith(",") or not s else " " + s) for s in COMPANY_SUFFIXES)
    return join(name, take(suffixes, suffix))


def _company_domains(index: np.ndarray) -> pa.Array:
    stem, noun, _ = _company_parts(index)
    return join(take(text(ascii_letters(s) for s in COMPANY_STEMS), stem),
                 take(text(ascii_letters(s) for s in COMPANY_NOUNS), noun), ".com")


# ----------------------------------------------------------------------------------------------
# People
# ----------------------------------------------------------------------------------------------
@dataclass
class _People:
    pid: np.ndarray
    household: np.ndarray          # global household id (person id of its first member)
    household_size: np.ndarray
    household_rank: np.ndarray
    uk: np.ndarray                 # lives in London
    first: np.ndarray              # row in FIRST_NAMES
    last: np.ndarray               # row in LAST
    company: np.ndarray            # row in the company pool
    email_local: pa.Array
    email_domain: pa.Array
    alt_local: pa.Array            # a second, older address (used by duplicate records)
    alt_domain: pa.Array
    mobile: np.ndarray             # national number: 10 digits (US) or 8 digits after +44 20 (UK)
    home: np.ndarray
    shares_home_phone: np.ndarray
    street_line: pa.Array          # "12 Oak St"
    unit_line: pa.Array            # "Apt 4" or ""
    has_unit: np.ndarray
    city: np.ndarray               # row in US_CITIES (ignored in the UK)
    postal_code: pa.Array
    birth_day: np.ndarray
    home_ip: pa.Array
    has_events: np.ndarray
    has_user_id: np.ndarray
    user_id: pa.Array

    def __len__(self) -> int:
        return len(self.pid)


def _household_layout(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split n consecutive people into units of one person or a 2-4 person household.

    Returns, per person: local index of the household's first member, household size, rank in it.
    """
    sizes = np.where(rng.random(n) < HOUSEHOLD_UNIT_RATE, rng.integers(2, 5, n), 1)
    ends = np.cumsum(sizes)
    units = int(np.searchsorted(ends, n)) + 1
    sizes = sizes[:units].copy()
    sizes[-1] -= ends[units - 1] - n
    return np.repeat(offsets(sizes), sizes), np.repeat(sizes, sizes), rank_within(sizes)


def _phone_numbers(rng: np.random.Generator, seed: int, index: np.ndarray, uk: np.ndarray) -> np.ndarray:
    """Unique national numbers: a bijection of ``index`` onto valid NANP numbers (or London numbers)."""
    space = len(AREA_CODES) * len(EXCHANGES) * 10_000
    s = permute(index, space, seed, purpose=1)
    us = (np.asarray(AREA_CODES)[s // (len(EXCHANGES) * 10_000)] * 10**7
          + np.asarray(EXCHANGES)[(s // 10_000) % len(EXCHANGES)] * 10**4 + s % 10_000)
    return np.where(uk, _london_numbers(rng.random(len(index)), seed, index, uk), us)


def _london_numbers(draw: np.ndarray, seed: int, index: np.ndarray, uk: np.ndarray) -> np.ndarray:
    """Unique London numbers for the `uk` rows: index < 10**7 gets 020 7 or 020 8 (by `draw`) and a
    bijective 7-digit rest; index in [10**7, 2 * 10**7) gets 020 3 and the same rest of its offset
    (020 3 is a London range the first half never uses). Other rows get 0."""
    index = np.asarray(index, dtype=np.int64)
    out = np.zeros(len(index), dtype=np.int64)
    low, high = uk & (index < 10**7), uk & (index >= 10**7)
    out[low] = np.where(draw[low] < 0.5, 7, 8) * 10**7 + permute(index[low], 10**7, seed, purpose=2)
    out[high] = 3 * 10**7 + permute(index[high] - 10**7, 10**7, seed, purpose=2)
    return out


# Local-part patterns: (left part, separator, right part); parts are 0 first name, 1 last name, 2 initial, 3 nothing.
# first.last, firstlast, flast, first_last, last.first, first
_EMAIL_LEFT, _EMAIL_RIGHT = np.array([0, 0, 2, 0, 1, 0]), np.array([1, 1, 1, 1, 0, 3])
_EMAIL_SEPARATORS = text([".", "", "", "_", ".", ""])
_EMAIL_PATTERN_WEIGHTS = [0.3, 0.2, 0.2, 0.1, 0.1, 0.1]


@dataclass(frozen=True)
class FirstVocab:
    """A first-name vocabulary: row k of each table is name k (formal, nickname or "", has one, gender
    0/1, ASCII-folded, lower-case ASCII letters, initial)."""
    names: pa.Array
    nicknames: pa.Array
    has_nickname: np.ndarray
    gender: np.ndarray
    ascii: pa.Array
    letters: pa.Array
    initials: pa.Array


@dataclass(frozen=True)
class LastVocab:
    """A surname vocabulary: row k of each table is surname k (as written, ASCII-folded, letters)."""
    names: pa.Array
    ascii: pa.Array
    letters: pa.Array


CRM_FIRST = FirstVocab(FIRST_NAMES, FIRST_NICKNAMES, HAS_NICKNAME, FIRST_GENDER, FIRST_ASCII, FIRST_LETTERS,
                       FIRST_INITIALS)
CRM_LAST = LastVocab(LAST, LAST_ASCII, LAST_LETTERS)


def _email_local_parts(rng: np.random.Generator, first: np.ndarray, last: np.ndarray, number: np.ndarray,
                       first_vocab: FirstVocab = CRM_FIRST, last_vocab: LastVocab = CRM_LAST) -> pa.Array:
    """jane.oneil4821, janeoneil4821, joneil4821, ...; the number (a bijection of the person id) keeps them unique."""
    parts = [take(first_vocab.letters, first), take(last_vocab.letters, last), take(first_vocab.initials, first),
             const("", len(first))]
    pattern = rng.choice(len(_EMAIL_SEPARATORS), size=len(first), p=_EMAIL_PATTERN_WEIGHTS)
    left = pc.choose(pa.array(_EMAIL_LEFT[pattern]), *parts)
    right = pc.choose(pa.array(_EMAIL_RIGHT[pattern]), *parts)
    return join(left, take(_EMAIL_SEPARATORS, pattern), right, num(number))


def _email_domains(rng: np.random.Generator, company: np.ndarray, pools: _Pools) -> pa.Array:
    names, weights = PUBLIC_DOMAINS
    n = len(company)
    corporate = rng.random(n) >= sum(weights)
    return where(corporate, take(pools.company_domain, company), choice(rng, text(names), n, weights))


@dataclass
class _Homes:
    """Household-level address parts (every member of a household gets the same)."""
    street_line: pa.Array
    unit_line: pa.Array
    has_unit: np.ndarray
    city: np.ndarray
    postal_code: pa.Array


def _homes(rng: np.random.Generator, head: np.ndarray, uk: np.ndarray) -> _Homes:
    """Street, optional apartment line, city and postal code, drawn for each household's first member."""
    n = len(head)

    def draw(low: int, high: int) -> np.ndarray:
        return rng.integers(low, high, n)[head]

    street_no = np.where(rng.random(n) < 0.6, rng.integers(1, 1000, n), rng.integers(1000, 20_000, n))[head]
    suffix = where(uk, take(text(UK_SUFFIXES), draw(0, len(UK_SUFFIXES))),
                    take(text(US_SUFFIXES), draw(0, len(US_SUFFIXES))))
    street_line = join(num(street_no), " ", take(text(STREETS), draw(0, len(STREETS))), " ", suffix)
    has_unit = (rng.random(n) < UNIT_RATE)[head]
    unit_line = where(has_unit, join(take(text(UNIT_LABELS), draw(0, len(UNIT_LABELS))), num(draw(1, 40))), "")
    city = draw(0, len(US_CITIES))
    us_zip = join(take(CITY_ZIP3, city), take(DIGITS2, draw(0, 100)))
    letters = text(UK_INCODE_LETTERS)
    uk_postcode = join(take(text(UK_OUTCODES), draw(0, len(UK_OUTCODES))), " ", num(draw(1, 10)),
                        take(letters, draw(0, len(letters))), take(letters, draw(0, len(letters))))
    return _Homes(street_line, unit_line, has_unit, city, where(uk, uk_postcode, us_zip))


def _home_ips(seed: int, household: np.ndarray) -> pa.Array:
    """One residential IP per household (a bijection, so households never collide): 73/98/24.x.x.1-254."""
    code = permute(household, 3 * 2**16 * 254, seed, purpose=5)
    network, host = np.divmod(code, 254)
    return ips(np.array([73, 98, 24])[network >> 16], (network >> 8) & 255, network & 255, host + 1)


def _user_ids(rng: np.random.Generator, plan: _Plan, pid: np.ndarray, email_local: pa.Array,
              email_domain: pa.Array) -> pa.Array:
    """u_<digits> for most; the email address itself for some sites."""
    number = permute(pid, plan.number_modulus * 10, plan.seed, purpose=4)
    return where(rng.random(len(pid)) < USER_ID_IS_EMAIL_RATE, join(email_local, "@", email_domain),
                  join("u_", num(number)))


def _draw_people(rng: np.random.Generator, plan: _Plan, pools: _Pools, first_pid: int, n: int) -> _People:
    pid = np.arange(first_pid, first_pid + n, dtype=np.int64)
    head, size, rank = _household_layout(rng, n)  # household members share head's draws
    household = pid[head]
    uk = (rng.random(n) < UK_RATE)[head]
    last = rng.integers(0, len(LAST_NAMES), n)[head]
    first = rng.integers(0, len(FIRST_NAMES), n)
    company = rng.integers(0, plan.companies, n)

    modulus = plan.number_modulus
    email_local = _email_local_parts(rng, first, last, permute(pid, modulus, plan.seed, purpose=3))
    email_domain = _email_domains(rng, company, pools)
    alt_local = _email_local_parts(rng, first, last, permute(pid + plan.people, modulus, plan.seed, purpose=3))
    alt_domain = _email_domains(rng, company, pools)
    homes = _homes(rng, head, uk)

    mobile = _phone_numbers(rng, plan.seed, pid, uk)
    home = _phone_numbers(rng, plan.seed, plan.people + household, uk)[head]
    shares_home_phone = (size >= 2) & (rng.random(n) < HOUSEHOLD_SHARED_PHONE_RATE)[head]

    has_events = rng.random(n) < EVENT_USER_RATE
    has_user_id = has_events & (rng.random(n) < USER_ID_RATE / EVENT_USER_RATE)
    user_id = _user_ids(rng, plan, pid, email_local, email_domain)
    birth_day = rng.integers(BIRTH_FIRST_DAY, BIRTH_LAST_DAY + 1, n)
    return _People(pid, household, size, rank, uk, first, last, company, email_local, email_domain, alt_local,
                   alt_domain, mobile, home, shares_home_phone, homes.street_line, homes.unit_line, homes.has_unit,
                   homes.city, homes.postal_code, birth_day, _home_ips(plan.seed, household), has_events,
                   has_user_id, user_id)


# ----------------------------------------------------------------------------------------------
# Noise on names, emails, phones, addresses
# ----------------------------------------------------------------------------------------------
_KEYBOARD = "qwertyuiopasdfghjklzxcvbnm"


def _typo(text: str, op: int, where: float, letter: str) -> str:
    """One keyboard slip: swap two neighbours, drop, replace or double a letter."""
    if len(text) < 3:
        return text
    i = int(where * (len(text) - 1))
    if op == 0:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if op == 1:
        return text[:i] + text[i + 1:]
    if op == 2:
        return text[:i] + (letter.upper() if text[i].isupper() else letter) + text[i + 1:]
    return text[:i] + text[i] + text[i:]


def _with_typos(rng: np.random.Generator, values: pa.Array) -> pa.Array:
    n = len(values)
    ops, where, letters = rng.integers(0, 4, n), rng.random(n), rng.integers(0, 26, n)
    return text(_typo(v, int(o), float(w), _KEYBOARD[int(k)])
                 for v, o, w, k in zip(values.to_pylist(), ops, where, letters))


def _with_case_noise(rng: np.random.Generator, values: pa.Array) -> pa.Array:
    return where(rng.random(len(values)) < 0.6, pc.utf8_upper(values), pc.utf8_lower(values))


_SPACE_BEFORE, _SPACE_AFTER = text([" ", "", ""]), text(["", " ", "  "])


def _with_stray_spaces(rng: np.random.Generator, values: pa.Array) -> pa.Array:
    kind = rng.integers(0, 3, len(values))
    return join(take(_SPACE_BEFORE, kind), values, take(_SPACE_AFTER, kind))


@dataclass(frozen=True)
class _NameNoise:
    nickname: float = 0.10
    ascii_fold: float = 0.25   # of names with accents: "José" -> "Jose"
    typo: float = 0.03
    case: float = 0.03
    spaces: float = 0.02
    title: float = 0.02


CRM_NAMES = _NameNoise()
DUPLICATE_NAMES = _NameNoise(nickname=0.25, typo=0.35, case=0.05, spaces=0.05, title=0.05)
TRAIT_NAMES = _NameNoise(nickname=0.15, typo=0.01, case=0.01, spaces=0.0, title=0.0)


def _noisy(rng: np.random.Generator, values: pa.Array, noise: _NameNoise, stats: dict) -> pa.Array:
    """Typos, UPPER/lower case and stray spaces, each on its own random share of values."""
    n = len(values)
    typo = rng.random(n) < noise.typo
    values = patch(values, typo, lambda v: _with_typos(rng, v))
    values = patch(values, rng.random(n) < noise.case, lambda v: _with_case_noise(rng, v))
    values = patch(values, rng.random(n) < noise.spaces, lambda v: _with_stray_spaces(rng, v))
    count(stats, "name_typos", typo.sum())
    return values


def _first_names(rng: np.random.Generator, first: np.ndarray, noise: _NameNoise, stats: dict,
                 vocab: FirstVocab = CRM_FIRST) -> pa.Array:
    n = len(first)
    names = take(vocab.names, first)
    nickname = (rng.random(n) < noise.nickname) & vocab.has_nickname[first]
    names = patch(names, nickname, lambda _: take(vocab.nicknames, first[nickname]))
    fold = ~nickname & (rng.random(n) < noise.ascii_fold)
    names = patch(names, fold, lambda _: take(vocab.ascii, first[fold]))
    names = _noisy(rng, names, noise, stats)
    title = rng.random(n) < noise.title
    names = patch(names, title, lambda v: join(
        take(GENDER_TITLES, vocab.gender[first[title]] * 3 + rng.integers(0, 3, len(v))), v))
    count(stats, "nicknames", nickname.sum())
    return names


def _last_names(rng: np.random.Generator, last: np.ndarray, noise: _NameNoise, stats: dict,
                vocab: LastVocab = CRM_LAST) -> pa.Array:
    fold = rng.random(len(last)) < noise.ascii_fold
    names = where(fold, take(vocab.ascii, last), take(vocab.names, last))
    return _noisy(rng, names, noise, stats)


@dataclass(frozen=True)
class _EmailNoise:
    missing: float = 0.05
    gmail_dots: float = 0.10
    plus_tag: float = 0.05
    googlemail: float = 0.04
    case: float = 0.10
    spaces: float = 0.03


CRM_EMAILS = _EmailNoise()
TRAIT_EMAILS = _EmailNoise(missing=0.05, gmail_dots=0.05, plus_tag=0.03, googlemail=0.02, case=0.08, spaces=0.02)


def _move_dots(local: str, where: float) -> str:
    """Gmail ignores dots: drop them all, or add one inside the name."""
    if "." in local:
        return local.replace(".", "")
    i = 1 + int(where * max(1, len(local) - 2))
    return local[:i] + "." + local[i:]


def _emails(rng: np.random.Generator, local: pa.Array, domain: pa.Array, noise: _EmailNoise) -> pa.Array:
    """The same mailbox written the ways people and forms write it."""
    n = len(local)
    gmail = to_numpy(pc.equal(domain, "gmail.com"))
    dots = gmail & (rng.random(n) < noise.gmail_dots)
    where = rng.random(n)[dots]
    local = patch(local, dots, lambda v: text(_move_dots(s, float(w)) for s, w in zip(v.to_pylist(), where)))
    tag = ~to_numpy(pc.equal(domain, "yahoo.com")) & (rng.random(n) < noise.plus_tag)
    local = patch(local, tag, lambda v: join(v, "+", choice(rng, text(EMAIL_TAGS), len(v))))
    domain = patch(domain, gmail & (rng.random(n) < noise.googlemail), lambda v: const("googlemail.com", len(v)))
    case = rng.random(n) < noise.case
    local, domain = patch(local, case, pc.utf8_capitalize), patch(domain, case, pc.utf8_capitalize)
    email = patch(join(local, "@", domain), case & (rng.random(n) < 0.3), pc.utf8_upper)
    email = patch(email, rng.random(n) < noise.spaces, lambda v: _with_stray_spaces(rng, v))
    return patch(email, rng.random(n) < noise.missing, lambda v: const("", len(v)))


_US_PHONE_TEMPLATES = [("(###) ###-####", 0.25), ("###-###-####", 0.15), ("###.###.####", 0.10),
                       ("+1 ###-###-####", 0.12), ("001 ### ### ####", 0.03), ("##########", 0.12),
                       ("+1##########", 0.13), ("1-###-###-####", 0.05), ("+1 (###) ###-####", 0.05)]
_UK_PHONE_TEMPLATES = [("+44 20 #### ####", 0.7), ("+4420########", 0.2), ("0044 20 #### ####", 0.1)]


def _render(template: str, digits: np.ndarray) -> pa.Array:
    """Fill the # slots of a template with the digits of each row."""
    codes = np.tile(np.frombuffer(template.encode(), np.uint8), (len(digits), 1))
    codes[:, [i for i, ch in enumerate(template) if ch == "#"]] = digits
    return fixed_width(codes)


def _formatted_phones(rng: np.random.Generator, number: np.ndarray, uk: np.ndarray) -> pa.Array:
    """Each record writes a number in its own style: (415) 555-0134, 415.555.0134, +1 ..., 001 ..., +44 20 ..."""
    n = len(number)
    us_style = rng.choice(len(_US_PHONE_TEMPLATES), size=n, p=[w for _, w in _US_PHONE_TEMPLATES])
    uk_style = rng.choice(len(_UK_PHONE_TEMPLATES), size=n, p=[w for _, w in _UK_PHONE_TEMPLATES])
    style = np.where(uk, len(_US_PHONE_TEMPLATES) + uk_style, us_style)
    rendered = []
    for k, (template, _) in enumerate(_US_PHONE_TEMPLATES + _UK_PHONE_TEMPLATES):
        rows = style == k
        rendered.append(_render(template, digit_codes(number[rows], template.count("#"))))
    return by_group(style, rendered)


def _crm_phones(rng: np.random.Generator, p: _People, rows: np.ndarray, stats: dict) -> tuple[pa.Array, pa.Array]:
    """Phone: the shared home phone for households that share one, else usually the mobile; MobilePhone: the mobile."""
    n = len(rows)
    use_home = p.shares_home_phone[rows] & (rng.random(n) < 0.9)
    phone = _formatted_phones(rng, np.where(use_home, p.home[rows], p.mobile[rows]), p.uk[rows])
    phone = patch(phone, ~use_home & (rng.random(n) < 0.25), lambda v: const("", len(v)))
    junk = rng.random(n) < JUNK_PHONE_RATE
    phone = patch(phone, junk, lambda v: choice(rng, text(JUNK_PHONES), len(v)))
    mobile = _formatted_phones(rng, p.mobile[rows], p.uk[rows])
    mobile = patch(mobile, rng.random(n) < 0.5, lambda v: const("", len(v)))
    count(stats, "junk_phones", junk.sum())
    count(stats, "household_phone_values", use_home.sum())
    return phone, mobile


@dataclass
class _Address:
    street: pa.Array
    city: pa.Array
    state: pa.Array
    postal_code: pa.Array
    country: pa.Array


def _addresses(rng: np.random.Generator, p: _People, rows: np.ndarray, stats: dict) -> _Address:
    """Household address; the apartment line goes on a new line (multi-line textarea), the same line, or nowhere."""
    n = len(rows)
    uk, city = p.uk[rows], p.city[rows]
    street, unit = take(p.street_line, rows), take(p.unit_line, rows)
    layout = rng.choice(3, size=n, p=[0.45, 0.35, 0.20])
    multiline = p.has_unit[rows] & (layout == 0)
    same_line = p.has_unit[rows] & (layout == 1)
    street = where(multiline, join(street, "\n", unit), where(same_line, join(street, ", ", unit), street))
    us_state = where(rng.random(n) < 0.85, take(CITY_STATES, city), take(CITY_STATE_NAMES, city))
    state = where(uk, where(rng.random(n) < 0.3, "Greater London", ""), us_state)
    zip4 = ~uk & (rng.random(n) < 0.05)
    postal = patch(take(p.postal_code, rows), zip4,
                    lambda v: join(v, "-", take(DIGITS4, rng.integers(0, 10_000, len(v)))))
    country = where(uk, choice(rng, text(UK_COUNTRIES[0]), n, UK_COUNTRIES[1]),
                     choice(rng, text(US_COUNTRIES[0]), n, US_COUNTRIES[1]))
    count(stats, "multiline_streets", multiline.sum())
    return _Address(street, where(uk, "London", take(CITY_NAMES, city)), state, postal, country)


# ----------------------------------------------------------------------------------------------
# Salesforce records
# ----------------------------------------------------------------------------------------------
@dataclass
class _CrmPlan:
    """Which person has which Salesforce rows."""
    has_contact: np.ndarray
    has_lead: np.ndarray
    converted: np.ndarray
    contact_duplicate: np.ndarray
    duplicate_merged: np.ndarray
    lead_duplicate: np.ndarray
    contact_created: np.ndarray    # seconds; meaningful where has_contact


def _crm_plan(rng: np.random.Generator, n: int) -> _CrmPlan:
    has_contact = rng.random(n) < CONTACT_RATE
    has_lead = rng.random(n) < np.where(has_contact, LEAD_RATE_WITH_CONTACT, LEAD_RATE_WITHOUT_CONTACT)
    converted = has_contact & has_lead & (rng.random(n) < CONVERSION_RATE)
    contact_duplicate = has_contact & (rng.random(n) < CONTACT_DUPLICATE_RATE)
    duplicate_merged = contact_duplicate & (rng.random(n) < DUPLICATE_MERGED_RATE)
    lead_duplicate = has_lead & ~converted & (rng.random(n) < LEAD_DUPLICATE_RATE)
    contact_created = rng.integers(CRM_START, CRM_LAST_CREATE, n)
    return _CrmPlan(has_contact, has_lead, converted, contact_duplicate, duplicate_merged, lead_duplicate,
                    contact_created)


@dataclass
class _Rows:
    """The rows of one object: local person index and ordinal (0 primary, 1 duplicate), primaries first."""
    person: np.ndarray
    duplicate: np.ndarray

    @staticmethod
    def of(primary: np.ndarray, duplicate: np.ndarray) -> _Rows:
        first, second = np.flatnonzero(primary), np.flatnonzero(duplicate)
        return _Rows(np.concatenate([first, second]), np.arange(len(first) + len(second)) >= len(first))

    def __len__(self) -> int:
        return len(self.person)


@dataclass
class _Ids:
    """Both forms of each row's id, and the primary row of each person (-1 if none) for references."""
    id15: pa.Array
    id18: pa.Array
    primary_row: np.ndarray

    @staticmethod
    def of(prefix: str, rows: _Rows, p: _People) -> _Ids:
        id15, id18 = sf_ids(prefix, p.pid[rows.person] * RECORD_KEY_SLOTS + rows.duplicate)
        primary_row = np.full(len(p), -1)
        primary_row[rows.person[~rows.duplicate]] = np.flatnonzero(~rows.duplicate)
        return _Ids(id15, id18, primary_row)

    def references(self, rng: np.random.Generator, people: np.ndarray, mask: np.ndarray) -> pa.Array:
        """A reference column: the primary id of each person where ``mask``, "" elsewhere; 15 or 18 chars."""
        rows = np.where(mask, self.primary_row[people], -1)
        return pc.fill_null(_as_written(rng, take(self.id15, rows), take(self.id18, rows)), "")


@dataclass
class _Table:
    """Columns of one output file part, plus the true person of each row."""
    columns: dict[str, pa.Array]
    person: np.ndarray

    def take(self, mask: np.ndarray) -> _Table:
        arrow_mask = pa.array(mask)
        return _Table({k: v.filter(arrow_mask) for k, v in self.columns.items()}, self.person[mask])


def _person_fields(rng: np.random.Generator, p: _People, rows: _Rows, stats: dict) -> dict[str, pa.Array]:
    """Name, email and phones of each row; duplicates get more typos and often another email address."""
    person, duplicate = rows.person, rows.duplicate
    first = _first_names(rng, p.first[person], CRM_NAMES, stats)
    last = _last_names(rng, p.last[person], CRM_NAMES, stats)
    first = patch(first, duplicate, lambda _: _first_names(rng, p.first[person[duplicate]], DUPLICATE_NAMES, stats))
    last = patch(last, duplicate, lambda _: _last_names(rng, p.last[person[duplicate]], DUPLICATE_NAMES, stats))
    use_alt = duplicate & (rng.random(len(rows)) < 0.5)
    local = where(use_alt, take(p.alt_local, person), take(p.email_local, person))
    domain = where(use_alt, take(p.alt_domain, person), take(p.email_domain, person))
    phone, mobile = _crm_phones(rng, p, person, stats)
    return {"first": first, "last": last, "email": _emails(rng, local, domain, CRM_EMAILS), "phone": phone,
            "mobile": mobile}


def _deleted(rng: np.random.Generator, merged_loser: np.ndarray, stats: dict, key: str) -> pa.Array:
    """Merge losers, plus a few rows sitting in the recycle bin."""
    deleted = merged_loser | (rng.random(len(merged_loser)) < RECYCLE_BIN_RATE)
    count(stats, key, deleted.sum())
    return take(BOOLEANS, deleted.astype(np.int64))


def _modified_after(rng: np.random.Generator, created: np.ndarray) -> np.ndarray:
    return created + (rng.random(len(created)) * (CRM_END - created)).astype(np.int64)


def _contacts(rng: np.random.Generator, p: _People, plan: _CrmPlan, stats: dict) -> tuple[_Table, _Ids]:
    """Contact rows, and their ids for the leads that reference them."""
    rows = _Rows.of(plan.has_contact, plan.contact_duplicate)
    person, duplicate, n = rows.person, rows.duplicate, len(rows)
    ids = _Ids.of("003", rows, p)
    merged_loser = duplicate & plan.duplicate_merged[person]
    created = plan.contact_created[person].copy()
    later = np.minimum(created + rng.integers(30 * DAY_S, 700 * DAY_S, n), CRM_END - DAY_S)
    created = np.where(duplicate, later, created)
    _, account18 = sf_ids("001", p.company[person])
    fields = _person_fields(rng, p, rows, stats)
    address = _addresses(rng, p, person, stats)
    columns = {
        "Id": _as_written(rng, ids.id15, ids.id18),
        "AccountId": where(rng.random(n) < ACCOUNT_ID_RATE, account18, ""),
        "FirstName": fields["first"], "LastName": fields["last"], "Email": fields["email"],
        "Phone": fields["phone"], "MobilePhone": fields["mobile"], "MailingStreet": address.street,
        "MailingCity": address.city, "MailingState": address.state, "MailingPostalCode": address.postal_code,
        "MailingCountry": address.country,
        "Birthdate": where(rng.random(n) < BIRTHDATE_RATE, dates(p.birth_day[person]), ""),
        "IsDeleted": _deleted(rng, merged_loser, stats, "deleted_contacts"),
        "MasterRecordId": ids.references(rng, person, merged_loser),
        "CreatedDate": sf_datetimes(created), "LastModifiedDate": sf_datetimes(_modified_after(rng, created)),
    }
    count(stats, "merged_contacts", merged_loser.sum())
    count(stats, "live_duplicate_contacts", (duplicate & ~merged_loser).sum())
    _count_id_lengths(stats, columns["Id"], columns["MasterRecordId"])
    return _Table(columns, p.pid[person]), ids


def _lead_companies(rng: np.random.Generator, p: _People, pools: _Pools, person: np.ndarray) -> pa.Array:
    """The employer as typed on a web form: exact, without suffix, shouted, or a consumer placeholder."""
    n = len(person)
    kind = rng.choice(4, size=n, p=[0.70, 0.12, 0.04, 0.14])
    exact = take(pools.company_name, p.company[person])
    consumer = where(rng.random(n) < 0.8, choice(rng, text(CONSUMER_COMPANIES), n), take(LAST, p.last[person]))
    bare = _company_names(p.company[person], with_suffix=False)
    return by_group(kind, [exact.filter(pa.array(kind == 0)), bare.filter(pa.array(kind == 1)),
                            pc.utf8_upper(exact.filter(pa.array(kind == 2))), consumer.filter(pa.array(kind == 3))])


def _leads(rng: np.random.Generator, p: _People, pools: _Pools, plan: _CrmPlan, contact_ids: _Ids,
           stats: dict) -> _Table:
    rows = _Rows.of(plan.has_lead, plan.lead_duplicate)
    person, duplicate, n = rows.person, rows.duplicate, len(rows)
    ids = _Ids.of("00Q", rows, p)
    converted = ~duplicate & plan.converted[person]
    contact_created = plan.contact_created[person]
    # A converted lead existed before the contact it became; conversion day = the contact's creation day.
    created = np.where(converted, contact_created - rng.integers(DAY_S, 180 * DAY_S, n),
                       rng.integers(LEAD_START, CRM_LAST_CREATE, n))
    modified = _modified_after(rng, np.where(converted, contact_created, created))
    fields = _person_fields(rng, p, rows, stats)
    junk = rng.random(n) < JUNK_LEAD_EMAIL_RATE
    email = patch(fields["email"], junk, lambda v: choice(rng, text(JUNK_EMAILS), len(v)))
    address = _addresses(rng, p, person, stats)
    columns = {
        "Id": _as_written(rng, ids.id15, ids.id18), "FirstName": fields["first"], "LastName": fields["last"],
        "Email": email, "Phone": fields["phone"], "MobilePhone": fields["mobile"],
        "Company": _lead_companies(rng, p, pools, person), "Street": address.street, "City": address.city,
        "State": address.state, "PostalCode": address.postal_code, "Country": address.country,
        "IsDeleted": _deleted(rng, duplicate, stats, "deleted_leads"),
        "IsConverted": take(BOOLEANS, converted.astype(np.int64)),
        "ConvertedContactId": contact_ids.references(rng, person, converted),
        "ConvertedDate": where(converted, dates(contact_created // DAY_S), ""),
        "MasterRecordId": ids.references(rng, person, duplicate),  # duplicates were merged into the primary
        "CreatedDate": sf_datetimes(created), "LastModifiedDate": sf_datetimes(modified),
    }
    count(stats, "junk_emails", junk.sum())
    count(stats, "converted_leads", converted.sum())
    count(stats, "merged_leads", duplicate.sum())
    _count_id_lengths(stats, columns["Id"], columns["MasterRecordId"], columns["ConvertedContactId"])
    return _Table(columns, p.pid[person])


def _count_id_lengths(stats: dict, *id_columns: pa.Array) -> None:
    for ids in id_columns:
        length = pc.utf8_length(ids)
        count(stats, "ids_15_char", pc.sum(pc.equal(length, 15)).as_py() or 0)
        count(stats, "ids_18_char", pc.sum(pc.equal(length, 18)).as_py() or 0)


# ----------------------------------------------------------------------------------------------
# Segment events
# ----------------------------------------------------------------------------------------------
# Events are integer rows pointing into per-chunk string tables (cookies, devices, user ids, IPs),
# so sorting and slicing them is cheap; strings are gathered with Arrow only when writing JSON.
@dataclass
class _Events:
    person: np.ndarray     # local person index
    ts: np.ndarray         # epoch milliseconds
    etype: np.ndarray      # IDENTIFY / TRACK / PAGE / ALIAS
    cookie: np.ndarray     # row in the anonymousId table; -1 for server-side calls
    previous: np.ndarray   # row in the anonymousId table (alias previousId); -1 otherwise
    device: np.ndarray     # row in the device table; -1 for server-side calls
    user: np.ndarray       # row in the userId table; -1 when logged out
    ip: np.ndarray         # row in the IP table

    def take(self, index) -> _Events:
        return _Events(**{k: v[index] for k, v in vars(self).items()})

    def __len__(self) -> int:
        return len(self.person)


def _concat_events(parts: list[_Events]) -> _Events:
    return _Events(**{k: np.concatenate([vars(part)[k] for part in parts]) for k in vars(parts[0])})


@dataclass
class _Devices:
    kind: np.ndarray          # 0 web, 1 ios, 2 android
    device_id: pa.Array
    ad_id: pa.Array           # null on web
    user_agent: pa.Array
    snake_traits: np.ndarray  # the app writes first_name/last_name instead of firstName/lastName


_USER_AGENTS = text(ua for kind in sorted(USER_AGENTS) for ua in USER_AGENTS[kind])
_UA_FIRST = np.cumsum([0] + [len(USER_AGENTS[k]) for k in sorted(USER_AGENTS)])[:-1]
_UA_COUNT = np.array([len(USER_AGENTS[k]) for k in sorted(USER_AGENTS)])


def _devices(rng: np.random.Generator, kind: np.ndarray, stats: dict) -> _Devices:
    """IDFV upper-case UUIDs on iOS, 16-hex ANDROID_ID on Android, a UUID on web; ad ids only on mobile."""
    n = len(kind)
    ios, android = kind == 1, kind == 2
    device_id = where(android, hex_strings(rng, n, 8), uuids(rng, n, upper=ios))
    zeroed = (ios & (rng.random(n) < ZERO_IDFA_RATE_IOS)) | (android & (rng.random(n) < ZERO_AAID_RATE_ANDROID))
    ad_id = where(zeroed, ZERO_AD_ID, uuids(rng, n, upper=ios))
    ad_id = where(ios | android, ad_id, pa.scalar(None, pa.string()))
    user_agent = take(_USER_AGENTS, _UA_FIRST[kind] + (rng.random(n) * _UA_COUNT[kind]).astype(np.int64))
    snake = np.where(android, rng.random(n) < 0.8, rng.random(n) < 0.2)
    count(stats, "zero_ad_id_devices", zeroed.sum())
    return _Devices(kind.astype(np.int8), device_id, ad_id, user_agent, snake)


def _kiosk_devices(pools: _Pools) -> _Devices:
    """Shared store iPads: limit-ad-tracking on, so the IDFA is zeroed."""
    k = len(pools.kiosk_device)
    return _Devices(np.ones(k, np.int8), pools.kiosk_device, const(ZERO_AD_ID, k), const(USER_AGENTS[1][2], k),
                    np.zeros(k, bool))


def _concat_devices(parts: list[_Devices]) -> _Devices:
    def concat(values):
        return pa.concat_arrays(values) if isinstance(values[0], pa.Array) else np.concatenate(values)

    return _Devices(**{k: concat([vars(part)[k] for part in parts]) for k in vars(parts[0])})


def _cookie_counts(rng: np.random.Generator, n: int, stats: dict) -> np.ndarray:
    reset = rng.random(n) < COOKIE_RESET_RATE
    count(stats, "cookie_reset_people", reset.sum())
    return np.where(reset, rng.integers(6, 11, n), rng.choice([1, 2, 3, 4], size=n, p=[0.45, 0.3, 0.15, 0.1]))


def _event_times(rng: np.random.Generator, counts: np.ndarray, busy: np.ndarray) -> np.ndarray:
    """Each user's events in time order: a start day, then exponential gaps (hours for cookie-resetters)."""
    owner = np.repeat(np.arange(len(counts)), counts)
    start = EVENT_START_MS + rng.integers(0, 300 * DAY_MS, len(counts))
    mean_gap = np.where(busy, 2 * 3600_000, 36 * 3600_000)[owner]
    elapsed = np.cumsum(rng.exponential(1.0, len(owner)) * mean_gap).astype(np.int64)
    first = offsets(counts)
    return start[owner] + elapsed - elapsed[first][owner]


@dataclass
class _OwnActivity:
    events: _Events
    devices: _Devices
    cookies: pa.Array  # anonymousId of each cookie row


def _own_events(rng: np.random.Generator, p: _People, pools: _Pools, stats: dict,
                mean_events: float = MEAN_EVENTS) -> _OwnActivity:
    """Events on each user's own devices: rotating cookies, a login point, identify on new cookies after it."""
    n, users = len(p), np.flatnonzero(p.has_events)
    nu = len(users)
    cookies = _cookie_counts(rng, nu, stats)
    devices_per_user = np.minimum(rng.choice([1, 2, 3], size=nu, p=[0.6, 0.3, 0.1]), cookies)
    counts = np.maximum(rng.geometric(1 / mean_events, nu), cookies)

    devices = _devices(rng, rng.choice(3, size=int(devices_per_user.sum()), p=DEVICE_TYPE_WEIGHTS), stats)
    # Cookie j of a user lives on device j mod (devices); cookies follow each other in time.
    cookie_owner = np.repeat(np.arange(nu), cookies)
    cookie_device = offsets(devices_per_user)[cookie_owner] + rank_within(cookies) % devices_per_user[cookie_owner]
    cookie_anon = uuids(rng, len(cookie_owner), upper=devices.kind[cookie_device] == 1)

    owner = np.repeat(np.arange(nu), counts)
    m = len(owner)
    rank = rank_within(counts)
    segment = rank * cookies[owner] // counts[owner]
    cookie = offsets(cookies)[owner] + segment
    ts = _event_times(rng, counts, cookies >= 6)

    login_rank = (rng.random(nu) ** 2 * counts).astype(np.int64)
    logged_in = p.has_user_id[users][owner] & (rank >= login_rank[owner])
    new_cookie = np.ones(m, bool)
    new_cookie[1:] = (segment[1:] != segment[:-1]) | (owner[1:] != owner[:-1])
    identify = logged_in & ((rank == login_rank[owner]) | (new_cookie & (rng.random(m) < 0.7)) | (rng.random(m) < 0.02))
    alias = logged_in & ~identify & (segment >= 1) & (rng.random(m) < 0.05)
    etype = np.where(rng.random(m) < 0.55, TRACK, PAGE).astype(np.int8)
    etype[identify], etype[alias] = IDENTIFY, ALIAS

    person = users[owner]
    user = np.where(logged_in, person, -1)
    junk = ~logged_in & (rng.random(m) < JUNK_USER_ID_RATE)
    user[junk] = n + rng.integers(0, len(JUNK_USER_IDS), int(junk.sum()))  # junk rows follow the people
    count(stats, "junk_user_ids", junk.sum())

    device = cookie_device[cookie]
    cellular = (devices.kind[device] != 0) & (rng.random(m) < CELLULAR_RATE)
    ip = np.where(cellular, n + rng.integers(0, len(pools.nat_ip), m), person)  # NAT rows follow home IPs
    count(stats, "nat_ip_events", cellular.sum())

    # Back-end calls (analytics-python) know the userId but no cookie, device or IP. A cookie's first
    # event stays client-side so every cookie (and so every alias previousId) appears in the data.
    server = (etype == TRACK) & logged_in & ~new_cookie & (rng.random(m) < SERVER_SIDE_RATE)
    cookie[server], device[server] = -1, -1
    count(stats, "server_side_events", server.sum())
    events = _Events(person, ts, etype, cookie, np.where(alias, cookie - 1, -1), device, user, ip)
    return _OwnActivity(events, devices, cookie_anon)


def _session_events(rng: np.random.Generator, people: np.ndarray, cookie: np.ndarray, device: np.ndarray,
                    ip: np.ndarray) -> _Events:
    """A short logged-in session per row: identify, then 1-3 track/page events a few minutes apart."""
    counts = rng.integers(2, 5, len(people))
    owner = np.repeat(np.arange(len(people)), counts)
    rank = rank_within(counts)
    start = EVENT_START_MS + rng.integers(0, 330 * DAY_MS, len(people))
    ts = start[owner] + rank * rng.integers(20_000, 600_000, len(owner))
    etype = np.where(rank == 0, IDENTIFY, np.where(rng.random(len(owner)) < 0.55, TRACK, PAGE)).astype(np.int8)
    person = people[owner]
    return _Events(person, ts, etype, cookie[owner], np.full(len(owner), -1), device[owner], person, ip[owner])


def _kiosk_events(rng: np.random.Generator, p: _People, first_cookie: int, first_device: int, first_ip: int,
                  kiosks: int, stats: dict) -> _Events:
    """Store kiosks: one anonymousId and one device id, many people logging in with their own userId."""
    users = np.flatnonzero(p.has_user_id & (rng.random(len(p)) < KIOSK_USER_RATE))
    kiosk = rng.integers(0, kiosks, len(users))
    events = _session_events(rng, users, first_cookie + kiosk, first_device + kiosk, first_ip + kiosk)
    count(stats, "kiosk_users", len(users))
    count(stats, "kiosk_events", len(events))
    return events


def _family_tablets(rng: np.random.Generator, p: _People, first_cookie: int, first_device: int,
                    stats: dict) -> tuple[_Events, _Devices, pa.Array]:
    """A household tablet: one device id, two members each logging in on it with their own app profile."""
    first = np.flatnonzero((p.household_rank == 0) & (p.household_size >= 2))
    first = first[p.has_user_id[first] & p.has_user_id[first + 1]]
    first = first[rng.random(len(first)) < FAMILY_TABLET_RATE]
    n = len(first)
    tablets = _devices(rng, np.where(rng.random(n) < 0.5, 1, 2), stats)
    members = np.concatenate([first, first + 1])
    tablet = np.concatenate([np.arange(n), np.arange(n)])
    anon = uuids(rng, 2 * n, upper=tablets.kind[tablet] == 1)
    events = _session_events(rng, members, first_cookie + np.arange(2 * n), first_device + tablet, members)
    count(stats, "family_tablets", n)
    return events, tablets, anon


@dataclass
class _EventTables:
    """The strings events point into."""
    anon: pa.Array            # own cookies, then kiosk anonymousIds, then tablet profiles
    devices: _Devices         # own devices, then kiosks, then tablets
    user_id: pa.Array         # the chunk's people, then JUNK_USER_IDS
    ip: pa.Array              # the chunk's people (home IP), then the NAT pool, then kiosk IPs


def _draw_events(rng: np.random.Generator, p: _People, pools: _Pools, stats: dict,
                 mean_events: float = MEAN_EVENTS) -> tuple[_Events, _EventTables]:
    own = _own_events(rng, p, pools, stats, mean_events)
    cookies, devices, kiosks = len(own.cookies), len(own.devices.kind), len(pools.kiosk_anon)
    kiosk = _kiosk_events(rng, p, cookies, devices, len(p) + len(pools.nat_ip), kiosks, stats)
    tablet, tablets, tablet_anon = _family_tablets(rng, p, cookies + kiosks, devices + kiosks, stats)
    events = _concat_events([own.events, kiosk, tablet])
    events = events.take(np.argsort(events.ts, kind="stable"))
    tables = _EventTables(
        anon=pa.concat_arrays([own.cookies, pools.kiosk_anon, tablet_anon]),
        devices=_concat_devices([own.devices, _kiosk_devices(pools), tablets]),
        user_id=pa.concat_arrays([p.user_id, text(JUNK_USER_IDS)]),
        ip=pa.concat_arrays([p.home_ip, pools.nat_ip, pools.kiosk_ip]))
    return events, tables


# ---- JSON assembly -----------------------------------------------------------------------------
_EVENT_TYPE_NAMES = text(EVENT_TYPES)
_DEVICE_TYPE_NAMES = text(DEVICE_TYPES)
_TRACK_NAMES = text(name for name, _, _ in TRACK_EVENTS)
_TRACK_KINDS = np.array([kind for _, kind, _ in TRACK_EVENTS])
_TRACK_WEIGHTS = np.array([w for _, _, w in TRACK_EVENTS]) / sum(w for _, _, w in TRACK_EVENTS)
_PAGE_NAMES, _PAGE_PATHS = text(n for n, _ in PAGES), text(u for _, u in PAGES)
_SERVER_CONTEXT = ',"context":{"library":{"name":"analytics-python","version":"2.3.2"}}'


def _prices(rng: np.random.Generator, n: int, low: int, high: int) -> pa.Array:
    return join(num(rng.integers(low, high, n)), ".", take(DIGITS2, rng.integers(0, 100, n)))


def _track_json(rng: np.random.Generator, track: np.ndarray) -> pa.Array:
    """',"event":...,"properties":{...}' for track calls, null for the others."""
    n = int(track.sum())
    which = rng.choice(len(_TRACK_KINDS), size=n, p=_TRACK_WEIGHTS)
    kind = _TRACK_KINDS[which]
    product = join('{"product_id":"sku-', take(DIGITS4, rng.integers(0, 10_000, n)), '","price":',
                    _prices(rng, n, 5, 400), "}")
    order = join('{"order_id":"ord-', hex_strings(rng, n, 5), '","revenue":', _prices(rng, n, 10, 900),
                  ',"currency":"USD"}')
    properties = where(kind == 1, product, where(kind == 2, order, "{}"))
    return scatter(join(',"event":"', take(_TRACK_NAMES, which), '","properties":', properties), track)


def _page_json(rng: np.random.Generator, page: np.ndarray) -> pa.Array:
    which = rng.integers(0, len(PAGES), int(page.sum()))
    path = take(_PAGE_PATHS, which)
    body = join(',"name":"', take(_PAGE_NAMES, which), '","properties":{"url":"', SITE, path,
                 '","path":"', path, '"}')
    return scatter(body, page)


def _traits_json(rng: np.random.Generator, p: _People, person: np.ndarray, snake: np.ndarray, stats: dict) -> pa.Array:
    """identify traits: the person's email (with everyday variants), often names, sometimes a phone."""
    n = len(person)
    email = _emails(rng, take(p.email_local, person), take(p.email_domain, person), TRAIT_EMAILS)
    has_email = to_numpy(pc.not_equal(email, ""))
    names = rng.random(n) < 0.6
    first = _first_names(rng, p.first[person], TRAIT_NAMES, stats)
    last = _last_names(rng, p.last[person], TRAIT_NAMES, stats)
    first_key = where(snake, '"first_name":"', '"firstName":"')
    last_key = where(snake, '"last_name":"', '"lastName":"')
    phone = rng.random(n) < 0.25
    pieces = [where(has_email, join('"email":"', email, '"'), None),
              where(names, join(first_key, first, '",', last_key, last, '"'), None),
              where(phone, join('"phone":"', _formatted_phones(rng, p.mobile[person], p.uk[person]), '"'), None)]
    # Join the rows that have traits only (see _join about all-null rows), then spread back.
    some = has_email | names | phone
    body = pc.binary_join_element_wise(*(piece.filter(pa.array(some)) for piece in pieces), ",", null_handling="skip")
    return join(',"traits":{', scatter(body, some), "}")


def _context_json(rng: np.random.Generator, p: _People, ev: _Events, kind: np.ndarray,
                  tables: _EventTables) -> pa.Array:
    """context.ip / userAgent / device{id,type,advertisingId}; context.traits.email on some logged-in calls."""
    n = len(ev)
    logged_in = (ev.user >= 0) & (ev.user < len(p))
    with_email = logged_in & ((ev.etype == TRACK) | (ev.etype == PAGE)) & (rng.random(n) < 0.12)
    person = ev.person[with_email]
    email = _emails(rng, take(p.email_local, person), take(p.email_domain, person), TRAIT_EMAILS)
    email_json = scatter(where(to_numpy(pc.not_equal(email, "")), email, None), with_email)
    devices = tables.devices
    client = join(',"context":{"ip":"', take(tables.ip, ev.ip),
                   '","userAgent":"', take(devices.user_agent, ev.device),
                   '","device":{"id":"', take(devices.device_id, ev.device),
                   '","type":"', take(_DEVICE_TYPE_NAMES, kind), '"',
                   wrap(',"advertisingId":"', take(devices.ad_id, ev.device), '"'), "}",
                   wrap(',"traits":{"email":"', email_json, '"}'), "}")
    return where(ev.device >= 0, client, _SERVER_CONTEXT)


@dataclass
class _EventSlice:
    """What is written for a run of events: JSON lines and the raw values the truth table records."""
    lines: pa.Array
    message_id: pa.Array
    anonymous_id: pa.Array
    user_id: pa.Array
    person: np.ndarray


def _event_slice(rng: np.random.Generator, p: _People, ev: _Events, tables: _EventTables, stats: dict) -> _EventSlice:
    """One compact JSON object + newline per event."""
    kind = np.where(ev.device >= 0, tables.devices.kind[np.maximum(ev.device, 0)], -1)
    message_id = message_ids(rng, kind)
    anon, user = take(tables.anon, ev.cookie), take(tables.user_id, ev.user)
    # userId: the value when known; an explicit null from analytics.js; absent from the mobile SDKs.
    user_json = pc.coalesce(wrap(',"userId":"', user, '"'), where(kind == 0, ',"userId":null', None))
    identify = ev.etype == IDENTIFY
    snake = tables.devices.snake_traits[np.maximum(ev.device[identify], 0)]
    lines = join('{"messageId":"', message_id, '","type":"', take(_EVENT_TYPE_NAMES, ev.etype),
                  '","timestamp":"', iso_millis(ev.ts), '"', wrap(',"anonymousId":"', anon, '"'), user_json,
                  scatter(_traits_json(rng, p, ev.person[identify], snake, stats), identify),
                  _track_json(rng, ev.etype == TRACK), _page_json(rng, ev.etype == PAGE),
                  wrap(',"previousId":"', take(tables.anon, ev.previous), '"'),
                  _context_json(rng, p, ev, kind, tables), "}\n")
    return _EventSlice(lines, message_id, anon, user, ev.person)


def _batch_mask(person: np.ndarray, line_bytes: np.ndarray, batch_people: int) -> np.ndarray:
    """Events of the first people (in id order) that fit in one Segment batch request."""
    eligible = person < batch_people
    per_person_events = np.bincount(person[eligible], minlength=batch_people)
    per_person_bytes = np.bincount(person[eligible], weights=line_bytes[eligible], minlength=batch_people)
    fits = (np.cumsum(per_person_events) <= BATCH_MAX_EVENTS) & (np.cumsum(per_person_bytes) <= BATCH_MAX_BYTES)
    return eligible & fits[np.minimum(person, batch_people - 1)]


# ----------------------------------------------------------------------------------------------
# Writing parts
# ----------------------------------------------------------------------------------------------
def _csv_minimal(values: pa.Array) -> pa.Array:
    """Quote only values holding a delimiter, quote or line break (what spreadsheets write)."""
    needs = pc.match_substring_regex(values, '[,"\r\n]')
    return pc.if_else(needs, join('"', pc.replace_substring(values, '"', '""'), '"'), values)


def _write_quoted_csv(path: Path, table: _Table, eol: str) -> None:
    options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid", eol=eol)
    pacsv.write_csv(pa.table(table.columns), str(path), write_options=options)


def _write_minimal_csv(path: Path, table: _Table) -> None:
    pieces = []
    for values in table.columns.values():
        pieces += [_csv_minimal(values), ","]
    pieces[-1] = "\n"
    with open(path, "wb") as f:
        write_lines(f, join(*pieces))


RECORDS_SCHEMA = pa.schema([("source", pa.string()), ("record_key", pa.string()), ("person_id", pa.int64())])
EVENTS_SCHEMA = pa.schema([("source", pa.string()), ("message_id", pa.string()), ("person_id", pa.int64()),
                           ("anonymous_id", pa.string()), ("user_id", pa.string())])


def _records_truth(source: str, tables: list[_Table]) -> pa.Table:
    keys = pa.concat_arrays([t.columns["Id"] for t in tables])
    people = np.concatenate([t.person for t in tables])
    return pa.table({"source": const(source, len(keys)), "record_key": keys,
                     "person_id": pa.array(people, pa.int64())}, schema=RECORDS_SCHEMA)


def _events_truth(source: str, part: _EventSlice, p: _People, keep: np.ndarray) -> pa.Table:
    mask = pa.array(keep)
    return pa.table({"source": const(source, int(keep.sum())), "message_id": part.message_id.filter(mask),
                     "person_id": pa.array(p.pid[part.person[keep]]), "anonymous_id": part.anonymous_id.filter(mask),
                     "user_id": part.user_id.filter(mask)}, schema=EVENTS_SCHEMA)


# ----------------------------------------------------------------------------------------------
# One chunk (runs in a worker process)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ChunkTask:
    plan: _Plan
    index: int
    out_dir: str
    parts_dir: str

    @property
    def first_pid(self) -> int:
        return self.index * self.plan.chunk_people

    @property
    def size(self) -> int:
        return min(self.plan.chunk_people, self.plan.people - self.first_pid)

    def part(self, name: str) -> Path:
        return Path(self.parts_dir) / f"{self.index:05d}.{name}"


def _run_chunk(task: _ChunkTask) -> dict:
    """Generate one chunk, write its part files, return its counts."""
    rng = np.random.default_rng(np.random.SeedSequence(task.plan.seed, spawn_key=(task.index,)))
    pools = _shared_pools(task.plan)
    stats: dict[str, int] = {}
    p = _draw_people(rng, task.plan, pools, task.first_pid, task.size)
    _count_people(stats, p)
    _write_salesforce(rng, task, p, pools, stats)
    if task.plan.events:  # events draw after the CRM, so the CRM bytes do not depend on this switch
        events, tables = _draw_events(rng, p, pools, stats, task.plan.mean_events)
        _write_events(rng, task, p, events, tables, stats)
    if task.plan.visitors:  # its own random stream: nothing above depends on this switch
        synth_visitors.run_chunk(task, p, stats)
    return stats


def _count_people(stats: dict, p: _People) -> None:
    count(stats, "people", len(p))
    count(stats, "households", ((p.household_rank == 0) & (p.household_size >= 2)).sum())
    count(stats, "household_people", (p.household_size >= 2).sum())
    count(stats, "households_sharing_phone", (p.shares_home_phone & (p.household_rank == 0)).sum())
    count(stats, "uk_people", p.uk.sum())
    count(stats, "people_with_events", p.has_events.sum())
    count(stats, "people_with_user_id", p.has_user_id.sum())
    count(stats, "anonymous_only_people", (p.has_events & ~p.has_user_id).sum())


def _write_salesforce(rng: np.random.Generator, task: _ChunkTask, p: _People, pools: _Pools, stats: dict) -> None:
    """Contact parts (split at random between the two export files), the Lead part and the records truth part."""
    plan = _crm_plan(rng, len(p))
    contacts, contact_ids = _contacts(rng, p, plan, stats)
    leads = _leads(rng, p, pools, plan, contact_ids, stats)
    in_b = rng.random(len(contacts.person)) < 0.5
    contacts_a, contacts_b = contacts.take(~in_b), contacts.take(in_b)
    _write_quoted_csv(task.part("contact_a.csv"), contacts_a, "\n")
    _write_quoted_csv(task.part("contact_b.csv"), contacts_b, "\r\n")
    _write_minimal_csv(task.part("lead.csv"), leads)
    write_ipc(task.part("records.arrow"), pa.concat_tables([_records_truth("sf_contacts", [contacts_a, contacts_b]),
                                                             _records_truth("sf_leads", [leads])]))
    count(stats, "contacts_a", len(contacts_a.person))
    count(stats, "contacts_b", len(contacts_b.person))
    count(stats, "leads", len(leads.person))
    count(stats, "people_with_contact", plan.has_contact.sum())
    count(stats, "people_with_lead", plan.has_lead.sum())


def _write_events(rng: np.random.Generator, task: _ChunkTask, p: _People, events: _Events, tables: _EventTables,
                  stats: dict) -> None:
    """Write the chunk's JSONL file (and, for chunk 0, the batch file) plus the events truth part."""
    slices = (_event_slice(rng, p, events.take(slice(start, start + JSON_SLICE)), tables, stats)
              for start in range(0, len(events), JSON_SLICE))  # slices bound the memory of JSON assembly
    batch = np.zeros(len(events), bool)
    if task.index == 0:  # the batch takes whole people, so look at all of chunk 0 before writing
        slices = list(slices)
        line_bytes = np.concatenate([pc.binary_length(s.lines).to_numpy() for s in slices] + [np.zeros(0)])
        batch = _batch_mask(events.person, line_bytes, task.plan.batch_people)
    truth, batch_truth, batch_lines = [], [], []
    offset = 0
    with open(Path(task.out_dir) / "segment" / f"events-{task.index:05d}.jsonl", "wb") as jsonl:
        for part in slices:
            in_batch = batch[offset: offset + len(part.person)]
            offset += len(part.person)
            write_lines(jsonl, part.lines.filter(pa.array(~in_batch)))
            truth.append(_events_truth("segment", part, p, ~in_batch))
            if in_batch.any():
                batch_lines += [line.rstrip("\n").encode()
                                for line in part.lines.filter(pa.array(in_batch)).to_pylist()]
                batch_truth.append(_events_truth("segment_batch", part, p, in_batch))
    if task.index == 0:
        with open(Path(task.out_dir) / "segment" / "batch-00000.json", "wb") as f:
            f.write(b'{"batch":[' + b",".join(batch_lines) + b"]}\n")
    parts = truth + batch_truth
    write_ipc(task.part("events.arrow"), pa.concat_tables(parts) if parts else EVENTS_SCHEMA.empty_table())
    for k, name in enumerate(EVENT_TYPES):
        count(stats, f"{name}_events", (events.etype == k).sum())
    count(stats, "events_batch", batch.sum())
    count(stats, "events_jsonl", len(events) - batch.sum())


# ----------------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------------
class _Assembler:
    """Appends each chunk's parts, in chunk order, to the final CSV and parquet files."""

    def __init__(self, out: Path, files: contextlib.ExitStack, visitors: bool = False):
        sf = out / "salesforce"
        self.csv = {part: files.enter_context(open(sf / name, "wb")) for part, name in  # noqa: SIM115
                    (("contact_a.csv", "Contact_a.csv"), ("contact_b.csv", "Contact_b.csv"), ("lead.csv", "Lead.csv"))}
        self.csv["contact_a.csv"].write((",".join(f'"{c}"' for c in CONTACT_COLUMNS) + "\n").encode())
        self.csv["contact_b.csv"].write((",".join(f'"{c.upper()}"' for c in CONTACT_COLUMNS) + "\r\n").encode())
        self.csv["lead.csv"].write((",".join(LEAD_COLUMNS) + "\n").encode())
        self.records = files.enter_context(
            pq.ParquetWriter(out / "truth" / "records.parquet", RECORDS_SCHEMA, compression="zstd"))
        self.events = files.enter_context(
            pq.ParquetWriter(out / "truth" / "events.parquet", EVENTS_SCHEMA, compression="zstd"))
        self.visitors = None
        if visitors:
            self.visitors = synth_visitors.Assembler(out, files)

    def append(self, task: _ChunkTask) -> None:
        for name, f in self.csv.items():
            with open(task.part(name), "rb") as part:
                shutil.copyfileobj(part, f, 1 << 20)
            task.part(name).unlink()
        for name, writer in (("records.arrow", self.records), ("events.arrow", self.events)):
            if not task.part(name).exists():  # no events part when events are not generated
                continue
            with pa.memory_map(str(task.part(name))) as source:
                writer.write_table(pa.ipc.open_file(source).read_all())
            task.part(name).unlink()
        if self.visitors is not None:
            self.visitors.append(task)


def _prepare_out_dir(out: Path, events: bool, visitors: bool = False) -> None:
    """Create the layout and remove files a previous run may have left (a stale events file would be read)."""
    for sub in ("salesforce", "segment", "truth") if events else ("salesforce", "truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for stale in list((out / "segment").glob("events-*.jsonl")) + list((out / "segment").glob("batch-*.json")):
        stale.unlink()
    synth_visitors.remove_stale(out)
    if visitors:
        synth_visitors.prepare(out)


def _files_written(plan: _Plan) -> list[str]:
    files = ["resolver.yaml", "manifest.json", "salesforce/Contact_a.csv", "salesforce/Contact_b.csv",
             "salesforce/Lead.csv", "truth/records.parquet", "truth/events.parquet"]
    if plan.events:
        files += ["segment/batch-00000.json"] + [f"segment/events-{i:05d}.jsonl" for i in range(plan.chunks)]
    return sorted(files)


def _write_config(out: Path, events: bool, visitors: bool = False) -> None:
    """Copy the default config; without events, drop its event sources (their globs would match no files);
    with visitors, add the visitor sources and identity types."""
    with importlib.resources.as_file(importlib.resources.files("resolver") / "defaults" / "synthetic.yaml") as config:
        if events and not visitors:
            shutil.copyfile(config, out / "resolver.yaml")
            return
        text = Path(config).read_bytes().decode("utf-8")
    if not events:
        text = _without_event_sources(text)
    if visitors:
        text = synth_visitors.with_visitor_config(text)
    (out / "resolver.yaml").write_bytes(text.encode("utf-8"))


def _without_event_sources(text: str) -> str:
    """The config text with every ``kind: events`` source removed, comments kept.

    Sources are the ``  - name:`` items of the top-level ``sources:`` block; an item is cut from its
    ``- name:`` line up to the next item or the next top-level key."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    item: list[str] = []
    in_sources = False

    def flush() -> None:
        if not any(line.strip() == "kind: events" for line in item):
            out.extend(item)
        item.clear()

    for line in lines:
        top_level = bool(line.strip()) and not line[0].isspace() and not line.startswith("#")
        if top_level:
            flush()
            in_sources = line.startswith("sources:")
            out.append(line)
        elif in_sources and line.startswith("  - "):
            flush()
            item.append(line)
        elif item:
            item.append(line)
        else:
            out.append(line)
    flush()
    return "".join(out)


def _manifest(plan: _Plan, stats: dict) -> dict:
    contacts = stats.get("contacts_a", 0) + stats.get("contacts_b", 0)
    leads = stats.get("leads", 0)
    events = stats.get("events_jsonl", 0) + stats.get("events_batch", 0)
    noise_keys = ["junk_emails", "junk_phones", "junk_user_ids", "zero_ad_id_devices", "kiosk_users", "kiosk_events",
                  "nat_ip_events", "households", "household_people", "households_sharing_phone",
                  "household_phone_values", "family_tablets", "multiline_streets", "nicknames", "name_typos",
                  "ids_15_char", "ids_18_char", "cookie_reset_people", "server_side_events", "uk_people"]
    noise = {k: stats.get(k, 0) for k in noise_keys}
    noise["kiosks"], noise["nat_ips"] = plan.kiosks, plan.nat_ips
    counts = {k: v for k, v in sorted(stats.items())
              if k not in noise and k != "people" and not k.startswith("visitor_")}
    manifest = {
        "generator": "resolver.synth", "people": plan.people, "seed": plan.seed, "chunk_people": plan.chunk_people,
        "chunks": plan.chunks, "contacts": contacts, "leads": leads, "crm_rows": contacts + leads,
        "events": events, "deleted_rows": stats.get("deleted_contacts", 0) + stats.get("deleted_leads", 0),
        "counts": counts, "noise": noise, "files": _files_written(plan),
    }
    if plan.mean_events != MEAN_EVENTS:  # only when asked for: default manifests stay as they were
        manifest["events_per_person"] = plan.mean_events
    if plan.visitors:
        manifest["visitors"] = synth_visitors.manifest_section(stats, plan.people)
    return manifest


def generate(out_dir: str | Path, people: int, seed: int = 0, *, chunk_people: int = 100_000,
             workers: int = 2, progress: Callable[[int], None] | None = None, events: bool = True,
             visitors: bool = False, events_per_person: float = MEAN_EVENTS) -> dict:
    """Write a synthetic Salesforce + Segment dataset with ground truth to ``out_dir``.

    Output is a pure function of (people, seed, chunk_people): byte-identical for any ``workers``.
    ``events=False`` writes only the Salesforce CSVs and truth/records.parquet (plus an empty
    truth/events.parquet and a resolver.yaml without the Segment sources); the CRM files are
    byte-identical to those written with events, since each chunk draws its events after its CRM rows.
    ``visitors=True`` adds the web-visitor layer (resolver/synth/visitors.py: Segment, GA4, Tealium and
    Adobe visitor events, truth/visitors.parquet, truth/visitor_events.parquet, their config sources);
    it draws from its own random streams, so every file written without it is byte-identical with it
    (except resolver.yaml and manifest.json, which gain the visitor parts).
    ``events_per_person`` sets the mean of each user's own events (more makes an events-heavy
    dataset with the same people and CRM rows).
    ``progress(n_people_done)`` is called after each chunk. Returns the manifest (also in manifest.json).
    With workers > 1 chunks run in spawned processes, so scripts must call this under
    ``if __name__ == "__main__":``.
    """
    if people < 1 or chunk_people < 1 or seed < 0 or events_per_person < 1:
        raise ValueError("people and chunk_people must be positive, seed non-negative, events_per_person >= 1")
    if people > MAX_PEOPLE:  # home phones are numbered people + household: London has 2 * 10**7 of them
        raise ValueError(f"at most {MAX_PEOPLE:,} people per dataset (got {people:,})")
    out = Path(out_dir)
    plan = _Plan(int(people), int(seed), int(chunk_people), bool(events), bool(visitors), float(events_per_person))
    _prepare_out_dir(out, plan.events, plan.visitors)
    parts_dir = tempfile.mkdtemp(prefix=".parts-", dir=out)
    tasks = [_ChunkTask(plan, i, str(out), parts_dir) for i in range(plan.chunks)]
    try:
        with contextlib.ExitStack() as files:
            assembler = _Assembler(out, files, plan.visitors)
            totals = run_chunks(tasks, _run_chunk, workers, assembler.append, progress)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    _write_config(out, plan.events, plan.visitors)
    manifest = _manifest(plan, totals)
    if plan.visitors:
        manifest["files"] = sorted(manifest["files"] + assembler.visitors.files(plan.chunks))
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return manifest
