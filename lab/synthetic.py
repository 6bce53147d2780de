"""Synthetic run directories in the real formats, for tests and benchmarks of `lab report`.

``make_run(path, requests=...)`` writes what `lab run` writes (docs/formats.md): a manifest/1
``manifest.json``, a requests/1 ``requests.parquet`` and a connections/1 ``connections.jsonl``.
The numbers are made up but shaped like the lab's real runs, so every part of a report has
something to show:

* two scenarios, one after the other: ``serverless-burst`` (phase ``serverless``: open-loop
  invocations with spikes, a new connection each) and ``persistent-server`` (phase
  ``persistent``: app-side pools, so ``connect_ms`` is a pool checkout);
* the four endpoints in run order, one segment each per scenario, with spike windows;
* the errors a micro tier produces: ``too_many_clients`` on direct during spikes (Postgres
  backends pinned at max_connections), ``pool_timeout`` on the session pooler (clients queued
  behind pool_size), a few ``prepared_statement`` errors on transaction mode, and ``network``
  errors while the session pooler is paused;
* connection samples every 0.5 s for Postgres and the three PgBouncers, with a gap (failed
  samples) where the session pooler was paused, and optionally a torn last line.

Seeded, so the same arguments give the same files. Nothing here is a measurement: the manifest's
``command`` says it is synthetic, and ``components`` carry no versions of a real stack.

    python -m lab.synthetic /tmp/run --requests 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lab import samples

ENDPOINTS = ("direct", "session", "transaction", "dedicated")
SCENARIOS = (("serverless-burst", "serverless", "invocation"),
             ("persistent-server", "persistent", "request"))
MAX_CONNECTIONS = 60
POOL_SIZE = 15
MAX_CLIENT_CONN = 200
RESERVED = 3  # superuser_reserved_connections: direct clients get max_connections - 3
BASELINE_BACKENDS = 3  # platform services idling on Postgres
SAMPLE_INTERVAL = 0.5
START = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC).timestamp()
SPIKE_OFFSET, SPIKE_EVERY, SPIKE_LENGTH = 5.0, 20.0, 5.0
GAP = (30.0, 36.0)  # seconds into persistent-server/session when the session pooler is paused

SCHEMA = samples.SCHEMA
_DICT = SCHEMA.field("scenario").type

# error class -> (sqlstate, message) as the lab's clients record them
ERRORS = {
    "too_many_clients": ("53300", "FATAL: sorry, too many clients already"),
    "pool_timeout": ("08P01", "ERROR: query_wait_timeout"),
    "prepared_statement": ("26000", 'prepared statement "_pg3_0" does not exist'),
    "network": (None, 'connection failed: connection to server at "127.0.0.3", port 5432 '
                      "failed: Connection refused"),
}


@dataclass(frozen=True)
class Segment:
    scenario: str
    phase: str
    name: str
    endpoint: str
    start: float
    end: float
    spikes: tuple[tuple[float, float], ...]


def plan(duration_s: float, cooldown_s: float, endpoints: tuple[str, ...] = ENDPOINTS,
         scenarios: tuple[str, ...] | None = None) -> list[Segment]:
    """Every (scenario, endpoint) segment in run order, with absolute times."""
    segments = []
    t = START
    for scenario, phase, name in SCENARIOS:
        if scenarios is not None and scenario not in scenarios:
            continue
        for endpoint in endpoints:
            spikes: tuple[tuple[float, float], ...] = ()
            if phase == "serverless":
                starts = np.arange(SPIKE_OFFSET, duration_s, SPIKE_EVERY)
                spikes = tuple((t + a, t + min(a + SPIKE_LENGTH, duration_s)) for a in starts)
            segments.append(Segment(scenario, phase, name, endpoint, t, t + duration_s, spikes))
            t += duration_s + cooldown_s
    return segments


def make_run(path: Path | str, requests: int = 20_000, *, duration_s: float = 60.0,
             cooldown_s: float = 5.0, seed: int = 7, torn_line: bool = False,
             run_id: str | None = None, endpoints: tuple[str, ...] = ENDPOINTS,
             scenarios: tuple[str, ...] | None = None) -> Path:
    """Write a synthetic run directory at ``path`` (created) and return it: ``requests`` rows
    spread evenly over every (scenario, endpoint) segment."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    segments = plan(duration_s, cooldown_s, tuple(endpoints), scenarios)
    counts = np.full(len(segments), requests // len(segments))
    counts[: requests % len(segments)] += 1
    tables = [_segment_rows(seg, int(n), rng) for seg, n in zip(segments, counts, strict=True)]
    table = pa.concat_tables(tables).unify_dictionaries().combine_chunks()
    order = np.argsort(table.column("start").to_numpy(), kind="stable")
    table = table.take(pa.array(order))
    samples.write_table(table, path / samples.FILE)
    _write_connections(path / "connections.jsonl", segments, rng, torn_line)
    manifest = _manifest(run_id or path.name, segments, requests, duration_s, cooldown_s, seed)
    manifest["endpoints"] = {k: v for k, v in manifest["endpoints"].items() if k in endpoints}
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return path


# -- requests ----------------------------------------------------------------------------------


def _arrivals(seg: Segment, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` intended starts over the segment (spikes 20x denser) and whether each is in one."""
    length = seg.end - seg.start
    if not seg.spikes:
        return np.sort(rng.uniform(0, length, n)) + seg.start, np.zeros(n, dtype=bool)
    spike_time = sum(b - a for a, b in seg.spikes)
    weight = 20.0 * spike_time / (20.0 * spike_time + (length - spike_time))
    in_spike = rng.random(n) < weight
    t = np.empty(n)
    # in a spike: pick a spike window, then a point inside it
    k = int(in_spike.sum())
    windows = np.array(seg.spikes)
    sizes = windows[:, 1] - windows[:, 0]
    which = rng.choice(len(windows), size=k, p=sizes / sizes.sum())
    t[in_spike] = windows[which, 0] + rng.random(k) * sizes[which]
    # outside: rejection-free by mapping uniform points onto the gaps between spikes
    gaps = [(seg.start, windows[0, 0])] + [(windows[i, 1], windows[i + 1, 0])
                                           for i in range(len(windows) - 1)]
    gaps.append((windows[-1, 1], seg.end))
    gaps_arr = np.array([g for g in gaps if g[1] > g[0]])
    gsize = gaps_arr[:, 1] - gaps_arr[:, 0]
    which = rng.choice(len(gaps_arr), size=n - k, p=gsize / gsize.sum())
    t[~in_spike] = gaps_arr[which, 0] + rng.random(n - k) * gsize[which]
    order = np.argsort(t, kind="stable")
    return t[order], in_spike[order]


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(n))


def _segment_rows(seg: Segment, n: int, rng: np.random.Generator) -> pa.Table:
    intended, in_spike = _arrivals(seg, n, rng)
    rel = intended - seg.start
    error = np.full(n, "", dtype=object)
    if seg.phase == "serverless":
        connect_median = {"direct": 4.0, "session": 1.6, "transaction": 1.4,
                          "dedicated": 0.9}[seg.endpoint]
        connect = _lognormal(rng, connect_median, 0.35, n)
        query = _lognormal(rng, 0.45, 0.3, n)  # three short queries
        hold = 200.0 + rng.random(n) * 2
        # queueing behind busy slots during spikes: the schedule is open loop
        queue = np.where(in_spike, rng.exponential({"direct": 60.0, "session": 400.0,
                                                    "transaction": 8.0,
                                                    "dedicated": 4.0}[seg.endpoint], n), 0.0)
        if seg.endpoint == "direct":
            error[in_spike & (rng.random(n) < 0.35)] = "too_many_clients"
        elif seg.endpoint == "session":
            # session mode pins a server connection per client: clients queue behind pool_size
            connect = connect + np.where(in_spike, rng.exponential(300.0, n), 0.0)
            error[in_spike & (rng.random(n) < 0.08)] = "pool_timeout"
    else:
        connect = _lognormal(rng, 0.02, 0.5, n)  # a pool checkout
        query = _lognormal(rng, {"direct": 0.30, "session": 0.42, "transaction": 0.45,
                                 "dedicated": 0.36}[seg.endpoint], 0.25, n)
        hold = np.zeros(n)
        queue = rng.exponential(0.05, n)
        if seg.endpoint == "transaction":
            error[rng.random(n) < 0.004] = "prepared_statement"
        if seg.endpoint == "session":
            paused = (rel >= GAP[0]) & (rel < GAP[1])
            error[paused] = "network"
            connect = np.where(paused, 10_000.0 * rng.random(n), connect)  # connect timeout
    failed = error != ""
    query = np.where(failed, np.nan, query)
    # a request failing before it got a connection still spent its connect time trying
    service = np.nan_to_num(connect) + np.nan_to_num(query) + np.where(failed, 0.0, hold)
    start = intended + queue / 1000.0
    total = (start - intended) * 1000.0 + service
    classes = list(ERRORS)
    code = np.full(n, -1, dtype=np.int32)
    for i, name in enumerate(classes):
        code[error == name] = i
    users = rng.integers(0, 150 if seg.phase == "serverless" else 4, n).astype(np.int32)
    return pa.Table.from_arrays(
        [_const(seg.scenario, n), _const(seg.endpoint, n), _const(seg.phase, n),
         _const(seg.name, n), pa.array(np.zeros(n, dtype=np.int16)), pa.array(users),
         pa.array(intended), pa.array(start), pa.array(connect), pa.array(query),
         pa.array(service), pa.array(total), pa.array(~failed),
         _coded(code, classes), _coded(code, [ERRORS[c][0] for c in classes]),
         _coded(code, [ERRORS[c][1] for c in classes])],
        schema=SCHEMA)


def _const(value: str, n: int) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)),
                                          pa.array([value]))


def _coded(code: np.ndarray, values: list[str | None]) -> pa.DictionaryArray:
    """Dictionary column: ``values[code]``, null where code is -1 or the value is None."""
    present = [v for v in values if v is not None]
    remap = np.array([present.index(v) if v is not None else -1 for v in values] + [-1],
                     dtype=np.int32)
    indices = remap[code]  # code -1 picks the trailing -1
    return pa.DictionaryArray.from_arrays(pa.array(indices, mask=indices < 0),
                                          pa.array(present, type=pa.string()))


# -- connections -------------------------------------------------------------------------------


def _write_connections(path: Path, segments: list[Segment], rng: np.random.Generator,
                       torn_line: bool) -> None:
    end = segments[-1].end + 2.0
    times = np.arange(segments[0].start - 2.0, end, SAMPLE_INTERVAL)
    stats = {name: 0 for name in ("dedicated", "session", "transaction")}
    previous: dict[str, dict[str, int] | None] = {name: None for name in stats}
    with open(path, "w") as fh:
        for t in times:
            seg = next((s for s in segments if s.start <= t < s.end), None)
            in_spike = bool(seg and any(a <= t < b for a, b in seg.spikes))
            clients = 0
            if seg is not None:
                if seg.phase == "serverless":
                    clients = int(rng.poisson(140 if in_spike else 2))
                else:
                    clients = 4 * 10  # four app servers with pools of ten
            pooled = {name: 0 for name in stats}
            waiting = {name: 0 for name in stats}
            direct = 0
            if seg is not None:
                if seg.endpoint == "direct":
                    direct = min(clients, MAX_CONNECTIONS - RESERVED - BASELINE_BACKENDS)
                else:
                    cap = POOL_SIZE
                    if seg.endpoint == "session" or seg.phase == "persistent":
                        active = min(clients, cap)
                    else:  # transaction mode: a server connection only while a query runs
                        active = min(int(np.ceil(clients * 0.08)) + 1, cap)
                    pooled[seg.endpoint] = active
                    waiting[seg.endpoint] = max(0, clients - cap) \
                        if seg.endpoint == "session" else 0
            total = BASELINE_BACKENDS + direct + sum(pooled.values())
            by_origin = {"local": BASELINE_BACKENDS, "direct": direct,
                         "shared": pooled["session"] + pooled["transaction"],
                         "dedicated": pooled["dedicated"]}
            record: dict[str, Any] = {
                "v": 1, "t": round(float(t), 3), "target": "postgres", "kind": "postgres",
                "ok": True, "total": int(total),
                "by_origin": {k: int(v) for k, v in by_origin.items() if v},
                "groups": [{"role": "postgres", "app": "pooler-lab", "state": "active",
                            "origin": k, "n": int(v)} for k, v in by_origin.items() if v],
                "ms": round(float(rng.uniform(0.8, 2.5)), 3),
                "limits": {"max_connections": MAX_CONNECTIONS}}
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            for name in ("dedicated", "session", "transaction"):
                paused = (seg is not None and seg.endpoint == "session" and name == "session"
                          and seg.phase == "persistent"
                          and GAP[0] <= t - seg.start < GAP[1])
                record = {"v": 1, "t": round(float(t) + 0.002, 3), "target": name,
                          "kind": "pgbouncer"}
                if paused:
                    record.update(ok=False, error="connection timeout expired")
                    previous[name] = None
                else:
                    is_seg = seg is not None and seg.endpoint == name
                    cl = clients if is_seg else 0
                    stats[name] += int(cl * SAMPLE_INTERVAL * 40)
                    current = {"total_xact_count": stats[name],
                               "total_query_count": stats[name] * 3}
                    delta = None if previous[name] is None else {
                        k: v - previous[name][k] for k, v in current.items()}
                    previous[name] = current
                    record.update(ok=True, pools={
                        "cl_active": cl - waiting[name], "cl_waiting": waiting[name],
                        "sv_active": pooled[name], "sv_idle": 0 if is_seg else 2, "sv_used": 0,
                        "sv_tested": 0, "sv_login": 0,
                        "maxwait_s": 1.5 if waiting[name] else 0.0},
                        stats=current, stats_delta=delta)
                record["ms"] = round(float(rng.uniform(0.5, 2.0)), 3)
                record["limits"] = {"pool_size": POOL_SIZE, "max_client_conn": MAX_CLIENT_CONN}
                fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        if torn_line:
            whole = json.dumps({"v": 1, "t": round(end, 3), "target": "postgres",
                                "kind": "postgres", "ok": True, "total": 3})
            fh.write(whole[: len(whole) // 2])  # a killed sampler's last line


# -- manifest ----------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def _manifest(run_id: str, segments: list[Segment], requests: int, duration_s: float,
              cooldown_s: float, seed: int) -> dict[str, Any]:
    command = ["python", "-m", "lab.synthetic", "RUN_DIR", "--requests", str(requests),
               "--duration", f"{duration_s:g}", "--cooldown", f"{cooldown_s:g}",
               "--seed", str(seed)]
    endpoints = {
        "direct": ("postgresql://postgres:[YOUR-PASSWORD]@127.0.0.2:5432/postgres", "none",
                   "none", "postgres"),
        "session": ("postgresql://postgres.lab:[YOUR-PASSWORD]@127.0.0.3:5432/postgres",
                    "session", "shared", "postgres.lab"),
        "transaction": ("postgresql://postgres.lab:[YOUR-PASSWORD]@127.0.0.3:6543/postgres",
                        "transaction", "shared", "postgres.lab"),
        "dedicated": ("postgresql://postgres:[YOUR-PASSWORD]@127.0.0.2:6543/postgres",
                      "transaction", "dedicated", "postgres"),
    }
    return {
        "format": "manifest/1",
        "run_id": run_id,
        "started_at": _iso(segments[0].start),
        "ended_at": _iso(segments[-1].end),
        "duration_s": round(segments[-1].end - segments[0].start, 3),
        "interrupted": False,
        "command": command,
        "reproduce": " ".join(command),
        "lab_version": "synthetic",
        "git": {"commit": None, "dirty": None},
        "scenario": {"name": "synthetic", "file": None, "seed": seed,
                     "params": {"scenarios": list(dict.fromkeys(s.scenario for s in segments)),
                                "spike_offset": SPIKE_OFFSET, "spike_every": SPIKE_EVERY,
                                "spike_length": SPIKE_LENGTH}},
        "load": {"users": 150, "spawn_rate": 150.0, "workers": 1, "duration_s": duration_s,
                 "cooldown_s": cooldown_s, "ui": False},
        "lab": {"name": "default", "tier": "micro", "max_connections": MAX_CONNECTIONS,
                "max_client_conn": MAX_CLIENT_CONN, "pool_size": POOL_SIZE, "tenant": "lab",
                "pool_sharing": "per-mode", "max_prepared_statements": 0,
                "query_wait_timeout": 120, "layout": "addresses", "db_address": "127.0.0.2",
                "pooler_address": "127.0.0.3"},
        "endpoints": {name: {"uri": uri, "bench_uri": uri, "pool_mode": mode, "pooler": pooler,
                             "user": user}
                      for name, (uri, mode, pooler, user) in endpoints.items()},
        "segments": [{"endpoint": s.endpoint, "started_at": _iso(s.start),
                      "ended_at": _iso(s.end), "interrupted": False,
                      "spikes": [[round(a, 3), round(b, 3)] for a, b in s.spikes],
                      "locust_exit": 0} for s in segments],
        "components": {"postgres": "synthetic", "pgbouncer": "synthetic", "image": None,
                       "python": None, "psycopg": None, "locust": None,
                       "platform": "synthetic"},
        "host": {"cores": None, "memory_bytes": None, "platform": None, "kernel": None},
        "files": {"requests": "requests.parquet", "connections": "connections.jsonl",
                  "locust": "locust/"},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per segment")
    parser.add_argument("--cooldown", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    print(make_run(args.run_dir, args.requests, duration_s=args.duration,
                   cooldown_s=args.cooldown, seed=args.seed))


if __name__ == "__main__":
    main()
