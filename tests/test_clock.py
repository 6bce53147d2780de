"""The run's one timebase (lab.clock): fixed offset, inherited by child processes."""

import os
import subprocess
import sys
import time

from lab import clock


def test_now_follows_the_monotonic_clock_from_one_wall_reading():
    a, p = clock.now(), time.perf_counter()
    assert abs(a - (clock.offset() + p)) < 0.01
    assert abs(clock.now() - time.time()) < 5  # no jump on a quiet machine


def test_a_child_shares_the_parents_offset_and_ignores_a_foreign_one():
    code = "from lab import clock; print(repr(clock.offset()))"
    env = dict(os.environ, **clock.environment())
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert float(out) == clock.offset()
    env[clock.ENV] = repr(clock.offset() - 10 * 86_400)  # another host's: not ours
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert abs(float(out) - clock.offset()) < 5
