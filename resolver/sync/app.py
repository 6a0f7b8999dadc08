"""The sync service over HTTP (Starlette; `resolver serve` runs it with uvicorn).

POST /webhooks/salesforce/outbound   SOAP Outbound Message -> the Ack Salesforce expects
POST /webhooks/salesforce/cdc        Change Data Capture JSON
POST /webhooks/segment               a Segment message or {"batch": [...]}
GET  /profiles/{type}/{value}        the person, golden record and identifiers
GET  /refetch                        records a CDC gap event marked for refetch
GET  /healthz                        the stores answer, the worker runs and keeps up (503 if not), its lag
GET  /metrics                        Prometheus metrics

Security: a webhook is accepted when `X-Resolver-Signature: sha256=<hex>` is the HMAC-SHA256 of
`<X-Resolver-Timestamp>.<raw body>` under RESOLVER_WEBHOOK_SECRET (compared in constant time; the
timestamp, Unix seconds, within 300 s of the server's clock), or as its real sender signs it:
- Segment (its Webhooks destination): `X-Signature: <hex>`, the HMAC-SHA1 of the raw body under the
  destination's shared secret (RESOLVER_SEGMENT_SECRET, else RESOLVER_WEBHOOK_SECRET). Segment
  sends no timestamp: a replayed message is a duplicate of its messageId, stored once.
- Salesforce Outbound Messages, which cannot sign: the endpoint URL the org admin configures
  carries `?token=<RESOLVER_SALESFORCE_OUTBOUND_TOKEN>` (a secret, compared in constant time), and
  the message's OrganizationId must be allow-listed (RESOLVER_SALESFORCE_ORG_IDS, comma-separated,
  and sync.salesforce_org_ids; compared in full, 15-character ids in their 18-character form). An
  org id alone is not a secret, so it never authenticates by itself; with an allow-list, even a
  signed Outbound Message from another org is refused.
GET
/profiles and /refetch sign `<timestamp>.<raw path>[?<query>]`, the path as sent (percent-encoding
kept). Anything else: 401. Authentication needs no parsing: an unsigned Outbound Message's
OrganizationId is found in its raw bytes first, and checked again once parsed. Bodies are parsed in
a thread (off the event loop), XML by defusedxml (no DTD, any encoding). Bodies over
sync.max_body_bytes: 413 (from Content-Length, and counted while streaming); an event with more
than sync.max_records_per_event record ids, or a text longer than sync.max_value_chars: 413.
Malformed bodies: 400 naming the problem; nothing of them is stored.

Durability: a 2xx is sent only after the events' transaction committed (see store.py): the request
path validates, authenticates and appends the events to the inbox, nothing more. The worker
(worker.py) resolves them off the request path, in a thread (`worker="thread"`) or in a process
of its own (`worker="process"`, what `resolver serve` runs); a profile lookup first waits until
every event accepted before it is resolved (at most 1 s), so it reflects them. At start the
service answers at once: the worker starts, and takes in what a crash left in the inbox, while it
does (nothing in the inbox can hold the start up). Logs carry event ids and counts, never
identifiers or names.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import hashlib
import hmac
import logging
import os
import time
from datetime import UTC, datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resolver.config import ConfigError
from resolver.sync.payloads import ACK, PayloadError, claimed_org_id, parse_webhook
from resolver.sync.service import SyncService

log = logging.getLogger("resolver.sync")
SIGNATURE_HEADER = "x-resolver-signature"
TIMESTAMP_HEADER = "x-resolver-timestamp"
SIGNATURE_WINDOW = 300  # seconds a signature stays valid, either side of the server's clock
SEGMENT_SIGNATURE_HEADER = "x-signature"  # Segment's: HMAC-SHA1 of the raw body, hex


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


def sign(secret: str, data: bytes, timestamp: int | str) -> str:
    """`sha256=<hex>`: the HMAC of `<timestamp>.<data>`; the timestamp makes the signature expire."""
    message = str(timestamp).encode() + b"." + data
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, data: bytes, now: float | None = None) -> dict[str, str]:
    """The headers that authenticate `data` (a body, or a lookup's raw path and query) now."""
    timestamp = str(int(time.time() if now is None else now))
    return {"X-Resolver-Timestamp": timestamp, "X-Resolver-Signature": sign(secret, data, timestamp)}


def _signed(secret: str | None, data: bytes, header: str | None, timestamp: str | None, now: float) -> bool:
    if not secret or not header or not timestamp:
        return False
    timestamp = timestamp.strip()
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs(now - int(timestamp)) > SIGNATURE_WINDOW:
        return False
    return hmac.compare_digest(sign(secret, data, timestamp).encode(), header.strip().encode("latin-1"))


def segment_signature(secret: str, body: bytes) -> str:
    """What Segment's Webhooks destination sends as `X-Signature`: the hex HMAC-SHA1 of the raw body
    under the destination's shared secret."""
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def _segment_signed(secret: str | None, body: bytes, header: str | None) -> bool:
    if not secret or not header:
        return False
    return hmac.compare_digest(segment_signature(secret, body).encode(), header.strip().lower().encode("latin-1"))


def _token_matches(token: str | None, given: str | None) -> bool:
    return bool(token) and given is not None and hmac.compare_digest(token.encode(), given.encode("utf-8"))


def org_id_18(org: str) -> str | None:
    """A Salesforce org id in its 18-character form, None when it is not an id: a 15-character id
    gets its checksum suffix; an 18-character one stays as given, so a wrong suffix never matches."""
    from resolver.normalize import salesforce_id_18

    org = org.strip()
    if len(org) not in (15, 18):
        return None
    full = salesforce_id_18([org])[0].iloc[0]
    if not isinstance(full, str):
        return None
    return org if len(org) == 18 else full


def _allowed_org_ids(org_ids: list[str]) -> set[str]:
    """The allow-list in 18-character form; a typo (wrong length, characters or suffix) stops the start."""
    allowed = set()
    for org in org_ids:
        full = org_id_18(org)
        if full is None or org_id_18(org.strip()[:15]) != full:
            raise ConfigError(f"sync.salesforce_org_ids: {org.strip()!r} is not a 15- or 18-character org id "
                              "with its checksum suffix")
        allowed.add(full)
    return allowed


def create_app(service: SyncService, secret: str | None = None, org_ids: list[str] | None = None,
               retry_interval: float = 1.0, index_interval: float = 1.0, worker: str = "thread",
               segment_secret: str | None = None, outbound_token: str | None = None) -> Starlette:
    """The service's HTTP app. Secrets not given are read from the environment:
    RESOLVER_WEBHOOK_SECRET, RESOLVER_SEGMENT_SECRET (default: the webhook secret),
    RESOLVER_SALESFORCE_OUTBOUND_TOKEN and RESOLVER_SALESFORCE_ORG_IDS."""
    config = service.config
    secret = secret if secret is not None else os.environ.get("RESOLVER_WEBHOOK_SECRET") or None
    if segment_secret is None:
        segment_secret = os.environ.get("RESOLVER_SEGMENT_SECRET") or secret
    if outbound_token is None:
        outbound_token = os.environ.get("RESOLVER_SALESFORCE_OUTBOUND_TOKEN") or None
    if org_ids is None:
        org_ids = [o for o in os.environ.get("RESOLVER_SALESFORCE_ORG_IDS", "").split(",") if o.strip()]
    allowed_orgs = _allowed_org_ids(list(org_ids) + list(config.sync.salesforce_org_ids))
    limit = config.sync.max_body_bytes
    max_records, max_chars = config.sync.max_records_per_event, config.sync.max_value_chars

    registry = CollectorRegistry()
    requests = Counter("resolver_sync_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    events = Counter("resolver_sync_events", "webhook events", ["channel", "outcome"], registry=registry)
    latency = Histogram("resolver_sync_request_seconds", "request latency", ["endpoint"], registry=registry,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
    dlq_gauge = Gauge("resolver_sync_dlq_pending", "dead letters waiting for a retry", registry=registry)
    dead_gauge = Gauge("resolver_sync_dlq_dead", "dead letters out of automatic retries", registry=registry)
    persons_gauge = Gauge("resolver_sync_persons", "persons in the store", registry=registry)

    async def body_of(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _Refused(413, f"body of {int(length)} bytes is over the limit of {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Refused(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def authorized(request: Request, data: bytes) -> bool:
        headers = request.headers
        return _signed(secret, data, headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER), time.time())

    def allowed_org(org: str | None) -> bool:
        return org is not None and org_id_18(org) in allowed_orgs

    def sender_signed(request: Request, channel: str, data: bytes) -> bool:
        """Authenticated the way the real sender can: Segment's X-Signature; an Outbound Message's
        URL token (its org is checked once parsed)."""
        if channel == "segment":
            return _segment_signed(segment_secret, data, request.headers.get(SEGMENT_SIGNATURE_HEADER))
        if channel == "salesforce_outbound":
            return _token_matches(outbound_token, request.query_params.get("token"))
        return False

    async def webhook(request: Request, channel: str) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            body = await body_of(request)
            signed = authorized(request, body)
            if not signed and not sender_signed(request, channel, body):
                raise _Refused(401, "unauthorized")
            # An Outbound Message by token must come from an allow-listed org: the org it claims is
            # found in the raw bytes first, so nothing of another org's message is parsed, and
            # checked again once parsed. A signed one is checked once parsed, when a list exists.
            by_token = channel == "salesforce_outbound" and not signed
            if by_token and not allowed_org(claimed_org_id(body)):
                raise _Refused(401, "unauthorized")
            org, parsed = await run_in_threadpool(parse_webhook, channel, body, max_records, max_chars)
            if channel == "salesforce_outbound" and (by_token or allowed_orgs) and not allowed_org(org):
                raise _Refused(401, "unauthorized")
            try:
                counts = await asyncio.wrap_future(service.accept(parsed))
            except Exception as exc:  # noqa: BLE001 - the commit failed: nothing was accepted
                log.error("%s: %d events not stored: %s", channel, len(parsed), type(exc).__name__)
                raise _Refused(503, "the store could not commit the events; nothing was accepted") from None
            for outcome, n in counts.items():
                if n:
                    events.labels(channel, outcome).inc(n)
            log.info("%s: %d accepted, %d duplicate, %d failed (%s)", channel, counts["accepted"],
                     counts["duplicates"], counts["failed"], ",".join(e.event_id for e in parsed[:5]))
            status = 200
            if channel == "salesforce_outbound":
                return Response(ACK, media_type="text/xml; charset=utf-8")
            return JSONResponse(counts)
        except PayloadError as exc:
            status = exc.status
            log.info("%s: refused a malformed body (%d)", channel, status)
            return JSONResponse({"error": str(exc)}, status_code=status)
        except _Refused as exc:
            status = exc.status
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        finally:
            requests.labels(channel, str(status)).inc()
            latency.labels(channel).observe(time.perf_counter() - start)

    async def outbound(request: Request) -> Response:
        return await webhook(request, "salesforce_outbound")

    async def cdc(request: Request) -> Response:
        return await webhook(request, "salesforce_cdc")

    async def segment(request: Request) -> Response:
        return await webhook(request, "segment")

    def path_signed(request: Request) -> bool:
        # The path as sent (percent-encoding kept), not as decoded: what the client signed.
        raw = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string") or b""
        return authorized(request, raw + (b"?" + query if query else b""))

    async def profile(request: Request) -> Response:
        start = time.perf_counter()
        if not path_signed(request):
            requests.labels("profiles", "401").inc()
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        id_type, value = request.path_params["id_type"], request.path_params["value"]
        try:
            found = await asyncio.to_thread(service.profile, id_type, value)
        except KeyError:
            requests.labels("profiles", "404").inc()
            return JSONResponse({"error": f"unknown identifier type {id_type!r}"}, status_code=404)
        latency.labels("profiles").observe(time.perf_counter() - start)
        if found is None:
            requests.labels("profiles", "404").inc()
            return JSONResponse({"error": "no person holds this identifier"}, status_code=404)
        requests.labels("profiles", "200").inc()
        return JSONResponse(found)

    async def refetch(request: Request) -> Response:
        if not path_signed(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return JSONResponse({"records": await asyncio.to_thread(service.refetch)})

    worker_of: dict = {}  # "running": the worker (set by the lifespan)

    async def healthz(request: Request) -> Response:
        try:
            lag = await asyncio.to_thread(service.lag)
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"status": "error", "store": type(exc).__name__}, status_code=503)
        health = worker_health(worker_of.get("running"), lag, config.sync.max_lag_seconds, time.time())
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    async def metrics(request: Request) -> Response:
        counts = await asyncio.to_thread(service.counts)
        dlq_gauge.set(counts["dlq_pending"])
        dead_gauge.set(counts["dlq_dead"])
        persons_gauge.set(counts["persons"])
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # The worker resolves the inbox, and runs the model's step for new records, the blocking
        # keys of changed golden records and the due dead-letter retries (off the request path).
        from resolver.sync.worker import start_worker

        # Lookups wait in a thread for the events accepted before them (at most read_wait): enough
        # threads that waiting lookups never queue behind one another (the default is CPUs + 4).
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="resolver-io"))
        options = {"retry_interval": retry_interval, "index_interval": index_interval}
        running = worker_of["running"] = start_worker(service, worker, **options)
        service.resolving, service.nudge = True, lambda: running.wake()
        service.worker_ready = lambda: running.ready()
        service.worker_position = lambda: running.progress.position
        # The service answers at once: the worker starts, and resolves what a crash left in the
        # inbox, meanwhile (lookups wait for it, /healthz reports it). The resolver that lookups
        # normalize with is loaded once the worker has started (a lookup before loads it itself):
        # loading holds this process's interpreter lock, which the start needs more.
        async def load_resolver() -> None:
            while not worker_of["running"].ready() and worker_of["running"].alive():
                await asyncio.sleep(0.05)
            await asyncio.to_thread(_load_and_freeze, service)

        loading = asyncio.create_task(load_resolver())

        async def watch() -> None:  # a worker that died is started again (its work is in the inbox)
            nonlocal running
            while True:
                await asyncio.sleep(1.0)
                if not running.alive():
                    log.error("the resolver worker exited; starting it again")
                    running = worker_of["running"] = start_worker(service, worker, **options)

        watcher = asyncio.create_task(watch())
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            with contextlib.suppress(Exception):  # its failure shows at the first lookup
                await loading
            await asyncio.to_thread(running.stop)
            service.resolving = False
            await asyncio.to_thread(service.close)

    routes = [
        Route("/webhooks/salesforce/outbound", outbound, methods=["POST"]),
        Route("/webhooks/salesforce/cdc", cdc, methods=["POST"]),
        Route("/webhooks/segment", segment, methods=["POST"]),
        Route("/profiles/{id_type}/{value:path}", profile, methods=["GET"]),
        Route("/refetch", refetch, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    return app


def _load_and_freeze(service: SyncService) -> None:
    service.resolver  # noqa: B018 - loads it
    # Everything loaded by now (config, model, libraries) lives as long as the process: keep it
    # out of the garbage collector's full passes, which would otherwise stall the event loop.
    gc.collect()
    gc.freeze()


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else round(max(0.0, now - at), 3)


def worker_health(running, lag: dict, max_lag: float, now: float) -> dict:
    """/healthz's answer: "ok", or why not ("worker dead", "worker stuck": an accepted event has
    waited over max_lag seconds since the running worker started, which is what it had to take it
    in), with the lag: queue depth, oldest unresolved event's age, last batch's time."""
    oldest = lag["oldest_unresolved_at"]
    oldest_at = datetime.strptime(oldest, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp() if oldest else None
    progress = running.progress if running is not None else None
    last = progress.last_batch_at if progress is not None else None
    waited = _age(now, None if oldest_at is None or progress is None else max(oldest_at, progress.started_at))
    if running is None or not running.alive():
        worker = "dead"
    elif waited is not None and waited > max_lag:
        worker = "stuck"
    else:
        worker = "running" if running.ready() else "starting"
    return {"status": "ok" if worker in ("running", "starting") else f"worker {worker}", "worker": worker,
            "queue_depth": lag["queue_depth"], "oldest_unresolved_age_s": _age(now, oldest_at),
            "last_batch_at": None if last is None else datetime.fromtimestamp(last, UTC).isoformat(),
            "last_batch_age_s": _age(now, last), "max_lag_s": max_lag}
