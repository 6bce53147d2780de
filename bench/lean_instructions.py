"""Instructions per request of the lab's Locust process and of plain Locust, counted by valgrind.

Issue "Scale", a lean load path. On these machines CPU time moves several percent between two
runs a minute apart (bench/lean_path.py needs seven rounds for a median), and they have no
hardware counters. Valgrind's callgrind counts the instructions a process executes in user
space, the same count every time for the same work: the lab's request path and its recording
can be weighed to a fraction of a percent. What it cannot see: the kernel (both tools make the
same system calls per request: strace, docs/benchmarks.md) and the cost of cache misses.

Each tool runs alone under callgrind (about 50x slower, so about 140 requests/s): the lab's
Locust child exactly as `lab run` starts it (lab.run.child: its command line with --csv, its
environment, recording to a run directory) with bench/locust_select1.py, mode=persistent, and
plain Locust with bench/locust_plain.py, each --clients users on one held connection, SELECT 1
through the transaction pooler. Counting is switched on for --window seconds once the load
runs, at two rates: back to back, and paced at --slow requests/s per user. Per request, a
process spends ``a`` instructions and, whatever the rate, ``b`` a second (the chunk written
once a second, Locust's statistics); two rates give both, and the ratio printed is plain/lab of
``a + b / R`` at --rate R requests/s, the rate bench/lean_path.py paces both tools to. The lab's
orchestrator (connection sampler, live counters) is not in it: bench/lean_path.py measures it.

Brings up its own lab (--name bench-lean on 127.0.8.2/127.0.8.3, its own POOLER_LAB_HOME) and
always takes it down with its volumes. Asserts nothing.

    .venv/bin/python bench/lean_instructions.py [--window 40 --clients 8 --slow 5 --rate 1200]
        [--keep DIR]   # each window's callgrind file, for callgrind_annotate
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lean_path import ENDPOINT, NAME, bring_up  # noqa: E402
from load_vs_pgbench import GOAL_CPU, LOCUSTFILE, PLAIN  # noqa: E402

WARM_S = 25.0  # imports and connections under valgrind, then a steady load


def _marks(path: Path) -> list[tuple[float, float]]:
    return [tuple(map(float, line.split())) for line in path.read_text().splitlines()
            if len(line.split()) == 2]


def _commands(tool: str, args: argparse.Namespace, rate: float, uris: dict[str, str],
              work: Path) -> tuple[list[str], dict[str, str]]:
    seconds = int(WARM_S + args.window + 10)
    counts = str(work / "counts")
    if tool == "plain":
        return ([sys.executable, "-m", "locust", "-f", str(PLAIN), "--headless", "-u",
                 str(args.clients), "-r", str(args.clients), "-t", f"{seconds}s",
                 "--only-summary", "--stop-timeout", "5", "--loglevel", "WARNING"],
                dict(os.environ, PLAIN_URI=uris[ENDPOINT], PLAIN_MODE="persistent",
                     PLAIN_COUNTS=counts, PLAIN_USER_RATE=f"{rate:g}"))
    from lab.run import child
    from lab.run.spec import RunSpec

    spec = RunSpec(scenario=str(LOCUSTFILE), duration_s=seconds)
    run_dir = work / "run"
    (run_dir / "locust").mkdir(parents=True)
    params = {"mode": "persistent", "user_rate": rate}
    argv = child.argv(spec, LOCUSTFILE, f"select1-{ENDPOINT}", args.clients, args.clients,
                      run_dir)
    env = child.environment(spec, "select1", params, ENDPOINT, uris, run_dir, 1)
    env["BENCH_COUNTS"] = counts
    return argv, env


def count(tool: str, args: argparse.Namespace, rate: float, uris: dict[str, str]
          ) -> tuple[float, float]:
    """(instructions, requests) of ``tool`` over the counting window."""
    work = Path(tempfile.mkdtemp(prefix=f"lean-ir-{tool}-"))
    out = work / "callgrind.out"
    argv, env = _commands(tool, args, rate, uris, work)
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                             f"--callgrind-out-file={out}", *argv], env=env, cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(WARM_S)
        if proc.poll() is not None or not (work / "counts").exists():
            sys.exit(f"{tool} did not start under valgrind:\n{proc.communicate()[1][-2000:]}")
        def control(*what: str) -> None:
            subprocess.run(["callgrind_control", *what, str(proc.pid)], check=True,
                           capture_output=True)

        control("-i", "on")
        t1 = time.time()
        time.sleep(args.window)
        t2 = time.time()
        control("-i", "off")
        control("-d")
        time.sleep(1.0)  # the counts file's next line
        ts, ns = zip(*_marks(work / "counts"), strict=True)
        requests = float(np.interp(t2, ts, ns) - np.interp(t1, ts, ns))
        dumps = sorted(work.glob("callgrind.out.*"))
        totals = [line for line in dumps[-1].read_text().splitlines()
                  if line.startswith(("totals:", "summary:"))]
        instructions = float(totals[-1].split()[1])
        if args.keep:  # for callgrind_annotate: where the instructions went, by function
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(dumps[-1], Path(args.keep) / f"{tool}-{rate:g}.callgrind")
            (Path(args.keep) / f"{tool}-{rate:g}.requests").write_text(f"{requests:.0f}\n")
        proc.wait(timeout=WARM_S + args.window + 120)
        return instructions, requests
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=40.0, help="seconds counted")
    parser.add_argument("--clients", type=int, default=8, help="users of each tool")
    parser.add_argument("--slow", type=float, default=5.0,
                        help="requests/s of each user in the paced runs")
    parser.add_argument("--rate", type=float, default=1200.0,
                        help="requests/s the ratio is taken at (a + b / rate)")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep each window's callgrind file (and its request count) in DIR")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind")
    home = tempfile.mkdtemp(prefix="pooler-lab-bench-lean-ir-")
    env = dict(os.environ, POOLER_LAB_HOME=home)
    lab = [sys.executable, "-m", "lab"]
    started = time.perf_counter()
    fits = {}
    try:
        uris = bring_up(env)
        os.environ["POOLER_LAB_HOME"] = home
        for tool in ("plain", "lab"):
            runs = [count(tool, args, rate, uris) for rate in (0.0, args.slow)]
            (i1, n1), (i2, n2) = runs
            a = (i1 - i2) / (n1 - n2)  # instructions per request
            b = (i1 - a * n1) / args.window  # and per second, whatever the rate
            fits[tool] = (a, b)
            print(f"{tool:<6} {n1 / args.window:5.0f} and {n2 / args.window:4.0f} requests/s "
                  f"counted: {a:9,.0f} instructions a request + {b / 1e6:5.2f} M a second",
                  flush=True)
    finally:
        subprocess.run([*lab, "down", "--name", NAME, "--volumes"], env=env,
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    at = {tool: a + b / args.rate for tool, (a, b) in fits.items()}
    ratio = at["plain"] / at["lab"]
    print(f"\n{time.strftime('%Y-%m-%d')}  valgrind callgrind, user-space instructions "
          f"({(time.perf_counter() - started) / 60:.1f} min)")
    print(f"at {args.rate:,.0f} requests/s: lab {at['lab']:,.0f}, plain Locust "
          f"{at['plain']:,.0f} instructions a request; plain/lab {ratio:.3f}  goal >= "
          f"{GOAL_CPU}: {'met' if ratio >= GOAL_CPU else 'NOT met'} (in instructions)")
    print(f"the lab's extra: {fits['lab'][0] - fits['plain'][0]:,.0f} a request, "
          f"{(fits['lab'][1] - fits['plain'][1]) / 1e6:.2f} M a second")


if __name__ == "__main__":
    main()
