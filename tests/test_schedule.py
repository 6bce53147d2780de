"""The open-loop arrival schedule: counts, determinism, spikes, per-worker shares."""

from __future__ import annotations

import math

import pytest

from lab.errors import ConfigError
from lab.schedule import Schedule, arrivals, from_params, spike_windows, worker_share

SPIKY = Schedule(base_rate=10, spike_rate=200, spike_every=20, spike_length=5, spike_offset=3)


def test_rate_and_pieces():
    assert SPIKY.rate_at(0) == 10
    assert SPIKY.rate_at(3) == 200
    assert SPIKY.rate_at(7.99) == 200
    assert SPIKY.rate_at(8) == 10
    assert SPIKY.rate_at(23.5) == 200
    pieces = list(SPIKY.pieces(30))
    assert pieces[0] == (0.0, 3, 10, False)
    assert [(a, b) for a, b, _, spike in pieces if spike] == [(3, 8), (23, 28)]
    assert pieces[-1][1] == 30
    # the pieces tile [0, 30) without gaps
    assert all(p[1] == q[0] for p, q in zip(pieces, pieces[1:], strict=False))


def test_spike_windows_are_absolute_and_clipped():
    assert spike_windows(SPIKY, 1000.0, 25) == [[1003.0, 1008.0], [1023.0, 1025.0]]
    assert spike_windows(Schedule(base_rate=5), 1000.0, 60) == []
    assert spike_windows(SPIKY, 1000.0, 2) == []


def test_poisson_counts_within_tolerance():
    times = list(arrivals(SPIKY, seed=7, until=60))
    expected = SPIKY.expected(60)  # 10*45 + 200*15 = 3450
    assert expected == pytest.approx(3450)
    assert abs(len(times) - expected) < 4 * math.sqrt(expected)
    assert times == sorted(times) and times[0] >= 0 and times[-1] < 60
    in_spikes = sum(1 for t in times if SPIKY.rate_at(t) == 200)
    assert abs(in_spikes - 3000) < 4 * math.sqrt(3000)
    # spikes are where expected: the density inside a spike is ~20x the base
    per_s_spike = in_spikes / 15
    per_s_base = (len(times) - in_spikes) / 45
    assert 12 < per_s_spike / per_s_base < 30


def test_same_seed_same_arrivals_other_seed_others():
    a = list(arrivals(SPIKY, seed=1, until=30))
    assert a == list(arrivals(SPIKY, seed=1, until=30))
    assert a != list(arrivals(SPIKY, seed=2, until=30))


def test_even_spacing():
    times = list(arrivals(Schedule(base_rate=4, poisson=False), seed=1, until=2))
    assert times == [0.125, 0.375, 0.625, 0.875, 1.125, 1.375, 1.625, 1.875]
    spiky = Schedule(base_rate=2, spike_rate=10, spike_every=10, spike_length=1,
                     spike_offset=1, poisson=False)
    times = list(arrivals(spiky, seed=1, until=10))
    assert len(times) == 2 + 10 + 16  # [0,1) at 2/s, [1,2) at 10/s, [2,10) at 2/s


def test_unbounded_stream_is_lazy():
    stream = arrivals(SPIKY, seed=3)
    first = [next(stream) for _ in range(10_000)]
    assert first == sorted(first) and first[-1] > 20


def test_worker_shares_add_up():
    workers = 4
    total = 0
    streams = []
    for w in range(workers):
        share, seed, phase = worker_share(SPIKY, 1, w, workers)
        assert share.base_rate == pytest.approx(2.5) and share.spike_rate == pytest.approx(50)
        streams.append(list(arrivals(share, seed, until=60, phase=phase)))
        total += len(streams[-1])
    assert abs(total - 3450) < 4 * math.sqrt(3450)
    assert streams[0] != streams[1]  # own random streams, not copies
    # evenly spaced shares interleave into one evenly spaced stream
    even = Schedule(base_rate=8, poisson=False)
    merged = []
    for w in range(workers):
        share, seed, phase = worker_share(even, 1, w, workers)
        merged += arrivals(share, seed, until=1, phase=phase)
    merged.sort()
    assert merged == pytest.approx([(k + 0.5) / 8 for k in range(8)])
    with pytest.raises(ConfigError):
        worker_share(SPIKY, 1, 4, 4)


def test_from_params_and_validation():
    s = from_params({"base_rate": "2", "spike_rate": 50, "spike_every": 10.0,
                     "spike_length": 2, "arrivals": "even"})
    assert s == Schedule(2, 50, 10, 2, 0, poisson=False)
    with pytest.raises(ConfigError, match="spike_length"):
        Schedule(base_rate=1, spike_rate=2, spike_every=5, spike_length=6)
    with pytest.raises(ConfigError, match="base_rate"):
        Schedule(base_rate=-1)
    with pytest.raises(ConfigError, match="arrivals"):
        from_params({"arrivals": "bursty"})
    with pytest.raises(ConfigError, match="not a number"):
        from_params({"base_rate": "fast"})


def test_zero_rates_end_instead_of_spinning():
    assert list(arrivals(Schedule(base_rate=0), seed=1)) == []
    assert list(arrivals(Schedule(0, 0, spike_every=5, spike_length=1), seed=1)) == []
    # a zero base rate between spikes is fine: arrivals only inside spikes
    times = list(arrivals(Schedule(0, 100, spike_every=5, spike_length=1), seed=1, until=20))
    assert times and all(t % 5 < 1 for t in times)
