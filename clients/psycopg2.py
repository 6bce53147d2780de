"""psycopg2: no server-side prepared statements at all. ``cursor.execute`` merges the parameters
into the SQL text on the client and sends it with the simple query protocol, so the plain query
passes every pooler mode. What a transaction pooler breaks is state kept on the server between
transactions. A named cursor (``conn.cursor(name=...)``) is a ``DECLARE ... CURSOR`` on the
server; without hold it lives inside one transaction (psycopg2 refuses it in autocommit), so it
stays on one backend. ``withhold=True`` declares ``WITH HOLD``: the cursor outlives the COMMIT,
and each FETCH after it runs in a later transaction that a transaction pooler may send to
another backend (PgBouncer lists WITH HOLD cursors as unsupported in transaction mode).
The ``named-cursor-withhold`` variant reads such a cursor the way an app pages through a large
result across transactions: each client declares one cursor at the start
(``conn.cursor(name=..., withhold=True)`` over ``SELECT g FROM generate_series(1, 1000) g``,
then COMMIT), keeps it open through the whole workload, and every query fetches its next row
(checked to be the next number) besides running the parameterised query; the cursor is closed
at the end. Direct and session connections keep one backend per client, so the cursor is always
there. Through a transaction pooler the cursor stays on the backend that ran the DECLARE (both
clients' cursors on one backend: the pooler hands out the server released last), and the first
FETCH served by another backend (B's, while A's transaction holds that one) raises
``psycopg2.errors.InvalidCursorName: cursor "..." does not exist``. The fix is a named cursor
without hold, read inside one transaction (the ``named-cursor`` variant: a fresh cursor per
query, declared, fetched and closed in its transaction).
Docs: https://www.psycopg.org/docs/usage.html#server-side-cursors
"""

import itertools

from lab.clients import Driver, Variant, WrongResult

_names = itertools.count(1)
HELD_QUERY = "SELECT g FROM generate_series(1, 1000) g"


class Client:
    """Plain cursors on an autocommit connection; the workload's transaction is BEGIN/COMMIT."""

    def __init__(self, conn):
        self.conn = conn

    def _one(self, sql, args=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchone()[0]

    def query(self, n):
        return self._one("SELECT %s::int + 1", (n,))

    def begin(self):
        with self.conn.cursor() as cur:
            cur.execute("BEGIN")

    def commit(self):
        with self.conn.cursor() as cur:
            cur.execute("COMMIT")

    def pid(self):
        return self._one("SELECT pg_backend_pid()")


class NamedCursorClient:
    """The query through a named (server-side) cursor without hold. The connection is not in
    autocommit (psycopg2 refuses a named cursor without hold there): psycopg2 sends BEGIN before
    the first statement of a transaction; outside the workload's own transaction each query is
    BEGIN; DECLARE; FETCH; CLOSE; COMMIT."""

    def __init__(self, conn):
        self.conn = conn
        self.in_tx = False

    def query(self, n):
        cur = self.conn.cursor(name=f"lab_cursor_{next(_names)}")
        try:
            cur.execute("SELECT %s::int + 1", (n,))
            value = cur.fetchone()[0]
        finally:
            cur.close()
        if not self.in_tx:
            self.conn.commit()
        return value

    def begin(self):
        # psycopg2 starts the transaction itself, with BEGIN before the next statement (pid())
        self.in_tx = True

    def commit(self):
        self.conn.commit()
        self.in_tx = False

    def pid(self):
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            value = cur.fetchone()[0]
        if not self.in_tx:
            self.conn.commit()
        return value


class HeldCursorClient(NamedCursorClient):
    """A WITH HOLD cursor declared once and read a row per query, across transactions. The
    connection is not in autocommit: the DECLARE is BEGIN; DECLARE ... WITH HOLD; COMMIT. A
    query outside the workload's transaction is BEGIN; SELECT n + 1; FETCH FORWARD 1; COMMIT
    (the SELECT goes first so that psycopg2's BEGIN precedes the FETCH), a transaction that
    need not run on the backend holding the cursor."""

    def __init__(self, conn):
        super().__init__(conn)
        self.held = conn.cursor(name=f"lab_held_{next(_names)}", withhold=True)
        self.held.execute(HELD_QUERY)
        conn.commit()  # the cursor outlives the transaction that declared it
        self.expected = 1

    def query(self, n):
        with self.conn.cursor() as cur:
            cur.execute("SELECT %s::int + 1", (n,))
            value = cur.fetchone()[0]
        row = self.held.fetchone()  # FETCH FORWARD 1 FROM the held cursor
        if row is None or row[0] != self.expected:
            raise WrongResult(f"held cursor {self.held.name!r} gave {row!r}, "
                              f"expected ({self.expected},)")
        self.expected += 1
        if not self.in_tx:
            self.conn.commit()
        return value

    def close(self):
        self.held.close()  # CLOSE, outside any transaction
        self.conn.commit()


def _connect(w):
    import psycopg2

    return psycopg2.connect(w.dsn, connect_timeout=10)


def plain(w, options):
    a = _connect(w)
    try:
        b = _connect(w)
        try:
            a.autocommit = b.autocommit = True
            w.run(Client(a), Client(b))
        finally:
            b.close()
    finally:
        a.close()


def named(w, options):
    a = _connect(w)
    try:
        b = _connect(w)
        try:
            if options.get("withhold"):
                ca = HeldCursorClient(a)
                cb = HeldCursorClient(b)
                w.run(ca, cb)
                ca.close()
                cb.close()
            else:
                w.run(NamedCursorClient(a), NamedCursorClient(b))
        finally:
            b.close()
    finally:
        a.close()


DRIVER = Driver(
    name="psycopg2",
    title="psycopg2",
    ecosystem="pip",
    packages=("psycopg2-binary==2.9.13",),
    docs="https://www.psycopg.org/docs/usage.html#server-side-cursors",
    variants=(
        Variant("default", "defaults (client-side parameters, simple protocol)", plain),
        Variant("named-cursor", "named cursor, inside a transaction", named,
                options={"withhold": False}),
        Variant("named-cursor-withhold",
                "pitfall: withhold=True cursor, read across transactions",
                named,
                options={"withhold": True}),
    ),
)
