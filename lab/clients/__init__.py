"""`lab clients`: will my driver or ORM work through each endpoint? A matrix measured with the
real drivers on the live lab, with the driver's own error and the documented fix that made it
work.

One module per job:

* ``model``: Driver and Variant (what a driver file declares), Cell (one driver variant on one
  endpoint) and the outcomes (works, fails, wrong, hangs, crashed, not installed, not testable);
* ``workload``: the steps every driver runs (``workload.mjs`` is its twin for node drivers);
* ``discovery``: finding and loading driver files;
* ``install``: the drivers' pinned packages, installed on demand (pip, npm) and checked;
* ``cell``: one cell, in a child process of its own (``python -m lab.clients.cell``);
* ``node``: how a node driver's script runs inside that child;
* ``matrix``: the run on a live lab (drained pools, timeouts, ``--prepared`` rescues);
* ``render``: the matrix as text, Markdown, HTML and JSON.

Driver files
------------

One file per driver, in the ``clients/`` folder beside ``scenarios/`` (a wheel carries it as
``lab/_data/clients``), or yours: ``POOLER_LAB_CLIENTS`` names folders or files
(``os.pathsep``-separated), and ``lab clients --driver ./mine.py`` runs a file by path. A file
``my_driver.py`` defines ``DRIVER = Driver(name="my-driver", ...)``::

    from lab.clients import Driver, Variant

    def run(w, options):            # runs in the cell's child process
        import mydriver             # the driver's own packages: imported here, not at the top
        a = Adapter(mydriver.connect(w.dsn, **options))
        b = Adapter(mydriver.connect(w.dsn, **options))
        w.run(a, b)                 # the workload (async drivers: await w.run_async(a, b))
        a.close(); b.close()

    DRIVER = Driver(
        name="my-driver", title="mydriver 1.2", packages=("mydriver==1.2.0",),
        variants=(Variant("default", "defaults", run),
                  Variant("no-cache", "cache_size=0", run, fix="cache_size=0",
                          options={"cache_size": 0})),
    )

An adapter gives ``query(n)`` (runs the parameterised ``SELECT $1::int + 1`` and returns its
value), ``begin()``, ``commit()`` and ``pid()`` (``SELECT pg_backend_pid()``). ``w`` is a
``Workload``: ``w.dsn`` (a libpq URI), ``w.params`` (host, port, user, password, dbname,
sslmode, application_name), ``w.timeout``. A node driver's run calls ``w.node(SCRIPT,
options, package="pg")``: SCRIPT is an ES module that imports ``main`` from
``./workload.mjs`` and hands it a function making one client (see ``clients/node_postgres.py``).
A driver that cannot run here at all sets ``untestable="the reason"`` and no variants.

Exceptions are the driver's own: let them through; the cell records the class and message.
"""

from __future__ import annotations

from lab.clients.model import (
    CRASHED,
    FAILS,
    HANGS,
    NOT_INSTALLED,
    NOT_TESTABLE,
    OUTCOMES,
    WORKS,
    WRONG,
    Cell,
    Driver,
    Variant,
)
from lab.clients.workload import REPEAT, Workload, WrongResult

__all__ = ["Cell", "Driver", "Variant", "Workload", "WrongResult", "REPEAT", "OUTCOMES",
           "WORKS", "FAILS", "WRONG", "HANGS", "CRASHED", "NOT_INSTALLED", "NOT_TESTABLE"]

# The rest loads on first use: the cell child imports this package and must start fast.
_LAZY = {
    "catalogue": "discovery", "select": "discovery",
    "ensure": "install", "missing": "install", "node_dir": "install", "listing": "install",
    "install_all": "install",
    "Matrix": "matrix", "counts": "matrix", "run": "matrix",
    "html": "render", "markdown": "render", "text": "render", "write": "render",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"lab.clients.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'lab.clients' has no attribute {name!r}")


__all__ += list(_LAZY)
