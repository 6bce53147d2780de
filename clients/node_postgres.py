"""node-postgres (pg): ``client.query(text, values)`` sends an unnamed statement (Parse, Bind,
Execute in one round trip, nothing left on the server), so it works through a transaction
pooler; ``client.query({name, text, values})`` prepares a named statement once per connection
and reuses it, and every connection names it the same: through a transaction pooler the two
clients share a backend, the second Parse meets the first's statement (``42P05 ... already
exists``) and a client moved to another backend finds none (``26000 ... does not exist``). The
fix for named statements is not to name them (Supabase's troubleshooting page says so), which
is the default row. Errors are pg's own: class ``DatabaseError``, message without the SQLSTATE
(as for every driver in the matrix).

The connection is built from the workload's fields rather than the URI: pg-connection-string
treats ``sslmode=require`` as ``verify-full`` (with a security warning) unless
``uselibpqcompat=true``, so ``require`` here means encrypted, unverified, as libpq's.
Docs: https://node-postgres.com/features/queries#prepared-statements
https://supabase.com/docs/guides/troubleshooting/disabling-prepared-statements-qL8lEL
"""

from lab.clients import Driver, Variant

SCRIPT = r"""
import pg from "pg";
import { main, ssl } from "./workload.mjs";

main(async (w, options) => {
  const client = new pg.Client({
    host: w.host, port: w.port, user: w.user, password: w.password, database: w.dbname,
    ssl: ssl(w, { rejectUnauthorized: false }), application_name: w.application_name,
    connectionTimeoutMillis: 10000,
  });
  client.on("error", () => {});  // a dropped idle connection: the next query reports it
  await client.connect();
  const text = "SELECT $1::int + 1 AS v";
  return {
    async query(n) {
      const res = options.named
        ? await client.query({ name: "lab-query", text, values: [n] })
        : await client.query(text, [n]);
      return res.rows[0].v;
    },
    async begin() { await client.query("BEGIN"); },
    async commit() { await client.query("COMMIT"); },
    async pid() { return (await client.query("SELECT pg_backend_pid() AS pid")).rows[0].pid; },
    async close() { await client.end(); },
  };
});
"""


def run(w, options):
    w.node(SCRIPT, options, package="pg")


DRIVER = Driver(
    name="node-postgres",
    title="node-postgres",
    ecosystem="npm",
    packages=("pg@8.23.1",),
    docs="https://node-postgres.com/features/queries#prepared-statements",
    variants=(
        Variant("default", "query(text, values): unnamed statements", run),
        Variant("named", "query({name, text, values}): named statements (pitfall)", run,
                options={"named": True}),
    ),
)
