"""lab.locust_stats: successes fed in bulk leave Locust's statistics as one event each would.

Run by tests/test_locust_stats.py in a pytest of its own (importing Locust patches the process
with gevent, which must happen before anything imports ssl: the main test process cannot).
"""

import locust  # noqa: F401  (first: gevent patches the process)
import numpy as np
import pytest
from locust import stats as locust_stats

from lab import samples
from lab.locust_stats import buckets, feed

T0 = 1_800_000_000.25  # wall seconds of the first request's end


def _requests(n: int, seed: int = 7):
    """(kind, intended, end) of n successes over about three seconds, perf_counter seconds,
    response times from sub-millisecond to 20 s, ties at .5 ms included."""
    rng = np.random.default_rng(seed)
    end = np.sort(rng.uniform(0.0, 3.0, n)) + 100.0
    ms = np.concatenate([rng.exponential(3.0, n - 40), rng.uniform(100, 20_000, 30),
                         np.array([0.5, 1.5, 2.5, 99.5, 150.0, 145.0, 1250.0, 25.0, 0.0, 7.5])])
    rng.shuffle(ms)
    intended = end - ms / 1000.0
    kind = rng.integers(0, 3, n).astype(float)
    return kind, intended, end


def _state(entry: locust_stats.StatsEntry) -> dict:
    return {"num_requests": entry.num_requests,
            "num_reqs_per_sec": dict(entry.num_reqs_per_sec),
            "response_times": dict(entry.response_times),
            "min": entry.min_response_time, "max": entry.max_response_time,
            "last": entry.last_request_timestamp,
            "cache": {t: (dict(c.response_times), c.num_requests)
                      for t, c in (entry.response_times_cache or {}).items()}}


@pytest.fixture
def clock(monkeypatch):
    now = [T0]
    monkeypatch.setattr(locust_stats.time, "time", lambda: now[0])
    return now


def test_bulk_feed_matches_one_log_request_per_success(clock):
    kind, intended, end = _requests(3000)
    to_wall = T0 - 100.0
    keys = [("select1", "transaction"), ("select1", "transaction"), ("insert", "direct")]

    one_by_one = locust_stats.RequestStats()
    for k, i, e in zip(kind.tolist(), intended.tolist(), end.tolist(), strict=True):
        clock[0] = e + to_wall  # Locust reads its clock when the event fires, at the end
        name, method = keys[int(k)]
        one_by_one.log_request(method, name, (e - i) * 1000.0, 0)

    clock[0] = T0  # the entries' first snapshot, as when the first request was logged
    bulk = locust_stats.RequestStats()
    for name, method in dict.fromkeys(keys):
        bulk.get(name, method)
    oks = bytearray()
    for k, i, e in zip(kind.tolist(), intended.tolist(), end.tolist(), strict=True):
        oks += samples.OK_PACK(k, i, e, e, e, float("nan"))
    # two chunks, as the flusher takes them
    half = 1500 * samples.OK_STRUCT.size
    assert feed(bulk, bytes(oks[:half]), keys, to_wall) == 1500
    assert feed(bulk, bytes(oks[half:]), keys, to_wall) == 1500

    for key in dict.fromkeys(keys):
        assert _state(bulk.get(*key)) == _state(one_by_one.get(*key))
    assert _state(bulk.total) == _state(one_by_one.total)
    assert bulk.total.total_response_time == pytest.approx(one_by_one.total.total_response_time,
                                                          rel=1e-12)


def test_kinds_that_fired_their_own_events_are_not_counted_again():
    kind, intended, end = _requests(100)
    oks = b"".join(samples.OK_PACK(k, i, e, e, e, 0.001)
                   for k, i, e in zip(kind, intended, end, strict=True))
    stats = locust_stats.RequestStats()
    keys = [("a", "direct"), None, ("a", "direct")]
    fed = feed(stats, oks, keys, 0.0)
    assert fed == int((kind != 1).sum()) == stats.total.num_requests
    assert stats.get("a", "direct").num_requests == fed
    assert feed(stats, b"", keys, 0.0) == 0


def test_buckets_are_locusts_own():
    values = np.array([0.0, 0.4999, 0.5, 1.5, 2.5, 99.49, 99.5, 100.0, 145.0, 147.0, 999.0,
                       1250.0, 3432.0, 58760.0, 123456.7])
    assert buckets(values).tolist() == [locust_stats.bucket_response_time(v)
                                        for v in values.tolist()]


def test_a_replaced_bucket_function_is_used(monkeypatch):
    monkeypatch.setattr(locust_stats, "bucket_response_time", lambda v: int(v) // 10 * 10)
    assert buckets(np.array([3.0, 17.0, 250.0])).tolist() == [0, 10, 250]
