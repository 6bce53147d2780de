"""Where the load goes: the endpoints of a run, their passwords (never written anywhere), the
sampler's targets, and draining the lab's poolers between segments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from lab.connect import EndpointInfo
from lab.errors import ConfigError
from lab.run.spec import RunSpec, mask_uri

Log = Callable[[str], None]


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
    project: str | None = None  # the lab's compose project (None with --target)


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
    # The load goes to the containers' bridge addresses (no userland proxy in the way), except
    # when workers on other machines generate it (--master-bind beyond loopback): they can only
    # reach the addresses the lab publishes (`lab up --db-address/--pooler-address`).
    bench = not spec.master_beyond_loopback
    return Targets(
        endpoints={name: eps[name] for name in eps},
        uris={name: eps[name].uri(password, bench=bench, sslmode=spec.sslmode) for name in eps},
        masked={name: {k: v for k, v in eps[name].to_json().items() if k != "use_when"}
                for name in eps},
        lab=cfg.to_dict(),
        sampler_targets=targets,
        sampler_passwords=sampler.lab_passwords(lab_secrets, targets),
        shared_addresses=sampler.shared_addresses(containers),
        secret_values=lab_secrets.values(),
        image_tag=image.tag(),
        project=cfg.project,
    )


def reset_poolers(targets: Targets, log: Log) -> dict[str, int]:
    """Drain every lab PgBouncer (RECONNECT, wait for no server connection); report leftovers."""
    from lab import pg

    left: dict[str, int] = {}
    for t in targets.sampler_targets:
        if t.kind != "pgbouncer":
            continue
        try:
            with pg.admin_connect(t.host, t.port, t.user, targets.sampler_passwords[t.name],
                                  **t.tls) as c:
                left[t.name] = pg.drain_pooler(c, timeout_s=10)
        except pg.Error as exc:
            left[t.name] = -1
            log(f"could not reset the {t.name} pooler: {str(exc).strip()[:120]}")
        if left[t.name] > 0:
            log(f"the {t.name} pooler still holds {left[t.name]} server connections")
    return left
