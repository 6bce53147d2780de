"""Stage 4 of the pipeline: one load run.

Locust runs as a child process (never imported here: gevent must stay out of this process,
whose psycopg serves the connection sampler). For each endpoint in turn the run starts Locust on
the chosen scenario, samples connection counts on its own threads, prints a live progress line,
and writes everything into ``reports/<run-id>/`` (see docs/formats.md). Ctrl-C stops the load,
keeps what was measured and still leaves a valid run directory; no Locust process outlives
``run``: each child is started in its own process group, and the whole group is stopped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import secrets as pysecrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from lab import __version__, resources, samples, scenarios
from lab.connect import MASK, EndpointInfo
from lab.errors import ConfigError, LabError, RunError

MANIFEST_FORMAT = "manifest/1"
ALL_ENDPOINTS = ("direct", "session", "transaction", "dedicated")
STOP_GRACE_S = 15  # how long Locust gets to stop its users and write its CSV


@dataclass(frozen=True)
class RunSpec:
    """What `lab run` was asked to do; everything here goes into the manifest."""

    scenario: str
    endpoints: tuple[str, ...] = ("transaction",)
    duration_s: float = 30.0
    users: int | None = None
    spawn_rate: float | None = None
    workers: int = 1
    params: dict[str, str] = field(default_factory=dict)
    seed: int = 1
    cooldown_s: float = 5.0
    target: str | None = None  # a Postgres/pooler URI outside the lab
    ui: bool = False
    web_port: int = 8089
    lab_name: str = "default"
    reports_dir: Path = Path("reports")
    sample_interval_s: float = 0.5
    run_id: str | None = None
    # Close the lab poolers' server connections before each segment, so idle backends pooled
    # for one endpoint do not eat into the next one's max_connections.
    reset_poolers: bool = True


@dataclass
class Live:
    """What the progress line shows; updated about once a second."""

    endpoint: str = ""
    elapsed_s: float = 0.0
    duration_s: float = 0.0
    requests: int = 0
    errors: int = 0
    rps: float = 0.0
    p95_ms: float | None = None
    backends: int | None = None
    waiting: int | None = None

    def line(self) -> str:
        p95 = "-" if self.p95_ms is None else f"{self.p95_ms:.2f} ms"
        backends = "-" if self.backends is None else str(self.backends)
        waiting = "-" if self.waiting is None else str(self.waiting)
        return (f"[{self.endpoint} {self.elapsed_s:4.0f}/{self.duration_s:.0f}s] "
                f"{self.rps:7.1f} req/s  p95 {p95}  errors {self.errors}  "
                f"backends {backends}  waiting {waiting}")


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    interrupted: bool
    requests: int
    errors: int


Progress = Callable[[Live], None]
Log = Callable[[str], None]


def parse_duration(text: str) -> float:
    """'90', '90s', '2m', '1h30m' -> seconds."""
    text = text.strip().lower()
    if not text:
        raise ConfigError("empty duration", fix="use e.g. --duration 60s or 2m")
    total, number = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1}
    for ch in text:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total += float(number) * units[ch]
            number = ""
        else:
            raise ConfigError(f"cannot read duration {text!r}", fix="use e.g. 60s, 2m or 1h30m")
    if number:
        total += float(number)
    if total <= 0:
        raise ConfigError(f"duration {text!r} is not positive", fix="use e.g. --duration 60s")
    return total


def new_run_id(scenario: str, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    slug = "".join(c if c.isalnum() or c == "-" else "-" for c in scenario)[:40]
    return f"{now:%Y%m%dT%H%M%SZ}-{slug}-{pysecrets.token_hex(2)}"


def mask_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username or ''}:{MASK}@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


# -- where the load goes -------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """The endpoints of a run, their passwords (never written anywhere) and the sampler's."""

    endpoints: dict[str, EndpointInfo | None]  # None for a --target URI
    uris: dict[str, str]  # with passwords: handed to Locust through its environment only
    masked: dict[str, dict[str, Any]]
    lab: dict[str, Any] | None
    sampler_targets: list[Any]
    sampler_passwords: dict[str, str]
    shared_addresses: list[str]
    secret_values: tuple[str, ...]
    image_tag: str | None = None


def _check_schedule(params: dict[str, Any]) -> None:
    """Refuse an impossible arrival schedule here, not inside Locust after start-up."""
    from lab import schedule

    for prefix in ("", "serverless_", "persistent_"):
        if f"{prefix}spike_rate" in params or f"{prefix}base_rate" in params:
            schedule.from_params(params, prefix=prefix)


def resolve_targets(spec: RunSpec, endpoints: tuple[str, ...] = ()) -> Targets:
    from lab import sampler

    if spec.target:
        parts = urlsplit(spec.target)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            raise ConfigError(f"--target {mask_uri(spec.target)!r} is not a postgresql:// URI",
                              fix='--target "postgresql://user:PASSWORD@host:6543/postgres"')
        password = unquote(parts.password or "")
        target = sampler.Target("postgres", "postgres", parts.hostname, parts.port or 5432,
                                unquote(parts.username or "postgres"),
                                dbname=(parts.path.lstrip("/") or "postgres"))
        return Targets(
            endpoints={"target": None},
            uris={"target": spec.target},
            masked={"target": {"uri": mask_uri(spec.target), "pooler": "unknown"}},
            lab=None,
            sampler_targets=[target],
            sampler_passwords={"postgres": password},
            shared_addresses=[],
            secret_values=(password,) if password else (),
        )
    from lab import connect, image, stack

    cfg, state, containers = stack.require_running(spec.lab_name)
    eps = connect.endpoints(cfg, containers)
    lab_secrets = state.secrets()
    unknown = [e for e in endpoints if e not in eps]
    if unknown:
        raise ConfigError(f"unknown endpoint {unknown[0]!r}",
                          fix=f"use one of {', '.join(eps)} or all")
    password = lab_secrets.postgres_password
    targets = sampler.lab_targets(cfg, eps)
    tag = image.tag()
    return Targets(
        endpoints={name: eps[name] for name in eps},
        uris={name: eps[name].uri(password, bench=True) for name in eps},
        masked={name: {k: v for k, v in eps[name].to_json().items() if k != "use_when"}
                for name in eps},
        lab=cfg.to_dict(),
        sampler_targets=targets,
        sampler_passwords=sampler.lab_passwords(lab_secrets, targets),
        shared_addresses=sampler.shared_addresses(containers),
        secret_values=lab_secrets.values(),
        image_tag=tag,
    )


# -- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leg:
    """One scenario of a run, with its parameters and load; a run has one, `lab bench` two."""

    scenario: Any  # lab.scenarios.Scenario
    params: dict[str, Any]
    users: int
    spawn_rate: float


def make_leg(scenario_name: str, raw_params: dict[str, str], users: int | None,
             spawn_rate: float | None) -> Leg:
    scenario = scenarios.resolve(scenario_name)
    params = scenario.coerce(raw_params)
    users = users or scenario.default_users
    if users < 1:
        raise ConfigError(f"--users {users} is below 1", fix="use --users 1 or more")
    _check_schedule(params)
    return Leg(scenario, params, users, spawn_rate or float(users))


def run(spec: RunSpec, progress: Progress | None = None, log: Log = print) -> RunResult:
    """Run the scenario against each endpoint in turn; return the run directory."""
    leg = make_leg(spec.scenario, spec.params, spec.users, spec.spawn_rate)
    endpoints = ("target",) if spec.target else _expand(spec.endpoints)
    command = reproduce_argv(spec, leg.scenario, leg.params, endpoints, leg.users,
                             leg.spawn_rate)
    return execute(spec, [leg], endpoints, command, progress, log)


def execute(spec: RunSpec, legs: list[Leg], endpoints: tuple[str, ...], command: list[str],
            progress: Progress | None = None, log: Log = print) -> RunResult:
    """Each leg against each endpoint in turn, into one run directory."""
    if spec.workers < 1:
        raise ConfigError(f"--workers {spec.workers} is below 1", fix="use --workers 1 or more")
    targets = resolve_targets(spec, endpoints)
    name = " + ".join(leg.scenario.name for leg in legs)
    run_id = spec.run_id or new_run_id("bench" if len(legs) > 1 else name)
    run_dir = spec.reports_dir / run_id
    (run_dir / "locust").mkdir(parents=True, exist_ok=False)
    manifest = _manifest(spec, legs, endpoints, targets, run_id, command)
    _write_manifest(run_dir, manifest)

    from lab import sampler as samplermod

    live = Live(duration_s=spec.duration_s)
    watcher = _SampleWatcher(run_dir)
    sampler = samplermod.Sampler(
        targets.sampler_targets, targets.sampler_passwords, shared=targets.shared_addresses,
        out=run_dir / "connections.jsonl", interval=spec.sample_interval_s,
    )
    interrupted = False
    failure: RunError | None = None
    started = time.perf_counter()
    manifest["started_at"] = _iso(time.time())
    try:
        sampler.start()
        first = True
        for leg in legs:
            for endpoint in endpoints:
                if not first and spec.cooldown_s > 0:
                    log(f"cooldown {spec.cooldown_s:.0f} s")
                    time.sleep(spec.cooldown_s)
                first = False
                interrupted, failure = _segment(spec, leg, endpoint, targets, run_dir,
                                                manifest, sampler, watcher, live, progress, log)
                if interrupted or failure:
                    break
            if interrupted or failure:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        sampler.stop()
        _finish(run_dir, manifest, started, interrupted, targets, log)
    if failure is not None:
        raise failure
    requests, errors = watcher.totals(final=True)
    return RunResult(run_dir=run_dir, interrupted=interrupted, requests=requests, errors=errors)


def _segment(spec: RunSpec, leg: Leg, endpoint: str, targets: Targets, run_dir: Path,
             manifest: dict[str, Any], sampler, watcher, live: Live,
             progress: Progress | None, log: Log) -> tuple[bool, RunError | None]:
    """One scenario against one endpoint. Returns whether it was interrupted, and the error
    when Locust stopped without running a single request (a locustfile it cannot load, a
    bad option): the run stops there, its directory kept."""
    segment: dict[str, Any] = {"scenario": leg.scenario.name, "endpoint": endpoint}
    if spec.reset_poolers:
        segment["poolers_reset"] = reset_poolers(targets, log)
    segment["started_at"] = _iso(time.time())
    manifest["segments"].append(segment)
    _write_manifest(run_dir, manifest)
    log(f"{leg.scenario.name} -> {endpoint}: {leg.users} users, {spec.duration_s:.0f} s"
        + (f", {spec.workers} workers" if spec.workers > 1 else ""))
    watcher.new_segment()
    before = watcher.requests
    exit_code, interrupted = _run_segment(spec, leg, endpoint, targets, run_dir, sampler,
                                          watcher, live, progress)
    segment.update(ended_at=_iso(time.time()), locust_exit=exit_code, interrupted=interrupted,
                   **_schedule_facts(run_dir, endpoint, leg.scenario.name))
    failure = None
    # Locust exits 1 for failed requests too; only "non-zero and not one sample" means it
    # never ran (its failed requests would have been recorded as error samples).
    if not interrupted and exit_code != 0 and watcher.requests == before:
        log_path = run_dir / "locust" / f"{leg.scenario.name}.{endpoint}.log"
        said = _redact(_last_line(log_path), targets.secret_values)
        segment["failed"] = said
        failure = RunError(
            f"Locust stopped without running a request against {endpoint} "
            f"(exit {exit_code}): {said}; measured so far: {run_dir}",
            fix=f"read {log_path}")
    _write_manifest(run_dir, manifest)
    return interrupted, failure


def _last_line(path: Path) -> str:
    """The last meaningful line of a Locust log (its error), at most 300 characters."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "no log"
    lines = [ln for ln in lines if ln and not ln.startswith("^")]
    return (lines[-1] if lines else "no output")[:300]


def reset_poolers(targets: Targets, log: Log) -> dict[str, int]:
    """Drain every lab PgBouncer (RECONNECT, wait for no server connection); report leftovers."""
    from lab import pg

    left: dict[str, int] = {}
    for t in targets.sampler_targets:
        if t.kind != "pgbouncer":
            continue
        try:
            with pg.admin_connect(t.host, t.port, t.user, targets.sampler_passwords[t.name]) as c:
                left[t.name] = pg.drain_pooler(c, timeout_s=10)
        except pg.Error as exc:
            left[t.name] = -1
            log(f"could not reset the {t.name} pooler: {str(exc).strip()[:120]}")
        if left[t.name] > 0:
            log(f"the {t.name} pooler still holds {left[t.name]} server connections")
    return left


def _expand(endpoints: tuple[str, ...]) -> tuple[str, ...]:
    result: list[str] = []
    for name in endpoints or ("transaction",):
        for item in (ALL_ENDPOINTS if name == "all" else (name,)):
            if item not in ALL_ENDPOINTS:
                raise ConfigError(f"unknown endpoint {item!r}",
                                  fix=f"use one of {', '.join(ALL_ENDPOINTS)} or all")
            if item not in result:
                result.append(item)
    return tuple(result)


def _run_segment(spec: RunSpec, leg: Leg, endpoint: str, targets: Targets, run_dir: Path,
                 sampler, watcher, live: Live,
                 progress: Progress | None) -> tuple[int | None, bool]:
    scenario, params = leg.scenario, leg.params
    argv = locust_argv(spec, scenario.path, f"{scenario.name}.{endpoint}", leg.users,
                       leg.spawn_rate, run_dir)
    env = dict(os.environ)
    env.update(
        LAB_RUN_DIR=str(run_dir.resolve()),
        LAB_ENDPOINT=endpoint,
        LAB_SCENARIO=scenario.name,
        LAB_TARGET_URI=targets.uris[endpoint],
        LAB_TARGET_URIS=json.dumps(targets.uris),
        LAB_PARAMS=json.dumps({k: v for k, v in params.items()}),
        LAB_SEED=str(spec.seed),
        LAB_WORKERS=str(spec.workers),
        PYTHONUNBUFFERED="1",
    )
    log_path = run_dir / "locust" / f"{scenario.name}.{endpoint}.log"
    with open(log_path, "w") as log_file:
        child = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True,
                                 cwd=str(run_dir.resolve()))
    live.endpoint = endpoint
    began = time.perf_counter()
    interrupted = False
    try:
        while child.poll() is None:
            time.sleep(1.0)
            live.elapsed_s = time.perf_counter() - began
            watcher.update(endpoint, live)
            _merge_sampler(live, sampler, endpoint)
            if progress:
                progress(live)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        exit_code = stop_process_group(child)
    watcher.update(endpoint, live)
    if progress:
        progress(live)
    return exit_code, interrupted


def locust_argv(spec: RunSpec, scenario_path: Path, segment: str, users: int,
                spawn_rate: float, run_dir: Path) -> list[str]:
    argv = [sys.executable, "-m", "locust", "-f", str(scenario_path),
            "--users", str(users), "--spawn-rate", f"{spawn_rate:g}",
            "--run-time", f"{max(1, round(spec.duration_s))}s",
            "--csv", str((run_dir / "locust" / segment).resolve()),
            "--stop-timeout", "10", "--loglevel", "WARNING",
            # Locust's --host is only shown in its UI; the real URI travels in LAB_TARGET_URI.
            "--host", mask_uri(spec.target) if spec.target else f"lab:{segment}"]
    if spec.ui:
        argv += ["--web-host", "127.0.0.1", "--web-port", str(spec.web_port), "--autostart",
                 "--autoquit", "10"]
    else:
        argv += ["--headless", "--only-summary"]
    if spec.workers > 1:
        argv += ["--processes", str(spec.workers)]
    return argv


def stop_process_group(child: subprocess.Popen) -> int | None:
    """Stop a Locust child and every process it forked; return its exit code."""
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)  # Locust stops its users and writes its CSV
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)  # workers of --processes, whatever is left
    try:
        return child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return None


def _merge_sampler(live: Live, sampler, endpoint: str) -> None:
    latest = dict(sampler.latest)
    pg = latest.get("postgres")
    live.backends = pg.get("total") if pg and pg.get("ok") else None
    bouncer = latest.get(endpoint)
    if bouncer and bouncer.get("ok"):
        live.waiting = bouncer["pools"]["cl_waiting"]
    else:
        live.waiting = None


class _SampleWatcher:
    """Reads new sample chunks as Locust writes them, for the progress line."""

    WINDOW_S = 5.0

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.seen: set[str] = set()
        self.recent: list[tuple[float, float, bool]] = []  # (start, total_ms, ok)
        self.requests = 0
        self.errors = 0

    def _read_new(self) -> None:
        for path in sorted((self.run_dir / "requests").glob("part-*.parquet")):
            if path.name in self.seen:
                continue
            try:
                table = samples.read_chunk(path, columns=["start", "total_ms", "ok"])
            except Exception:  # a file mid-rename is retried at the next tick
                continue
            self.seen.add(path.name)
            starts = table.column("start").to_pylist()
            totals = table.column("total_ms").to_pylist()
            oks = table.column("ok").to_pylist()
            self.requests += len(oks)
            self.errors += sum(1 for ok in oks if not ok)
            self.recent.extend(zip(starts, totals, oks, strict=True))

    def new_segment(self) -> None:
        """Count what the last segment wrote, then start the live window afresh, so the
        next endpoint's requests/s and p95 are its own from its first tick."""
        self._read_new()
        self.recent = []

    def update(self, endpoint: str, live: Live) -> None:
        self._read_new()
        now = time.time()
        self.recent = [r for r in self.recent if r[0] >= now - self.WINDOW_S - 2]
        window = [r for r in self.recent if r[0] >= now - self.WINDOW_S - 1]
        live.requests, live.errors = self.requests, self.errors
        live.rps = len(window) / self.WINDOW_S
        latencies = sorted(r[1] for r in window if r[2])
        live.p95_ms = latencies[int(0.95 * (len(latencies) - 1))] if latencies else None

    def totals(self, final: bool = False) -> tuple[int, int]:
        if final:
            try:
                table = samples.read_requests(self.run_dir)
                oks = table.column("ok").to_pylist()
                return len(oks), sum(1 for ok in oks if not ok)
            except LabError:
                return 0, 0
        return self.requests, self.errors


def _schedule_facts(run_dir: Path, endpoint: str, scenario: str) -> dict[str, Any]:
    """Spike windows (the first process's: all share them) and the arrivals still queued when
    the load stopped (summed over processes; they have no sample row) for one segment. The
    Locust processes name their files by endpoint; they are renamed to carry the scenario,
    so the next leg on the same endpoint cannot be mistaken for this one."""
    spikes: list[list[float]] | None = None
    unserved = 0
    for path in sorted((run_dir / "schedule").glob(f"{endpoint}-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        finally:
            with contextlib.suppress(OSError):
                path.rename(path.with_name(f"{scenario}.{path.name}"))
        if spikes is None:
            spikes = data.get("spikes", [])
        unserved += sum(int(v) for v in (data.get("unserved") or {}).values())
    return {"spikes": spikes or [], "unserved": unserved}


# -- the manifest ------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def _write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = run_dir / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    os.replace(tmp, run_dir / "manifest.json")


def _manifest(spec: RunSpec, legs: list[Leg], endpoints: tuple[str, ...], targets: Targets,
              run_id: str, command: list[str]) -> dict[str, Any]:
    one = legs[0]
    if len(legs) == 1:
        scenario = {"name": one.scenario.name, "file": _relative(one.scenario.path),
                    "params": one.params, "seed": spec.seed}
        load_users: Any = one.users
        spawn: Any = one.spawn_rate
    else:
        scenario = {"name": " + ".join(leg.scenario.name for leg in legs),
                    "file": ", ".join(_relative(leg.scenario.path) for leg in legs),
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
        "legs": [{"scenario": leg.scenario.name, "file": _relative(leg.scenario.path),
                  "params": leg.params, "users": leg.users, "spawn_rate": leg.spawn_rate}
                 for leg in legs],
        "load": {"users": load_users, "spawn_rate": spawn, "workers": spec.workers,
                 "duration_s": spec.duration_s, "cooldown_s": spec.cooldown_s,
                 "ui": spec.ui},
        "lab": targets.lab,
        "endpoints": {name: targets.masked[name] for name in endpoints},
        "segments": [],
        "components": _components(spec, targets),
        "host": _host(),
        "files": {"requests": "requests.parquet", "connections": "connections.jsonl",
                  "locust": "locust/"},
    }


def reproduce_argv(spec: RunSpec, scenario, params, endpoints, users, spawn_rate) -> list[str]:
    argv = ["lab", "run", scenario.name if scenario.builtin else _relative(scenario.path)]
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
    if spec.workers > 1:
        argv += ["--workers", str(spec.workers)]
    for key, value in params.items():
        argv += ["-P", f"{key}={value}"]
    return argv


BENCH_SCENARIOS = ("serverless-burst", "persistent-server")
QUICK_DURATION_S, QUICK_COOLDOWN_S = 12.0, 2.0
FULL_DURATION_S, FULL_COOLDOWN_S = 60.0, 10.0


def bench(quick: bool = False, *, duration_s: float | None = None,
          cooldown_s: float | None = None, seed: int = 1, workers: int = 1,
          lab_name: str = "default", reports_dir: Path = Path("reports"),
          progress: Progress | None = None, log: Log = print) -> RunResult:
    """The headline matrix: both workloads against all four endpoints, the same seed, one run
    directory. --quick keeps every segment short enough for the whole bench to take under
    three minutes (8 segments); the default is long enough to publish."""
    duration = duration_s or (QUICK_DURATION_S if quick else FULL_DURATION_S)
    cooldown = cooldown_s if cooldown_s is not None else (
        QUICK_COOLDOWN_S if quick else FULL_COOLDOWN_S)
    spec = RunSpec(scenario="bench", endpoints=ALL_ENDPOINTS, duration_s=duration,
                   cooldown_s=cooldown, seed=seed, workers=workers, lab_name=lab_name,
                   reports_dir=reports_dir)
    legs = [make_leg(name, {}, None, None) for name in BENCH_SCENARIOS]  # scenario defaults
    command = ["lab", "bench", "--duration", f"{duration:g}s", "--cooldown", f"{cooldown:g}s",
               "--seed", str(seed)]
    if quick:
        command.insert(2, "--quick")
    if workers > 1:
        command += ["--workers", str(workers)]
    if lab_name != "default":
        command += ["--name", lab_name]
    return execute(spec, legs, ALL_ENDPOINTS, command, progress, log)


def _relative(path: Path) -> str:
    root = resources.repo_root()
    try:
        return str(path.resolve().relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


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


def _components(spec: RunSpec, targets: Targets) -> dict[str, Any]:
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
                                  targets.sampler_passwords[bouncer.name]) as conn:
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


def _finish(run_dir: Path, manifest: dict[str, Any], started: float, interrupted: bool,
            targets: Targets, log: Log) -> None:
    """Whatever happened, leave a readable run directory: compacted samples, final manifest."""
    try:
        samples.compact(run_dir)
    except LabError as exc:
        log(f"samples kept as chunks: {exc.message}")
    for path in (run_dir / "locust").glob("*.log"):
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace")
            clean = _redact(text, targets.secret_values)
            if clean != text:
                path.write_text(clean)
    manifest["ended_at"] = _iso(time.time())
    manifest["duration_s"] = round(time.perf_counter() - started, 3)
    manifest["interrupted"] = interrupted
    manifest["reproduce"] = _reproduce_text(manifest)
    _write_manifest(run_dir, manifest)


def _redact(text: str, values: tuple[str, ...]) -> str:
    from urllib.parse import quote

    for value in values:
        if value:
            text = text.replace(value, MASK).replace(quote(value, safe=""), MASK)
    return text


def _reproduce_text(manifest: dict[str, Any]) -> str:
    lines = []
    lab = manifest.get("lab")
    if lab:
        up = ["lab", "up", "--tier", lab["tier"], "--max-connections",
              str(lab["max_connections"]), "--pool-size", str(lab["pool_size"]),
              "--max-client-conn", str(lab["max_client_conn"]), "--pool-sharing",
              lab["pool_sharing"], "--max-prepared-statements",
              str(lab["max_prepared_statements"]), "--query-wait-timeout",
              str(lab["query_wait_timeout"])]
        if lab["name"] != "default":
            up += ["--name", lab["name"]]
        lines.append(shlex.join(up))
    lines.append(shlex.join(manifest["command"]))
    return "\n".join(lines)

