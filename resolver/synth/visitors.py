"""Opt-in web-visitor layer of the synthetic generator (``generate(..., visitors=True)``,
``resolver generate --visitors``): anonymous website traffic in four CDP shapes, with truth for every
anonymous id, for testing anonymous-visitor stitching (cookies, devices, IPs, pages).

Files (all under ``out_dir``; none of them, and no other byte, changes without the flag)::

    segment/visitors-00000.jsonl   Segment page/track/identify events (analytics.js style), one file per chunk
    ga4/events_YYYYMMDD.json       GA4 BigQuery export rows (newline-delimited JSON), one file per day
    tealium/visitors-00000.jsonl   Tealium event data, one file per chunk
    adobe/visitors-00000.jsonl     Adobe XDM ExperienceEvents, one file per chunk
    truth/visitors.parquet         one row per (source, anonymous id): the true person and how the id behaves
    truth/visitor_events.parquet   one row per visitor event: source, event_key, anonymous_id, person_id, login

Who is in it. A share of the CRM people browse the site (VISITOR_RATE); each household is given one
shape (Segment 40%, GA4 / Tealium / Adobe 20% each, disjoint), so all ids of a person and of their
household are in the same files. Per visiting person (shares below): a primary browser (desktop or
phone) that logs in later (anonymous sessions first, then a login event on the same id) or never
does; a second device that never logs in (the other device class, same home IP, same time of day,
same favourite page categories); cookie resets (a new id on the primary device: same user agent,
screen and home IP, after the primary's sessions, never logs in); a private-window id whose every
session goes through a VPN (datacenter IPs); VPN hops on some sessions of the primary; a work
desktop behind the employer's corporate NAT IP, used in working hours. Households of 2-4 share one
home IP (the CRM generator gives each household one), and some share a tablet whose single id is used
by several members (truth: the member with most events, kind household_tablet, shared). Phones are
on a carrier NAT IP (a few dozen overall, in a few /24 blocks, each shared by thousands of visitors
at 100k people) for CELLULAR_SHARE of their sessions. Strangers are visitors who are nobody in the
CRM and never log in: their own residential IPs, carrier NAT on phones, some at corporate NATs or on
VPNs.

Sessions: 1-6ish per id, days apart (a geometric number of days), at the user's preferred hour
(UTC; work devices 13-21 UTC); events within a session 3 s to a few minutes apart. The login event
(and only it) carries the user identity: Segment identify (userId + traits.email), GA4 ``login``
(user_id), Tealium ``user_login`` (customer_email, customer_id), Adobe ``userAccount.login``
(identityMap CRMID + Email, authenticated). The user id is the person's CRM-side user id
(``u_<digits>`` or an email, as in the Segment events); CRMID in Adobe is that value too.

Determinism: chunk ``i`` draws from ``SeedSequence(seed, spawn_key=(i, 1))`` and the shared IP pools
from ``(POOL_STREAM, 1)``, so the visitor layer never consumes a draw of the existing generator and
is a pure function of (people, seed, chunk_people). Unique ids (GA4 client ids) are bijections of a
global slot number; the others are 122+ random bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from resolver.synth.columns import (
    DAY_MS, DAY_S, by_group, const, count, digit_codes, epoch_s, fixed_width, hex_codes, ips, iso_millis, join,
    message_ids, num, offsets, permute, random_bytes, rank_within, take, text, timestamp_codes, uuids, where,
    wrap, write_ipc, write_lines,
)
from resolver.synth.tables import POOL_STREAM, SITE, US_CITIES

# ----------------------------------------------------------------------------------------------
# Shares (of the people of a chunk unless stated otherwise)
# ----------------------------------------------------------------------------------------------
VISITOR_RATE = 0.5            # CRM people who browse the website
LOGIN_RATE = 0.55             # of visitors: their primary browser logs in later (else it never does)
SECOND_DEVICE_RATE = 0.35     # of visitors: a second device that never logs in
HOME_LOGIN_RATE = 0.25        # of visitors: another device at home that they do log in on (phone or laptop)
COOKIE_RESET_RATE = 0.15      # of visitors: 1-2 new ids on the primary device (never log in)
VPN_WINDOW_RATE = 0.06        # of visitors: a private window whose every session is on a VPN
VPN_HOP_RATE = 0.12           # of visitors: some primary-device sessions through a VPN
VPN_HOP_SHARE = 0.35          # of those persons' primary sessions after the first
WORK_DEVICE_RATE = 0.20       # of visitors: a work desktop behind the employer's NAT IP
WORK_LOGIN_RATE = 0.30        # of work devices: log in later
TABLET_RATE = 0.40            # of households (2-4 people, at least one visitor): a shared tablet
CELLULAR_SHARE = 0.5          # of a phone's sessions after its first: on a carrier NAT IP
STRANGER_RATE = 0.35          # strangers per CRM person
STRANGER_CORPORATE_RATE = 0.12  # of desktop strangers: browse from a corporate NAT
STRANGER_VPN_RATE = 0.05      # of strangers: every session on a VPN
SOURCE_SHARES = [0.4, 0.2, 0.2, 0.2]  # segment, ga4, tealium, adobe (per household / stranger)

SOURCES = ["segment_visitors", "ga4_visitors", "tealium_visitors", "adobe_visitors"]
SEGMENT, GA4, TEALIUM, ADOBE = range(4)
KINDS = ["logs_in_later", "never_logs_in", "second_device", "cookie_reset", "household_tablet", "vpn",
         "work_device", "stranger", "home_device_logs_in"]
PRIMARY_LOGIN, PRIMARY, SECOND, RESET, TABLET, VPN, WORK, STRANGER, HOME_LOGIN = range(len(KINDS))

VISIT_START_S = epoch_s("2024-03-01")
VISIT_START_DAYS = 90         # an id's first session falls in the first 90 days from VISIT_START_S
MAX_EVENTS_PER_SESSION = 12
PAGE, LOGIN, CART = 0, 1, 2

# ----------------------------------------------------------------------------------------------
# Devices, screens, geography, pages
# ----------------------------------------------------------------------------------------------
# (user agent, class 0 desktop / 1 phone / 2 tablet, screen group, OS, OS version, browser, browser version, weight)
DEVICES = [
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
     0, 0, "Windows", "Windows 10", "Chrome", "124.0.0.0", 0.35),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
     0, 0, "Macintosh", "macOS 10.15.7", "Safari", "17.4.1", 0.20),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
     0, 0, "Windows", "Windows 10", "Firefox", "125.0", 0.10),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
     0, 0, "Windows", "Windows 10", "Edge", "124.0.2478.80", 0.12),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
     0, 0, "Macintosh", "macOS 10.15.7", "Chrome", "124.0.0.0", 0.15),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:125.0) Gecko/20100101 Firefox/125.0",
     0, 0, "Macintosh", "macOS 10.15", "Firefox", "125.0", 0.08),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
     1, 1, "iOS", "iOS 17.4.1", "Safari", "17.4.1", 0.30),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
     1, 1, "iOS", "iOS 16.6", "Safari", "16.6", 0.15),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
     1, 2, "Android", "Android 14", "Chrome", "124.0.6367.82", 0.35),
    ("Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.6312.118 Mobile Safari/537.36",
     1, 2, "Android", "Android 13", "Chrome", "123.0.6312.118", 0.20),
    ("Mozilla/5.0 (iPad; CPU OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Mobile/15E148 Safari/604.1",
     2, 3, "iOS", "iPadOS 17.3", "Safari", "17.3", 0.80),
    ("Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Safari/537.36",
     2, 3, "Android", "Android 13", "Chrome", "124.0.6367.82", 0.20),
]
DEVICE_CLASSES = ["desktop", "mobile", "tablet"]
SCREEN_GROUPS = [  # desktop, iPhone, Android phone, tablet
    [(1920, 1080), (1536, 864), (1440, 900), (2560, 1440), (1366, 768)],
    [(390, 844), (393, 852), (430, 932), (375, 667)],
    [(412, 915), (360, 800), (384, 854)],
    [(820, 1180), (810, 1080), (1024, 1366)],
]
# Geography: the CRM's US cities, then London, then datacenter cities. (city, region, country, code, continent)
GEO = ([(c, state, "United States", "US", "Americas") for c, _, state, _ in US_CITIES]
       + [("London", "England", "United Kingdom", "GB", "Europe"),
          ("Ashburn", "Virginia", "United States", "US", "Americas"),
          ("Santa Clara", "California", "United States", "US", "Americas"),
          ("Frankfurt am Main", "Hesse", "Germany", "DE", "Europe"),
          ("Amsterdam", "North Holland", "Netherlands", "NL", "Europe")])
LONDON = len(US_CITIES)
DATACENTER_GEO = np.arange(LONDON + 1, len(GEO))
CATEGORIES = ["running", "hiking", "camping", "climbing", "cycling", "swimming", "yoga", "skiing", "fishing", "kids"]
PRODUCTS_PER_CATEGORY = 40
BLOG_SLUGS = ["gear-guide", "beginners-tips", "best-of-2024", "trail-report", "care-and-repair", "size-guide"]
GENERIC_PAGES = [("/", "Home"), ("/cart", "Cart"), ("/search", "Search"), ("/stores", "Store Locator"),
                 ("/sale", "Sale"), ("/account", "My Account")]
FAVOURITES = 3                # favourite categories per person
HOSTNAME = SITE.split("://", 1)[1]
GA4_STREAM_ID = "4178325941"
TEALIUM_ACCOUNT, TEALIUM_PROFILE = "evergreen", "main"


def _page_catalogue() -> tuple[list[str], list[str], np.ndarray]:
    """Paths, titles, category (-1 generic); products first, then blog posts, generic pages, /login."""
    paths, titles, category = [], [], []
    for c, name in enumerate(CATEGORIES):
        for j in range(PRODUCTS_PER_CATEGORY):
            paths.append(f"/products/{name}/sku-{c}{j:03d}")
            titles.append(f"{name.capitalize()} product {c}{j:03d}")
            category.append(c)
    for c, name in enumerate(CATEGORIES):
        for slug in BLOG_SLUGS:
            paths.append(f"/blog/{name}/{slug}")
            titles.append(f"{name.capitalize()}: {slug.replace('-', ' ')}")
            category.append(c)
    for path, title in GENERIC_PAGES + [("/login", "Sign In")]:
        paths.append(path)
        titles.append(title)
        category.append(-1)
    return paths, titles, np.array(category)


_PATHS, _TITLES, PAGE_CATEGORY = _page_catalogue()
BLOG_FIRST = len(CATEGORIES) * PRODUCTS_PER_CATEGORY
GENERIC_FIRST = BLOG_FIRST + len(CATEGORIES) * len(BLOG_SLUGS)
LOGIN_PAGE = len(_PATHS) - 1
PAGE_PATHS, PAGE_TITLES = text(_PATHS), text(_TITLES)
PAGE_URLS = text(SITE + p for p in _PATHS)
PAGE_SKUS = text(p.rsplit("/", 1)[1] for p in _PATHS)


def _device_table(column: int) -> pa.Array:
    return text(d[column] for d in DEVICES)


UA, DEVICE_OS, DEVICE_OS_VERSION, DEVICE_BROWSER, DEVICE_BROWSER_VERSION = (_device_table(k) for k in (0, 3, 4, 5, 6))
DEVICE_CLASS = np.array([d[1] for d in DEVICES])
DEVICE_SCREEN_GROUP = np.array([d[2] for d in DEVICES])
DEVICE_CLASS_NAMES = text(DEVICE_CLASSES)
_SCREENS = [wh for group in SCREEN_GROUPS for wh in group]
SCREEN_W, SCREEN_H = np.array([w for w, _ in _SCREENS]), np.array([h for _, h in _SCREENS])
SCREEN_TEXT = text(f"{w}x{h}" for w, h in _SCREENS)
SCREEN_FIRST = np.cumsum([0] + [len(g) for g in SCREEN_GROUPS])[:-1]
SCREEN_COUNT = np.array([len(g) for g in SCREEN_GROUPS])
GEO_CITY, GEO_REGION, GEO_COUNTRY, GEO_CODE, GEO_CONTINENT = (text(g[k] for g in GEO) for k in range(5))


def _assert_json_safe() -> None:
    for table in (_PATHS, _TITLES, [d[k] for d in DEVICES for k in (0, 3, 4, 5, 6)], [v for g in GEO for v in g]):
        for value in table:
            assert '"' not in value and "\\" not in value and all(ord(c) >= 32 for c in value), value


_assert_json_safe()


def _pick_device(rng: np.random.Generator, cls: np.ndarray) -> np.ndarray:
    """A device row of the given class (0 desktop, 1 phone, 2 tablet), by the catalogue's weights."""
    out = np.empty(len(cls), np.int64)
    for c in range(3):
        rows = np.flatnonzero(DEVICE_CLASS == c)
        weights = np.array([DEVICES[r][7] for r in rows])
        mask = cls == c
        out[mask] = rows[rng.choice(len(rows), size=int(mask.sum()), p=weights / weights.sum())]
    return out


def _pick_screen(rng: np.random.Generator, device: np.ndarray) -> np.ndarray:
    group = DEVICE_SCREEN_GROUP[device]
    return SCREEN_FIRST[group] + (rng.random(len(device)) * SCREEN_COUNT[group]).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Shared IP pools (derived from the seed alone, the same in every chunk)
# ----------------------------------------------------------------------------------------------
@dataclass
class _IpPools:
    carrier: pa.Array
    carrier_geo: np.ndarray
    corporate: pa.Array
    corporate_geo: np.ndarray
    datacenter: pa.Array
    datacenter_geo: np.ndarray


def carrier_ip_count(people: int) -> int:
    return max(6, min(24, people // 4000))


def corporate_ip_count(people: int) -> int:
    return max(2, people // 2000)


def datacenter_ip_count(people: int) -> int:
    return max(200, people // 50)


def _ip_pools(people: int, seed: int) -> _IpPools:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(POOL_STREAM, 1)))
    k, c, d = carrier_ip_count(people), corporate_ip_count(people), datacenter_ip_count(people)
    # Carrier-grade NAT egress: a few /24 blocks (AT&T 166.x, Verizon 174.2xx style), distinct hosts in each.
    blocks = np.array([[166, 137, 14], [166, 170, 41], [174, 193, 88], [174, 226, 3], [166, 181, 200]])
    block = np.arange(k) % len(blocks)
    host = 10 + np.arange(k) // len(blocks) * 7 + rng.integers(0, 7, k)
    carrier = ips(blocks[block, 0], blocks[block, 1], blocks[block, 2], host)
    carrier_geo = rng.integers(0, len(US_CITIES), len(blocks))[block]  # geo-IP of a block: its hub city
    # Corporate NAT: one egress IP per employer network, in business ranges.
    corporate = ips(rng.choice([12, 63, 199, 50], c), rng.integers(0, 256, c), rng.integers(0, 256, c),
                       rng.integers(1, 255, c))
    corporate_geo = rng.integers(0, len(US_CITIES), c)
    datacenter = ips(rng.choice([45, 104, 138, 185, 193], d), rng.integers(0, 256, d), rng.integers(0, 256, d),
                        rng.integers(1, 255, d))
    datacenter_geo = DATACENTER_GEO[rng.integers(0, len(DATACENTER_GEO), d)]
    return _IpPools(carrier, carrier_geo, corporate, corporate_geo, datacenter, datacenter_geo)


# ----------------------------------------------------------------------------------------------
# Anonymous ids, sessions, events (integer rows pointing into tables, as in resolver.synth.people)
# ----------------------------------------------------------------------------------------------
@dataclass
class _Ids:
    owner: np.ndarray        # local person index of the device's owner (tablet: the household head); -1 strangers
    user: np.ndarray         # row in the users table (persons, then strangers): whose habits drive the sessions
    kind: np.ndarray
    device: np.ndarray       # row in DEVICES
    screen: np.ndarray       # row in the screen table
    logs_in: np.ndarray
    home_ip: np.ndarray      # IP table row of the device's base network; -1 when it has none (VPN window, work)
    source: np.ndarray
    slot: np.ndarray         # global unique number (GA4 client ids)
    sessions: np.ndarray
    start_day: np.ndarray
    cellular: np.ndarray     # share of sessions after the first on a carrier NAT
    vpn: np.ndarray          # share of sessions (after the first unless the id is a VPN window) on a VPN
    corporate: np.ndarray    # corporate-NAT row used by every session in working hours; -1 otherwise
    household: np.ndarray    # tablets: household size (members head .. head+size-1); 0 otherwise
    after: np.ndarray        # row of the id this one follows in time (cookie resets); -1 otherwise. Then
                             # start_day is the gap in days after that id's last session.

    def __len__(self) -> int:
        return len(self.kind)


def _concat_ids(parts: list[_Ids]) -> _Ids:
    return _Ids(**{k: np.concatenate([vars(part)[k] for part in parts]) for k in vars(parts[0])})


@dataclass
class _Chunk:
    """Everything drawn for one chunk."""
    ids: _Ids
    ip: pa.Array              # the chunk's people (home IP), strangers, carrier NAT, corporate NAT, datacenter
    ip_geo: np.ndarray
    user_pid: np.ndarray      # person id of each users row; -1 for strangers
    stats: dict = field(default_factory=dict)


def _geometric(rng: np.random.Generator, p: float, n: int, cap: int) -> np.ndarray:
    return np.minimum(rng.geometric(p, n), cap)


def _draw(rng: np.random.Generator, plan, p, first_pid: int, pools: _IpPools, stats: dict):
    n = len(p)
    head = (p.household - first_pid).astype(np.int64)  # local index of each person's household head
    visitor = rng.random(n) < VISITOR_RATE
    source = rng.choice(4, size=n, p=SOURCE_SHARES)[head]
    person_geo = np.where(p.uk, LONDON, p.city)
    ns = int(n * STRANGER_RATE)
    users = n + ns
    favourites = np.argsort(rng.random((users, len(CATEGORIES))), axis=1)[:, :FAVOURITES]
    hour = (rng.normal(20.0, 2.5, users) % 24.0)
    k_carrier, k_corp = len(pools.carrier), len(pools.corporate)
    carrier_row, corp_row = n + ns, n + ns + k_carrier
    dc_row = corp_row + k_corp
    corp_of_person = p.company % k_corp

    v = np.flatnonzero(visitor)
    nv = len(v)
    primary_class = rng.choice(2, size=nv, p=[0.55, 0.45])
    primary_device = _pick_device(rng, primary_class)
    primary_screen = _pick_screen(rng, primary_device)
    logs_in = rng.random(nv) < LOGIN_RATE
    vpn_hop = rng.random(nv) < VPN_HOP_RATE
    start = rng.integers(0, VISIT_START_DAYS, nv)

    def ids(owner, kind, device, screen, logs, home, slot_k, sessions, start_day, cellular, vpn, corporate=None,
            household=None, user=None, source_=None):
        m = len(owner)
        return _Ids(owner, owner if user is None else user, np.full(m, kind), device, screen, logs,
                    home, source[owner] if source_ is None else source_,
                    (first_pid + owner) * 8 + slot_k if slot_k is not None else None, sessions, start_day,
                    cellular, vpn, np.full(m, -1) if corporate is None else corporate,
                    np.zeros(m, np.int64) if household is None else household, np.full(m, -1))

    def cellular_share(device):
        return np.where(DEVICE_CLASS[device] == 1, CELLULAR_SHARE, 0.0)

    sessions = np.where(logs_in, 1 + _geometric(rng, 0.4, nv, 8), _geometric(rng, 0.4, nv, 8))
    primary = ids(v, 0, primary_device, primary_screen, logs_in, v, 0, sessions, start,
                  cellular_share(primary_device), np.where(vpn_hop, VPN_HOP_SHARE, 0.0))
    primary.kind = np.where(logs_in, PRIMARY_LOGIN, PRIMARY)

    second = rng.random(nv) < SECOND_DEVICE_RATE
    o = v[second]
    second_class = np.where(primary_class[second] == 0, np.where(rng.random(len(o)) < 0.8, 1, 0), 0)
    second_device = _pick_device(rng, second_class)
    clash = second_device == primary_device[second]  # the same browser again: use the next desktop browser
    second_device[clash] = (second_device[clash] + 1) % 6
    second_ids = ids(o, SECOND, second_device, _pick_screen(rng, second_device), np.zeros(len(o), bool), o, 1,
                     _geometric(rng, 0.4, len(o), 8), start[second] + rng.integers(0, 10, len(o)),
                     cellular_share(second_device), np.zeros(len(o)))

    resets = np.where(rng.random(nv) < COOKIE_RESET_RATE, rng.integers(1, 3, nv), 0)
    r_of = np.repeat(np.arange(nv), resets)
    r_rank = rank_within(resets)
    o = v[r_of]
    reset_ids = ids(o, RESET, primary_device[r_of], primary_screen[r_of], np.zeros(len(o), bool), o, 2 + r_rank,
                    _geometric(rng, 0.4, len(o), 6), 1 + rng.integers(0, 10, len(o)), np.zeros(len(o)), np.zeros(len(o)))
    # A reset follows the primary's last session, a second reset the first (primary rows come first below).
    reset_ids.after = np.where(r_rank == 0, r_of, nv + len(second_ids) + np.arange(len(o)) - 1)

    window = rng.random(nv) < VPN_WINDOW_RATE
    o = v[window]
    vpn_ids = ids(o, VPN, primary_device[window], primary_screen[window], np.zeros(len(o), bool), np.full(len(o), -1),
                  4, _geometric(rng, 0.5, len(o), 5), start[window] + rng.integers(0, 30, len(o)),
                  np.zeros(len(o)), np.ones(len(o)))

    work = rng.random(nv) < WORK_DEVICE_RATE
    o = v[work]
    work_device = _pick_device(rng, np.zeros(len(o), np.int64))
    work_logs = rng.random(len(o)) < WORK_LOGIN_RATE
    work_ids = ids(o, WORK, work_device, _pick_screen(rng, work_device), work_logs, np.full(len(o), -1), 5,
                   np.where(work_logs, 1 + _geometric(rng, 0.4, len(o), 8), _geometric(rng, 0.4, len(o), 8)),
                   rng.integers(0, VISIT_START_DAYS, len(o)), np.zeros(len(o)), np.zeros(len(o)),
                   corporate=corp_row + corp_of_person[o])

    # Household tablets: households of 2-4 with at least one visitor; members take turns on one id.
    heads = np.flatnonzero((p.household_rank == 0) & (p.household_size >= 2))
    any_visitor = np.bincount(head, weights=visitor, minlength=n)[heads] > 0
    heads = heads[any_visitor & (rng.random(len(heads)) < TABLET_RATE)]
    tablet_device = _pick_device(rng, np.full(len(heads), 2))
    tablet_ids = ids(heads, TABLET, tablet_device, _pick_screen(rng, tablet_device), np.zeros(len(heads), bool),
                     heads, 7, 2 + _geometric(rng, 0.3, len(heads), 10), rng.integers(0, VISIT_START_DAYS, len(heads)),
                     np.zeros(len(heads)), np.zeros(len(heads)), household=p.household_size[heads].astype(np.int64))

    # Strangers: nobody in the CRM, never log in.
    st = np.arange(ns)
    st_class = rng.choice(3, size=ns, p=[0.45, 0.47, 0.08])
    st_device = _pick_device(rng, st_class)
    st_corporate = (st_class == 0) & (rng.random(ns) < STRANGER_CORPORATE_RATE)
    st_vpn = ~st_corporate & (rng.random(ns) < STRANGER_VPN_RATE)
    stranger_ids = _Ids(np.full(ns, -1), n + st, np.full(ns, STRANGER), st_device, _pick_screen(rng, st_device),
                        np.zeros(ns, bool), np.where(st_corporate | st_vpn, -1, n + st),
                        rng.choice(4, size=ns, p=SOURCE_SHARES), plan.people * 8 + first_pid + st,
                        _geometric(rng, 0.5, ns, 6), rng.integers(0, VISIT_START_DAYS, ns),
                        np.where(st_class == 1, 0.6, 0.0), st_vpn.astype(float),
                        np.where(st_corporate, corp_row + rng.integers(0, k_corp, ns), -1), np.zeros(ns, np.int64),
                        np.full(ns, -1))

    # Strangers' home networks: a bijection of the global stranger number (no two strangers collide), in
    # residential ranges apart from the CRM households' 73/98/24.x.x.
    code = permute(first_pid + st, 4 * 2**16 * 254, plan.seed, purpose=22)
    network, host = np.divmod(code, 254)
    stranger_ip = ips(np.array([67, 71, 76, 99])[network >> 16], (network >> 8) & 255, network & 255, host + 1)
    ip = pa.concat_arrays([p.home_ip, stranger_ip, pools.carrier, pools.corporate, pools.datacenter])
    ip_geo = np.concatenate([person_geo, rng.integers(0, len(US_CITIES), ns), pools.carrier_geo,
                             pools.corporate_geo, pools.datacenter_geo])

    # Another device at home that its owner logs in on, like the second device but authenticated:
    # people who browse on a laptop and a phone at home and sign in on both. Drawn last, so the
    # other behaviours' draws are unchanged.
    home = rng.random(nv) < HOME_LOGIN_RATE
    o = v[home]
    home_class = np.where(primary_class[home] == 0, np.where(rng.random(len(o)) < 0.8, 1, 0), 0)
    home_device = _pick_device(rng, home_class)
    clash = home_device == primary_device[home]
    home_device[clash] = (home_device[clash] + 1) % 6
    home_ids = ids(o, HOME_LOGIN, home_device, _pick_screen(rng, home_device), np.ones(len(o), bool), o, 6,
                   1 + _geometric(rng, 0.4, len(o), 8), start[home] + rng.integers(0, 10, len(o)),
                   cellular_share(home_device), np.zeros(len(o)))
    all_ids = _concat_ids([primary, second_ids, reset_ids, vpn_ids, work_ids, tablet_ids, stranger_ids, home_ids])
    user_pid = np.concatenate([p.pid, np.full(ns, -1)])
    habits = _Habits(favourites, hour, carrier_row, k_carrier, dc_row, len(pools.datacenter))
    count(stats, "visitor_persons", nv)
    count(stats, "visitor_strangers", ns)
    count(stats, "visitor_household_tablets", len(heads))
    count(stats, "visitor_vpn_hop_persons", vpn_hop.sum())
    return all_ids, ip, ip_geo, user_pid, habits


@dataclass
class _Habits:
    favourites: np.ndarray    # (users, FAVOURITES) category rows
    hour: np.ndarray          # preferred hour of day (UTC), per user
    carrier_row: int
    carriers: int
    datacenter_row: int
    datacenters: int


@dataclass
class _Sessions:
    id: np.ndarray           # row in ids
    rank: np.ndarray
    start_ms: np.ndarray
    ip: np.ndarray           # row in the IP table
    user: np.ndarray         # users row of who is at the device
    login: np.ndarray        # this session opens with the login event


def _sessions(rng: np.random.Generator, ids: _Ids, habits: _Habits) -> _Sessions:
    sid = np.repeat(np.arange(len(ids)), ids.sessions)
    m = len(sid)
    rank = rank_within(ids.sessions)
    gap = rng.geometric(0.35, m)
    gap[rank == 0] = 0
    elapsed = np.cumsum(gap)
    first = offsets(ids.sessions)
    since_first = elapsed - elapsed[first][sid]
    start_day = ids.start_day.copy()
    last = since_first[first + ids.sessions - 1]
    follows = np.flatnonzero(ids.after >= 0)
    for _ in range(2):  # chains are at most primary -> reset -> reset
        start_day[follows] = start_day[ids.after[follows]] + last[ids.after[follows]] + ids.start_day[follows]
    day = start_day[sid] + since_first

    # Who is at the device: its user, or for a tablet a household member (one favourite member most often).
    user = ids.user[sid].copy()
    tablet = ids.household[sid] > 0
    size = ids.household[sid][tablet]
    favourite = (rng.random(len(ids)) * np.maximum(ids.household, 1)).astype(np.int64)[sid][tablet]
    member = np.where(rng.random(len(size)) < 0.6, favourite, (rng.random(len(size)) * size).astype(np.int64))
    t_rank = rank[tablet]
    member = np.where(t_rank == 0, favourite, np.where(t_rank == 1, (favourite + 1) % size, member))  # >= 2 users
    user[tablet] = user[tablet] + member

    work = ids.corporate[sid] >= 0
    tod = np.where(work, rng.uniform(13.0, 21.0, m), (habits.hour[user] + rng.normal(0.0, 1.2, m)) % 24.0)
    start_ms = (VISIT_START_S + day * DAY_S) * 1000 + (tod * 3_600_000).astype(np.int64)

    ip = np.where(work, ids.corporate[sid], ids.home_ip[sid])
    stranger = ids.kind[sid] == STRANGER
    later = (rank > 0) | stranger
    cellular = ~work & later & (rng.random(m) < ids.cellular[sid])
    ip[cellular] = habits.carrier_row + rng.integers(0, habits.carriers, int(cellular.sum()))
    vpn_window = ids.home_ip[sid] < 0
    vpn = ~work & (later | vpn_window) & (rng.random(m) < ids.vpn[sid])
    vpn |= ~work & vpn_window
    ip[vpn] = habits.datacenter_row + rng.integers(0, habits.datacenters, int(vpn.sum()))

    login_session = 1 + (rng.random(len(ids)) * np.maximum(ids.sessions - 1, 1)).astype(np.int64)
    login = ids.logs_in[sid] & (rank == login_session[sid])
    return _Sessions(sid, rank, start_ms, ip, user, login)


@dataclass
class _Events:
    session: np.ndarray
    rank: np.ndarray
    ts_ms: np.ndarray
    etype: np.ndarray
    page: np.ndarray

    def take(self, index) -> _Events:
        return _Events(**{k: v[index] for k, v in vars(self).items()})


def _events(rng: np.random.Generator, sessions: _Sessions, habits: _Habits) -> _Events:
    counts = _geometric(rng, 0.3, len(sessions.id), MAX_EVENTS_PER_SESSION) + sessions.login
    sess = np.repeat(np.arange(len(counts)), counts)
    m = len(sess)
    rank = rank_within(counts)
    gap = (3_000 + rng.exponential(40_000.0, m)).astype(np.int64)
    gap[rank == 0] = rng.integers(0, 1000, int((rank == 0).sum()))
    elapsed = np.cumsum(gap)
    ts_ms = sessions.start_ms[sess] + elapsed - elapsed[offsets(counts)][sess]

    user = sessions.user[sess]
    u = rng.random(m)
    favourite = habits.favourites[user, rng.integers(0, FAVOURITES, m)]
    category = np.where(u < 0.75, favourite, rng.integers(0, len(CATEGORIES), m))
    product = category * PRODUCTS_PER_CATEGORY + (rng.random(m) ** 2 * PRODUCTS_PER_CATEGORY).astype(np.int64)
    blog = BLOG_FIRST + category * len(BLOG_SLUGS) + rng.integers(0, len(BLOG_SLUGS), m)
    page = np.where(rng.random(m) < 0.85, product, blog)
    generic = u >= 0.88
    page[generic] = GENERIC_FIRST + rng.integers(0, len(GENERIC_PAGES), int(generic.sum()))
    login = sessions.login[sess] & (rank == 0)
    page[login] = LOGIN_PAGE
    etype = np.full(m, PAGE, np.int8)
    etype[(page < BLOG_FIRST) & ~login & (rng.random(m) < 0.08)] = CART
    etype[login] = LOGIN
    return _Events(sess, rank, ts_ms, etype, page)


# ----------------------------------------------------------------------------------------------
# Anonymous id strings
# ----------------------------------------------------------------------------------------------
def _segment_ids(rng: np.random.Generator, n: int) -> pa.Array:
    return uuids(rng, n)


def _ga4_ids(seed: int, slot: np.ndarray, first_ms: np.ndarray) -> pa.Array:
    """The _ga client id: <10 random digits>.<first visit unix seconds>; the random part is a bijection of the slot."""
    number = 1_000_000_000 + permute(slot, 9_000_000_000, seed, purpose=21)
    return fixed_width(np.hstack([digit_codes(number, 10), np.full((len(slot), 1), ord("."), np.uint8),
                                     digit_codes(first_ms // 1000, 10)]))


def _tealium_ids(rng: np.random.Generator, first_ms: np.ndarray) -> pa.Array:
    """45 hex digits: the first-visit time in milliseconds (12 hex) then 33 random hex digits."""
    n = len(first_ms)
    stamp = hex_codes(((first_ms[:, None] >> (8 * np.arange(5, -1, -1))) & 255).astype(np.uint8))
    random = hex_codes(random_bytes(rng, n, 17))[:, :33]
    return fixed_width(np.hstack([stamp, random]))


def _ecids(rng: np.random.Generator, n: int) -> pa.Array:
    """38 digits: two 19-digit halves that each fit a Java long, as Adobe validates."""
    high, low = rng.integers(0, 9 * 10**18, n), rng.integers(0, 9 * 10**18, n)
    return fixed_width(np.hstack([digit_codes(high, 19), digit_codes(low, 19)]))


# ----------------------------------------------------------------------------------------------
# JSON lines per shape
# ----------------------------------------------------------------------------------------------
@dataclass
class _View:
    """The events of one shape, with every value they need gathered."""
    ev: _Events
    ts_ms: np.ndarray
    login: np.ndarray
    cart: np.ndarray
    anon: pa.Array
    ip: pa.Array
    geo: np.ndarray
    device: np.ndarray
    screen: np.ndarray
    page: np.ndarray
    user_id: pa.Array        # login events: the person's user id, else null
    email: pa.Array          # login events: the person's email, else null
    session_start_ms: np.ndarray
    session_number: np.ndarray
    id_row: np.ndarray


def _int_json(values: np.ndarray) -> pa.Array:
    return num(values)


def _segment_lines(rng: np.random.Generator, v: _View) -> tuple[pa.Array, pa.Array]:
    n = len(v.ts_ms)
    message_id = message_ids(rng, np.zeros(n, np.int64))
    etype = np.where(v.login, 0, np.where(v.cart, 1, 2))
    url, path, title = take(PAGE_URLS, v.page), take(PAGE_PATHS, v.page), take(PAGE_TITLES, v.page)
    body = pc.choose(pa.array(etype),
                     join(',"traits":{"email":"', v.email, '"}'),
                     const(',"event":"Product Added"', n),
                     join(',"name":"', title, '"'))
    sku = wrap(',"product_id":"', where(v.cart, take(PAGE_SKUS, v.page), None), '"')
    lines = join(
        '{"messageId":"', message_id, '","type":"', take(text(["identify", "track", "page"]), etype),
        '","timestamp":"', iso_millis(v.ts_ms), '","anonymousId":"', v.anon, '","userId":',
        pc.coalesce(wrap('"', v.user_id, '"'), pa.scalar("null")), body,
        ',"properties":{"url":"', url, '","path":"', path, '","title":"', title, '"', sku, '}',
        ',"context":{"ip":"', v.ip, '","userAgent":"', take(UA, v.device),
        '","page":{"url":"', url, '","path":"', path, '","title":"', title, '"},"location":{"city":"',
        take(GEO_CITY, v.geo), '","country":"', take(GEO_COUNTRY, v.geo), '"},"screen":{"width":',
        _int_json(SCREEN_W[v.screen]), ',"height":', _int_json(SCREEN_H[v.screen]),
        '},"library":{"name":"analytics.js","version":"next-1.64.0"}}}\n')
    return lines, message_id


def _ga4_lines(rng: np.random.Generator, v: _View) -> tuple[pa.Array, pa.Array]:
    n = len(v.ts_ms)
    micros = v.ts_ms * 1000 + rng.integers(0, 1000, n)
    name = take(text(["login", "add_to_cart", "page_view"]), np.where(v.login, 0, np.where(v.cart, 1, 2)))
    bundle = rng.integers(1_000_000, 2_000_000_000, n)
    batch_index = v.ev.rank
    date = timestamp_codes(v.ts_ms)
    event_date = fixed_width(date[:, [0, 1, 2, 3, 5, 6, 8, 9]])
    browser, version = take(DEVICE_BROWSER, v.device), take(DEVICE_BROWSER_VERSION, v.device)
    url, title = take(PAGE_URLS, v.page), take(PAGE_TITLES, v.page)
    micros_text = _int_json(micros)
    lines = join(
        '{"event_date":"', event_date, '","event_timestamp":', micros_text, ',"event_name":"', name,
        '","event_params":[{"key":"ga_session_id","value":{"int_value":', _int_json(v.session_start_ms // 1000),
        '}},{"key":"ga_session_number","value":{"int_value":', _int_json(v.session_number + 1),
        '}},{"key":"page_location","value":{"string_value":"', url,
        '"}},{"key":"page_title","value":{"string_value":"', title,
        '"}},{"key":"engagement_time_msec","value":{"int_value":', _int_json(rng.integers(100, 60_000, n)),
        '}}],"event_bundle_sequence_id":', _int_json(bundle), ',"batch_event_index":', _int_json(batch_index),
        ',"user_id":', pc.coalesce(wrap('"', v.user_id, '"'), pa.scalar("null")),
        ',"user_pseudo_id":"', v.anon, '","user_properties":[],"device":{"category":"',
        take(DEVICE_CLASS_NAMES, DEVICE_CLASS[v.device]), '","operating_system":"', take(DEVICE_OS, v.device),
        '","operating_system_version":"', take(DEVICE_OS_VERSION, v.device), '","browser":"', browser,
        '","browser_version":"', version, '","language":"en-us","web_info":{"browser":"', browser,
        '","browser_version":"', version, '","hostname":"', HOSTNAME, '"}},"geo":{"continent":"',
        take(GEO_CONTINENT, v.geo), '","country":"', take(GEO_COUNTRY, v.geo), '","region":"',
        take(GEO_REGION, v.geo), '","city":"', take(GEO_CITY, v.geo),
        '"},"platform":"WEB","stream_id":"', GA4_STREAM_ID, '"}\n')
    # The row id the ga4 reader builds (resolver/ingest/cdp_shapes.py): pseudo id|micros|name|bundle|batch index.
    key = join(v.anon, "|", micros_text, "|", name, "|", _int_json(bundle), "|", _int_json(batch_index))
    return lines, key


def _tealium_lines(rng: np.random.Generator, v: _View) -> tuple[pa.Array, pa.Array]:
    n = len(v.ts_ms)
    event_id = uuids(rng, n)
    name = take(text(["user_login", "cart_add", "page_view"]), np.where(v.login, 0, np.where(v.cart, 1, 2)))
    lines = join(
        '{"event_id":"', event_id, '","tealium_account":"', TEALIUM_ACCOUNT, '","tealium_profile":"', TEALIUM_PROFILE,
        '","tealium_visitor_id":"', v.anon, '","tealium_event":"', name, '","tealium_timestamp_epoch":',
        _int_json(v.ts_ms // 1000), ',"tealium_session_id":"', _int_json(v.session_start_ms),
        '","page_url":"', take(PAGE_URLS, v.page), '","page_name":"', take(PAGE_TITLES, v.page),
        '","client_ip":"', v.ip, '","user_agent":"', take(UA, v.device), '","screen_resolution":"',
        take(SCREEN_TEXT, v.screen), '"',
        wrap(',"product_id":"', where(v.cart, take(PAGE_SKUS, v.page), None), '"'),
        wrap(',"customer_email":"', v.email, '"'), wrap(',"customer_id":"', v.user_id, '"'), "}\n")
    return lines, event_id


def _adobe_lines(rng: np.random.Generator, v: _View) -> tuple[pa.Array, pa.Array]:
    n = len(v.ts_ms)
    event_id = uuids(rng, n)
    event_type = take(text(["userAccount.login", "commerce.productListAdds", "web.webpagedetails.pageViews"]),
                         np.where(v.login, 0, np.where(v.cart, 1, 2)))
    ecid_primary = where(v.login, "false", "true")
    authenticated = wrap(',"CRMID":[{"id":"', v.user_id, '","authenticatedState":"authenticated","primary":true}]',
                            ',"Email":[{"id":"', v.email, '","authenticatedState":"authenticated","primary":false}]')
    lines = join(
        '{"_id":"', event_id, '","timestamp":"', iso_millis(v.ts_ms), '","eventType":"', event_type,
        '","producedBy":"self","identityMap":{"ECID":[{"id":"', v.anon,
        '","authenticatedState":"ambiguous","primary":', ecid_primary, '}]', authenticated,
        '},"web":{"webPageDetails":{"URL":"', take(PAGE_URLS, v.page), '","name":"', take(PAGE_TITLES, v.page),
        '"}},"environment":{"type":"browser","ipV4":"', v.ip, '","browserDetails":{"userAgent":"',
        take(UA, v.device), '"}},"device":{"type":"', take(DEVICE_CLASS_NAMES, DEVICE_CLASS[v.device]),
        '","screenWidth":', _int_json(SCREEN_W[v.screen]), ',"screenHeight":', _int_json(SCREEN_H[v.screen]),
        '},"placeContext":{"geo":{"city":"', take(GEO_CITY, v.geo), '","stateProvince":"',
        take(GEO_REGION, v.geo), '","countryCode":"', take(GEO_CODE, v.geo), '"}}}\n')
    return lines, event_id


LINE_WRITERS = [_segment_lines, _ga4_lines, _tealium_lines, _adobe_lines]

# ----------------------------------------------------------------------------------------------
# Truth
# ----------------------------------------------------------------------------------------------
VISITORS_SCHEMA = pa.schema([
    ("source", pa.string()), ("anonymous_id", pa.string()), ("person_id", pa.int64()), ("kind", pa.string()),
    ("logs_in", pa.bool_()), ("shared", pa.bool_()), ("users", pa.int64()), ("household_id", pa.int64()),
    ("sessions", pa.int64()), ("events", pa.int64()), ("user_agent", pa.string()), ("screen", pa.string()),
    ("home_ip", pa.string()), ("carrier_nat", pa.bool_()), ("corporate_nat", pa.bool_()), ("vpn", pa.bool_()),
    ("first_seen", pa.timestamp("ms", tz="UTC")), ("last_seen", pa.timestamp("ms", tz="UTC")),
])
VISITOR_EVENTS_SCHEMA = pa.schema([
    ("source", pa.string()), ("event_key", pa.string()), ("anonymous_id", pa.string()), ("person_id", pa.int64()),
    ("login", pa.bool_()),
])


def _nullable(values: np.ndarray) -> pa.Array:
    values = np.asarray(values, np.int64)
    return pa.array(values, pa.int64(), mask=values < 0)


# ----------------------------------------------------------------------------------------------
# One chunk
# ----------------------------------------------------------------------------------------------
def run_chunk(task, p, stats: dict) -> None:
    """Draw and write the chunk's visitor files (segment/tealium/adobe directly, GA4 per-day parts) and truth parts."""
    plan = task.plan
    rng = np.random.default_rng(np.random.SeedSequence(plan.seed, spawn_key=(task.index, 1)))
    pools = _ip_pools(plan.people, plan.seed)
    ids, ip, ip_geo, user_pid, habits = _draw(rng, plan, p, task.first_pid, pools, stats)
    sessions = _sessions(rng, ids, habits)
    events = _events(rng, sessions, habits)
    id_of_event = sessions.id[events.session]

    # Per id: first/last time, counts, IP kinds, and the true person (tablets: the member with most events).
    n_ids = len(ids)
    first_ms = np.full(n_ids, np.iinfo(np.int64).max)
    np.minimum.at(first_ms, id_of_event, events.ts_ms)
    last_ms = np.zeros(n_ids, np.int64)
    np.maximum.at(last_ms, id_of_event, events.ts_ms)
    n_events = np.bincount(id_of_event, minlength=n_ids)
    carrier_row, corp_row, dc_row = habits.carrier_row, habits.carrier_row + habits.carriers, habits.datacenter_row
    sip = sessions.ip

    def any_session(mask):
        return np.bincount(sessions.id[mask], minlength=n_ids) > 0

    carrier_nat = any_session((sip >= carrier_row) & (sip < corp_row))
    corporate_nat = any_session((sip >= corp_row) & (sip < dc_row))
    vpn = any_session(sip >= dc_row)
    tablet_rows = np.flatnonzero(ids.household > 0)
    person_user = ids.user.copy()
    users = np.ones(n_ids, np.int64)
    if len(tablet_rows):
        is_tablet = ids.household[id_of_event] > 0  # count each member's events on it
        member = sessions.user[events.session[is_tablet]] - ids.user[id_of_event[is_tablet]]
        table = np.zeros((n_ids, 4), np.int64)
        np.add.at(table, (id_of_event[is_tablet], member), 1)
        person_user[tablet_rows] = ids.user[tablet_rows] + table[tablet_rows].argmax(axis=1)
        users[tablet_rows] = (table[tablet_rows] > 0).sum(axis=1)
    person_id = user_pid[person_user]

    anon_parts = []
    for src in range(4):
        rows = ids.source == src
        k = int(rows.sum())
        if src == SEGMENT:
            anon_parts.append(_segment_ids(rng, k))
        elif src == GA4:
            anon_parts.append(_ga4_ids(plan.seed, ids.slot[rows], first_ms[rows]))
        elif src == TEALIUM:
            anon_parts.append(_tealium_ids(rng, first_ms[rows]))
        else:
            anon_parts.append(_ecids(rng, k))
    anon = by_group(ids.source, anon_parts)

    household_id = np.where(ids.owner >= 0, p.household[np.maximum(ids.owner, 0)], -1)
    truth = pa.table({
        "source": take(text(SOURCES), ids.source), "anonymous_id": anon, "person_id": _nullable(person_id),
        "kind": take(text(KINDS), ids.kind), "logs_in": pa.array(ids.logs_in),
        "shared": pa.array(ids.household > 0), "users": pa.array(users), "household_id": _nullable(household_id),
        "sessions": pa.array(ids.sessions.astype(np.int64)), "events": pa.array(n_events.astype(np.int64)),
        "user_agent": take(UA, ids.device), "screen": take(SCREEN_TEXT, ids.screen),
        "home_ip": take(ip, ids.home_ip), "carrier_nat": pa.array(carrier_nat),
        "corporate_nat": pa.array(corporate_nat), "vpn": pa.array(vpn),
        "first_seen": pa.array(first_ms, pa.timestamp("ms", tz="UTC")),
        "last_seen": pa.array(last_ms, pa.timestamp("ms", tz="UTC")),
    }, schema=VISITORS_SCHEMA)
    write_ipc(task.part("visitors.arrow"), truth)

    # Session numbers per id, for GA4's ga_session_number.
    event_truth = []
    out = Path(task.out_dir)
    event_source = ids.source[id_of_event]
    event_person = user_pid[sessions.user[events.session]]
    for src in range(4):
        order = np.flatnonzero(event_source == src)
        order = order[np.argsort(events.ts_ms[order], kind="stable")]
        ev = events.take(order)
        sess = ev.session
        id_row = sessions.id[sess]
        login = ev.etype == LOGIN
        person_local = np.where(login, ids.owner[id_row], -1)
        user_id = where(login, take(p.user_id, person_local), None)
        email = where(login, join(take(p.email_local, person_local), "@",
                                        take(p.email_domain, person_local)), None)
        view = _View(ev, ev.ts_ms, login, ev.etype == CART, take(anon, id_row), take(ip, sessions.ip[sess]),
                     ip_geo[sessions.ip[sess]], ids.device[id_row], ids.screen[id_row], ev.page, user_id, email,
                     sessions.start_ms[sess], sessions.rank[sess], id_row)
        lines, key = LINE_WRITERS[src](rng, view)
        if src == GA4:
            day = ev.ts_ms // DAY_MS
            for d in np.unique(day):
                stamp = np.datetime_as_string(np.datetime64(int(d), "D")).replace("-", "")
                with open(task.part(f"ga4.{stamp}"), "wb") as f:
                    write_lines(f, lines.filter(pa.array(day == d)))
        else:
            directory = {SEGMENT: "segment", TEALIUM: "tealium", ADOBE: "adobe"}[src]
            with open(out / directory / f"visitors-{task.index:05d}.jsonl", "wb") as f:
                write_lines(f, lines)
        event_truth.append(pa.table({
            "source": const(SOURCES[src], len(order)), "event_key": key, "anonymous_id": view.anon,
            "person_id": _nullable(event_person[order]), "login": pa.array(login)}, schema=VISITOR_EVENTS_SCHEMA))
        count(stats, f"visitor_events_{SOURCES[src].split('_')[0]}", len(order))
        count(stats, f"visitor_ids_{SOURCES[src].split('_')[0]}", int((ids.source == src).sum()))
    write_ipc(task.part("visitor_events.arrow"), pa.concat_tables(event_truth))
    for k, name in enumerate(KINDS):
        count(stats, f"visitor_kind_{name}", int((ids.kind == k).sum()))
    count(stats, "visitor_login_events", int((events.etype == LOGIN).sum()))
    count(stats, "visitor_ids_on_carrier_nat", carrier_nat.sum())
    count(stats, "visitor_ids_on_corporate_nat", corporate_nat.sum())
    count(stats, "visitor_ids_on_vpn", vpn.sum())


# ----------------------------------------------------------------------------------------------
# Orchestration hooks used by resolver.synth.people
# ----------------------------------------------------------------------------------------------
VISITOR_DIRS = ("segment", "ga4", "tealium", "adobe")


def remove_stale(out: Path) -> None:
    """Remove visitor files a previous run may have left (with or without the flag: they would be read)."""
    for pattern in ("segment/visitors-*.jsonl", "ga4/events_*.json", "tealium/visitors-*.jsonl",
                    "adobe/visitors-*.jsonl", "truth/visitors.parquet", "truth/visitor_events.parquet"):
        for stale in out.glob(pattern):
            stale.unlink()


def prepare(out: Path) -> None:
    for sub in VISITOR_DIRS:
        (out / sub).mkdir(parents=True, exist_ok=True)


class Assembler:
    """Appends each chunk's GA4 day parts and truth parts, in chunk order."""

    def __init__(self, out: Path, stack):
        self.out = out
        self.days: set[str] = set()
        self.visitors = stack.enter_context(
            pq.ParquetWriter(out / "truth" / "visitors.parquet", VISITORS_SCHEMA, compression="zstd"))
        self.events = stack.enter_context(
            pq.ParquetWriter(out / "truth" / "visitor_events.parquet", VISITOR_EVENTS_SCHEMA, compression="zstd"))

    def append(self, task) -> None:
        for part in sorted(Path(task.parts_dir).glob(f"{task.index:05d}.ga4.*")):
            stamp = part.name.rsplit(".", 1)[1]
            self.days.add(stamp)
            with open(self.out / "ga4" / f"events_{stamp}.json", "ab") as f, open(part, "rb") as src:
                f.write(src.read())
            part.unlink()
        for name, writer in (("visitors.arrow", self.visitors), ("visitor_events.arrow", self.events)):
            with pa.memory_map(str(task.part(name))) as source:
                writer.write_table(pa.ipc.open_file(source).read_all())
            task.part(name).unlink()

    def files(self, chunks: int) -> list[str]:
        files = ["truth/visitors.parquet", "truth/visitor_events.parquet"]
        files += [f"ga4/events_{d}.json" for d in sorted(self.days)]
        files += [f"{d}/visitors-{i:05d}.jsonl" for d in ("segment", "tealium", "adobe") for i in range(chunks)]
        return files


CONFIG_SOURCES = """
  # Web visitors (resolver generate --visitors): anonymous website traffic in four CDP shapes.
  - name: segment_visitors
    system: segment
    kind: events
    format: jsonl
    path: segment/visitors-*.jsonl
    key: messageId
    timestamp: timestamp
    session:
      ip: context.ip
      user_agent: context.userAgent
      page: context.page.url
      city: context.location.city
      country: context.location.country
      screen: [context.screen.width, context.screen.height]
    identifiers:
      anonymous_id: anonymousId
      user_id: userId
      email: traits.email
      ip: context.ip

  - name: ga4_visitors
    system: ga4
    kind: events
    format: ga4
    path: ga4/events_*.json
    key: _event_id
    timestamp: event_timestamp
    session:                  # GA4 exports carry no IP, user agent or screen
      page: event_params.page_location
      city: geo.city
      country: geo.country
    identifiers:
      ga_client_id: user_pseudo_id
      user_id: user_id

  - name: tealium_visitors
    system: tealium
    kind: events
    format: tealium
    path: tealium/visitors-*.jsonl
    key: event_id
    timestamp: timestamp
    session:
      ip: client_ip
      user_agent: user_agent
      page: page_url
      screen: screen_resolution
    identifiers:
      tealium_visitor_id: tealium_visitor_id
      user_id: customer_id
      email: customer_email
      ip: client_ip

  - name: adobe_visitors
    system: adobe
    kind: events
    format: adobe
    path: adobe/visitors-*.jsonl
    key: _id
    timestamp: timestamp
    session:
      ip: environment.ipV4
      user_agent: environment.browserDetails.userAgent
      page: web.webPageDetails.URL
      city: placeContext.geo.city
      country: placeContext.geo.countryCode
      screen: [device.screenWidth, device.screenHeight]
    identifiers:
      ecid: identityMap.ECID
      user_id: identityMap.CRMID
      email: identityMap.Email
      ip: environment.ipV4
"""
CONFIG_TYPES = """\
    ga_client_id:   {normalizer: trim,   priority: 10, limit: 50, hub_cap: 3}
    tealium_visitor_id: {normalizer: lower, priority: 11, limit: 50, hub_cap: 3}
    ecid:           {normalizer: trim,   priority: 12, limit: 50, hub_cap: 3}
"""


CONFIG_STITCHING = """
# Anonymous visitor stitching (resolver/persons/stitching.py) over the visitor sources' sessions.
stitching:
  anonymous_types: [anonymous_id, ga_client_id, tealium_visitor_id, ecid]
"""


def with_visitor_config(text: str) -> str:
    """The synthetic config text plus the visitor sources (at the end of ``sources:``), identity types
    (after ``ip:`` in ``identity.types``) and a ``stitching:`` section; comments and everything else kept."""
    lines = text.splitlines(keepends=True)
    identity = next(i for i, line in enumerate(lines) if line.startswith("identity:"))
    end_of_sources = identity
    while end_of_sources > 0 and (not lines[end_of_sources - 1].strip() or lines[end_of_sources - 1].startswith("#")):
        end_of_sources -= 1
    ip_type = next(i for i, line in enumerate(lines) if i > identity and line.strip().startswith("ip:"))
    return "".join(lines[:end_of_sources] + [CONFIG_SOURCES] + lines[end_of_sources:ip_type + 1] + [CONFIG_TYPES]
                   + lines[ip_type + 1:] + [CONFIG_STITCHING])


def manifest_section(stats: dict, people: int) -> dict:
    section = {k[len("visitor_"):]: v for k, v in sorted(stats.items()) if k.startswith("visitor_")}
    section["carrier_nat_ips"] = carrier_ip_count(people)
    section["corporate_nat_ips"] = corporate_ip_count(people)
    section["datacenter_ips"] = datacenter_ip_count(people)
    section["shares"] = {
        "visitor_rate": VISITOR_RATE, "login_rate": LOGIN_RATE, "second_device_rate": SECOND_DEVICE_RATE,
        "cookie_reset_rate": COOKIE_RESET_RATE, "vpn_window_rate": VPN_WINDOW_RATE, "vpn_hop_rate": VPN_HOP_RATE,
        "work_device_rate": WORK_DEVICE_RATE, "tablet_rate": TABLET_RATE, "cellular_share": CELLULAR_SHARE,
        "stranger_rate": STRANGER_RATE, "source_shares": dict(zip(SOURCES, SOURCE_SHARES)),
    }
    return section
