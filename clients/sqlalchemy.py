"""SQLAlchemy 2 over psycopg 3 and asyncpg. SQLAlchemy adds no prepared statements of its own to
psycopg: its psycopg dialect runs psycopg cursors, so psycopg's ``prepare_threshold`` (5)
applies and ``connect_args={"prepare_threshold": None}`` is the fix. Its asyncpg dialect
prepares every statement with ``asyncpg.Connection.prepare()`` and caches it per connection
(``prepared_statement_cache_size``, 100), named by asyncpg's per-process counter
(``__asyncpg_stmt_N__``); SQLAlchemy documents, for PgBouncer, its own cache off and unique
names from ``prepared_statement_name_func`` (a uuid), with asyncpg's ``statement_cache_size=0``
(the statements are still prepared by name, inside each transaction; asyncpg closes each one
later, when it prepares the next, on whatever backend it has by then, so some stay behind:
SQLAlchemy's docs warn of their build-up and recommend NullPool and DISCARD in PgBouncer).
Clients A and B are two engine connections open at once, held for the whole workload, in
SQLAlchemy's "commit as you go" style: each query outside the workload's transaction is
committed, so each is a transaction of its own (the asyncpg dialect sends BEGIN itself; psycopg
does outside autocommit). With both connections held throughout, the pool class (QueuePool or
NullPool) does not change what reaches the pooler: it changes what happens on close.
Docs: https://docs.sqlalchemy.org/en/20/dialects/postgresql.html#prepared-statement-name-with-pgbouncer
"""

from lab.clients import Driver, Variant

QUERY = "SELECT CAST(:n AS int) + 1"


def _url(w, drivername, query):
    from sqlalchemy.engine import URL

    p = w.params
    return URL.create(drivername, username=p["user"], password=p["password"], host=p["host"],
                      port=int(p["port"]), database=p["dbname"], query=query)


def _pool_kwargs(options):
    if options.get("nullpool"):
        from sqlalchemy.pool import NullPool

        return {"poolclass": NullPool}
    return {}


class Client:
    def __init__(self, conn):
        from sqlalchemy import text

        self.conn = conn
        self.tx = None
        self.sql = text(QUERY)
        self.pid_sql = text("SELECT pg_backend_pid()")

    def _scalar(self, sql, params=None):
        value = self.conn.execute(sql, params).scalar()
        if self.tx is None:
            self.conn.commit()
        return value

    def query(self, n):
        return self._scalar(self.sql, {"n": n})

    def begin(self):
        self.tx = self.conn.begin()

    def commit(self):
        self.tx.commit()
        self.tx = None

    def pid(self):
        return self._scalar(self.pid_sql)


class AsyncClient(Client):
    async def _scalar(self, sql, params=None):
        value = (await self.conn.execute(sql, params)).scalar()
        if self.tx is None:
            await self.conn.commit()
        return value

    async def begin(self):
        self.tx = await self.conn.begin()

    async def commit(self):
        await self.tx.commit()
        self.tx = None


def psycopg_engine(w, options):
    from sqlalchemy import create_engine

    query = {"sslmode": w.params["sslmode"], "application_name": w.params["application_name"],
             "connect_timeout": "10"}
    if w.params.get("sslrootcert"):
        query["sslrootcert"] = w.params["sslrootcert"]
    engine = create_engine(_url(w, "postgresql+psycopg", query),
                           connect_args=dict(options.get("connect_args", {})),
                           **_pool_kwargs(options))
    try:
        with engine.connect() as a, engine.connect() as b:
            w.run(Client(a), Client(b))
    finally:
        engine.dispose()


async def asyncpg_engine(w, options):
    import ssl

    from sqlalchemy.ext.asyncio import create_async_engine

    if w.params.get("sslrootcert"):
        tls = ssl.create_default_context(cafile=w.params["sslrootcert"])
    else:
        tls = "require" if w.params["sslmode"] == "require" else False
    connect_args = {"ssl": tls, "timeout": 10,
                    "server_settings": {"application_name": w.params["application_name"]},
                    **options.get("connect_args", {})}
    if options.get("unique_names"):
        from uuid import uuid4

        connect_args["prepared_statement_name_func"] = lambda: f"__asyncpg_{uuid4()}__"
    engine = create_async_engine(_url(w, "postgresql+asyncpg", {}),
                                 connect_args=connect_args, **_pool_kwargs(options))
    try:
        async with engine.connect() as a, engine.connect() as b:
            await w.run_async(AsyncClient(a), AsyncClient(b))
    finally:
        await engine.dispose()


DRIVER = Driver(
    name="sqlalchemy",
    title="SQLAlchemy 2",
    ecosystem="pip",
    packages=("SQLAlchemy==2.1.9", "asyncpg==0.32.0"),
    docs="https://docs.sqlalchemy.org/en/20/dialects/postgresql.html#prepared-statement-name-with-pgbouncer",
    variants=(
        Variant("psycopg-queuepool", "postgresql+psycopg, QueuePool, defaults", psycopg_engine),
        Variant("psycopg-nullpool", "postgresql+psycopg, NullPool", psycopg_engine,
                options={"nullpool": True}),
        Variant("psycopg-prepare-threshold-none",
                "postgresql+psycopg, connect_args prepare_threshold=None", psycopg_engine,
                fix="connect_args={'prepare_threshold': None}",
                options={"connect_args": {"prepare_threshold": None}}),
        Variant("asyncpg-queuepool", "postgresql+asyncpg, QueuePool, defaults", asyncpg_engine),
        Variant("asyncpg-nullpool", "postgresql+asyncpg, NullPool", asyncpg_engine,
                options={"nullpool": True}),
        Variant("asyncpg-no-statement-cache",
                "postgresql+asyncpg, caches off, uuid statement names", asyncpg_engine,
                fix="connect_args: statement_cache_size=0, prepared_statement_cache_size=0, "
                    "prepared_statement_name_func=lambda: f'__asyncpg_{uuid4()}__'",
                options={"connect_args": {"statement_cache_size": 0,
                                          "prepared_statement_cache_size": 0},
                         "unique_names": True}),
    ),
)
