"""Recovery of the sync service after `kill -9`: how long it is down, and how long the events it
accepted just before the kill take to resolve.

    python benchmarks/restart_webhooks.py                 # 3 kills, SQLite store
    python benchmarks/restart_webhooks.py --kills 5 --store postgresql://user@127.0.0.1:5432/db

Each round: `resolver serve` (a subprocess, from a batch run's state: load_webhooks.py's data)
takes signed Segment events from 4 client threads for --seconds, is killed with SIGKILL mid-load,
and is started again. Measured from the restarted process's start: the first 200 from /healthz
(`healthy_s`), and the moment every event acknowledged before the kill is resolved in the store's
events table, read straight from the database (`resolved_s`). The service runs with the working
directory of the data, so PYTHONPATH picks the code measured (e.g. another checkout's, for a
before/after). Results go to benchmarks/results/restart_webhooks.json (strict JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from load_webhooks import SECRET, _free_port, _prepare, _sign, _stored  # noqa: E402 - benchmarks/ is not a package


def _serve(work: Path, url: str, port: int, log) -> tuple[subprocess.Popen, float]:
    """Start serve; (the process, seconds from its start to the first 200 from /healthz)."""
    import httpx

    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "resolver", "serve", "--config", str(work / "data" / "resolver.yaml"),
                             "--state", str(work / "state"), "--store", url, "--port", str(port), "--quiet"],
                            env={**os.environ, "RESOLVER_WEBHOOK_SECRET": SECRET}, stdout=log, stderr=log, cwd=work)
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited; see {work / 'serve.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, time.perf_counter() - started
        except httpx.HTTPError:
            time.sleep(0.01)


def _load(port: int, round_no: int, seconds: float) -> tuple[list[str], threading.Event, list[threading.Thread]]:
    """Post signed identify events from 4 threads, still posting after `seconds`: (the ids
    acknowledged (2xx), the event that stops them, the threads)."""
    import httpx

    accepted: list[str] = []
    stop = threading.Event()

    def client(worker: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            i = 0
            while not stop.is_set():
                mid = f"restart-{round_no}-{worker}-{i}"
                body = json.dumps({"type": "identify", "messageId": mid, "userId": f"u-restart-{worker}-{i % 40}",
                                   "anonymousId": f"a-{mid}"}).encode()
                try:
                    if http.post("/webhooks/segment", content=body, headers=_sign(body)).status_code == 200:
                        accepted.append(f"segment:{mid}")
                except httpx.HTTPError:
                    pass  # the server died under this request: it was never acknowledged
                i += 1

    threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    return accepted, stop, threads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="load before each kill")
    parser.add_argument("--store", help="store URL (default: SQLite under the run's state)")
    parser.add_argument("--data", default=str(HERE / "data"))
    parser.add_argument("--results", default=str(HERE / "results" / "restart_webhooks.json"))
    args = parser.parse_args()

    work = _prepare(args.people, Path(args.data), Path(args.data) / "sync-restart-run").resolve()
    url = args.store or f"sqlite:///{(work / 'state' / 'sync.db').resolve()}"
    port = _free_port()
    rounds = []
    with open(work / "serve.log", "wb") as log:
        proc, first_start = _serve(work, url, port, log)  # the first start imports the batch: not measured
        try:
            for round_no in range(args.kills):
                accepted, stop, threads = _load(port, round_no, args.seconds)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                stop.set()
                for t in threads:
                    t.join()
                restarted = time.perf_counter()
                proc, healthy = _serve(work, url, port, log)
                while (check := _stored(url, accepted))["missing"] or check["not_resolved"]:
                    time.sleep(0.02)
                resolved = time.perf_counter() - restarted
                rounds.append({"accepted_before_kill": len(accepted), "healthy_s": round(healthy, 2),
                               "resolved_s": round(resolved, 2), "duplicated": check["duplicated"]})
                print(f"kill {round_no + 1}: {len(accepted)} acknowledged before the kill; healthy after "
                      f"{healthy:.2f} s, all resolved after {resolved:.2f} s", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    result = {"store": "sqlite" if url.startswith("sqlite") else "postgresql", "first_start_s": round(first_start, 2),
              "rounds": rounds, "healthy_s_max": max(r["healthy_s"] for r in rounds),
              "resolved_s_max": max(r["resolved_s"] for r in rounds)}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    print(json.dumps(result))
    return 0 if all(r["duplicated"] == 0 for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
