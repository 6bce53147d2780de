"""Running experiments on a live lab: one run at a time per lab (a lock file), each experiment
with its runtime settings, and every change undone afterwards, also on an error or Ctrl-C.

Before an experiment, every pooler it uses gets its settings through the PgBouncer admin
console (``SET default_pool_size = 2``) and is emptied (admin ``RECONNECT``, then wait until it
holds no server connection). After it, the settings are restored (``Context.restore``, with
its journal for a killed run) and ``RECONNECT`` drops the server connections the experiment
polluted (leaked settings, locks, temp tables).
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from lab import pg, rlimit, stack
from lab.connect import endpoints
from lab.errors import ConfigError, ExpectationFailed, LabError, StackError
from lab.experiments.context import (
    Context,
    ExperimentSetupError,
    describe_error,
    first_line,
    restore_interrupted,
)
from lab.experiments.discovery import parse_expect, select
from lab.experiments.model import Experiment, ExperimentResult, LaneResult, Observation
from lab.state import LabState, name_flag

LOCK_FILE = "experiment.lock"
# A safety net: no experiment client queues longer than this for a server connection.
SAFE_QUERY_WAIT_S = 5


@contextlib.contextmanager
def exclusive(state: LabState) -> Iterator[None]:
    state.dir.mkdir(parents=True, exist_ok=True)
    with open(state.dir / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(f"another `lab experiment run` is using lab {state.name!r}",
                             fix="wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clean_up(ctx: Context, exp: Experiment) -> list[str]:
    ctx.close_all()
    failed = ctx.restore()
    for endpoint in exp.poolers():
        with contextlib.suppress(Exception):
            ctx.reconnect(endpoint)  # drop backends this experiment polluted
    return failed


def _shielded(fn: Callable[[], list[str]]) -> tuple[list[str], bool]:
    """Run an idempotent clean-up to the end even if Ctrl-C arrives during it (it restarts)."""
    interrupted = False
    for _ in range(5):
        try:
            return fn(), interrupted
        except KeyboardInterrupt:
            interrupted = True
    return ["clean-up interrupted repeatedly"], interrupted


def run_one(ctx: Context, exp: Experiment, override: Mapping[str, str] | None = None
            ) -> ExperimentResult:
    expected = exp.expected(ctx.cfg)
    expected.update(override or {})
    started = time.monotonic()
    observed: dict[str, Observation] = {}
    error: str | None = None
    setup_error: ExperimentSetupError | None = None
    ctx.experiment = exp
    settings = exp.settings_for(ctx.real_limits)
    try:
        for endpoint in exp.poolers():
            ctx.set(endpoint, "query_wait_timeout",
                    settings.get(endpoint, {}).get("query_wait_timeout", SAFE_QUERY_WAIT_S))
            for key, value in settings.get(endpoint, {}).items():
                ctx.set(endpoint, key, value)
            ctx.drain(endpoint)
        observed = exp.run(ctx)
    except ExperimentSetupError as exc:
        setup_error = exc
    except LabError as exc:
        error = exc.one_line()
    except pg.Error as exc:
        error = describe_error(exc)
    except Exception as exc:  # one broken experiment must not hide the others' results
        error = f"{type(exc).__name__}: {first_line(exc)}"
    finally:
        failed, interrupted = _shielded(lambda: _clean_up(ctx, exp))
        if interrupted:
            raise KeyboardInterrupt
        if failed:
            raise StackError(f"could not restore {', '.join(failed)} after {exp.name}",
                             fix=f"the next lab experiment run{name_flag(ctx.cfg.name)} "
                                 f"restores it, or lab down && lab up")
    if setup_error is not None:
        raise setup_error  # the lab is busy: every further experiment would fail the same way
    lanes = tuple(
        LaneResult(lane.key, lane.endpoint, lane.label, expected[lane.key],
                   observed[lane.key].outcome if lane.key in observed else "not run",
                   observed[lane.key].detail if lane.key in observed else (error or ""))
        for lane in exp.lanes
    )
    return ExperimentResult(exp.name, exp.title, exp.question, exp.fix, lanes,
                            time.monotonic() - started, error)


def run(chosen: Sequence[str] = (), lab_name: str = "default", *, run_all: bool = False,
        expect: Sequence[str] = (), log: Callable[[str], None] = lambda _text: None,
        on_result: Callable[[ExperimentResult], None] | None = None,
        real_limits: bool = False) -> list[ExperimentResult]:
    """Run the chosen experiments (names or files, or all) against a running lab, restoring it
    after each. ``real_limits``: the limit experiments hold the lab's own limits (every
    max_client_conn slot of each pooler, the real pool sizes) instead of lowering them."""
    experiments = select(chosen, run_all)
    overrides = parse_expect(expect, experiments)
    cfg, state, containers = stack.require_running(lab_name)
    if cfg.pool_sharing == "shared" and cfg.pool_size < 2:
        # Both modes' backends come from one inner pool the admin consoles cannot resize;
        # two clients at once (most experiments) would queue there for query_wait_timeout.
        raise ConfigError("the experiments need pool size 2 or more with pool_sharing 'shared'",
                          fix=f"lab up{name_flag(lab_name)} --pool-size 2")
    # Every client connection this process holds is a descriptor: a whole pooler's worth with
    # real limits (12,000 on 16xl), every max_connections slot otherwise.
    rlimit.raise_nofile(rlimit.process_fds_needed(cfg, real_limits))
    ctx = Context(cfg, state, endpoints(cfg, containers), containers)
    ctx.real_limits, ctx.log = real_limits, log
    results = []
    with exclusive(state):
        try:
            restore_interrupted(ctx, log)
            for exp in experiments:
                log(f"running {exp.name}")
                result = run_one(ctx, exp, overrides.get(exp.name))
                results.append(result)
                if on_result is not None:
                    on_result(result)
        finally:
            ctx.close_admins()
    return results


def check(results: Sequence[ExperimentResult], lab_name: str = "default") -> None:
    """Raise ExpectationFailed when any experiment observed something other than expected."""
    failed = [r for r in results if not r.passed]
    if not failed:
        return
    parts = []
    for r in failed:
        if r.error:
            parts.append(f"{r.name} ({r.error})")
        else:
            lanes = ", ".join(f"{ln.key} {ln.observed!r}, expected {ln.expected!r}"
                              for ln in r.failures())
            parts.append(f"{r.name} ({lanes})")
    raise ExpectationFailed(
        f"{len(failed)} of {len(results)} experiment(s) observed something else: "
        + "; ".join(parts),
        fix=f"lab doctor{name_flag(lab_name)}, and compare the lab's settings "
            f"(lab status{name_flag(lab_name)}) with a stock lab",
    )
