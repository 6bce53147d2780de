"""Time `lab report` on a synthetic run of one million requests, and its peak memory.

The run directory comes from lab.synthetic (the real formats: manifest/1, a requests/1 Parquet
file of 1,000,000 rows over two scenarios and four endpoints, connection samples with a gap).
Each round builds the whole report (analysis, 10 figures as PNG and SVG, HTML and Markdown) in
a fresh child process, as `lab report` does, and reads the child's peak RSS (getrusage
ru_maxrss), that of the largest of its figure-drawing workers, and the CPU time of all of them.
The peer is the least any report must do: the same child reading the Parquet file and computing
the summary percentiles with numpy alone, without figures or documents. Prints medians and
ratios; asserts nothing. Goal (issue 4): under 10 s and under 1 GB on a 2-core machine.

    .venv/bin/python bench/report_1m.py [--rounds 3] [--requests 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each child prints one JSON line: its own phase timings and peak RSS.
REPORT = """
import json, resource, sys, time
t0 = time.perf_counter()
from lab import analysis, plots, report
t1 = time.perf_counter()
paths = report.build_report(sys.argv[1])
t2 = time.perf_counter()
me = resource.getrusage(resource.RUSAGE_SELF)
workers = resource.getrusage(resource.RUSAGE_CHILDREN)  # the figure-drawing processes
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "maxrss": me.ru_maxrss,
                  "worker_maxrss": workers.ru_maxrss,
                  "cpu_s": me.ru_utime + me.ru_stime + workers.ru_utime + workers.ru_stime,
                  "files": len(paths.figures) + 2}))
"""

PEER = """
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
import pyarrow.parquet as pq
t1 = time.perf_counter()
table = pq.read_table(sys.argv[1] + "/requests.parquet",
                      columns=["scenario", "phase", "endpoint", "ok", "connect_ms", "query_ms",
                               "total_ms"]).unify_dictionaries().combine_chunks()
codes = [table.column(c).chunk(0).indices.to_numpy() for c in ("scenario", "phase", "endpoint")]
key = (codes[0] * 64 + codes[1]) * 64 + codes[2]
ok = table.column("ok").to_numpy()
out = []
for k in np.unique(key):
    rows = (key == k) & ok
    for name in ("connect_ms", "query_ms", "total_ms"):
        values = table.column(name).to_numpy()[rows]
        values = values[~np.isnan(values)]
        out.append(np.percentile(values, [50, 95, 99]).tolist() + [values.max()])
t2 = time.perf_counter()
me = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "maxrss": me.ru_maxrss,
                  "worker_maxrss": 0, "cpu_s": me.ru_utime + me.ru_stime, "files": 0}))
"""


def child(code: str, run_dir: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(run_dir)], cwd=ROOT, check=True,
                          capture_output=True, text=True)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    data["wall_s"] = time.perf_counter() - started
    # ru_maxrss is KiB on Linux, bytes on macOS
    unit = 2**20 if sys.platform == "darwin" else 2**10
    data["rss_mb"] = data["maxrss"] / unit
    data["worker_rss_mb"] = data["worker_maxrss"] / unit
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1_000_000)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from lab import synthetic

    with tempfile.TemporaryDirectory(prefix="pooler-lab-bench-report-") as tmp:
        run_dir = Path(tmp) / "run"
        started = time.perf_counter()
        synthetic.make_run(run_dir, requests=args.requests)
        size = (run_dir / "requests.parquet").stat().st_size
        print(f"synthetic run: {args.requests:,} requests, requests.parquet "
              f"{size / 2**20:.1f} MiB, made in {time.perf_counter() - started:.1f} s")
        results: dict[str, list[dict]] = {"lab report": [], "peer (pyarrow + numpy)": []}
        for _ in range(args.rounds):
            results["lab report"].append(child(REPORT, run_dir))
            results["peer (pyarrow + numpy)"].append(child(PEER, run_dir))
    print(f"machine: {platform.machine()}, {platform.system()} {platform.release()}, "
          f"Python {platform.python_version()}; median of {args.rounds} rounds")
    print(f"{'':24} {'wall':>8} {'imports':>8} {'work':>8} {'CPU':>8} {'peak RSS':>10} "
          f"{'worker RSS':>11}")
    medians = {}
    for name, rounds in results.items():
        wall = statistics.median(r["wall_s"] for r in rounds)
        imports = statistics.median(r["import_s"] for r in rounds)
        work = statistics.median(r["build_s"] for r in rounds)
        cpu = statistics.median(r["cpu_s"] for r in rounds)
        rss = statistics.median(r["rss_mb"] for r in rounds)
        worker = statistics.median(r["worker_rss_mb"] for r in rounds)
        medians[name] = (wall, rss)
        print(f"{name:24} {wall:7.2f}s {imports:7.2f}s {work:7.2f}s {cpu:7.2f}s {rss:6.0f} MiB "
              f"{worker:7.0f} MiB")
    (wall, rss), (peer_wall, peer_rss) = medians.values()
    print(f"ratio lab report / peer: wall {wall / peer_wall:.2f}, peak RSS {rss / peer_rss:.2f}")
    print(f"goal: under 10 s and under 1 GB -> wall {wall:.2f} s, peak RSS {rss:.0f} MiB "
          "(the report process; each figure worker peaks lower)")
    print(f"load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
