"""One timebase for a run: the orchestrator, its sampler, the fault injector and every Locust
process stamp times as ``offset + time.perf_counter()``.

The wall clock is read once, by the orchestrator (``offset = time.time() - perf_counter()``),
and handed to its Locust processes in ``LAB_CLOCK_OFFSET``; from then on every stamp follows the
monotonic clock, which Linux shares between processes. A virtual machine's wall clock can jump
(seen here: 10 s at once during a soak run); without one timebase the faults' times, the
connection samples and the requests' times would then disagree by the jump. A process started
without the variable (plain `locust -f`) takes its own offset. Pure standard library: it runs
in the orchestrator and under gevent alike.
"""

from __future__ import annotations

import os
import time

ENV = "LAB_CLOCK_OFFSET"
# An offset from another host or clock base would put "now" days away: then it is not ours.
_SANE_S = 86_400.0
_offset: float | None = None


def offset() -> float:
    """Wall time at perf_counter() == 0, fixed for the life of the process (and its run)."""
    global _offset
    if _offset is None:
        own = time.time() - time.perf_counter()
        try:
            given = float(os.environ.get(ENV, ""))
        except ValueError:
            given = None
        _offset = given if given is not None and abs(given - own) < _SANE_S else own
    return _offset


def now() -> float:
    """Unix time on the run's timebase."""
    return offset() + time.perf_counter()


def environment() -> dict[str, str]:
    """What a child process needs to share the timebase."""
    return {ENV: repr(offset())}
