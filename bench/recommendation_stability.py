"""Does the recommendation hold still? The same `lab bench` command N times on one lab.

Issue 8's target: the same command on a quiet 2-core machine gives the same recommendation in
5 runs out of 5. This brings up its own lab (its own name and loopback addresses), runs the
bench N times with the same seed, reads each run's recommendations through
`lab report RUN_DIR --json`, and prints them with the count of runs that agree with the most
common answer, per workload. The old rule (lowest p95 wins) is printed beside it, from the same
runs, as the peer. Asserts nothing; the count goes into docs/benchmarks.md.

    .venv/bin/python bench/recommendation_stability.py [--runs 5] [--duration 12s]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

NAME = "bench-stability"
WHERE = ["--db-address", "127.0.9.12", "--pooler-address", "127.0.9.13"]


def lab(*args: str, env: dict[str, str], capture: bool = True) -> str:
    proc = subprocess.run([sys.executable, "-m", "lab", *args], env=env, text=True,
                          stdin=subprocess.DEVNULL,
                          capture_output=capture, check=True)
    return proc.stdout if capture else ""


def lowest_p95(segments: list[dict], scenario: str) -> str | None:
    """The rule the lab used before: the served endpoint with the lowest p95 total time."""
    served = [s for s in segments if s["scenario"] == scenario and s["scheduled"]
              and sum(s["failed"].values()) / s["scheduled"] <= 0.01
              and s["latency_ms"]["p95"]["value"] is not None]
    return min(served, key=lambda s: s["latency_ms"]["p95"]["value"])["endpoint"] \
        if served else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", default="12s", help="per segment (lab bench --duration)")
    parser.add_argument("--repeat", type=int, default=1, help="lab bench --repeat")
    parser.add_argument("--tier", default="micro")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="pooler-lab-stability-")
    reports = Path(home) / "reports"
    env = dict(os.environ, POOLER_LAB_HOME=home, NO_COLOR="1")
    picks: dict[str, list[str]] = collections.defaultdict(list)
    old: dict[str, list[str]] = collections.defaultdict(list)
    try:
        lab("up", "--name", NAME, "--tier", args.tier, *WHERE, env=env)
        for i in range(args.runs):
            out = lab("bench", "--quick", "--name", NAME, "--duration", args.duration,
                      "--repeat", str(args.repeat), "--reports-dir", str(reports), env=env)
            run_dir = Path(out.strip().splitlines()[-1]).parent
            data = json.loads(lab("report", str(run_dir), "--json", env=env))
            for rec in data["recommendations"]:
                key = f"{rec['scenario']} ({rec['workload']})"
                picks[key].append(rec["endpoint"] or "none")
                old[key].append(lowest_p95(data["segments"], rec["scenario"]) or "none")
                print(f"run {i + 1}: {key}: {rec['endpoint']} - {rec['reason']}", flush=True)
    finally:
        subprocess.run([sys.executable, "-m", "lab", "down", "--name", NAME, "--volumes"],
                       env=env, capture_output=True)
    print(f"\nruns: {args.runs}, duration {args.duration} per segment, repeat {args.repeat}, "
          f"tier {args.tier}, cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    for key, values in picks.items():
        answer, count = collections.Counter(values).most_common(1)[0]
        old_answer, old_count = collections.Counter(old[key]).most_common(1)[0]
        print(f"{key:40s} {count}/{len(values)} runs recommend {answer:12s} "
              f"(lowest-p95 rule: {old_count}/{len(values)} pick {old_answer}; "
              f"all: {', '.join(old[key])})")


if __name__ == "__main__":
    main()
