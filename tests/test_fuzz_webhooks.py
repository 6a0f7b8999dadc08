"""Webhook fuzzing (bounded, for CI): mutated and arbitrary bodies and lookup paths, signed and
unsigned, against the real `resolver serve` on a real batch state. No request may get a 5xx or go
unanswered, /healthz stays fast, the server logs no traceback, and every accepted event is
resolved or in the dead-letter queue. The mutations are benchmarks/fuzz_webhooks.py's (the longer,
seeded run: `python benchmarks/fuzz_webhooks.py --n 1000 --seed 0`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fuzz_webhooks as fuzz  # noqa: E402

pytestmark = pytest.mark.slow  # a generated dataset behind a running server

def _fuzz(examples: int) -> settings:
    # Derandomized: CI runs the same cases on every change; the benchmark varies the seed.
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))
ANSWERED = {"2xx", "4xx"}  # no 5xx, no timeout, no connection lost


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import httpx

    tmp = tmp_path_factory.mktemp("fuzz-webhooks")
    root = fuzz.prepare(tmp / "data", tmp / "run")
    log_path = tmp / "serve.log"
    with fuzz.serving(root, log_path) as url, httpx.Client(base_url=url, timeout=5.0) as http:
        yield http, root, log_path


@_fuzz(300)
@given(endpoint=st.sampled_from(fuzz.ENDPOINTS), kind=st.sampled_from(fuzz.MUTATIONS), signed=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_mutated_requests_are_answered_without_a_server_error(server, endpoint, kind, signed, seed):
    http, _, _ = server
    request = fuzz.case(endpoint, kind, signed, seed)
    assert fuzz.send(http, request) in ANSWERED, request.family


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | \
    st.text(st.characters(exclude_categories=()), max_size=20)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                            max_size=3), max_leaves=8)
_segment = st.fixed_dictionaries({"type": st.sampled_from(["identify", "track", "alias", "group", "nope"]),
                                  "messageId": st.text(max_size=12).map(lambda t: "hyp-" + t),
                                  "userId": _json, "anonymousId": _json, "previousId": _json,
                                  "timestamp": _json, "traits": _json, "context": _json})
_cdc_header = st.fixed_dictionaries({"entityName": st.sampled_from(["Contact", "Lead", "Account", "Opportunity"]) | _json,
                                     "recordIds": st.lists(st.text(min_size=1, max_size=18), max_size=3) | _json,
                                     "changeType": st.sampled_from(["CREATE", "UPDATE", "DELETE", "GAP_UPDATE"]),
                                     "transactionKey": st.text(min_size=1, max_size=8).map(lambda t: "hyp-" + t),
                                     "sequenceNumber": _json, "commitTimestamp": _json})
_cdc = st.builds(lambda header, fields: {"payload": {"ChangeEventHeader": header, **fields}}, _cdc_header,
                 st.dictionaries(st.sampled_from(["Email", "Phone", "Name", "MailingAddress", "FirstName", "LastName",
                                                  "LastModifiedDate", "Id"]), _json, max_size=5))


@_fuzz(200)
@given(target=st.sampled_from(["segment", "cdc", "outbound"]),
       body=st.one_of(st.binary(max_size=300), _json.map(lambda d: json.dumps(d).encode()),
                      _segment.map(lambda d: json.dumps(d).encode()), _cdc.map(lambda d: json.dumps(d).encode())))
def test_arbitrary_signed_bodies_are_answered_without_a_server_error(server, target, body):
    from resolver.sync.app import signed_headers

    http, _, _ = server
    request = fuzz.Case(target, "POST", fuzz.PATHS[target], body, signed_headers(fuzz.SECRET, body))
    assert fuzz.send(http, request) in ANSWERED


def test_after_the_fuzzing_healthz_is_fast_and_every_event_is_accounted_for(server):
    """Runs after the two above (file order). Every accepted event resolved, or in the dead-letter
    queue: a poison event that gets past the parsers is the worker's to dead-letter."""
    http, root, log_path = server
    assert fuzz.healthz(http) == "fast"
    counts = fuzz.accounted(root / "state", wait=60)
    assert counts["resolved"] > 0 and counts["unresolved"] == 0, counts
    assert "Traceback" not in log_path.read_text(encoding="utf-8", errors="replace")
