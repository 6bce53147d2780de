"""`lab run` and plain Locust at the same time, on the same pooler: CPU per request of each.

Issue "Scale", a lean load path: the lab's load generator at least 0.95 of plain Locust. On
these machines one tool's requests/s moves 2-3x between runs a minute apart (steal, the other
tenants, Postgres and PgBouncer on the same 2 cores), so comparing runs made one after the other
(bench/load_vs_pgbench.py) needs more rounds than anyone waits for. Here both run *at once*:
`lab run` (orchestrator, connection sampler and Locust child: bench/locust_select1.py,
mode=persistent) and plain Locust (bench/locust_plain.py), each with --clients users on one
held connection, SELECT 1 back to back through the transaction pooler. Whatever the machine
does in that window it does to both. Each one's CPU time (user + system of the process and its
children, psutil four times a second) over the requests it completed in the common steady
window (plain Locust starts when the lab's first samples are written; from 3 s after its
first request to 1 s before the earlier one's last) is
its cost per request; plain / lab is the ratio the goal names. The orchestrator's own share
(`lab run` without its child: the connection sampler, the live counters) is printed apart: it
costs about the same CPU every second whatever the rate, so its share per request grows as
the machine slows. Their requests/s are printed too.

Back to back (the default), each tool goes as fast as it can, and CPU per request falls as a
process's rate rises (more requests per wakeup of its event loop): the tool that gets the
larger share of the machine looks cheaper per request. `--rate R` paces both tools to R
requests/s (each user `R / --clients`, Locust's own constant_throughput in both), below what
either reaches, so both are compared doing the same work at the same rate.

Brings up its own lab (--name bench-lean on 127.0.8.2/127.0.8.3, its own POOLER_LAB_HOME) and
always takes it down with its volumes. Medians of --rounds; asserts nothing.

    .venv/bin/python bench/lean_path.py [--seconds 14 --rounds 7 --clients 8 --rate 0]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from load_vs_pgbench import GOAL_CPU, LOCUSTFILE, PLAIN, CpuSampler  # noqa: E402

NAME = "bench-lean"
WHERE = ["--db-address", "127.0.8.2", "--pooler-address", "127.0.8.3"]
ENDPOINT = "transaction"


def _count(marks: list[tuple[float, float]], t1: float, t2: float) -> float:
    ts, ns = zip(*marks, strict=True)
    return float(np.interp(t2, ts, ns) - np.interp(t1, ts, ns))


def lab_marks(run_dir: Path) -> list[tuple[float, float]]:
    """(time, requests ended by then) from the run's raw samples."""
    from lab import samples

    t = samples.read_requests(run_dir, columns=["start", "service_ms"])
    ends = np.sort(np.asarray(t.column("start")) + np.asarray(t.column("service_ms")) / 1000)
    ends = ends[~np.isnan(ends)]
    return [(float(e), float(i + 1)) for i, e in enumerate(ends)]


def one_round(args: argparse.Namespace, env: dict[str, str], uri: str, work: Path
              ) -> dict[str, tuple[float, float]]:
    """{tool: (CPU us/request, requests/s)} over the window both were loading."""
    c = str(args.clients)
    counts = work / "plain.counts"
    reports = work / "reports"
    lab_argv = [sys.executable, "-m", "lab", "run", str(LOCUSTFILE), "--name", NAME,
                "--endpoint", ENDPOINT, "--users", c, "--duration", f"{args.seconds}s",
                "--cooldown", "0s", "--reports-dir", str(reports), "-P", "mode=persistent",
                "-P", f"user_rate={args.rate / args.clients:g}"]
    plain_argv = [sys.executable, "-m", "locust", "-f", str(PLAIN), "--headless", "-u", c,
                  "-r", c, "-t", f"{max(4, args.seconds - 2)}s", "--only-summary",
                  "--stop-timeout", "5", "--loglevel", "WARNING"]
    plain_env = dict(env, PLAIN_URI=uri, PLAIN_MODE="persistent", PLAIN_COUNTS=str(counts),
                     PLAIN_USER_RATE=f"{args.rate / args.clients:g}")
    procs = {"lab": subprocess.Popen(lab_argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=work)}
    samplers = {"lab": CpuSampler(procs["lab"]),
                "orchestrator": CpuSampler(procs["lab"], children=False)}
    # `lab run` checks the lab and starts its sampler before the load (several seconds):
    # plain Locust starts when the lab's first chunk of samples is there
    deadline = time.monotonic() + 60
    from lab import samples

    while not list(reports.glob(f"*/{samples.CHUNK_DIR}/{samples.CHUNK_GLOBS[0]}")):
        if procs["lab"].poll() is not None or time.monotonic() > deadline:
            sys.exit(f"lab run wrote no samples:\n{''.join(procs['lab'].communicate())}")
        time.sleep(0.1)
    procs["Locust"] = subprocess.Popen(plain_argv, env=plain_env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True, cwd=work)
    samplers["Locust"] = CpuSampler(procs["Locust"])
    outs = {tool: p.communicate() for tool, p in procs.items()}
    for s in samplers.values():
        s.join()
    if procs["lab"].returncode != 0:
        sys.exit(f"lab run failed:\n{''.join(outs['lab'])}")
    if procs["Locust"].returncode not in (0, 1):
        sys.exit(f"plain Locust failed:\n{outs['Locust'][1]}")
    run_dir = Path(outs["lab"][0].strip().splitlines()[-1])
    marks = {"lab": lab_marks(run_dir),
             "Locust": [tuple(map(float, line.split()))
                        for line in counts.read_text().splitlines() if len(line.split()) == 2]}
    t1 = max(m[0][0] for m in marks.values()) + 3.0
    t2 = min(m[-1][0] for m in marks.values()) - 1.0
    if t2 - t1 < 3.0:
        spans = ", ".join(f"{tool} {m[0][0] - t1 + 3:+.1f} to {m[-1][0] - t1 + 3:+.1f} s"
                          for tool, m in marks.items())
        sys.exit(f"the two loads overlapped only {t2 - t1:.1f} s ({spans}): raise --seconds")
    result = {}
    for tool, m in marks.items():
        n = _count(m, t1, t2)
        cpu = samplers[tool].between(t1, t2)
        result[tool] = (cpu / n * 1e6 if cpu is not None and n else float("nan"),
                        n / (t2 - t1))
    # the orchestrator's share of the lab's: CPU per request, and CPU per second
    cpu = samplers["orchestrator"].between(t1, t2) or float("nan")
    n = _count(marks["lab"], t1, t2)
    result["orchestrator"] = (cpu / n * 1e6, cpu / (t2 - t1) * 1000)
    shutil.rmtree(reports, ignore_errors=True)
    return result


def bring_up(env: dict[str, str]) -> dict[str, str]:
    """`lab up` the bench's lab; its endpoints' bench URIs, with the password."""
    lab = [sys.executable, "-m", "lab"]
    done = subprocess.run([*lab, "up", "--name", NAME, *WHERE], env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        sys.exit(f"lab up failed:\n{done.stdout}{done.stderr}")
    shown = subprocess.run([*lab, "connect", "--name", NAME, "--json", "--show-password"],
                           env=env, capture_output=True, text=True, check=True)
    return {name: ep["bench_uri"] for name, ep in json.loads(shown.stdout).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=14, help="length of the lab's run")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--clients", type=int, default=8, help="users of each tool")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="requests/s of each tool, paced per user (Locust's "
                             "constant_throughput); 0: back to back, as fast as each goes")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="pooler-lab-bench-lean-")
    env = dict(os.environ, POOLER_LAB_HOME=home)
    env.pop("LAB_RUN_DIR", None)
    lab = [sys.executable, "-m", "lab"]
    rounds: list[dict[str, tuple[float, float]]] = []
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        uri = bring_up(env)[ENDPOINT]
        for r in range(args.rounds):
            work = Path(tempfile.mkdtemp(dir=home))
            rounds.append(one_round(args, env, uri, work))
            (lc, lr), (pc, pr) = rounds[-1]["lab"], rounds[-1]["Locust"]
            oc, oms = rounds[-1]["orchestrator"]
            print(f"round {r + 1}/{args.rounds}: lab {lc:.1f} us/request ({lr:,.0f}/s; "
                  f"orchestrator {oc:.1f} us, {oms:.0f} ms CPU/s), plain Locust {pc:.1f} "
                  f"us/request ({pr:,.0f}/s): Locust/lab {pc / lc:.2f}, Locust/lab's Locust "
                  f"{pc / (lc - oc):.2f}", flush=True)
    finally:
        subprocess.run([*lab, "down", "--name", NAME, "--volumes"], env=env,
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    ratios = [r["Locust"][0] / r["lab"][0] for r in rounds]
    med = statistics.median(ratios)
    print(f"\n{time.strftime('%Y-%m-%d')}  {os.cpu_count()} cores  load average "
          f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after  "
          f"({(time.perf_counter() - started) / 60:.1f} min)")
    pace = f"{args.rate:,.0f} requests/s" if args.rate > 0 else "back to back"
    print(f"{args.clients} users each, at the same time, persistent SELECT 1 through the "
          f"{ENDPOINT} pooler, {pace}, medians of {args.rounds} rounds")
    for tool in ("lab", "Locust"):
        print(f"  {tool:<7} CPU {statistics.median(r[tool][0] for r in rounds):7.1f} us/request"
              f"  {statistics.median(r[tool][1] for r in rounds):8,.0f} requests/s")
    oc = statistics.median(r["orchestrator"][0] for r in rounds)
    oms = statistics.median(r["orchestrator"][1] for r in rounds)
    print(f"  of the lab's: the orchestrator (sampler, live counters) {oc:.1f} us/request, "
          f"{oms:.0f} ms of CPU a second")
    print(f"Locust/lab (CPU per request) {med:.2f}  goal >= {GOAL_CPU}: "
          f"{'met' if med >= GOAL_CPU else 'NOT met'}  (rounds: "
          f"{', '.join(f'{x:.2f}' for x in ratios)})")
    child = statistics.median(r["Locust"][0] / (r["lab"][0] - r["orchestrator"][0])
                              for r in rounds)
    print(f"Locust/lab's Locust child alone {child:.2f}")


if __name__ == "__main__":
    main()
