"""A soak: one long mixed run with a fault every two minutes, watching the lab's own processes.

Issue "Faults mid-run", reliability of the lab under long runs: `lab run mixed` for --minutes
(default 10) on one segment (`-e transaction`; mixed routes its app servers to direct and its
invocations to the transaction pooler), with one fault every --fault-every seconds (default
120), varied and never two at once on one target: pooler restart, db fast restart, a 5 s PAUSE
of the transaction pool, the pooler killed for 5 s, db paused for 5 s, then again. Every 10 s
the bench records, from /proc, the resident memory (VmRSS) and open file descriptors of the
orchestrator (the `lab run` child process) and the sum over its Locust descendants, into
soak.csv beside the run directory. Then:

1. accounting: for every segment of `lab report --json`, scheduled = succeeded + failed (by
   class) + not_started; and, independently of the analysis, the arrivals the schedule holds
   (computed from lab.schedule with the run's parameters and seed, as tests/test_accounting.py
   does) = the raw rows per workload; and the manifest's unserved = the not_started rows;
2. faults.jsonl: one inject line per fault, one recover line per fault that can be undone, all
   ok;
3. `lab report RUN_DIR` (the whole report: figures, HTML, Markdown) timed in a fresh process.

Goals: memory and descriptors flat after the first minute (the least-squares slope of the
samples from minute 1 to the load's end, MB/min and fds/min), no sample lost (1), report under
10 s. Brings up its own lab (--name soak on 127.0.66.2/127.0.66.3, its own POOLER_LAB_HOME)
and always takes it down with its volumes. Prints the samples, slopes and verdicts; asserts
nothing. With --plot, also soak.png (matplotlib) beside soak.csv.

    .venv/bin/python bench/soak.py [--minutes 10 --fault-every 120 --out DIR --plot]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "soak"
WHERE = ["--db-address", "127.0.66.2", "--pooler-address", "127.0.66.3"]
SEED = 1
USERS = 40
# Moderate for 2 cores: 2 app servers x 20/s on direct, invocations 5/s (60/s in spikes).
PARAMS = {"spike_rate": "60", "base_rate": "5", "rate_per_server": "20"}
# One fault per slot, in this order (then again); none overlaps the next on its target.
FAULTS = ["pooler:restart", "db:fast-restart", "transaction:pool-pause:5s", "pooler:kill:5s",
          "db:pause:5s"]
INSTANT = ("restart", "fast-restart", "reconnect", "reload")
SAMPLE_S = 10.0
GOAL_REPORT_S = 10.0
# "Flat": less than this growth per minute after the first minute.
GOAL_MB_PER_MIN = 1.0
GOAL_FDS_PER_MIN = 1.0


# -- /proc -------------------------------------------------------------------------------------


def proc_children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids[ppid].append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    kids, out, todo = proc_children(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def fd_kinds(pid: int) -> str:
    """The open descriptors by kind, e.g. "socket 12 pipe 6 file 4 anon_inode 3"."""
    kinds: collections.Counter = collections.Counter()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                kinds[link.split(":", 1)[0] if ":" in link and not link.startswith("/")
                      else "file"] += 1
    except OSError:
        return ""
    return " ".join(f"{k} {n}" for k, n in kinds.most_common())


def sample(orchestrator: int, t: float) -> dict:
    locusts = [p for p in descendants(orchestrator) if "locust" in cmdline(p)]
    mem = [rss_mb(p) for p in locusts]
    fd = [fds(p) for p in locusts]
    return {"t_s": round(t, 1), "orch_rss_mb": rss_mb(orchestrator), "orch_fds": fds(orchestrator),
            "locust_procs": sum(1 for m in mem if m is not None),
            "locust_rss_mb": sum(m for m in mem if m is not None) if locusts else None,
            "locust_fds": sum(n for n in fd if n is not None) if locusts else None,
            "orch_fd_kinds": fd_kinds(orchestrator)}


# -- the run -----------------------------------------------------------------------------------


def fault_plan(seconds: float, every: float) -> list[str]:
    plan, k = [], 1
    while k * every < seconds:
        plan.append(f"{k * every:g}s:{FAULTS[(k - 1) % len(FAULTS)]}")
        k += 1
    return plan


def lab(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, stdin=subprocess.DEVNULL)


def soak(env: dict, out: Path, seconds: int, faults: list[str]) -> tuple[Path, list[dict]]:
    argv = [sys.executable, "-m", "lab", "run", "mixed", "--name", NAME, "-e", "transaction",
            "--duration", f"{seconds}s", "--users", str(USERS), "--seed", str(SEED),
            "--cooldown", "0s", "--reports-dir", str(out / "reports")]
    for key, value in PARAMS.items():
        argv += ["-P", f"{key}={value}"]
    for fault in faults:
        argv += ["--fault", fault]
    rows: list[dict] = []
    log = out / "lab-run.log"
    with open(log, "w") as stdout:
        started = time.monotonic()
        child = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=stdout,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while child.poll() is None:
                row = sample(child.pid, time.monotonic() - started)
                rows.append(row)
                print("  " + line(row), flush=True)
                deadline = started + len(rows) * SAMPLE_S
                while child.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.2)
        finally:
            if child.poll() is None:
                child.terminate()
                child.wait(60)
    text = log.read_text()
    lines = text.strip().splitlines()
    if child.returncode != 0 or not lines or not Path(lines[-1]).is_dir():
        sys.exit(f"lab run failed ({child.returncode}):\n{text[-3000:]}")
    return Path(lines[-1]), rows


def line(row: dict) -> str:
    def f(v, spec):
        return format(v, spec) if v is not None else "-"

    return (f"{row['t_s']:6.0f} s  orchestrator {f(row['orch_rss_mb'], '6.1f')} MB "
            f"{f(row['orch_fds'], '4d')} fds   Locust x{row['locust_procs']} "
            f"{f(row['locust_rss_mb'], '6.1f')} MB {f(row['locust_fds'], '4d')} fds")


# -- the checks --------------------------------------------------------------------------------


def accounting(env: dict, run_dir: Path, seconds: int) -> tuple[bool, list[str]]:
    from lab import samples, scenarios
    from lab import schedule as schedmod

    notes, ok = [], True
    done = lab(env, "report", str(run_dir), "--json")
    if done.returncode != 0:
        return False, [f"lab report --json failed: {done.stderr.strip()[-500:]}"]
    for seg in json.loads(done.stdout)["segments"]:
        outcome = seg["succeeded"] + sum(seg["failed"].values()) + seg["not_started"]
        holds = seg["scheduled"] == outcome
        ok &= holds
        notes.append(f"report {seg['phase']:>10} on {seg['endpoint']:<11}: scheduled "
                     f"{seg['scheduled']:,} = succeeded {seg['succeeded']:,} + failed "
                     f"{sum(seg['failed'].values()):,} {dict(seg['failed'])} + not started "
                     f"{seg['not_started']:,}: {'holds' if holds else 'DOES NOT HOLD'}")
    # Independently of the analysis: the schedule's arrivals against the raw rows.
    rows = samples.read_requests(run_dir, columns=["phase", "endpoint", "ok", "error_class"])
    by_phase = collections.Counter(rows.column("phase").to_pylist())
    not_started = sum(1 for c in rows.column("error_class").to_pylist() if c == "not_started")
    params = scenarios.resolve("mixed").coerce(PARAMS)
    share, seed, phase = schedmod.worker_share(schedmod.from_params(params), SEED, 0, 1,
                                               stream="serverless")
    invocations = sum(1 for _ in schedmod.arrivals(share, seed, phase=phase, until=seconds))
    sched = json.loads(next((run_dir / "schedule").glob("mixed.transaction-0.json")).read_text())
    server = schedmod.Schedule(base_rate=float(params["rate_per_server"]),
                               poisson=params["arrivals"] != "even")
    requests = sum(1 for s in sched["servers"]
                   for _ in schedmod.arrivals(server, s["seed"], until=seconds - s["start_s"]))
    for name, want in (("serverless", invocations), ("persistent", requests)):
        got = by_phase.get(name, 0)
        ok &= got == want
        notes.append(f"schedule {name:>10}: {want:,} arrivals, {got:,} rows: "
                     f"{'holds' if got == want else 'DOES NOT HOLD'}")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    unserved = sum(s.get("unserved") or 0 for s in manifest["segments"])
    ok &= unserved == not_started
    notes.append(f"manifest unserved {unserved:,}, not_started rows {not_started:,}: "
                 f"{'holds' if unserved == not_started else 'DOES NOT HOLD'}")
    return ok, notes


def fault_events(run_dir: Path, faults: list[str]) -> tuple[bool, list[str]]:
    path = run_dir / "faults.jsonl"
    events = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    ok, notes = True, []
    for fault in faults:
        mine = [e for e in events if e["fault"] == fault]
        phases = [e["phase"] for e in mine]
        want = ["inject"] if fault.split(":")[2] in INSTANT else ["inject", "recover"]
        good = phases == want and all(e["ok"] for e in mine)
        ok &= good
        notes.append(f"{fault:<28} " + "; ".join(
            f"{e['phase']} {'ok' if e['ok'] else 'FAILED'} "
            f"(took {e['done_t'] - e['t']:.2f} s, {e['t'] - e['planned_t']:.2f} s late): "
            f"{e.get('answer') or e.get('error')}" for e in mine)
            + ("" if good else f"  (want {'+'.join(want)})"))
    stray = [e for e in events if e["fault"] not in faults]
    if stray:
        ok = False
        notes.append(f"{len(stray)} events of faults not asked for")
    return ok, notes


def report_time(env: dict, run_dir: Path) -> tuple[float, float]:
    """Wall and CPU seconds of `lab report RUN_DIR` in a fresh process."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = lab(env, "report", str(run_dir))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        print(f"lab report failed:\n{done.stdout[-1000:]}{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def slope(rows: list[dict], key: str, since: float) -> float | None:
    """Least squares, per minute, of the samples from `since` on."""
    pts = [(r["t_s"], r[key]) for r in rows if r["t_s"] >= since and r[key] is not None]
    if len(pts) < 3:
        return None
    n = len(pts)
    mx = sum(t for t, _ in pts) / n
    my = sum(v for _, v in pts) / n
    sxx = sum((t - mx) ** 2 for t, _ in pts)
    return sum((t - mx) * (v - my) for t, v in pts) / sxx * 60.0 if sxx else None


def at(rows: list[dict], t: float) -> dict | None:
    before = [r for r in rows if r["t_s"] <= t + SAMPLE_S / 2]
    return before[-1] if before else None


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    t = [r["t_s"] / 60 for r in rows]
    for key, label in (("orch_rss_mb", "orchestrator"), ("locust_rss_mb", "Locust")):
        top.plot(t, [r[key] for r in rows], label=label)
    for key, label in (("orch_fds", "orchestrator"), ("locust_fds", "Locust")):
        bottom.plot(t, [r[key] for r in rows], label=label)
    top.set_ylabel("RSS (MB)")
    bottom.set_ylabel("open fds")
    bottom.set_xlabel("minutes since lab run started")
    top.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="load time")
    parser.add_argument("--fault-every", type=float, default=120.0, help="seconds")
    parser.add_argument("--out", type=Path, default=None,
                        help="where soak.csv, the run directory and the log go "
                             "(default: a new /tmp/pooler-lab-soak-* directory, kept)")
    parser.add_argument("--plot", action="store_true", help="also draw soak.png")
    args = parser.parse_args()
    seconds = round(args.minutes * 60)
    faults = fault_plan(seconds, args.fault_every)
    out = args.out or Path(tempfile.mkdtemp(prefix="pooler-lab-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix="pooler-lab-soak-home-")
    env = dict(os.environ, POOLER_LAB_HOME=home, NO_COLOR="1")
    env.pop("LAB_RUN_DIR", None)
    load_before = os.getloadavg()
    print(f"soak: mixed on -e transaction for {seconds} s, users {USERS}, "
          f"{' '.join(f'-P {k}={v}' for k, v in PARAMS.items())}, faults {' '.join(faults)}; "
          f"output in {out}", flush=True)
    try:
        done = lab(env, "up", "--name", NAME, *WHERE)
        if done.returncode != 0:
            sys.exit(f"lab up failed:\n{done.stdout}{done.stderr}")
        run_dir, rows = soak(env, out, seconds, faults)
    finally:
        lab(env, "down", "--name", NAME, "--volumes")
        shutil.rmtree(home, ignore_errors=True)
    load_after = os.getloadavg()
    with open(out / "soak.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if args.plot:
        plot(rows, out / "soak.png")

    # The load's end: the last sample with Locust alive.
    loaded = [r for r in rows if r["locust_procs"]]
    first_load = loaded[0]["t_s"] if loaded else 0.0
    since = first_load + 60.0
    acc_ok, acc_notes = accounting(env, run_dir, seconds)
    faults_ok, fault_notes = fault_events(run_dir, faults)
    wall, cpu = report_time(env, run_dir)

    print()
    print(f"{dt.date.today()}  {os.cpu_count()} cores  load average {load_before[0]:.1f} "
          f"before, {load_after[0]:.1f} after; run {run_dir}")
    print(f"Locust first seen at {first_load:.0f} s, last at "
          f"{loaded[-1]['t_s'] if loaded else 0:.0f} s after `lab run` started")
    print()
    print(f"{'minute':>7} {'t (s)':>6} {'orch MB':>8} {'orch fds':>8} {'Locust MB':>10} "
          f"{'Locust fds':>10}")
    for minute in sorted({m for m in (1, 2, 5) if m < args.minutes} | {round(args.minutes)}):
        r = at(loaded, first_load + minute * 60.0)
        if r:
            print(f"{minute:7d} {r['t_s']:6.0f} {r['orch_rss_mb'] or 0:8.1f} "
                  f"{r['orch_fds'] or 0:8d} {r['locust_rss_mb'] or 0:10.1f} "
                  f"{r['locust_fds'] or 0:10d}")
    first = at(loaded, first_load + 60.0)
    if first and loaded:
        print(f"orchestrator descriptors at minute 1: {first['orch_fd_kinds']}; at the end: "
              f"{loaded[-1]['orch_fd_kinds']}")
    print()
    flat = True
    for key, unit, goal in (("orch_rss_mb", "MB/min", GOAL_MB_PER_MIN),
                            ("orch_fds", "fds/min", GOAL_FDS_PER_MIN),
                            ("locust_rss_mb", "MB/min", GOAL_MB_PER_MIN),
                            ("locust_fds", "fds/min", GOAL_FDS_PER_MIN)):
        s = slope(loaded, key, since)
        met = s is not None and s < goal
        flat &= met
        values = [r[key] for r in loaded if r["t_s"] >= since and r[key] is not None]
        span = f"{min(values):g}..{max(values):g}" if values else "-"
        print(f"slope after minute 1, {key:<14}: "
              f"{'-' if s is None else format(s, '+.3f')} {unit} (range {span}); "
              f"goal < {goal:g}: {'met' if met else 'NOT met'}")
    print()
    print("accounting:")
    for note in acc_notes:
        print("  " + note)
    print("faults.jsonl:")
    for note in fault_notes:
        print("  " + note)
    print()
    print(f"memory and descriptors flat after the first minute: {'met' if flat else 'NOT met'}")
    print(f"no sample lost (accounting): {'met' if acc_ok else 'NOT met'}; "
          f"every fault injected and recovered: {'yes' if faults_ok else 'NO'}")
    print(f"lab report build: {wall:.2f} s wall, {cpu:.2f} s CPU; goal < {GOAL_REPORT_S:g} s: "
          f"{'met' if wall < GOAL_REPORT_S else 'NOT met'}")
    print(f"samples: {out / 'soak.csv'}" + (f", plot: {out / 'soak.png'}" if args.plot else ""))


if __name__ == "__main__":
    main()
