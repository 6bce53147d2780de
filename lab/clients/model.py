"""What a driver file declares (Driver, Variant) and what the matrix records (Cell)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# What a cell can show, in the matrix's words.
WORKS = "works"
FAILS = "fails"  # the driver raised: its own exception class and message are recorded
WRONG = "wrong"  # no exception, but a result that is not what the query asked for
HANGS = "hangs"  # no answer within the cell's timeout; the child process was killed
CRASHED = "crashed"  # the child process died without a result (exit code recorded)
NOT_INSTALLED = "not installed"  # the driver's packages are missing and could not be installed
NOT_TESTABLE = "not testable"  # the driver cannot run on this machine at all (reason recorded)
OUTCOMES = (WORKS, FAILS, WRONG, HANGS, CRASHED, NOT_INSTALLED, NOT_TESTABLE)
# Outcomes that say something about the endpoint; the others are about the driver or machine.
ENDPOINT_OUTCOMES = (WORKS, FAILS, WRONG, HANGS)

ECOSYSTEMS = ("pip", "npm", "system")


@dataclass(frozen=True)
class Variant:
    """One way of using a driver: its defaults, or one documented fix."""

    key: str  # lowercase, digits and hyphens: ``default``, ``prepare-threshold-none``
    label: str  # what the row says: ``prepare_threshold=None``
    run: Callable[..., Any]  # run(workload, options): sync or async; runs in the cell child
    fix: str = ""  # the documented fix this variant applies ("": the driver's defaults)
    options: dict[str, Any] = field(default_factory=dict)  # handed to run()


@dataclass(frozen=True)
class Driver:
    """A driver file's ``DRIVER``: the driver, how it installs, its variants."""

    name: str  # the file's name with hyphens: ``node-postgres``
    title: str  # ``node-postgres (pg)``
    variants: tuple[Variant, ...]
    ecosystem: str = "pip"  # pip | npm | system
    packages: tuple[str, ...] = ()  # pinned: ``asyncpg==0.32.0``, ``pg@8.23.1``; system: programs
    docs: str = ""  # where the driver documents its pooler settings
    untestable: str = ""  # set when the driver cannot run here at all: the reason
    # Installed distributions to record beside ``packages`` (unpinned: the lab's own psycopg)
    also_record: tuple[str, ...] = ()

    def variant(self, key: str) -> Variant:
        for v in self.variants:
            if v.key == key:
                return v
        raise KeyError(key)


@dataclass
class Cell:
    """One driver variant on one endpoint."""

    outcome: str
    error_class: str = ""  # the driver's own exception class, module-qualified
    message: str = ""  # its message's first line (or why the driver could not run)
    where: str = ""  # the workload step that failed: ``repeat 6, client b``
    seconds: float = 0.0
    rescued_by: str = ""  # set by --prepared: the pooler setting that made a failure work

    def to_json(self) -> dict[str, Any]:
        data = {"outcome": self.outcome, "seconds": round(self.seconds, 3)}
        for key in ("error_class", "message", "where", "rescued_by"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cell:
        return cls(outcome=str(data.get("outcome", CRASHED)),
                   error_class=str(data.get("error_class", "")),
                   message=str(data.get("message", "")), where=str(data.get("where", "")),
                   seconds=float(data.get("seconds", 0.0)),
                   rescued_by=str(data.get("rescued_by", "")))
