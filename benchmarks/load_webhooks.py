"""Load on the sync service: webhooks at a fixed rate on loopback, then an exactly-once check.

    python benchmarks/load_webhooks.py                       # 500 events/s for 60 s, SQLite store
    python benchmarks/load_webhooks.py --rate 200 --seconds 10
    python benchmarks/load_webhooks.py --store postgresql://user@127.0.0.1:5432/db

What it does:
  1. a generated dataset (--people, cached under --data) resolved by a batch run with a state;
  2. `resolver serve` on 127.0.0.1 in a subprocess (uvicorn, one process), from that state;
  3. an asyncio client (plain keep-alive HTTP/1.1 connections, so that the client costs little CPU)
     sends one event per request on a fixed schedule (--rate per second for --seconds) over
     --concurrency connections (at most that many requests in flight; latency is measured from
     sending to the full answer, the wait for a free connection is reported apart): Segment identify messages
     (new anonymous ids of known users), CDC updates of existing contacts, CDC creates of new
     contacts and Outbound Message updates (80 / 12 / 3 / 5 %), every request signed (HMAC-SHA256);
     the new contacts match no one deterministically: the model scores each against candidates;
  4. once a second, a freshness probe: an identify with a new anonymous id, then profile lookups
     of that id until it resolves: the time from sending the event to seeing it in a lookup;
  5. the exactly-once check: every event that got a 2xx is in the store's events table exactly
     once (and resolved), read straight from the database after the run.
Prints a Markdown table (offered and achieved events/s: accepted events over the time from the
first send to the last answer, probes not counted; latency p50/p95/p99; errors, lost; resolution
lag p50/p99/max); results also go to benchmarks/results/load_webhooks.json (strict JSON: a value
that cannot be measured is null). Timings are measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECRET = "load-test-secret"


def _sign(data: bytes) -> dict:
    from resolver.sync.app import signed_headers

    return signed_headers(SECRET, data)


def _prepare(people: int, data_root: Path, work: Path) -> Path:
    """Cached generated data + batch run (with a state); a fresh copy of the state for this run."""
    base = data_root / f"sync-{people}-seed-3"
    if not (base / "state" / "CURRENT").exists():
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "resolver", "generate", "--people", str(people), "--seed", "3",
                        "--out", str(base / "data"), "--quiet"], check=True)
        subprocess.run([sys.executable, "-m", "resolver", "run", "--config", str(base / "data" / "resolver.yaml"),
                        "--state", str(base / "state"), "--quiet"], check=True)
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(base, work)
    return work


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its live descendants (serve's resolver worker is a child)."""
    total = 0.0
    with contextlib.suppress(OSError):
        total += _cpu_seconds(pid)
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += _tree_cpu_seconds(int(child))
    return total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _contacts(work: Path) -> list[tuple[str, str]]:
    import pandas as pd

    identity = pd.read_parquet(work / "data" / "out" / "identity_map.parquet")
    active = identity[(identity["source"] == "sf_contacts") & (identity["status"] == "active")]
    return list(zip(active["source_key"].astype(str), active["person_id"].astype(str)))


def _users(work: Path) -> list[str]:
    import pandas as pd

    ids = pd.read_parquet(work / "data" / "out" / "identifier_map.parquet")
    return ids[(ids["id_type"] == "user_id") & (ids["status"] == "linked")]["value"].astype(str).tolist()


class Workload:
    """One event per request, in a fixed mix."""

    def __init__(self, contacts: list[tuple[str, str]], users: list[str], seed: int = 1):
        self.rng = random.Random(seed)
        self.contacts, self.users = contacts, users
        self.n = 0

    def next(self) -> tuple[str, bytes, str]:
        """(path, body, event id)."""
        self.n += 1
        n, roll = self.n, self.rng.random()
        if roll < 0.80:
            message = {"type": "identify", "messageId": f"load-{n}", "userId": self.rng.choice(self.users),
                       "anonymousId": f"anon-load-{n}", "timestamp": "2024-06-02T17:40:11.905Z",
                       "context": {"ip": "203.0.113.7"}}
            return "/webhooks/segment", json.dumps(message).encode(), f"segment:load-{n}"
        if roll < 0.95:
            record, change = (self.rng.choice(self.contacts)[0], "UPDATE") if roll < 0.92 else (f"0035g0LOAD{n:05d}", "CREATE")
            body = {"ChangeEventHeader": {"entityName": "Contact", "recordIds": [record], "changeType": change,
                                          "transactionKey": f"load-tx-{n}", "sequenceNumber": 1,
                                          "commitTimestamp": 1717350011000 + n, "changedFields": []},
                    "MailingAddress": {"City": self.rng.choice(["Oakland", "Berkeley", "Fresno", "Eureka"])},
                    "LastModifiedDate": f"2030-01-01T00:{(n // 60) % 60:02d}:{n % 60:02d}.000Z"}
            if change == "CREATE":
                body["Name"] = {"FirstName": self.rng.choice(["Ada", "Grace", "Alan", "Edsger"]),
                                "LastName": f"Loadtest{n}"}
                body["Email"] = f"load.{n}@loadmail.io"
            return ("/webhooks/salesforce/cdc", json.dumps({"schema": "s", "payload": body, "event": {"replayId": n}}).encode(),
                    f"sfdc-cdc:load-tx-{n}:1")
        record = self.rng.choice(self.contacts)[0]
        xml = ('<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
               'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
               '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
               '<OrganizationId>00D5g000004XXXXEAA</OrganizationId><ActionId>04k5g000000XXXXAAA</ActionId>'
               f'<Notification><Id>04lLOAD{n:011d}</Id><sObject xsi:type="sf:Contact" '
               'xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
               f'<sf:Id>{record}</sf:Id><sf:Title>Load {n}</sf:Title>'
               f'<sf:LastModifiedDate>2030-02-01T00:00:00.000Z</sf:LastModifiedDate></sObject></Notification>'
               '</notifications></soapenv:Body></soapenv:Envelope>')
        return "/webhooks/salesforce/outbound", xml.encode(), f"sfdc-om:04lLOAD{n:011d}"


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(seconds: float | None, digits: int = 2) -> float | None:
    return None if seconds is None else round(seconds * 1000, digits)


class _Connection:
    """A keep-alive HTTP/1.1 connection with the least client work per request (the service, not
    the load generator, should be what is measured on a 2-core machine)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        try:
            self.writer.write(head.encode() + b"\r\n" + body)
            await self.writer.drain()
            status = int((await self.reader.readline()).split()[1])
            length = 0
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            return status, await self.reader.readexactly(length)
        except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
            self.close()
            raise ConnectionError("connection lost") from None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _drive(host: str, port: int, workload: Workload, rate: float, seconds: float, concurrency: int,
                 users: list[str]) -> dict:
    latencies: list[float] = []
    waits: list[float] = []
    accepted: list[str] = []
    errors: dict[str, int] = {}
    freshness: list[float] = []
    queue: asyncio.Queue = asyncio.Queue()

    async def worker() -> None:
        connection = _Connection(host, port)
        while True:
            item = await queue.get()
            if item is None:
                connection.close()
                return
            due, path, body, event_id = item
            start = time.perf_counter()
            waits.append(start - due)
            try:
                status, _ = await connection.request("POST", path, body, _sign(body))
                latencies.append(time.perf_counter() - start)
                if status == 200:
                    accepted.append(event_id)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1
            except ConnectionError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    async def probe(k: int) -> None:
        connection = _Connection(host, port)
        anon = f"fresh-probe-{k}"
        body = json.dumps({"type": "identify", "messageId": f"probe-{k}", "userId": random.choice(users),
                           "anonymousId": anon}).encode()
        start = time.perf_counter()
        await connection.request("POST", "/webhooks/segment", body, _sign(body))
        path = f"/profiles/anonymous_id/{anon}"
        while time.perf_counter() - start < 10:
            status, _ = await connection.request("GET", path, b"", _sign(path.encode()))
            if status == 200:
                freshness.append(time.perf_counter() - start)
                break
            await asyncio.sleep(0.01)
        else:
            freshness.append(None)  # not seen within 10 s: counted apart, never as a number
        connection.close()

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    probes = []
    total = int(rate * seconds)
    late = 0
    t0 = time.perf_counter()
    for k in range(total):
        due = t0 + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > 0.1:
            late += 1
        queue.put_nowait((due, *workload.next()))
        if k % int(rate) == 0:
            probes.append(asyncio.create_task(probe(k)))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - t0  # the load's own requests; a probe still polling is not load
    await asyncio.gather(*probes)
    return {"latencies": latencies, "waits": waits, "accepted": accepted, "errors": errors, "elapsed": elapsed,
            "freshness": freshness, "sent": total, "late_starts": late}


def _stored(url: str, accepted: list[str]) -> dict:
    """How many of the accepted event ids the store holds, how often, and resolved."""
    if url.startswith("sqlite"):
        import sqlite3

        path = url.split("://", 1)[1].removeprefix("/")
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT event_id, COUNT(*), MIN(status) FROM events GROUP BY event_id").fetchall()
    else:
        import psycopg

        with psycopg.connect(url) as db:
            rows = db.execute("SELECT event_id, COUNT(*), MIN(status) FROM events GROUP BY event_id").fetchall()
    held = {e: (n, s) for e, n, s in rows}
    wanted = set(accepted)
    return {"accepted": len(wanted), "missing": len(wanted - set(held)),
            "duplicated": sum(1 for e in wanted if e in held and held[e][0] != 1),
            "not_resolved": sum(1 for e in wanted if e in held and held[e][1] != "resolved")}


def _warm_up(port: int, timeout: float = 120.0) -> None:
    """Wait until /healthz says the worker is running (warmed up), then make one lookup (the
    service loads what lookups normalize with)."""
    import httpx

    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json().get("worker") == "running":
                break
        time.sleep(0.05)
    path = "/profiles/anonymous_id/warm-up-lookup"
    httpx.get(f"http://127.0.0.1:{port}{path}", headers=_sign(path.encode()), timeout=30)


def _caught_up(port: int, timeout: float = 120.0) -> float | None:
    """Seconds until /healthz says the worker has taken in every accepted event (None: not within
    `timeout`)."""
    import httpx

    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json().get("queue_depth", 0) == 0:
                return time.perf_counter() - start
        time.sleep(0.05)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=500.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight at most")
    parser.add_argument("--store", help="store URL (default: SQLite under the run's state)")
    parser.add_argument("--warm", action="store_true",
                        help="start the load once the worker has warmed up (/healthz: worker running) and a lookup "
                             "was answered, not as soon as /healthz answers: the lag of the steady state, without "
                             "the start's (which restart_webhooks.py measures)")
    parser.add_argument("--data", default=str(HERE / "data"))
    parser.add_argument("--results", default=str(HERE / "results" / "load_webhooks.json"))
    args = parser.parse_args()

    work = _prepare(args.people, Path(args.data), Path(args.data) / "sync-load-run")
    url = args.store or f"sqlite:///{(work / 'state' / 'sync.db').resolve()}"
    port = _free_port()
    log = open(work / "serve.log", "wb")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen([sys.executable, "-m", "resolver", "serve", "--config", str(work / "data" / "resolver.yaml"),
                               "--state", str(work / "state"), "--store", url, "--port", str(port), "--quiet"],
                              env={**os.environ, "RESOLVER_WEBHOOK_SECRET": SECRET}, stdout=log, stderr=log,
                              cwd=work)  # PYTHONPATH, not this folder, picks the code measured
    try:
        import httpx

        started = time.perf_counter()
        while True:
            if server.poll() is not None:
                raise SystemExit(f"serve exited; see {work / 'serve.log'}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        startup = time.perf_counter() - started
        if args.warm:
            _warm_up(port)
        warm = time.perf_counter() - started
        users = _users(work)
        workload = Workload(_contacts(work), users)
        cpu_before = _tree_cpu_seconds(server.pid)  # the service and its resolver worker
        client_before = time.process_time()
        run = asyncio.run(_drive("127.0.0.1", port, workload, args.rate, args.seconds, args.concurrency, users))
        server_cpu = _tree_cpu_seconds(server.pid) - cpu_before
        client_cpu = time.process_time() - client_before
        catch_up = _caught_up(port)  # SIGTERM leaves a backlog in the inbox: wait until it is taken in
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    check = _stored(url, run["accepted"])
    lat = run["latencies"]
    seen = [f for f in run["freshness"] if f is not None]
    result = {
        "rate": args.rate, "seconds": args.seconds, "concurrency": args.concurrency, "people": args.people,
        "store": "sqlite" if url.startswith("sqlite") else "postgresql", "startup_s": round(startup, 2),
        "warm": args.warm, "load_started_s": round(warm, 2),
        "sent": run["sent"], "accepted": len(run["accepted"]), "errors": run["errors"],
        "offered_per_s": args.rate, "events_per_s": round(len(run["accepted"]) / run["elapsed"], 1),
        "elapsed_s": round(run["elapsed"], 2),
        "p50_ms": _ms(_percentile(lat, 0.5)), "p95_ms": _ms(_percentile(lat, 0.95)),
        "p99_ms": _ms(_percentile(lat, 0.99)), "max_ms": _ms(max(lat) if lat else None),
        "late_starts": run["late_starts"], "queue_wait_p99_ms": _ms(_percentile(run["waits"], 0.99)),
        # Resolution lag: from sending a probe event to the first lookup that sees it (probes not
        # seen within 10 s are counted in probes_unresolved, not in these numbers).
        "probes": len(run["freshness"]), "probes_unresolved": len(run["freshness"]) - len(seen),
        "freshness_p50_ms": _ms(_percentile(seen, 0.5), 1), "freshness_p99_ms": _ms(_percentile(seen, 0.99), 1),
        "freshness_max_ms": _ms(max(seen) if seen else None, 1),
        "catch_up_s": None if catch_up is None else round(catch_up, 2), "store_check": check, "lost": check["missing"],
        "server_cpu_s": round(server_cpu, 1), "client_cpu_s": round(client_cpu, 1),
        "server_cpu_ms_per_event": round(server_cpu * 1000 / max(len(run["accepted"]), 1), 2),
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    print("| store | offered/s | achieved/s | sent | accepted | p50 ms | p95 ms | p99 ms | max ms | errors | lost "
          "| duplicated | lag p50 ms | lag p99 ms | lag max ms | probes unresolved |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {result['store']} | {args.rate:g} | {result['events_per_s']} | {result['sent']} | {result['accepted']} "
          f"| {result['p50_ms']} | {result['p95_ms']} | {result['p99_ms']} | {result['max_ms']} "
          f"| {sum(run['errors'].values())} | {check['missing']} | {check['duplicated']} | {result['freshness_p50_ms']} "
          f"| {result['freshness_p99_ms']} | {result['freshness_max_ms']} | {result['probes_unresolved']} |")
    ok = check["missing"] == 0 and check["duplicated"] == 0 and not run["errors"] and not result["probes_unresolved"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
