"""pgbench (libpq's benchmark tool): ``-M simple`` (the default) sends the query as text with
the variable interpolated, ``-M extended`` sends unnamed statements with ``$1`` bound, and
``-M prepared`` prepares every command of the script once per connection with ``PQprepare``
under a fixed name (``P_0`` for the first SQL command) and then executes it by name.

pgbench cannot run the two-client adapter workload, so this file runs pgbench itself: a script
of ``\\set n random(1, 1000)`` and ``SELECT :n::int + 1``, 2 clients on 1 thread (``-c 2 -j
1``), 8 transactions each (``-t 8``), no vacuum (``-n``). The connection goes by ``-h -p -U``
and the environment (PGPASSWORD, PGSSLMODE, PGAPPNAME: never on the command line).

What ``-M prepared`` meets through a transaction pooler (measured, PgBouncer with
``max_prepared_statements = 0``, drained pool): yes, both clients share a backend. pgbench's
``PQprepare`` is synchronous: client 0 prepares ``P_0`` on server X, which goes back to the pool
at the Sync, and when client 1 prepares, PgBouncer hands it X again (the server released
last), so the second ``PQprepare`` meets ``P_0``: ``ERROR: prepared statement "P_0" already
exists``, on every run. pgbench logs that (``pgbench: error: ...``), marks the command prepared
all the same and executes ``P_0`` by name, finding the other client's statement (same name,
same text) on X. Whether the run then completes depends on timing: when the two clients'
executions overlap, PgBouncer opens a second server that never saw ``P_0`` and the client sent
there aborts (``client 0 script 0 aborted in command 1 query 0: ERROR: prepared statement "P_0"
does not exist``, exit code 2, fewer than 16 transactions); when they never overlap, the run
ends with exit code 0 and 16/16 transactions. The matrix counts both as a failure, with class
``PgbenchError`` and pgbench's own error line: the abort's when the run aborted, else the
rejected prepare's (``where`` says which). pgbench prints no SQLSTATE (libpq's default error
verbosity), so none is added. ``-M simple`` (the default) and ``-M extended`` leave nothing
named on the server and work everywhere.
Docs: https://www.postgresql.org/docs/current/pgbench.html
"""

import os
import re
import subprocess
import tempfile
from pathlib import Path

from lab.clients import Driver, Variant

CLIENTS = 2
TRANSACTIONS = 8
SCRIPT = "\\set n random(1, 1000)\nSELECT :n::int + 1;\n"


class PgbenchError(Exception):
    """pgbench reported an error (its own line) or did not process every transaction."""


PgbenchError.__module__ = "pgbench"  # the matrix names the class pgbench.PgbenchError


def _server_words(line: str) -> str:
    """From ``ERROR:`` (or ``FATAL:``) on when the line quotes the server, else the line."""
    for mark in ("ERROR:", "FATAL:"):
        if mark in line:
            return line[line.index(mark):]
    return re.sub(r"^pgbench: error: ", "", line)


def _failure(stderr: str, mode: str) -> tuple[str, str] | None:
    """(where, message) of pgbench's decisive error line: an aborted client's, else the
    first one (a PQprepare the server rejected, the run going on)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.startswith("pgbench: error:")]
    for line in lines:
        aborted = re.search(r"(client \d+ script \d+ aborted in command \d+ query \d+):", line)
        if aborted:
            return f"pgbench -M {mode}, {aborted.group(1)}", _server_words(line)
    if lines:
        first = _server_words(lines[0])
        if first.startswith("connection to server"):
            return "connect", first
        return f"pgbench -M {mode}, {CLIENTS} clients: error logged", first
    return None


def run(w, options):
    mode = options["mode"]
    p = w.params
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=str(p["password"]), PGSSLMODE=str(p["sslmode"]),
               PGAPPNAME=str(p["application_name"]), PGCONNECT_TIMEOUT="10")
    if p.get("sslrootcert"):
        env["PGSSLROOTCERT"] = str(p["sslrootcert"])
    with tempfile.TemporaryDirectory(prefix="lab-pgbench-") as tmp:
        script = Path(tmp) / "query.sql"
        script.write_text(SCRIPT)
        argv = ["pgbench", "-h", str(p["host"]), "-p", str(p["port"]), "-U", str(p["user"]),
                "-n", "-c", str(CLIENTS), "-j", "1", "-t", str(TRANSACTIONS), "-M", mode,
                "-f", str(script), str(p["dbname"])]
        w.at.where = f"pgbench -M {mode}: {CLIENTS} clients x {TRANSACTIONS} transactions"
        proc = subprocess.run(argv, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, cwd=tmp)
    failure = _failure(proc.stderr, mode)
    if failure is not None:
        processed = re.search(r"actually processed: (\d+/\d+)", proc.stdout)
        w.at.where = failure[0] + (f" (exit code {proc.returncode}, "
                                   f"{processed.group(1)} transactions)" if processed else "")
        raise PgbenchError(failure[1])
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip() or "").splitlines()
        raise PgbenchError(tail[-1] if tail else f"pgbench exited with code {proc.returncode}")
    processed = re.search(r"number of transactions actually processed: (\d+)/(\d+)",
                          proc.stdout)
    if processed is None or processed.group(1) != str(CLIENTS * TRANSACTIONS):
        raise PgbenchError(processed.group(0) if processed else
                           "pgbench printed no count of processed transactions")
    failed = re.search(r"number of failed transactions: (\d+).*", proc.stdout)
    if failed is not None and failed.group(1) != "0":
        raise PgbenchError(failed.group(0))
    w.at.where = "close"


DRIVER = Driver(
    name="pgbench",
    title="pgbench",
    ecosystem="system",
    packages=("pgbench",),
    docs="https://www.postgresql.org/docs/current/pgbench.html",
    variants=(
        Variant("simple", "-M simple (the default): values in the text", run,
                options={"mode": "simple"}),
        Variant("extended", "-M extended: unnamed statements", run,
                options={"mode": "extended"}),
        Variant("prepared", "-M prepared: named statements (pitfall)", run,
                options={"mode": "prepared"}),
    ),
)
