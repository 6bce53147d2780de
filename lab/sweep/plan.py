"""What a sweep was asked to do: its axes (``--vary``), its points in run order, its objective
and its estimate, all checked before the lab is touched.

An axis is a lab setting (changed by bringing the lab up again between points) or a load
parameter (``users``, ``sslmode`` or a scenario parameter, varied within one lab). Points are
the cross product, ordered so that every combination of lab settings is brought up once: the
combinations in the order their values were given, the lab's current settings first when they
are one of them, and the load points of each combination one after another.

Pure: no Docker, no click, no printing.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import config as cfgmod
from lab.errors import ConfigError

# Lab settings a sweep may vary: each needs the lab brought up again.
LAB_KEYS = ("tier", "max_connections", "max_client_conn", "pool_size", "pool_sharing",
            "session_overflow", "max_prepared_statements", "shared_max_prepared_statements",
            "query_wait_timeout", "ssl_enforce", "network", *cfgmod.RTT_KEYS, "relay")
# Load parameters every scenario has; any scenario parameter (-P) is one too.
LOAD_KEYS = ("users", "sslmode")
# The order in which lab settings make a lab "smaller" (the capacity answer): the tier first.
SIZE_ORDER = ("tier", "max_connections", "pool_size", "max_client_conn")
# What the estimate adds to each segment's load time, each run and each restart (measured here:
# a 3 s segment takes about 6 s, a restart 6-10 s).
SEGMENT_OVERHEAD_S = 3.5
RUN_OVERHEAD_S = 3.0
RESTART_S = 10.0
REPORT_S = 15.0
DEFAULT_OBJECTIVE = "p99<100ms,errors<0.1%"
_FIELDS = {f.name: f for f in dataclasses.fields(cfgmod.LabConfig)}


@dataclass(frozen=True)
class Axis:
    """One ``--vary KEY=V1,V2``: ``key`` is a lab setting, ``users``, ``sslmode`` or
    ``P.<scenario parameter>``."""

    key: str
    kind: str  # "lab" or "load"
    values: tuple[Any, ...]

    @property
    def name(self) -> str:
        """The key as a person reads it: ``spike_rate`` for ``P.spike_rate``."""
        return self.key.removeprefix("P.")

    @property
    def numeric(self) -> bool:
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in self.values)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "values": list(self.values)}


@dataclass(frozen=True)
class Point:
    """One point of the sweep: the lab settings it needs and the load it runs."""

    index: int  # 1-based, in run order
    lab: dict[str, Any]
    load: dict[str, Any]  # users, sslmode, P.<name>

    @property
    def id(self) -> str:
        parts = [f"{k.removeprefix('P.')}-{value_text(v)}"
                 for k, v in {**self.lab, **self.load}.items()]
        text = re.sub(r"[^0-9A-Za-z.-]+", "-", ".".join(parts)).strip("-.")[:80]
        return f"p{self.index:02d}" + (f"-{text}" if text else "")

    def describe(self) -> str:
        values = {**self.lab, **self.load}
        return ", ".join(f"{k.removeprefix('P.')}={value_text(v)}"
                         for k, v in values.items()) or "as is"


@dataclass(frozen=True)
class Condition:
    metric: str  # p50, p95, p99 (ms), errors, not_started (shares of the scheduled arrivals)
    op: str  # "<" or "<="
    value: float

    def holds(self, measured: float | None) -> bool:
        if measured is None or not math.isfinite(measured):
            return False
        return measured < self.value if self.op == "<" else measured <= self.value

    @property
    def text(self) -> str:
        if self.metric in ("errors", "not_started"):
            return f"{self.metric}{self.op}{_pct_text(self.value)}"
        if self.value >= 1000 and self.value % 1000 == 0:
            return f"{self.metric}{self.op}{self.value / 1000:g}s"
        return f"{self.metric}{self.op}{self.value:g}ms"


@dataclass(frozen=True)
class Objective:
    conditions: tuple[Condition, ...]

    @property
    def text(self) -> str:
        return ",".join(c.text for c in self.conditions)


@dataclass(frozen=True)
class SweepPlan:
    """Everything a sweep will do; written into sweep.json before the first point runs."""

    scenario: str  # a name from `lab scenarios`, or a locustfile's path
    endpoints: tuple[str, ...]
    axes: tuple[Axis, ...]
    points: tuple[Point, ...]
    duration_s: float = 30.0
    cooldown_s: float = 5.0
    seed: int = 1
    repeat: int = 1
    workers: int = 1
    users: int | None = None  # when not swept (None: the scenario's default)
    spawn_rate: float | None = None
    params: dict[str, str] = field(default_factory=dict)  # fixed -P values
    sslmode: str | None = None
    objective: Objective | None = None
    baseline: str | None = None
    preset: str | None = None
    lab_name: str = "default"
    restarts: int = 0  # lab bring-ups the order needs (the current lab counted as up)

    @property
    def lab_axes(self) -> tuple[Axis, ...]:
        return tuple(a for a in self.axes if a.kind == "lab")

    @property
    def load_axes(self) -> tuple[Axis, ...]:
        return tuple(a for a in self.axes if a.kind == "load")

    def point_seconds(self) -> float:
        segments = self.repeat * len(self.endpoints)
        return (segments * (self.duration_s + SEGMENT_OVERHEAD_S)
                + max(0, segments - 1) * self.cooldown_s + RUN_OVERHEAD_S)

    def estimate_s(self, points: int | None = None, restarts: int | None = None) -> float:
        """Seconds the sweep (or ``points`` of it with ``restarts``) should take here."""
        n = len(self.points) if points is None else points
        r = self.restarts if restarts is None else restarts
        return n * self.point_seconds() + r * RESTART_S + REPORT_S


# -- parsing ------------------------------------------------------------------------------------


def parse_vary(texts: Sequence[str], scenario: Any) -> tuple[Axis, ...]:
    """``KEY=V1,V2,...`` texts -> axes, each value checked and typed. ``scenario`` is a
    ``lab.scenarios.Scenario``: its parameters are load keys (``P.NAME``, or ``NAME`` when no
    lab setting has that name)."""
    axes: dict[str, Axis] = {}
    for text in texts:
        key, sep, rest = str(text).partition("=")
        key = key.strip()
        values = [v.strip() for v in rest.split(",")]
        if not sep or not key or not any(values):
            raise ConfigError(f"--vary {text!r} is not KEY=V1,V2,...",
                              fix="e.g. --vary users=20,60,100 --vary tier=micro,small")
        if any(not v for v in values):
            raise ConfigError(f"--vary {text!r} has an empty value",
                              fix="separate the values with single commas")
        axis = make_axis(key, values, scenario)
        if axis.key in axes:
            raise ConfigError(f"--vary {axis.key} is given twice",
                              fix=f"give all its values once: --vary {axis.key}=A,B,C")
        axes[axis.key] = axis
    return tuple(axes.values())


def make_axis(key: str, values: Sequence[Any], scenario: Any) -> Axis:
    kind, canonical = _classify(key, scenario)
    typed: list[Any] = []
    for value in values:
        v = _coerce(canonical, kind, value, scenario)
        if v in typed:
            raise ConfigError(f"--vary {canonical} lists {value!r} twice",
                              fix="give each value once")
        typed.append(v)
    return Axis(canonical, kind, tuple(typed))


def _classify(key: str, scenario: Any) -> tuple[str, str]:
    params = scenario.params if scenario is not None and scenario.declares_params else None
    if key.startswith("lab."):
        name = key.removeprefix("lab.")
        if name not in LAB_KEYS:
            raise ConfigError(f"--vary {key}: {name!r} is not a lab setting a sweep can vary",
                              fix=f"use one of {', '.join(LAB_KEYS)}")
        return "lab", name
    if key.startswith(("P.", "-P.")):
        name = key.split(".", 1)[1]
        if params is not None and name not in params:
            raise ConfigError(f"--vary {key}: {scenario.name} has no parameter {name!r}",
                              fix=f"see `lab scenarios` (valid: {', '.join(params) or 'none'})")
        return "load", f"P.{name}"
    if key in LOAD_KEYS:
        return "load", key
    is_param = params is not None and key in params
    if key in LAB_KEYS and is_param:
        raise ConfigError(f"--vary {key} is both a lab setting and a parameter of "
                          f"{scenario.name}", fix=f"write lab.{key} or P.{key}")
    if key in LAB_KEYS:
        return "lab", key
    if is_param or (params is None and scenario is not None):
        return "load", f"P.{key}"
    valid = [*LAB_KEYS, *LOAD_KEYS, *(f"P.{p}" for p in (params or {}))]
    raise ConfigError(f"--vary {key}: not a lab setting, users, sslmode or a parameter of "
                      f"{getattr(scenario, 'name', 'the scenario')}",
                      fix=f"use one of {', '.join(valid)}")


def _coerce(key: str, kind: str, value: Any, scenario: Any) -> Any:
    if kind == "lab":
        default = _FIELDS[key].default
        if key == "tier":
            text = str(value).strip().lower()
            if text not in cfgmod.TIERS:
                raise ConfigError(f"--vary tier: unknown tier {value!r}",
                                  fix=f"use tiers from {', '.join(cfgmod.TIERS)}")
            return text
        if isinstance(default, bool):
            return cfgmod._bool({key: value}, key, False)
        if isinstance(default, int):
            return cfgmod._int({key: value}, key, 0, minimum=0)
        if isinstance(default, float):
            return cfgmod._float({key: value}, key, minimum=0.0, maximum=cfgmod.MAX_RTT_MS)
        return str(value).strip()
    if key == "users":
        try:
            users = int(str(value).strip())
        except ValueError:
            raise ConfigError(f"--vary users: {value!r} is not a whole number",
                              fix="e.g. --vary users=20,60,100") from None
        if users < 1:
            raise ConfigError(f"--vary users: {users} is below 1", fix="use 1 or more users")
        return users
    if key == "sslmode":
        from lab.run.spec import SSLMODES

        if str(value) not in SSLMODES:
            raise ConfigError(f"--vary sslmode: unknown sslmode {value!r}",
                              fix=f"use one of {', '.join(SSLMODES)}")
        return str(value)
    name = key.removeprefix("P.")
    if scenario is not None and scenario.declares_params:
        return scenario.params[name].coerce(value)
    return str(value)


_CONDITION = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|<)\s*([0-9.]+)\s*(ms|s|%)?\s*$", re.I)
_METRICS = {"p50": "p50", "p95": "p95", "p99": "p99", "errors": "errors", "error": "errors",
            "error_rate": "errors", "not_started": "not_started", "not-started": "not_started"}


def parse_objective(text: str | None) -> Objective:
    """``p99<100ms,errors<0.1%`` -> an Objective (percentiles in ms, shares as fractions)."""
    text = DEFAULT_OBJECTIVE if text is None else text
    fix = 'e.g. --objective "p99<100ms,errors<0.1%" (p50, p95, p99 in ms or s; errors, ' \
          "not_started in %)"
    conditions = []
    for part in text.split(","):
        if not part.strip():
            continue
        m = _CONDITION.match(part)
        if not m or m[1].lower() not in _METRICS:
            raise ConfigError(f"cannot read the objective {part.strip()!r}", fix=fix)
        metric = _METRICS[m[1].lower()]
        try:
            number = float(m[3])
        except ValueError:
            raise ConfigError(f"cannot read the number in {part.strip()!r}", fix=fix) from None
        unit = (m[4] or "").lower()
        if metric in ("errors", "not_started"):
            if unit not in ("%", ""):
                raise ConfigError(f"{part.strip()!r}: {metric} is a share", fix=fix)
            value = number / 100.0 if unit == "%" else number
            if value > 1:
                raise ConfigError(f"{part.strip()!r}: a share above 100%", fix=fix)
        else:
            if unit == "%":
                raise ConfigError(f"{part.strip()!r}: a percentile is a time", fix=fix)
            value = number * 1000.0 if unit == "s" else number
        conditions.append(Condition(metric, m[2], value))
    if not conditions:
        raise ConfigError("the objective is empty", fix=fix)
    return Objective(tuple(conditions))


# -- points ---------------------------------------------------------------------------------


def lab_combos(axes: Sequence[Axis]) -> list[dict[str, Any]]:
    lab = [a for a in axes if a.kind == "lab"]
    return [dict(zip([a.key for a in lab], values, strict=True))
            for values in itertools.product(*(a.values for a in lab))]


def order_points(axes: Sequence[Axis], current: cfgmod.LabConfig | None = None
                 ) -> tuple[tuple[Point, ...], int]:
    """The cross product in run order, and how many lab bring-ups it needs: each lab
    combination once (the one that matches ``current``, the lab as it is now, first and for
    free), its load points one after another."""
    combos = lab_combos(axes)
    if current is not None:
        same = [c for c in combos if matches(current, c)]
        if same:
            combos.remove(same[0])
            combos.insert(0, same[0])
    load = [a for a in axes if a.kind == "load"]
    loads = [dict(zip([a.key for a in load], values, strict=True))
             for values in itertools.product(*(a.values for a in load))]
    points = []
    for combo in combos:
        for lv in loads:
            points.append(Point(len(points) + 1, dict(combo), dict(lv)))
    restarts = sum(1 for i, c in enumerate(combos)
                   if not (i == 0 and current is not None and matches(current, c)))
    return tuple(points), restarts


def matches(current: cfgmod.LabConfig, changes: Mapping[str, Any]) -> bool:
    """The lab as it is has these settings already (no bring-up needed)."""
    from lab.stack import config_with

    try:
        wanted = config_with(current, changes)
    except ConfigError:
        return False
    return wanted.to_dict() == current.to_dict()


def check_lab_points(axes: Sequence[Axis], base: cfgmod.LabConfig) -> None:
    """Every combination of lab settings is one ``lab up`` accepts (e.g. pool_size within the
    tier's max_connections), said before anything runs."""
    from lab.stack import config_with

    for combo in lab_combos(axes):
        try:
            config_with(base, combo)
        except ConfigError as exc:
            said = ", ".join(f"{k}={v}" for k, v in combo.items())
            raise ConfigError(f"the point {said} is not a lab setting lab up accepts: "
                              f"{exc.message}", fix=exc.fix or "drop that value") from None


def size_key(lab: Mapping[str, Any], axes: Sequence[Axis]) -> tuple:
    """How "big" a combination of lab settings is: tier (in Supabase's order), then
    max_connections, pool_size, max_client_conn, then the other settings in --vary order."""
    tiers = list(cfgmod.TIERS)
    keys = [k for k in SIZE_ORDER if k in lab] + [a.key for a in axes
                                                  if a.key in lab and a.key not in SIZE_ORDER]
    out = []
    for k in keys:
        v = lab[k]
        if k == "tier":
            out.append(tiers.index(v))
        else:
            axis = next((a for a in axes if a.key == k), None)
            out.append(v if isinstance(v, int | float) and not isinstance(v, bool)
                       else (axis.values.index(v) if axis and v in axis.values else 0))
    return tuple(out)


# -- presets ------------------------------------------------------------------------------------

PRESET_KEYS = ("SCENARIO", "ENDPOINTS", "VARY", "PARAMS", "USERS", "DURATION", "COOLDOWN",
               "OBJECTIVE", "BASELINE", "REPEAT")


@dataclass(frozen=True)
class Preset:
    name: str
    path: Path
    question: str  # the module docstring's first paragraph
    description: str  # the rest of the docstring
    scenario: str
    endpoints: tuple[str, ...]
    vary: tuple[str, ...]  # KEY=V1,V2 texts
    params: dict[str, str]
    users: int | None
    duration: str | None
    cooldown: str | None
    objective: str | None
    baseline: str | None
    repeat: int | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "file": str(self.path), "question": self.question,
                "scenario": self.scenario, "endpoints": list(self.endpoints),
                "vary": list(self.vary), "params": self.params, "users": self.users,
                "duration": self.duration, "cooldown": self.cooldown,
                "objective": self.objective, "baseline": self.baseline}


def preset_files() -> list[Path]:
    from lab import resources

    files = resources.python_files(resources.sweeps_dir())
    for path in resources.env_paths("POOLER_LAB_SWEEPS", "sweep presets"):
        files += resources.python_files(path) if path.is_dir() else [path]
    return files


def presets() -> list[Preset]:
    return [load_preset(p) for p in preset_files()]


def find_preset(name_or_path: str) -> Preset:
    from lab import resources

    path = Path(name_or_path).expanduser()
    if name_or_path.endswith(".py") or "/" in name_or_path:
        if not path.is_file():
            raise ConfigError(f"sweep preset {name_or_path} does not exist",
                              fix="give a preset name from `lab sweep --list` or a .py file")
        return load_preset(path.absolute())
    for file in preset_files():
        if resources.name_of_file(file) == name_or_path:
            return load_preset(file)
    names = ", ".join(resources.name_of_file(f) for f in preset_files())
    raise ConfigError(f"unknown sweep preset {name_or_path!r} (built in: {names})",
                      fix="lab sweep --list shows them; or give the path of a preset file")


def load_preset(path: Path) -> Preset:
    """A preset file: a docstring (its question) and the literals of PRESET_KEYS."""
    from lab import resources

    name = resources.name_of_file(path)
    fix = f"see sweeps/ for the format; correct {path}"
    module = resources.load_file(path, f"lab_sweep_preset_{name.replace('-', '_')}", fix)
    doc = (module.__doc__ or "").strip()
    if "SCENARIO" not in vars(module) or "VARY" not in vars(module):
        raise ConfigError(f"{path} defines no SCENARIO or no VARY", fix=fix)
    vary = module.VARY
    if not isinstance(vary, dict) or not vary:
        raise ConfigError(f"{path}: VARY must be a dict of key -> list of values", fix=fix)
    texts = tuple(f"{k}=" + ",".join(str(v) for v in (vals if isinstance(vals, list | tuple)
                                                      else [vals]))
                  for k, vals in vary.items())
    get = vars(module).get
    first, _, rest = doc.partition("\n\n")
    return Preset(
        name=name, path=path, question=" ".join(first.split()) or name,
        description=rest.strip(), scenario=str(module.SCENARIO),
        endpoints=tuple(get("ENDPOINTS") or ("transaction",)), vary=texts,
        params={str(k): str(v) for k, v in (get("PARAMS") or {}).items()},
        users=get("USERS"), duration=get("DURATION"), cooldown=get("COOLDOWN"),
        objective=get("OBJECTIVE"), baseline=get("BASELINE"), repeat=get("REPEAT"))


# -- words ------------------------------------------------------------------------------------


def value_text(value: Any) -> str:
    """A swept value as people write it: 20 (not 20.0), true, micro."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _pct_text(value: float) -> str:
    return f"{100 * value:g}%"


def duration_text(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def describe(plan: SweepPlan, done: int = 0, sweep_dir: Path | None = None) -> list[str]:
    """The plan as printed before the sweep starts (and by --dry-run)."""
    left = len(plan.points) - done
    lines = [f"sweep of {plan.scenario} on {', '.join(plan.endpoints)}"
             + (f" (preset {plan.preset})" if plan.preset else "")]
    for axis in plan.axes:
        how = "lab setting: the lab is brought up again" if axis.kind == "lab" \
            else "load, within one lab"
        lines.append(f"  vary {axis.name} = {', '.join(map(value_text, axis.values))}  ({how})")
    each = (f"{plan.duration_s:g} s per segment, cooldown {plan.cooldown_s:g} s, seed "
            f"{plan.seed}" + (f", {plan.repeat} repeats" if plan.repeat > 1 else ""))
    lines.append(f"  {len(plan.points)} points x {len(plan.endpoints)} endpoints "
                 f"({each}); {plan.restarts} lab restart(s)")
    if plan.objective:
        lines.append(f"  objective {plan.objective.text}; ratios against "
                     f"{plan.baseline or plan.endpoints[0]}")
    if done:
        lines.append(f"  {done} point(s) already measured, {left} to run")
    lines.append(f"  estimated duration: {duration_text(plan.estimate_s(left))}")
    for p in plan.points:
        lines.append(f"    {p.id}: {p.describe()}")
    if sweep_dir is not None:
        lines.append(f"  into {sweep_dir}")
    return lines
