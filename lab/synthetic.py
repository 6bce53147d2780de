"""Synthetic run directories in the real formats, for tests and benchmarks of `lab report`.

``make_run(path, requests=...)`` writes what `lab run` / `lab bench` write (docs/formats.md): a
manifest/1 ``manifest.json``, a requests/1.1 ``requests.parquet`` and a connections/1
``connections.jsonl``. The numbers are made up but shaped like the lab's real runs, so every
part of a report has something to show:

* two scenarios, one after the other: ``serverless-burst`` (phase ``serverless``: open-loop
  invocations with spikes, a new connection each) and ``persistent-server`` (phase
  ``persistent``: app-side pools, so ``connect_ms`` is a pool checkout);
* the four endpoints in run order, one segment each per scenario, with spike windows; with
  ``repeats=N`` every segment N times, interleaved as `lab run --repeat N` does (for each
  repeat: for each scenario: for each endpoint), the same arrival schedule each time (same
  seed) and fresh noise;
* what a micro tier does: ``too_many_clients`` on direct during spikes (Postgres backends
  pinned at max_connections); on the session pooler in spikes every slot waits on the full
  pool, so arrivals are left ``not_started`` and the wait shows in the first query (PgBouncer
  accepts the login); persistent servers on the session pooler queue behind pool_size (25
  clients waiting, checkout time, a few ``pool_timeout``); a few ``prepared_statement`` errors
  on transaction mode; the session pooler paused for 6 s in persistent-server (an outage:
  failed samples and ``connection_refused``, plus ``pool_timeout`` of requests that were
  queued in the app's pool when it went away);
* connection samples every 0.5 s for Postgres and the three PgBouncers, failed samples where a
  target is down, the dedicated pooler's auth_query backends as ``by_origin.dedicated_auth``,
  and optionally a torn last line;
* one schedule file per segment (``schedule/<segment>-0.json``, its ``t0``: when the load
  started) and a manifest with ``legs``, per-segment ``repeat`` and ``noise``, ``load.repeat``
  and ``host.noise``, keyed the way `lab run` (one scenario) and `lab bench` (two) key them.

Options for tests: ``kill=("persistent-server", "transaction", 16.0)`` kills that endpoint's
pooler (or Postgres, for ``direct``) 16 s into the segment (of repeat 1; a fourth element
names another repeat) until the segment ends; ``noise_seed`` changes only the measurement
noise (same schedule); ``noisy=True`` records a busy machine in the manifest;
``interrupted=True`` marks the run interrupted; ``faults=False`` leaves out the errors and the
pause (limits still show: queueing, max_connections); ``startup_s`` puts Locust's start-up at
the head of every segment (no arrivals yet); ``legacy=True`` writes what older versions
wrote (requests/1 without ``repeat``, one ``network`` class, arrivals that never started only
as the segments' ``unserved`` count, the auth_query backends inside ``by_origin.dedicated``).

Seeded, so the same arguments give the same files. Nothing here is a measurement: the manifest's
``command`` says it is synthetic, and ``components`` carry no versions of a real stack.

    python -m lab.synthetic /tmp/run --requests 1000000 [--repeats 3]
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
import pyarrow.parquet as pq

from lab import samples

ENDPOINTS = ("direct", "session", "transaction", "dedicated")
SCENARIOS = (("serverless-burst", "serverless", "invocation"),
             ("persistent-server", "persistent", "request"))
MAX_CONNECTIONS = 60
POOL_SIZE = 15
MAX_CLIENT_CONN = 200
RESERVED = 3  # superuser_reserved_connections: direct clients get max_connections - 3
BASELINE_BACKENDS = 3  # platform services idling on Postgres
AUTH_BACKENDS = 2  # the dedicated pooler's auth_query logins while it serves
SAMPLE_INTERVAL = 0.5
START = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC).timestamp()
SPIKE_OFFSET, SPIKE_EVERY, SPIKE_LENGTH = 5.0, 20.0, 5.0
GAP = (30.0, 36.0)  # seconds into persistent-server/session when the session pooler is paused
SESSION_NOT_STARTED = 0.4  # share of serverless spike arrivals the session pooler never starts
PARAMS = {
    "serverless-burst": {"base_rate": 5.0, "spike_rate": 120.0, "spike_every": SPIKE_EVERY,
                         "spike_length": SPIKE_LENGTH, "spike_offset": SPIKE_OFFSET,
                         "arrivals": "poisson", "queries": 3, "sleep_ms": 0.0,
                         "hold_ms": 200.0},
    "persistent-server": {"rate_per_server": 50.0, "arrivals": "poisson", "pool_size": 10,
                          "checkout_timeout": 10.0, "max_inflight": 100, "queries": 2,
                          "sleep_ms": 0.0, "prepare_threshold": None, "connect_timeout": 10},
}
USERS = {"serverless-burst": 150, "persistent-server": 4}
TARGETS = {"direct": "postgres", "session": "session", "transaction": "transaction",
           "dedicated": "dedicated"}

SCHEMA = samples.SCHEMA
REPEAT_FIELD = pa.field("repeat", pa.int16())
LEGACY_FORMAT = b"requests/1"

# error class -> (sqlstate, message) as the lab's clients record them
ERRORS = {
    "too_many_clients": ("53300", "FATAL: sorry, too many clients already"),
    "pool_timeout": (None, "couldn't get a connection after 10.00 sec"),
    "prepared_statement": ("26000", 'prepared statement "_pg3_0" does not exist'),
    "connection_refused": (None, 'connection failed: connection to server at "127.0.0.3", port '
                                 "5432 failed: Connection refused"),
    "connection_lost": (None, "consuming input failed: server closed the connection "
                              "unexpectedly"),
    "not_started": (None, None),
}
REFUSED_SAMPLE = 'connection to server at "127.0.0.3", port 6543 failed: Connection refused'


@dataclass(frozen=True)
class Segment:
    scenario: str
    phase: str
    name: str
    endpoint: str
    start: float
    end: float
    spikes: tuple[tuple[float, float], ...]
    repeat: int = 1
    index: int = 0  # position within one repeat (the same schedule in every repeat)
    load: float = 0.0  # when the load starts (start + the start-up), Unix s


@dataclass(frozen=True)
class Kill:
    """A target that stops answering ``at_s`` seconds into one segment, until it ends."""

    scenario: str
    endpoint: str
    at_s: float
    repeat: int = 1

    @property
    def target(self) -> str:
        return TARGETS.get(self.endpoint, "postgres")

    def matches(self, seg: Segment) -> bool:
        return (seg.scenario, seg.endpoint, seg.repeat) == (self.scenario, self.endpoint,
                                                             self.repeat)

    def covers(self, seg: Segment, t: float) -> bool:
        return self.matches(seg) and t - seg.start >= self.at_s


def plan(duration_s: float, cooldown_s: float, endpoints: tuple[str, ...] = ENDPOINTS,
         scenarios: tuple[str, ...] | None = None, repeats: int = 1,
         startup_s: float = 0.0) -> list[Segment]:
    """Every (repeat, scenario, endpoint) segment in run order, with absolute times. Each
    segment lasts ``startup_s + duration_s``: its spikes count from the end of the start-up
    (Locust's start, which the manifest's started_at includes)."""
    segments = []
    t = START
    for repeat in range(1, repeats + 1):
        index = 0
        for scenario, phase, name in SCENARIOS:
            if scenarios is not None and scenario not in scenarios:
                continue
            for endpoint in endpoints:
                spikes: tuple[tuple[float, float], ...] = ()
                load = t + startup_s
                if phase == "serverless":
                    starts = np.arange(SPIKE_OFFSET, duration_s, SPIKE_EVERY)
                    spikes = tuple((load + a, load + min(a + SPIKE_LENGTH, duration_s))
                                   for a in starts)
                segments.append(Segment(scenario, phase, name, endpoint, t,
                                        load + duration_s, spikes, repeat, index, load))
                t += startup_s + duration_s + cooldown_s
                index += 1
    return segments


def make_run(path: Path | str, requests: int = 20_000, *, duration_s: float = 60.0,
             cooldown_s: float = 5.0, seed: int = 7, torn_line: bool = False,
             run_id: str | None = None, endpoints: tuple[str, ...] = ENDPOINTS,
             scenarios: tuple[str, ...] | None = None, repeats: int = 1,
             noise_seed: int | None = None, kill: Kill | tuple | None = None,
             noisy: bool = False, interrupted: bool = False, legacy: bool = False,
             startup_s: float = 0.0, faults: bool = True) -> Path:
    """Write a synthetic run directory at ``path`` (created) and return it: ``requests``
    scheduled arrivals spread evenly over every (repeat, scenario, endpoint) segment."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(kill, tuple):
        kill = Kill(*kill)
    if legacy and repeats != 1:
        raise ValueError("legacy runs predate --repeat: repeats must be 1")
    noise_seed = seed if noise_seed is None else noise_seed
    segments = plan(duration_s, cooldown_s, tuple(endpoints), scenarios, repeats, startup_s)
    counts = np.full(len(segments), requests // len(segments))
    counts[: requests % len(segments)] += 1
    tables, unserved = [], []
    for seg, n in zip(segments, counts, strict=True):
        # the schedule is the seed's alone (the same in every repeat); the noise is not
        schedule = np.random.default_rng([seed, seg.index])
        noise = np.random.default_rng([noise_seed, seg.repeat, seg.index, 1])
        table, left = _segment_rows(seg, int(n), schedule, noise, kill, legacy, faults)
        tables.append(table)
        unserved.append(left)
    table = pa.concat_tables(tables).unify_dictionaries().combine_chunks()
    order = np.argsort(table.column("intended_start").to_numpy(), kind="stable")
    table = table.take(pa.array(order))
    samples.write_table(table, path / samples.FILE)
    if legacy:  # samples.write_table stamps the current format: put the old one back
        pq.write_table(table.replace_schema_metadata({b"pooler-lab.format": LEGACY_FORMAT}),
                       path / samples.FILE, compression="zstd")
    rng = np.random.default_rng([noise_seed, 0])
    _write_connections(path / "connections.jsonl", segments, rng, torn_line, kill, legacy,
                       faults)
    _write_schedules(path / "schedule", segments, duration_s, seed, repeats, unserved)
    manifest = _manifest(run_id or path.name, segments, requests, duration_s, cooldown_s,
                         seed, repeats, unserved, noisy, interrupted, legacy, rng,
                         tuple(endpoints))
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return path


# -- requests ----------------------------------------------------------------------------------


def _arrivals(seg: Segment, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` intended starts over the segment's load time (spikes 20x denser) and whether each
    is in a spike."""
    begin = seg.load
    length = seg.end - begin
    if not seg.spikes:
        return np.sort(rng.uniform(0, length, n)) + begin, np.zeros(n, dtype=bool)
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
    gaps = [(begin, windows[0, 0])] + [(windows[i, 1], windows[i + 1, 0])
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


def _segment_rows(seg: Segment, n: int, schedule: np.random.Generator,
                  rng: np.random.Generator, kill: Kill | None, legacy: bool,
                  faults: bool) -> tuple[pa.Table, int]:
    """The rows of one segment, and how many arrivals never started (legacy: no rows)."""
    intended, in_spike = _arrivals(seg, n, schedule)
    load_rel = intended - seg.load
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
            # session mode pins a server connection per client: PgBouncer accepts the login,
            # the first query waits for one of pool_size server connections, and while every
            # slot waits new arrivals are never started
            query = query + np.where(in_spike, rng.exponential(3000.0, n), 0.0)
            error[in_spike & (schedule.random(n) < SESSION_NOT_STARTED)] = "not_started"
    else:
        connect = _lognormal(rng, 0.02, 0.5, n)  # a pool checkout
        query = _lognormal(rng, {"direct": 0.30, "session": 0.42, "transaction": 0.45,
                                 "dedicated": 0.36}[seg.endpoint], 0.25, n)
        hold = np.zeros(n)
        queue = rng.exponential(0.05, n)
        if seg.endpoint == "transaction" and faults:
            error[rng.random(n) < 0.004] = "prepared_statement"
        if seg.endpoint == "session":
            # 40 pooled clients on a pool of 15: checkouts wait, a few time out
            connect = connect + rng.exponential(8.0, n)
        if seg.endpoint == "session" and faults:
            error[rng.random(n) < 0.005] = "pool_timeout"
            paused = (load_rel >= GAP[0]) & (load_rel < GAP[1])
            error[paused] = np.where(rng.random(int(paused.sum())) < 0.8,
                                     "connection_refused", "pool_timeout")
            connect = np.where(paused, 10_000.0 * rng.random(n), connect)  # connect timeout
    if kill is not None and kill.matches(seg):
        down = intended - seg.start >= kill.at_s
        if down.any():
            k = int(down.sum())
            # app-side pools: requests queued in the pool when it went away time out there
            timed_out = rng.random(k) < (0.3 if seg.phase == "persistent" else 0.0)
            error[down] = np.where(timed_out, "pool_timeout", "connection_refused")
            connect = np.where(down, _lognormal(rng, 1.0, 0.3, n), connect)
    not_started = error == "not_started"
    failed = error != ""
    query = np.where(failed, np.nan, query)
    # a request failing before it got a connection still spent its connect time trying
    service = np.nan_to_num(connect) + np.nan_to_num(query) + np.where(failed, 0.0, hold)
    start = intended + queue / 1000.0
    total = (start - intended) * 1000.0 + service
    # arrivals that never started: due time only, every duration NaN
    start = np.where(not_started, np.nan, start)
    for column in (connect, service, total):
        column[not_started] = np.nan
    classes = list(ERRORS)
    code = np.full(n, -1, dtype=np.int32)
    for i, name in enumerate(classes):
        code[error == name] = i
    users = rng.integers(0, 150 if seg.phase == "serverless" else 4, n).astype(np.int32)
    names = [("network" if legacy and c.startswith("connection_") else c) for c in classes]
    columns = {
        "scenario": _const(seg.scenario, n), "endpoint": _const(seg.endpoint, n),
        "phase": _const(seg.phase, n), "name": _const(seg.name, n),
        "worker": pa.array(np.zeros(n, dtype=np.int16)), "user": pa.array(users),
        "intended_start": pa.array(intended), "start": pa.array(start),
        "connect_ms": pa.array(connect), "query_ms": pa.array(query),
        "service_ms": pa.array(service), "total_ms": pa.array(total), "ok": pa.array(~failed),
        "error_class": _coded(code, names), "sqlstate": _coded(code, [ERRORS[c][0]
                                                                      for c in classes]),
        "message": _coded(code, [ERRORS[c][1] for c in classes]),
        "repeat": pa.array(np.full(n, seg.repeat, dtype=np.int16)),
    }
    fields = list(SCHEMA)
    if "repeat" not in SCHEMA.names:
        fields.append(REPEAT_FIELD)
    if legacy:
        fields = [f for f in fields if f.name != "repeat"]
    table = pa.Table.from_arrays([columns[f.name] for f in fields],
                                 schema=pa.schema(fields, metadata=SCHEMA.metadata))
    unserved = 0
    if legacy:  # older runs had no row for an arrival that never started
        unserved = int(not_started.sum())
        table = table.filter(pa.array(~not_started))
    return table, unserved


def _const(value: str, n: int) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)),
                                          pa.array([value]))


def _coded(code: np.ndarray, values: list[str | None]) -> pa.DictionaryArray:
    """Dictionary column: ``values[code]``, null where code is -1 or the value is None."""
    present = list(dict.fromkeys(v for v in values if v is not None))
    remap = np.array([present.index(v) if v is not None else -1 for v in values] + [-1],
                     dtype=np.int32)
    indices = remap[code]  # code -1 picks the trailing -1
    return pa.DictionaryArray.from_arrays(pa.array(indices, mask=indices < 0),
                                          pa.array(present, type=pa.string()))


# -- connections -------------------------------------------------------------------------------


def _write_connections(path: Path, segments: list[Segment], rng: np.random.Generator,
                       torn_line: bool, kill: Kill | None, legacy: bool, faults: bool) -> None:
    end = segments[-1].end + 2.0
    times = np.arange(segments[0].start - 2.0, end, SAMPLE_INTERVAL)
    stats = {name: 0 for name in ("dedicated", "session", "transaction")}
    previous: dict[str, dict[str, int] | None] = {name: None for name in stats}
    with open(path, "w") as fh:
        for t in times:
            seg = next((s for s in segments if s.start <= t < s.end), None)
            in_spike = bool(seg and any(a <= t < b for a, b in seg.spikes))
            down = {"postgres": False, "dedicated": False, "session": False,
                    "transaction": False}
            if faults and seg is not None and seg.endpoint == "session" \
                    and seg.phase == "persistent" and GAP[0] <= t - seg.load < GAP[1]:
                down["session"] = True
            if seg is not None and kill is not None and kill.covers(seg, float(t)):
                down[kill.target] = True
            clients = 0
            if seg is not None:
                if seg.phase == "serverless":
                    clients = int(rng.poisson(140 if in_spike else 2))
                else:
                    clients = 4 * 10  # four app servers with pools of ten
            pooled = {name: 0 for name in stats}
            waiting = {name: 0 for name in stats}
            direct = 0
            if seg is not None and not down[TARGETS[seg.endpoint]] and not down["postgres"]:
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
            auth = AUTH_BACKENDS if seg is not None and seg.endpoint == "dedicated" else 0
            total = BASELINE_BACKENDS + direct + sum(pooled.values()) + auth
            by_origin = {"local": BASELINE_BACKENDS, "direct": direct,
                         "shared": pooled["session"] + pooled["transaction"],
                         "dedicated": pooled["dedicated"], "dedicated_auth": auth}
            groups = [{"role": "postgres", "app": "pooler-lab", "state": "active",
                       "origin": k, "n": int(v)} for k, v in by_origin.items()
                      if v and k != "dedicated_auth"]
            if auth:
                groups.append({"role": "pgbouncer", "app": "", "state": "idle",
                               "origin": "dedicated", "n": auth})
            if legacy:  # the sampler counted the auth_query login as the pooler's load
                by_origin["dedicated"] += by_origin.pop("dedicated_auth")
            record: dict[str, Any] = {"v": 1, "t": round(float(t), 3), "target": "postgres",
                                      "kind": "postgres"}
            if down["postgres"]:
                record.update(ok=False, error=REFUSED_SAMPLE.replace("6543", "5432"))
            else:
                record.update(ok=True, total=int(total),
                              by_origin={k: int(v) for k, v in by_origin.items() if v},
                              groups=groups)
            record["ms"] = round(float(rng.uniform(0.8, 2.5)), 3)
            record["limits"] = {"max_connections": MAX_CONNECTIONS}
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            for name in ("dedicated", "session", "transaction"):
                record = {"v": 1, "t": round(float(t) + 0.002, 3), "target": name,
                          "kind": "pgbouncer"}
                if down[name]:
                    record.update(ok=False, error="connection timeout expired"
                                  if name == "session" else REFUSED_SAMPLE)
                    previous[name] = None
                else:
                    is_seg = seg is not None and seg.endpoint == name
                    cl = clients if is_seg and not down["postgres"] else 0
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


def _write_schedules(directory: Path, segments: list[Segment], duration_s: float, seed: int,
                     repeats: int, unserved: list[int]) -> None:
    """One schedule file per segment (one load process), as `lab run` leaves them."""
    directory.mkdir(exist_ok=True)
    for s, left in zip(segments, unserved, strict=True):
        name = f"{s.scenario}.{s.endpoint}" + (f".r{s.repeat}" if repeats > 1 else "")
        doc = {"t0": round(s.load, 3), "spikes": [[round(a, 3), round(b, 3)] for a, b in s.spikes],
               "params": PARAMS[s.scenario], "duration_s": duration_s, "worker": 0,
               "workers": 1, "seed": seed, "streams": [], "unserved": {"0": left}}
        (directory / f"{name}-0.json").write_text(json.dumps(doc) + "\n")


# -- manifest ----------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def _manifest(run_id: str, segments: list[Segment], requests: int, duration_s: float,
              cooldown_s: float, seed: int, repeats: int, unserved: list[int], noisy: bool,
              interrupted: bool, legacy: bool, rng: np.random.Generator,
              endpoints_run: tuple[str, ...]) -> dict[str, Any]:
    command = ["python", "-m", "lab.synthetic", "RUN_DIR", "--requests", str(requests),
               "--duration", f"{duration_s:g}", "--cooldown", f"{cooldown_s:g}",
               "--seed", str(seed)]
    if repeats > 1:
        command += ["--repeats", str(repeats)]
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
    names = list(dict.fromkeys(s.scenario for s in segments))
    files = {name: f"scenarios/{name.replace('-', '_')}.py" for name in names}
    legs = [{"scenario": name, "file": files[name], "params": PARAMS[name],
             "users": USERS[name], "spawn_rate": float(USERS[name])} for name in names]
    if len(names) == 1:
        scenario = {"name": names[0], "file": files[names[0]], "params": PARAMS[names[0]],
                    "seed": seed}
        users: Any = USERS[names[0]]
        spawn: Any = float(USERS[names[0]])
    else:
        scenario = {"name": " + ".join(names), "file": ", ".join(files[n] for n in names),
                    "params": {n: PARAMS[n] for n in names}, "seed": seed}
        users = {n: USERS[n] for n in names}
        spawn = {n: float(USERS[n]) for n in names}
    quiet, busy = [0.21, 0.3, 0.28], [3.4, 2.1, 1.2]
    segment_docs = []
    for i, (s, left) in enumerate(zip(segments, unserved, strict=True)):
        doc: dict[str, Any] = {"scenario": s.scenario, "endpoint": s.endpoint}
        if not legacy:
            doc["repeat"] = s.repeat
            doc["noise"] = {"load_avg": busy if noisy and i % 3 == 1 else quiet,
                            "locust_cpu_warnings": 1 if noisy and i == 1 else 0}
        doc.update({"poolers_reset": {"session": 0, "transaction": 0, "dedicated": 0},
                    "started_at": _iso(s.start), "ended_at": _iso(s.end),
                    "interrupted": bool(interrupted and i == len(segments) - 1),
                    "spikes": [[round(a, 3), round(b, 3)] for a, b in s.spikes],
                    "unserved": left, "locust_exit": 0})
        segment_docs.append(doc)
    noise = {"load_avg_start": busy if noisy else quiet, "cores": 2,
             "other_containers": ["pooler-lab-other-db-1", "buildkit"] if noisy else [],
             "other_labs": ["other"] if noisy else [],
             "load_avg_end": quiet,
             "locust_cpu_warnings": sum(d.get("noise", {}).get("locust_cpu_warnings", 0)
                                        for d in segment_docs)}
    host: dict[str, Any] = {"cores": 2, "memory_bytes": 8 * 2**30, "platform": "linux",
                            "kernel": "6.1.0-synthetic", "machine": "x86_64"}
    if not legacy:
        host["noise"] = noise
    load: dict[str, Any] = {"users": users, "spawn_rate": spawn, "workers": 1,
                            "duration_s": duration_s, "cooldown_s": cooldown_s, "ui": False}
    if not legacy:
        load["repeat"] = repeats
    return {
        "format": "manifest/1",
        "run_id": run_id,
        "started_at": _iso(segments[0].start),
        "ended_at": _iso(segments[-1].end),
        "duration_s": round(segments[-1].end - segments[0].start, 3),
        "interrupted": interrupted,
        "command": command,
        "reproduce": " ".join(command),
        "lab_version": "synthetic",
        "git": {"commit": None, "dirty": None},
        "scenario": scenario,
        "legs": legs,
        "load": load,
        "lab": {"name": "default", "tier": "micro", "max_connections": MAX_CONNECTIONS,
                "max_client_conn": MAX_CLIENT_CONN, "pool_size": POOL_SIZE, "tenant": "lab",
                "pool_sharing": "per-mode", "session_overflow": "queue",
                "max_prepared_statements": 0,
                "query_wait_timeout": 120, "layout": "addresses", "db_address": "127.0.0.2",
                "pooler_address": "127.0.0.3"},
        "endpoints": {name: {"uri": uri, "bench_uri": uri, "pool_mode": mode, "pooler": pooler,
                             "user": user}
                      for name, (uri, mode, pooler, user) in endpoints.items()
                      if name in endpoints_run},
        "segments": segment_docs,
        "components": {"postgres": "synthetic", "pgbouncer": "synthetic", "image": None,
                       "python": None, "psycopg": None, "locust": None,
                       "platform": "synthetic"},
        "host": host,
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
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    print(make_run(args.run_dir, args.requests, duration_s=args.duration,
                   cooldown_s=args.cooldown, seed=args.seed, repeats=args.repeats))


if __name__ == "__main__":
    main()
