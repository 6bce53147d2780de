"""`lab experiment`: each transaction-pooling pitfall and each documented limit, demonstrated on
the live stack and checked.

An experiment is data (name, title, the question for the room, the lanes it compares, what each
lane is expected to show, the fix) plus one small function that runs it and returns what each
lane showed. A lane is one column of the side-by-side comparison: usually an endpoint
(``direct``, ``session``, ``transaction``, ``dedicated``), sometimes an endpoint under a setting
or with a fix applied (``dedicated-mps-100``, ``transaction-set-local``).

Outcomes are short, exact strings: a token such as ``other-backend`` or, for the limits, the
server's error text itself (``sorry, too many clients already``). An experiment passes when every
lane's observed outcome equals its expected one.

The machinery, one module per job:

* ``model``: Lane, Observation, Experiment, and the results (LaneResult, ExperimentResult);
* ``context``: what an experiment's function works with (connections, admin consoles, runtime
  SETs and their restore journal) and the server's own error texts;
* ``patterns``: what several experiments share (POOL2, outcome tokens, a later transaction
  with another client in between, ``per_lane``, ``state_lost``);
* ``discovery``: finding and loading experiment files, the catalogue, ``--expect``;
* ``runner``: the lock, settings, restore and clean-up around each experiment; the verdict;
* ``guide``: the workshop guide section and the JSON catalogue.

Experiment files
----------------

Each experiment is one file that defines ``EXPERIMENT = Experiment(...)``, importing what it
needs from this package (``from lab.experiments import Experiment, per_lane, ...``). The file
name gives the name: ``my_check.py`` must define ``name="my-check"``; a leading number
(``03_sql_prepare.py``) only orders the files. Files whose name starts with ``_`` are skipped.

* Built in: the ``experiments/`` folder beside ``scenarios/`` (a wheel carries it as
  ``lab/_data/experiments``), in workshop order by their number: docs/workshop.md is generated
  from that order.
* Yours, by path, as for locustfiles: ``lab experiment run ./my_check.py`` runs a file that is
  in no catalogue (``--expect my-check.LANE=...`` works for it too).
* Yours, in the catalogue: ``POOLER_LAB_EXPERIMENTS`` names folders (or single files),
  separated by ``os.pathsep``; drop a file into such a folder and ``lab experiment list``
  shows it after the built-in ones, ``--all`` runs it and ``run NAME`` finds it. An environment
  variable and not a folder found on its own: these files are imported (they are code, unlike
  scenarios, which are read with ``ast``), so nothing runs that the user did not name.

Experiment files run in the orchestrator process: psycopg only through ``lab.pg``, and never
``locust`` or ``gevent``. Names must be unique; a name a file does not match, duplicate or bad
lane keys, and settings on a non-pooler are one-line errors when the file is loaded.
"""

from __future__ import annotations

from typing import Any

from lab.experiments.context import (
    APP,
    RESTORE_FILE,
    Context,
    ExperimentSetupError,
    classified,
    describe_error,
    first_line,
    server_message,
)
from lab.experiments.discovery import (
    ENV_VAR,
    catalogue,
    get,
    load,
    names,
    parse_expect,
    resolve,
    select,
)
from lab.experiments.guide import (
    GUIDE_BEGIN,
    GUIDE_END,
    catalogue_json,
    guide_markdown,
    guide_section,
    update_guide,
)
from lab.experiments.model import (
    POOLERS,
    Experiment,
    ExperimentResult,
    Lane,
    LaneResult,
    Observation,
    results_json,
)
from lab.experiments.patterns import (
    ALL4,
    ISOLATED,
    LEAKED,
    MISSING,
    POOL2,
    QUERY_WAIT_TIMEOUT_ERROR,
    SERVED,
    WAIT_TIMEOUT_S,
    WORKS,
    backends,
    connect_until_refused,
    endpoint_lanes,
    later_transaction,
    per_lane,
    pid,
    state_lost,
)
from lab.experiments.runner import LOCK_FILE, check, run, run_one

__all__ = [
    "ALL4", "APP", "Context", "ENV_VAR", "Experiment", "ExperimentResult", "ExperimentSetupError",
    "GUIDE_BEGIN", "GUIDE_END", "ISOLATED", "LEAKED", "LOCK_FILE", "Lane", "LaneResult", "MISSING",
    "Observation", "POOL2", "POOLERS", "QUERY_WAIT_TIMEOUT_ERROR", "RESTORE_FILE", "SERVED",
    "WAIT_TIMEOUT_S", "WORKS", "backends", "catalogue", "catalogue_json", "check",
    "classified", "connect_until_refused", "describe_error", "endpoint_lanes", "first_line", "get",
    "guide_markdown", "guide_section", "later_transaction", "load", "names", "parse_expect",
    "per_lane", "pid", "resolve", "results_json", "run", "run_one", "select", "server_message",
    "state_lost", "update_guide",
]


def __getattr__(name: str) -> Any:
    # CATALOGUE is loaded on first use, not at import: experiment files import this package.
    if name == "CATALOGUE":
        return catalogue()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
