"""Stage 1 of the pipeline: settings.

A lab's settings are one frozen ``LabConfig``, built from a Supabase compute-tier preset, then
an optional ``lab.toml``, then command-line flags (later wins). Everything is validated here, so
every later stage can trust its input. Nothing in this module touches Docker or the network.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import ConfigError


@dataclass(frozen=True)
class Tier:
    name: str
    max_connections: int
    max_client_conn: int  # "max pooler clients": applies to each pooler separately
    pool_size: int  # default pool size (Studio constants)


# Supabase compute tiers (docs table; default pool size from Studio's constants).
TIERS: dict[str, Tier] = {
    t.name: t
    for t in (
        Tier("nano", 60, 200, 15),
        Tier("micro", 60, 200, 15),
        Tier("small", 90, 400, 15),
        Tier("medium", 120, 600, 15),
        Tier("large", 160, 800, 20),
        Tier("xl", 240, 1000, 20),
        Tier("2xl", 380, 1500, 25),
        Tier("4xl", 480, 3000, 32),
        Tier("8xl", 490, 6000, 64),
        Tier("12xl", 500, 9000, 96),
        Tier("16xl", 500, 12000, 128),
    )
}
DEFAULT_TIER = "micro"


@dataclass(frozen=True)
class Endpoint:
    """One of the four ways Supabase tells its users to connect."""

    name: str
    host: str  # compose service whose address the endpoint lives on: "db" or "pooler"
    container_port: int
    pool_mode: str  # "none", "session" or "transaction"
    pooler: str  # "none", "shared" or "dedicated"
    label: str
    use_when: str


ENDPOINTS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        Endpoint(
            "direct", "db", 5432, "none", "none", "Direct connection",
            "persistent servers (VMs, containers) that can hold long-lived connections; "
            "migrations and admin work",
        ),
        Endpoint(
            "session", "pooler", 5432, "session", "shared", "Shared pooler, session mode",
            "persistent servers that need IPv4 and a drop-in for direct; session state works",
        ),
        Endpoint(
            "transaction", "pooler", 6543, "transaction", "shared",
            "Shared pooler, transaction mode",
            # lab.connect adds whether prepared statements work (shared_max_prepared_statements)
            "serverless and edge functions: many short-lived clients; no session state",
        ),
        Endpoint(
            "dedicated", "db", 6543, "transaction", "dedicated", "Dedicated pooler (PgBouncer)",
            # lab.connect adds what the lab's distance says about its latency
            "serverless or high client counts on a paid tier: co-located with Postgres",
        ),
    )
}

POOL_SHARING = ("per-mode", "shared")
# The shared pooler's session mode beyond pool_size clients: Supavisor 2.8+ refuses the
# client at connect (EMAXCONNSESSION, "refuse"); before 2.8 it waited for a backend ("queue").
SESSION_OVERFLOW = ("refuse", "queue")
LAYOUTS = ("addresses", "ports")


@dataclass(frozen=True)
class Network:
    """Round trips between the lab's parties, in milliseconds: the client and the db host, the
    client and the pooler host, the pooler host and the db host (the dedicated pooler sits on
    the db host and pays no hop of its own)."""

    name: str
    client_db_rtt_ms: float
    client_pooler_rtt_ms: float
    pooler_db_rtt_ms: float
    source: str


# Presets, with where their numbers come from (docs/design.md, "Distance").
NETWORKS: dict[str, Network] = {
    n.name: n
    for n in (
        Network("local", 0.0, 0.0, 0.0,
                "everything on this machine: no added round trip (the lab before distance)"),
        Network("same-region", 1.0, 1.0, 1.0,
                "app, database and Supavisor in one cloud region, across availability zones: "
                "about 0.5-2 ms per round trip between zones; Supavisor's own load test "
                "measured about +2 ms against a co-located PgBouncer"),
        Network("cross-region", 70.0, 70.0, 1.0,
                "the app in another region than the project (e.g. us-west-2 calling "
                "us-east-1: about 60-75 ms per round trip); pooler and database stay together"),
    )
}
DEFAULT_NETWORK = "local"
RTT_KEYS = ("client_db_rtt_ms", "client_pooler_rtt_ms", "pooler_db_rtt_ms")
MAX_RTT_MS = 2000.0
# Where a relay carries traffic: "auto" only on paths with a round trip above 0, "always" on
# every path even at 0 ms (to measure what the relay itself costs).
RELAY_MODES = ("auto", "always")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Postgres keeps superuser_reserved_connections (3) slots; fewer than this leaves no room.
MIN_MAX_CONNECTIONS = 5


@dataclass(frozen=True)
class LabConfig:
    """Every setting of one lab. Built by ``load_config``; never mutated."""

    name: str = "default"
    tier: str = DEFAULT_TIER
    max_connections: int = TIERS[DEFAULT_TIER].max_connections
    max_client_conn: int = TIERS[DEFAULT_TIER].max_client_conn
    pool_size: int = TIERS[DEFAULT_TIER].pool_size
    tenant: str = "lab"
    # Supavisor's code gives session and transaction mode one pool each ("per-mode"); Supabase's
    # docs since Nov 2025 say the modes share pool_size ("shared").
    pool_sharing: str = "per-mode"
    # Session-mode clients beyond pool_size: refused at login (Supavisor 2.8+) or queued.
    session_overflow: str = "refuse"
    # Supabase's dedicated pooler documents no prepared-statement support: 0 reproduces it.
    max_prepared_statements: int = 0
    # The shared pooler's transaction mode: Supavisor supports named prepared statements only
    # behind a flag that is off by default (named_prepared_statements); 0 reproduces it, above
    # 0 is PgBouncer's max_prepared_statements there (200: Supavisor's per-backend limit).
    shared_max_prepared_statements: int = 0
    # Seconds a PgBouncer client may queue for a server connection (PgBouncer default 120).
    query_wait_timeout: int = 120
    # Supabase's "Enforce SSL on incoming connections" (off by default there too): on, every
    # endpoint refuses a plaintext client with the server's own text.
    ssl_enforce: bool = False
    # Distance between the lab's hosts (a preset of NETWORKS, or "custom") and its round trips.
    network: str = DEFAULT_NETWORK
    client_db_rtt_ms: float = 0.0
    client_pooler_rtt_ms: float = 0.0
    pooler_db_rtt_ms: float = 0.0
    relay: str = "auto"
    layout: str = "addresses"
    db_address: str = "127.0.0.2"
    pooler_address: str = "127.0.0.3"
    ports: Mapping[str, int] = field(
        default_factory=lambda: {"direct": 5432, "dedicated": 6543, "session": 5432,
                                 "transaction": 6543}
    )

    @property
    def project(self) -> str:
        """The compose project name: two labs with different names run side by side."""
        return f"pooler-lab-{self.name}"

    def address_of(self, endpoint: str) -> str:
        host = ENDPOINTS[endpoint].host
        return self.db_address if host == "db" else self.pooler_address

    @property
    def client_relays(self) -> bool:
        """Clients reach both hosts through relays (services net-db and net-pooler)."""
        return self.relay == "always" or self.client_db_rtt_ms > 0 or self.client_pooler_rtt_ms > 0

    @property
    def pooler_relay(self) -> bool:
        """The shared pooler reaches Postgres through a relay on its own host."""
        return self.relay == "always" or self.pooler_db_rtt_ms > 0

    def client_service(self, endpoint: str) -> str:
        """The compose service a client's packets enter for ``endpoint``."""
        host = ENDPOINTS[endpoint].host
        return f"net-{host}" if self.client_relays else host

    def rtt_ms(self, path: str) -> float:
        """Configured round trip of a path: client-db, client-pooler or pooler-db."""
        return float(getattr(self, f"{path.replace('-', '_')}_rtt_ms"))

    def endpoint_rtt_ms(self, endpoint: str) -> float:
        """A query's added round trip through ``endpoint``: the client's hop to the host it
        connects to, plus the pooler host's hop to Postgres for the shared pooler."""
        if ENDPOINTS[endpoint].host == "db":
            return self.client_db_rtt_ms
        return self.client_pooler_rtt_ms + self.pooler_db_rtt_ms

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ports"] = dict(self.ports)
        return data


# Keys a lab.toml (or a flag) may set. Ports have one key each.
SETTING_KEYS = (
    "tier", "max_connections", "max_client_conn", "pool_size", "tenant", "pool_sharing",
    "session_overflow", "max_prepared_statements", "shared_max_prepared_statements",
    "query_wait_timeout", "ssl_enforce", "network", *RTT_KEYS, "relay", "layout",
    "db_address", "pooler_address",
    "port_offset", "direct_port", "dedicated_port", "session_port", "transaction_port",
)
DEFAULT_PORT_OFFSET = 10000


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist", fix="check the --config path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc})", fix=f"correct {path}") from None
    # Accept either top-level keys or a [lab] table.
    if isinstance(data.get("lab"), dict) and len(data) == 1:
        data = data["lab"]
    return data


def load_config(
    name: str = "default",
    toml: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    source: str = "lab.toml",
) -> LabConfig:
    """Tier preset, then ``toml``, then ``overrides`` (flags; ``None`` values are ignored)."""
    if not NAME_RE.match(name or ""):
        raise ConfigError(
            f"invalid lab name {name!r}: use lowercase letters, digits, '-' or '_' "
            "(at most 40, starting with a letter or digit)",
            fix="lab up --name lab2",
        )
    settings: dict[str, Any] = {}
    for origin, mapping in ((source, toml or {}), ("flags", overrides or {})):
        for key, value in mapping.items():
            if value is None:
                continue
            if key not in SETTING_KEYS:
                raise ConfigError(
                    f"unknown setting {key!r} in {origin}",
                    fix=f"use one of: {', '.join(SETTING_KEYS)}",
                )
            settings[key] = value

    tier_name = str(settings.get("tier", DEFAULT_TIER)).lower()
    if tier_name not in TIERS:
        raise ConfigError(
            f"unknown tier {tier_name!r}",
            fix=f"use one of {', '.join(TIERS)} (e.g. lab up --tier micro)",
        )
    tier = TIERS[tier_name]

    layout = settings.get("layout", "addresses")
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}", fix="use layout 'addresses' or 'ports'")
    if layout == "addresses":
        db_address, pooler_address = "127.0.0.2", "127.0.0.3"
        ports = {"direct": 5432, "dedicated": 6543, "session": 5432, "transaction": 6543}
    else:
        # One address (macOS has only 127.0.0.1); the pooler host's ports are the db host's + 1.
        offset = _int(settings, "port_offset", DEFAULT_PORT_OFFSET, minimum=0)
        db_address = pooler_address = "127.0.0.1"
        ports = {"direct": 5432 + offset, "dedicated": 6543 + offset,
                 "session": 5433 + offset, "transaction": 6544 + offset}
    for endpoint in ports:
        if f"{endpoint}_port" in settings:
            ports[endpoint] = _int(settings, f"{endpoint}_port", 0)

    network, rtts = _network(settings)
    cfg = LabConfig(
        name=name,
        tier=tier_name,
        max_connections=_int(settings, "max_connections", tier.max_connections,
                             minimum=MIN_MAX_CONNECTIONS),
        max_client_conn=_int(settings, "max_client_conn", tier.max_client_conn, minimum=1),
        pool_size=_int(settings, "pool_size", tier.pool_size, minimum=1),
        tenant=str(settings.get("tenant", "lab")),
        pool_sharing=str(settings.get("pool_sharing", "per-mode")),
        session_overflow=str(settings.get("session_overflow", "refuse")),
        max_prepared_statements=_int(settings, "max_prepared_statements", 0, minimum=0),
        shared_max_prepared_statements=_int(settings, "shared_max_prepared_statements", 0,
                                            minimum=0),
        query_wait_timeout=_int(settings, "query_wait_timeout", 120, minimum=0),
        ssl_enforce=_bool(settings, "ssl_enforce", False),
        network=network,
        **rtts,
        relay=str(settings.get("relay", "auto")),
        layout=layout,
        db_address=str(settings.get("db_address", db_address)),
        pooler_address=str(settings.get("pooler_address", pooler_address)),
        ports=ports,
    )
    validate(cfg)
    return cfg


def _int(settings: Mapping[str, Any], key: str, default: int, minimum: int | None = None) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{key} must be a whole number, not {value!r}",
                          fix=f"set {key} to a whole number")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{key} must be a whole number, not {value!r}",
                          fix=f"set {key} to a whole number") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{key} must be at least {minimum}, not {number}",
                          fix=f"set {key} to {minimum} or more")
    return number


def _network(settings: Mapping[str, Any]) -> tuple[str, dict[str, float]]:
    """A preset's round trips, each replaced by an explicit value; "custom" if one differs."""
    name = str(settings.get("network", DEFAULT_NETWORK)).lower()
    if name not in NETWORKS and name != "custom":
        raise ConfigError(f"unknown network {name!r}",
                          fix=f"use one of {', '.join(NETWORKS)} (e.g. lab up --network "
                              "same-region), or set the *_rtt_ms values")
    base = NETWORKS.get(name, NETWORKS[DEFAULT_NETWORK])
    rtts = {key: float(getattr(base, key)) for key in RTT_KEYS}
    for key in RTT_KEYS:
        if key in settings:
            rtts[key] = _float(settings, key, minimum=0.0, maximum=MAX_RTT_MS)
    if name != "custom" and any(rtts[k] != getattr(base, k) for k in RTT_KEYS):
        name = "custom"
    return name, rtts


def _float(settings: Mapping[str, Any], key: str, *, minimum: float,
           maximum: float) -> float:
    value = settings.get(key)
    fix = f"set {key} to a number of milliseconds between {minimum:g} and {maximum:g}"
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a number, not {value!r}", fix=fix)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number, not {value!r}", fix=fix) from None
    if not minimum <= number <= maximum or number != number:
        raise ConfigError(f"{key} {number:g} is out of range", fix=fix)
    return number


def _bool(settings: Mapping[str, Any], key: str, default: bool) -> bool:
    value = settings.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "on", "yes", "1"):
        return True
    if text in ("false", "off", "no", "0"):
        return False
    raise ConfigError(f"{key} must be true or false, not {value!r}",
                      fix=f"set {key} = true or {key} = false")


def validate(cfg: LabConfig) -> None:
    """Refuse settings the stack cannot honour, naming the fix."""
    if cfg.pool_size > cfg.max_connections:
        raise ConfigError(
            f"pool size {cfg.pool_size} is above max_connections {cfg.max_connections}",
            fix=f"lower --pool-size to at most {cfg.max_connections} or raise --max-connections",
        )
    if not TENANT_RE.match(cfg.tenant):
        raise ConfigError(
            f"invalid tenant {cfg.tenant!r}: lowercase letters, digits, '-' or '_', no dots",
            fix="lab up --tenant lab",
        )
    if cfg.pool_sharing not in POOL_SHARING:
        raise ConfigError(f"unknown pool_sharing {cfg.pool_sharing!r}",
                          fix="use 'per-mode' (Supavisor's code) or 'shared' (Supabase's docs)")
    if cfg.session_overflow not in SESSION_OVERFLOW:
        raise ConfigError(f"unknown session_overflow {cfg.session_overflow!r}",
                          fix="use 'refuse' (Supavisor 2.8+) or 'queue' (Supavisor before 2.8)")
    if cfg.relay not in RELAY_MODES:
        raise ConfigError(f"unknown relay {cfg.relay!r}",
                          fix="use 'auto' (relays only where a round trip is set) or 'always'")
    if cfg.network not in NETWORKS and cfg.network != "custom":
        raise ConfigError(f"unknown network {cfg.network!r}",
                          fix=f"use one of {', '.join(NETWORKS)}")
    for key in RTT_KEYS:
        value = getattr(cfg, key)
        if not isinstance(value, int | float) or not 0 <= value <= MAX_RTT_MS:
            raise ConfigError(f"{key} {value!r} is out of range",
                              fix=f"set {key} between 0 and {MAX_RTT_MS:g} ms")
    for key in ("db_address", "pooler_address"):
        value = getattr(cfg, key)
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ConfigError(f"{key} {value!r} is not an IP address",
                              fix=f"set {key} to an address such as 127.0.0.2") from None
    for endpoint, port in cfg.ports.items():
        if not 1 <= port <= 65535:
            raise ConfigError(f"{endpoint} port {port} is out of range (1-65535)",
                              fix=f"set --{endpoint}-port to a port between 1024 and 65535")
    seen: dict[tuple[str, int], str] = {}
    for endpoint, port in cfg.ports.items():
        key = (cfg.address_of(endpoint), port)
        if key in seen:
            raise ConfigError(
                f"{endpoint} and {seen[key]} would both listen on {key[0]}:{port}",
                fix="give them different ports or addresses (or use layout 'ports')",
            )
        seen[key] = endpoint


def from_dict(data: Mapping[str, Any]) -> LabConfig:
    """Rebuild a saved config (``LabConfig.to_dict``), validating it again."""
    known = {f.name for f in dataclasses.fields(LabConfig)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"saved settings have unknown keys {sorted(unknown)}",
                          fix="lab down, then lab up again")
    values = dict(data)
    values["ports"] = dict(values.get("ports", {}))
    cfg = LabConfig(**values)
    validate(cfg)
    return cfg


def with_addresses(cfg: LabConfig, db_address: str, pooler_address: str) -> LabConfig:
    return dataclasses.replace(cfg, db_address=db_address, pooler_address=pooler_address)
