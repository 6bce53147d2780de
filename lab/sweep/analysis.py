"""The numbers of a sweep: each finished point's own analysis (``lab.analysis.analyze``, the
same numbers and intervals as its run report), lined up as curves against the swept variable,
and what the curves say: knees in words, ratios against a baseline endpoint with a stated tie
threshold, and the capacity answer for an objective.

Definitions (the report states them too):

* the x axis is ``users`` when it is swept, else the first swept numeric load parameter, else
  the first swept numeric lab setting, else the first swept key; every other swept key makes a
  facet (one column of panels, "tier micro");
* a point *serves* an endpoint when at most ``HEALTHY_ERROR_RATE`` (1%) of its arrivals failed
  and at most 1% were left not started (arrivals due in the last second of the load excepted);
* "refuses from X": the first X whose point failed more than 1%, named by its commonest class;
* "p99 bends at X": the first X whose p99 is more than ``BEND_FACTOR`` times the p99 at the
  first X, with the two 95% intervals apart;
* ratios divide an endpoint's value by the baseline endpoint's at the same point; a ratio
  within ``TIE_THRESHOLD`` of 1, or whose 95% interval overlaps the baseline's, is a tie;
* the objective's ``errors`` counts failed arrivals and arrivals never started (but those due
  in the last second of the load) as shares of the scheduled ones; a point meets an objective
  when every condition holds for its measured value;
* capacity: with lab settings swept, the smallest combination (tier, then max_connections,
  pool_size, max_client_conn, then the other settings in --vary order) whose point meets the
  objective, per workload (the load values) and endpoint; with only load swept, the largest
  load that meets it with every smaller one meeting it too.

Pure: no plotting, no printing, no click.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import analysis as an
from lab.analysis import Estimate, Group, RunAnalysis
from lab.errors import LabError, ReportError
from lab.sweep import manifest as sweepmanifest
from lab.sweep.plan import (
    Axis,
    Objective,
    SweepPlan,
    parse_objective,
    size_key,
    value_text,
)

TIE_THRESHOLD = 0.10
BEND_FACTOR = 2.0
HEALTHY_ERROR_RATE = an.HEALTHY_ERROR_RATE
# run warnings (lab.analysis.warnings_of) that say the machine was not the lab's alone
BUSY = ("The machine was busy", "Other work shared the machine", "Locust warned")
REFUSALS = ("too_many_clients", "max_client_conn", "connection_refused")
# measure -> (label, unit); the order of the report's tables and figures
MEASURES = {
    "p50": ("p50 total time", "ms"),
    "p95": ("p95 total time", "ms"),
    "p99": ("p99 total time", "ms"),
    "error_rate": ("failed", "% of scheduled"),
    "not_started_rate": ("not started", "% of scheduled"),
    "peak_backends": ("peak Postgres backends", "backends"),
    "peak_waiting": ("peak waiting clients", "clients"),
}


@dataclass
class PointResult:
    """One point of the sweep.json, and its run's analysis when it finished."""

    index: int
    id: str
    lab: dict[str, Any]
    load: dict[str, Any]
    status: str
    reason: str | None
    run_dir: Path | None
    analysis: RunAnalysis | None = None

    @property
    def values(self) -> dict[str, Any]:
        return {**self.lab, **self.load}

    def group(self, endpoint: str, phase: str | None = None) -> Group | None:
        if self.analysis is None:
            return None
        for g in self.analysis.groups:
            if g.endpoint == endpoint and (phase is None or g.phase == phase):
                return g
        return None

    def limit(self, key: str) -> int | None:
        if self.analysis is None:
            return None
        value = self.analysis.limits.get(key)
        return int(value) if isinstance(value, int | float) else None


@dataclass
class Curve:
    """One endpoint (and phase) in one facet: a point per x value (None where it has none)."""

    facet: tuple[tuple[str, Any], ...]
    endpoint: str
    phase: str
    xs: list[Any]
    points: list[PointResult | None]

    def groups(self) -> list[Group | None]:
        return [p.group(self.endpoint, self.phase) if p else None for p in self.points]

    def measure(self, name: str) -> list[Estimate]:
        return [measure(g, name) for g in self.groups()]


@dataclass(frozen=True)
class Ratio:
    point: PointResult
    endpoint: str
    phase: str
    metric: str  # p50, p95, p99
    value: float | None  # endpoint / baseline
    tie: bool | None  # None: unknown
    endpoint_errors: float
    baseline_errors: float


@dataclass(frozen=True)
class Capacity:
    workload: dict[str, Any]  # the load values (empty when only lab settings are swept)
    endpoint: str
    phase: str
    answer: PointResult | None  # the smallest lab setting / the largest load that meets it
    sentence: str
    misses: list[str] = field(default_factory=list)  # why the points before it did not


@dataclass
class SweepAnalysis:
    sweep_dir: Path
    doc: dict[str, Any]
    plan: SweepPlan
    points: list[PointResult]
    x: Axis
    facets: list[Axis]
    curves: list[Curve]
    knees: list[str]
    ratios: list[Ratio]
    capacity: list[Capacity]
    warnings: list[str]
    objective: Objective | None
    baseline: str

    @property
    def sweep_id(self) -> str:
        return str(self.doc.get("sweep_id") or self.sweep_dir.name)

    @property
    def finished(self) -> list[PointResult]:
        return [p for p in self.points if p.analysis is not None]


# -- measures ---------------------------------------------------------------------------------


def measure(g: Group | None, name: str) -> Estimate:
    """A measure of a group with its 95% interval (the peaks and per-class rates have none)."""
    if g is None:
        return Estimate.unknown()
    if name in ("p50", "p95", "p99", "error_rate", "not_started_rate", "rps"):
        return g.estimate(name)
    if name.startswith("class:"):
        value = g.error_rate_of(name.removeprefix("class:"))
        return Estimate(value, math.nan, math.nan)
    if name in ("peak_backends", "peak_waiting"):
        value = getattr(g, name)
        return Estimate(float(value), math.nan, math.nan) if value is not None \
            else Estimate.unknown()
    raise KeyError(name)


def unstarted(g: Group) -> int:
    """Arrivals never started, but those due in the last second of the load."""
    return max(0, g.not_started - g.not_started_at_end)


def unserved_rate(g: Group) -> float:
    return (g.failed + unstarted(g)) / g.scheduled if g.scheduled else 0.0


def serves(g: Group | None) -> bool:
    if g is None or g.scheduled == 0 or g.total.n == 0:
        return False
    return (g.error_rate <= HEALTHY_ERROR_RATE
            and (unstarted(g) / g.scheduled) <= HEALTHY_ERROR_RATE)


def meets(g: Group | None, objective: Objective) -> tuple[bool, str]:
    """Whether a group meets every condition, and the first one it misses, in words."""
    if g is None:
        return False, "not measured"
    for c in objective.conditions:
        if c.metric == "errors":
            value = unserved_rate(g)
        elif c.metric == "not_started":
            value = unstarted(g) / g.scheduled if g.scheduled else 0.0
        else:
            value = getattr(g.total, c.metric)
        if not c.holds(value):
            shown = "-" if not math.isfinite(value) else (
                _pct(value) if c.metric in ("errors", "not_started") else _ms(value))
            return False, f"{c.metric} {shown}"
    return True, ""


# -- reading a sweep -------------------------------------------------------------------------


def analyze(sweep_dir: Path | str, objective: Objective | str | None = None,
            baseline: str | None = None) -> SweepAnalysis:
    """Every finished point's analysis, the curves and what they say (ReportError when no
    point has finished). ``objective`` and ``baseline`` replace the sweep's own."""
    sweep_dir = Path(sweep_dir)
    if isinstance(objective, str):
        objective = parse_objective(objective)
    doc = sweepmanifest.read(sweep_dir)
    plan = sweepmanifest.plan_of(doc)
    objective = objective or plan.objective
    baseline = baseline or plan.baseline or plan.endpoints[0]
    if baseline not in plan.endpoints:
        raise ReportError(f"--baseline {baseline} is not an endpoint of this sweep "
                          f"({', '.join(plan.endpoints)})", fix="give one of them")
    points: list[PointResult] = []
    warnings: list[str] = []
    for entry in doc.get("points", []):
        run = entry.get("run")
        p = PointResult(int(entry["index"]), str(entry["id"]), dict(entry.get("lab") or {}),
                        dict(entry.get("load") or {}), str(entry.get("status")),
                        entry.get("reason"), sweep_dir / run if run else None)
        if p.status == "done" and p.run_dir is not None:
            try:
                p.analysis = an.analyze(p.run_dir)
            except LabError as exc:
                p.status, p.reason = "failed", f"its run cannot be read: {exc.one_line()}"
        points.append(p)
    if not any(p.analysis for p in points):
        raise ReportError(f"no point of {sweep_dir} has finished yet",
                          fix=f"lab sweep --resume {sweep_dir}")
    x, facets = choose_axes(plan.axes)
    curves = make_curves(points, x, facets, plan.endpoints)
    result = SweepAnalysis(sweep_dir, doc, plan, points, x, facets, curves, [], [], [],
                           warnings, objective, baseline)
    result.knees = knees(result)
    result.ratios = ratios(result)
    result.capacity = capacity(result) if objective else []
    result.warnings = sweep_warnings(result)
    return result


def choose_axes(axes: tuple[Axis, ...]) -> tuple[Axis, list[Axis]]:
    """The x axis (see the module's definitions) and the facets."""
    multi = [a for a in axes if len(a.values) > 1] or list(axes)
    pick = (next((a for a in multi if a.key == "users"), None)
            or next((a for a in multi if a.kind == "load" and a.numeric), None)
            or next((a for a in multi if a.numeric), None)
            or multi[0])
    return pick, [a for a in axes if a.key != pick.key and len(a.values) > 1]


def make_curves(points: list[PointResult], x: Axis, facets: list[Axis],
                endpoints: tuple[str, ...]) -> list[Curve]:
    import itertools

    curves = []
    for combo in itertools.product(*(f.values for f in facets)):
        facet = tuple(zip([f.key for f in facets], combo, strict=True))
        row = []
        for xv in x.values:
            wanted = {**dict(facet), x.key: xv}
            row.append(next((p for p in points
                             if all(p.values.get(k) == v for k, v in wanted.items())), None))
        phases = list(dict.fromkeys(g.phase for p in row if p and p.analysis
                                    for g in p.analysis.groups))
        for endpoint in endpoints:
            for phase in phases or ["?"]:
                curves.append(Curve(facet, endpoint, phase, list(x.values),
                                    [p if p is not None and p.analysis is not None else None
                                     for p in row]))
    return curves


# -- words ------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    from lab.report import fmt_ms

    return f"{fmt_ms(value)} ms"


def _pct(value: float) -> str:
    return f"{100 * value:.2g}%" if value < 0.01 else f"{100 * value:.1f}%"


# what a value of a built-in scenario's parameter counts, for sentences and axis labels
PARAM_UNITS = {"spike_rate": "invocations/s", "base_rate": "invocations/s between spikes",
               "rate_per_server": "requests/s per server"}


def unit_of(axis: Axis, phase: str) -> str:
    if axis.key == "users":
        return "concurrent invocations" if phase == "serverless" else (
            "app servers" if phase == "persistent" else "users")
    if axis.key.startswith("P."):
        return PARAM_UNITS.get(axis.name, "")
    return ""


def x_text(axis: Axis, value: Any, phase: str) -> str:
    """'55 concurrent invocations', '40 invocations/s', 'tier small', 'pool_size 4'."""
    unit = unit_of(axis, phase)
    shown = value_text(value)
    return f"{shown} {unit}" if unit else f"{axis.name} {shown}"


def facet_text(facet: tuple[tuple[str, Any], ...]) -> str:
    """' on micro', ' with pool_size 4 on small'."""
    parts = []
    for key, value in facet:
        parts.append(f"on {value}" if key == "tier"
                     else f"with {key.removeprefix('P.')} {value_text(value)}")
    return (" " + " ".join(parts)) if parts else ""


def _nice_ceiling(value: float) -> float:
    """37.2 -> 40, 112 -> 150, 3.1 -> 4: a round bound just above ``value``."""
    if not math.isfinite(value) or value <= 0:
        return value
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * exp >= value * 1.0001:
            return step * exp
    return 10 * exp


def _label(curve: Curve, curves: list[Curve]) -> str:
    phases = {c.phase for c in curves}
    return curve.endpoint if len(phases) == 1 else f"{curve.endpoint} ({curve.phase})"


def knees(a: SweepAnalysis) -> list[str]:
    """Per curve, in words: where it starts failing, how far it serves (with its p99), and
    where its p99 bends."""
    out = []
    for curve in a.curves:
        groups = curve.groups()
        measured = [(x, g) for x, g in zip(curve.xs, groups, strict=True) if g is not None]
        if not measured:
            continue
        name = _label(curve, a.curves)
        where = facet_text(curve.facet)
        ok = [serves(g) for _, g in measured]
        sentences = []
        if ok[0] or (any(ok) and all(ok[ok.index(True):])):
            # served from the first value up to a point, or from a point to the last value
            first = 0 if ok[0] else ok.index(True)
            last = (ok.index(False) if False in ok else len(ok)) if ok[0] else len(ok)
            served = measured[first:last]
            p99 = _nice_ceiling(max(g.total.p99 for _, g in served))
            if ok[0]:
                every = " (every value swept)" if len(served) == len(curve.xs) else ""
                sentences.append(f"{name} serves {x_text(a.x, served[-1][0], curve.phase)}"
                                 f"{where}{every} with p99 under {p99:g} ms")
            else:
                sentences.append(f"{name} serves from {x_text(a.x, served[0][0], curve.phase)}"
                                 f"{where} on, with p99 under {p99:g} ms")
        failing = [(x, g) for x, g in measured if g.error_rate > HEALTHY_ERROR_RATE]
        if failing:
            x, g = failing[0]
            worst = max(g.errors, key=lambda c: g.errors[c])
            verb = ("refuses connections" if worst in REFUSALS
                    else "times out waiting for a server connection" if worst == "pool_timeout"
                    else f"fails ({worst})")
            at = f" at {x_text(a.x, x, curve.phase)}" if len(failing) > 1 else ""
            sentences.append(f"{name} {verb} {_span(a, failing, measured, curve.phase)}{where}: "
                             f"{_pct(g.error_rate)} of its arrivals failed{at}, mostly {worst}")
        queued = [(x, g) for x, g in measured
                  if g.error_rate <= HEALTHY_ERROR_RATE and not serves(g) and g.scheduled]
        if queued:
            x, g = queued[0]
            span = _span(a, queued, measured, curve.phase)
            at = f" at {x_text(a.x, x, curve.phase)}" if len(queued) > 1 else ""
            sentences.append(f"{name} leaves work not started {span}{where}: "
                             f"{_pct(unstarted(g) / g.scheduled)} of its arrivals{at}")
        bend = p99_bend(measured)
        if bend is not None:
            (x0, g0), (x1, g1) = bend
            sentences.append(f"{name}'s p99 bends at {x_text(a.x, x1, curve.phase)}{where}: "
                             f"{_ms(g1.total.p99)}, against {_ms(g0.total.p99)} at "
                             f"{x_text(a.x, x0, curve.phase)}")
        out += sentences
    return out


def _span(a: SweepAnalysis, some: list[tuple[Any, Group]], measured: list[tuple[Any, Group]],
          phase: str) -> str:
    """'from X' (X and every value after it), 'up to X' (every value to X), 'at X' or
    'at X, Y'."""
    xs = [x for x, _ in some]
    every = [x for x, _ in measured]
    if xs == every and len(xs) > 1:
        return (f"at every value swept ({x_text(a.x, xs[0], phase)} to "
                f"{x_text(a.x, xs[-1], phase)})")
    if xs == every[len(every) - len(xs):] and len(xs) < len(every):
        return f"from {x_text(a.x, xs[0], phase)}"
    if len(xs) == 1:
        return f"at {x_text(a.x, xs[0], phase)}"
    if xs == every[:len(xs)]:
        return f"up to {x_text(a.x, xs[-1], phase)}"
    return "at " + ", ".join(x_text(a.x, x, phase) for x in xs)


def p99_bend(measured: list[tuple[Any, Group]]) -> tuple[tuple[Any, Group],
                                                         tuple[Any, Group]] | None:
    """(first point, the first point whose p99 is BEND_FACTOR times the first's, intervals
    apart), or None."""
    with_p99 = [(x, g) for x, g in measured if g.total.n and math.isfinite(g.total.p99)]
    if len(with_p99) < 2:
        return None
    x0, g0 = with_p99[0]
    base = g0.estimate("p99")
    for x, g in with_p99[1:]:
        e = g.estimate("p99")
        apart = not (base.known and e.known) or (
            math.isfinite(e.low) and math.isfinite(base.high) and e.low > base.high)
        if g.total.p99 > BEND_FACTOR * g0.total.p99 and apart:
            return (x0, g0), (x, g)
    return None


def ratios(a: SweepAnalysis) -> list[Ratio]:
    out = []
    for p in a.finished:
        assert p.analysis is not None
        for phase in dict.fromkeys(g.phase for g in p.analysis.groups):
            base = p.group(a.baseline, phase)
            if base is None:
                continue
            for endpoint in a.plan.endpoints:
                if endpoint == a.baseline:
                    continue
                g = p.group(endpoint, phase)
                if g is None:
                    continue
                for metric in ("p50", "p99"):
                    out.append(Ratio(p, endpoint, phase, metric, *ratio_of(g, base, metric),
                                     g.error_rate, base.error_rate))
    return out


def ratio_of(g: Group, base: Group, metric: str) -> tuple[float | None, bool | None]:
    """(g / base, tie): a tie when within TIE_THRESHOLD of 1 or the intervals overlap."""
    a, b = g.estimate(metric), base.estimate(metric)
    if not (a.known and b.known) or b.value <= 0:
        return None, None
    value = a.value / b.value
    within = abs(value - 1.0) <= TIE_THRESHOLD
    overlap = (math.isfinite(a.low) and math.isfinite(b.high) and math.isfinite(a.high)
               and math.isfinite(b.low) and a.low <= b.high and b.low <= a.high)
    return value, within or overlap


def ratio_text(value: float | None, tie: bool | None) -> str:
    if value is None:
        return "-"
    if tie:
        return f"tie ({value:.2f}x)"
    return f"{value:.2f}x " + ("slower" if value > 1 else "faster")


def capacity(a: SweepAnalysis) -> list[Capacity]:
    objective = a.objective
    assert objective is not None
    lab_axes = [ax for ax in a.plan.axes if ax.kind == "lab" and len(ax.values) > 1]
    load_axes = [ax for ax in a.plan.axes if ax.kind == "load"]
    out = []
    phases = list(dict.fromkeys(g.phase for p in a.finished for g in p.analysis.groups))
    if lab_axes:
        workloads: list[dict[str, Any]] = []
        for p in a.points:
            w = {ax.key: p.load.get(ax.key) for ax in load_axes}
            if w not in workloads:
                workloads.append(w)
        for w in workloads:
            same = [p for p in a.points if all(p.load.get(k) == v for k, v in w.items())]
            same.sort(key=lambda p: size_key(p.lab, a.plan.axes))
            for endpoint in a.plan.endpoints:
                for phase in phases:
                    out.append(_smallest(a, w, endpoint, phase, same, objective, lab_axes))
        return out
    for endpoint in a.plan.endpoints:
        for phase in phases:
            out.append(_largest(a, endpoint, phase, objective))
    return out


def _settings_text(p: PointResult, lab_axes: list[Axis]) -> str:
    return ", ".join(f"{ax.name} {value_text(p.lab.get(ax.key))}" for ax in lab_axes)


def _workload_text(w: dict[str, Any], phase: str, axes: tuple[Axis, ...]) -> str:
    """'80 concurrent invocations', '40 invocations/s, sslmode disable'."""
    by_key = {ax.key: ax for ax in axes}
    return ", ".join(x_text(by_key[k], v, phase) if k in by_key
                     else f"{k.removeprefix('P.')} {value_text(v)}" for k, v in w.items())


def _smallest(a: SweepAnalysis, w: dict[str, Any], endpoint: str, phase: str,
              points: list[PointResult], objective: Objective,
              lab_axes: list[Axis]) -> Capacity:
    misses = []
    name = endpoint if len({c.phase for c in a.curves}) == 1 else f"{endpoint} ({phase})"
    load = f" for {_workload_text(w, phase, a.plan.axes)}" if w else ""
    for p in points:
        if p.analysis is None:
            misses.append(f"{_settings_text(p, lab_axes)}: not measured ({p.status})")
            continue
        ok, why = meets(p.group(endpoint, phase), objective)
        if ok:
            g = p.group(endpoint, phase)
            assert g is not None
            smaller = f"; smaller: {'; '.join(misses)}" if misses else ""
            return Capacity(w, endpoint, phase, p,
                            f"{name}{load}: {_settings_text(p, lab_axes)} is the smallest swept "
                            f"that meets {objective.text} (p99 {_ms(g.total.p99)}, errors "
                            f"{_pct(unserved_rate(g))}{smaller})", misses)
        misses.append(f"{_settings_text(p, lab_axes)}: {why}")
    return Capacity(w, endpoint, phase, None,
                    f"{name}{load}: none of the swept settings meets {objective.text} "
                    f"({'; '.join(misses)})", misses)


def _largest(a: SweepAnalysis, endpoint: str, phase: str, objective: Objective) -> Capacity:
    name = endpoint if len({c.phase for c in a.curves}) == 1 else f"{endpoint} ({phase})"
    curves = [c for c in a.curves if c.endpoint == endpoint and c.phase == phase]
    best: PointResult | None = None
    misses: list[str] = []
    parts = []
    for curve in curves:
        last = None
        for x, p in zip(curve.xs, curve.points, strict=True):
            ok, why = meets(p.group(endpoint, phase) if p else None, objective)
            if not ok:
                misses.append(f"{x_text(a.x, x, phase)}{facet_text(curve.facet)}: {why}")
                break
            last = (x, p)
        where = facet_text(curve.facet)
        if last is None:
            parts.append(f"none of the swept values{where} meets {objective.text}")
        else:
            best = best or last[1]
            parts.append(f"meets {objective.text} up to {x_text(a.x, last[0], phase)}{where}")
    return Capacity({}, endpoint, phase, best, f"{name} " + "; ".join(parts), misses)


def sweep_warnings(a: SweepAnalysis) -> list[str]:
    out = []
    c = sweepmanifest.counts(a.doc)
    left = c["pending"] + c["interrupted"] + c["running"]
    if left:
        out.append(f"{left} of {len(a.points)} points have not run (the sweep was "
                   f"interrupted): lab sweep --resume {a.sweep_dir} runs them")
    for p in a.points:
        if p.status == "failed":
            out.append(f"point {p.id} failed: {p.reason}")
    for p in a.finished:
        for o in p.analysis.outages:
            out.append(f"point {p.id} ({o.endpoint}): {o.describe()}; its failures there are "
                       "the outage's, not the settings'")
    busy = sorted({p.id for p in a.finished
                   if any(w.startswith(BUSY) for w in p.analysis.warnings)})
    if busy:
        out.append(f"the machine was busy during {len(busy)} point(s) ({', '.join(busy)}): "
                   "their latencies may be high because of it (each run's report says how)")
    repeats = {p.analysis.repeats for p in a.finished}
    if repeats == {1}:
        out.append("every point ran once: the bands show the variation within each run only "
                   "(--repeat 3 adds the variation between passes)")
    return out


def to_json(a: SweepAnalysis) -> dict[str, Any]:
    """The sweep's analysis for scripts (`lab report SWEEP_DIR --json`)."""
    points = []
    for p in a.points:
        entry: dict[str, Any] = {"id": p.id, "lab": p.lab, "load": p.load, "status": p.status,
                                 "reason": p.reason,
                                 "run": p.run_dir.name if p.run_dir else None}
        if p.analysis is not None:
            entry["segments"] = an.to_json(p.analysis)["segments"]
        points.append(entry)
    return {
        "sweep_id": a.sweep_id,
        "x": a.x.key, "facets": [f.key for f in a.facets],
        "objective": a.objective.text if a.objective else None,
        "baseline": a.baseline, "tie_threshold": TIE_THRESHOLD,
        "capacity": [{"workload": c.workload, "endpoint": c.endpoint, "phase": c.phase,
                      "point": c.answer.id if c.answer else None,
                      "lab": c.answer.lab if c.answer else None,
                      "load": c.answer.load if c.answer else None,
                      "sentence": c.sentence} for c in a.capacity],
        "knees": list(a.knees),
        "ratios": [{"point": r.point.id, "endpoint": r.endpoint, "phase": r.phase,
                    "metric": r.metric, "ratio": an._json_number(r.value), "tie": r.tie}
                   for r in a.ratios],
        "warnings": list(a.warnings),
        "points": points,
    }
