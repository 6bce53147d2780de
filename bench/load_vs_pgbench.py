"""`lab run` (Locust + psycopg + lab.users) beside pgbench, on SELECT 1, in one run.

Brings up its own lab (--name bench-load on 127.0.8.2/127.0.8.3, its own POOLER_LAB_HOME) and
always takes it down with its volumes. Every tool loads the same container bridge address
(`lab connect --json` bench_uri, not Docker's userland proxy) with the same client count:

1. persistent: one held connection per client, SELECT 1 back to back, through the shared
   transaction pooler (and the dedicated one): `lab run` (bench/locust_select1.py,
   mode=persistent: lab.users.SessionUser) requests/s over `pgbench -n -f select1.sql -c C
   -j J -T S` tps. Goal (issue 3): at least 0.8.
2. connect: a new connection per request, same script and clients: lab (mode=connect:
   lab.users.PerRequest, closed loop, no hold) over `pgbench -C` tps. Goal: at least 0.8.
3. rate: a fixed rate below saturation, persistent connections: lab (mode=rate: J app servers
   of lab.users.AppServerUser with pools of C/J connections, Poisson arrivals, total_ms from
   the intended start) p50/p99 over `pgbench -R RATE --log` latencies (column 3 of the
   per-transaction log; with -R it includes the schedule lag, as total_ms does; pgbench also
   runs one Poisson schedule per thread, shared by its C/J clients). Goal: within 15%.
   Run twice: with SELECT 1, where the client's own cost per query (Python, psycopg, gevent
   against C and libpq) is most of the latency, and with SELECT pg_sleep(0.002), a query that
   takes 2 ms on the server, where that cost is small and what remains is how each tool
   measures (schedule, wake-up, coordinated omission).

CPU per request: on a shared virtual machine the hypervisor takes CPU time away (top's "st";
seen here at 50%), and requests/s then say more about the neighbours than about the tools. So
for the lab and plain Locust the load generator's own CPU time (user + system of the process
and its children, read with psutil four times a second: for `lab run` the orchestrator with its
sampler and the Locust child) is divided by the requests completed in the steady window (from
2 s after the first request to 1 s before the last). Stolen time is not CPU time of the
process, so this is the lab's own work per request; plain Locust / lab is the rate the lab
would reach beside plain Locust when the load generator is what limits (issue "Scale": goal at
least 0.95).

For 1 and 2, three more columns say where the distance to pgbench goes: `lab x J` is the
same `lab run` with --workers J (J Locust processes, as pgbench runs J threads); `Locust` is
plain Locust with psycopg (bench/locust_plain.py: perf_counter and events.request, no lab
code), so lab/Locust is the lab's own overhead; `psycopg` is the client library alone
(bench/psycopg_loop.py: C greenlets under gevent, no Locust), the ceiling of any one
Locust process.

Rates: lab from its raw samples (requests/1), counting requests that started from 1 s after
the first one to the end of the last (the first second holds connects and Locust's spawn);
latencies of the rate test leave out that first second on both sides. pgbench: its own tps
(without initial connection time; with -C including the reconnections). Plain Locust: its
stats Requests/s. The psycopg loop: as the lab. Medians of --rounds; the order of the tools
alternates between rounds. Prints ratios and whether each goal is met; asserts nothing.

    .venv/bin/python bench/load_vs_pgbench.py [--seconds 10 --rounds 3 --clients 8]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
NAME = "bench-load"
WHERE = ["--db-address", "127.0.8.2", "--pooler-address", "127.0.8.3"]
LOCUSTFILE = HERE / "locust_select1.py"
PLAIN = HERE / "locust_plain.py"
LOOP = HERE / "psycopg_loop.py"
WARMUP_S = 1.0
GOAL_RATIO = 0.8
GOAL_LATENCY = 0.15
GOAL_CPU = 0.95  # issue "Scale": the lab at least 0.95 of plain Locust
# The rate test's queries and their short labels.
RATE_QUERIES = {"SELECT 1": "SELECT 1", "SELECT pg_sleep(0.002)": "2 ms query"}


class CpuSampler:
    """CPU seconds (user + system) of a process and its live children (``children=False``: the
    process alone), four times a second."""

    def __init__(self, proc: subprocess.Popen, children: bool = True):
        import threading

        self.samples: list[tuple[float, float]] = []
        self._proc = proc
        self._children = children
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            root = psutil.Process(self._proc.pid)
        except psutil.Error:
            return
        while self._proc.poll() is None:
            total = 0.0
            try:
                kids = root.children(recursive=True) if self._children else []
                for p in [root, *kids]:
                    try:
                        t = p.cpu_times()
                        total += t.user + t.system
                    except psutil.Error:
                        continue
            except psutil.Error:
                break
            self.samples.append((time.time(), total))
            time.sleep(0.25)

    def join(self) -> None:
        self._thread.join(timeout=5)

    def between(self, t1: float, t2: float) -> float | None:
        if len(self.samples) < 2 or t2 <= t1:
            return None
        ts, cpu = zip(*self.samples, strict=True)
        if t1 < ts[0] or t2 > ts[-1]:
            return None
        return float(np.interp(t2, ts, cpu) - np.interp(t1, ts, cpu))


class Bench:
    def __init__(self, args: argparse.Namespace, home: str):
        self.args = args
        self.work = Path(home) / "work"
        self.work.mkdir()
        self.env = dict(os.environ, POOLER_LAB_HOME=home)
        self.env.pop("LAB_RUN_DIR", None)
        self.lab = [sys.executable, "-m", "lab"]
        self.scripts: dict[str, Path] = {}  # pgbench -f, by query
        for i, query in enumerate(RATE_QUERIES):
            self.scripts[query] = self.work / f"query{i}.sql"
            self.scripts[query].write_text(query + ";\n")
        self.uris: dict[str, str] = {}
        self.seq = 0
        # CPU microseconds per request of the load generator, per test and tool
        self.cpu: dict[str, dict[str, list[float]]] = {}

    def sampled(self, argv: list[str], **kwargs) -> tuple[subprocess.CompletedProcess,
                                                          CpuSampler]:
        proc = subprocess.Popen(argv, env=kwargs.pop("env", self.env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                                **kwargs)
        sampler = CpuSampler(proc)
        out, err = proc.communicate()
        sampler.join()
        return subprocess.CompletedProcess(argv, proc.returncode, out, err), sampler

    def cost(self, test: str, tool: str, cpu_s: float | None, requests: float) -> None:
        if cpu_s is not None and requests > 0:
            self.cpu.setdefault(test, {}).setdefault(tool, []).append(cpu_s / requests * 1e6)

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=kwargs.pop("env", self.env), capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, **kwargs)

    def up(self) -> None:
        done = self.run([*self.lab, "up", "--name", NAME, *WHERE])
        if done.returncode != 0:
            sys.exit(f"lab up failed:\n{done.stdout}{done.stderr}")
        shown = self.run([*self.lab, "connect", "--name", NAME, "--json", "--show-password"],
                         check=True)
        self.uris = {k: v["bench_uri"] for k, v in json.loads(shown.stdout).items()}

    def down(self) -> None:
        self.run([*self.lab, "down", "--name", NAME, "--volumes"])

    # -- the lab

    def lab_run(self, endpoint: str, mode: str, users: int, workers: int = 1,
                **params) -> Path:
        self.seq += 1
        argv = [*self.lab, "run", str(LOCUSTFILE), "--name", NAME, "--endpoint", endpoint,
                "--users", str(users), "--workers", str(workers),
                "--duration", f"{self.args.seconds}s",
                "--cooldown", "0s", "--reports-dir", str(self.work / "reports"),
                "-P", f"mode={mode}"]
        for key, value in params.items():
            argv += ["-P", f"{key}={value}"]
        done, self.last_cpu = self.sampled(argv)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            sys.exit(f"lab run failed:\n{done.stdout}{done.stderr}")
        return Path(lines[-1])

    def lab_rate(self, endpoint: str, mode: str, workers: int = 1) -> float:
        run_dir = self.lab_run(endpoint, mode, self.args.clients, workers)
        t1, t2, n = steady_window(run_dir)
        self.cost(f"{mode} {endpoint}", "lab" if workers == 1 else f"lab x{workers}",
                  self.last_cpu.between(t1, t2), n)
        return lab_rate(run_dir)

    def lab_latency(self, endpoint: str, query: str) -> tuple[float, float]:
        jobs = self.args.jobs
        run_dir = self.lab_run(endpoint, "rate", jobs, rate=self.args.rate,
                               pool_size=self.args.clients // jobs, servers=jobs, query=query)
        return lab_latency(run_dir)

    # -- the peers

    def pgbench(self, endpoint: str, *extra: str, query: str = "SELECT 1"
                ) -> subprocess.CompletedProcess:
        argv = ["pgbench", "-n", "-f", str(self.scripts[query]), "-c", str(self.args.clients),
                "-j", str(self.args.jobs), "-T", str(self.args.seconds), *extra,
                self.uris[endpoint]]
        done = self.run(argv, cwd=self.work)
        if done.returncode != 0:
            sys.exit(f"pgbench failed:\n{done.stdout}{done.stderr}")
        return done

    def pgbench_tps(self, endpoint: str, connect: bool = False) -> float:
        done = self.pgbench(endpoint, *(["-C"] if connect else []))
        found = re.search(r"^tps = ([0-9.]+)", done.stdout, re.M)
        if not found:
            sys.exit(f"no tps in pgbench's output:\n{done.stdout}")
        return float(found.group(1))

    def pgbench_latency(self, endpoint: str, query: str) -> tuple[float, float]:
        self.seq += 1
        prefix = self.work / f"pgbench-{self.seq}"
        self.pgbench(endpoint, "-R", f"{self.args.rate:g}", "--log",
                     f"--log-prefix={prefix}", query=query)
        return pgbench_latency(sorted(self.work.glob(f"{prefix.name}.*")))

    def psycopg_rate(self, endpoint: str, mode: str) -> float:
        done = self.run([sys.executable, str(LOOP), self.uris[endpoint], mode,
                         str(self.args.clients), str(self.args.seconds)], check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["errors"]:
            print(f"  psycopg loop {mode}: {result['errors']} errors", file=sys.stderr)
        return result["rate"]

    def plain_rate(self, endpoint: str, mode: str) -> float:
        self.seq += 1
        prefix = self.work / f"plain-{self.seq}"
        c = str(self.args.clients)
        counts = self.work / f"plain-{self.seq}.counts"
        env = dict(self.env, PLAIN_URI=self.uris[endpoint], PLAIN_MODE=mode,
                   PLAIN_COUNTS=str(counts))
        done, cpu = self.sampled(
            [sys.executable, "-m", "locust", "-f", str(PLAIN), "--headless",
             "-u", c, "-r", c, "-t", f"{self.args.seconds}s", "--only-summary",
             "--stop-timeout", "5", "--loglevel", "WARNING", "--csv", str(prefix)],
            env=env, cwd=self.work)
        marks = [tuple(map(float, line.split())) for line in counts.read_text().splitlines()
                 if len(line.split()) == 2]
        if len(marks) > 4:
            t1, t2 = marks[0][0] + WARMUP_S + 1.0, marks[-1][0] - 1.0
            ts, ns = zip(*marks, strict=True)
            n = float(np.interp(t2, ts, ns) - np.interp(t1, ts, ns))
            self.cost(f"{mode} {endpoint}", "Locust", cpu.between(t1, t2), n)
        with open(f"{prefix}_stats.csv", newline="") as f:
            row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
        if int(row["Failure Count"]):
            print(f"  plain Locust {mode}: {row['Failure Count']} failures", file=sys.stderr)
        if done.returncode not in (0, 1):
            sys.exit(f"plain Locust failed:\n{done.stdout}{done.stderr}")
        return float(row["Requests/s"])


def lab_rate(run_dir: Path) -> float:
    """Successful requests per second, from the first second after the first start on."""
    from lab import samples

    t = samples.read_requests(run_dir, columns=["start", "service_ms", "ok"])
    starts = t.column("start").to_pylist()
    ends = [s + ms / 1000.0 for s, ms in zip(starts, t.column("service_ms").to_pylist(),
                                              strict=True)]
    oks = t.column("ok").to_pylist()
    if not starts:
        return 0.0
    begin = min(starts) + WARMUP_S
    n = sum(1 for s, ok in zip(starts, oks, strict=True) if ok and s >= begin)
    errors = len(oks) - sum(oks)
    if errors:
        print(f"  {run_dir.name}: {errors} failed requests", file=sys.stderr)
    return n / (max(ends) - begin)


def steady_window(run_dir: Path) -> tuple[float, float, int]:
    """(t1, t2, requests that ended between): from 2 s after the first start to 1 s before
    the last end, as the CPU accounting uses it."""
    from lab import samples

    t = samples.read_requests(run_dir, columns=["start", "service_ms"])
    ends = [s + ms / 1000.0 for s, ms in zip(t.column("start").to_pylist(),
                                              t.column("service_ms").to_pylist(), strict=True)
            if s == s and ms == ms]
    if not ends:
        return 0.0, 0.0, 0
    t1, t2 = min(ends) + WARMUP_S + 1.0, max(ends) - 1.0
    return t1, t2, sum(1 for e in ends if t1 <= e <= t2)


def p50_p99(values: list[float]) -> tuple[float, float]:
    """numpy's default (linear) percentiles: the definition the lab's reports use."""
    p50, p99 = np.percentile(values, [50, 99])
    return float(p50), float(p99)


def lab_latency(run_dir: Path) -> tuple[float, float]:
    from lab import samples

    t = samples.read_requests(run_dir, columns=["intended_start", "total_ms", "ok"])
    starts = t.column("intended_start").to_pylist()
    begin = min(starts) + WARMUP_S
    totals = [ms for s, ms, ok in zip(starts, t.column("total_ms").to_pylist(),
                                      t.column("ok").to_pylist(), strict=True)
              if ok and s >= begin]
    return p50_p99(totals)


def pgbench_latency(paths: list[Path]) -> tuple[float, float]:
    """p50/p99 (ms) of pgbench per-transaction logs: client_id transaction_no latency_us
    script_no time_epoch time_us [schedule_lag_us]; the first second left out."""
    rows = []
    for path in paths:
        for line in path.read_text().splitlines():
            f = line.split()
            if len(f) >= 6 and f[2].isdigit():  # "skipped" transactions have no latency
                end = int(f[4]) + int(f[5]) / 1e6
                rows.append((end - int(f[2]) / 1e6, int(f[2]) / 1000.0))
    begin = min(r[0] for r in rows) + WARMUP_S
    latencies = [ms for start, ms in rows if start >= begin]
    return p50_p99(latencies)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each load run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2, help="pgbench threads (-j); the lab's "
                        "processes (--workers) of the second lab column; the rate test's app "
                        "servers")
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s of test 3")
    parser.add_argument("--no-dedicated", action="store_true",
                        help="skip test 1 through the dedicated pooler")
    parser.add_argument("--no-peers", action="store_true",
                        help="only pgbench and lab: skip plain Locust, the psycopg loop and "
                             "the lab with --workers JOBS")
    args = parser.parse_args()
    if args.clients % args.jobs:
        parser.error("--clients must be a multiple of --jobs (pgbench's rule)")
    if shutil.which("pgbench") is None:
        sys.exit("pgbench not found: apt-get install -y postgresql-client")
    pgbench_version = subprocess.run(["pgbench", "--version"], capture_output=True,
                                     text=True).stdout.strip()

    home = tempfile.mkdtemp(prefix="pooler-lab-bench-load-")
    bench = Bench(args, home)
    tests = [("persistent", "transaction")]
    if not args.no_dedicated:
        tests.append(("persistent", "dedicated"))
    tests.append(("connect", "transaction"))
    # results[test][tool] = one value per round
    results: dict[str, dict[str, list]] = {}
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        bench.up()
        for r in range(args.rounds):
            for mode, ep in tests:
                steps = [("pgbench", lambda ep=ep, mode=mode:
                          bench.pgbench_tps(ep, connect=mode == "connect")),
                         ("lab", lambda ep=ep, mode=mode: bench.lab_rate(ep, mode))]
                if not args.no_peers:
                    steps += [
                        (f"lab x{args.jobs}", lambda ep=ep, mode=mode:
                         bench.lab_rate(ep, mode, workers=args.jobs)),
                        ("Locust", lambda ep=ep, mode=mode: bench.plain_rate(ep, mode)),
                        ("psycopg", lambda ep=ep, mode=mode: bench.psycopg_rate(ep, mode))]
                side_by_side(results, f"{mode} {ep}", steps, flip=r % 2 == 1)
            for query, label in RATE_QUERIES.items():
                side_by_side(results, f"rate transaction {label}", [
                    ("pgbench", lambda q=query: bench.pgbench_latency("transaction", q)),
                    ("lab", lambda q=query: bench.lab_latency("transaction", q))],
                    flip=r % 2 == 1)
            print(f"round {r + 1}/{args.rounds}: " + "; ".join(
                f"{test}: " + ", ".join(f"{tool} {fmt(vals[-1])}" for tool, vals in d.items())
                for test, d in results.items()), flush=True)
    finally:
        bench.down()
        shutil.rmtree(home, ignore_errors=True)
    report(args, results, load_before, os.getloadavg(), time.perf_counter() - started,
           pgbench_version)
    report_cpu(args, bench.cpu)


def side_by_side(results: dict, test: str, steps: list, flip: bool) -> None:
    """Run each tool once; every other round in the reverse order, so drift hits all."""
    for tool, fn in (reversed(steps) if flip else steps):
        results.setdefault(test, {}).setdefault(tool, []).append(fn())


def fmt(value) -> str:
    if isinstance(value, tuple):
        return f"{value[0]:.3f}/{value[1]:.3f} ms"
    return f"{value:,.0f}/s"


def report(args, results, load_before, load_after, wall_s, pgbench_version) -> None:
    print()
    print(f"{dt.date.today()}  {os.cpu_count()} cores  Python {platform.python_version()}  "
          f"{pgbench_version}  load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after  ({wall_s / 60:.1f} min)")
    print(f"{args.clients} clients, pgbench -j {args.jobs}, medians of {args.rounds} rounds x "
          f"{args.seconds} s")
    print()
    tools = ["pgbench", "lab", f"lab x{args.jobs}", "Locust", "psycopg"]
    print(f"{'requests/s':24s}" + "".join(f"{t:>9s}" for t in tools)
          + f"{'lab/pgbench':>12s}{'x' + str(args.jobs) + '/pgbench':>12s}{'lab/Locust':>11s}"
          + f"  goal: lab/pgbench >= {GOAL_RATIO}")
    for test, d in results.items():
        if test.startswith("rate"):
            continue
        m = {t: med(d[t]) if t in d else None for t in tools}
        cells = "".join(f"{v:9,.0f}" if v is not None else f"{'-':>9s}" for v in m.values())

        def ratio(a, b, m=m):
            return f"{m[a] / m[b]:.2f}" if m[a] is not None and m[b] is not None else "-"

        met = "met" if m["lab"] / m["pgbench"] >= GOAL_RATIO else "NOT met"
        extra = ""
        if m[tools[2]] is not None:
            extra = (f" (x{args.jobs}: "
                     f"{'met' if m[tools[2]] / m['pgbench'] >= GOAL_RATIO else 'NOT met'})")
        print(f"{test:24s}{cells}{ratio('lab', 'pgbench'):>12s}"
              f"{ratio(tools[2], 'pgbench'):>12s}{ratio('lab', 'Locust'):>11s}  {met}{extra}")
    for test, d in results.items():
        if not test.startswith("rate"):
            continue
        print()
        print(f"{test + f' {args.rate:g}/s (ms)':40s}{'pgbench':>9s}{'lab':>9s}"
              f"{'lab/pgbench':>12s}  goal: within {GOAL_LATENCY:.0%}")
        for i, q in enumerate(("p50", "p99")):
            pg = med([v[i] for v in d["pgbench"]])
            lab = med([v[i] for v in d["lab"]])
            met = "met" if abs(lab / pg - 1) <= GOAL_LATENCY else "NOT met"
            print(f"{q:40s}{pg:9.3f}{lab:9.3f}{lab / pg:12.2f}  {met}")


def report_cpu(args, cpu: dict[str, dict[str, list[float]]]) -> None:
    """The load generator's own CPU per request: immune to the time a hypervisor steals."""
    if not cpu:
        return
    tools = ["lab", f"lab x{args.jobs}", "Locust"]
    print()
    print(f"{'CPU us/request':24s}" + "".join(f"{t:>9s}" for t in tools)
          + f"{'Locust/lab':>12s}  goal: Locust/lab >= {GOAL_CPU}  (rounds: Locust/lab)")
    for test, d in cpu.items():
        m = {t: med(d[t]) if t in d else None for t in tools}
        cells = "".join(f"{v:9.1f}" if v is not None else f"{'-':>9s}" for v in m.values())
        if m["lab"] and m["Locust"]:
            ratio = m["Locust"] / m["lab"]
            rounds = ", ".join(f"{b / a:.2f}" for a, b in zip(d["lab"], d["Locust"],
                                                              strict=False))
            print(f"{test:24s}{cells}{ratio:12.2f}  "
                  f"{'met' if ratio >= GOAL_CPU else 'NOT met'}  ({rounds})")
        else:
            print(f"{test:24s}{cells}{'-':>12s}")


if __name__ == "__main__":
    main()
