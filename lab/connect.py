"""The lab's four connection strings, as Supabase's Connect dialog prints them.

Each endpoint has two addresses: ``uri`` (the published loopback address, for humans and tools)
and ``bench_uri`` (the container's bridge address on Linux, which skips Docker's userland proxy:
it cut throughput 3x in our measurement). The password is masked unless asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

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

    def uri(self, password: str | None = None, bench: bool = False) -> str:
        host, port = (self.bench_host, self.bench_port) if bench else (self.host, self.port)
        secret = MASK if password is None else quote(password, safe="")
        return f"postgresql://{quote(self.user, safe='.')}:{secret}@{host}:{port}/{self.database}"

    def to_json(self, password: str | None = None) -> dict[str, object]:
        return {
            "uri": self.uri(password),
            "bench_uri": self.uri(password, bench=True),
            "host": self.host,
            "port": self.port,
            "bench_host": self.bench_host,
            "bench_port": self.bench_port,
            "user": self.user,
            "database": self.database,
            "pool_mode": self.pool_mode,
            "pooler": self.pooler,
            "label": self.label,
            "use_when": self.use_when,
        }


def endpoints(cfg: LabConfig, containers: list[engine.ContainerInfo] | None = None
              ) -> dict[str, EndpointInfo]:
    """Endpoint addresses of a lab; bridge addresses come from its running containers."""
    bridge = {}
    if containers and engine.bridge_reachable():
        bridge = {c.service: c.address for c in containers if c.address}
    result = {}
    for name, ep in ENDPOINTS.items():
        host, port = cfg.address_of(name), cfg.ports[name]
        bench_host = bridge.get(ep.host)
        result[name] = EndpointInfo(
            name=name, label=ep.label, pool_mode=ep.pool_mode, pooler=ep.pooler,
            use_when=use_when(cfg, name), user=render.endpoint_user(cfg, name),
            host=host, port=port,
            bench_host=bench_host or host,
            bench_port=ep.container_port if bench_host else port,
        )
    return result


def use_when(cfg: LabConfig, endpoint: str) -> str:
    """What an endpoint is for; for the transaction poolers, whether prepared statements work
    in this lab (PgBouncer's max_prepared_statements; SQL PREPARE never works there)."""
    text = ENDPOINTS[endpoint].use_when
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
