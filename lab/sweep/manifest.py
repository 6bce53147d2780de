"""sweep/1: the sweep directory's manifest (``sweep.json``, docs/formats.md).

Written before the first point runs (every point ``pending``) and again whenever a point
starts or ends, whole each time (temporary file, then rename), so an interrupted or killed
sweep leaves a manifest that says what finished, and ``lab sweep --resume DIR`` reads its plan
back from it. No password, ever: lab settings have none, and run directories keep theirs out.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from lab import clock
from lab.errors import ReportError
from lab.sweep.plan import Axis, Objective, Point, SweepPlan, parse_objective, value_text

FORMAT = "sweep/1"
FILE = "sweep.json"
STATUSES = ("pending", "running", "done", "failed", "interrupted")


def iso(ts: float) -> str:
    from lab.run.manifest import iso as run_iso

    return run_iso(ts)


def is_sweep_dir(path: Path | str) -> bool:
    return (Path(path) / FILE).is_file()


def reproduce(plan: SweepPlan) -> list[str]:
    """The `lab sweep` command that plans the same sweep."""
    argv = ["lab", "sweep", plan.scenario]
    for axis in plan.axes:
        argv += ["--vary", f"{axis.key}={','.join(value_text(v) for v in axis.values)}"]
    for endpoint in plan.endpoints:
        argv += ["-e", endpoint]
    argv += ["--duration", f"{plan.duration_s:g}s", "--cooldown", f"{plan.cooldown_s:g}s",
             "--seed", str(plan.seed)]
    if plan.repeat > 1:
        argv += ["--repeat", str(plan.repeat)]
    if plan.users is not None:
        argv += ["--users", str(plan.users)]
    if plan.spawn_rate is not None:
        argv += ["--spawn-rate", f"{plan.spawn_rate:g}"]
    if plan.workers > 1:
        argv += ["--workers", str(plan.workers)]
    for key, value in plan.params.items():
        argv += ["-P", f"{key}={value}"]
    if plan.sslmode:
        argv += ["--sslmode", plan.sslmode]
    if plan.objective:
        argv += ["--objective", plan.objective.text]
    if plan.baseline:
        argv += ["--baseline", plan.baseline]
    if plan.lab_name != "default":
        argv += ["--name", plan.lab_name]
    return argv




def new(plan: SweepPlan, sweep_id: str, scenario_file: str, lab_before: dict | None) -> dict:
    now = iso(clock.now())
    argv = reproduce(plan)
    return {
        "format": FORMAT,
        "sweep_id": sweep_id,
        "created_at": now,
        "updated_at": now,
        "status": "running",
        "preset": plan.preset,
        "scenario": {"name": plan.scenario, "file": scenario_file},
        "endpoints": list(plan.endpoints),
        "axes": [a.to_json() for a in plan.axes],
        "load": {"duration_s": plan.duration_s, "cooldown_s": plan.cooldown_s,
                 "seed": plan.seed, "repeat": plan.repeat, "workers": plan.workers,
                 "users": plan.users, "spawn_rate": plan.spawn_rate,
                 "params": dict(plan.params), "sslmode": plan.sslmode},
        "objective": plan.objective.text if plan.objective else None,
        "baseline": plan.baseline,
        "lab_name": plan.lab_name,
        "lab_before": lab_before,
        "restarts_planned": plan.restarts,
        "estimate_s": round(plan.estimate_s(), 1),
        "command": argv,
        "reproduce": shlex.join(argv),
        "points": [{"id": p.id, "index": p.index, "lab": p.lab, "load": p.load,
                    "status": "pending", "reason": None, "run": None, "restarted": None,
                    "attempts": []} for p in plan.points],
    }


def plan_of(doc: dict[str, Any]) -> SweepPlan:
    """The plan a sweep.json was written from (for --resume and the report)."""
    load = doc.get("load") or {}
    objective: Objective | None = parse_objective(doc["objective"]) \
        if doc.get("objective") else None
    return SweepPlan(
        scenario=str((doc.get("scenario") or {}).get("name")),
        endpoints=tuple(doc.get("endpoints") or ()),
        axes=tuple(Axis(a["key"], a["kind"], tuple(a["values"])) for a in doc.get("axes", [])),
        points=tuple(Point(int(p["index"]), dict(p.get("lab") or {}), dict(p.get("load") or {}))
                     for p in doc.get("points", [])),
        duration_s=float(load.get("duration_s", 30.0)),
        cooldown_s=float(load.get("cooldown_s", 5.0)), seed=int(load.get("seed", 1)),
        repeat=int(load.get("repeat", 1)), workers=int(load.get("workers", 1)),
        users=load.get("users"), spawn_rate=load.get("spawn_rate"),
        params=dict(load.get("params") or {}), sslmode=load.get("sslmode"),
        objective=objective, baseline=doc.get("baseline"), preset=doc.get("preset"),
        lab_name=str(doc.get("lab_name") or "default"),
        restarts=int(doc.get("restarts_planned") or 0))


def read(sweep_dir: Path | str) -> dict[str, Any]:
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / FILE
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir} is not a directory",
                          fix="give a sweep directory (reports/<sweep-id>)")
    if not path.is_file():
        raise ReportError(f"{sweep_dir} has no {FILE}: it is not a sweep directory",
                          fix="give the directory `lab sweep` printed")
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read {path} ({exc})",
                          fix="the sweep's run directories are intact: lab report each") \
            from None
    fmt = str(doc.get("format", ""))
    if not fmt.startswith("sweep/") or fmt.split("/")[1].split(".")[0] != "1":
        raise ReportError(f"{path} is {fmt or 'of no known format'}; this lab reads sweep/1",
                          fix="use the pooler-lab version that wrote it")
    return doc


def write(sweep_dir: Path, doc: dict[str, Any]) -> None:
    from lab.state import atomic_write

    doc["updated_at"] = iso(clock.now())
    atomic_write(sweep_dir / FILE, json.dumps(doc, indent=2) + "\n", 0o644)


def counts(doc: dict[str, Any]) -> dict[str, int]:
    out = dict.fromkeys(STATUSES, 0)
    for p in doc.get("points", []):
        out[p.get("status", "pending")] = out.get(p.get("status", "pending"), 0) + 1
    return out
