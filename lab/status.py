"""`lab status` and `lab doctor`: what the lab is doing now, and what stops it from running."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab import engine, image, stack
from lab.config import ENDPOINTS
from lab.connect import endpoints
from lab.errors import LabError
from lab.state import LabState


def status(name: str = "default") -> dict[str, Any]:
    """Containers, health and live connection counts per endpoint."""
    from lab import sampler  # psycopg: only once we know we are not a Locust process

    cfg, state = stack.load(name)
    containers = engine.project_containers(cfg.project)
    result: dict[str, Any] = {
        "name": cfg.name,
        "project": cfg.project,
        "settings": {k: v for k, v in cfg.to_dict().items() if k != "name"},
        "containers": [
            {"service": c.service, "name": c.name, "state": c.state, "health": c.health,
             "address": c.address} for c in containers
        ],
        "running": sorted({c.service for c in containers if c.state == "running"})
        == sorted(stack.SERVICES),
        "endpoints": {},
        "postgres": None,
    }
    if not result["running"]:
        return result
    eps = endpoints(cfg, containers)
    secrets = state.secrets()
    targets = sampler.lab_targets(cfg, eps)
    snap = sampler.Sampler(targets, sampler.lab_passwords(secrets, targets),
                           shared=sampler.shared_addresses(containers)).snapshot()
    pgs = snap["postgres"]
    by_origin = pgs.get("by_origin", {}) if pgs.get("ok") else {}
    result["postgres"] = {
        "ok": pgs.get("ok", False),
        "error": pgs.get("error"),
        "backends": pgs.get("total"),
        "by_origin": by_origin,
        "max_connections": cfg.max_connections,
    }
    for ep_name in ENDPOINTS:
        entry: dict[str, Any] = {"uri": eps[ep_name].uri()}
        if ep_name == "direct":
            entry.update(clients=by_origin.get("direct", 0), waiting=0,
                         backends=by_origin.get("direct", 0))
        else:
            rec = snap[ep_name]
            if rec.get("ok"):
                pools = rec["pools"]
                entry.update(
                    clients=pools["cl_active"] + pools["cl_waiting"],
                    waiting=pools["cl_waiting"],
                    backends=sum(pools[k] for k in ("sv_active", "sv_idle", "sv_used",
                                                    "sv_tested", "sv_login")),
                    maxwait_s=pools["maxwait_s"],
                )
            else:
                entry.update(error=rec.get("error"))
        result["endpoints"][ep_name] = entry
    return result


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


def doctor(name: str = "default") -> list[Check]:
    """Everything `lab up` needs, each failed check naming the command that fixes it."""
    checks: list[Check] = []
    try:
        info = engine.client().version()
        checks.append(Check("Docker engine", True, f"reachable, version {info.get('Version')}"))
        engine_ok = True
    except LabError as exc:
        checks.append(Check("Docker engine", False, exc.message, exc.fix))
        engine_ok = False
    try:
        argv = stack.compose_command()
        checks.append(Check("Compose v2", True, " ".join(argv)))
    except LabError as exc:
        checks.append(Check("Compose v2", False, exc.message, exc.fix))
    if engine_ok:
        tag = image.tag()
        if image.exists(tag):
            checks.append(Check("Lab image", True, f"{tag} (base {image.info(tag)['base']})"))
        else:
            checks.append(Check("Lab image", False, f"{tag} is not built",
                                "lab image build (no registry: lab image build --offline)"))
    state = LabState(name)
    try:
        cfg, _ = stack.resolve_config(name, None, {})
        if state.exists():
            cfg = state.load_settings()
        own = []
        if engine_ok and state.exists():
            own = [s for s in stack.Stack(cfg, state).ps() if s.state == "running"]
        stack.check_ports_free(cfg, own=own)
        where = ", ".join(f"{ep} {cfg.address_of(ep)}:{cfg.ports[ep]}" for ep in ENDPOINTS)
        checks.append(Check("Addresses and ports", True, f"free or held by this lab: {where}"))
    except LabError as exc:
        checks.append(Check("Addresses and ports", False, exc.message, exc.fix))
    if state.exists() and state.secrets_path.exists():
        mode = state.secrets_path.stat().st_mode & 0o777
        checks.append(Check("Password file", mode == 0o600, f"{state.secrets_path} mode "
                            f"{mode:o}", None if mode == 0o600 else
                            f"chmod 600 {state.secrets_path}"))
    return checks
