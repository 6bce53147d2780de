"""What an injected fault did to one group's requests: the numbers of the report's fault table.

Pure (numpy over the analysis' row arrays; no I/O but ``read_events``). For each fault of a
segment, from its events in ``faults.jsonl`` (docs/formats.md):

* in effect: from the inject's start to the end of its recover (kill/stop/pause/disconnect/
  pool-pause/kill-clients), or to the end of the action itself (restart, fast-restart,
  reconnect, reload);
* failed during: failed requests that ended after the fault began and were due before it ended
  (held connections it broke, and arrivals it refused); failed after: due once it had ended;
  not started: arrivals due from the fault on that never started;
* first success: when the first successful request due from the fault's first failure on
  ended (from the fault's start; with no failure, from the start itself: a request that slipped
  through before the fault took effect is no recovery);
* recovered: the first half-second window (by due time) from the fault on that begins a second
  without a failure, with a success, and with its p95 back within 20% (or 2 ms) of the p95 of
  the 10 s before the fault; None when that never happened before the segment ended;
* backends and clients before (median of the 5 s before), during (peak, from when the inject's
  action was done, for a fault held until a recover: a sample taken while `docker kill` was
  still under way saw the pooler's backends of before) and after (median from 1 s after it
  ended).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

EVENTS_FILE = "faults.jsonl"
PRE_WINDOW_S = 10.0
BIN_S = 0.5
CLEAN_S = 1.0  # a recovery holds for at least this long
P95_TOLERANCE = 0.2
P95_SLACK_MS = 2.0


@dataclass(frozen=True)
class FaultWindow:
    """One fault of one segment, as it happened."""

    fault: str
    description: str
    action: str
    target: str
    begin: float  # Unix s: the inject's start
    end: float  # Unix s: when it stopped being in effect
    injected: bool
    answer: str
    # Unix s: the inject's action done (a killed container is dead once `docker kill` answers;
    # between begin and this, requests may still be served). None: begin.
    effective: float | None = None


@dataclass
class FaultImpact:
    fault: str
    description: str
    repeat: int
    begin: float  # Unix s: when it began
    end: float  # Unix s: when it stopped being in effect
    at_s: float  # after the segment's load started
    in_effect_s: float
    injected: bool
    answer: str
    failed_during: dict[str, int] = field(default_factory=dict)
    failed_after: dict[str, int] = field(default_factory=dict)
    not_started: int = 0
    first_success_s: float | None = None
    recovered_s: float | None = None
    pre_p95_ms: float | None = None
    backends: tuple[float | None, float | None, float | None] = (None, None, None)
    clients: tuple[float | None, float | None, float | None] = (None, None, None)

    @property
    def failed(self) -> int:
        return sum(self.failed_during.values()) + sum(self.failed_after.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "fault": self.fault, "description": self.description, "repeat": self.repeat,
            "at_s": _round(self.at_s), "in_effect_s": _round(self.in_effect_s),
            "injected": self.injected, "answer": self.answer,
            "failed_during": self.failed_during, "failed_after": self.failed_after,
            "not_started": self.not_started, "first_success_s": _round(self.first_success_s),
            "recovered_s": _round(self.recovered_s), "pre_p95_ms": _round(self.pre_p95_ms),
            "backends": dict(zip(("before", "during", "after"), self.backends, strict=True)),
            "clients": dict(zip(("before", "during", "after"), self.clients, strict=True)),
        }


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 3)


def read_events(run_dir: Path) -> dict[str, list[FaultWindow]]:
    """The faults of each segment (by segment name), paired inject/recover; a torn or unreadable
    line is skipped."""
    path = run_dir / EVENTS_FILE
    if not path.exists():
        return {}
    raw: list[dict[str, Any]] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("segment") and event.get("fault"):
            raw.append(event)
    return windows(raw)


def windows(events: Iterable[Mapping[str, Any]]) -> dict[str, list[FaultWindow]]:
    injects: dict[tuple[str, str], Mapping[str, Any]] = {}
    recovers: dict[tuple[str, str], Mapping[str, Any]] = {}
    order: list[tuple[str, str]] = []
    for e in events:
        key = (str(e["segment"]), str(e["fault"]))
        if e.get("phase") == "inject":
            injects[key] = e
            order.append(key)
        elif e.get("phase") == "recover":
            recovers[key] = e
    result: dict[str, list[FaultWindow]] = {}
    for key in order:
        inject = injects[key]
        begin = _num(inject.get("t")) or _num(inject.get("planned_t"))
        if begin is None:
            continue
        done = _num(inject.get("done_t"))
        recover = recovers.get(key)
        end = None
        if recover is not None:
            end = _num(recover.get("done_t")) or _num(recover.get("t"))
        end = max(end or done or begin, begin)
        result.setdefault(key[0], []).append(FaultWindow(
            fault=key[1], description=str(inject.get("description") or key[1]),
            action=str(inject.get("action", "")), target=str(inject.get("target", "")),
            begin=begin, end=end, injected=bool(inject.get("ok")),
            answer=str(inject.get("answer") or inject.get("error") or ""),
            effective=None if done is None else min(max(done, begin), end)))
    return result


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


@dataclass(frozen=True)
class Rows:
    """One group's rows of one repeat, as the analysis has them."""

    intended: np.ndarray  # Unix s, when each arrival was due
    ends: np.ndarray  # Unix s, when each ended
    ok: np.ndarray  # bool
    not_started: np.ndarray  # bool
    classes: np.ndarray  # class code per row
    class_names: Sequence[str]
    total_ms: np.ndarray


def impact(window: FaultWindow, rows: Rows, repeat: int, load_start: float, segment_end: float,
           backends: tuple[np.ndarray, np.ndarray] | None,
           clients: tuple[np.ndarray, np.ndarray] | None) -> FaultImpact:
    begin, end = window.begin, window.end
    result = FaultImpact(fault=window.fault, description=window.description, repeat=repeat,
                         begin=begin, end=end, at_s=begin - load_start, in_effect_s=end - begin,
                         injected=window.injected, answer=window.answer)
    failed = ~rows.ok & ~rows.not_started
    during = failed & (rows.ends >= begin) & (rows.intended < end)
    after = failed & (rows.intended >= end)
    result.failed_during = _by_class(rows, during)
    result.failed_after = _by_class(rows, after)
    result.not_started = int((rows.not_started & (rows.intended >= begin)).sum())
    pre = rows.ok & (rows.intended >= max(load_start, begin - PRE_WINDOW_S)) \
        & (rows.intended < begin)
    pre_values = rows.total_ms[pre]
    pre_values = pre_values[np.isfinite(pre_values)]
    result.pre_p95_ms = float(np.percentile(pre_values, 95)) if len(pre_values) >= 5 else None
    hit = during & (rows.intended >= begin)
    since = float(np.nanmin(rows.intended[hit])) if hit.any() else begin
    # A request due while the action was still under way may have been served before the
    # fault took effect (and end after a request that it broke, on a busy client): the first
    # success counts from the first failure and from the action's end, whichever is later.
    if window.effective is not None:
        since = max(since, window.effective)
    later_ok = rows.ok & (rows.intended >= since)
    if later_ok.any():
        result.first_success_s = float(np.nanmin(rows.ends[later_ok])) - begin
    result.recovered_s = _recovered(rows, failed, begin, segment_end, result.pre_p95_ms)
    held = window.effective if window.effective is not None and window.effective < end \
        else begin
    result.backends = _before_during_after(backends, begin, held, end, segment_end)
    result.clients = _before_during_after(clients, begin, held, end, segment_end)
    return result


def _by_class(rows: Rows, mask: np.ndarray) -> dict[str, int]:
    counts = np.bincount(rows.classes[mask], minlength=len(rows.class_names))
    return {rows.class_names[i]: int(n) for i, n in enumerate(counts.tolist()) if n}


def _recovered(rows: Rows, failed: np.ndarray, begin: float, segment_end: float,
               pre_p95: float | None) -> float | None:
    if segment_end <= begin:
        return None
    nbins = int(math.ceil((segment_end - begin) / BIN_S))
    started = ~rows.not_started & (rows.intended >= begin) & (rows.intended < segment_end)
    bins = np.floor((rows.intended - begin) / BIN_S).astype(np.int64)
    bad = np.zeros(nbins, dtype=bool)
    bad_bins = bins[started & failed]
    bad[bad_bins[(bad_bins >= 0) & (bad_bins < nbins)]] = True
    limit = None if pre_p95 is None else max(pre_p95 * (1 + P95_TOLERANCE),
                                             pre_p95 + P95_SLACK_MS)
    clean = int(round(CLEAN_S / BIN_S))
    for b in range(nbins):
        if bad[b:b + clean].any():
            continue
        in_bin = started & rows.ok & (bins == b)
        if not in_bin.any():
            continue
        if limit is not None:
            values = rows.total_ms[in_bin]
            values = values[np.isfinite(values)]
            if len(values) and float(np.percentile(values, 95)) > limit:
                continue
        return b * BIN_S
    return None


def _before_during_after(trace: tuple[np.ndarray, np.ndarray] | None, begin: float,
                         held: float, end: float, segment_end: float
                         ) -> tuple[float | None, float | None, float | None]:
    if trace is None:
        return (None, None, None)
    t, v = trace

    def pick(lo: float, hi: float, how) -> float | None:
        inside = (t >= lo) & (t <= hi) & np.isfinite(v)
        return float(how(v[inside])) if inside.any() else None

    return (pick(begin - 5.0, begin, np.median), pick(held, end, np.max),
            pick(end + 1.0, segment_end, np.median))
