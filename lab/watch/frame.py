"""One frame of the live view (format ``watch/1``, docs/formats.md): what every endpoint holds
right now, from the connection sampler's newest records, and, while a run drives the lab, what
its load is doing (the run's live counters). Pure: no I/O, so the run, `lab watch`, `lab status
--watch` and the replay of a finished run all build and read the same thing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FORMAT = "watch/1"
ENDPOINTS = ("direct", "session", "transaction", "dedicated")
POOLERS = ("session", "transaction", "dedicated")
# A target whose newest sample is older than this (beyond its own probe time) is not answering.
STALE_S = 1.2
SERVER_COLUMNS = ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")


def pooler_counts(pools: Mapping[str, Any]) -> dict[str, Any]:
    """Clients (active + waiting), waiting clients and server connections of a SHOW POOLS
    summary (``lab.pg.pool_summary``, as the sampler records it)."""
    return {"clients": int(pools.get("cl_active", 0)) + int(pools.get("cl_waiting", 0)),
            "waiting": int(pools.get("cl_waiting", 0)),
            "servers": sum(int(pools.get(c, 0)) for c in SERVER_COLUMNS),
            "maxwait_s": round(float(pools.get("maxwait_s", 0.0)), 3)}


# how lab.sampler's records of a target that never answered begin (a frozen host): its
# NO_ANSWER and NO_CONNECTION, not imported (lab.sampler loads psycopg)
TIMED_OUT = ("no answer within", "no connection within")


def reachable(record: Mapping[str, Any] | None, now: float) -> tuple[bool, str | None]:
    """Whether a target answers, from its newest sample: (True, None), or (False, why): it
    refused the sampler, or its newest sample is stale (the sampler samples every 0.5 s and
    its probe waits up to 2 s for a dead host: staleness says it sooner than the error)."""
    if record is None:
        return False, "not sampled yet"
    if not record.get("ok"):
        error = record.get("error") or "failed"
        if error.startswith(TIMED_OUT):  # lab.sampler gave up waiting: silence, not a refusal
            return False, f"not answering ({error})"[:160]
        return False, f"refuses the sampler ({error})"[:160]
    age = now - float(record.get("t", now))
    if age > STALE_S + float(record.get("ms", 0)) / 1000.0:
        return False, f"not answering for {age:.1f} s"
    return True, None


def connections(latest: Mapping[str, Mapping[str, Any]], now: float,
                limits: Mapping[str, int], names: tuple[str, ...] = ENDPOINTS) -> dict[str, Any]:
    """The connection part of a frame from the sampler's newest record per target.

    ``limits``: the lab's max_connections, pool_size and max_client_conn (the lines drawn);
    ``names``: the endpoints shown (none for a run against --target: Postgres alone)."""
    pg = latest.get("postgres")
    pg_ok, pg_error = reachable(pg, now)
    by_origin = dict(pg.get("by_origin") or {}) if pg_ok and pg else {}
    postgres = {"ok": pg_ok, "error": pg_error,
                "backends": pg.get("total") if pg_ok and pg else None,
                "by_origin": by_origin,
                "max_connections": limits.get("max_connections")}
    eps: dict[str, Any] = {}
    for name in names:
        if name == "direct":
            n = by_origin.get("direct", 0) if pg_ok else None
            eps[name] = {"ok": pg_ok, "error": pg_error, "clients": n, "waiting": 0,
                         "servers": n, "limit": limits.get("max_connections"),
                         "limit_name": "max_connections"}
            continue
        record = latest.get(name)
        ok, error = reachable(record, now)
        entry: dict[str, Any] = {"ok": ok, "error": error, "clients": None, "waiting": None,
                                 "servers": None,
                                 "pool_size": limits.get("pool_size"),
                                 "max_client_conn": limits.get("max_client_conn")}
        if record is not None and record.get("limits"):  # what the sampler was told
            entry["pool_size"] = record["limits"].get("pool_size", entry["pool_size"])
            entry["max_client_conn"] = record["limits"].get("max_client_conn",
                                                             entry["max_client_conn"])
        if ok and record is not None:
            entry.update(pooler_counts(record.get("pools") or {}))
        eps[name] = entry
    return {"postgres": postgres, "endpoints": eps}


def run_part(live: Any, run_id: str) -> dict[str, Any]:
    """The load part of a frame from the run's ``lab.run.live.Live``."""
    return {"id": run_id, "scenario": live.scenario, "endpoint": live.endpoint,
            "repeat": live.repeat or None,
            "elapsed_s": round(min(live.elapsed_s, live.duration_s), 1),
            "duration_s": live.duration_s,
            "rps": round(live.rps, 1), "p50_ms": _ms(live.p50_ms), "p95_ms": _ms(live.p95_ms),
            "p99_ms": _ms(live.p99_ms), "requests": live.requests, "errors": live.errors,
            "errors_by_class": dict(live.errors_by_class), "not_started": live.not_started,
            "phase": live.phase, "unreachable": live.unreachable, "fault": live.fault,
            "noisy": live.noisy, "done": live.done}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def make(lab: str, now: float, conns: dict[str, Any], run: dict[str, Any] | None,
         settings: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A whole frame. ``source``: "run" (published by a run), "lab" (`lab watch`'s own
    sampler while nothing runs) or "replay"."""
    return {"format": FORMAT, "t": round(now, 3), "lab": lab, "source": source,
            "settings": dict(settings), **conns, "run": run}


def settings_of(cfg: Any) -> dict[str, Any]:
    """What the page shows of a lab's settings (never a secret: LabConfig holds none)."""
    return {"tier": cfg.tier, "max_connections": cfg.max_connections,
            "pool_size": cfg.pool_size, "max_client_conn": cfg.max_client_conn,
            "pool_sharing": getattr(cfg, "pool_sharing", None),
            "network": getattr(cfg, "network", None)}


def limits_of(settings: Mapping[str, Any]) -> dict[str, int]:
    return {k: settings[k] for k in ("max_connections", "pool_size", "max_client_conn")
            if settings.get(k) is not None}


def summary_lines(frame: Mapping[str, Any]) -> list[str]:
    """The frame as text, one line per endpoint (`lab status --watch`)."""
    s = frame.get("settings") or {}
    pg = frame.get("postgres") or {}
    head = (f"lab {frame.get('lab')} ({s.get('tier')}): Postgres backends "
            f"{_n(pg.get('backends'))}/{_n(pg.get('max_connections'))}")
    if pg.get("ok") and pg.get("by_origin"):
        head += "  (" + ", ".join(f"{k} {v}" for k, v in sorted(pg["by_origin"].items())) + ")"
    elif not pg.get("ok"):
        head += f"  !! UNREACHABLE: {pg.get('error')}"
    lines = [head, f"{'endpoint':<12} {'clients':>8} {'waiting':>8} {'servers':>8}  limits"]
    for name, ep in (frame.get("endpoints") or {}).items():
        if name == "direct":
            limits = f"max_connections {_n(ep.get('limit'))}"
        else:
            limits = (f"pool_size {_n(ep.get('pool_size'))}, "
                      f"max_client_conn {_n(ep.get('max_client_conn'))}")
        row = (f"{name:<12} {_n(ep.get('clients')):>8} {_n(ep.get('waiting')):>8} "
               f"{_n(ep.get('servers')):>8}  {limits}")
        if not ep.get("ok"):
            row += f"  !! UNREACHABLE: {ep.get('error')}"
        lines.append(row)
    run = frame.get("run")
    if run:
        p = " / ".join("-" if run.get(k) is None else f"{run[k]:.1f}"
                       for k in ("p50_ms", "p95_ms", "p99_ms"))
        state = "done" if run.get("done") else f"{run.get('elapsed_s', 0):.0f}/" \
                                                f"{run.get('duration_s', 0):.0f}s"
        line = (f"run {run.get('scenario')} -> {run.get('endpoint')} [{state}"
                f"{', ' + run['phase'] if run.get('phase') else ''}]: {run.get('rps', 0):.1f} "
                f"req/s, p50/p95/p99 {p} ms, errors {run.get('errors', 0)}, "
                f"not started {run.get('not_started', 0)}")
        lines.append(line)
        if run.get("errors_by_class"):
            lines.append("  errors: " + ", ".join(
                f"{k} {v}" for k, v in sorted(run["errors_by_class"].items())))
        for key, label in (("fault", "FAULT"), ("unreachable", "UNREACHABLE")):
            if run.get(key):
                lines.append(f"  !! {label}: {run[key]}")
    return lines


def _n(value: Any) -> str:
    return "-" if value is None else str(value)
