"""What a run was asked to do: the spec, its legs (scenario + load) and their validation.

Everything here is checked before a Locust process starts or a run directory is made, so bad
input is one line naming the fix and nothing is written.
"""

from __future__ import annotations

import datetime as dt
import secrets as pysecrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lab import scenarios
from lab.connect import MASK
from lab.errors import ConfigError

ALL_ENDPOINTS = ("direct", "session", "transaction", "dedicated")
# libpq's sslmode values a run may ask for (verify-full checks the lab's CA and the host name).
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


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
    # Every (scenario, endpoint) segment runs this many times, interleaved (all endpoints once,
    # then again), with the same seed: the report's intervals and the recommendation use them.
    repeat: int = 1
    # The clients' sslmode (None: verify-full with the lab's CA, as `lab connect` prints it).
    sslmode: str | None = None
    # Measure a connection's price with and without TLS before the load (lab.probe).
    connect_cost: bool = False
    # lab.faults.FaultSpec: injected into every segment at the same time after its load start.
    faults: tuple[Any, ...] = ()
    # Locust's distributed mode (lab.distributed): each segment's Locust is a master bound on
    # HOST[:PORT] that runs no users; --expect-workers `lab worker` processes run the load,
    # each its share of the seeded schedule. Beyond loopback, behind TLS and a token.
    master_bind: str | None = None
    expect_workers: int = 1
    worker_wait_s: float = 120.0

    @property
    def master_address(self) -> tuple[str, int] | None:
        """``--master-bind`` as (host, port); None without it (ConfigError when malformed)."""
        if self.master_bind is None:
            return None
        from lab.distributed.worker import parse_address

        return parse_address(self.master_bind, "--master-bind")

    @property
    def master_beyond_loopback(self) -> bool:
        """Workers on other machines generate the load (TLS tunnel, published addresses)."""
        address = self.master_address
        if address is None:
            return False
        from lab.distributed.tunnel import is_loopback

        return not is_loopback(address[0])

    def check(self) -> None:
        """Refuse counts a run cannot use, with the flag that fixes them."""
        if self.sslmode is not None and self.sslmode not in SSLMODES:
            raise ConfigError(f"unknown sslmode {self.sslmode!r}",
                              fix=f"use one of {', '.join(SSLMODES)}")
        if self.repeat < 1:
            raise ConfigError(f"--repeat {self.repeat} is below 1",
                              fix="use --repeat 1 (one pass) or more (e.g. --repeat 3)")
        if self.workers < 1:
            raise ConfigError(f"--workers {self.workers} is below 1",
                              fix="use --workers 1 or more")
        if self.users is not None and self.users < 1:
            raise ConfigError(f"--users {self.users} is below 1",
                              fix="use --users 1 or more, or leave it out for the "
                                  "scenario's default")
        if self.spawn_rate is not None and self.spawn_rate <= 0:
            raise ConfigError(f"--spawn-rate {self.spawn_rate:g} is not positive",
                              fix="use e.g. --spawn-rate 10, or leave it out (all at once)")
        if self.duration_s <= 0:
            raise ConfigError("the duration is not positive", fix="use e.g. --duration 60s")
        if self.cooldown_s < 0:
            raise ConfigError("the cooldown is negative", fix="use e.g. --cooldown 5s or 0s")
        if self.master_address is not None:  # parsed: a bad --master-bind is said here
            if self.workers > 1:
                raise ConfigError("--workers starts local Locust processes; with --master-bind "
                                  "the load comes from `lab worker` processes",
                                  fix="leave out --workers and give --expect-workers N")
            if self.ui:
                raise ConfigError("--ui is not offered with --master-bind",
                                  fix="leave out --ui (lab watch shows the run live)")
        if self.expect_workers < 1:
            raise ConfigError(f"--expect-workers {self.expect_workers} is below 1",
                              fix="use --expect-workers 1 or more")
        if self.expect_workers > 1 and self.master_bind is None:
            raise ConfigError("--expect-workers needs --master-bind",
                              fix="add --master-bind 127.0.0.1:5557 (or an address the "
                                  "workers reach)")
        if self.faults:
            from lab.faults import check_within

            if self.target:
                raise ConfigError("--fault needs the lab (its containers and poolers), not a "
                                  "--target URI", fix="leave out --fault, or run on the lab")
            check_within(self.faults, self.duration_s)


@dataclass(frozen=True)
class Leg:
    """One scenario of a run, with its parameters and load; a run has one, `lab bench` two."""

    scenario: Any  # lab.scenarios.Scenario
    params: dict[str, Any]
    users: int
    spawn_rate: float


def make_leg(scenario_name: str, raw_params: dict[str, str], users: int | None,
             spawn_rate: float | None) -> Leg:
    if users is not None and users < 1:  # 0 is a count, not "the default"
        raise ConfigError(f"--users {users} is below 1",
                          fix="use --users 1 or more, or leave it out for the scenario's default")
    if spawn_rate is not None and spawn_rate <= 0:
        raise ConfigError(f"--spawn-rate {spawn_rate:g} is not positive",
                          fix="use e.g. --spawn-rate 10, or leave it out (all at once)")
    scenario = scenarios.resolve(scenario_name)
    params = scenario.coerce(raw_params)
    users = scenario.default_users if users is None else users
    check_schedule(params)
    return Leg(scenario, params, users, spawn_rate or float(users))


def check_schedule(params: dict[str, Any]) -> None:
    """Refuse an impossible arrival schedule here, not inside Locust after start-up."""
    from lab import schedule

    for prefix in ("", "serverless_", "persistent_"):
        if f"{prefix}spike_rate" in params or f"{prefix}base_rate" in params:
            schedule.from_params(params, prefix=prefix)


def parse_duration(text: str) -> float:
    """'90', '90s', '2m', '1h30m' -> seconds (positive)."""
    total = parse_span(text)
    if total <= 0:
        raise ConfigError(f"duration {text.strip()!r} is not positive",
                          fix="use e.g. --duration 60s")
    return total


def parse_span(text: str) -> float:
    """'0', '5s', '2m', '1h30m' -> seconds (zero allowed: a cooldown may be none)."""
    text = text.strip().lower()
    if not text:
        raise ConfigError("empty duration", fix="use e.g. --duration 60s or 2m")
    if text.startswith("-"):
        raise ConfigError(f"duration {text!r} is negative", fix="use e.g. 60s, 2m or 0s")
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
    return total


def expand_endpoints(endpoints: tuple[str, ...]) -> tuple[str, ...]:
    result: list[str] = []
    for name in endpoints or ("transaction",):
        for item in (ALL_ENDPOINTS if name == "all" else (name,)):
            if item not in ALL_ENDPOINTS:
                raise ConfigError(f"unknown endpoint {item!r}",
                                  fix=f"use one of {', '.join(ALL_ENDPOINTS)} or all")
            if item not in result:
                result.append(item)
    return tuple(result)


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
