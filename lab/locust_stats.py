"""Locust's own statistics fed with a chunk's successes at once, instead of one
``events.request`` per success (issue "Scale", a lean load path).

Locust counts a request through ``events.request`` -> ``RequestStats.log_request``: for the
request's entry and for the total, a clock read, a per-second counter, the sum, min and max, a
histogram bucket and, on a new second, a snapshot for the current percentiles. Without it
for successes the lab's Locust child executes 14% fewer instructions per `SELECT 1`
(callgrind, docs/benchmarks.md). The lab records every success in its writer's columnar
buffer anyway (``samples.ChunkWriter.oks``), so ``feed`` gives Locust's statistics the same
numbers once a second, when a chunk is taken: every request counted in the second it ended,
its response time (``total_ms``) in Locust's own bucket (``locust.stats.bucket_response_time``),
sum, min, max, and the snapshots taken at the same second boundaries ``StatsEntry.log`` takes
them. Locust's summary, CSV and web UI show the same counts, up to a second later while the
test runs.

Failures still go through ``events.request`` one by one (Locust's failure table needs the
exception, and they are rare). A user class that needs every success as an event (a listener
of its own) sets ``LabUser.request_events = True``; its successes are then not fed here.

The Locust side only (lab.users imports it; importing Locust patches the process with
gevent). numpy and Locust's ``StatsEntry`` attributes (``_cache_response_times`` is Locust's
own snapshot method, called where ``StatsEntry.log`` calls it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from locust import stats as locust_stats

from lab import samples

_LOCUST_BUCKET = locust_stats.bucket_response_time
_KIND, _INTENDED, _END = (samples.OK_FIELDS.index(f) for f in ("kind", "intended", "end"))


def buckets(response_times: np.ndarray) -> np.ndarray:
    """``locust.stats.bucket_response_time`` of each value: below 100 ms it is Python's
    ``round`` (half to even, as ``np.rint``); above, and whenever Locust's function was
    replaced (it may be, for custom bucketing), the function itself, value by value."""
    bucket = locust_stats.bucket_response_time
    if bucket is not _LOCUST_BUCKET:
        return np.array([bucket(v) for v in response_times.tolist()], dtype=np.int64)
    out = np.rint(response_times).astype(np.int64)
    big = response_times >= 100
    if big.any():
        out[big] = [bucket(v) for v in response_times[big].tolist()]
    return out


def log_many(entry: locust_stats.StatsEntry, response_times: np.ndarray, ended: np.ndarray,
             bucketed: np.ndarray) -> None:
    """``entry.log(rt, 0)`` for each response time (ms) ended at ``ended`` (wall seconds),
    in bulk: the same counts, sum, min, max, per-second counts and histogram. ``bucketed``:
    ``buckets(response_times)``, computed once for an entry and the total."""
    if not len(response_times):
        return
    seconds = np.floor(ended).astype(np.int64)
    first, last = int(seconds.min()), int(seconds.max())
    spans = [(first, slice(None))] if first == last else [
        (int(s), seconds == s) for s in np.unique(seconds)]
    for second, which in spans:
        rts = response_times[which]
        previous = entry.last_request_timestamp
        if entry.use_response_times_cache and previous and second > int(previous):
            entry._cache_response_times(second - 1)  # where StatsEntry.log takes it
        n = len(rts)
        entry.num_requests += n
        entry.num_reqs_per_sec[second] += n
        entry.last_request_timestamp = max(previous or 0.0, float(ended[which].max()))
        entry.total_response_time += float(rts.sum())
        low = float(rts.min())
        entry.min_response_time = (low if entry.min_response_time is None
                                   else min(entry.min_response_time, low))
        entry.max_response_time = max(entry.max_response_time, float(rts.max()))
        values, counts = np.unique(bucketed[which], return_counts=True)
        histogram = entry.response_times
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            histogram[value] += count


def feed(stats: locust_stats.RequestStats, oks: bytes, keys: Sequence[tuple[str, str] | None],
         to_wall: float) -> int:
    """Count the successes of ``oks`` (``samples.OK_FIELDS`` doubles each) in Locust's
    ``stats``. ``keys[kind]``: the (name, method) Locust files a kind's successes under, None
    for a kind whose successes fired their own events. Returns how many were counted."""
    if not oks:
        return 0
    a = samples.ok_array(oks)
    kinds = a[:, _KIND].astype(np.int64)
    response_times = (a[:, _END] - a[:, _INTENDED]) * 1000.0  # total_ms, as request() has it
    ended = a[:, _END] + to_wall
    bucketed = buckets(response_times)
    fed = np.zeros(len(a), dtype=bool)
    by_key: dict[tuple[str, str], list[int]] = {}
    for kind in np.unique(kinds).tolist():
        key = keys[kind]
        if key is not None:
            by_key.setdefault(key, []).append(kind)
    for (name, method), its_kinds in by_key.items():
        which = (kinds == its_kinds[0]) if len(its_kinds) == 1 else np.isin(kinds, its_kinds)
        log_many(stats.get(name, method), response_times[which], ended[which],
                 bucketed[which])
        fed |= which
    if fed.all():
        log_many(stats.total, response_times, ended, bucketed)
    elif fed.any():
        log_many(stats.total, response_times[fed], ended[fed], bucketed[fed])
    return int(fed.sum())
