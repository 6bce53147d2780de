"""Time and memory of the limit experiments at each tier's real limits.

For each tier: `lab up --tier T` (timed), then `lab experiment run max-client-conn
max-connections session-exhaustion backend-budget --real-limits --json` in a child process,
whose peak RSS comes from wait4 (the experiment process holds every client connection), while
the lab's containers' memory is read through the Docker SDK (`docker stats`'s figure) until the
run ends; then `lab down --volumes`. Prints one Markdown row per tier (docs/benchmarks.md,
"Every tier at its real limits"); asserts nothing but that every experiment passed.

    .venv/bin/python bench/tier_limits.py [--tier micro --tier 16xl]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import engine  # noqa: E402
from lab.config import TIERS  # noqa: E402

EXPERIMENTS = ("max-client-conn", "max-connections", "session-exhaustion", "backend-budget")
DEFAULT_TIERS = ("micro", "large", "4xl", "16xl")
NAME = "tierbench"
MIB = 1024 * 1024


def sample_memory(project: str, peaks: dict[str, int], done: threading.Event) -> None:
    while not done.is_set():
        for service, used in engine.project_memory(project).items():
            peaks[service] = max(peaks.get(service, 0), used)


def run_tier(tier: str, env: dict[str, str]) -> dict:
    lab = [sys.executable, "-m", "lab"]
    where = ["--name", NAME, "--db-address", "127.0.77.12", "--pooler-address", "127.0.77.13"]
    started = time.perf_counter()
    subprocess.run([*lab, "up", "--tier", tier, *where], check=True, env=env,
                   capture_output=True, stdin=subprocess.DEVNULL)
    up_s = time.perf_counter() - started
    peaks: dict[str, int] = {}
    idle = engine.project_memory(f"pooler-lab-{NAME}")
    done = threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(f"pooler-lab-{NAME}", peaks, done),
                               daemon=True)
    sampler.start()
    try:
        started = time.perf_counter()
        with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
            proc = subprocess.Popen([*lab, "experiment", "run", *EXPERIMENTS, "--real-limits",
                                     "--json", "--name", NAME], env=env, stdout=out_file,
                                    stderr=err_file, stdin=subprocess.DEVNULL, text=True)
            # wait4: this child's own peak RSS (the process that holds every client).
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            wall_s = time.perf_counter() - started
            rss = usage.ru_maxrss * 1024
            out_file.seek(0)
            err_file.seek(0)
            out, err = out_file.read(), err_file.read()
    finally:
        done.set()
        sampler.join()
        subprocess.run([*lab, "down", "--volumes", "--name", NAME], env=env,
                       capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"{tier}: lab experiment run exited {proc.returncode}\n{out}\n{err}")
    data = json.loads(out)
    durations = {e["name"]: e["duration_s"] for e in data["experiments"]}
    return {"tier": tier, "up_s": up_s, "wall_s": wall_s, "durations": durations,
            "rss": rss, "peaks": peaks, "idle": idle}


def row(r: dict) -> str:
    t = TIERS[r["tier"]]
    d = r["durations"]
    mem = ", ".join(f"{svc} {r['idle'].get(svc, 0) / MIB:.0f} -> {r['peaks'][svc] / MIB:.0f}"
                    for svc in ("db", "dedicated", "pooler") if svc in r["peaks"])
    return (f"| {r['tier']} | {t.max_client_conn:,} / {t.max_connections} / {t.pool_size} "
            f"| {r['up_s']:.1f} s | {d['max-client-conn']:.1f} s | {d['max-connections']:.1f} s "
            f"| {d['session-exhaustion']:.1f} s | {d['backend-budget']:.1f} s "
            f"| {r['wall_s']:.1f} s | {r['rss'] / MIB:.0f} MiB | {mem} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", action="append", choices=list(TIERS))
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="pooler-lab-tierbench-")
    env = dict(os.environ, POOLER_LAB_HOME=home, NO_COLOR="1")
    os.environ["POOLER_LAB_HOME"] = home
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    print("| tier | max pooler clients / max_connections / pool | lab up | max-client-conn "
          "| max-connections | session-exhaustion | backend-budget | run (wall) "
          "| experiment process peak RSS | containers, MiB idle -> peak |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for tier in args.tier or DEFAULT_TIERS:
        print(row(run_tier(tier, env)), flush=True)


if __name__ == "__main__":
    main()
