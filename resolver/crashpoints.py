"""Test-only: named moments at which a run kills itself with SIGKILL, so that tests can check what
a kill at exactly that moment leaves behind (tests/test_crash.py, benchmarks/kill_runs.py).

RESOLVER_CRASH_AT=NAME (read once, at import) names the moment; unset, which it always is outside
those tests, `crash_point` does nothing.
"""

import os
import signal

_AT = os.environ.get("RESOLVER_CRASH_AT")


def crash_point(name: str) -> None:
    if name == _AT:
        os.kill(os.getpid(), signal.SIGKILL)
