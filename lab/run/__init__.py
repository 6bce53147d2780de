"""Stage 4 of the pipeline: load runs (`lab run`, `lab bench`).

One module per part of a run, along its data flow:

* ``spec``: what was asked (RunSpec, legs, durations), checked before anything starts;
* ``targets``: where the load goes (endpoints, passwords kept out of every file), poolers
  drained between segments;
* ``child``: the Locust child process of a segment (never imported here: gevent stays out of
  the orchestrator, whose psycopg serves the connection sampler);
* ``live``: the progress line, from the sample chunks and the sampler's newest records;
* ``manifest``: manifest/1, versions, the noise on the machine, the reproduce line;
* ``orchestrate``: the segments in order (each leg on each endpoint, ``--repeat`` times,
  interleaved), Ctrl-C handling, the finished run directory;
* ``bench``: the headline matrix.
"""

from __future__ import annotations

import dataclasses

from lab.run.bench import BENCH_SCENARIOS, bench
from lab.run.live import Live
from lab.run.manifest import reproduce_argv
from lab.run.orchestrate import Log, Progress, RunResult, execute
from lab.run.spec import (
    ALL_ENDPOINTS,
    Leg,
    RunSpec,
    expand_endpoints,
    make_leg,
    mask_uri,
    new_run_id,
    parse_duration,
    parse_span,
)
from lab.run.targets import Targets, reset_poolers, resolve_targets

__all__ = ["ALL_ENDPOINTS", "BENCH_SCENARIOS", "Leg", "Live", "Log", "Progress", "RunResult",
           "RunSpec", "Targets", "bench", "execute", "expand_endpoints", "make_leg", "mask_uri",
           "new_run_id", "parse_duration", "parse_span", "reproduce_argv", "reset_poolers",
           "resolve_targets", "run"]


def run(spec: RunSpec, progress: Progress | None = None, log: Log = print) -> RunResult:
    """Run the scenario against each endpoint in turn; return the run directory."""
    spec.check()
    leg = make_leg(spec.scenario, spec.params, spec.users, spec.spawn_rate)
    if not spec.faults and leg.scenario.faults and not spec.target:
        from lab.faults import parse_faults

        spec = dataclasses.replace(spec, faults=tuple(parse_faults(leg.scenario.faults)))
        spec.check()
    endpoints = ("target",) if spec.target else expand_endpoints(spec.endpoints)
    command = reproduce_argv(spec, leg.scenario, leg.params, endpoints, leg.users,
                             leg.spawn_rate)
    return execute(spec, [leg], endpoints, command, progress, log)
