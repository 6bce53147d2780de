"""Measured, not assumed: the round trips of a lab's paths, and what one connection costs.

``round_trips`` pings every endpoint with ``SELECT 1`` on one open connection, and the shared
pooler's admin console with ``SHOW VERSION`` (answered by the pooler itself, so it is the
client -> pooler host round trip alone), and keeps two figures of each: the median (what a
query paid) and the minimum (the floor: the distance alone, since a busy machine only ever adds
to a round trip; on a 2-core machine the median of 15 pings moved by 30% between runs while the
floor stayed within 2 ms). The pooler -> db round trip is the transaction pooler's floor less
the console's: a difference of two medians carries both sides' noise. A run records them in its
manifest next to the configured values (docs/formats.md, ``network``).

``connect_cost`` is a serverless invocation reduced to its price: connect, ``SELECT 1``,
close, with TLS (``sslmode=verify-full``, as `lab connect` prints) and without
(``sslmode=disable``), interleaved on the same endpoint, so the difference is TLS's.

Plain psycopg in the orchestrator (no gevent); a failure is recorded, never raised.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping
from typing import Any

from lab.classify import classify
from lab.config import LabConfig
from lab.connect import EndpointInfo
from lab.render import ADMIN_USER

APP = "pooler-lab-probe"
PATHS = ("client-db", "client-pooler", "pooler-db")
TLS_MODES = {"tls": "verify-full", "plain": "disable"}
# Spend about this long on connect_cost, however far the hosts are.
CONNECT_BUDGET_S = 20.0


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 3)


def _ping(conn, query: str, pings: int) -> tuple[float, float]:
    """The median and the minimum of ``pings`` round trips of ``query``, in ms."""
    with conn.cursor() as cur:
        for _ in range(2):  # warm up: the first statements pay for caches
            cur.execute(query)
            cur.fetchall()
        times = []
        for _ in range(pings):
            started = time.perf_counter()
            cur.execute(query)
            cur.fetchall()
            times.append(time.perf_counter() - started)
    return _ms(statistics.median(times)), _ms(min(times))


def round_trips(cfg: LabConfig, eps: Mapping[str, EndpointInfo], password: str,
                admin_password: str, pings: int = 15) -> dict[str, Any]:
    """Configured and measured round trips of each path and each endpoint, in ms."""
    from lab import pg

    result: dict[str, Any] = {
        "preset": cfg.network,
        "relay": cfg.relay,
        "configured_ms": {path: cfg.rtt_ms(path) for path in PATHS},
        "measured_ms": {},
        "min_ms": {},
        "endpoints": {},
        "how": f"median (measured_ms) and minimum (min_ms) of {pings} SELECT 1 on an open "
               "connection (endpoints, client-db through direct); client-pooler: the pooler's "
               "admin console (SHOW VERSION); pooler-db: transaction less client-pooler, "
               "minimum less minimum",
    }
    for name, ep in eps.items():
        entry: dict[str, Any] = {"configured_ms": cfg.endpoint_rtt_ms(name)}
        try:
            # never prepared: a transaction pooler would refuse the driver's statements
            with pg.connect(ep, password, application_name=APP, timeout=10,
                            prepare_threshold=None) as conn:
                entry["measured_ms"], entry["min_ms"] = _ping(conn, "SELECT 1", pings)
        except Exception as exc:  # a down endpoint is a fact of the run, not a crash
            entry["error"] = classify(exc)[2]
        result["endpoints"][name] = entry
    console: tuple[float, float] | None = None
    if "transaction" in eps:
        host, port, params = eps["transaction"].address(bench=True)
        try:
            with pg.admin_connect(host, port, ADMIN_USER, admin_password, timeout=10,
                                  **params) as conn:
                console = _ping(conn, "SHOW VERSION", pings)
        except Exception as exc:
            result["console_error"] = classify(exc)[2]
    direct = result["endpoints"].get("direct", {})
    transaction = result["endpoints"].get("transaction", {}).get("min_ms")
    floor = console[1] if console else None
    pooler_db = (round(max(0.0, transaction - floor), 3)
                 if transaction is not None and floor is not None else None)
    result["measured_ms"] = {"client-db": direct.get("measured_ms"),
                             "client-pooler": console[0] if console else None,
                             "pooler-db": pooler_db}
    result["min_ms"] = {"client-db": direct.get("min_ms"), "client-pooler": floor,
                        "pooler-db": pooler_db}
    return result


def connect_cost(eps: Mapping[str, EndpointInfo], password: str,
                 endpoints: Iterable[str], invocations: int | None = None,
                 expected_rtt_ms: float = 0.0) -> dict[str, Any]:
    """Connect + SELECT 1 + close, with and without TLS, interleaved, per endpoint."""
    from lab import pg

    names = [e for e in endpoints if e in eps]
    if invocations is None:
        # A connection is about six round trips (TCP, SSLRequest, TLS, SCRAM x2, query).
        guess_s = max(0.005, 6 * expected_rtt_ms / 1000 + 0.005)
        invocations = int(max(5, min(30, CONNECT_BUDGET_S / (guess_s * 2 * max(1, len(names))))))
    times: dict[str, dict[str, dict[str, list[float]]]] = {
        n: {mode: {"connect": [], "invocation": []} for mode in TLS_MODES} for n in names}
    errors: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in names}
    order = list(TLS_MODES)
    for i in range(invocations):
        for name in names:
            # alternate which goes first, so neither always follows the other
            for mode in (order if i % 2 == 0 else order[::-1]):
                started = time.perf_counter()
                try:
                    conn = pg.connect(eps[name], password, application_name=APP, timeout=10,
                                      sslmode=TLS_MODES[mode])
                    connected = time.perf_counter()
                    try:
                        conn.execute("SELECT 1").fetchall()
                    finally:
                        conn.close()
                except Exception as exc:
                    cls, _, message = classify(exc)
                    seen = errors[name].setdefault(mode, {"count": 0, "class": cls,
                                                          "message": message})
                    seen["count"] += 1
                    continue
                ended = time.perf_counter()
                times[name][mode]["connect"].append(_ms(connected - started))
                times[name][mode]["invocation"].append(_ms(ended - started))
    result: dict[str, Any] = {
        "invocations": invocations,
        "how": "connect, SELECT 1, close; sslmode=verify-full (tls) and sslmode=disable "
               "(plain) interleaved on the same endpoint",
        "endpoints": {},
    }
    for name in names:
        per_mode: dict[str, Any] = {}
        for mode in TLS_MODES:
            t = times[name][mode]
            per_mode[mode] = {
                "sslmode": TLS_MODES[mode],
                "n": len(t["connect"]),
                "connect_p50_ms": percentile(t["connect"], 0.5),
                "connect_p95_ms": percentile(t["connect"], 0.95),
                "invocation_p50_ms": percentile(t["invocation"], 0.5),
                "invocation_p95_ms": percentile(t["invocation"], 0.95),
            }
            if mode in errors[name]:
                per_mode[mode]["errors"] = errors[name][mode]
        tls, plain = per_mode["tls"]["connect_p50_ms"], per_mode["plain"]["connect_p50_ms"]
        per_mode["tls_extra_p50_ms"] = (round(tls - plain, 3)
                                        if tls is not None and plain is not None else None)
        result["endpoints"][name] = per_mode
    return result
