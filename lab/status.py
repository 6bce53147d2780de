"""`lab status` and `lab doctor`: what the lab is doing now, and what stops it from running.

``lab status`` shows who is connected the way Supabase's Observability tells connections apart:
Postgres backends by role (and application_name, and where they come from), the dedicated
pooler's clients, and the shared pooler's clients per mode, each pooler with its server
connections (``who`` in ``--json``; ``who_tables`` makes the text tables).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lab import engine, image, stack
from lab.config import ENDPOINTS
from lab.connect import endpoints
from lab.errors import LabError
from lab.state import LabState
from lab.watch.frame import pooler_counts


def status(name: str = "default") -> dict[str, Any]:
    """Containers, health and live connection counts per endpoint."""
    from lab import sampler  # psycopg: only once we know we are not a Locust process

    cfg, state = stack.load(name)
    containers = engine.project_containers(cfg.project)
    result: dict[str, Any] = {
        "name": cfg.name,
        "project": cfg.project,
        "settings": {k: v for k, v in cfg.to_dict().items() if k != "name"},
        "containers": [
            {"service": c.service, "name": c.name, "state": c.state, "health": c.health,
             "address": c.address} for c in containers
        ],
        "running": sorted({c.service for c in containers if c.state == "running"})
        == sorted(stack.services(cfg)),
        "down": down_services(cfg, containers),
        "endpoints": {},
        "postgres": None,
    }
    if not any(c.state == "running" for c in containers):
        return result  # nothing to ask; with some services up, the rest still answers
    eps = endpoints(cfg, containers)
    secrets = state.secrets()
    targets = sampler.lab_targets(cfg, eps)
    snap = sampler.Sampler(targets, sampler.lab_passwords(secrets, targets),
                           shared=sampler.shared_addresses(containers)).snapshot()
    pgs = snap["postgres"]
    by_origin = pgs.get("by_origin", {}) if pgs.get("ok") else {}
    result["postgres"] = {
        "ok": pgs.get("ok", False),
        "error": pgs.get("error"),
        "backends": pgs.get("total"),
        "by_origin": by_origin,
        "max_connections": cfg.max_connections,
    }
    result["who"] = who(pgs, _pooler_lists(targets, secrets.admin_password))
    for ep_name in ENDPOINTS:
        entry: dict[str, Any] = {"uri": eps[ep_name].uri()}
        if ep_name == "direct":
            entry.update(clients=by_origin.get("direct", 0), waiting=0,
                         backends=by_origin.get("direct", 0))
        else:
            rec = snap[ep_name]
            if rec.get("ok"):
                counts = pooler_counts(rec["pools"])  # the live view's counts, the same way
                entry.update(clients=counts["clients"], waiting=counts["waiting"],
                             backends=counts["servers"], maxwait_s=rec["pools"]["maxwait_s"])
            else:
                entry.update(error=rec.get("error"))
        result["endpoints"][ep_name] = entry
    return result


POOLERS = {"dedicated": ("dedicated",), "shared": ("session", "transaction")}


def down_services(cfg, containers: Iterable[engine.ContainerInfo]) -> dict[str, str]:
    """Each of the lab's services that is not running, with what it is instead."""
    seen = {c.service: c for c in containers}
    down = {}
    for service in stack.services(cfg):
        c = seen.get(service)
        if c is None:
            down[service] = "missing (no container)"
        elif c.state != "running":
            down[service] = c.state
    return down


def describe_down(down: Mapping[str, str]) -> str:
    """'pooler exited, dedicated paused', or '' when every service runs."""
    return ", ".join(f"{service} {state}" for service, state in down.items())

# The two monitoring queries of Supabase's docs, unchanged: they join pg_stat_ssl, so `ssl`
# says which backends came over TLS (clients of direct, and the poolers' server connections).
MONITORING_SQL = {
    "Connections by application and user":
        "select count(usename), count(application_name), application_name, usename "
        "from pg_stat_ssl join pg_stat_activity on pg_stat_ssl.pid = pg_stat_activity.pid "
        "group by usename, application_name;",
    "All connections":
        "SELECT pg_stat_activity.pid, ssl AS ssl_connection, datname AS database, "
        "usename AS connected_role, application_name, client_addr, query, query_start, "
        "state, backend_start FROM pg_stat_ssl JOIN pg_stat_activity "
        "ON pg_stat_ssl.pid = pg_stat_activity.pid;",
}


def monitoring(name: str = "default") -> list[dict[str, Any]]:
    """Supabase's monitoring queries, run as the user would in the SQL editor (direct)."""
    from lab import pg

    cfg, state, containers = stack.require_running(name)
    ep = endpoints(cfg, containers)["direct"]
    results = []
    with pg.connect(ep, state.secrets().postgres_password,
                    application_name="pooler-lab-status") as conn:
        for title, query in MONITORING_SQL.items():
            rows = pg.rows(conn, query)
            results.append({"title": title, "sql": query,
                            "rows": [{k: _plain(v) for k, v in row.items()} for row in rows]})
    return results


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _pooler_lists(targets, admin_password: str) -> dict[str, dict[str, Any]]:
    """SHOW CLIENTS and SHOW SERVERS of every PgBouncer, or the error that stopped them."""
    from lab import pg

    lists: dict[str, dict[str, Any]] = {}
    for t in targets:
        if t.kind != "pgbouncer":
            continue
        try:
            with pg.admin_connect(t.host, t.port, t.user, admin_password, timeout=2,
                                  **t.tls) as conn:
                lists[t.name] = {"clients": pg.rows(conn, "SHOW CLIENTS"),
                                 "servers": pg.rows(conn, "SHOW SERVERS")}
        except Exception as exc:  # a stopped pooler is a line in the view, not a crash
            lists[t.name] = {"error": (str(exc).strip().splitlines() or [type(exc).__name__])[0]}
    return lists


def backends_by_role(groups: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The sampler's pg_stat_activity groups summed over state: one row per (role,
    application_name, origin), most backends first."""
    counts: dict[tuple[str, str, str], int] = {}
    for g in groups:
        key = (str(g.get("role") or ""), str(g.get("app") or ""), str(g.get("origin") or ""))
        counts[key] = counts.get(key, 0) + int(g.get("n") or 0)
    return [{"role": r, "application_name": a, "origin": o, "backends": n}
            for (r, a, o), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def pooler_connections(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """SHOW CLIENTS or SHOW SERVERS rows, the admin console left out, counted per (user,
    database, application_name), with how many are in each PgBouncer state."""
    counts: dict[tuple[str, str, str], dict[str, int]] = {}
    for r in rows:
        if r.get("database") == "pgbouncer":
            continue
        key = (str(r.get("user") or ""), str(r.get("database") or ""),
               str(r.get("application_name") or ""))
        states = counts.setdefault(key, {})
        state = str(r.get("state") or "")
        states[state] = states.get(state, 0) + 1
    return [{"user": u, "database": d, "application_name": a, "total": sum(st.values()),
             "states": dict(sorted(st.items()))}
            for (u, d, a), st in sorted(counts.items(),
                                        key=lambda kv: (-sum(kv[1].values()), kv[0]))]


def _pooler_view(lists: Mapping[str, Any] | None) -> dict[str, Any]:
    if not lists:
        return {"ok": False, "error": "not sampled"}
    if "error" in lists:
        return {"ok": False, "error": lists["error"]}
    clients = pooler_connections(lists["clients"])
    servers = pooler_connections(lists["servers"])
    return {"ok": True, "clients": sum(c["total"] for c in clients), "by_client": clients,
            "server_connections": sum(s["total"] for s in servers), "by_server": servers}


def who(postgres: Mapping[str, Any], lists: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Supabase Observability's three views: Postgres backends by role, dedicated pooler
    clients, shared pooler clients (per mode), each pooler with its server connections."""
    roles = backends_by_role(postgres.get("groups") or []) if postgres.get("ok") else None
    return {
        "postgres_by_role": roles,
        "dedicated_pooler": _pooler_view(lists.get("dedicated")),
        "shared_pooler": {mode: _pooler_view(lists.get(mode))
                          for mode in POOLERS["shared"]},
    }


def who_tables(view: Mapping[str, Any]) -> list[tuple[str, list[str], list[tuple]]]:
    """(title, headers, rows) for each of the three views, as `lab status` prints them."""
    tables: list[tuple[str, list[str], list[tuple]]] = []
    roles = view.get("postgres_by_role")
    tables.append(("Postgres backends by role", ["role", "application_name", "from", "backends"],
                   [(r["role"], r["application_name"] or "''", r["origin"], r["backends"])
                    for r in roles or []]))

    def pooler_rows(label: str | None, v: Mapping[str, Any]) -> list[tuple]:
        lead = () if label is None else (label,)
        if not v.get("ok"):
            return [(*lead, "-", "-", "-", "-", "-", v.get("error") or "")]
        rows = [(*lead, c["user"], c["database"], c["application_name"] or "''",
                 c["total"], c["states"].get("waiting", 0), "") for c in v["by_client"]]
        waiting = sum(c["states"].get("waiting", 0) for c in v["by_client"])
        rows.append((*lead, "(all)", "", "", v["clients"], waiting,
                     f"server connections {v['server_connections']}"))
        return rows

    head = ["user", "database", "application_name", "clients", "waiting", "note"]
    tables.append(("Dedicated pooler clients", head,
                   pooler_rows(None, view.get("dedicated_pooler") or {})))
    shared = view.get("shared_pooler") or {}
    tables.append(("Shared pooler clients", ["mode", *head],
                   [row for mode in POOLERS["shared"]
                    for row in pooler_rows(mode, shared.get(mode) or {})]))
    return tables


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


def doctor(name: str = "default") -> list[Check]:
    """Everything `lab up` needs, each failed check naming the command that fixes it."""
    checks: list[Check] = []
    try:
        info = engine.client().version()
        checks.append(Check("Docker engine", True, f"reachable, version {info.get('Version')}"))
        engine_ok = True
    except LabError as exc:
        checks.append(Check("Docker engine", False, exc.message, exc.fix))
        engine_ok = False
    try:
        argv = stack.compose_command()
        checks.append(Check("Compose v2", True, " ".join(argv)))
    except LabError as exc:
        checks.append(Check("Compose v2", False, exc.message, exc.fix))
    if engine_ok:
        tag = image.tag()
        if image.exists(tag):
            checks.append(Check("Lab image", True, f"{tag} (base {image.info(tag)['base']})"))
        else:
            checks.append(Check("Lab image", False, f"{tag} is not built",
                                "lab image build (no registry: lab image build --offline)"))
    state = LabState(name)
    try:
        cfg, _ = stack.resolve_config(name, None, {})
        if state.exists():
            cfg = state.load_settings()
        own = []
        if engine_ok and state.exists():
            own = [s for s in stack.Stack(cfg, state).ps() if s.state == "running"]
        stack.check_ports_free(cfg, own=own)
        where = ", ".join(f"{ep} {cfg.address_of(ep)}:{cfg.ports[ep]}" for ep in ENDPOINTS)
        checks.append(Check("Addresses and ports", True, f"free or held by this lab: {where}"))
    except LabError as exc:
        checks.append(Check("Addresses and ports", False, exc.message, exc.fix))
    if state.exists() and state.secrets_path.exists():
        mode = state.secrets_path.stat().st_mode & 0o777
        checks.append(Check("Password file", mode == 0o600, f"{state.secrets_path} mode "
                            f"{mode:o}", None if mode == 0o600 else
                            f"chmod 600 {state.secrets_path}"))
    return checks
