"""Open-loop arrival schedules: when requests are meant to start, whatever the server does.

A schedule is a piecewise-constant rate: ``base_rate`` requests per second, except during
spikes of ``spike_length`` seconds every ``spike_every`` seconds (the first one starting at
``spike_offset``), when it is ``spike_rate``. Arrivals are either a Poisson process (seeded,
exponential gaps) or evenly spaced. Times are seconds after the schedule's start ``t0``.

With several Locust processes each one takes a share: ``worker_share`` divides the rates by the
number of workers and gives each worker its own random stream (Poisson) or its own phase (even
spacing), so the union of all workers has the whole rate.

Pure: no clock, no I/O; the Locust side (lab.users) sleeps until each arrival.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace

from lab.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    base_rate: float  # requests per second outside spikes
    spike_rate: float = 0.0  # requests per second during a spike
    spike_every: float = 0.0  # seconds from one spike start to the next; 0 = no spikes
    spike_length: float = 0.0  # seconds
    spike_offset: float = 0.0  # seconds from t0 to the first spike
    poisson: bool = True  # False: evenly spaced arrivals

    def __post_init__(self) -> None:
        for key in ("base_rate", "spike_rate", "spike_every", "spike_length", "spike_offset"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or math.isnan(value) or value < 0:
                raise ConfigError(f"schedule {key} must be a number >= 0, not {value!r}",
                                  fix=f"-P {key}=<number>")
        if self.spike_every and self.spike_length > self.spike_every:
            raise ConfigError(
                f"spike_length {self.spike_length:g} s is longer than spike_every "
                f"{self.spike_every:g} s", fix="lower -P spike_length or raise -P spike_every")

    @property
    def spiky(self) -> bool:
        return self.spike_every > 0 and self.spike_length > 0

    def rate_at(self, t: float) -> float:
        """The rate at ``t`` seconds after t0."""
        if self.spiky and t >= self.spike_offset \
                and (t - self.spike_offset) % self.spike_every < self.spike_length:
            return self.spike_rate
        return self.base_rate

    def segments(self, until: float | None = None) -> Iterator[tuple[float, float, float]]:
        """``(start, end, rate)`` pieces from 0 to ``until`` (forever when None)."""
        for start, end, rate, _spike in self.pieces(until):
            yield start, end, rate

    def pieces(self, until: float | None = None
               ) -> Iterator[tuple[float, float, float, bool]]:
        """``(start, end, rate, is_spike)`` pieces from 0 to ``until`` (forever when None)."""
        end = math.inf if until is None else until
        if end <= 0:
            return
        if not self.spiky:
            yield 0.0, end, self.base_rate, False
            return
        if self.spike_offset > 0:
            yield 0.0, min(self.spike_offset, end), self.base_rate, False
        k = 0
        while (start := self.spike_offset + k * self.spike_every) < end:
            spike_end = start + self.spike_length
            next_start = start + self.spike_every
            yield start, min(spike_end, end), self.spike_rate, True
            if spike_end < end and spike_end < next_start:
                yield spike_end, min(next_start, end), self.base_rate, False
            k += 1

    def share(self, fraction: float) -> Schedule:
        """The same shape at ``fraction`` of the rates (one worker's or one server's share)."""
        return replace(self, base_rate=self.base_rate * fraction,
                       spike_rate=self.spike_rate * fraction)

    def expected(self, until: float) -> float:
        """Expected number of arrivals in [0, until)."""
        return sum((b - a) * rate for a, b, rate in self.segments(until))


def from_params(params: dict[str, object], *, prefix: str = "") -> Schedule:
    """Build a schedule from scenario parameters (``base_rate``, ``spike_rate``... and
    ``arrivals`` = ``poisson`` or ``even``), optionally with a prefix such as ``serverless_``."""

    def number(key: str, default: float = 0.0) -> float:
        value = params.get(prefix + key, default)
        if value is None:
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"-P {prefix}{key}={value!r} is not a number",
                              fix=f"-P {prefix}{key}=<number>") from None

    kind = str(params.get(prefix + "arrivals", "poisson")).strip().lower()
    if kind not in ("poisson", "even"):
        raise ConfigError(f"-P {prefix}arrivals={kind!r} is not poisson or even",
                          fix=f"-P {prefix}arrivals=poisson")
    return Schedule(base_rate=number("base_rate"), spike_rate=number("spike_rate"),
                    spike_every=number("spike_every"), spike_length=number("spike_length"),
                    spike_offset=number("spike_offset"), poisson=kind == "poisson")


def arrivals(schedule: Schedule, seed: int | str, *, until: float | None = None,
             phase: float = 0.5) -> Iterator[float]:
    """Arrival times (seconds after t0, increasing) up to ``until`` (forever when None).

    Poisson: exponential gaps drawn from ``random.Random(seed)``; the process restarts at each
    rate change, which is exact because it is memoryless. Even: ``1/rate`` apart, the first at
    ``phase/rate`` after each piece starts (``phase`` in [0, 1)).
    """
    if schedule.base_rate <= 0 and (not schedule.spiky or schedule.spike_rate <= 0):
        return  # nothing ever arrives (and an endless walk over empty pieces would hang)
    rng = random.Random(f"pooler-lab:{seed}")
    for start, end, rate in schedule.segments(until):
        if rate <= 0:
            continue
        if schedule.poisson:
            t = start + rng.expovariate(rate)
            while t < end:
                yield t
                t += rng.expovariate(rate)
        else:
            k = 0
            while True:
                t = start + (k + phase) / rate
                if t >= end:
                    break
                yield t
                k += 1


def worker_share(schedule: Schedule, seed: int, worker: int, workers: int,
                 stream: str = "") -> tuple[Schedule, str, float]:
    """One worker's ``(schedule, seed, phase)`` for ``arrivals``: the rates divided by
    ``workers``, a random stream of its own, and evenly spaced arrivals interleaved."""
    if workers < 1 or not 0 <= worker < workers:
        raise ConfigError(f"worker {worker} of {workers} is out of range",
                          fix="set LAB_WORKERS to the number of Locust processes")
    key = f"{seed}:{stream}:{worker}"
    return schedule.share(1.0 / workers), key, (worker + 0.5) / workers


def spike_windows(schedule: Schedule, t0: float, duration: float) -> list[list[float]]:
    """The spikes within ``duration`` seconds of ``t0``, as absolute ``[start, end]`` pairs."""
    if not schedule.spiky:
        return []
    return [[t0 + a, t0 + b] for a, b, _rate, spike in schedule.pieces(duration) if spike]
