"""The manifest of a run directory (manifest/1, docs/formats.md): what ran, where, with which
versions and settings, how noisy the machine was, and the command that reproduces it. No
password is ever written here: URIs carry the mask."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from lab import __version__, resources
from lab.connect import MASK
from lab.run.spec import Leg, RunSpec, mask_uri
from lab.run.targets import Targets

MANIFEST_FORMAT = "manifest/1"
# What Locust logs when its process saturates a core (its measurements are then suspect).
LOCUST_CPU_WARNING = "CPU usage above"


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def write(run_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = run_dir / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    os.replace(tmp, run_dir / "manifest.json")


def new(spec: RunSpec, legs: list[Leg], endpoints: tuple[str, ...], targets: Targets,
        run_id: str, command: list[str]) -> dict[str, Any]:
    one = legs[0]
    if len(legs) == 1:
        scenario = {"name": one.scenario.name, "file": relative(one.scenario.path),
                    "params": one.params, "seed": spec.seed}
        load_users: Any = one.users
        spawn: Any = one.spawn_rate
    else:
        scenario = {"name": " + ".join(leg.scenario.name for leg in legs),
                    "file": ", ".join(relative(leg.scenario.path) for leg in legs),
                    "params": {leg.scenario.name: leg.params for leg in legs},
                    "seed": spec.seed}
        load_users = {leg.scenario.name: leg.users for leg in legs}
        spawn = {leg.scenario.name: leg.spawn_rate for leg in legs}
    return {
        "format": MANIFEST_FORMAT,
        "run_id": run_id,
        "started_at": None,
        "ended_at": None,
        "duration_s": None,
        "interrupted": True,  # until the run finishes normally
        "command": command,
        "reproduce": None,
        "lab_version": __version__,
        "git": _git_info(),
        "scenario": scenario,
        "legs": [{"scenario": leg.scenario.name, "file": relative(leg.scenario.path),
                  "params": leg.params, "users": leg.users, "spawn_rate": leg.spawn_rate}
                 for leg in legs],
        "load": {"users": load_users, "spawn_rate": spawn, "workers": spec.workers,
                 "duration_s": spec.duration_s, "cooldown_s": spec.cooldown_s,
                 "repeat": spec.repeat, "ui": spec.ui},
        "lab": targets.lab,
        "endpoints": {name: targets.masked[name] for name in endpoints},
        "faults": [f.to_json() for f in spec.faults],
        "segments": [],
        "components": _components(targets),
        "host": _host(),
        "files": {"requests": "requests.parquet", "connections": "connections.jsonl",
                  "locust": "locust/"},
    }


def reproduce_argv(spec: RunSpec, scenario, params, endpoints, users, spawn_rate) -> list[str]:
    argv = ["lab", "run", scenario.name if scenario.builtin else relative(scenario.path)]
    if spec.target:
        argv += ["--target", mask_uri(spec.target)]
    else:
        for endpoint in endpoints:
            argv += ["--endpoint", endpoint]
        if spec.lab_name != "default":
            argv += ["--name", spec.lab_name]
    argv += ["--duration", f"{spec.duration_s:g}s", "--users", str(users),
             "--spawn-rate", f"{spawn_rate:g}", "--seed", str(spec.seed),
             "--cooldown", f"{spec.cooldown_s:g}s"]
    if spec.repeat > 1:
        argv += ["--repeat", str(spec.repeat)]
    if spec.workers > 1:
        argv += ["--workers", str(spec.workers)]
    if spec.master_bind:
        argv += ["--master-bind", spec.master_bind, "--expect-workers", str(spec.expect_workers)]
    if spec.sslmode:
        argv += ["--sslmode", spec.sslmode]
    if spec.connect_cost:
        argv.append("--connect-cost")
    for fault in spec.faults:
        argv += ["--fault", fault.text]
    for key, value in params.items():
        argv += ["-P", f"{key}={value}"]
    return argv


def reproduce_text(manifest: dict[str, Any]) -> str:
    lines = []
    lab = manifest.get("lab")
    if lab:
        up = ["lab", "up", "--tier", lab["tier"], "--max-connections",
              str(lab["max_connections"]), "--pool-size", str(lab["pool_size"]),
              "--max-client-conn", str(lab["max_client_conn"]), "--pool-sharing",
              lab["pool_sharing"], "--max-prepared-statements",
              str(lab["max_prepared_statements"]), "--shared-max-prepared-statements",
              str(lab.get("shared_max_prepared_statements", 0)), "--query-wait-timeout",
              str(lab["query_wait_timeout"]),
              # a lab from before the setting queued session-mode clients beyond pool_size
              "--session-overflow", str(lab.get("session_overflow", "queue"))]
        if lab.get("ssl_enforce"):
            up.append("--ssl-enforce")
        network = lab.get("network", "local")
        if network == "custom":
            up += [arg for key in ("client_db_rtt_ms", "client_pooler_rtt_ms",
                                   "pooler_db_rtt_ms")
                   for arg in (f"--{key.replace('_', '-')}", f"{lab.get(key, 0):g}")]
        else:
            up += ["--network", network]
        if lab.get("relay", "auto") != "auto":
            up += ["--relay", lab["relay"]]
        if lab["name"] != "default":
            up += ["--name", lab["name"]]
        lines.append(shlex.join(up))
    lines.append(shlex.join(manifest["command"]))
    return "\n".join(lines)


def redact(text: str, values: tuple[str, ...]) -> str:
    from urllib.parse import quote

    for value in values:
        if value:
            text = text.replace(value, MASK).replace(quote(value, safe=""), MASK)
    return text


def relative(path: Path) -> str:
    root = resources.repo_root()
    try:
        return str(path.resolve().relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


# -- how noisy the machine is ----------------------------------------------------------------


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def noise(project: str | None) -> dict[str, Any]:
    """What else is loading this machine now: the load average, and containers running that
    are not this lab's (other labs by name). A report warns about them; a benchmark taken
    beside another lab's load measures both."""
    info: dict[str, Any] = {"load_avg": load_average(), "cores": os.cpu_count(),
                            "other_containers": [], "other_labs": []}
    try:
        from lab import engine

        for c in engine.client().containers.list():
            labels = c.labels or {}
            owner = labels.get("com.docker.compose.project")
            if project is not None and owner == project:
                continue
            info["other_containers"].append(c.name)
            if owner and owner.startswith("pooler-lab-"):
                name = owner.removeprefix("pooler-lab-")
                if name not in info["other_labs"]:
                    info["other_labs"].append(name)
    except Exception:  # no engine (a --target run): the load average still says something
        info["other_containers"] = None
        info["other_labs"] = None
    return info


def locust_cpu_warnings(log_path: Path) -> int:
    try:
        return log_path.read_text(errors="replace").count(LOCUST_CPU_WARNING)
    except OSError:
        return 0


# -- versions and host -----------------------------------------------------------------------


def _git_info() -> dict[str, Any]:
    root = resources.repo_root()
    if root is None:
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                     "--untracked-files=no"], capture_output=True, text=True,
                                    timeout=10).stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _components(targets: Targets) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "psycopg": _version("psycopg"),
        "psycopg_pool": _version("psycopg-pool"),
        "locust": _version("locust"),
        "postgres": None,
        "pgbouncer": None,
        "image": None,
    }
    from lab import pg

    pg_target = next(t for t in targets.sampler_targets if t.kind == "postgres")
    try:
        import psycopg

        with psycopg.connect(host=pg_target.host, port=pg_target.port, user=pg_target.user,
                             password=targets.sampler_passwords[pg_target.name],
                             dbname=pg_target.dbname, connect_timeout=5,
                             application_name="pooler-lab-manifest") as conn:
            info["postgres"] = conn.execute("select version()").fetchone()[0]
    except Exception as exc:
        info["postgres"] = f"unknown ({type(exc).__name__})"
    bouncer = next((t for t in targets.sampler_targets if t.kind == "pgbouncer"), None)
    if bouncer is not None:
        try:
            with pg.admin_connect(bouncer.host, bouncer.port, bouncer.user,
                                  targets.sampler_passwords[bouncer.name], **bouncer.tls) as conn:
                rows = pg.rows(conn, "SHOW VERSION")
                info["pgbouncer"] = str(next(iter(rows[0].values()))) if rows else None
        except Exception as exc:
            info["pgbouncer"] = f"unknown ({type(exc).__name__})"
    if targets.image_tag:
        from lab import image

        with contextlib.suppress(Exception):
            info["image"] = image.info(targets.image_tag)
    info["platform"] = platform.platform()
    return info


def _host() -> dict[str, Any]:
    memory = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cores": os.cpu_count(), "memory_bytes": memory, "platform": sys.platform,
            "kernel": platform.release(), "machine": platform.machine()}
