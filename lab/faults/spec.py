"""What a fault is: ``AT:TARGET:ACTION[:DURATION]``, parsed, checked and described. Pure.

Two kinds of fault, whose action names never overlap:

* container faults act on a compose service (``db``, ``pooler``, ``dedicated``) through the
  Docker engine: ``kill``, ``stop``, ``restart``, ``pause``, ``disconnect``, ``fast-restart``;
* admin faults run a command on the admin console of the PgBouncer serving an endpoint
  (``session``, ``transaction``, ``dedicated``): ``reconnect``, ``pool-pause``, ``reload``,
  ``kill-clients``.

``dedicated`` is both a container and an endpoint: ``dedicated:pause`` freezes its container,
``dedicated:pool-pause`` runs PAUSE on its console. AT counts from the segment's load start;
DURATION is how long the fault lasts (undone at the segment's end when left out); AT and
DURATION are written like ``20s``, ``1.5s``, ``500ms``, ``2m``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lab.errors import ConfigError

CONTAINER_TARGETS = ("db", "pooler", "dedicated")
CONTAINER_ACTIONS = ("kill", "stop", "restart", "pause", "disconnect", "fast-restart")
ADMIN_TARGETS = ("session", "transaction", "dedicated")
ADMIN_ACTIONS = ("reconnect", "pool-pause", "reload", "kill-clients")
ACTIONS = CONTAINER_ACTIONS + ADMIN_ACTIONS
TARGETS = ("db", "pooler", "dedicated", "session", "transaction")
# Actions that happen once and leave nothing to undo: no DURATION.
INSTANT_ACTIONS = ("restart", "fast-restart", "reconnect", "reload")
# Actions that only some targets take.
ONLY_TARGETS = {"fast-restart": ("db",), "disconnect": ("db", "pooler")}

EXAMPLE = "--fault 20s:pooler:restart"
FORMAT = "AT:TARGET:ACTION[:DURATION]"
_TIME_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


def parse_seconds(text: str, what: str = "time") -> float:
    """``20s``, ``1.5s``, ``500ms``, ``2m`` (a bare number is seconds) -> seconds."""
    match = _TIME_RE.match(text.strip().lower())
    if not match:
        raise ConfigError(f"{what} {text!r} is not a time like 20s, 1.5s, 500ms or 2m",
                          fix=f"write it with a unit, e.g. {EXAMPLE} or "
                              "--fault 1500ms:db:pause:2s")
    value = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not math.isfinite(value):
        raise ConfigError(f"{what} {text!r} is too large", fix=f"e.g. {EXAMPLE}")
    return round(value, 6)


def format_seconds(value: float) -> str:
    """The normalised spelling: ``500ms`` below a second, else ``20s`` / ``1.5s``."""
    if 0 < value < 1 and abs(value * 1000 - round(value * 1000)) < 1e-6:
        return f"{round(value * 1000):d}ms"
    return f"{value:g}s"


def human_seconds(value: float) -> str:
    """For people: ``3 s``, ``1.5 s``, ``500 ms``."""
    if 0 < value < 1:
        return f"{value * 1000:g} ms"
    return f"{value:g} s"


@dataclass(frozen=True)
class FaultSpec:
    at_s: float
    target: str
    action: str
    duration_s: float | None
    text: str  # normalised, e.g. "20s:pooler:restart"

    @property
    def kind(self) -> str:
        """"container" (the Docker engine) or "admin" (a PgBouncer admin console)."""
        return "container" if self.action in CONTAINER_ACTIONS else "admin"

    @property
    def undoable(self) -> bool:
        """Whether the fault lasts until it is undone (with DURATION, or at the end)."""
        return self.action not in INSTANT_ACTIONS

    @property
    def end_s(self) -> float:
        """When it is undone, from the load start: math.inf = at the segment's end."""
        if not self.undoable:
            return self.at_s
        return self.at_s + self.duration_s if self.duration_s is not None else math.inf

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "at_s": self.at_s, "target": self.target,
                "action": self.action, "duration_s": self.duration_s, "kind": self.kind,
                "description": describe(self)}


def _valid_targets(action: str) -> tuple[str, ...]:
    if action in ONLY_TARGETS:
        return ONLY_TARGETS[action]
    return CONTAINER_TARGETS if action in CONTAINER_ACTIONS else ADMIN_TARGETS


def parse_fault(text: str) -> FaultSpec:
    """Parse one ``--fault`` value; ConfigError (with a valid example) when it is wrong."""
    raw = text
    parts = [p.strip().lower() for p in str(text).strip().split(":")]
    if len(parts) not in (3, 4) or not all(parts):
        raise ConfigError(f"fault {raw!r} is not {FORMAT}",
                          fix=f"e.g. {EXAMPLE} or --fault 10s:db:pause:5s")
    at_text, target, action = parts[:3]
    at_s = parse_seconds(at_text, "fault time")
    if target not in TARGETS:
        raise ConfigError(f"fault {raw!r}: unknown target {target!r}",
                          fix=f"use one of {', '.join(TARGETS)}, e.g. {EXAMPLE}")
    if action not in ACTIONS:
        raise ConfigError(
            f"fault {raw!r}: unknown action {action!r}",
            fix=f"use a container action ({', '.join(CONTAINER_ACTIONS)}) on "
                f"{'/'.join(CONTAINER_TARGETS)}, or a pooler action "
                f"({', '.join(ADMIN_ACTIONS)}) on {'/'.join(ADMIN_TARGETS)}, e.g. {EXAMPLE}")
    valid = _valid_targets(action)
    if target not in valid:
        if action == "disconnect" and target == "dedicated":
            raise ConfigError(
                f"fault {raw!r}: the dedicated pooler shares db's network namespace, it has "
                "no network of its own to leave",
                fix=f"disconnect db (both go): --fault {at_text}:db:disconnect"
                    + (f":{parts[3]}" if len(parts) == 4 else ""))
        raise ConfigError(
            f"fault {raw!r}: {action} does not apply to {target} (only to {', '.join(valid)})",
            fix=f"e.g. --fault {at_text}:{valid[0]}:{action}"
                + (f":{parts[3]}" if len(parts) == 4 and action not in INSTANT_ACTIONS else ""))
    duration_s = None
    if len(parts) == 4:
        if action in INSTANT_ACTIONS:
            raise ConfigError(f"fault {raw!r}: {action} happens once and takes no DURATION",
                              fix=f"leave it out: --fault {at_text}:{target}:{action}")
        duration_s = parse_seconds(parts[3], "fault duration")
        if duration_s <= 0:
            raise ConfigError(f"fault {raw!r}: DURATION must be above 0",
                              fix=f"e.g. --fault {at_text}:{target}:{action}:5s, or leave it "
                                  "out to undo the fault at the segment's end")
    normal = f"{format_seconds(at_s)}:{target}:{action}"
    if duration_s is not None:
        normal += f":{format_seconds(duration_s)}"
    return FaultSpec(at_s=at_s, target=target, action=action, duration_s=duration_s,
                     text=normal)


def parse_faults(texts: Iterable[str]) -> list[FaultSpec]:
    """Several ``--fault`` values, sorted by time (not yet checked against a duration)."""
    return sorted((parse_fault(t) for t in texts), key=lambda f: (f.at_s, f.text))


def _conflict_keys(fault: FaultSpec) -> set[str]:
    # The dedicated pooler lives on the db host (one network namespace): a container fault on
    # either one acts on both, so they may not overlap.
    if fault.kind == "container" and fault.target in ("db", "dedicated"):
        return {"db-host", fault.target}
    return {fault.target}


def _overlap(a: FaultSpec, b: FaultSpec) -> bool:
    first, second = sorted((a, b), key=lambda f: f.at_s)
    return second.at_s == first.at_s or second.at_s < first.end_s


def check_within(faults: Iterable[FaultSpec], duration_s: float) -> None:
    """Every fault starts before the segment ends (AT < duration), and no two faults on the
    same target (or two container faults on the db host: db and dedicated) overlap in time."""
    faults = sorted(faults, key=lambda f: (f.at_s, f.text))
    for fault in faults:
        if fault.at_s >= duration_s:
            raise ConfigError(
                f"fault {fault.text} starts at {human_seconds(fault.at_s)}, not before the "
                f"segment's end ({human_seconds(duration_s)})",
                fix=f"choose AT below {format_seconds(duration_s)}, e.g. --fault "
                    f"{format_seconds(duration_s / 2)}:{fault.target}:{fault.action}")
    for i, a in enumerate(faults):
        for b in faults[i + 1:]:
            shared = _conflict_keys(a) & _conflict_keys(b)
            if shared and _overlap(a, b):
                until = ("the segment's end" if math.isinf(a.end_s)
                         else format_seconds(a.end_s))
                raise ConfigError(
                    f"faults {a.text} and {b.text} overlap on "
                    f"{a.target if a.target in shared else 'the db host'}",
                    fix=f"start {b.text.split(':', 1)[1]} after {until}, or give "
                        f"{a.text} a DURATION, e.g. --fault {a.text.split(':')[0]}:"
                        f"{a.target}:{a.action}" + ("" if a.action in INSTANT_ACTIONS
                                                    else ":2s"))


def _who(target: str) -> str:
    return {"session": "session pooler", "transaction": "transaction pooler",
            "dedicated": "dedicated pooler"}.get(target, target)


def describe(fault: FaultSpec) -> str:
    """A short text for live lines and reports: "pooler killed for 3 s"."""
    span = (f" for {human_seconds(fault.duration_s)}" if fault.duration_s is not None
            else " until the segment ends")
    t, a = fault.target, fault.action
    texts = {
        "kill": f"{t} killed{span}",
        "stop": f"{t} stopped (docker stop){span}",
        "restart": f"{t} restarted (docker restart)",
        "pause": f"{t} frozen (docker pause){span}",
        "disconnect": f"{t} cut off the network{span}",
        "fast-restart": "Postgres fast restart (db)",
        "reconnect": f"{_who(t)}: RECONNECT",
        "reload": f"{_who(t)}: RELOAD",
        "pool-pause": f"{_who(t)}: PAUSE{span}",
        "kill-clients": f"{_who(t)}: KILL clients and servers{span}",
    }
    return texts[a]
