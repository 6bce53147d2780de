"""Running the matrix on a live lab: every chosen driver variant on every chosen endpoint, each
cell in a child process of its own (``lab.clients.cell``) with a timeout, each pooler drained
before each cell so that no cell meets another's prepared statements.

``prepared=N`` then re-runs, on the poolers, every cell that failed, with PgBouncer's
``max_prepared_statements = N`` set at runtime through the admin console (and restored after):
the cells it rescues say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from lab import stack
from lab.clients import install
from lab.clients.discovery import select
from lab.clients.model import (
    CRASHED,
    FAILS,
    HANGS,
    NOT_INSTALLED,
    NOT_TESTABLE,
    WORKS,
    WRONG,
    Cell,
    Driver,
)
from lab.clients.workload import REPEAT, STEPS
from lab.config import ENDPOINTS, LabConfig
from lab.connect import EndpointInfo, endpoints, redact
from lab.errors import ConfigError, StackError
from lab.experiments.context import Context
from lab.experiments.model import POOLERS
from lab.state import Secrets, name_flag

FORMAT = "pooler-lab/clients"
VERSION = 1
APPLICATION = "lab-clients"
DEFAULT_TIMEOUT_S = 20.0


@dataclass
class Row:
    variant: str
    label: str
    fix: str
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass
class DriverResult:
    name: str
    title: str
    docs: str
    ecosystem: str
    versions: dict[str, str]
    unavailable: str = ""  # why the driver could not run at all ("" when it ran)
    unavailable_outcome: str = ""  # NOT_INSTALLED or NOT_TESTABLE
    rows: list[Row] = field(default_factory=list)


@dataclass
class Matrix:
    lab: dict[str, Any]  # the lab's settings that decide the outcomes (the header)
    endpoints: list[str]
    drivers: list[DriverResult]
    started: str
    seconds: float = 0.0
    prepared: int | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "started": self.started,
            "seconds": round(self.seconds, 1), "interrupted": self.interrupted,
            "lab": self.lab, "endpoints": self.endpoints, "prepared": self.prepared,
            "timeout_s": self.timeout_s,
            "workload": {"clients": 2, "repeat": REPEAT, "steps": list(STEPS),
                         "query": "SELECT $1::int + 1"},
            "drivers": [{
                "name": d.name, "title": d.title, "docs": d.docs, "ecosystem": d.ecosystem,
                "versions": d.versions,
                **({"unavailable": {"outcome": d.unavailable_outcome, "reason": d.unavailable}}
                   if d.unavailable else {}),
                "variants": [{"key": r.variant, "label": r.label, "fix": r.fix,
                              "cells": {ep: c.to_json() for ep, c in r.cells.items()}}
                             for r in d.rows],
            } for d in self.drivers],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Matrix:
        if data.get("format") != FORMAT:
            raise ConfigError("not a lab clients matrix (format field)",
                              fix="give a clients.json written by lab clients")
        drivers = []
        for d in data.get("drivers", []):
            unavailable = d.get("unavailable") or {}
            drivers.append(DriverResult(
                d["name"], d.get("title", d["name"]), d.get("docs", ""),
                d.get("ecosystem", ""), dict(d.get("versions", {})),
                unavailable.get("reason", ""), unavailable.get("outcome", ""),
                [Row(v["key"], v.get("label", v["key"]), v.get("fix", ""),
                     {ep: Cell.from_json(c) for ep, c in v.get("cells", {}).items()})
                 for v in d.get("variants", [])]))
        return cls(dict(data.get("lab", {})), list(data.get("endpoints", [])), drivers,
                   str(data.get("started", "")), float(data.get("seconds", 0.0)),
                   data.get("prepared"), float(data.get("timeout_s", DEFAULT_TIMEOUT_S)),
                   bool(data.get("interrupted", False)))


def lab_header(cfg: LabConfig) -> dict[str, Any]:
    """The settings that decide whether a driver works through each endpoint."""
    return {
        "name": cfg.name, "tier": cfg.tier, "pool_size": cfg.pool_size,
        "pool_sharing": cfg.pool_sharing,
        "dedicated_max_prepared_statements": cfg.max_prepared_statements,
        "shared_max_prepared_statements": cfg.shared_max_prepared_statements,
        "ssl_enforce": cfg.ssl_enforce, "network": cfg.network,
    }


def _config(ep: EndpointInfo, cfg: LabConfig, password: str, timeout: float) -> dict[str, Any]:
    """Where a cell connects: the endpoint's bench address, no TLS unless the lab enforces it
    (then encrypted, unverified: the matrix is about pooling; `lab experiment run tls` is about
    certificates)."""
    sslmode = "require" if cfg.ssl_enforce else "disable"
    params = {"host": ep.bench_host, "port": ep.bench_port, "user": ep.user,
              "password": password, "dbname": ep.database, "sslmode": sslmode,
              "application_name": APPLICATION}
    query = urlencode({"sslmode": sslmode, "application_name": APPLICATION})
    dsn = (f"postgresql://{quote(ep.user, safe='.')}:{quote(password, safe='')}@"
           f"{ep.bench_host}:{ep.bench_port}/{ep.database}?{query}")
    return {"endpoint": ep.name, "dsn": dsn, "params": params, "timeout": timeout,
            "node_dir": str(install.node_dir())}


def _last_where(stderr: str) -> str:
    marks = [ln[len("@where "):] for ln in stderr.splitlines() if ln.startswith("@where ")]
    return marks[-1] if marks else ""


def run_cell(path: Path, variant: str, config: dict[str, Any], timeout: float,
             secrets: Secrets | None = None) -> Cell:
    """One cell in a child process (its own process group, killed whole at the timeout)."""
    request = json.dumps({"file": str(path), "variant": variant, "config": config})
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "lab.clients.cell"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "LAB_CLIENTS_TRACE": "1"})
    try:
        out, err = proc.communicate(request, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Cell(HANGS, message=f"no answer within {timeout:g} s",
                    where=_last_where(err), seconds=time.monotonic() - started)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # grandchildren (node) never outlive a cell
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        tail = [ln for ln in err.strip().splitlines() if not ln.startswith("@where ")]
        return Cell(CRASHED, message=redact((tail or [f"exit code {proc.returncode}"])[-1],
                                            secrets)[:300],
                    where=_last_where(err), seconds=time.monotonic() - started)
    cell = Cell.from_json(json.loads(lines[-1]))
    cell.message = redact(cell.message, secrets)
    if cell.outcome == CRASHED and not cell.where:
        cell.where = _last_where(err)
    return cell


def _drain(pools: Context, endpoint: str) -> None:
    """Empty a pooler before a cell (direct has nothing to drain)."""
    if endpoint in POOLERS:
        pools.drain(endpoint)


def run(lab_name: str = "default", *, chosen_endpoints: Sequence[str] = (),
        chosen_drivers: Sequence[str] = (), install_missing: bool = True,
        timeout: float = DEFAULT_TIMEOUT_S, prepared: int | None = None,
        log: Callable[[str], None] = lambda _t: None,
        on_driver: Callable[[DriverResult], None] | None = None) -> Matrix:
    """The matrix for a running lab. Ctrl-C returns what was measured (``interrupted``)."""
    for ep in chosen_endpoints:
        if ep not in ENDPOINTS:
            raise ConfigError(f"no endpoint {ep!r}", fix=f"use one of: {', '.join(ENDPOINTS)}")
    if prepared is not None and prepared < 1:
        raise ConfigError("--prepared must be 1 or more (PgBouncer's max_prepared_statements)",
                          fix="e.g. --prepared 100")
    if timeout <= 0:
        raise ConfigError("--timeout must be above 0 seconds", fix="e.g. --timeout 20")
    picked = select(chosen_drivers)
    names = [ep for ep in ENDPOINTS if ep in chosen_endpoints] or list(ENDPOINTS)
    cfg, state, containers = stack.require_running(lab_name)
    eps = endpoints(cfg, containers)
    started = time.monotonic()
    matrix = Matrix(lab_header(cfg), names, [],
                    datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), prepared=prepared,
                    timeout_s=timeout)
    reasons = install.ensure([d for _, d in picked], install_missing, log)
    secrets = state.secrets()
    pools = Context(cfg, state, eps, containers)  # admin consoles: drains, runtime SETs
    from lab.experiments.runner import exclusive

    try:
        with exclusive(state):
            for path, driver in picked:
                result = _driver_result(driver, reasons.get(driver.name, ""))
                matrix.drivers.append(result)
                if not result.unavailable:
                    log(f"{driver.name}: {len(driver.variants)} variant(s) x {len(names)} "
                        "endpoint(s)")
                    _fill(result, path, names, eps, cfg, secrets, timeout, pools)
                    if prepared is not None:
                        _rescue(result, path, names, eps, cfg, secrets, timeout, pools,
                                prepared)
                if on_driver is not None:
                    on_driver(result)
    except KeyboardInterrupt:
        matrix.interrupted = True
    finally:
        failed = pools.restore()
        pools.close_admins()
        matrix.seconds = time.monotonic() - started
    if failed:
        raise StackError(f"could not restore {', '.join(failed)} after lab clients",
                         fix=f"lab down{name_flag(lab_name)} && lab up{name_flag(lab_name)}")
    return matrix


def _driver_result(driver: Driver, reason: str) -> DriverResult:
    result = DriverResult(driver.name, driver.title, driver.docs, driver.ecosystem,
                          install.versions(driver))
    if driver.untestable:
        result.unavailable, result.unavailable_outcome = driver.untestable, NOT_TESTABLE
    elif reason:
        result.unavailable, result.unavailable_outcome = reason, NOT_INSTALLED
    result.rows = [Row(v.key, v.label, v.fix) for v in driver.variants]
    return result


def _fill(result, path, names, eps, cfg, secrets, timeout, pools) -> None:
    for row in result.rows:
        for endpoint in names:
            _drain(pools, endpoint)
            row.cells[endpoint] = run_cell(
                path, row.variant,
                _config(eps[endpoint], cfg, secrets.postgres_password, timeout), timeout,
                secrets)


def _rescue(result, path, names, eps, cfg, secrets, timeout, pools, prepared) -> None:
    failing = [(row, ep) for row in result.rows for ep in names
               if ep in POOLERS and row.cells.get(ep) is not None
               and row.cells[ep].outcome in (FAILS, WRONG, HANGS)]
    for row, endpoint in failing:
        pools.set(endpoint, "max_prepared_statements", prepared)
        pools.drain(endpoint)
        again = run_cell(path, row.variant,
                         _config(eps[endpoint], cfg, secrets.postgres_password, timeout),
                         timeout, secrets)
        if again.outcome == WORKS:
            row.cells[endpoint].rescued_by = f"max_prepared_statements={prepared}"
    if failing:
        pools.restore()  # the next driver meets the lab's own settings again
        for endpoint in {ep for _, ep in failing}:
            pools.drain(endpoint)


def counts(matrix: Matrix) -> dict[str, int]:
    """How many cells show each outcome (drivers that could not run count once per cell)."""
    result: dict[str, int] = {}
    for d in matrix.drivers:
        if d.unavailable and not d.rows:
            result[d.unavailable_outcome] = result.get(d.unavailable_outcome, 0) + \
                len(matrix.endpoints)
        for row in d.rows:
            for ep in matrix.endpoints:
                cell = row.cells.get(ep)
                outcome = d.unavailable_outcome or (cell.outcome if cell else "not run")
                result[outcome] = result.get(outcome, 0) + 1
    return result


__all__ = ["Matrix", "DriverResult", "Row", "run", "run_cell", "counts", "WORKS", "FAILS",
           "WRONG", "HANGS", "CRASHED", "NOT_INSTALLED", "NOT_TESTABLE"]
