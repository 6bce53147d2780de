"""What an experiment is (its lanes, expectations and run function) and what running it gave."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lab.config import LabConfig

if TYPE_CHECKING:
    from lab.experiments.context import Context

# The lab's PgBouncers, whose admin consoles take runtime SETs (in this order).
POOLERS = ("session", "transaction", "dedicated")


@dataclass(frozen=True)
class Lane:
    """One column of the comparison: an endpoint, possibly under a setting or with a fix."""

    key: str
    endpoint: str
    label: str


@dataclass(frozen=True)
class Observation:
    outcome: str
    detail: str = ""


Expect = Mapping[str, str] | Callable[[LabConfig], Mapping[str, str]]


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    question: str  # to ask the room before running it
    why: str  # what happens, and why
    fix: str
    lanes: tuple[Lane, ...]
    expect: Expect
    run: Callable[[Context], dict[str, Observation]]
    # Runtime admin-console settings for the duration: {endpoint: {setting: value}}.
    settings: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # Settings an experiment changes itself while it runs (described in the guide).
    also_changes: str = ""
    # What `lab experiment run --real-limits` does instead (in the guide); "" when the
    # experiment always works at the lab's own limits or has none to reach.
    real_limits: str = ""
    # Runtime settings with --real-limits, instead of ``settings`` (None: the same).
    real_settings: Mapping[str, Mapping[str, int]] | None = None

    def settings_for(self, real_limits: bool) -> Mapping[str, Mapping[str, int]]:
        if real_limits and self.real_settings is not None:
            return self.real_settings
        return self.settings

    def expected(self, cfg: LabConfig) -> dict[str, str]:
        values = self.expect(cfg) if callable(self.expect) else self.expect
        return {lane.key: str(values[lane.key]) for lane in self.lanes}

    def poolers(self) -> list[str]:
        used = ({lane.endpoint for lane in self.lanes} | set(self.settings)
                | set(self.real_settings or {}))
        return [p for p in POOLERS if p in used]


@dataclass(frozen=True)
class LaneResult:
    key: str
    endpoint: str
    label: str
    expected: str
    observed: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.expected == self.observed

    def to_json(self) -> dict[str, Any]:
        return {"lane": self.key, "endpoint": self.endpoint, "label": self.label,
                "expected": self.expected, "observed": self.observed, "detail": self.detail,
                "passed": self.passed}


@dataclass(frozen=True)
class ExperimentResult:
    name: str
    title: str
    question: str
    fix: str
    lanes: tuple[LaneResult, ...]
    duration_s: float
    error: str | None = None  # the experiment could not run to the end

    @property
    def passed(self) -> bool:
        return self.error is None and all(lane.passed for lane in self.lanes)

    def failures(self) -> list[LaneResult]:
        return [lane for lane in self.lanes if not lane.passed]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "question": self.question,
                "fix": self.fix, "passed": self.passed, "error": self.error,
                "duration_s": round(self.duration_s, 3),
                "lanes": [lane.to_json() for lane in self.lanes]}


def results_json(lab_name: str, results: Sequence[ExperimentResult]) -> dict[str, Any]:
    return {"lab": lab_name, "passed": all(r.passed for r in results),
            "experiments": [r.to_json() for r in results]}
