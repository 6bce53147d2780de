"""Faults during a run: ``lab run --fault AT:TARGET:ACTION[:DURATION]``.

* ``lab.faults.spec``: the pure part (parse, validate, describe).
* ``lab.faults.actions``: what a fault does to the lab (Docker SDK, PgBouncer admin consoles),
  and how it is undone.
* ``lab.faults.injector``: the schedule of one segment, on its own thread, with every inject and
  recover written to ``faults.jsonl``.
"""

from lab.faults.spec import (
    ACTIONS,
    ADMIN_ACTIONS,
    ADMIN_TARGETS,
    CONTAINER_ACTIONS,
    CONTAINER_TARGETS,
    FaultSpec,
    check_within,
    describe,
    parse_fault,
    parse_faults,
)

__all__ = [
    "ACTIONS", "ADMIN_ACTIONS", "ADMIN_TARGETS", "CONTAINER_ACTIONS", "CONTAINER_TARGETS",
    "FaultSpec", "check_within", "describe", "parse_fault", "parse_faults",
]
