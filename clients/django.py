"""Django's PostgreSQL backend on psycopg 3. It turns psycopg's prepared statements off
(``prepare_threshold=None`` unless OPTIONS set it) and binds parameters on the client
(``server_side_binding`` off), so plain queries pass every pooler mode. What Django documents
for transaction pooling is its server-side cursors: ``QuerySet.iterator()`` reads through
``connection.chunked_cursor()``, a named cursor, and in autocommit (outside ``atomic()``) Django
declares it ``WITH HOLD`` so that it outlives its implicit transaction; a later FETCH may then
reach another backend through a transaction pooler. ``DISABLE_SERVER_SIDE_CURSORS = True`` in
the database's settings makes ``iterator()`` use a plain cursor and read every row at once.
The ``server-side-cursor`` variant pages through a cursor the way a long ``iterator()`` loop on
a busy app does, without a model: each client opens, at the start and in autocommit, the cursor
``iterator()`` would (``settings_dict``'s ``DISABLE_SERVER_SIDE_CURSORS`` decides between
``chunked_cursor()`` and ``cursor()``) over ``SELECT g FROM generate_series(1, 1000) g``, read
by Django's own ``cursor_iter`` in chunks of one row (``iterator(chunk_size=1)``), keeps it open
through the whole workload, and every query takes its next row (checked to be the next number)
besides running the parameterised query; the cursor is closed at the end. B opens its cursor
from a second thread, as a second app thread would: Django names cursors after the thread and a
counter per connection, so two first cursors opened from one thread share a name, and through a
transaction pooler B's DECLARE meets A's cursor on the same backend (``cursor ... already
exists``). Direct and session connections keep one backend per client, so the cursor is always
there. Through a transaction pooler it stays on the backend that declared it (both clients'
cursors on one backend: the pooler hands out the server released last), and the first FETCH
served by another backend (B's, while A's transaction holds that one) fails with
``django.db.utils.ProgrammingError: cursor "_django_curs_..._sync_1" does not exist``; Django's
``cursor_iter`` then closes the cursor in its ``finally``, that CLOSE fails too, and what
reaches the caller of ``iterator()`` is psycopg's unwrapped ``psycopg.errors.InvalidCursorName``
(the ProgrammingError is its ``__context__``).
With ``DISABLE_SERVER_SIDE_CURSORS = True`` (the ``disable-server-side-cursors`` fix)
the plain cursor's rows are all fetched at the start, as ``iterator()`` then does, and kept on
the client: each query hands out the next one and nothing is left on a backend.
Clients A and B are two database aliases with the same settings; the workload's transaction
is ``transaction.atomic(using=...)``.
Docs: https://docs.djangoproject.com/en/5.2/ref/databases/#transaction-pooling-server-side-cursors
"""

from lab.clients import Driver, Variant, WrongResult

QUERY = "SELECT %s::int + 1"
ITER_QUERY = "SELECT g FROM generate_series(1, 1000) g"
ITER_CHUNK = 1  # rows per FETCH: a page per query, as a long iterator() pages through a table
ALIASES = ("a", "b")


class Client:
    def __init__(self, alias, chunked_like_iterator):
        from django.db import connections

        self.alias = alias
        self.conn = connections[alias]
        self.chunked = chunked_like_iterator
        self.atomic = None
        self.cursor = self.chunks = self.rows = None
        self.expected = 1

    def _plain(self, sql, params=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()[0]

    def open_iterator(self):
        """The cursor QuerySet.iterator() opens (SQLCompiler.execute_sql(chunked_fetch=...)),
        in autocommit: a WITH HOLD server-side cursor, or a plain one read at once."""
        from django.db.models.sql.compiler import cursor_iter

        use_chunked_fetch = not self.conn.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
        cursor = self.conn.chunked_cursor() if use_chunked_fetch else self.conn.cursor()
        try:
            cursor.execute(ITER_QUERY)
        except Exception:
            cursor.close()
            raise
        self.cursor = cursor
        self.chunks = cursor_iter(cursor, self.conn.features.empty_fetchmany_value, None,
                                  ITER_CHUNK)
        chunks = self.chunks
        if not use_chunked_fetch or not self.conn.features.can_use_chunked_reads:
            chunks = list(chunks)  # as execute_sql: every row read at once, cursor closed
        self.rows = (row for chunk in chunks for row in chunk)

    def close_iterator(self):
        self.rows.close()
        self.chunks.close()  # cursor_iter's finally closes the cursor, if it got that far
        self.cursor.close()

    def query(self, n):
        value = self._plain(QUERY, [n])
        if self.chunked:
            row = next(self.rows, None)
            if row is None or row[0] != self.expected:
                raise WrongResult(f"iterator gave {row!r}, expected ({self.expected},)")
            self.expected += 1
        return value

    def begin(self):
        from django.db import transaction

        self.atomic = transaction.atomic(using=self.alias)
        self.atomic.__enter__()

    def commit(self):
        atomic, self.atomic = self.atomic, None
        atomic.__exit__(None, None, None)

    def pid(self):
        return self._plain("SELECT pg_backend_pid()")


def _in_own_thread(client):
    """Open the client's iterator from a second thread, alive while the main one is, as a
    second app thread would. Django names a server-side cursor after the thread and a counter
    per connection (``_django_curs_<thread>_sync_1``): both clients opening theirs from this one
    thread would give both cursors one name, and through a transaction pooler, where both
    DECLAREs reach the same backend, B's would fail with ``cursor ... already exists``."""
    import threading

    failure = []

    def target():
        try:
            client.open_iterator()
        except BaseException as exc:  # re-raised in the calling thread: the driver's own error
            failure.append(exc)

    client.conn.inc_thread_sharing()
    try:
        thread = threading.Thread(target=target, name=f"client-{client.alias}")
        thread.start()
        thread.join()
    finally:
        client.conn.dec_thread_sharing()
    if failure:
        raise failure[0]


def run(w, options):
    import django
    from django.conf import settings

    p = w.params
    db = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": p["dbname"], "USER": p["user"], "PASSWORD": p["password"],
        "HOST": p["host"], "PORT": str(p["port"]),
        "OPTIONS": {"sslmode": p["sslmode"], "application_name": p["application_name"],
                    "connect_timeout": 10,
                    **({"sslrootcert": p["sslrootcert"]} if p.get("sslrootcert") else {})},
        **options.get("settings", {}),
    }
    # "default" must exist; it is never connected. A and B: two aliases, two connections.
    settings.configure(DATABASES={alias: dict(db) for alias in ("default", *ALIASES)},
                       USE_TZ=True, TIME_ZONE="UTC", INSTALLED_APPS=[])
    django.setup()
    from django.db import connections

    chunked = bool(options.get("chunked"))
    try:
        a, b = Client("a", chunked), Client("b", chunked)
        a.conn.ensure_connection()
        b.conn.ensure_connection()
        if chunked:
            a.open_iterator()
            _in_own_thread(b)
        w.run(a, b)
        if chunked:
            a.close_iterator()
            b.close_iterator()
    finally:
        for alias in ALIASES:
            connections[alias].close()


DRIVER = Driver(
    name="django",
    title="Django ORM",
    ecosystem="pip",
    packages=("Django==5.2.19",),
    docs="https://docs.djangoproject.com/en/5.2/ref/databases/#transaction-pooling-server-side-cursors",
    variants=(
        Variant("default", "defaults (client-side binding, prepare_threshold=None)", run),
        Variant("server-side-cursor",
                "pitfall: iterator()'s WITH HOLD cursor, read across transactions", run,
                options={"chunked": True}),
        Variant("disable-server-side-cursors",
                "iterator() path, DISABLE_SERVER_SIDE_CURSORS=True", run,
                fix="DATABASES[alias]['DISABLE_SERVER_SIDE_CURSORS'] = True",
                options={"chunked": True, "settings": {"DISABLE_SERVER_SIDE_CURSORS": True}}),
    ),
)
