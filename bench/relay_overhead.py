"""What the distance relays cost at zero distance: the same load with and without them.

A lab at network "local" has no relay: clients reach the hosts' own ports. `--relay always`
puts lab-relay on every path at 0 ms (net-db, net-pooler, and the pooler host's hop to
Postgres), the cost a user pays for the machinery of distance without any distance. Goal
(issue 9): no more than 10% more CPU for the same run.

Brings up its own lab (--name bench-relay on 127.0.9.2/127.0.9.3, its own POOLER_LAB_HOME)
and always takes it down with its volumes. Per round, both modes in alternating order, the
same fixed-rate pgbench loads against the transaction pooler and direct (the bench address,
as `lab run` uses it; TLS verify-full as `lab connect` prints):

1. persistent: `pgbench -n -c 8 -j 2 -R 800 -T S` SELECT 1 on held connections;
2. connect: `pgbench -n -C -c 4 -j 2 -R 60 -T S`, a new connection (TLS + SCRAM) per query.

CPU is the lab containers' cgroup CPU time (Docker's stats, before and after) plus pgbench's
own (RUSAGE_CHILDREN); at a fixed rate the work is the same, so the difference is the relays'.
Prints medians of --rounds and the ratio relay/none per load; asserts nothing.

    .venv/bin/python bench/relay_overhead.py [--seconds 15 --rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "bench-relay"
WHERE = ["--db-address", "127.0.9.2", "--pooler-address", "127.0.9.3"]
LOADS = {
    "persistent": (["-c", "8", "-j", "2", "-R", "800"], "transaction"),
    "connect": (["-C", "-c", "4", "-j", "2", "-R", "60"], "transaction"),
    "direct connect": (["-C", "-c", "4", "-j", "2", "-R", "60"], "direct"),
}
MODES = {"none": [], "relay 0 ms": ["--relay", "always"]}
GOAL = 1.10


def lab(env: dict, *args: str, capture: bool = True) -> str:
    proc = subprocess.run([sys.executable, "-m", "lab", *args, "--name", NAME],
                          capture_output=capture, text=True, env=env, cwd=ROOT,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"lab {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def container_cpu_ns(project: str) -> int:
    import docker

    client = docker.from_env()
    total = 0
    for c in client.containers.list(filters={"label": f"com.docker.compose.project={project}"}):
        total += c.stats(stream=False)["cpu_stats"]["cpu_usage"]["total_usage"]
    return total


def pgbench(uri: str, args: list[str], seconds: int, script: Path) -> tuple[float, float]:
    """(tps, pgbench's CPU seconds) of one fixed-rate pgbench run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(["pgbench", "-n", *args, "-T", str(seconds), "-f", str(script), uri],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"pgbench failed: {proc.stderr.strip()[-300:]}")
    match = re.search(r"tps = ([0-9.]+)", proc.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(match.group(1)) if match else 0.0, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pooler-lab-bench-") as home:
        env = dict(os.environ, POOLER_LAB_HOME=home, NO_COLOR="1")
        script = Path(home) / "select1.sql"
        script.write_text("SELECT 1;\n")
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        try:
            for rnd in range(args.rounds):
                order = list(MODES) if rnd % 2 == 0 else list(MODES)[::-1]
                for mode in order:
                    lab(env, "up", *WHERE, *MODES[mode])
                    eps = json.loads(lab(env, "connect", "--json", "--show-password"))
                    for load, (pg_args, endpoint) in LOADS.items():
                        uri = eps[endpoint]["bench_uri"]
                        cpu0 = container_cpu_ns(f"pooler-lab-{NAME}")
                        tps, own = pgbench(uri, pg_args, args.seconds, script)
                        cpu = (container_cpu_ns(f"pooler-lab-{NAME}") - cpu0) / 1e9 + own
                        results.setdefault((load, mode), []).append((tps, cpu))
                        print(f"round {rnd + 1} {mode:>10} {load:>15}: {tps:8.1f} tps, "
                              f"{cpu:6.2f} CPU s", flush=True)
        finally:
            lab(env, "down", "--volumes")
    print(f"\nmedians of {args.rounds} rounds, {args.seconds} s each, fixed rates:")
    print(f"{'load':>15} {'tps none':>9} {'tps relay':>9} {'CPU none':>9} {'CPU relay':>9} "
          f"{'ratio':>6}  goal <= {GOAL:.2f}")
    for load in LOADS:
        none = results[(load, "none")]
        relay = results[(load, "relay 0 ms")]
        tps_n, tps_r = (statistics.median(t for t, _ in r) for r in (none, relay))
        cpu_n, cpu_r = (statistics.median(c for _, c in r) for r in (none, relay))
        ratio = cpu_r / cpu_n if cpu_n else float("nan")
        print(f"{load:>15} {tps_n:9.1f} {tps_r:9.1f} {cpu_n:9.2f} {cpu_r:9.2f} {ratio:6.2f}  "
              f"{'met' if ratio <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
