"""A run: each leg against each endpoint in turn (and again, with --repeat), Locust as a child
process per segment, the connection sampler on its own thread, a live progress line, and one
run directory (docs/formats.md). Ctrl-C stops the load, keeps what was measured and still leaves
a valid run directory; no Locust process outlives the run."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import clock, samples
from lab.errors import LabError, RunError
from lab.run import child, live, manifest
from lab.run.live import Live, SampleWatcher
from lab.run.spec import Leg, RunSpec, new_run_id
from lab.run.targets import Targets, reset_poolers, resolve_targets

Progress = Callable[[Live], None]
Log = Callable[[str], None]
NOISY_LOAD_PER_CORE = 0.75  # a load average above this share of the cores before a segment
# Locust stops its users within its --stop-timeout (10 s) after the run time; a child still
# running this long after the segment's end is stuck (a full disk, a hung write): it is
# stopped, and the run ends there with what it measured.
STUCK_AFTER_S = 40.0
MIN_FREE_BYTES = 2 << 20  # below this, the run directory's disk counts as full
TICK_S = 0.5  # the live counters' update (the live view draws them twice a second)
DISK_CHECK_S = 2.0  # how often a segment looks whether the run directory's disk is full


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    interrupted: bool
    requests: int  # started (succeeded + failed)
    errors: int  # failed
    not_started: int = 0  # scheduled arrivals that never started
    # The lab's services that were not running when the run ended (service -> state): the
    # Docker engine restarted, or a container was stopped or removed outside the run's faults.
    lab_down: dict[str, str] = field(default_factory=dict)
    lab_name: str = "default"

    def check_lab_whole(self) -> None:
        """StackError (exit 4, one line naming `lab up`) when the lab was not whole at the end;
        raised after the run is written, so what was measured stays."""
        if not self.lab_down:
            return
        from lab.errors import StackError
        from lab.state import name_flag
        from lab.status import describe_down

        raise StackError(
            f"the run ended with the lab not whole ({describe_down(self.lab_down)}: the "
            f"Docker engine restarted, or a container was stopped outside the run's faults); "
            f"what was measured is in {self.run_dir} and its report names the outage",
            fix=f"lab up{name_flag(self.lab_name)}")


@dataclass
class _Run:
    """The state one run's segments share."""

    spec: RunSpec
    targets: Targets
    run_dir: Path
    manifest: dict[str, Any]
    sampler: Any
    watcher: SampleWatcher
    live: Live
    progress: Progress | None
    log: Log
    fault_ctx: Any = None  # lab.faults.actions.FaultContext, with --fault
    feed: Any = None  # lab.watch.feed.Publisher: the live view's frames
    master: Any = None  # lab.distributed.master.Master, with --master-bind


def execute(spec: RunSpec, legs: list[Leg], endpoints: tuple[str, ...], command: list[str],
            progress: Progress | None = None, log: Log = print) -> RunResult:
    """Each leg against each endpoint in turn, ``spec.repeat`` times, into one run directory."""
    spec.check()
    targets = resolve_targets(spec, endpoints)
    name = " + ".join(leg.scenario.name for leg in legs)
    run_id = spec.run_id or new_run_id("bench" if len(legs) > 1 else name)
    run_dir = spec.reports_dir / run_id
    (run_dir / "locust").mkdir(parents=True, exist_ok=False)
    doc = manifest.new(spec, legs, endpoints, targets, run_id, command)
    doc["host"]["noise"] = _noise_start(targets)
    manifest.write(run_dir, doc)
    if targets.lab is not None:
        _measure_network(spec, targets, endpoints, doc, log)
        manifest.write(run_dir, doc)

    from lab import sampler as samplermod

    state = _Run(spec, targets, run_dir, doc,
                 samplermod.Sampler(targets.sampler_targets, targets.sampler_passwords,
                                    shared=targets.shared_addresses,
                                    out=run_dir / "connections.jsonl",
                                    interval=spec.sample_interval_s),
                 SampleWatcher(run_dir), Live(duration_s=spec.duration_s), progress, log)
    if spec.faults:
        state.fault_ctx = _fault_context(spec, targets)
    plan = [(repeat, leg, endpoint) for repeat in range(1, spec.repeat + 1) for leg in legs
            for endpoint in endpoints]
    interrupted = False
    failure: RunError | None = None
    started = time.perf_counter()
    doc["started_at"] = manifest.iso(clock.now())
    try:
        if spec.master_bind:
            from lab.distributed.master import Master

            state.master = Master.open(spec, run_id, log)
            doc["distributed"] = state.master.describe()
            manifest.write(run_dir, doc)
        state.sampler.start()
        state.feed = _feed(state, run_id).start()
        for i, (repeat, leg, endpoint) in enumerate(plan):
            if i and spec.cooldown_s > 0:
                log(f"cooldown {spec.cooldown_s:.0f} s")
                time.sleep(spec.cooldown_s)
            interrupted, failure = _segment(state, leg, endpoint, repeat,
                                            last=i == len(plan) - 1)
            if interrupted or failure:
                break
    except KeyboardInterrupt:
        interrupted = True
    except OSError as exc:  # the run directory could not be written (a full disk, mostly)
        failure = RunError(f"could not write {run_dir} ({exc.strerror or exc}); what was "
                           "measured so far is kept there",
                           fix="free some space, or give --reports-dir on another disk")
    finally:
        if state.feed is not None:
            state.feed.stop()
        state.sampler.stop()
        if state.master is not None:
            state.master.close()
            doc["distributed"] = state.master.describe()
        if state.fault_ctx is not None:
            with contextlib.suppress(Exception):
                state.fault_ctx.close()
        try:
            _finish(state, started, interrupted)
        except OSError as exc:
            failure = failure or RunError(
                f"could not finish {run_dir} ({exc.strerror or exc}); the samples written "
                "so far are kept there",
                fix="free some space, then lab report it; or give --reports-dir on another disk")
    if failure is not None:
        raise failure
    lab_down = _lab_after(state)
    requests, errors = state.watcher.totals()
    return RunResult(run_dir=run_dir, interrupted=interrupted, requests=requests, errors=errors,
                     not_started=state.watcher.not_started_total(), lab_down=lab_down,
                     lab_name=spec.lab_name)


def _lab_after(run: _Run) -> dict[str, str]:
    """Whether the lab is whole after the run; recorded in the manifest (``lab_after``).

    Faults of the run are undone before their segment ends, so a service that is down now
    went down outside the run's own schedule: the Docker engine restarted (it stops every
    container), or someone stopped or removed one."""
    if run.targets.lab is None:
        return {}
    from lab import config as cfgmod
    from lab import engine
    from lab.errors import LabError
    from lab.status import down_services

    cfg = cfgmod.from_dict(run.targets.lab)
    try:
        down = down_services(cfg, engine.project_containers(cfg.project))
    except LabError as exc:  # the engine itself does not answer
        down = {"docker": f"engine unreachable ({exc.message})"}
    except Exception as exc:  # the SDK's own errors while the engine restarts
        down = {"docker": f"engine unreachable ({type(exc).__name__})"}
    run.manifest["lab_after"] = {"down": down}
    with contextlib.suppress(OSError):
        manifest.write(run.run_dir, run.manifest)
    return down


def _feed(run: _Run, run_id: str):
    """The live view's frames (lab.watch.feed): every half second, what the sampler holds now
    and what the current segment's load is doing; `lab watch` of the lab follows them."""
    from lab.watch import feed, frame

    settings: dict[str, Any] = {}
    names: tuple[str, ...] = ()
    if run.targets.lab is not None:
        from lab import config as cfgmod

        settings = frame.settings_of(cfgmod.from_dict(run.targets.lab))
        names = frame.ENDPOINTS
    limits = frame.limits_of(settings)
    lab = run.spec.lab_name if run.targets.lab is not None else None

    def build(now: float) -> dict[str, Any]:
        conns = frame.connections(dict(run.sampler.latest), now, limits, names)
        part = frame.run_part(run.live, run_id) if run.live.endpoint else None
        return frame.make(lab or "target", now, conns, part, settings, "run")

    return feed.Publisher(run.run_dir, lab, build, secrets=run.targets.secret_values)


def _measure_network(spec: RunSpec, targets: Targets, endpoints: tuple[str, ...],
                     doc: dict[str, Any], log: Log) -> None:
    """The lab's distance and TLS as configured and as measured, before any load."""
    from lab import config as cfgmod
    from lab import probe

    cfg = cfgmod.from_dict(targets.lab or {})
    eps = {n: ep for n, ep in targets.endpoints.items() if ep is not None}
    password = targets.sampler_passwords.get("postgres", "")
    admin = targets.sampler_passwords.get("transaction", "")
    doc["network"] = probe.round_trips(cfg, eps, password, admin)
    doc["tls"] = {"sslmode": spec.sslmode or "verify-full", "ssl_enforce": cfg.ssl_enforce,
                  "server": "Postgres and both poolers serve TLS; the poolers verify Postgres "
                            "(server_tls_sslmode verify-full)"}
    if spec.connect_cost:
        log("measuring what a connection costs, with and without TLS")
        doc["connect_cost"] = probe.connect_cost(
            eps, password, endpoints,
            expected_rtt_ms=max(cfg.endpoint_rtt_ms(e) for e in endpoints))


def _fault_context(spec: RunSpec, targets: Targets):
    """What the fault injector acts on: the lab's containers and its poolers' consoles."""
    from lab import config as cfgmod
    from lab.faults import actions
    from lab.state import LabState

    cfg = cfgmod.from_dict(targets.lab or {})
    eps = {n: ep for n, ep in targets.endpoints.items() if ep is not None}
    return actions.context_for_lab(cfg, LabState(spec.lab_name), eps)


def segment_name(scenario: str, endpoint: str, repeat: int, repeats: int) -> str:
    """``<scenario>.<endpoint>``, with ``.r<N>`` when a run repeats its segments."""
    return f"{scenario}.{endpoint}" + (f".r{repeat}" if repeats > 1 else "")


def _segment(run: _Run, leg: Leg, endpoint: str, repeat: int,
             last: bool = True) -> tuple[bool, RunError | None]:
    """One scenario against one endpoint. Returns whether it was interrupted, and the error
    when Locust stopped without running a single request (a locustfile it cannot load, a
    bad option): the run stops there, its directory kept."""
    spec = run.spec
    name = segment_name(leg.scenario.name, endpoint, repeat, spec.repeat)
    segment: dict[str, Any] = {"scenario": leg.scenario.name, "endpoint": endpoint,
                               "repeat": repeat}
    if spec.reset_poolers:
        segment["poolers_reset"] = reset_poolers(run.targets, run.log)
    segment["noise"] = {"load_avg": manifest.load_average()}
    segment["started_at"] = manifest.iso(clock.now())
    run.manifest["segments"].append(segment)
    manifest.write(run.run_dir, run.manifest)
    run.log(f"{leg.scenario.name} -> {endpoint}"
            + (f" (repeat {repeat} of {spec.repeat})" if spec.repeat > 1 else "")
            + f": {leg.users} users, {spec.duration_s:.0f} s"
            + (f", {spec.workers} workers" if spec.workers > 1 else ""))
    run.watcher.new_segment()
    live.clear_live_files(run.run_dir)
    run.live.endpoint = endpoint
    run.live.scenario = leg.scenario.name
    run.live.phase = None
    run.live.repeat = f"r{repeat}/{spec.repeat}" if spec.repeat > 1 else ""
    run.live.noisy = _noisy_now(segment["noise"]["load_avg"], run.manifest)
    run.live.done = False
    before = run.watcher.requests
    exit_code, interrupted, stuck = _run_child(run, leg, endpoint, repeat, name, last)
    log_path = run.run_dir / "locust" / f"{name}.log"
    segment["noise"]["locust_cpu_warnings"] = manifest.locust_cpu_warnings(log_path)
    segment.update(ended_at=manifest.iso(clock.now()), locust_exit=exit_code,
                   interrupted=interrupted,
                   **_schedule_facts(run.run_dir, endpoint, name))
    failure = None
    if run.master is not None:
        segment["workers"] = run.master.segment_workers(run.run_dir, name)
    full = disk_full(run.run_dir)
    if full:
        segment["failed"] = full
        failure = RunError(f"{full}; what was measured so far is in {run.run_dir}",
                           fix="free some space, or give --reports-dir on another disk")
    elif stuck:
        said = manifest.redact(child.last_line(log_path), run.targets.secret_values)
        segment["failed"] = f"Locust did not stop; stopped by the run: {said}"
        failure = RunError(
            f"Locust did not stop {STUCK_AFTER_S:.0f} s after the end of {name} and was "
            f"stopped (its last line: {said}); measured so far: {run.run_dir}",
            fix=f"read {log_path}")
    elif run.master is not None and not interrupted and run.master.gave_up(log_path):
        failure = run.master.gave_up_error(segment, run.run_dir)
        segment["failed"] = failure.message
    # Locust exits 1 for failed requests too; only "non-zero and not one sample" means it
    # never ran (its failed requests would have been recorded as error samples).
    elif not interrupted and exit_code != 0 and run.watcher.requests == before:
        said = manifest.redact(child.last_line(log_path), run.targets.secret_values)
        segment["failed"] = said
        failure = RunError(
            f"Locust stopped without running a request against {endpoint} "
            f"(exit {exit_code}): {said}; measured so far: {run.run_dir}",
            fix=f"read {log_path}")
    manifest.write(run.run_dir, run.manifest)
    return interrupted, failure


def _run_child(run: _Run, leg: Leg, endpoint: str, repeat: int,
               name: str, last: bool = True) -> tuple[int | None, bool, bool]:
    spec, state = run.spec, run.live
    env = child.environment(spec, leg.scenario.name, leg.params, endpoint, run.targets.uris,
                            run.run_dir, repeat)
    locustfile, master, wait_s = leg.scenario.path, None, 0.0
    if run.master is not None:  # the workers' locustfile: a private file, removed below
        locustfile = run.master.locustfile(leg.scenario.path, env, name, last)
        master, wait_s = run.master.locust_address, spec.worker_wait_s
    args = child.argv(spec, locustfile, name, leg.users, leg.spawn_rate, run.run_dir, master)
    injector = None
    if spec.faults:
        from lab.faults.injector import Injector

        injector = Injector(list(spec.faults), run.fault_ctx, run.run_dir / "faults.jsonl",
                            name, log=run.log)
    proc = child.start(args, env, run.run_dir / "locust" / f"{name}.log", run.run_dir)
    began = clock.now()
    interrupted = stuck = False
    armed = False
    schedule = None
    shown = checked_disk = 0.0
    try:
        while proc.poll() is None:
            if clock.now() > began + wait_s + spec.duration_s + STUCK_AFTER_S:
                stuck = True
                break
            if clock.now() - checked_disk >= DISK_CHECK_S:
                # a full disk ends the segment now (its failure is said by _segment), rather
                # than after Locust fails to write for the rest of its run and its stop
                checked_disk = clock.now()
                if disk_full(run.run_dir):
                    break
            # until the faults are scheduled, look for the load's start more often; twice a
            # second after it (the live view's frames), the progress line once a second
            time.sleep(TICK_S if injector is None or armed else 0.2)
            # the Locust test starts a second or two after the process: count from its start
            if schedule is None:
                schedule = live.test_schedule(run.run_dir, endpoint)
            t0 = schedule[0] if schedule else began
            if injector is not None and not armed and schedule is not None:
                injector.start(t0)  # every fault at load start + AT
                armed = True
            now = clock.now()
            state.elapsed_s = max(0.0, now - t0)
            state.phase = live.phase_at(schedule[1], now) if schedule else None
            state.fault = "; ".join(injector.active()) if injector is not None else None
            show = now - shown >= 0.95
            if show:
                shown = now
            _tick(run, endpoint, name, show)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        exit_code = child.stop_process_group(proc)
        if run.master is not None:
            run.master.segment_done()
        if injector is not None:
            # whatever is still in effect is undone, so the next segment finds the lab whole
            injector.stop()
            run.manifest["segments"][-1]["faults"] = list(injector.events)
            state.fault = None
    run.watcher.update(state)
    state.done = True
    state.phase = None
    if run.progress:
        run.progress(state)
    return exit_code, interrupted, stuck


def disk_full(run_dir: Path) -> str | None:
    """'the disk holding DIR is full (1.2 MB left)', when it is, else None."""
    import shutil

    try:
        free = shutil.disk_usage(run_dir).free
    except OSError:
        return None
    if free >= MIN_FREE_BYTES:
        return None
    return f"the disk holding {run_dir} is full ({free / 2**20:.1f} MB left)"


def _tick(run: _Run, endpoint: str, name: str, show: bool = True) -> None:
    run.watcher.update(run.live)
    live.merge_sampler(run.live, dict(run.sampler.latest), endpoint)
    if not show:
        return
    if manifest.locust_cpu_warnings(run.run_dir / "locust" / f"{name}.log"):
        said = "Locust above 90% CPU: its numbers are suspect"
        if said not in (run.live.noisy or ""):
            run.live.noisy = "; ".join(x for x in (run.live.noisy, said) if x)
    if run.progress:
        run.progress(run.live)


def _noise_start(targets: Targets) -> dict[str, Any]:
    now = manifest.noise(targets.project)
    return {"load_avg_start": now["load_avg"], "cores": now["cores"],
            "other_containers": now["other_containers"], "other_labs": now["other_labs"]}


def _noisy_now(load_avg: list[float] | None, doc: dict[str, Any]) -> str | None:
    noise = doc["host"].get("noise") or {}
    cores = noise.get("cores") or 1
    said = []
    if load_avg and load_avg[0] > NOISY_LOAD_PER_CORE * cores:
        said.append(f"load {load_avg[0]:.1f} on {cores} cores")
    if noise.get("other_labs"):
        said.append(f"other lab(s) running: {', '.join(noise['other_labs'])}")
    elif noise.get("other_containers"):
        said.append(f"{len(noise['other_containers'])} other container(s) running")
    return "; ".join(said) or None


def _schedule_facts(run_dir: Path, endpoint: str, name: str) -> dict[str, Any]:
    """Spike windows (the first process's: all share them) and the arrivals still queued when
    the load stopped (summed over processes; they have not_started rows) for one segment. The
    Locust processes name their files by endpoint; they are renamed after the segment
    (``<scenario>.<endpoint>[.r<N>]-<worker>.json``), so the next leg or repeat on the same
    endpoint cannot be mistaken for this one."""
    spikes: list[list[float]] | None = None
    unserved = 0
    for path in sorted((run_dir / "schedule").glob(f"{endpoint}-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        finally:
            worker = path.name.removeprefix(f"{endpoint}-")
            with contextlib.suppress(OSError):
                path.rename(path.with_name(f"{name}-{worker}"))
        if spikes is None:
            spikes = data.get("spikes", [])
        unserved += sum(int(v) for v in (data.get("unserved") or {}).values())
    return {"spikes": spikes or [], "unserved": unserved}


def _finish(run: _Run, started: float, interrupted: bool) -> None:
    """Whatever happened, leave a readable run directory: compacted samples, final manifest."""
    doc = run.manifest
    try:
        samples.compact(run.run_dir)
    except LabError as exc:
        run.log(f"samples kept as chunks: {exc.message}")
    for path in (run.run_dir / "locust").glob("*.log"):
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace")
            clean = manifest.redact(text, run.targets.secret_values
                                    + (run.master.secrets if run.master else ()))
            if clean != text:
                path.write_text(clean)
    live.clear_live_files(run.run_dir)
    with contextlib.suppress(OSError):
        (run.run_dir / "live").rmdir()
    end = manifest.noise(run.targets.project)
    noise = doc["host"].setdefault("noise", {})
    noise["load_avg_end"] = end["load_avg"]
    noise["locust_cpu_warnings"] = sum(
        (s.get("noise") or {}).get("locust_cpu_warnings", 0) for s in doc["segments"])
    doc["ended_at"] = manifest.iso(clock.now())
    doc["duration_s"] = round(time.perf_counter() - started, 3)
    doc["interrupted"] = interrupted
    doc["reproduce"] = manifest.reproduce_text(doc)
    manifest.write(run.run_dir, doc)
