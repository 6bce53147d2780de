"""The live view without Docker: frames, the run's feed, the fan-out, the server's guards and
its event stream, the terminal view. The page in a real browser against a real run is in
tests/test_watch.py."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lab.run import live
from lab.run.live import Live, SampleWatcher
from lab.watch import feed, frame, hub, server

LIMITS = {"max_connections": 60, "pool_size": 15, "max_client_conn": 200}


def records(now: float, **over) -> dict:
    pools = {"cl_active": 40, "cl_waiting": 7, "sv_active": 15, "sv_idle": 0, "sv_used": 0,
             "sv_tested": 0, "sv_login": 0, "maxwait_s": 1.5}
    latest = {"postgres": {"t": now, "ok": True, "ms": 2, "total": 31,
                           "by_origin": {"direct": 12, "shared": 15, "dedicated_auth": 1,
                                         "dedicated": 3}}}
    for name in ("session", "transaction", "dedicated"):
        latest[name] = {"t": now, "ok": True, "ms": 1, "pools": dict(pools),
                        "limits": {"pool_size": 15, "max_client_conn": 200}}
    latest.update(over)
    return latest


def test_a_frame_counts_each_endpoint_against_its_limits():
    now = 1000.0
    f = frame.connections(records(now), now, LIMITS)
    assert f["postgres"] == {"ok": True, "error": None, "backends": 31,
                             "by_origin": {"direct": 12, "shared": 15, "dedicated_auth": 1,
                                           "dedicated": 3}, "max_connections": 60}
    assert f["endpoints"]["direct"]["clients"] == 12  # direct clients are direct backends
    assert f["endpoints"]["direct"]["limit"] == 60
    tx = f["endpoints"]["transaction"]
    assert (tx["clients"], tx["waiting"], tx["servers"]) == (47, 7, 15)
    assert (tx["pool_size"], tx["max_client_conn"], tx["maxwait_s"]) == (15, 200, 1.5)
    assert list(f["endpoints"]) == ["direct", "session", "transaction", "dedicated"]


def test_a_failed_or_stale_target_is_unreachable_with_the_reason():
    now = 1000.0
    latest = records(now, transaction={"t": now, "ok": False, "ms": 2000,
                                       "error": "connection refused"},
                     session={"t": now - 5, "ok": True, "ms": 1, "pools": {}})
    f = frame.connections(latest, now, LIMITS)
    tx, se = f["endpoints"]["transaction"], f["endpoints"]["session"]
    assert not tx["ok"] and "connection refused" in tx["error"] and tx["clients"] is None
    assert not se["ok"] and se["error"] == "not answering for 5.0 s"
    lines = frame.summary_lines(frame.make("x", now, f, None, LIMITS, "lab"))
    assert any(ln.startswith("transaction") and "UNREACHABLE" in ln for ln in lines)


def test_a_password_quoted_by_an_error_is_masked_in_the_feed_and_the_stream(tmp_path):
    secret = "s3cr3t-Pa55"
    bad = {"t": 1.0, "postgres": {"error": f"could not connect with password={secret}"}}
    pub = feed.Publisher(tmp_path, None, lambda now: bad, secrets=(secret,))
    pub.start()  # a frame every half second, and a last one at the stop
    pub.stop()
    assert secret not in (tmp_path / feed.FEED_FILE).read_text()
    h = hub.Hub()
    h.secrets = (secret,)
    h.publish(bad)
    assert secret not in h.since(0)[0][1]


def test_a_frame_never_carries_a_secret():
    f = frame.make("x", 1.0, frame.connections(records(1.0), 1.0, LIMITS), None,
                   {"tier": "micro", **LIMITS}, "lab")
    text = json.dumps(f)
    assert "password" not in text and "postgresql://" not in text


def test_the_run_part_has_percentiles_errors_by_class_and_the_phase(tmp_path):
    from tests.test_live import row, write_chunk

    watcher = SampleWatcher(tmp_path)
    state = Live(endpoint="direct", scenario="serverless-burst", duration_s=20)
    rows = [row(total_ms=float(ms)) for ms in range(1, 101)]
    rows += [row(ok=False, error_class="too_many_clients")] * 4 + [
        row(ok=False, error_class="connection_refused")]
    write_chunk(tmp_path, rows, 0)
    watcher.update(state)
    assert (state.p50_ms, state.p95_ms, state.p99_ms) == (50.0, 95.0, 99.0)
    assert state.errors_by_class == {"too_many_clients": 4, "connection_refused": 1}
    state.phase = live.phase_at([[10.0, 15.0]], 12.0)
    part = frame.run_part(state, "r1")
    assert part["phase"] == "spike" and part["scenario"] == "serverless-burst"
    assert part["errors_by_class"]["too_many_clients"] == 4
    assert live.phase_at([[10.0, 15.0]], 16.0) == "base"
    assert live.phase_at(None, 12.0) is None


def test_the_schedule_file_gives_the_start_and_the_spikes(tmp_path):
    folder = tmp_path / "schedule"
    folder.mkdir()
    (folder / "direct-0.json").write_text(json.dumps(
        {"t0": 100.0, "spikes": [[105.0, 110.0]], "streams": {"s": {"spike_every": 20}}}))
    (folder / "session-0.json").write_text(json.dumps(
        {"t0": 200.0, "spikes": [], "streams": {"s": {"spike_every": 0}}}))
    assert live.test_schedule(tmp_path, "direct") == (100.0, [[105.0, 110.0]])
    assert live.test_schedule(tmp_path, "session") == (200.0, None)
    assert live.test_schedule(tmp_path, "transaction") is None


def test_a_run_publishes_frames_and_points_the_lab_to_them(tmp_path, monkeypatch):
    monkeypatch.setenv("POOLER_LAB_HOME", str(tmp_path / "home"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    n = iter(range(1000))
    pub = feed.Publisher(run_dir, "w", lambda now: {"t": now, "n": next(n)}, interval=0.05)
    pub.start()
    try:
        assert feed.active_run("w") == run_dir.absolute()
        time.sleep(0.3)
    finally:
        pub.stop()
    assert feed.active_run("w") is None  # the pointer goes with the run
    frames = feed.read_all(run_dir / feed.FEED_FILE)
    assert len(frames) >= 3 and [f["n"] for f in frames] == sorted(f["n"] for f in frames)


def test_a_pointer_left_by_a_killed_run_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("POOLER_LAB_HOME", str(tmp_path))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / feed.FEED_FILE).write_text("")
    (tmp_path / "w").mkdir()
    dead = 2**22 + 12345  # above pid_max's default: no such process
    feed.pointer_path("w").write_text(json.dumps({"run_dir": str(run_dir), "pid": dead}))
    assert feed.active_run("w") is None
    feed.pointer_path("w").write_text(json.dumps({"run_dir": str(run_dir), "pid": os.getpid()}))
    assert feed.active_run("w") == run_dir


def test_the_tail_reads_whole_lines_only(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"t": 1}\n{"t": 2')
    tail = feed.Tail(path)
    assert [f["t"] for f in tail.read()] == [1]
    with open(path, "a") as fh:
        fh.write('}\n{"t": 3}\n')
    assert [f["t"] for f in tail.read()] == [2, 3]


def test_the_hub_keeps_a_window_and_wakes_waiters():
    h = hub.Hub(window_s=10)
    for t in (1, 5, 12, 20):
        h.publish({"t": t})
    assert [json.loads(text)["t"] for _, text in h.since(0)] == [12, 20]
    got = []
    waiter = threading.Thread(target=lambda: got.extend(h.since(h.seq, timeout=5)))
    waiter.start()
    time.sleep(0.1)
    h.publish({"t": 21})
    waiter.join(2)
    assert [json.loads(text)["t"] for _, text in got] == [21]


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A real server on a free loopback port, with a stand-in chart library."""
    monkeypatch.setenv("POOLER_LAB_WEB_DIR", str(tmp_path / "web"))
    dist = tmp_path / "web" / "node_modules" / "uplot" / "dist"
    dist.mkdir(parents=True)
    (dist / "uPlot.iife.min.js").write_text("var uPlot = function() {};")
    (dist / "uPlot.min.css").write_text(".uplot {}")
    from lab.watch import assets

    (dist.parent / "package.json").write_text(json.dumps({"version": assets.VERSION}))
    h = hub.Hub()
    started: list[server.Server] = []

    def serve(**kwargs) -> server.Server:
        s = server.serve(h, port=0, **kwargs)
        started.append(s)
        return s

    yield h, serve
    h.close()
    for s in started:
        s.stop()


def get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_the_page_and_its_library_are_served_from_this_machine(served):
    h, serve = served
    s = serve()
    assert s.url.startswith("http://127.0.0.1:") and s.token is None
    status, page = get(s.url)
    assert status == 200 and b"vendor/uPlot.iife.min.js" in page
    assert b"http://" not in page and b"https://" not in page  # no other host asked
    assert get(s.url + "vendor/uPlot.iife.min.js")[0] == 200
    assert get(s.url + "static/watch.js")[0] == 200
    js = get(s.url + "static/watch.js")[1]
    assert b"https://" not in js and b"http://" not in js
    assert get(s.url + "vendor/../../secrets.json")[0] == 404


def test_a_foreign_host_header_is_refused_on_the_loopback(served):
    _, serve = served
    s = serve()
    assert get(s.url, {"Host": "attacker.example:80"})[0] == 403
    assert get(s.url, {"Host": f"localhost:{s.port}"})[0] == 200


def test_beyond_the_loopback_the_token_is_required(served):
    _, serve = served
    s = serve(bind="0.0.0.0")
    assert s.token and f"?token={s.token}" in s.url
    base = f"http://127.0.0.1:{s.port}/"
    assert get(base)[0] == 403
    assert get(base + "events?token=wrong")[0] == 403
    status, page = get(base + f"?token={s.token}")
    assert status == 200 and f"watch.js?token={s.token}".encode() in page  # assets carry it
    assert get(base + "frame.json", {"Authorization": f"Bearer {s.token}"})[0] == 200


def test_a_port_in_use_or_a_foreign_address_is_one_line(served, tmp_path):
    from lab.errors import LabError
    from lab.watch import open_view

    _, serve = served
    s = serve()
    (tmp_path / feed.FEED_FILE).write_text(json.dumps({"t": 1.0}) + "\n")
    for bind, port, said in (("127.0.0.1", s.port, "Address already in use"),
                             ("10.255.255.1", 0, "Cannot assign requested address")):
        with pytest.raises(LabError) as err:
            open_view(run_dir=tmp_path, bind=bind, port=port, install=False)
        assert said in err.value.one_line() and "--port" in err.value.one_line()


def test_the_stream_sends_the_window_then_each_new_frame(served):
    h, serve = served
    s = serve()
    h.publish({"t": 1.0, "n": 1})
    got: list[dict] = []

    def read():
        with urllib.request.urlopen(s.url + "events", timeout=5) as resp:
            for raw in resp:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
                    if len(got) == 2:
                        return

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)
    h.publish({"t": 2.0, "n": 2})
    reader.join(5)
    assert [f["n"] for f in got] == [1, 2]


def test_status_watch_draws_in_place_on_a_terminal(capsys, monkeypatch):
    from lab import term

    screen = term.Screen()
    screen.tty = True
    screen.draw(["a", "b"])
    screen.draw(["a", "b"])  # nothing new: nothing drawn
    screen.draw(["c", "d"])
    out = capsys.readouterr().out
    assert out == "a\nb\n\x1b[2F\x1b[Jc\nd\n"


def test_replay_of_a_run_without_a_feed_says_what_to_do(tmp_path):
    from lab.errors import LabError
    from lab.watch.source import ReplaySource

    with pytest.raises(LabError) as err:
        ReplaySource(tmp_path, hub.Hub())
    assert "lab report" in err.value.one_line()


def test_replay_keeps_the_pace_of_the_recording(tmp_path):
    from lab.watch.source import ReplaySource

    lines = [json.dumps({"t": 100.0 + i, "source": "run"}) for i in range(5)]
    (tmp_path / feed.FEED_FILE).write_text("\n".join(lines) + "\n")
    h = hub.Hub()
    started = time.monotonic()
    src = ReplaySource(tmp_path, h, speed=20).start()
    assert src.done.wait(5)
    assert time.monotonic() - started >= 4 / 20 * 0.9
    assert [json.loads(t)["source"] for _, t in h.since(0)] == ["replay"] * 5


def test_every_web_file_is_packaged():
    web = Path(frame.__file__).parent / "web"
    assert {p.name for p in web.iterdir()} == {"index.html", "watch.js", "watch.css"}
    assert server.web_file("index.html").startswith(b"<!doctype html>")
