// The workload every driver runs (the Python twin and its description: workload.py).
// A node driver's script imports { main } and gives it a factory of clients:
//   main(async (config, options) => client)   where client has
//   query(n) -> n + 1, begin(), commit(), pid(), close()
// main reads the workload as JSON on stdin and prints one JSON line: the outcome.
import fs from "node:fs";

export const REPEAT = 8;

// The driver's TLS option from the workload's sslmode: false (disable), the lab's CA for
// verify-ca / verify-full, else `unverified` (libpq's require: encrypted, not verified), whose
// spelling differs between drivers ({rejectUnauthorized: false} for pg, "require" for postgres).
export function ssl(w, unverified) {
  if (!w.sslmode || w.sslmode === "disable") return false;
  if (w.sslrootcert && (w.sslmode === "verify-ca" || w.sslmode === "verify-full")) {
    return { ca: fs.readFileSync(w.sslrootcert, "utf8"),
             ...(w.sslmode === "verify-ca" ? { checkServerIdentity: () => undefined } : {}) };
  }
  return unverified;
}

class WrongResult extends Error {
  constructor(message) { super(message); this.name = "WrongResult"; }
}

function check(got, n, where) {
  if (got === null || got === undefined || Number(got) !== n + 1) {
    throw new WrongResult(`${where}: SELECT ${n} + 1 returned ${JSON.stringify(got)}`);
  }
}

export async function run(a, b, at) {
  for (let i = 1; i <= REPEAT; i++) {
    for (const [name, client] of [["a", a], ["b", b]]) {
      at.where = `repeat ${i}, client ${name}`;
      check(await client.query(i), i, at.where);
    }
  }
  at.where = "transaction, client a begins";
  await a.begin();
  const first = await a.pid();
  for (const i of [1, 2]) {
    at.where = `transaction, client b query ${i} (a holds its backend)`;
    check(await b.query(i), i, at.where);
  }
  at.where = "transaction, client a again";
  check(await a.query(3), 3, at.where);
  const last = await a.pid();
  at.where = "transaction, client a commits";
  await a.commit();
  if (String(first) !== String(last)) {
    throw new WrongResult(`client a's transaction moved from backend ${first} to ${last}`);
  }
  at.where = "handover, client b begins";
  await b.begin();
  at.where = "handover, client b queries in its transaction";
  check(await b.query(5), 5, at.where);
  for (const i of [1, 2]) {
    at.where = `handover, client a query ${i} (b holds a's old backend)`;
    check(await a.query(i), i, at.where);
  }
  at.where = "handover, client b commits";
  await b.commit();
  at.where = "close";
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

function describe(err) {
  // The driver's own class: its constructor's name, with the package when the driver sets one.
  const cls = err && err.constructor && err.constructor.name ? err.constructor.name : "Error";
  const message = String(err && err.message !== undefined ? err.message : err).split("\n")[0];
  return { cls, message };
}

export async function main(connect) {
  const input = await readStdin();
  const at = {
    _where: "",
    get where() { return this._where; },
    set where(value) {
      this._where = value;
      if (process.env.LAB_CLIENTS_TRACE) process.stderr.write(`@where ${value}\n`);
    },
  };
  at.where = "connect";
  const clients = [];
  let result;
  try {
    const a = await connect(input.workload, input.options);
    clients.push(a);
    const b = await connect(input.workload, input.options);
    clients.push(b);
    await run(a, b, at);
    for (const c of clients.splice(0)) await c.close();
    result = { outcome: "works" };
  } catch (err) {
    const { cls, message } = describe(err);
    result = {
      outcome: err instanceof WrongResult ? "wrong" : "fails",
      error_class: (input.package ? input.package + "." : "") + cls,
      message, where: at.where,
    };
  }
  for (const c of clients) { try { await c.close(); } catch (_) { /* already broken */ } }
  process.stdout.write("\n" + JSON.stringify(result) + "\n");
  process.exit(0);
}
