"""Webhook fuzzer: mutated bodies and lookup paths against the real `resolver serve`.

    python benchmarks/fuzz_webhooks.py --n 1000 --seed 0

Every endpoint (Segment JSON, Salesforce Outbound Message SOAP XML, CDC JSON, profile lookups) gets
valid requests mutated one way each (byte flips, truncation, splices, deep nesting, lone
surrogates, huge strings, wrong types, control characters, other encodings), signed (so the
mutation reaches the parser) or unsigned. Outcomes per family (endpoint x mutation):
2xx / 4xx / 5xx / timeout (no answer within --timeout s) / error (connection lost). Besides: /healthz
latency checked every 50 requests and at the end (family `healthz`: fast / slow, the bound 0.5 s),
what the server logged (`log`: traceback when any), and every accepted event accounted for
(`events`: resolved / dead_letter / unresolved, after the worker had 60 s to catch up).
Target: no 5xx, no timeout, no slow /healthz, nothing unresolved.

`run(n, seed)` returns the rows ({family, outcome, count}); `benchmarks/fuzz.py` reports them as
family `webhooks`, `tests/test_fuzz_webhooks.py` draws its cases from `case()` with hypothesis.
Results: benchmarks/results/fuzz_webhooks.json.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_from_bytes

from load_webhooks import _free_port, _prepare

HERE = Path(__file__).resolve().parent
SECRET = "fuzz-secret"
ORG_ID = "00D5g000004XXXXEA4"
HEALTHZ_BOUND = 0.5  # seconds
ENDPOINTS = ("segment", "outbound", "cdc", "lookup")
MUTATIONS = ("none", "byte_flip", "truncate", "splice", "deep_nesting", "lone_surrogate", "huge_string",
             "wrong_type", "control_chars", "other_encoding")
PATHS = {"segment": "/webhooks/segment", "outbound": "/webhooks/salesforce/outbound", "cdc": "/webhooks/salesforce/cdc"}


@dataclass
class Case:
    family: str  # endpoint/mutation
    method: str
    path: str
    body: bytes = b""
    headers: dict = field(default_factory=dict)


# Outcomes that are findings: a 500, no answer, a stall of /healthz, an event lost, a traceback logged.
FAILURES = {"5xx", "timeout", "error", "slow", "unresolved", "traceback"}


# ---------------------------------------------------------------------------------------------
# Valid requests
# ---------------------------------------------------------------------------------------------

def _segment(rng: random.Random, n: int) -> dict:
    message = {"type": rng.choice(["identify", "track", "page"]), "messageId": f"fuzz-{n}",
               "userId": f"u-fuzz-{rng.randrange(50)}", "anonymousId": f"a-fuzz-{n}",
               "timestamp": "2024-06-02T17:40:11.905Z", "context": {"ip": "203.0.113.7"},
               "traits": {"email": f"fuzz.{n}@example.com", "phone": f"+1415555{rng.randrange(10000):04d}",
                          "firstName": "Ada", "lastName": "Lovelace"}}
    return message if rng.random() < 0.7 else {"batch": [message, {**message, "messageId": f"fuzz-{n}-b"}]}


def _cdc(rng: random.Random, n: int) -> dict:
    header = {"entityName": "Contact", "recordIds": [f"0035g00000F{n:04d}"[:15]], "changeType": "CREATE",
              "transactionKey": f"fuzz-tx-{n}", "sequenceNumber": 1, "commitTimestamp": 1717350011000,
              "changedFields": [], "nulledFields": [], "diffFields": []}
    return {"schema": "fuzz", "event": {"replayId": n}, "payload": {
        "ChangeEventHeader": header, "Name": {"FirstName": "Ada", "LastName": f"Fuzz{n}"},
        "Email": f"cdc.{n}@example.com", "Phone": "(415) 555-0100",
        "MailingAddress": {"City": "Springfield", "PostalCode": "12345"}}}


def _outbound(rng: random.Random, n: int) -> str:
    fields = {"Id": f"0035g00000O{n:04d}"[:15], "FirstName": "Ada", "LastName": f"Outbound{n}",
              "Email": f"om.{n}@example.com", "MailingCity": "Springfield",
              "LastModifiedDate": "2024-06-02T17:40:11.000Z"}
    body = "".join(f"<sf:{k}>{v}</sf:{k}>" for k, v in fields.items())
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
            f'<notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>{ORG_ID}</OrganizationId>'
            f'<ActionId>04k5g000000XXXXAAA</ActionId><Notification><Id>04l5g0000F{n:07d}</Id>'
            f'<sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{body}</sObject>'
            '</Notification></notifications></soapenv:Body></soapenv:Envelope>')


def _lookup(rng: random.Random, n: int) -> tuple[str, str]:
    return rng.choice([("email", f"fuzz.{n}@example.com"), ("phone", "+14155550100"),
                       ("user_id", f"u-fuzz-{n % 50}"), ("anonymous_id", f"a-fuzz-{n}")])


# ---------------------------------------------------------------------------------------------
# Mutations: of a parsed JSON document, of XML text, or of raw bytes
# ---------------------------------------------------------------------------------------------
_WRONG_TYPES = [None, True, 0, -1, 1e308, 10**30, "", [], {}, ["x"], {"a": {"b": 1}}, "x" * 300]
_CONTROL = "\x00\x01\x07\x08\x0b\x0c\x1b\x7f\n\r\u2028\u0085"
_ENCODINGS = ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252")


def _paths(doc, prefix=()) -> list[tuple]:
    """Every (container path) to a value of a JSON document, the root excluded."""
    found = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


def _replace(doc, rng: random.Random, make) -> None:
    """Replace a random value of `doc` in place by make(old value)."""
    path = rng.choice(_paths(doc))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = make(parent[path[-1]])


def _string_ends(text: str) -> list[int]:
    """Where each string literal of a JSON text ends (the offset of its closing quote)."""
    return [m.end() - 1 for m in re.finditer(r'"(?:[^"\\]|\\.)*"', text)]


def _mutate_json(doc, kind: str, rng: random.Random) -> bytes:
    if kind == "deep_nesting":
        depth = rng.choice([1000, 1025, 5000, 100_000])
        _replace(doc, rng, lambda old: "__deep__")
        return json.dumps(doc).replace('"__deep__"', "[" * depth + "]" * depth).encode()
    if kind == "wrong_type":
        _replace(doc, rng, lambda old: rng.choice(_WRONG_TYPES))
        return json.dumps(doc).encode()
    if kind == "huge_string":
        size = rng.choice([100_000, 900_000, 2_000_000])
        _replace(doc, rng, lambda old: rng.choice("ab\u00e9\u4e2d") * size)
        return json.dumps(doc, ensure_ascii=False).encode()
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5)
    end = rng.choice(_string_ends(text))
    if kind == "lone_surrogate":
        insert = rng.choice(["\\ud800", "\\udfff", "\\ud83d", "\\ud800\\ud800"])
        return (text[:end] + insert + text[end:]).encode()
    if kind == "control_chars":
        insert = "".join(rng.choice(_CONTROL) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.5:  # escaped: valid JSON whose strings hold control characters
            insert = json.dumps(insert)[1:-1]
        return (text[:end] + insert + text[end:]).encode("utf-8", "surrogatepass")
    if kind == "other_encoding":
        text = text[:end] + "\u00e9\u00fc\u20ac" + text[end:]
        return text.encode(rng.choice(_ENCODINGS), "replace")
    return text.encode()


def _mutate_xml(text: str, kind: str, rng: random.Random) -> bytes:
    values = [(m, text.index("<", m)) for m in range(len(text)) if text[m - 1] == ">" and text[m] != "<"]
    start, end = rng.choice(values)
    if kind == "deep_nesting":
        depth = rng.choice([1000, 5000, 50_000])
        return (text[:start] + "<a>" * depth + "x" + "</a>" * depth + text[end:]).encode()
    if kind == "wrong_type":
        return (text[:start] + rng.choice(["<sf:Id>x</sf:Id>", "", "<![CDATA[<x>]]>", "&amp;&lt;", "&bogus;",
                                           "<Notification/>", '<x xsi:nil="true"/>']) + text[end:]).encode()
    if kind == "huge_string":
        return (text[:start] + rng.choice("ab\u00e9") * rng.choice([100_000, 900_000, 2_000_000]) + text[end:]).encode()
    if kind == "lone_surrogate":
        insert = rng.choice(["&#xD800;", "&#55296;", "\udfff"])
        return (text[:end] + insert + text[end:]).encode("utf-8", "surrogatepass")
    if kind == "control_chars":
        insert = rng.choice(["".join(rng.choice(_CONTROL) for _ in range(3)), "&#x0;", "&#x1b;", "&#10;"])
        return (text[:end] + insert + text[end:]).encode()
    if kind == "other_encoding":
        encoding = rng.choice(_ENCODINGS)
        declared = rng.choice([encoding, "UTF-8", "bogus-8", "EBCDIC-cp-us"])
        text = text.replace('encoding="UTF-8"', f'encoding="{declared}"')
        return (text[:end] + "\u00e9\u00fc\u20ac" + text[end:]).encode(encoding, "replace")
    return text.encode()


def _mutate_bytes(data: bytes, kind: str, rng: random.Random) -> bytes:
    data = bytearray(data)
    if kind == "byte_flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(len(data)):]
    elif kind == "splice":
        i, j = sorted(rng.randrange(len(data)) for _ in range(2))
        data[i:i] = data[i:j] * rng.randint(0, 3) if rng.random() < 0.5 else b""
        if rng.random() < 0.5:
            del data[i:j]
    return bytes(data)


def _mutate_value(value: str, kind: str, rng: random.Random) -> str:
    """A lookup's path segment, percent-encoded as a client would send it (or not at all)."""
    raw = value.encode()
    if kind in ("byte_flip", "truncate", "splice"):
        raw = _mutate_bytes(raw, kind, rng) or b"x"
    elif kind == "deep_nesting":
        raw = b"/".join([raw] * rng.choice([100, 1000]))
    elif kind == "lone_surrogate":
        raw = raw + b"\xed\xa0\x80"
    elif kind == "huge_string":
        raw = raw * rng.choice([100, 400])
    elif kind == "wrong_type":
        return rng.choice(["%ZZ", "%", "%%", "..%2F..%2Fetc", "%00", "%FF%FE", "?a=b", "#x"])
    elif kind == "control_chars":
        raw = raw + rng.choice(_CONTROL).encode()
    elif kind == "other_encoding":
        raw = value.encode(rng.choice(_ENCODINGS), "replace") + "\u00e9".encode("latin-1")
    return quote_from_bytes(raw, safe="@+/" if rng.random() < 0.5 else "")


def case(endpoint: str, kind: str, signed: bool, seed: int) -> Case:
    """One request: a valid one of `endpoint` (unique ids from `seed`), mutated by `kind`, with
    the signature headers when `signed` (over the mutated body, so it is parsed)."""
    from resolver.sync.app import signed_headers

    rng = random.Random(seed)
    n = seed % 10_000_000
    family = f"{endpoint}/{kind}"
    if endpoint == "lookup":
        id_type, value = _lookup(rng, n)
        if kind == "wrong_type" and rng.random() < 0.5:
            id_type = rng.choice(["nope", "", "x" * 200])
        path = f"/profiles/{id_type}/" + (value if kind == "none" else _mutate_value(value, kind, rng))
        return Case(family, "GET", path, headers=signed_headers(SECRET, path.encode()) if signed else {})
    if endpoint == "outbound":
        text = _outbound(rng, n)
        body = _mutate_xml(text, kind, rng) if kind not in ("byte_flip", "truncate", "splice") else text.encode()
        content_type = "text/xml; charset=utf-8"
    else:
        doc = _segment(rng, n) if endpoint == "segment" else _cdc(rng, n)
        body = _mutate_json(doc, kind, rng) if kind not in ("byte_flip", "truncate", "splice") else json.dumps(doc).encode()
        content_type = "application/json"
    body = _mutate_bytes(body, kind, rng)
    headers = {"Content-Type": content_type, **(signed_headers(SECRET, body) if signed else {})}
    return Case(family, "POST", PATHS[endpoint], body, headers)


def random_case(rng: random.Random) -> Case:
    return case(rng.choice(ENDPOINTS), rng.choice(MUTATIONS), rng.random() < 0.8, rng.randrange(2**31))


# ---------------------------------------------------------------------------------------------
# The server, the requests, the accounting
# ---------------------------------------------------------------------------------------------
def prepare(data_root: Path, work: Path, people: int = 500) -> Path:
    """A fresh copy, at `work`, of a generated dataset resolved by a batch run with a state (cached
    under `data_root`; the load benchmark's)."""
    return _prepare(people, data_root, work)


@contextlib.contextmanager
def serving(root: Path, log_path: Path):
    """`resolver serve` on loopback from `root`'s state; yields its base URL once /healthz is ok."""
    import httpx

    port = _free_port()
    env = {**os.environ, "RESOLVER_WEBHOOK_SECRET": SECRET, "RESOLVER_SALESFORCE_ORG_IDS": ORG_ID}
    command = [sys.executable, "-m", "resolver", "serve", "--config", str(root / "data" / "resolver.yaml"),
               "--state", str(root / "state"), "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not start (see {log_path})")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def send(http, request: Case) -> str:
    """The outcome of one request: 2xx, 4xx, 5xx, timeout or error (connection lost)."""
    import httpx

    try:
        response = http.request(request.method, request.path, content=request.body or None, headers=request.headers)
    except httpx.TimeoutException:
        return "timeout"
    except httpx.HTTPError:
        return "error"
    return f"{response.status_code // 100}xx"


def healthz(http) -> str:
    """fast or slow (over HEALTHZ_BOUND, or not ok)."""
    start = time.perf_counter()
    try:
        ok = http.get("/healthz").status_code == 200
    except Exception:  # noqa: BLE001 - a /healthz that does not answer is slow
        ok = False
    return "fast" if ok and time.perf_counter() - start < HEALTHZ_BOUND else "slow"


def accounted(state: Path, wait: float = 60.0) -> collections.Counter:
    """Every event in the inbox: resolved, dead_letter (failed, in the DLQ) or unresolved (after
    waiting up to `wait` s for the worker)."""
    deadline = time.monotonic() + wait
    while True:
        with sqlite3.connect(state / "sync.db") as db:
            db.execute(f"ATTACH DATABASE '{state / 'sync.db.inbox'}' AS ib")
            rows = db.execute("SELECT e.status, d.event_id IS NOT NULL FROM ib.inbox i LEFT JOIN events e "
                              "ON e.event_id = i.event_id LEFT JOIN dlq d ON d.event_id = i.event_id").fetchall()
        counts = collections.Counter("resolved" if status == "resolved" else "dead_letter" if in_dlq else "unresolved"
                                     for status, in_dlq in rows)
        if not counts["unresolved"] or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


def _rows(counts: collections.Counter) -> list[dict]:
    return [{"family": family, "outcome": outcome, "count": count}
            for (family, outcome), count in sorted(counts.items())]


def run(n: int, seed: int, data_root: Path | None = None, timeout: float = 5.0) -> list[dict]:
    """n fuzzed requests (seeded) against a fresh `resolver serve`; rows {family, outcome, count}."""
    import httpx

    rng = random.Random(seed)
    counts: collections.Counter = collections.Counter()
    with tempfile.TemporaryDirectory(prefix="fuzz-webhooks-") as tmp:
        root = prepare(data_root or HERE / "data", Path(tmp) / "run")
        log_path = Path(tmp) / "serve.log"
        with serving(root, log_path) as url, httpx.Client(base_url=url, timeout=timeout) as http:
            for i in range(n):
                request = random_case(rng)
                counts[request.family, send(http, request)] += 1
                if i % 50 == 49:
                    counts["healthz", healthz(http)] += 1
            counts["healthz", healthz(http)] += 1
            for outcome, count in accounted(root / "state").items():
                counts["events", outcome] += count
        log = log_path.read_text(encoding="utf-8", errors="replace")
        counts["log", "traceback"] += log.count("Traceback")
        counts["log", "lines_not_json"] += sum(1 for line in log.splitlines() if not line.startswith("{"))
    return _rows(counts)


def _table(rows: list[dict]) -> str:
    outcomes = sorted({r["outcome"] for r in rows})
    by_family: dict[str, dict] = collections.defaultdict(dict)
    for r in rows:
        by_family[r["family"]][r["outcome"]] = r["count"]
    lines = ["| family | " + " | ".join(outcomes) + " |", "|---" * (len(outcomes) + 1) + "|"]
    lines += [f"| {family} | " + " | ".join(str(by_family[family].get(o, "")) for o in outcomes) + " |"
              for family in sorted(by_family)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds a request may take")
    parser.add_argument("--data", default=str(HERE / "data"), help="where the batch state is cached")
    parser.add_argument("--results", default=str(HERE / "results" / "fuzz_webhooks.json"))
    args = parser.parse_args(argv)
    rows = run(args.n, args.seed, Path(args.data), args.timeout)
    print(_table(rows))
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps({"n": args.n, "seed": args.seed, "rows": rows}, indent=2) + "\n",
                                  encoding="utf-8")
    bad = sum(r["count"] for r in rows if r["outcome"] in FAILURES)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
