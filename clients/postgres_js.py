"""postgres.js: ``prepare: true`` (the default) prepares every query as a named statement on its
first execution and reuses it on that connection; ``prepare: false`` sends unnamed statements
and is what Supabase documents for the transaction pooler. A and B are two connections
reserved from one ``postgres()`` instance (``max: 2``, ``sql.reserve()``, in postgres.js since
3.4.0), so each client keeps its own connection and BEGIN/COMMIT (``unsafe``) run on it.

Why the defaults work through a transaction pooler in this workload (measured with 3.4.9, not
luck): the statement names are random per connection (``statementId`` is
``Math.random().toString(36)`` plus a counter), so A and B taking turns on one backend never
collide (no ``42P05 ... already exists``); and when B is moved to a backend that never saw its
statement, the Bind fails with ``26000 prepared statement "..." does not exist`` (routine
FetchPreparedStatement) and postgres.js drops it from its cache and prepares it again, once,
transparently (``retryRoutines`` in src/connection.js); the server logs the error, the caller
never sees it. That retry cannot help inside a transaction block, where the error has already
aborted the transaction: a probe in which B, moved to another backend, ran ``BEGIN`` and then a
cached query failed with ``PostgresError 26000 prepared statement "..." does not exist``. The
workload's B queries outside transactions, so the matrix shows the defaults working; with
transactions, ``prepare: false`` is still the fix. Every connection's statements also pile up
on the backends it visits.
Docs: https://github.com/porsager/postgres#prepared-statements
https://supabase.com/docs/guides/troubleshooting/disabling-prepared-statements-qL8lEL
"""

from lab.clients import Driver, Variant

SCRIPT = r"""
import postgres from "postgres";
import { main, ssl } from "./workload.mjs";

let sql = null;  // one instance, two reserved connections
let open = 0;

main(async (w, options) => {
  if (sql === null) {
    sql = postgres({
      host: w.host, port: w.port, user: w.user, password: w.password, database: w.dbname,
      ssl: ssl(w, "require"), max: 2, connect_timeout: 10, idle_timeout: 0, onnotice: () => {},
      connection: { application_name: w.application_name },
      ...options,
    });
  }
  const db = await sql.reserve();
  open += 1;
  return {
    async query(n) { return (await db`SELECT ${n}::int + 1 AS v`)[0].v; },
    async begin() { await db.unsafe("BEGIN"); },
    async commit() { await db.unsafe("COMMIT"); },
    async pid() { return (await db`SELECT pg_backend_pid() AS pid`)[0].pid; },
    async close() {
      db.release();
      open -= 1;
      if (open === 0) await sql.end({ timeout: 5 });
    },
  };
});
"""


def run(w, options):
    w.node(SCRIPT, options, package="postgres")


DRIVER = Driver(
    name="postgres-js",
    title="postgres.js",
    ecosystem="npm",
    packages=("postgres@3.4.9",),
    docs="https://github.com/porsager/postgres#prepared-statements",
    variants=(
        Variant("default", "defaults (prepare: true): named statements", run),
        Variant("prepare-false", "prepare: false", run, fix="prepare: false",
                options={"prepare": False}),
    ),
)
