"""Running a sweep: each point as one `lab run` (``lab.run.run``: every endpoint, the same
seed) into the sweep directory, the lab brought up with the point's settings first when they
differ from the lab's (``lab.stack``, the one place that runs docker compose).

A point that fails (the lab would not come up, Locust stopped, a run error) is recorded with
its reason and the sweep goes on; Ctrl-C stops the sweep after keeping what the running point
measured, and ``--resume`` runs every point that is not done (failed and interrupted ones again,
into a new run directory each try, the older one kept).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lab import clock
from lab import config as cfgmod
from lab.errors import ConfigError, LabError, StackError
from lab.sweep import manifest
from lab.sweep.plan import (
    SweepPlan,
    check_lab_points,
    describe,
    find_preset,
    order_points,
    parse_objective,
    parse_vary,
)

Log = Callable[[str], None]
ShowPlan = Callable[[list[str]], None]


@dataclass(frozen=True)
class SweepRequest:
    """What `lab sweep` was given; ``None`` means "the preset's, else the default"."""

    scenario: str | None = None
    vary: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = ()
    preset: str | None = None
    users: int | None = None
    spawn_rate: float | None = None
    workers: int = 1
    params: Mapping[str, str] = field(default_factory=dict)
    seed: int = 1
    duration: str | None = None
    cooldown: str | None = None
    repeat: int | None = None
    sslmode: str | None = None
    objective: str | None = None
    baseline: str | None = None
    lab_name: str = "default"
    reports_dir: Path = Path("reports")
    resume: Path | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class SweepResult:
    sweep_dir: Path | None  # None: --dry-run
    interrupted: bool = False
    done: int = 0
    failed: int = 0
    left: int = 0  # pending or interrupted
    report: Any = None  # lab.report.ReportPaths of the sweep report, when one was written
    report_error: str | None = None

    def check(self) -> None:
        """RunError (exit 5) when a point failed; raised after everything is written."""
        if self.failed:
            from lab.errors import RunError

            raise RunError(f"{self.failed} point(s) of the sweep failed (their reasons are in "
                           f"{self.sweep_dir}/sweep.json and its report)",
                           fix=f"lab sweep --resume {self.sweep_dir} runs them again")


def current_lab(name: str) -> cfgmod.LabConfig | None:
    """The lab's saved settings, or None when it was never brought up."""
    from lab.state import LabState

    state = LabState(name)
    return state.load_settings() if state.exists() else None


def build_plan(request: SweepRequest, current: cfgmod.LabConfig | None) -> SweepPlan:
    """The request (and its preset) checked and turned into points in run order."""
    from lab import scenarios
    from lab.run.spec import SSLMODES, expand_endpoints, parse_duration, parse_span

    preset = find_preset(request.preset) if request.preset else None
    scenario_name = request.scenario or (preset.scenario if preset else None)
    if not scenario_name:
        raise ConfigError("lab sweep needs a SCENARIO, a --preset or --resume DIR",
                          fix="e.g. lab sweep serverless-burst --vary users=20,60 -e direct "
                              "-e transaction, or lab sweep --preset burst-vs-tier")
    scenario = scenarios.resolve(scenario_name)
    vary = list(preset.vary if preset else ())
    given = {t.partition("=")[0].strip() for t in request.vary}
    vary = [t for t in vary if t.partition("=")[0].strip() not in given] + list(request.vary)
    if not vary:
        raise ConfigError("a sweep needs at least one --vary KEY=V1,V2",
                          fix="e.g. --vary users=20,60,100 or --vary tier=micro,small")
    axes = parse_vary(vary, scenario)
    endpoints = expand_endpoints(tuple(request.endpoints)
                                 or (preset.endpoints if preset else ("transaction",)))
    params = {**(preset.params if preset else {}), **dict(request.params or {})}
    swept = {a.key.removeprefix("P.") for a in axes if a.key.startswith("P.")}
    clash = swept & set(request.params or {})
    if clash:
        raise ConfigError(f"-P {sorted(clash)[0]} is also swept with --vary",
                          fix="give it either as -P (fixed) or as --vary (swept)")
    params = {k: v for k, v in params.items() if k not in swept}
    scenario.coerce(params)  # unknown or bad -P values: said now
    if request.users is not None and any(a.key == "users" for a in axes):
        raise ConfigError("--users is also swept with --vary users",
                          fix="leave out --users, or the --vary users")
    users = request.users if request.users is not None else (preset.users if preset else None)
    if users is not None and users < 1:
        raise ConfigError(f"--users {users} is below 1", fix="use --users 1 or more")
    duration = request.duration or (preset.duration if preset else None) or "30s"
    cooldown = request.cooldown or (preset.cooldown if preset else None) or "5s"
    repeat = request.repeat or (preset.repeat if preset else None) or 1
    if repeat < 1:
        raise ConfigError(f"--repeat {repeat} is below 1", fix="use --repeat 1 or more")
    if request.sslmode is not None and request.sslmode not in SSLMODES:
        raise ConfigError(f"unknown sslmode {request.sslmode!r}",
                          fix=f"use one of {', '.join(SSLMODES)}")
    baseline = request.baseline or (preset.baseline if preset else None)
    if baseline is not None and baseline not in endpoints:
        baseline = baseline if baseline in endpoints else None
        if request.baseline:
            raise ConfigError(f"--baseline {request.baseline} is not one of the swept "
                              f"endpoints ({', '.join(endpoints)})",
                              fix="give one of them, or add it with --endpoint")
    objective = parse_objective(request.objective or (preset.objective if preset else None))
    check_lab_points(axes, current or cfgmod.load_config(request.lab_name))
    points, restarts = order_points(axes, current)
    plan = SweepPlan(
        scenario=scenario_name, endpoints=endpoints, axes=axes, points=points,
        duration_s=parse_duration(duration), cooldown_s=parse_span(cooldown), seed=request.seed,
        repeat=repeat, workers=request.workers, users=users, spawn_rate=request.spawn_rate,
        params=params, sslmode=request.sslmode, objective=objective,
        baseline=baseline or endpoints[0], preset=preset.name if preset else None,
        lab_name=request.lab_name, restarts=restarts)
    if plan.workers < 1:
        raise ConfigError(f"--workers {plan.workers} is below 1", fix="use --workers 1 or more")
    return plan


def sweep(request: SweepRequest, *, show_plan: ShowPlan | None = None,
          progress: Callable[[Any], None] | None = None, log: Log = print) -> SweepResult:
    """`lab sweep`: plan, show the plan, run every point not done yet, write the report."""
    if request.resume is not None:
        if request.scenario or request.vary or request.preset or request.endpoints:
            raise ConfigError("--resume runs the plan the sweep was started with",
                              fix=f"lab sweep --resume {request.resume} (no SCENARIO, --vary, "
                                  "--preset or --endpoint)")
        sweep_dir = Path(request.resume)
        doc = manifest.read(sweep_dir)
        plan = manifest.plan_of(doc)
        if request.lab_name != "default":
            plan = replace(plan, lab_name=request.lab_name)
        if request.objective or request.baseline:
            plan = replace(plan, objective=parse_objective(request.objective)
                           if request.objective else plan.objective,
                           baseline=request.baseline or plan.baseline)
            doc["objective"], doc["baseline"] = plan.objective.text, plan.baseline
    else:
        plan = build_plan(request, current_lab(request.lab_name))
        sweep_dir = None
        doc = None
    done = sum(1 for p in (doc or {}).get("points", []) if p.get("status") == "done")
    if show_plan is not None:
        show_plan(describe(plan, done, sweep_dir))
    if request.dry_run:
        return SweepResult(None, left=len(plan.points) - done)
    if doc is None:
        from lab import scenarios
        from lab.run.spec import new_run_id

        sweep_id = new_run_id(f"sweep-{scenarios.resolve(plan.scenario).name}")
        sweep_dir = Path(request.reports_dir) / sweep_id
        sweep_dir.mkdir(parents=True, exist_ok=False)
        before = current_lab(plan.lab_name)
        doc = manifest.new(plan, sweep_id, str(scenarios.resolve(plan.scenario).path),
                           before.to_dict() if before else None)
        manifest.write(sweep_dir, doc)
    assert sweep_dir is not None
    interrupted = run_points(plan, doc, sweep_dir, progress=progress, log=log)
    return finish(doc, sweep_dir, interrupted, log)


def run_points(plan: SweepPlan, doc: dict[str, Any], sweep_dir: Path, *,
               progress: Callable[[Any], None] | None = None, log: Log = print) -> bool:
    """Every point not done, in order; returns whether Ctrl-C stopped the sweep."""
    try:
        return _run_points(plan, doc, sweep_dir, progress, log)
    except KeyboardInterrupt:  # between two points: the one under way is the interrupted one
        for entry in doc["points"]:
            if entry["status"] == "running":
                entry.update(status="interrupted", reason="Ctrl-C")
        manifest.write(sweep_dir, doc)
        return True


def _run_points(plan: SweepPlan, doc: dict[str, Any], sweep_dir: Path,
                progress: Callable[[Any], None] | None, log: Log) -> bool:
    doc["status"] = "running"
    manifest.write(sweep_dir, doc)
    broken: dict[str, str] = {}  # lab settings that would not come up -> why
    todo = [e for e in doc["points"] if e["status"] != "done"]
    for n, entry in enumerate(todo, 1):
        point = next(p for p in plan.points if p.index == entry["index"])
        tag = f"[{n}/{len(todo)} {point.id}]"

        def said(text: str, tag: str = tag) -> None:
            log(f"{tag} {text}")

        started = time.perf_counter()
        entry.update(status="running", reason=None, started_at=manifest.iso(clock.now()))
        manifest.write(sweep_dir, doc)
        key = repr(sorted(point.lab.items()))
        try:
            if key in broken:
                raise StackError(f"the lab did not come up with these settings earlier in "
                                 f"this sweep ({broken[key]})", fix="see the earlier point")
            try:
                entry["restarted"] = ensure_lab(plan.lab_name, point.lab, said)
            except LabError as exc:
                broken[key] = exc.one_line()
                raise
            status, reason = _run(plan, point, entry, doc, sweep_dir, progress, said)
        except KeyboardInterrupt:
            status, reason = "interrupted", "Ctrl-C"
        except LabError as exc:
            status, reason = "failed", exc.one_line()
        except Exception as exc:  # one point's unexpected error does not stop the sweep
            status, reason = "failed", f"{type(exc).__name__}: {exc}"[:300]
        entry.update(status=status, reason=reason, ended_at=manifest.iso(clock.now()),
                     duration_s=round(time.perf_counter() - started, 1))
        if entry["attempts"]:
            entry["attempts"][-1].update(status=status, reason=reason)
        manifest.write(sweep_dir, doc)
        said(status + (f": {reason}" if reason and status != "done" else ""))
        if status == "interrupted":
            return True
    return False


def ensure_lab(name: str, changes: Mapping[str, Any], log: Log) -> bool:
    """The lab up with ``changes`` applied to its saved settings; brought up only when they
    differ or it is not running. Returns whether it was brought up."""
    from lab import stack
    from lab.state import LabState

    state = LabState(name)
    if state.exists():
        saved = state.load_settings()
        if stack.config_with(saved, changes).to_dict() == saved.to_dict():
            try:
                stack.require_running(name)
                return False
            except StackError:
                pass
        said = ", ".join(f"{k}={v}" for k, v in changes.items()) or "its settings"
        log(f"bringing the lab up with {said}")
        stack.up_with(name, dict(changes), log=log)
        return True
    log("bringing the lab up")
    stack.up(name, None, dict(changes), log=log)
    return True


def _run(plan: SweepPlan, point: Any, entry: dict[str, Any], doc: dict[str, Any],
         sweep_dir: Path, progress: Callable[[Any], None] | None,
         log: Log) -> tuple[str, str | None]:
    from lab import run as runmod

    params: dict[str, Any] = dict(plan.params)
    params.update({k.removeprefix("P."): v for k, v in point.load.items()
                   if k.startswith("P.")})
    tries = len(entry["attempts"]) + 1
    run_id = point.id if tries == 1 else f"{point.id}.try{tries}"
    entry["attempts"].append({"run": run_id, "status": "running",
                              "started_at": manifest.iso(clock.now())})
    entry["run"] = run_id
    manifest.write(sweep_dir, doc)
    spec = runmod.RunSpec(
        scenario=plan.scenario, endpoints=plan.endpoints, duration_s=plan.duration_s,
        users=point.load.get("users", plan.users), spawn_rate=plan.spawn_rate,
        workers=plan.workers, params=params, seed=plan.seed, cooldown_s=plan.cooldown_s,
        repeat=plan.repeat, lab_name=plan.lab_name, reports_dir=sweep_dir, run_id=run_id,
        sslmode=point.load.get("sslmode", plan.sslmode))
    result = runmod.run(spec, progress=progress, log=log)
    if result.interrupted:
        return "interrupted", "Ctrl-C"
    if result.lab_down:
        from lab.status import describe_down

        return "failed", (f"the lab was not whole at the end of the point "
                          f"({describe_down(result.lab_down)}); its run is kept")
    return "done", None


def finish(doc: dict[str, Any], sweep_dir: Path, interrupted: bool, log: Log) -> SweepResult:
    c = manifest.counts(doc)
    doc["status"] = "interrupted" if interrupted else "finished"
    manifest.write(sweep_dir, doc)
    paths, error = None, None
    if c["done"]:
        from lab.sweep.report import build_sweep_report

        log("writing the sweep's report")
        try:
            paths = build_sweep_report(sweep_dir)
        except LabError as exc:
            error = exc.one_line()
    return SweepResult(sweep_dir, interrupted=interrupted, done=c["done"], failed=c["failed"],
                       left=c["pending"] + c["interrupted"] + c["running"], report=paths,
                       report_error=error)
