"""The `lab` command: a thin click layer over the library.

Each command parses its options, calls one library function and prints the result through
``lab.term``. Errors of the ``LabError`` family become one line and an exit code in ``main``;
nothing else here decides what an error looks like.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import click

from lab import __version__, term
from lab.config import (
    ENDPOINTS,
    LAYOUTS,
    NETWORKS,
    POOL_SHARING,
    RELAY_MODES,
    SESSION_OVERFLOW,
    TIERS,
)
from lab.errors import LabError
from lab.run.spec import SSLMODES

ENDPOINT_CHOICE = click.Choice(list(ENDPOINTS))


# -- shared options ----------------------------------------------------------------------


def name_option(f):
    return click.option(
        "--name", default="default", show_default=True, envvar="POOLER_LAB_NAME",
        help="Which lab (compose project pooler-lab-NAME); two names run side by side.",
    )(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")(f)


def fault_option(f):
    return click.option(
        "--fault", "faults", multiple=True, metavar="AT:TARGET:ACTION[:DURATION]",
        help="Inject a fault into every segment, AT after its load starts (repeatable), e.g. "
             "20s:pooler:restart, 15s:db:pause:5s, 10s:transaction:reconnect. Targets db, "
             "pooler, dedicated: kill, stop, restart, pause, disconnect, fast-restart (db); "
             "session, transaction, dedicated: reconnect, pool-pause, reload, kill-clients. "
             "Default: the scenario's FAULTS.")(f)


def _faults(texts) -> tuple:
    from lab.faults import parse_faults

    return tuple(parse_faults(texts)) if texts else ()


def show_password_option(f):
    return click.option("--show-password", is_flag=True,
                        help="Print the real password instead of [YOUR-PASSWORD].")(f)


SETTING_OPTIONS = [
    click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
                 help="Settings file (default: ./lab.toml when present)."),
    click.option("--tier", type=click.Choice(list(TIERS), case_sensitive=False),
                 help="Supabase compute tier preset (default micro)."),
    click.option("--max-connections", type=int, help="Postgres max_connections."),
    click.option("--pool-size", type=int, help="Default pool size of every pooler."),
    click.option("--max-client-conn", type=int,
                 help="Max pooler clients (each pooler separately)."),
    click.option("--tenant", help="Tenant in the shared pooler's user name postgres.TENANT."),
    click.option("--pool-sharing", type=click.Choice(POOL_SHARING),
                 help="Shared pooler: one pool per mode, or one pool shared by both modes."),
    click.option("--session-overflow", type=click.Choice(SESSION_OVERFLOW),
                 help="Session-mode clients beyond the pool size: 'refuse' at login, as "
                      "Supavisor 2.8+ (default), or 'queue' for a backend, as before 2.8."),
    click.option("--max-prepared-statements", type=int,
                 help="Dedicated pooler's max_prepared_statements (0 = none, as Supabase)."),
    click.option("--shared-max-prepared-statements", type=int,
                 help="Shared pooler's transaction mode: max_prepared_statements (0 = none, "
                      "as Supavisor's named_prepared_statements flag by default)."),
    click.option("--query-wait-timeout", type=int,
                 help="Seconds a pooler client may queue for a server connection."),
    click.option("--ssl-enforce/--no-ssl-enforce", "ssl_enforce", default=None,
                 help="Refuse plaintext clients on every endpoint (Supabase's \"Enforce SSL on "
                      "incoming connections\"; off by default, as there)."),
    click.option("--network", type=click.Choice(list(NETWORKS), case_sensitive=False),
                 help="Distance between client, pooler host and db host: "
                      + ", ".join(f"{n.name} ({n.client_db_rtt_ms:g}/{n.client_pooler_rtt_ms:g}/"
                                  f"{n.pooler_db_rtt_ms:g} ms)" for n in NETWORKS.values())
                      + " (client-db / client-pooler / pooler-db round trips)."),
    click.option("--client-db-rtt-ms", type=float,
                 help="Round trip between the client and the db host (direct, dedicated)."),
    click.option("--client-pooler-rtt-ms", type=float,
                 help="Round trip between the client and the shared pooler's host."),
    click.option("--pooler-db-rtt-ms", type=float,
                 help="Round trip between the shared pooler's host and the db host."),
    click.option("--relay", type=click.Choice(RELAY_MODES),
                 help="'auto': relays only on paths with a round trip; 'always': on every path, "
                      "even at 0 ms (to measure the relay's own cost)."),
    click.option("--layout", type=click.Choice(LAYOUTS),
                 help="'addresses': two loopback addresses, documented ports; "
                      "'ports': 127.0.0.1 with offset ports (macOS)."),
    click.option("--port-offset", type=int, help="Port offset of the 'ports' layout."),
    click.option("--db-address", help="Loopback address of the db host (default 127.0.0.2)."),
    click.option("--pooler-address",
                 help="Loopback address of the shared-pooler host (default 127.0.0.3)."),
    click.option("--direct-port", type=int, help="Host port of the direct endpoint."),
    click.option("--dedicated-port", type=int, help="Host port of the dedicated pooler."),
    click.option("--session-port", type=int, help="Host port of the session-mode pooler."),
    click.option("--transaction-port", type=int,
                 help="Host port of the transaction-mode pooler."),
]


def setting_options(f):
    for option in reversed(SETTING_OPTIONS):
        f = option(f)
    return f


def _overrides(kwargs: dict) -> dict:
    keys = ("tier", "max_connections", "pool_size", "max_client_conn", "tenant", "pool_sharing",
            "session_overflow", "max_prepared_statements", "shared_max_prepared_statements",
            "query_wait_timeout", "ssl_enforce", "network", "client_db_rtt_ms",
            "client_pooler_rtt_ms", "pooler_db_rtt_ms", "relay", "layout", "port_offset",
            "db_address", "pooler_address", "direct_port", "dedicated_port", "session_port",
            "transaction_port")
    return {k: kwargs.pop(k) for k in keys}


def _progress(text: str) -> None:
    term.note(text)


# -- the group ---------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pooler-lab")
def cli():
    """pooler-lab: see Supabase's connection advice with real numbers.

    A database host (Postgres 17 on 5432, dedicated PgBouncer on 6543) and a shared-pooler
    host (session mode on 5432, transaction mode on 6543) on Docker Compose, loaded by Locust.
    """
    from lab import rlimit

    # Every client is a file descriptor, here and in the Locust processes that inherit it.
    rlimit.raise_nofile_for_children()


# -- the stack ---------------------------------------------------------------------------


@cli.command()
@name_option
@setting_options
def up(name, config_path, **kwargs):
    """Bring the stack up and wait until every service is healthy."""
    from lab import stack

    result = stack.up(name, config_path, _overrides(kwargs), log=_progress)
    cfg = result.cfg
    term.success(f"{cfg.project} is up" + ("" if result.created else " (no change)"))
    _print_connect(name, None, as_json=False, show_password=False)


@cli.command()
@name_option
@click.option("--volumes", is_flag=True, help="Also remove the database's data volume.")
def down(name, volumes):
    """Stop and remove the lab's containers and network (and data, with --volumes)."""
    from lab import stack

    left = stack.down(name, volumes=volumes, log=_progress)
    if left:
        kept = ", ".join(left)
        term.info(f"removed the containers and network; kept {kept}"
                  + ("" if volumes else " (lab down --volumes removes it)"))
    else:
        term.success("removed everything: containers, network, volumes")


@cli.command()
@name_option
@json_option
@click.option("--sql", "sql", is_flag=True,
              help="Run Supabase's two monitoring queries (pg_stat_activity joined with "
                   "pg_stat_ssl) and print their results.")
@click.option("--watch", "watch", is_flag=True,
              help="Keep the counts on screen, redrawn twice a second (the numbers of `lab "
                   "watch`); Ctrl-C stops.")
def status(name, as_json, sql, watch):
    """Containers, health and live connection counts per endpoint."""
    from lab.status import status as lab_status
    from lab.status import who_tables

    if watch:
        _status_watch(name)
        return
    if sql:
        _print_monitoring(name, as_json)
        return
    data = lab_status(name)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    term.heading(f"{data['project']}  tier {data['settings']['tier']}, max_connections "
                 f"{data['settings']['max_connections']}, pool size "
                 f"{data['settings']['pool_size']}")
    term.table([(c["service"], c["state"], c["health"] or "-", c["address"] or "-")
                for c in data["containers"]], ["service", "state", "health", "address"])
    from lab.errors import StackError
    from lab.status import describe_down

    down = data.get("down") or {}
    if not data["endpoints"]:
        raise StackError(f"the lab is not running ({describe_down(down) or 'no container'})",
                         fix=f"lab up{_flag(name)}")
    click.echo()
    rows = []
    for ep, entry in data["endpoints"].items():
        if "error" in entry:
            rows.append((ep, "-", "-", "-", entry["error"]))
        else:
            rows.append((ep, entry["clients"], entry["waiting"], entry["backends"], ""))
    term.table(rows, ["endpoint", "clients", "waiting", "server conns", "note"])
    pg = data["postgres"]
    if pg and pg["ok"]:
        origins = ", ".join(f"{k} {v}" for k, v in sorted(pg["by_origin"].items()))
        term.info(f"\nPostgres client backends: {pg['backends']} of max_connections "
                  f"{pg['max_connections']} ({origins or 'none'})")
    for title, headers, rows in who_tables(data.get("who") or {}):
        term.heading(f"\n{title}")
        if rows:
            term.table(rows, headers)
        else:
            term.info("none")
    if down:
        raise StackError(f"not every service is running: {describe_down(down)}",
                         fix=f"lab up{_flag(name)} starts it again")


def _status_watch(name: str) -> None:
    import time

    from lab import watch as watchmod
    from lab.watch import frame

    hub, source = watchmod.terminal(name)
    screen = term.Screen()
    try:
        while True:
            time.sleep(0.5)
            if hub.latest is not None:
                screen.draw(frame.summary_lines(hub.latest))
    except KeyboardInterrupt:
        pass
    finally:
        source.stop()
        screen.done()


def _print_monitoring(name: str, as_json: bool) -> None:
    from lab.status import monitoring

    results = monitoring(name)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for result in results:
        term.heading(f"{result['title']} (Supabase docs)")
        click.echo(f"  {result['sql']}")
        rows = result["rows"]
        if not rows:
            term.info("no rows")
            continue
        headers = list(rows[0])
        term.table([tuple(_cell(row[h]) for h in headers) for row in rows], headers)
        click.echo()


def _cell(value) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= 40 else text[:39] + "…"


def _flag(name: str) -> str:
    return "" if name == "default" else f" --name {name}"


@cli.command()
@click.argument("endpoint", required=False, type=ENDPOINT_CHOICE)
@name_option
@json_option
@show_password_option
@click.option("--ssl-cert", "ssl_cert", type=click.Path(path_type=Path),
              help="Write the lab's CA certificate to this file (or directory), as Supabase "
                   "lets you download it; the strings then point sslrootcert at it.")
def connect(endpoint, name, as_json, show_password, ssl_cert):
    """The connection strings, like Supabase's Connect dialog (one ENDPOINT, or all four).

    With one ENDPOINT and no --json, prints just its URI (psql "$(lab connect ...)").
    Every string asks for TLS: sslmode=verify-full with the lab's CA certificate.
    """
    _print_connect(name, endpoint, as_json=as_json, show_password=show_password,
                   ssl_cert=ssl_cert)


def _print_connect(name, endpoint, *, as_json, show_password, ssl_cert=None):
    from lab import connect as connmod
    from lab import engine, stack, tls

    cfg, state = stack.load(name)
    containers = engine.project_containers(cfg.project)
    rootcert = None
    if ssl_cert is not None:
        written = tls.copy_ca(stack.tls_dir(state), ssl_cert)
        rootcert = str(written.resolve())
        if not (as_json or endpoint):
            term.info(f"the lab's CA certificate is in {rootcert}")
    eps = connmod.endpoints(cfg, containers, sslrootcert=rootcert)
    password = state.secrets().postgres_password if show_password else None
    chosen = [endpoint] if endpoint else list(eps)
    if as_json:
        data = {n: eps[n].to_json(password) for n in chosen}
        click.echo(json.dumps(data[endpoint] if endpoint else data, indent=2))
        return
    if endpoint:
        click.echo(eps[endpoint].uri(password))
        return
    for n in chosen:
        ep = eps[n]
        term.heading(f"{ep.label} ({n})")
        click.echo(f"  {ep.uri(password)}")
        click.echo(f"  use for: {ep.use_when}")
    if not show_password:
        term.note(f"password hidden; lab connect --show-password{_flag(name)} shows it")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("endpoint", type=ENDPOINT_CHOICE)
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@name_option
def psql(endpoint, psql_args, name):
    """Open psql on ENDPOINT (extra arguments go to psql), without showing the password."""
    from lab import connect as connmod
    from lab import engine, stack

    cfg, state, containers = stack.require_running(name)
    ep = connmod.endpoints(cfg, containers)[endpoint]
    password = state.secrets().postgres_password
    env = dict(os.environ, PGPASSWORD=password, PGAPPNAME="pooler-lab-psql",
               PGSSLMODE=ep.tls_params()["sslmode"])
    if ep.sslrootcert:
        env["PGSSLROOTCERT"] = ep.sslrootcert
    target = ["-h", ep.host, "-p", str(ep.port), "-U", ep.user, "-d", ep.database]
    if shutil.which("psql"):
        os.execvpe("psql", ["psql", *target, *psql_args], env)
    # No psql on the host: use the one in the db container, addressing services by name.
    db = engine.container(cfg.project, "db")
    inner_host = "127.0.0.1" if ENDPOINTS[endpoint].host == "db" else "pooler"
    inner = ["-h", inner_host, "-p", str(ENDPOINTS[endpoint].container_port), "-U", ep.user,
             "-d", ep.database]
    tty = ["-it"] if sys.stdin.isatty() else ["-i"]
    env.update(PGSSLMODE="verify-full", PGSSLROOTCERT="/etc/lab/ca.crt")
    os.execvpe("docker", ["docker", "exec", *tty, "-e", "PGPASSWORD", "-e", "PGAPPNAME",
                          "-e", "PGSSLMODE", "-e", "PGSSLROOTCERT",
                          db.name, "psql", *inner, *psql_args], env)


@cli.command()
@click.argument("service", required=False, type=click.Choice(["db", "dedicated", "pooler"]))
@name_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", type=int, default=200, show_default=True, help="Lines per service.")
def logs(service, name, follow, tail):
    """Logs of the lab's services (db, dedicated, pooler); passwords are masked."""
    from lab import connect as connmod
    from lab import stack

    cfg, state = stack.load(name)
    st = stack.Stack(cfg, state)
    secrets = state.secrets()
    if follow:
        st.logs(service, tail=tail, follow=True)
        return
    proc = st.logs(service, tail=tail)
    click.echo(connmod.redact(proc.stdout, secrets), nl=False)


@cli.group()
def image():
    """The lab's Docker image (PostgreSQL 17 + PgBouncer 1.24 on Debian trixie)."""


@image.command("build")
@click.option("--offline", is_flag=True,
              help="Make the Debian base with debootstrap from the host's apt mirror "
                   "(for machines with no container registry; needs root).")
@click.option("--if-missing", is_flag=True, help="Do nothing when the image already exists.")
def image_build(offline, if_missing):
    """Build the image every service runs."""
    from lab import image as imagemod

    tag = imagemod.build(offline=offline, if_missing=if_missing, log=_progress)
    term.success(f"image {tag} is ready")


@cli.command()
@name_option
def doctor(name):
    """Check the engine, Compose v2, the image, and the lab's addresses and ports."""
    from lab.status import doctor as run_doctor

    checks = run_doctor(name)
    for check in checks:
        line = f"{term.mark(check.ok)} {check.name}: {check.detail}"
        if not check.ok and check.fix:
            line += f"  -> fix: {check.fix}"
        click.echo(line)
    if not all(c.ok for c in checks):
        raise LabError(f"{sum(not c.ok for c in checks)} check(s) failed",
                       fix="run the commands shown after -> fix")


# -- load runs -------------------------------------------------------------------------------


def _params(values: tuple[str, ...]) -> dict[str, str]:
    params = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="-P")
        params[key.strip()] = value
    return params


def load_options(f):
    """Options shared by `lab run` and `lab bench`."""
    for option in reversed([
        click.option("--duration", default="30s", show_default=True,
                     help="Load time per endpoint, e.g. 60s, 2m."),
        click.option("--users", type=int,
                     help="Locust users (scenario default when omitted)."),
        click.option("--spawn-rate", type=float, help="Users started per second (default: all "
                                                      "at once)."),
        click.option("--workers", type=int, default=1, show_default=True,
                     help="Locust processes on this machine (master + N workers when > 1)."),
        click.option("--seed", type=int, default=1, show_default=True,
                     help="Seed of the arrival schedule; the same seed for every endpoint."),
        click.option("--cooldown", default="5s", show_default=True,
                     help="Pause between endpoints."),
        click.option("--repeat", type=int, default=1, show_default=True,
                     help="Run every segment N times, interleaved, same seed: the report's "
                          "95% intervals and the recommendation use the repeats."),
        click.option("--sslmode", type=click.Choice(SSLMODES),
                     help="The clients' libpq sslmode (default verify-full with the lab's CA, "
                          "as lab connect prints; disable = plaintext)."),
        click.option("-P", "--param", "params", multiple=True, metavar="KEY=VALUE",
                     help="Scenario parameter (see lab scenarios)."),
        click.option("--reports-dir", type=click.Path(path_type=Path, file_okay=False),
                     default=Path("reports"), show_default=True,
                     help="Where run directories are written."),
    ]):
        f = option(f)
    return f


watch_option = click.option(
    "--watch", "watch", is_flag=True,
    help="Serve the live view (lab watch) of this lab while it runs; its URL is printed.")


@contextlib.contextmanager
def _watching(enabled: bool, name: str):
    """The live view of lab ``name`` for the length of a command (``--watch``)."""
    if not enabled:
        yield
        return
    from lab import watch as watchmod

    view = watchmod.open_view(name, log=_progress)
    term.note(f"live view: {view.url}")
    try:
        yield
    finally:
        view.close()


def _outcome(result) -> str:
    """The run's own count of every arrival: started (and failed), and never started."""
    text = f"{result.requests:,} requests started, {result.errors:,} failed"
    if result.not_started:
        text += f", {result.not_started:,} scheduled but never started"
    return text


def _show_live(printer):
    def show(live):
        printer.update(live.line())
    return show


@cli.command()
@click.option("--master", required=True, metavar="HOST[:PORT]",
              help="The address `lab run --master-bind` gave (port 5557 by default).")
@click.option("--join", metavar="CODE",
              help="The code `lab run --master-bind` printed, for a master beyond loopback.")
@click.option("--dir", "workdir", type=click.Path(path_type=Path, file_okay=False),
              help="Keep this worker's own copy of its files here (default: a temporary "
                   "directory, removed at the end).")
@click.option("--runs", type=int, default=1, show_default=True,
              help="Runs to serve before exiting (0: until Ctrl-C).")
def worker(master, join, workdir, runs):
    """Generate this machine's share of a distributed run's load (`lab run --master-bind`).

    The scenario and its parameters come from the master; the samples go back to it, into
    its run directory. Serves every segment of the run, then exits.
    """
    from lab.distributed.worker import serve

    if runs < 0:
        raise click.BadParameter("use 1 or more, or 0 for until Ctrl-C", param_hint="--runs")
    result = serve(master, join=join, workdir=workdir, runs=runs, log=_progress)
    term.info(f"served {result.segments} segment(s) of {result.runs} run(s)")


@cli.command()
@click.argument("scenario")
@click.option("--endpoint", "-e", "endpoints", multiple=True,
              type=click.Choice([*ENDPOINTS, "all"]),
              help="Endpoint to load (repeatable; 'all' = the four). Default: transaction.")
@click.option("--target", metavar="URI",
              help="Load any Postgres or pooler URI instead of the lab (e.g. a Supabase project).")
@load_options
@click.option("--ui", is_flag=True, help="Serve Locust's web UI on 127.0.0.1 (workshops).")
@click.option("--web-port", type=int, default=8089, show_default=True,
              help="Port of Locust's web UI with --ui.")
@click.option("--connect-cost", is_flag=True,
              help="Before the load, measure connect + SELECT 1 + close with and without TLS "
                   "on each endpoint (a table in the report).")
@click.option("--master-bind", metavar="HOST[:PORT]",
              help="Run Locust's master on this address (port 5557 by default); the load "
                   "comes from `lab worker` processes. Beyond loopback: TLS and a token.")
@click.option("--expect-workers", type=int, default=1, show_default=True,
              help="With --master-bind: workers to wait for before each segment starts.")
@click.option("--worker-wait", default="120s", show_default=True,
              help="With --master-bind: how long each segment waits for its workers.")
@fault_option
@watch_option
@name_option
def run(scenario, endpoints, target, duration, users, spawn_rate, workers, seed, cooldown,
        repeat, sslmode, params, reports_dir, ui, web_port, connect_cost, master_bind,
        expect_workers, worker_wait, faults, watch, name):
    """Run SCENARIO (a name from `lab scenarios` or a locustfile) against endpoints.

    Writes reports/<run-id>/ (raw samples, connection counts, Locust CSV, manifest) and prints
    that path as the last line. Ctrl-C keeps everything measured so far.
    """
    from lab import run as runmod

    if target and endpoints:
        raise click.UsageError("use either --endpoint or --target")
    spec = runmod.RunSpec(
        scenario=scenario, endpoints=tuple(endpoints) or ("transaction",),
        duration_s=runmod.parse_duration(duration), users=users, spawn_rate=spawn_rate,
        workers=workers, params=_params(params), seed=seed,
        cooldown_s=runmod.parse_span(cooldown), repeat=repeat,
        target=target, ui=ui, web_port=web_port, lab_name=name, reports_dir=reports_dir,
        sslmode=sslmode, connect_cost=connect_cost, faults=_faults(faults),
        master_bind=master_bind, expect_workers=expect_workers,
        worker_wait_s=runmod.parse_duration(worker_wait),
    )
    spec.check()
    if watch and target:
        raise click.UsageError("--watch shows a lab: with --target, replay the run afterwards "
                               "(lab watch RUN_DIR)")
    if ui:
        term.note(f"Locust web UI: http://127.0.0.1:{web_port}/")
    printer = term.Progress()
    try:
        with _watching(watch, name):
            result = runmod.run(spec, progress=_show_live(printer), log=_progress)
    finally:
        printer.done()
    term.info(_outcome(result))
    click.echo(str(result.run_dir))
    if result.interrupted:
        term.warn("interrupted: kept everything measured so far")
        sys.exit(130)
    result.check_lab_whole()


@cli.command()
@json_option
def scenarios(as_json):
    """The built-in scenarios and their -P parameters."""
    from lab import scenarios as scenmod

    found = scenmod.available()
    if as_json:
        click.echo(json.dumps([s.to_json() for s in found], indent=2))
        return
    for s in found:
        term.heading(f"{s.name}  (default users {s.default_users})")
        click.echo(f"  {s.description}")
        shown = [f"-P {key}={param.default}" for key, param in s.params.items()]
        width = max((len(text) for text in shown), default=0)
        for text, param in zip(shown, s.params.values(), strict=True):
            click.echo(f"  {text:<{width}}  {param.help}")


# -- experiments ---------------------------------------------------------------------------


@cli.group()
def experiment():
    """Transaction-pooling pitfalls and documented limits, demonstrated on the live lab."""


@experiment.command("list")
@click.option("--markdown", is_flag=True,
              help="Print the experiments section of docs/workshop.md (generated).")
@json_option
def experiment_list(markdown, as_json):
    """The experiments: name, title and the question to ask the room."""
    from lab import experiments as expmod

    if markdown:
        click.echo(expmod.guide_markdown(), nl=False)
    elif as_json:
        click.echo(json.dumps(expmod.catalogue_json(), indent=2))
    else:
        term.table([(e.name, e.title) for e in expmod.CATALOGUE], ["experiment", "title"])


def _print_experiment(result) -> None:
    term.heading(f"{result.name}: {result.title}")
    click.echo(f"  {result.question}")
    term.table([("ok" if ln.passed else "FAIL", ln.key, ln.expected, ln.observed, ln.detail)
                for ln in result.lanes], ["", "lane", "expected", "observed", "what happened"])
    if result.error:
        term.warn(f"{result.name} could not finish: {result.error}")
    click.echo(f"  fix: {result.fix}\n")


@experiment.command("run")
@click.argument("names", nargs=-1)
@click.option("--all", "run_all", is_flag=True, help="Run every experiment (a setup check).")
@click.option("--expect", multiple=True, hidden=True, metavar="EXPERIMENT.LANE=OUTCOME")
@click.option("--real-limits", is_flag=True,
              help="The limit experiments hold the lab's own limits: every max_client_conn "
                   "slot of each pooler (12,000 on 16xl: minutes), the real pool sizes.")
@watch_option
@name_option
@json_option
def experiment_run(names, run_all, expect, real_limits, watch, name, as_json):
    """Run experiments (NAMES, or --all) on the lab; exit 7 if one sees the unexpected."""
    from lab import experiments as expmod

    with _watching(watch, name):
        results = expmod.run(names, name, run_all=run_all, expect=expect, log=_progress,
                             on_result=None if as_json else _print_experiment,
                             real_limits=real_limits)
    if as_json:
        click.echo(json.dumps(expmod.results_json(name, results), indent=2))
    elif all(r.passed for r in results):
        term.success(f"{len(results)} of {len(results)} experiments as expected")
    expmod.check(results, name)


# -- clients -------------------------------------------------------------------------------


@cli.command()
@click.option("--endpoint", "endpoints", multiple=True, metavar="ENDPOINT",
              help="Only this endpoint (repeatable): direct, session, transaction, dedicated.")
@click.option("--driver", "drivers", multiple=True, metavar="NAME|FILE",
              help="Only this driver (repeatable): a name from --list, or a driver file.")
@click.option("--prepared", type=int, metavar="N",
              help="Re-run the cells that fail on a pooler with PgBouncer's "
                   "max_prepared_statements=N set at runtime: shows which drivers it rescues.")
@click.option("--timeout", type=float, default=20.0, show_default=True,
              help="Seconds a cell may take before it counts as hanging.")
@click.option("--no-install", is_flag=True,
              help="Report drivers whose packages are missing instead of installing them.")
@click.option("--list", "list_only", is_flag=True, help="List the drivers and stop.")
@click.option("--install-only", is_flag=True,
              help="Install the drivers' pinned packages (pip, npm) and stop: make clients.")
@click.option("--reports-dir", type=click.Path(path_type=Path), default=Path("reports"),
              show_default=True, help="Where clients-<time>/ (JSON, Markdown, HTML) goes.")
@name_option
@json_option
def clients(endpoints, drivers, prepared, timeout, no_install, list_only, install_only,
            reports_dir, name, as_json):
    """Will my driver or ORM work through each endpoint? Real drivers, a matrix.

    Each driver variant (its defaults, then each documented fix) runs a small workload through
    each endpoint from drained pools, in a process of its own: works, fails with the driver's
    own exception, hangs, or could not run here. Writes clients.json, clients.md and
    clients.html under --reports-dir.
    """
    from lab import clients as clientsmod

    if install_only:
        clientsmod.install_all(drivers, log=_progress)
        term.success("the drivers' packages are installed")
        return
    if list_only:
        rows = clientsmod.listing()
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            term.table([(r["name"], r["title"], r["ecosystem"], r["installed"],
                         ", ".join(r["variants"]) or r["untestable"]) for r in rows],
                       ["driver", "title", "from", "installed", "variants"])
        return
    matrix = clientsmod.run(name, chosen_endpoints=endpoints, chosen_drivers=drivers,
                            install_missing=not no_install, timeout=timeout, prepared=prepared,
                            log=_progress)
    folder = clientsmod.write(matrix, reports_dir)
    if as_json:
        click.echo(json.dumps(matrix.to_json(), indent=2))
    else:
        click.echo(clientsmod.text(matrix), nl=False)
        term.info(str(folder / "clients.html"))
    if matrix.interrupted:
        term.warn(f"interrupted: what was measured is in {folder}")
        sys.exit(130)


# -- reports -------------------------------------------------------------------------------


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--compare", "compare_dir", type=click.Path(path_type=Path), metavar="RUN_B",
              help="Another run directory: a table of what changed, and both runs in every "
                   "figure (written to RUN_DIR/compare-<RUN_B id>/).")
@click.option("--objective", metavar="TEXT",
              help="A sweep directory only: the objective of the capacity answer, e.g. "
                   "\"p99<100ms,errors<0.1%\" (default: the sweep's own).")
@click.option("--baseline", type=ENDPOINT_CHOICE,
              help="A sweep directory only: the endpoint the ratios divide by.")
@json_option
def report(run_dir, compare_dir, objective, baseline, as_json):
    """Write report.html, report.md and figures/ for RUN_DIR (reports/<run-id>).

    Prints the HTML's path, then the Markdown's. The HTML is one self-contained file. With
    --json, prints the analysis (segments, outages, recommendations, warnings) and writes
    nothing. A sweep directory (lab sweep) gets the sweep's report: curves, ratios, capacity.
    """
    from lab import sweep as sweepmod

    if sweepmod.is_sweep_dir(run_dir):
        if compare_dir is not None:
            raise click.UsageError("a sweep compares its own points; leave out --compare")
        if as_json:
            click.echo(json.dumps(sweepmod.to_json(sweepmod.analyze(run_dir, objective,
                                                                    baseline)), indent=2))
            return
        paths = sweepmod.build_sweep_report(run_dir, objective, baseline)
        term.info(str(paths.html))
        term.info(str(paths.markdown))
        return
    if objective or baseline:
        raise click.UsageError("--objective and --baseline are for sweep directories")
    if as_json:
        from lab import analysis

        if compare_dir is not None:
            raise click.UsageError("--json prints one run's analysis; leave out --compare")
        click.echo(json.dumps(analysis.to_json(analysis.analyze(run_dir)), indent=2))
        return
    from lab.report import build_report

    paths = build_report(run_dir, compare=compare_dir)
    term.info(str(paths.html))
    term.info(str(paths.markdown))
    term.note(f"{len(paths.figures) // 2} figures (PNG and SVG) in {paths.directory / 'figures'}")


@cli.command()
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--bind", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="Address to serve on; beyond the loopback a token is required (printed once "
                   "in the URL).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port to serve on (0: a free one).")
@click.option("--window", type=click.IntRange(30, 3600), default=180, show_default=True,
              help="Seconds of history the page shows.")
@click.option("--speed", type=click.FloatRange(0.1, 100), default=1.0, show_default=True,
              help="Replay speed, with RUN_DIR.")
@click.option("--install-only", is_flag=True,
              help="Install the page's chart library (npm) and stop (make setup runs this).")
@name_option
def watch(run_dir, bind, port, window, speed, install_only, name):
    """Serve the live view of the lab (or replay RUN_DIR) as a web page; Ctrl-C stops.

    Pools filling and backends climbing, per endpoint, twice a second, whatever drives the
    lab: a `lab run` (its numbers too), an experiment, attendees' own psql sessions.
    """
    import time

    from lab import watch as watchmod
    from lab.watch import assets

    if install_only:
        assets.ensure(install=True, log=_progress)
        term.info(f"{assets.PACKAGE} {assets.VERSION} in {assets.web_dir()}")
        return
    view = watchmod.open_view(name, run_dir, bind=bind, port=port, speed=speed,
                              window_s=float(window), log=_progress)
    for line in view.notes:
        term.warn(line)
    click.echo(view.url)
    term.note("open it in a browser (a projector: zoom to taste); Ctrl-C stops")
    try:
        said = False
        while True:
            time.sleep(0.5)
            if view.replay_done and not said:
                term.note("replay finished: the page keeps it until Ctrl-C")
                said = True
    except KeyboardInterrupt:
        pass
    finally:
        view.close()


@cli.command()
@click.option("--quick", is_flag=True,
              help="Short segments: the whole bench in under 3 minutes (demos, workshops).")
@click.option("--duration", help="Load time per segment (default 12s with --quick, else 60s).")
@click.option("--cooldown", help="Pause between segments (default 2s with --quick, else 10s).")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of the arrival schedules, the same for every endpoint.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Locust processes on this machine.")
@click.option("--repeat", type=int, default=1, show_default=True,
              help="Run every segment N times, interleaved, same seed (95% intervals).")
@click.option("--reports-dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("reports"), show_default=True, help="Where the run is written.")
@click.option("--network", type=click.Choice(list(NETWORKS), case_sensitive=False),
              help="Bring the lab up again at this distance first (its other settings kept); "
                   "it stays so afterwards.")
@click.option("--sslmode", type=click.Choice(SSLMODES),
              help="The clients' sslmode (default verify-full with the lab's CA).")
@fault_option
@watch_option
@name_option
def bench(quick, duration, cooldown, seed, workers, repeat, reports_dir, network, sslmode,
          faults, watch, name):
    """The headline comparison: serverless bursts and persistent servers on all four endpoints.

    One run directory and one report; prints the report's path as the last line.
    """
    from lab import run as runmod
    from lab.report import build_report

    printer = term.Progress()
    try:
        with _watching(watch, name):
            result = runmod.bench(
                quick, duration_s=runmod.parse_duration(duration) if duration else None,
                cooldown_s=runmod.parse_span(cooldown) if cooldown is not None else None,
                seed=seed, workers=workers, repeat=repeat, lab_name=name,
                reports_dir=reports_dir, network=network, sslmode=sslmode,
                faults=_faults(faults), progress=_show_live(printer), log=_progress)
    finally:
        printer.done()
    term.info(f"{_outcome(result)} in {result.run_dir}")
    paths = build_report(result.run_dir)
    term.info(str(paths.markdown))
    click.echo(str(paths.html))
    if result.interrupted:
        term.warn("interrupted: the report covers what was measured")
        sys.exit(130)
    result.check_lab_whole()


# -- sweeps ---------------------------------------------------------------------------------


@cli.command()
@click.argument("scenario", required=False)
@click.option("--vary", "vary", multiple=True, metavar="KEY=V1,V2,...",
              help="Sweep KEY over the values (repeatable: the cross product). Lab settings "
                   "(tier, pool_size, pool_sharing, max_prepared_statements, max_connections, "
                   "network, ssl_enforce, ...) bring the lab up again between points; users, "
                   "sslmode and scenario parameters (P.NAME, or NAME) vary within one lab.")
@click.option("--endpoint", "-e", "endpoints", multiple=True,
              type=click.Choice([*ENDPOINTS, "all"]),
              help="Endpoint to load at every point (repeatable; 'all' = the four).")
@click.option("--preset", metavar="NAME|FILE",
              help="A built-in sweep (lab sweep --list) or a preset file; flags override it.")
@click.option("--list", "list_presets", is_flag=True, help="List the presets and stop.")
@click.option("--objective", metavar="TEXT",
              help="The capacity answer's objective, e.g. \"p99<100ms,errors<0.1%\" "
                   "(p50/p95/p99 in ms or s; errors, not_started in %).")
@click.option("--baseline", type=ENDPOINT_CHOICE,
              help="The endpoint the report's ratios divide by (default: the first).")
@click.option("--duration", help="Load time per endpoint and point (default 30s).")
@click.option("--cooldown", help="Pause between endpoints (default 5s).")
@click.option("--users", type=int, help="Locust users, when not swept.")
@click.option("--spawn-rate", type=float, help="Users started per second (default: all at once).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Locust processes on this machine.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of the arrival schedule, the same at every point.")
@click.option("--repeat", type=int,
              help="Run every segment of every point N times, interleaved (95% intervals).")
@click.option("--sslmode", type=click.Choice(SSLMODES), help="The clients' sslmode.")
@click.option("-P", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A fixed scenario parameter (see lab scenarios).")
@click.option("--reports-dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("reports"), show_default=True,
              help="Where the sweep directory is written.")
@click.option("--dry-run", is_flag=True, help="Print the plan and its estimate; run nothing.")
@click.option("--resume", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Run the points of an interrupted sweep that have not finished.")
@watch_option
@name_option
def sweep(scenario, vary, endpoints, preset, list_presets, objective, baseline, duration,
          cooldown, users, spawn_rate, workers, seed, repeat, sslmode, params, reports_dir,
          dry_run, resume, watch, name):
    """Run SCENARIO over the cross product of --vary values on each --endpoint: curves.

    Writes reports/<sweep-id>/ (a run directory per point and sweep.json), then its report
    (curves, knees, ratios, the capacity answer), and prints the sweep directory as its last
    line. Ctrl-C keeps every finished point; lab sweep --resume DIR runs the rest.
    """
    from lab import sweep as sweepmod

    if list_presets:
        for p in sweepmod.presets():
            term.heading(f"{p.name}  ({p.scenario} on {', '.join(p.endpoints)})")
            click.echo(f"  {p.question}")
            click.echo(f"  vary {'; '.join(p.vary)}")
        return
    request = sweepmod.SweepRequest(
        scenario=scenario, vary=tuple(vary), endpoints=tuple(endpoints), preset=preset,
        users=users, spawn_rate=spawn_rate, workers=workers, params=_params(params), seed=seed,
        duration=duration, cooldown=cooldown, repeat=repeat, sslmode=sslmode,
        objective=objective, baseline=baseline, lab_name=name, reports_dir=reports_dir,
        resume=resume, dry_run=dry_run)
    printer = term.Progress()
    try:
        with _watching(watch and not dry_run, name):
            result = sweepmod.sweep(request,
                                    show_plan=lambda lines: click.echo("\n".join(lines)),
                                    progress=_show_live(printer), log=_progress)
    finally:
        printer.done()
    if result.sweep_dir is None:
        return
    term.info(f"{result.done} point(s) measured, {result.failed} failed, {result.left} left")
    if result.report is not None:
        term.info(str(result.report.html))
    elif result.report_error:
        term.warn(f"no report: {result.report_error}")
    click.echo(str(result.sweep_dir))
    if result.interrupted:
        term.warn(f"interrupted: kept every finished point; lab sweep --resume "
                  f"{result.sweep_dir} runs the rest")
        sys.exit(130)
    result.check()


# -- entry point ---------------------------------------------------------------------------


def _terminate(signum, frame) -> None:
    # `kill`, `timeout` and CI send SIGTERM: stop like Ctrl-C, so a run keeps what it measured
    # and stops its Locust processes instead of leaving them behind.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; the one place errors become messages and exit codes."""
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        cli.main(args=argv, prog_name="lab", standalone_mode=False)
    except LabError as exc:
        term.error(exc.one_line())
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        term.error("interrupted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        term.error("interrupted")
        sys.exit(130)

