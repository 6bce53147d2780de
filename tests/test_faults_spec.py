"""Faults without a lab: parsing, validation, describe texts, and the injector's schedule with
stand-ins for the Docker engine and the admin consoles."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest

from lab.errors import ConfigError
from lab.faults import spec
from lab.faults.injector import Injector
from lab.faults.spec import (
    ADMIN_ACTIONS,
    CONTAINER_ACTIONS,
    check_within,
    describe,
    parse_fault,
    parse_faults,
)

# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("20s", 20.0), ("1.5s", 1.5), ("2m", 120.0), ("500ms", 0.5), ("0", 0.0), ("3", 3.0),
    ("0.25s", 0.25), (".5s", 0.5), ("1500ms", 1.5), (" 2S ", 2.0),
])
def test_parse_seconds(text, seconds):
    assert spec.parse_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "-1s", "1h", "1.5.2s", "ten", "1 s x", "inf", "nan"])
def test_parse_seconds_refuses(text):
    with pytest.raises(ConfigError) as err:
        spec.parse_seconds(text)
    assert err.value.fix and "--fault" in err.value.fix


@pytest.mark.parametrize(("value", "text"), [
    (20.0, "20s"), (1.5, "1.5s"), (0.5, "500ms"), (0.0, "0s"), (120.0, "120s"), (0.25, "250ms"),
])
def test_format_seconds(value, text):
    assert spec.format_seconds(value) == text


@pytest.mark.parametrize("target", ["db", "pooler", "dedicated"])
@pytest.mark.parametrize("action", CONTAINER_ACTIONS)
def test_every_container_action(target, action):
    text = f"5s:{target}:{action}"
    if action == "fast-restart" and target != "db" or action == "disconnect" \
            and target == "dedicated":
        with pytest.raises(ConfigError):
            parse_fault(text)
        return
    fault = parse_fault(text)
    assert (fault.at_s, fault.target, fault.action, fault.duration_s) == (5, target, action, None)
    assert fault.kind == "container"
    assert fault.text == text


@pytest.mark.parametrize("target", ["session", "transaction", "dedicated"])
@pytest.mark.parametrize("action", ADMIN_ACTIONS)
def test_every_admin_action(target, action):
    fault = parse_fault(f"1.5s:{target}:{action}")
    assert fault.kind == "admin"
    assert (fault.target, fault.action, fault.at_s) == (target, action, 1.5)


def test_normalised_text_and_json():
    fault = parse_fault(" 1500ms : Pooler : KILL : 0.5s ")
    assert fault.text == "1.5s:pooler:kill:500ms"
    assert fault.duration_s == 0.5
    assert parse_fault("2m:db:pause:1m").text == "120s:db:pause:60s"
    assert parse_fault("0:db:stop").text == "0s:db:stop"
    data = fault.to_json()
    assert data == {"text": "1.5s:pooler:kill:500ms", "at_s": 1.5, "target": "pooler",
                    "action": "kill", "duration_s": 0.5, "kind": "container",
                    "description": "pooler killed for 500 ms"}
    json.dumps(data)
    assert parse_fault(fault.text) == fault


def test_dedicated_is_a_container_and_an_endpoint():
    assert parse_fault("1s:dedicated:pause:2s").kind == "container"
    assert parse_fault("1s:dedicated:pool-pause:2s").kind == "admin"


def test_parse_faults_sorts_by_time():
    faults = parse_faults(["9s:db:pause:1s", "1s:pooler:restart", "5s:transaction:reload"])
    assert [f.at_s for f in faults] == [1, 5, 9]


@pytest.mark.parametrize(("text", "in_message", "in_fix"), [
    ("pooler:restart", "AT:TARGET:ACTION", "--fault 20s:pooler:restart"),
    ("1s:pooler:kill:2s:x", "AT:TARGET:ACTION", "--fault"),
    ("1s::kill", "AT:TARGET:ACTION", "--fault"),
    ("x:pooler:kill", "not a time", "--fault"),
    ("-1s:pooler:kill", "not a time", "--fault"),
    ("1s:postgres:kill", "unknown target 'postgres'", "db, pooler, dedicated, session"),
    ("1s:pooler:explode", "unknown action 'explode'", "kill, stop, restart"),
    ("1s:pooler:explode", "unknown action", "reconnect, pool-pause, reload, kill-clients"),
    ("1s:pooler:reconnect", "reconnect does not apply to pooler", "--fault 1s:session:reconnect"),
    ("1s:session:kill:2s", "kill does not apply to session", "--fault 1s:db:kill:2s"),
    ("1s:transaction:pause", "pause does not apply", "--fault 1s:db:pause"),
    ("1s:pooler:fast-restart", "only to db", "--fault 1s:db:fast-restart"),
    ("1s:dedicated:disconnect:3s", "shares db's network namespace",
     "--fault 1s:db:disconnect:3s"),
    ("1s:pooler:restart:2s", "takes no DURATION", "--fault 1s:pooler:restart"),
    ("1s:db:fast-restart:2s", "takes no DURATION", "--fault 1s:db:fast-restart"),
    ("1s:transaction:reconnect:2s", "takes no DURATION", "--fault 1s:transaction:reconnect"),
    ("1s:session:reload:1s", "takes no DURATION", "--fault 1s:session:reload"),
    ("1s:db:pause:0s", "above 0", "--fault 1s:db:pause:5s"),
    ("1s:db:pause:soon", "not a time", "--fault"),
])
def test_rejections_name_a_fix(text, in_message, in_fix):
    with pytest.raises(ConfigError) as err:
        parse_fault(text)
    assert in_message in err.value.message
    assert err.value.fix and in_fix in err.value.fix
    assert "\n" not in err.value.one_line()
    # the example in the fix parses (where it is one)
    example = err.value.fix.split("--fault ", 1)[-1].split()[0].rstrip(",;")
    if "--fault" in err.value.fix and example.count(":") >= 2 and "AT" not in example:
        parse_fault(example)


# -- within the segment, no overlaps --------------------------------------------------------


def test_check_within_accepts_a_plan():
    check_within(parse_faults(["0s:db:pause:2s", "2s:db:kill:1s", "5s:pooler:restart",
                               "5s:transaction:pool-pause:1s", "6s:transaction:reload",
                               "1s:dedicated:pool-pause:1s"]), 10)
    check_within([], 10)


def test_check_within_refuses_a_fault_at_or_after_the_end():
    with pytest.raises(ConfigError) as err:
        check_within([parse_fault("10s:pooler:restart")], 10)
    assert "segment's end" in err.value.message
    parse_fault(err.value.fix.split("--fault ")[1])
    check_within([parse_fault("9.9s:pooler:restart")], 10)


@pytest.mark.parametrize("plan", [
    ["1s:db:pause:2s", "2s:db:kill:1s"],  # inside the first one's window
    ["1s:db:kill", "8s:db:pause:1s"],  # no DURATION: lasts until the end
    ["1s:pooler:restart", "1s:pooler:kill:1s"],  # same instant
    ["1s:dedicated:pause:3s", "2s:dedicated:pool-pause:1s"],  # same target, both kinds
    ["1s:db:stop:3s", "2s:dedicated:kill:1s"],  # one host: db and its dedicated pooler
    ["1s:transaction:pool-pause", "5s:transaction:reconnect"],
])
def test_check_within_refuses_overlaps(plan):
    with pytest.raises(ConfigError) as err:
        check_within(parse_faults(plan), 30)
    assert "overlap" in err.value.message
    assert err.value.fix


def test_overlap_is_per_target():
    check_within(parse_faults(["1s:db:kill:5s", "2s:pooler:kill:5s",
                               "2s:transaction:pool-pause:3s", "2s:session:kill-clients:3s",
                               "2s:dedicated:reconnect"]), 30)


def test_end_times():
    assert parse_fault("1s:db:kill").end_s == math.inf
    assert parse_fault("1s:db:kill:2s").end_s == 3
    assert parse_fault("1s:db:restart").end_s == 1


# -- describe ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "said"), [
    ("1s:pooler:kill:3s", "pooler killed for 3 s"),
    ("1s:pooler:kill", "pooler killed until the segment ends"),
    ("1s:dedicated:stop:1.5s", "dedicated stopped (docker stop) for 1.5 s"),
    ("1s:pooler:restart", "pooler restarted (docker restart)"),
    ("1s:db:pause:5s", "db frozen (docker pause) for 5 s"),
    ("1s:db:disconnect:500ms", "db cut off the network for 500 ms"),
    ("1s:db:fast-restart", "Postgres fast restart (db)"),
    ("1s:transaction:reconnect", "transaction pooler: RECONNECT"),
    ("1s:session:reload", "session pooler: RELOAD"),
    ("1s:transaction:pool-pause:2s", "transaction pooler: PAUSE for 2 s"),
    ("1s:dedicated:kill-clients:2s", "dedicated pooler: KILL clients and servers for 2 s"),
])
def test_describe(text, said):
    assert describe(parse_fault(text)) == said


# -- the injector, with stand-ins -------------------------------------------------------------


class FakeEngine:
    def __init__(self, fail: set[str] = frozenset(), slow_s: float = 0.0):
        self.calls: list[tuple[str, str, float]] = []
        self.fail = fail
        self.slow_s = slow_s
        self.lock = threading.Lock()

    def _answer(self, phase, fault):
        t = time.time()
        time.sleep(self.slow_s)
        with self.lock:
            self.calls.append((phase, fault.text, t))
        ok = fault.text not in self.fail
        return {"ok": ok, "answer": f"{phase} {fault.action}" if ok else "",
                "error": None if ok else "DockerException: engine down", "t": t,
                "done_t": time.time()}

    def inject(self, fault, ctx):
        return self._answer("inject", fault)

    def recover(self, fault, ctx):
        if not fault.undoable:
            return None
        return self._answer("recover", fault)


def make(faults, tmp_path, engine, **kwargs):
    lines: list[str] = []
    inj = Injector(parse_faults(faults), ctx=None, events_path=tmp_path / "r" / "faults.jsonl",
                   segment="seg1", log=lines.append, inject_fn=engine.inject,
                   recover_fn=engine.recover, **kwargs)
    return inj, lines


def test_injector_runs_the_schedule_and_writes_events(tmp_path):
    engine = FakeEngine()
    inj, lines = make(["0.2s:transaction:pool-pause:300ms", "600ms:pooler:kill:200ms",
                       "0.7s:session:reload"], tmp_path, engine)
    t0 = time.time()
    inj.start(t0)
    time.sleep(0.4)
    assert inj.active() == ["transaction pooler: PAUSE for 300 ms"]
    time.sleep(0.8)
    assert inj.active() == []
    inj.stop()
    assert [(p, f) for p, f, _ in engine.calls] == [
        ("inject", "200ms:transaction:pool-pause:300ms"),
        ("recover", "200ms:transaction:pool-pause:300ms"),
        ("inject", "600ms:pooler:kill:200ms"),
        ("inject", "700ms:session:reload"),
        ("recover", "600ms:pooler:kill:200ms"),
    ]
    events = [json.loads(line) for line in (tmp_path / "r" / "faults.jsonl").read_text()
              .splitlines()]
    assert events == inj.events and len(events) == 5
    for e in events:
        assert set(e) == {"v", "segment", "fault", "target", "action", "phase", "planned_t",
                          "t", "done_t", "ok", "answer", "error", "description"}
        assert e["v"] == 1 and e["segment"] == "seg1" and e["ok"] is True
        assert abs(e["t"] - e["planned_t"]) < 0.15
    assert events[1]["planned_t"] == pytest.approx(t0 + 0.5, abs=0.01)
    assert any("pool-pause" in line and "inject ok" in line for line in lines)


def test_stop_undoes_what_is_in_effect_and_cancels_the_rest(tmp_path):
    engine = FakeEngine()
    inj, _ = make(["0s:pooler:kill", "100ms:db:pause:10s", "100ms:transaction:reconnect",
                   "5s:session:kill-clients:1s"], tmp_path, engine)
    inj.start(time.time())
    time.sleep(0.4)
    assert sorted(inj.active()) == ["db frozen (docker pause) for 10 s",
                                    "pooler killed until the segment ends"]
    started = time.monotonic()
    inj.stop()
    assert time.monotonic() - started < 2
    assert [(p, f) for p, f, _ in engine.calls] == [
        ("inject", "0s:pooler:kill"), ("inject", "100ms:db:pause:10s"),
        ("inject", "100ms:transaction:reconnect"),
        # undone in reverse order; the 5 s fault never started
        ("recover", "100ms:db:pause:10s"), ("recover", "0s:pooler:kill"),
    ]
    assert inj.active() == []
    assert not inj._thread.is_alive()
    inj.stop()  # twice is fine: nothing left to undo
    assert len(engine.calls) == 5


def test_a_failed_inject_is_recorded_and_still_undone(tmp_path):
    engine = FakeEngine(fail={"0s:pooler:stop"})
    inj, lines = make(["0s:pooler:stop"], tmp_path, engine)
    inj.start(time.time())
    time.sleep(0.2)
    assert inj.active() == []  # not in effect: the engine said no
    inj.stop()
    first, second = inj.events
    assert (first["phase"], first["ok"], first["error"]) == ("inject", False,
                                                             "DockerException: engine down")
    assert second["phase"] == "recover"
    assert any("failed: DockerException" in line for line in lines)


def test_write_errors_keep_the_events_in_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    engine = FakeEngine()
    inj = Injector(parse_faults(["0s:session:reload"]), None, blocker / "faults.jsonl", "s",
                   log=lambda _: None, inject_fn=engine.inject, recover_fn=engine.recover)
    inj.start(time.time())
    time.sleep(0.2)
    inj.stop()
    assert len(inj.events) == 1 and inj.write_error


def test_a_slow_engine_delays_later_faults_but_not_their_plan(tmp_path):
    engine = FakeEngine(slow_s=0.3)
    inj, _ = make(["0s:pooler:restart", "100ms:session:reload"], tmp_path, engine)
    t0 = time.time()
    inj.start(t0)
    time.sleep(0.9)
    inj.stop()
    second = inj.events[1]
    assert second["planned_t"] == pytest.approx(t0 + 0.1, abs=0.01)
    assert second["t"] - second["planned_t"] > 0.15


# -- actions without an engine ----------------------------------------------------------------


def test_a_down_engine_or_console_is_recorded_not_raised(monkeypatch):
    from lab.faults import actions

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    ctx = actions.FaultContext("pooler-lab-nothing", {"session": actions.AdminConsole(
        "127.0.0.1", 1, "lab_admin", "s3cret-pw")}, docker_timeout=2, admin_timeout=1)
    for text in ("0s:pooler:kill", "0s:db:disconnect", "0s:db:fast-restart",
                 "0s:session:reload", "0s:session:pool-pause"):
        result = actions.inject(parse_fault(text), ctx)
        assert result["ok"] is False and result["error"], result
        assert result["done_t"] >= result["t"]
        assert "s3cret-pw" not in result["error"]
    for text in ("0s:pooler:kill", "0s:db:pause", "0s:db:disconnect", "0s:session:pool-pause",
                 "0s:session:kill-clients"):
        assert actions.recover(parse_fault(text), ctx)["ok"] is False
    for text in ("0s:pooler:restart", "0s:db:fast-restart", "0s:session:reload",
                 "0s:session:reconnect"):
        assert actions.recover(parse_fault(text), ctx) is None
    # an endpoint without a console (a lab without that pooler) is recorded too
    assert actions.inject(parse_fault("0s:transaction:reload"), ctx)["ok"] is False
    ctx.close()


def kill_events(inject_done: float, recover_done: float) -> list[dict]:
    """faults.jsonl of 5s:pooler:kill:3s in segment s.transaction, begun at 105 and 108."""
    fault = {"segment": "s.transaction", "fault": "5s:pooler:kill:3s", "ok": True}
    return [{**fault, "phase": "inject", "t": 105.0, "done_t": inject_done,
             "description": "pooler killed for 3 s"},
            {**fault, "phase": "recover", "t": 108.0, "done_t": recover_done}]


def test_first_success_counts_from_the_faults_action_done():
    # A kill takes effect somewhere between the inject's start (t) and docker's answer
    # (done_t): a request due in between may be served before the pooler dies, and on a busy
    # client end after one that the kill broke. It is not the first success after the fault.
    import numpy as np

    from lab.faults import measure

    events = kill_events(105.2, 108.5)
    window = measure.windows(events)["s.transaction"][0]
    assert (window.begin, window.effective, window.end) == (105.0, 105.2, 108.5)
    # due:   104.0 ok | 105.01 broken | 105.02 served before the kill took effect (ends late)
    #        105.5 refused | 109.0 ok (the pooler is back)
    intended = np.array([104.0, 105.01, 105.02, 105.5, 109.0])
    ends = np.array([104.001, 105.05, 105.083, 105.51, 109.002])
    ok = np.array([True, False, True, False, True])
    rows = measure.Rows(intended=intended, ends=ends, ok=ok,
                        not_started=np.zeros(5, dtype=bool),
                        classes=np.array([0, 1, 0, 2, 0]),
                        class_names=["", "connection_lost", "connection_refused"],
                        total_ms=(ends - intended) * 1000)
    hit = measure.impact(window, rows, repeat=1, load_start=100.0, segment_end=114.0,
                         backends=None, clients=None)
    assert hit.failed_during == {"connection_lost": 1, "connection_refused": 1}
    assert hit.first_success_s == 109.002 - 105.0
    # without docker's answer recorded, the first failure is all there is to go by
    del events[0]["done_t"]
    window = measure.windows(events)["s.transaction"][0]
    assert window.effective is None
    early = measure.impact(window, rows, repeat=1, load_start=100.0, segment_end=114.0,
                           backends=None, clients=None)
    assert abs(early.first_success_s - 0.083) < 1e-9


def test_backends_during_a_fault_count_from_its_action_done():
    # CI's loaded machine: the sampler asked Postgres 6 ms after `docker kill` began and 230 ms
    # before Docker answered; the pooler's three backends were still there. They are the
    # before, not the during.
    import numpy as np

    from lab.faults import measure

    events = kill_events(105.23, 108.3)
    rows = measure.Rows(intended=np.array([104.0]), ends=np.array([104.001]),
                        ok=np.array([True]), not_started=np.zeros(1, dtype=bool),
                        classes=np.array([0]), class_names=[""], total_ms=np.array([1.0]))
    t = np.arange(100.5, 114.0, 0.5) + 0.005
    v = np.where((t > 105.23) & (t < 108.8), 0.0, 3.0)
    window = measure.windows(events)["s.transaction"][0]
    hit = measure.impact(window, rows, repeat=1, load_start=100.0, segment_end=114.0,
                         backends=(t, v), clients=(t, v + 10))
    assert hit.backends == (3.0, 0.0, 3.0) and hit.clients == (13.0, 10.0, 13.0)
    # a fault that is its action (a restart: no recover) is in effect from its start
    restart = measure.windows([{**events[0], "fault": "5s:pooler:restart",
                                "done_t": 108.3}])["s.transaction"][0]
    assert (restart.effective, restart.end) == (108.3, 108.3)
    hit = measure.impact(restart, rows, repeat=1, load_start=100.0, segment_end=114.0,
                         backends=(t, v), clients=None)
    assert hit.backends[1] == 3.0
