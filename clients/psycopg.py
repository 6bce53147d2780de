"""psycopg 3: server-side prepared statements after ``prepare_threshold`` (5) executions, named
``_pg3_0``, ``_pg3_1``... in every connection; ``prepare_threshold=None`` never prepares.
Docs: https://www.psycopg.org/psycopg3/docs/advanced/prepare.html#using-prepared-statements-with-pgbouncer
"""

from lab.clients import Driver, Variant


class Client:
    def __init__(self, conn):
        self.conn = conn

    def query(self, n):
        return self.conn.execute("SELECT %s::int + 1", (n,)).fetchone()[0]

    def begin(self):
        self.conn.execute("BEGIN")

    def commit(self):
        self.conn.execute("COMMIT")

    def pid(self):
        return self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def connection(w, options):
    import psycopg

    a = psycopg.connect(w.dsn, autocommit=True, connect_timeout=10, **options)
    b = psycopg.connect(w.dsn, autocommit=True, connect_timeout=10, **options)
    try:
        w.run(Client(a), Client(b))
    finally:
        a.close()
        b.close()


def pool(w, options):
    """psycopg_pool.ConnectionPool: two connections checked out at once."""
    from psycopg_pool import ConnectionPool

    with ConnectionPool(w.dsn, min_size=2, max_size=2, timeout=10, open=True,
                        kwargs={"autocommit": True, **options}) as p:
        a, b = p.getconn(), p.getconn()
        try:
            w.run(Client(a), Client(b))
        finally:
            p.putconn(a)
            p.putconn(b)


DRIVER = Driver(
    name="psycopg",
    title="psycopg 3",
    ecosystem="pip",
    packages=(),  # a dependency of the lab itself
    also_record=("psycopg", "psycopg-pool"),
    docs="https://www.psycopg.org/psycopg3/docs/advanced/prepare.html",
    variants=(
        Variant("default", "defaults (prepare_threshold=5)", connection),
        Variant("prepare-threshold-none", "prepare_threshold=None", connection,
                fix="prepare_threshold=None", options={"prepare_threshold": None}),
        Variant("pool", "psycopg_pool, defaults", pool),
        Variant("pool-prepare-threshold-none", "psycopg_pool, prepare_threshold=None", pool,
                fix="kwargs={'prepare_threshold': None}", options={"prepare_threshold": None}),
    ),
)
