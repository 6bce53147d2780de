"""psql (libpq's terminal): SQL-level ``PREPARE q(int) AS SELECT $1::int + 1`` once per session,
then ``EXECUTE q(n)``, each statement its own transaction. PREPARE lives in the server session,
so through a transaction pooler it survives only on the backend it ran on: the two sessions
take turns on one backend (PgBouncer hands out the server released last) and the second
PREPARE meets the first's ``q`` (``ERROR: prepared statement "q" already exists``). PgBouncer's
``max_prepared_statements`` does not rescue it: it tracks protocol-level Parse/Bind messages
only, and a PREPARE statement is plain SQL text to it. Plain statements with the values written
in (``SELECT 1 + 1``) leave nothing on the server and work everywhere.

Each client is a ``psql -X -q -v ON_ERROR_STOP=1 -At`` process kept open on a stdin pipe; each
step sends one statement followed by ``\\qecho @done`` (written to the query output stream, so
it follows the statement's result) and reads up to that marker. On an error psql stops (exit
code 3) and its own error line, read from stderr, becomes the exception (``PsqlError``).
Connection settings go by ``-h -p -U -d`` and the environment (PGPASSWORD, PGSSLMODE,
PGAPPNAME: never on the command line).
Docs: https://www.postgresql.org/docs/current/sql-prepare.html
https://www.pgbouncer.org/config.html#max_prepared_statements
"""

import os
import re
import subprocess
import threading

from lab.clients import Driver, Variant

MARKER = "@done"


class PsqlError(Exception):
    """psql stopped on an error: its own error line."""


PsqlError.__module__ = "psql"  # the matrix names the class psql.PsqlError


class Session:
    """One psql process: send a statement, read its answer."""

    def __init__(self, w):
        p = w.params
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGPASSWORD=str(p["password"]), PGSSLMODE=str(p["sslmode"]),
                   PGAPPNAME=str(p["application_name"]), PGCONNECT_TIMEOUT="10")
        if p.get("sslrootcert"):
            env["PGSSLROOTCERT"] = str(p["sslrootcert"])
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", str(p["host"]),
             "-p", str(p["port"]), "-U", str(p["user"]), "-d", str(p["dbname"])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            bufsize=1, env=env)
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.send("")  # connected: psql answers the marker

    def _drain(self):
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    def _failed(self):
        code = self.proc.wait()
        self._reader.join(timeout=5)
        errors = [ln for ln in self.stderr if "ERROR:" in ln or "FATAL:" in ln
                  or "error:" in ln]
        line = (errors or self.stderr or [f"psql exited with code {code}"])[0]
        for mark in ("ERROR:", "FATAL:"):
            if mark in line:
                line = line[line.index(mark):]
                break
        return PsqlError(re.sub(r"^psql: error: ", "", line))

    def send(self, statement):
        """The statement's last output line (None when it printed none)."""
        try:
            self.proc.stdin.write(f"{statement}\n\\qecho {MARKER}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._failed() from None
        answer = None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise self._failed()
            line = line.rstrip("\n")
            if line == MARKER:
                return answer
            if line:
                answer = line

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("\\q\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class Client:
    def __init__(self, session, prepare):
        self.s = session
        self.prepare = prepare
        self.prepared = False

    def query(self, n):
        if not self.prepare:
            return self.s.send(f"SELECT {int(n)} + 1;")
        if not self.prepared:
            self.s.send("PREPARE q(int) AS SELECT $1::int + 1;")
            self.prepared = True
        return self.s.send(f"EXECUTE q({int(n)});")

    def begin(self):
        self.s.send("BEGIN;")

    def commit(self):
        self.s.send("COMMIT;")

    def pid(self):
        return self.s.send("SELECT pg_backend_pid();")


def run(w, options):
    sessions = []
    try:
        sessions.append(Session(w))
        sessions.append(Session(w))
        a, b = (Client(s, options["prepare"]) for s in sessions)
        w.run(a, b)
    finally:
        for s in sessions:
            s.close()


DRIVER = Driver(
    name="psql",
    title="psql",
    ecosystem="system",
    packages=("psql",),
    docs="https://www.postgresql.org/docs/current/sql-prepare.html",
    variants=(
        Variant("prepare-across-transactions",
                "PREPARE once, EXECUTE in later transactions (pitfall)", run,
                options={"prepare": True}),
        Variant("simple-queries", "plain statements: SELECT n + 1", run,
                fix="no SQL-level PREPARE: plain statements", options={"prepare": False}),
    ),
)
