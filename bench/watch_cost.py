"""What the live view costs the run: the orchestrator's CPU with the page open, beside the same
run without it.

Issue "A live view for the room": goal under 3% of one core. Pairs of identical runs, in
alternating order (`lab run persistent-server -e transaction`, same seed): A without --watch,
B with --watch and a headless Chromium (Debian's, through selenium) showing the page the
whole time. For each run, the CPU time (user + system) of the `lab run` process itself, not
its Locust children, read from /proc until it exits, over its wall time = its share of one
core. Both runs publish the live frames (every run does, for `lab watch` and the replay): B's
extra is serving the page and its event stream. Prints every run and the medians; asserts
nothing. Brings up its own lab (--name watchcost on 127.0.67.2/127.0.67.3, its own
POOLER_LAB_HOME) and always takes it down with its volumes.

    .venv/bin/python bench/watch_cost.py [--pairs 3 --duration 30s]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "watchcost"
WHERE = ["--db-address", "127.0.67.2", "--pooler-address", "127.0.67.3"]
TICKS = os.sysconf("SC_CLK_TCK")
GOAL_PCT = 3.0


def lab(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", *args, "--name", NAME], env=env,
                          cwd=ROOT, capture_output=True, text=True, check=check, timeout=600)


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime, the process alone


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1600,1900"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def one_run(env: dict, duration: str, watch: bool, reports: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one `lab run`'s own process."""
    argv = [sys.executable, "-m", "lab", "run", "persistent-server", "-e", "transaction",
            "--duration", duration, "--cooldown", "0s", "--reports-dir", str(reports),
            "--name", NAME] + (["--watch"] if watch else [])
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    driver = None
    last = 0.0
    try:
        if watch:
            for line in proc.stderr:
                if line.startswith("live view: "):
                    driver = browser()
                    driver.get(line.removeprefix("live view: ").strip())
                    break
        while proc.poll() is None:
            now = cpu_seconds(proc.pid)
            last = now if now is not None else last
            time.sleep(0.2)
        proc.communicate(timeout=60)
    finally:
        if driver is not None:
            driver.quit()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(30)
    if proc.returncode != 0:
        raise SystemExit(f"lab run exited {proc.returncode}")
    return last, time.monotonic() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--duration", default="30s")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="watchcost-"))
    env = dict(os.environ, POOLER_LAB_HOME=str(home), NO_COLOR="1")
    rows: dict[bool, list[float]] = {False: [], True: []}
    try:
        lab("up", *WHERE, env=env)
        lab("watch", "--install-only", env=env)
        for pair in range(args.pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            for watch in order:
                cpu, wall = one_run(env, args.duration, watch, home / "reports")
                pct = 100.0 * cpu / wall
                rows[watch].append(pct)
                print(f"pair {pair + 1} {'with page   ' if watch else 'without page'} "
                      f"orchestrator CPU {cpu:6.2f} s over {wall:5.1f} s = {pct:5.2f}% of one "
                      "core", flush=True)
    finally:
        lab("down", "--volumes", env=env, check=False)
        shutil.rmtree(home, ignore_errors=True)
    without, with_page = statistics.median(rows[False]), statistics.median(rows[True])
    extra = with_page - without
    print(f"\nmedian without the page {without:.2f}% of one core, with the page open "
          f"{with_page:.2f}%: the page costs {extra:+.2f} points "
          f"({'meets' if extra < GOAL_PCT else 'misses'} the goal of {GOAL_PCT:g}%)")


if __name__ == "__main__":
    main()
