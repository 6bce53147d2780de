"""Time `lab up` (image present) to all-healthy, and `lab down`, beside plain Compose.

The peer is `docker compose up --detach --wait` / `down` on the very files `lab up` rendered,
so the ratio is the lab's own overhead (settings, checks, rendering). Prints medians and
ratios; asserts nothing. Goal (issue 2): up under 15 s, down under 5 s on a 2-core machine.

    .venv/bin/python bench/stack_lifecycle.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "bench-lifecycle"


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="pooler-lab-bench-")
    env = dict(os.environ, POOLER_LAB_HOME=home)
    lab = [sys.executable, "-m", "lab"]
    where = ["--name", NAME, "--db-address", "127.0.9.2", "--pooler-address", "127.0.9.3"]
    sys.path.insert(0, str(ROOT))
    os.environ["POOLER_LAB_HOME"] = home
    from lab import resources, stack

    results: dict[str, list[float]] = {"lab up": [], "lab down": [], "compose up": [],
                                       "compose down": []}
    try:
        # A first, untimed up creates the data volume (initdb) as a user's first `lab up` does.
        subprocess.run([*lab, "up", *where], check=True, env=env, capture_output=True)
        subprocess.run([*lab, "down", "--name", NAME], check=True, env=env, capture_output=True)
        config_dir = Path(home) / NAME / "config"
        compose = [*stack.compose_command(), "--project-name", f"pooler-lab-{NAME}",
                   "--file", str(resources.compose_dir() / "compose.yaml"),
                   "--env-file", str(config_dir / "compose.env"),
                   "--project-directory", str(config_dir)]
        for _ in range(args.rounds):
            results["lab up"].append(timed([*lab, "up", *where], env))
            results["lab down"].append(timed([*lab, "down", "--name", NAME], env))
            results["compose up"].append(timed([*compose, "up", "--detach", "--wait"], env))
            results["compose down"].append(timed([*compose, "down", "--timeout", "5"], env))
    finally:
        subprocess.run([*lab, "down", "--name", NAME, "--volumes"], env=env,
                       capture_output=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"rounds: {args.rounds}, cores: {os.cpu_count()}")
    for key, values in results.items():
        print(f"{key:13s} median {med[key]:6.2f} s   (min {min(values):.2f}, "
              f"max {max(values):.2f})")
    print(f"lab up / compose up     ratio {med['lab up'] / med['compose up']:.2f}"
          f"   goal: lab up < 15 s -> {'met' if med['lab up'] < 15 else 'NOT met'}")
    print(f"lab down / compose down ratio {med['lab down'] / med['compose down']:.2f}"
          f"   goal: lab down < 5 s -> {'met' if med['lab down'] < 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
