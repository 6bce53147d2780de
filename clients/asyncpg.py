"""asyncpg: every query is a server-side prepared statement, prepared on its first execution
and kept in a per-connection cache of ``statement_cache_size`` (100) statements. Its names come
from one counter per process (``__asyncpg_stmt_1__``, ``__asyncpg_stmt_2__``...), so clients A
and B of this one cell never share a name: through a transaction pooler both prepare theirs on
the backend they take turns on, and the repeat step passes; the transaction step then fails,
because B is served by another backend while A holds that one, and B's cached statement does
not exist there (``InvalidSQLStatementNameError``). Two processes (two app workers) both start
at ``__asyncpg_stmt_1__`` and meet ``DuplicatePreparedStatementError ... already exists`` on
the shared backend instead (checked by hand on this lab's dedicated pooler).
``statement_cache_size=0`` turns the cache off: each query uses the unnamed statement, and
asyncpg parses it again together with its Bind and Execute (it assumes PgBouncer), so nothing
outlives one round trip and a transaction pooler can serve it.
asyncpg takes the lab's libpq URI as is (``sslmode=disable``; ``application_name`` becomes a
server setting).
Docs: https://magicstack.github.io/asyncpg/current/faq.html
"""

from lab.clients import Driver, Variant


class Client:
    def __init__(self, conn):
        self.conn = conn

    async def query(self, n):
        return await self.conn.fetchval("SELECT $1::int + 1", n)

    async def begin(self):
        await self.conn.execute("BEGIN")

    async def commit(self):
        await self.conn.execute("COMMIT")

    async def pid(self):
        return await self.conn.fetchval("SELECT pg_backend_pid()")


async def connection(w, options):
    import asyncpg

    a = await asyncpg.connect(w.dsn, timeout=10, **options)
    try:
        b = await asyncpg.connect(w.dsn, timeout=10, **options)
        try:
            await w.run_async(Client(a), Client(b))
        finally:
            await b.close(timeout=5)
    finally:
        await a.close(timeout=5)


DRIVER = Driver(
    name="asyncpg",
    title="asyncpg",
    ecosystem="pip",
    packages=("asyncpg==0.32.0",),
    docs="https://magicstack.github.io/asyncpg/current/faq.html",
    variants=(
        Variant("default", "defaults (statement_cache_size=100)", connection),
        Variant("statement-cache-size-0", "statement_cache_size=0", connection,
                fix="statement_cache_size=0", options={"statement_cache_size": 0}),
    ),
)
