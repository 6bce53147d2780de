"""Every fault on the real stack, as a client sees it, and the injector's schedule. One lab
serves the module; each test undoes what it broke (the fault's own recover)."""

from __future__ import annotations

import json
import os
import threading
import time

import psycopg
import pytest

from lab import connect, stack
from lab.classify import classify
from lab.faults import actions, parse_fault, parse_faults
from lab.faults.injector import Injector

pytestmark = [pytest.mark.stack, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory()


@pytest.fixture(scope="module")
def ctx(lab):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POOLER_LAB_HOME", str(lab.home))
        cfg, state, containers = stack.require_running(lab.name)
        context = actions.context_for_lab(cfg, state, connect.endpoints(cfg, containers))
        yield context
        context.close()


def uri(lab, endpoint: str) -> str:
    """Read again each time: a restart or reconnect may give a container a new address."""
    return lab.connect()[endpoint]["bench_uri"]


def conn(target: str) -> psycopg.Connection:
    return psycopg.connect(target, prepare_threshold=None, connect_timeout=3, autocommit=True)


def query(target: str) -> int:
    with conn(target) as c:
        return c.execute("SELECT 1").fetchone()[0]


class Failure(str):
    """The error class of a failure; ``message`` is its text (shown when a test fails)."""

    message: str

    def __repr__(self) -> str:
        return f"{str(self)!r} ({self.message})"


def failure(fn) -> Failure:
    """The error class of what ``fn`` raised (the test fails if it raised nothing)."""
    try:
        fn()
    except psycopg.Error as exc:
        cls, _, message = classify(exc)
        result = Failure(cls)
        result.message = message
        return result
    raise AssertionError("expected a failure")


def eventually(fn, timeout: float = 30.0, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)


def all_running(lab) -> bool:
    status = lab.status()
    return status["running"] and all(c["state"] == "running" for c in status["containers"])


def assert_ok(result):
    assert result is not None
    assert result["ok"], result
    assert result["error"] is None and result["done_t"] >= result["t"]
    return result["answer"]


def whole(lab):
    """Every endpoint answers a query again (after a recover)."""
    for endpoint in ("direct", "session", "transaction", "dedicated"):
        eventually(lambda e=endpoint: query(uri(lab, e)) == 1 or None)


# -- container faults ---------------------------------------------------------------------------


def test_pooler_kill_refuses_clients_until_started_again(lab, ctx):
    target = uri(lab, "transaction")
    fault = parse_fault("0s:pooler:kill:2s")
    assert "SIGKILL" in assert_ok(actions.inject(fault, ctx))
    assert failure(lambda: query(target)) == "connection_refused"
    assert "started" in assert_ok(actions.recover(fault, ctx))
    assert eventually(lambda: query(uri(lab, "transaction"))) == 1
    # idempotent: already running
    assert "already running" in assert_ok(actions.recover(fault, ctx))


def test_db_pause_freezes_a_query_until_unpaused(lab, ctx):
    target = uri(lab, "direct")
    held = conn(target)
    fault = parse_fault("0s:db:pause:2s")
    assert_ok(actions.inject(fault, ctx))
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = held.execute("SELECT 42").fetchone()[0]
        except Exception as exc:  # pragma: no cover - reported below
            outcome["error"] = exc

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(1.5)
    assert worker.is_alive(), "a frozen host answered"
    # a new client hangs too (the kernel accepts, Postgres never answers): its timeout ends it
    assert failure(lambda: query(target)) == "connection_refused"
    assert "unpaused" in assert_ok(actions.recover(fault, ctx))
    worker.join(10)
    assert outcome == {"value": 42}
    assert time.monotonic() - started > 1.5
    held.close()
    assert "not paused" in assert_ok(actions.recover(fault, ctx))


def test_pooler_disconnect_and_reconnect(lab, ctx):
    target = uri(lab, "transaction")
    fault = parse_fault("0s:pooler:disconnect:2s")
    assert "disconnected" in assert_ok(actions.inject(fault, ctx))
    assert failure(lambda: query(target)) == "connection_refused"
    assert "reconnected" in assert_ok(actions.recover(fault, ctx))
    assert eventually(lambda: query(uri(lab, "transaction"))) == 1
    assert "already on" in assert_ok(actions.recover(fault, ctx))


def test_db_disconnect_and_reconnect_restores_its_name(lab, ctx):
    fault = parse_fault("0s:db:disconnect:2s")
    assert_ok(actions.inject(fault, ctx))
    answer = assert_ok(actions.recover(fault, ctx))
    assert "as db" in answer
    code, out = ctx.container("pooler").exec_run(["getent", "hosts", "db"])
    assert code == 0, out
    # The pooler reaches Postgres by the name db again: new server connections through it.
    assert_ok(actions.inject(parse_fault("0s:transaction:reconnect"), ctx))
    assert eventually(lambda: query(uri(lab, "transaction")), timeout=40) == 1
    whole(lab)


def test_pooler_restart_drops_clients_and_comes_back(lab, ctx):
    held = conn(uri(lab, "session"))
    held.execute("SELECT 1")
    assert "restarted" in assert_ok(actions.inject(parse_fault("0s:pooler:restart"), ctx))
    assert failure(lambda: held.execute("SELECT 1")) == "connection_lost"
    held.close()
    assert actions.recover(parse_fault("0s:pooler:restart"), ctx) is None
    assert eventually(lambda: query(uri(lab, "session"))) == 1


def test_dedicated_stop_for_a_while(lab, ctx):
    target = uri(lab, "dedicated")
    fault = parse_fault("0s:dedicated:stop:2s")
    assert "stopped" in assert_ok(actions.inject(fault, ctx))
    assert failure(lambda: query(target)) == "connection_refused"
    assert query(uri(lab, "direct")) == 1  # the db host itself is fine
    assert_ok(actions.recover(fault, ctx))
    assert eventually(lambda: query(uri(lab, "dedicated"))) == 1


def test_db_fast_restart_loses_open_connections(lab, ctx):
    held = conn(uri(lab, "direct"))
    held.execute("SELECT 1")
    answer = assert_ok(actions.inject(parse_fault("0s:db:fast-restart"), ctx))
    # in place (lab-entrypoint restart-db): the container, its address and the dedicated
    # pooler's network namespace stay
    assert answer == "Postgres fast restart in place (pg_ctl stop -m fast, started again)"
    with pytest.raises(psycopg.Error) as err:
        held.execute("SELECT 1")
    assert classify(err.value)[0] == "connection_lost"
    held.close()
    assert eventually(lambda: query(uri(lab, "direct"))) == 1
    whole(lab)  # the dedicated pooler too


def test_db_kill_and_start_brings_the_dedicated_pooler_back(lab, ctx):
    fault = parse_fault("0s:db:kill:1s")
    assert_ok(actions.inject(fault, ctx))
    assert failure(lambda: query(uri(lab, "dedicated"))) == "connection_refused"
    assert "dedicated restarted" in assert_ok(actions.recover(fault, ctx))
    whole(lab)


# -- admin faults -------------------------------------------------------------------------------


def server_pids(ctx, target: str) -> set[int]:
    c = ctx.consoles[target]
    from lab import pg

    with pg.admin_connect(c.host, c.port, c.user, c.password, **c.tls) as admin:
        return {int(r["remote_pid"]) for r in pg.rows(admin, "SHOW SERVERS")
                if r.get("database") == "postgres"}


def test_transaction_reconnect_replaces_server_connections(lab, ctx):
    held = conn(uri(lab, "transaction"))
    held.execute("SELECT 1")
    before = server_pids(ctx, "transaction")
    assert before
    assert assert_ok(actions.inject(parse_fault("0s:transaction:reconnect"), ctx)) == "RECONNECT"
    assert held.execute("SELECT 2").fetchone()[0] == 2  # the client never notices
    after = server_pids(ctx, "transaction")
    assert after and not after & before
    held.close()


def test_transaction_pool_pause_makes_queries_wait(lab, ctx):
    held = conn(uri(lab, "transaction"))
    held.execute("SELECT 1")
    fault = parse_fault("0s:transaction:pool-pause:2s")
    assert "PAUSE" in assert_ok(actions.inject(fault, ctx))
    timer = threading.Timer(2.0, lambda: actions.recover(fault, ctx))
    started = time.monotonic()
    timer.start()
    assert held.execute("SELECT 3").fetchone()[0] == 3
    waited = time.monotonic() - started
    timer.join()
    assert 1.5 < waited < 6
    held.close()
    assert "not paused" in assert_ok(actions.recover(fault, ctx))


def test_session_pool_pause_waits_for_busy_servers_then_resumes(lab, ctx, monkeypatch):
    held = conn(uri(lab, "session"))  # session mode: holds its server until it leaves
    held.execute("SELECT 1")
    monkeypatch.setattr(ctx, "pause_wait", 1.0)
    fault = parse_fault("0s:session:pool-pause")
    assert "still waiting" in assert_ok(actions.inject(fault, ctx))
    assert "session" in ctx.pending
    assert held.execute("SELECT 2").fetchone()[0] == 2  # it keeps its server
    assert assert_ok(actions.recover(fault, ctx)) == "RESUME"
    assert "session" not in ctx.pending
    held.close()
    assert query(uri(lab, "session")) == 1


def test_reload(lab, ctx):
    for target in ("session", "transaction", "dedicated"):
        assert assert_ok(actions.inject(parse_fault(f"0s:{target}:reload"), ctx)) == "RELOAD"
    assert query(uri(lab, "transaction")) == 1


def test_dedicated_kill_clients_drops_them_until_resumed(lab, ctx):
    target = uri(lab, "dedicated")
    held = conn(target)
    held.execute("SELECT 1")
    fault = parse_fault("0s:dedicated:kill-clients:2s")
    assert "KILL" in assert_ok(actions.inject(fault, ctx))
    # PgBouncer tells the client "database removed" (08P01), then closes the connection.
    first = failure(lambda: held.execute("SELECT 1"))
    assert first == "connection_lost" and "database removed" in first.message, repr(first)
    assert failure(lambda: held.execute("SELECT 1")) == "connection_lost"
    held.close()
    assert "RESUME" in assert_ok(actions.recover(fault, ctx))
    assert eventually(lambda: query(uri(lab, "dedicated"))) == 1
    assert "not paused" in assert_ok(actions.recover(fault, ctx))


# -- the injector -------------------------------------------------------------------------------


def test_injector_on_schedule_and_stop_restores_the_lab(lab, ctx, tmp_path):
    events_path = tmp_path / "faults.jsonl"
    faults = parse_faults(["1s:transaction:pool-pause:1s", "3s:pooler:kill:1s"])
    inj = Injector(faults, ctx, events_path, "seg1", log=lambda _: None)
    started = time.time()
    inj.start(started)
    # the kill is in effect from when Docker has done it (3 s and its API's time, longer on a
    # loaded machine) until its recover at 4 s: watched, not sampled once
    seen = set()
    while time.time() < started + 5.0:
        seen.add(tuple(inj.active()))
        time.sleep(0.05)
    assert ("pooler killed for 1 s",) in seen, seen
    inj.stop()
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert [(e["fault"], e["phase"]) for e in events] == [
        ("1s:transaction:pool-pause:1s", "inject"), ("1s:transaction:pool-pause:1s", "recover"),
        ("3s:pooler:kill:1s", "inject"), ("3s:pooler:kill:1s", "recover")]
    for e in events:
        assert e["ok"], e
        assert abs(e["t"] - e["planned_t"]) < 0.5, e
    whole(lab)

    # Without DURATION: stop() undoes it.
    inj = Injector([parse_fault("0s:pooler:pause")], ctx, events_path, "seg2",
                   log=lambda _: None)
    inj.start(time.time())
    eventually(lambda: inj.active() or None, timeout=5, interval=0.1)
    assert not all_running(lab)
    inj.stop()
    assert all_running(lab)
    assert [e["phase"] for e in inj.events] == ["inject", "recover"]
    assert len(events_path.read_text().splitlines()) == 6
    whole(lab)


def unix_sockets() -> int:
    """This process's open unix sockets (its connections to docker.sock)."""
    with open("/proc/net/unix") as f:
        unix = {line.split()[6] for line in f.readlines()[1:]}
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += link.startswith("socket:[") and link[8:-1] in unix
    return count


def test_the_docker_client_keeps_its_connections_across_calls(lab, ctx):
    # The SDK's own pools are keyed by URL: every container inspected, every exec left one
    # more socket to docker.sock open (the soak's staircase at each container fault).
    for service in ("db", "pooler", "dedicated"):
        actions._state(ctx.container(service))
    before = unix_sockets()
    for _ in range(3):
        for service in ("db", "pooler", "dedicated"):
            actions._state(ctx.container(service))
        assert ctx.container("db").exec_run(["true"]).exit_code == 0
        ctx.network().reload()
    assert unix_sockets() <= before


def test_a_frozen_pooler_host_never_holds_up_the_samples_of_the_others(lab, ctx, tmp_path):
    """The connection sampler asks every target at once on one thread (issue "Scale"): while
    the shared pooler's host is paused, Postgres and the dedicated pooler are still sampled
    every tick; the frozen endpoints are recorded as failed samples (an open connection's
    answer, then a new connection, given up at their timeouts), and sampled again after."""
    from lab import sampler as samplermod

    cfg, state, containers = stack.require_running(lab.name)
    targets = samplermod.lab_targets(cfg, connect.endpoints(cfg, containers))
    out = tmp_path / "connections.jsonl"
    sampler = samplermod.Sampler(targets, samplermod.lab_passwords(state.secrets(), targets),
                                 shared=samplermod.shared_addresses(containers), out=out,
                                 interval=0.25, timeout=1, answer_timeout=1)
    fault = parse_fault("0s:pooler:pause:3s")
    with sampler:
        time.sleep(1.5)
        paused_at = time.time()
        assert_ok(actions.inject(fault, ctx))
        try:
            time.sleep(3)
        finally:
            assert "unpaused" in assert_ok(actions.recover(fault, ctx))
        resumed_at = time.time()
        time.sleep(3)
    records = samplermod.read(out)
    for name in ("postgres", "dedicated"):
        during = [r for r in records if r["target"] == name
                  and paused_at + 0.5 <= r["t"] <= resumed_at - 0.5]
        assert len(during) >= 6 and all(r["ok"] for r in during), (name, during)
    for name in ("session", "transaction"):
        mine = [r for r in records if r["target"] == name]
        assert all(r["ok"] for r in mine if r["t"] < paused_at - 0.3), mine
        failed = [r for r in mine if not r["ok"]]
        assert failed and all(r["error"] in ("no answer within 1 s", "no connection within 1 s")
                              for r in failed), failed
        assert failed[0]["error"] == "no answer within 1 s"  # the open connection, first
        assert any(r["ok"] for r in mine if r["t"] > resumed_at), mine
