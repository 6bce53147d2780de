"""The lab's four connection strings, as Supabase's Connect dialog prints them.

Each endpoint has two addresses: ``uri`` (the published loopback address, for humans and tools)
and ``bench_uri`` (the container's bridge address on Linux, which skips Docker's userland proxy:
it cut throughput 3x in our measurement). The password is masked unless asked for.

Every string asks for TLS with ``sslmode=verify-full`` and the lab's CA (``sslrootcert``), as
Supabase recommends; a bench address keeps the published host name for the certificate check
and reaches the bridge address through libpq's ``hostaddr``. With distance, a client's bridge
address is the relay in front of the host (net-db, net-pooler); the sampler's (``monitor_*``)
is the host itself: watching the lab is not one of its clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

from lab import engine, render
from lab.config import ENDPOINTS, LabConfig
from lab.state import Secrets

MASK = "[YOUR-PASSWORD]"
DATABASE = "postgres"


@dataclass(frozen=True)
class EndpointInfo:
    name: str
    label: str
    pool_mode: str
    pooler: str
    use_when: str
    user: str
    host: str
    port: int
    bench_host: str
    bench_port: int
    database: str = DATABASE
    sslrootcert: str | None = None  # the lab's CA certificate; None: no TLS verification
    sslmode: str = "verify-full"
    monitor_host: str | None = None  # the host service itself, bypassing a relay
    monitor_port: int | None = None

    def tls_params(self, sslmode: str | None = None) -> dict[str, str]:
        mode = sslmode or (self.sslmode if self.sslrootcert else "prefer")
        params = {"sslmode": mode}
        if self.sslrootcert and mode in ("verify-ca", "verify-full"):
            params["sslrootcert"] = self.sslrootcert
        return params

    def conn_params(self, bench: bool = False, monitor: bool = False,
                    sslmode: str | None = None) -> dict[str, object]:
        """host, port (and hostaddr) and TLS parameters for psycopg.connect."""
        params: dict[str, object] = {"host": self.host, "port": self.port}
        if monitor and self.monitor_host:
            address, params["port"] = self.monitor_host, self.monitor_port or self.port
        elif bench:
            address, params["port"] = self.bench_host, self.bench_port
        else:
            address = self.host
        if address != self.host:
            params["hostaddr"] = address
        params.update(self.tls_params(sslmode))
        return params

    def address(self, bench: bool = False, monitor: bool = False,
                sslmode: str | None = None) -> tuple[str, int, dict[str, object]]:
        """``conn_params`` split: (host, port, the rest: hostaddr and TLS)."""
        params = self.conn_params(bench=bench, monitor=monitor, sslmode=sslmode)
        return str(params.pop("host")), int(params.pop("port")), params  # type: ignore

    def uri(self, password: str | None = None, bench: bool = False,
            sslmode: str | None = None) -> str:
        params = self.conn_params(bench=bench, sslmode=sslmode)
        secret = MASK if password is None else quote(password, safe="")
        query = {k: str(v) for k, v in params.items() if k not in ("host", "port")}
        return (f"postgresql://{quote(self.user, safe='.')}:{secret}@{self.host}:"
                f"{params['port']}/{self.database}?{urlencode(query, safe='/')}")

    def to_json(self, password: str | None = None) -> dict[str, object]:
        return {
            "uri": self.uri(password),
            "bench_uri": self.uri(password, bench=True),
            "host": self.host,
            "port": self.port,
            "bench_host": self.bench_host,
            "bench_port": self.bench_port,
            "sslmode": self.tls_params()["sslmode"],
            "sslrootcert": self.sslrootcert,
            "user": self.user,
            "database": self.database,
            "pool_mode": self.pool_mode,
            "pooler": self.pooler,
            "label": self.label,
            "use_when": self.use_when,
        }


def endpoints(cfg: LabConfig, containers: list[engine.ContainerInfo] | None = None,
              sslrootcert: str | None = None) -> dict[str, EndpointInfo]:
    """Endpoint addresses of a lab; bridge addresses come from its running containers.
    ``sslrootcert`` defaults to the lab's CA certificate when it exists."""
    bridge = {}
    if containers and engine.bridge_reachable():
        bridge = {c.service: c.address for c in containers if c.address}
    if sslrootcert is None:
        sslrootcert = ca_path(cfg.name)
    result = {}
    for name, ep in ENDPOINTS.items():
        host, port = cfg.address_of(name), cfg.ports[name]
        bench_host = bridge.get(cfg.client_service(name))
        monitor_host = bridge.get(ep.host)
        result[name] = EndpointInfo(
            name=name, label=ep.label, pool_mode=ep.pool_mode, pooler=ep.pooler,
            use_when=use_when(cfg, name), user=render.endpoint_user(cfg, name),
            host=host, port=port,
            bench_host=bench_host or host,
            bench_port=ep.container_port if bench_host else port,
            sslrootcert=sslrootcert,
            monitor_host=monitor_host or bench_host or host,
            monitor_port=ep.container_port if (monitor_host or bench_host) else port,
        )
    return result


def ca_path(name: str) -> str | None:
    """The lab's CA certificate (lab.tls), if `lab up` has made it."""
    from lab.state import LabState

    path = LabState(name).dir / "tls" / "ca.crt"
    return str(path) if path.exists() else None


def use_when(cfg: LabConfig, endpoint: str) -> str:
    """What an endpoint is for; for the transaction poolers, whether prepared statements work
    in this lab (PgBouncer's max_prepared_statements; SQL PREPARE never works there)."""
    text = ENDPOINTS[endpoint].use_when
    if endpoint == "dedicated":
        text += distance_note(cfg)
    if endpoint == "transaction":
        key, value = "shared_max_prepared_statements", cfg.shared_max_prepared_statements
        default = "as Supavisor's named_prepared_statements flag by default"
    elif endpoint == "dedicated":
        key, value = "max_prepared_statements", cfg.max_prepared_statements
        default = "as Supabase documents"
    else:
        return text
    if value == 0:
        return (f"{text}; prepared statements off ({key} = 0, {default}): turn the driver's "
                "statement cache off (lab experiment run protocol-prepared)")
    return (f"{text}; protocol-level prepared statements on ({key} = {value}), "
            "SQL PREPARE never")


def distance_note(cfg: LabConfig) -> str:
    """The guide's latency claim for the dedicated pooler, only where the distance shows it."""
    if cfg.pooler_db_rtt_ms > 0 and cfg.client_db_rtt_ms <= cfg.client_pooler_rtt_ms:
        return (f", so lower pooled latency than the shared pooler: its queries skip the "
                f"pooler-db hop ({cfg.pooler_db_rtt_ms:g} ms here)")
    if cfg.pooler_db_rtt_ms == 0:
        return (" (lower latency than the shared pooler where hosts are apart: "
                "lab up --network same-region shows it)")
    return ""


def admin_user() -> str:
    return render.ADMIN_USER


def redact(text: str, secrets: Secrets | None) -> str:
    """Remove every lab password from a text (for logs, manifests and error messages)."""
    if secrets is None:
        return text
    for value in secrets.values():
        if value:
            text = text.replace(value, MASK).replace(quote(value, safe=""), MASK)
    return text
