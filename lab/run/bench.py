"""`lab bench`: the headline matrix, both workloads against all four endpoints with the same
seed, in one run directory."""

from __future__ import annotations

from pathlib import Path

from lab.run.orchestrate import Log, Progress, RunResult, execute
from lab.run.spec import ALL_ENDPOINTS, RunSpec, make_leg

BENCH_SCENARIOS = ("serverless-burst", "persistent-server")
QUICK_DURATION_S, QUICK_COOLDOWN_S = 12.0, 2.0
FULL_DURATION_S, FULL_COOLDOWN_S = 60.0, 10.0


def bench(quick: bool = False, *, duration_s: float | None = None,
          cooldown_s: float | None = None, seed: int = 1, workers: int = 1, repeat: int = 1,
          lab_name: str = "default", reports_dir: Path = Path("reports"),
          network: str | None = None, sslmode: str | None = None, faults: tuple = (),
          progress: Progress | None = None, log: Log = print) -> RunResult:
    """Both workloads against all four endpoints, ``repeat`` times interleaved. --quick keeps
    every segment short enough for one pass to take under three minutes (8 segments); the
    default is long enough to publish. Before the load, the price of one connection with and
    without TLS on each endpoint (lab.probe). ``network`` brings the lab up again at that
    distance first."""
    duration = duration_s or (QUICK_DURATION_S if quick else FULL_DURATION_S)
    cooldown = cooldown_s if cooldown_s is not None else (
        QUICK_COOLDOWN_S if quick else FULL_COOLDOWN_S)
    spec = RunSpec(scenario="bench", endpoints=ALL_ENDPOINTS, duration_s=duration,
                   cooldown_s=cooldown, seed=seed, workers=workers, lab_name=lab_name,
                   reports_dir=reports_dir, repeat=repeat, sslmode=sslmode,
                   connect_cost=True, faults=faults)
    spec.check()
    if network is not None:
        from lab import stack

        stack.up_with(lab_name, {"network": network}, log=log)
    legs = [make_leg(name, {}, None, None) for name in BENCH_SCENARIOS]  # scenario defaults
    command = ["lab", "bench", "--duration", f"{duration:g}s", "--cooldown", f"{cooldown:g}s",
               "--seed", str(seed)]
    if quick:
        command.insert(2, "--quick")
    if repeat > 1:
        command += ["--repeat", str(repeat)]
    if workers > 1:
        command += ["--workers", str(workers)]
    if sslmode:
        command += ["--sslmode", sslmode]
    for fault in faults:
        command += ["--fault", fault.text]
    if lab_name != "default":
        command += ["--name", lab_name]
    return execute(spec, legs, ALL_ENDPOINTS, command, progress, log)
