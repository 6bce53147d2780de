"""`lab sweep` without Docker: plans (--vary, objectives, presets, order, estimate), the sweep
manifest, running points with the stack and the runs faked (failures recorded, Ctrl-C kept,
--resume), knees, ratios, capacity, and the report drawn from synthetic run directories."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import pytest

from lab import analysis as an
from lab import config as cfgmod
from lab import scenarios, stack, synthetic
from lab.errors import ConfigError, ReportError, RunError
from lab.run.orchestrate import RunResult
from lab.sweep import analysis as sa
from lab.sweep import execute, manifest
from lab.sweep import plan as sp
from lab.sweep.report import build_sweep_report
from tests.conftest import lab_cli

BURST = scenarios.resolve("serverless-burst")
PERSISTENT = scenarios.resolve("persistent-server")


# -- --vary and --objective ----------------------------------------------------------------


def test_vary_classifies_lab_settings_and_load():
    axes = sp.parse_vary(["tier=micro,Small", "users=10,20", "spike_rate=50,100.5",
                          "P.hold_ms=0,100", "ssl_enforce=false,true", "sslmode=disable"],
                         BURST)
    by = {a.key: a for a in axes}
    assert by["tier"].kind == "lab" and by["tier"].values == ("micro", "small")
    assert by["users"].kind == "load" and by["users"].values == (10, 20)
    assert by["P.spike_rate"].kind == "load" and by["P.spike_rate"].values == (50.0, 100.5)
    assert by["P.hold_ms"].values == (0.0, 100.0)
    assert by["ssl_enforce"].values == (False, True)
    assert by["sslmode"].values == ("disable",)
    assert by["users"].numeric and not by["tier"].numeric


@pytest.mark.parametrize("text, said", [
    ("tier=micro,huge", "unknown tier"),
    ("users=0,5", "below 1"),
    ("users=ten", "whole number"),
    ("nonsense=1,2", "not a lab setting"),
    ("P.nonsense=1", "no parameter"),
    ("users=5,5", "twice"),
    ("users", "KEY=V1,V2"),
    ("users=5,,6", "empty value"),
    ("pool_size=-1", "at least 0"),
])
def test_vary_refuses_with_the_fix(text, said):
    with pytest.raises(ConfigError) as exc:
        sp.parse_vary([text], BURST)
    assert said in exc.value.message and exc.value.fix


def test_a_name_both_lab_setting_and_parameter_must_be_qualified():
    with pytest.raises(ConfigError, match="both a lab setting"):
        sp.parse_vary(["pool_size=5,10"], PERSISTENT)
    axes = sp.parse_vary(["lab.pool_size=5,10", "P.pool_size=2,4"], PERSISTENT)
    assert [(a.key, a.kind) for a in axes] == [("pool_size", "lab"), ("P.pool_size", "load")]


def test_objective_parses_units_and_refuses_nonsense():
    o = sp.parse_objective("p99<100ms, errors<0.1%, p50<=0.2s, not_started<1%")
    assert [(c.metric, c.op, c.value) for c in o.conditions] == [
        ("p99", "<", 100.0), ("errors", "<", 0.001), ("p50", "<=", 200.0),
        ("not_started", "<", 0.01)]
    assert o.text == "p99<100ms,errors<0.1%,p50<=200ms,not_started<1%"
    assert sp.parse_objective(None).text == sp.DEFAULT_OBJECTIVE
    for bad in ("p99>100ms", "p42<1ms", "errors<5ms", "p99<1%", "", "errors<200%"):
        with pytest.raises(ConfigError):
            sp.parse_objective(bad)


# -- order, restarts, estimate -----------------------------------------------------------------


def test_points_keep_each_lab_setting_together_current_first():
    axes = sp.parse_vary(["users=5,10", "tier=micro,small", "pool_size=2,4"], BURST)
    current = cfgmod.load_config("x", {"tier": "small", "pool_size": 4})
    points, restarts = sp.order_points(axes, current)
    assert len(points) == 8
    combos = [tuple(p.lab.items()) for p in points]
    # every combination's load points run one after another: 4 bring-ups at most
    changes = sum(1 for a, b in zip(combos, combos[1:], strict=False) if a != b)
    assert changes == 3
    assert points[0].lab == {"tier": "small", "pool_size": 4}  # the lab as it is: no restart
    assert restarts == 3
    assert [p.index for p in points] == list(range(1, 9))
    assert points[0].id == "p01-tier-small.pool-size-4.users-5"
    _, from_scratch = sp.order_points(axes, None)
    assert from_scratch == 4
    load_only, none = sp.order_points(sp.parse_vary(["users=1,2"], BURST), current)
    assert none == 0 and [p.load for p in load_only] == [{"users": 1}, {"users": 2}]


def test_a_new_tier_brings_its_own_limits():
    saved = cfgmod.load_config("x", {"tier": "micro", "pool_size": 4, "network": "same-region"})
    settings = stack.settings_with(saved, {"tier": "small"})
    assert "pool_size" not in settings and "max_connections" not in settings
    assert stack.config_with(saved, {"tier": "small"}).max_connections == 90
    assert stack.config_with(saved, {"tier": "small", "pool_size": 4}).pool_size == 4
    assert stack.config_with(saved, {"pool_size": 6}).max_connections == 60
    assert stack.config_with(saved, {"network": "local"}).client_db_rtt_ms == 0.0
    assert sp.matches(saved, {"pool_size": 4}) and not sp.matches(saved, {"pool_size": 5})


def test_points_the_lab_would_refuse_are_said_before_anything_runs():
    axes = sp.parse_vary(["pool_size=10,70"], BURST)
    with pytest.raises(ConfigError, match="pool_size=70"):
        sp.check_lab_points(axes, cfgmod.load_config("x"))


def test_estimate_counts_segments_cooldowns_and_restarts():
    axes = sp.parse_vary(["users=5,10"], BURST)
    points, _ = sp.order_points(axes, None)
    plan = sp.SweepPlan("serverless-burst", ("direct", "transaction"), axes, points,
                        duration_s=10, cooldown_s=2, repeat=2, restarts=1)
    per_point = 4 * (10 + sp.SEGMENT_OVERHEAD_S) + 3 * 2 + sp.RUN_OVERHEAD_S
    assert plan.point_seconds() == pytest.approx(per_point)
    assert plan.estimate_s() == pytest.approx(2 * per_point + sp.RESTART_S + sp.REPORT_S)


def _request(**kw) -> execute.SweepRequest:
    return execute.SweepRequest(**{"params": {}, **kw})


def test_build_plan_from_flags_and_from_a_preset():
    plan = execute.build_plan(_request(scenario="serverless-burst", vary=("users=3,6",),
                                       endpoints=("direct", "transaction"), duration="3s",
                                       cooldown="0s", params={"hold_ms": "100"}), None)
    assert plan.duration_s == 3 and plan.cooldown_s == 0 and plan.baseline == "direct"
    assert plan.params == {"hold_ms": "100"} and len(plan.points) == 2
    preset = execute.build_plan(_request(preset="pool-size", vary=("pool_size=2,4",),
                                         duration="5s"), None)
    assert preset.preset == "pool-size" and preset.duration_s == 5
    assert [a.values for a in preset.axes] == [(2, 4)]  # the flag replaced the preset's
    assert preset.baseline == "transaction" and preset.users == 60
    with pytest.raises(ConfigError, match="also swept"):
        execute.build_plan(_request(scenario="serverless-burst", vary=("hold_ms=1,2",),
                                    params={"hold_ms": "3"}), None)
    with pytest.raises(ConfigError, match="needs a SCENARIO"):
        execute.build_plan(_request(vary=("users=1",)), None)
    with pytest.raises(ConfigError, match="at least one --vary"):
        execute.build_plan(_request(scenario="serverless-burst"), None)
    with pytest.raises(ConfigError, match="--baseline"):
        execute.build_plan(_request(scenario="serverless-burst", vary=("users=1",),
                                    baseline="dedicated"), None)


def test_every_builtin_preset_plans_and_fits_in_ten_minutes():
    found = sp.presets()
    assert {p.name for p in found} >= {"burst-vs-tier", "pool-size"}
    for preset in found:
        assert preset.question.endswith("?"), preset.name
        plan = execute.build_plan(_request(preset=preset.name), None)
        assert plan.estimate_s() < 600, (preset.name, plan.estimate_s())
        assert len(plan.points) >= 2


def test_manifest_round_trip(tmp_path):
    plan = execute.build_plan(_request(preset="burst-vs-tier", seed=7, repeat=2,
                                       objective="p95<1s"), None)
    doc = manifest.new(plan, "sid", "f.py", None)
    manifest.write(tmp_path, doc)
    again = manifest.plan_of(manifest.read(tmp_path))
    assert again.points == plan.points and again.axes == plan.axes
    assert (again.seed, again.repeat, again.objective, again.baseline) == \
        (7, 2, plan.objective, "transaction")
    assert doc["reproduce"].startswith("lab sweep serverless-burst --vary tier=micro,small")
    assert manifest.is_sweep_dir(tmp_path) and not manifest.is_sweep_dir(tmp_path / "x")
    (tmp_path / "sweep.json").write_text(json.dumps({"format": "sweep/2"}))
    with pytest.raises(ReportError, match="sweep/1"):
        manifest.read(tmp_path)


# -- running points, faked -----------------------------------------------------------------------


def _fake_run(outcomes: dict[int, str], calls: list[str]):
    """lab.run.run writing a synthetic run directory; per call number: "fail", "interrupt"."""

    def run(spec, progress=None, log=print):
        calls.append(spec.run_id)
        what = outcomes.get(len(calls))
        path = spec.reports_dir / spec.run_id
        if what == "fail":
            raise RunError("Locust stopped without running a request", fix="read the log")
        users = spec.users or 10
        synthetic.make_run(path, requests=400, duration_s=10, cooldown_s=1,
                           scenarios=("serverless-burst",), endpoints=spec.endpoints,
                           faults=users > 5, seed=users)
        return RunResult(path, interrupted=what == "interrupt", requests=1, errors=0)

    return run


def test_a_failed_point_is_recorded_ctrl_c_stops_and_resume_runs_the_rest(tmp_path,
                                                                           monkeypatch):
    import lab.run

    monkeypatch.setenv("POOLER_LAB_HOME", str(tmp_path / "home"))
    ups: list[dict] = []
    monkeypatch.setattr(execute, "ensure_lab", lambda name, changes, log: ups.append(changes)
                        or True)
    calls: list[str] = []
    monkeypatch.setattr(lab.run, "run", _fake_run({2: "fail", 3: "interrupt"}, calls))
    request = _request(scenario="serverless-burst", vary=("users=3,6,9",),
                       endpoints=("direct", "transaction"), duration="10s",
                       reports_dir=tmp_path / "reports")
    shown: list[str] = []
    result = execute.sweep(request, show_plan=shown.extend, log=lambda _t: None)
    assert shown[0].startswith("sweep of serverless-burst") and any("estimated" in s
                                                                   for s in shown)
    assert result.interrupted and result.done == 1 and result.failed == 1
    doc = manifest.read(result.sweep_dir)
    assert [p["status"] for p in doc["points"]] == ["done", "failed", "interrupted"]
    assert "Locust stopped" in doc["points"][1]["reason"]
    assert doc["status"] == "interrupted"
    assert result.report is not None and result.report.html.is_file()  # what was measured
    # --resume: the failed and the interrupted point again, each in a new run directory
    result = execute.sweep(_request(resume=result.sweep_dir), log=lambda _t: None)
    assert not result.interrupted and result.done == 3 and result.failed == 0
    assert calls[3:] == ["p02-users-6.try2", "p03-users-9.try2"]
    doc = manifest.read(result.sweep_dir)
    assert doc["status"] == "finished" and [p["run"] for p in doc["points"]] == \
        ["p01-users-3", "p02-users-6.try2", "p03-users-9.try2"]
    assert (result.sweep_dir / "p03-users-9").is_dir()  # the interrupted try is kept
    result.check()
    # a dry run shows the plan and writes nothing
    before = sorted((tmp_path / "reports").iterdir())
    assert execute.sweep(_request(scenario="serverless-burst", vary=("users=1,2",),
                                  reports_dir=tmp_path / "reports", dry_run=True)).sweep_dir \
        is None
    assert sorted((tmp_path / "reports").iterdir()) == before


def test_a_lab_that_does_not_come_up_fails_its_points_once(tmp_path, monkeypatch):
    import lab.run
    from lab.errors import StackError

    monkeypatch.setenv("POOLER_LAB_HOME", str(tmp_path / "home"))
    tries: list[dict] = []

    def ensure(name, changes, log):
        tries.append(dict(changes))
        if changes.get("pool_size") == 4:
            raise StackError("pooler-lab-x did not become healthy", fix="lab doctor")
        return True

    monkeypatch.setattr(execute, "ensure_lab", ensure)
    monkeypatch.setattr(lab.run, "run", _fake_run({}, []))
    result = execute.sweep(_request(scenario="serverless-burst",
                                    vary=("pool_size=4,2", "users=3,6"),
                                    reports_dir=tmp_path / "r"), log=lambda _t: None)
    assert (result.done, result.failed) == (2, 2)
    assert tries.count({"pool_size": 4}) == 1  # the second point of that lab is not retried
    doc = manifest.read(result.sweep_dir)
    assert "did not come up" in doc["points"][1]["reason"]
    with pytest.raises(RunError, match="2 point"):
        result.check()


# -- knees, ratios, capacity -------------------------------------------------------------------


def _group(endpoint: str, *, scheduled: int = 1000, errors: dict | None = None,
           not_started: int = 0, p99: float = 50.0, width: float = 0.1) -> an.Group:
    errors = errors or {}
    failed = sum(errors.values())
    ok = scheduled - not_started - failed
    stats = an.Stats(ok, p99 / 3, p99 * 0.8, p99, p99 * 1.2)
    g = an.Group("serverless-burst", "serverless", endpoint, scheduled, scheduled - not_started,
                 ok, dict(errors), not_started, 1, 10.0, 0.0, 10.0, stats, stats, stats, 0.0,
                 [], None, {})
    g.ci = {name: an.Estimate(v, v * (1 - width), v * (1 + width))
            for name, v in (("p50", p99 / 3), ("p95", p99 * 0.8), ("p99", p99))}
    g.ci["error_rate"] = an.Estimate(g.error_rate, g.error_rate, g.error_rate)
    g.ci["not_started_rate"] = an.Estimate(g.not_started_rate, g.not_started_rate,
                                           g.not_started_rate)
    return g


def _analysis(vary: list[str], groups_of, objective="p99<100ms,errors<0.1%",
              baseline="transaction") -> sa.SweepAnalysis:
    axes = sp.parse_vary(vary, BURST)
    points, _ = sp.order_points(axes, None)
    results = []
    for p in points:
        groups = groups_of(p)
        fake = types.SimpleNamespace(groups=groups, limits={"max_connections": 60},
                                     repeats=1, warnings=[], outages=[],
                                     scenarios=["serverless-burst"], manifest={})
        results.append(sa.PointResult(p.index, p.id, p.lab, p.load, "done", None, None, fake))
    plan = sp.SweepPlan("serverless-burst", ("direct", "transaction"), axes, points,
                        objective=sp.parse_objective(objective), baseline=baseline)
    x, facets = sa.choose_axes(axes)
    a = sa.SweepAnalysis(Path("/nowhere"), {"points": []}, plan, results, x, facets,
                         sa.make_curves(results, x, facets, plan.endpoints), [], [], [], [],
                         plan.objective, baseline)
    a.knees, a.ratios, a.capacity = sa.knees(a), sa.ratios(a), sa.capacity(a)
    return a


def _burst(point) -> list[an.Group]:
    """Direct refuses beyond max_connections (55 usable on micro, 85 on small); transaction
    serves everything, its p99 bending at 150."""
    users, tier = point.load["users"], point.lab.get("tier", "micro")
    usable = 57 if tier == "micro" else 87
    refused = max(0, users - usable) * 10
    direct = _group("direct", errors={"too_many_clients": refused} if refused else None,
                    p99=30.0 + users / 10)
    transaction = _group("transaction", p99=20.0 if users < 150 else 90.0, width=0.05)
    return [direct, transaction]


def test_knees_in_words():
    a = _analysis(["tier=micro,small", "users=40,60,100,150"], _burst)
    assert a.x.key == "users" and [f.key for f in a.facets] == ["tier"]
    said = "\n".join(a.knees)
    assert ("direct refuses connections from 60 concurrent invocations on micro: 3.0% of its "
            "arrivals failed at 60 concurrent invocations, mostly too_many_clients") in said
    assert ("direct refuses connections from 100 concurrent invocations on small: 13.0% of its "
            "arrivals failed at 100 concurrent invocations, mostly too_many_clients") in said
    assert "direct serves 40 concurrent invocations on micro with p99 under 40 ms" in said
    assert "direct refuses connections from 100 concurrent invocations on small" in said
    assert ("transaction serves 150 concurrent invocations on micro (every value swept) with "
            "p99 under 100 ms") in said
    assert ("transaction's p99 bends at 150 concurrent invocations on micro: 90.0 ms, against "
            "20.0 ms at 40 concurrent invocations") in said


def test_knees_along_a_lab_setting():
    """Pool size on x: too small leaves work queued, then it serves from some size on."""

    def groups(point):
        size = point.lab["pool_size"]
        queued = 300 if size == 1 else 0
        return [_group("direct", errors={"pool_timeout": 50} if size == 1 else None),
                _group("transaction", not_started=queued, p99=900.0 if size == 1 else 40.0)]

    a = _analysis(["pool_size=1,3,15"], groups)
    assert a.x.key == "pool_size" and not a.facets
    said = "\n".join(a.knees)
    assert "transaction serves from pool_size 3 on, with p99 under 50 ms" in said
    assert "transaction leaves work not started at pool_size 1: 30.0% of its arrivals" in said
    assert ("direct times out waiting for a server connection at pool_size 1: 5.0% of its "
            "arrivals failed, mostly pool_timeout") in said
    capacity = {c.endpoint: c.sentence for c in a.capacity}
    assert capacity["transaction"] == (
        "transaction: pool_size 3 is the smallest swept that meets p99<100ms,errors<0.1% "
        "(p99 40.0 ms, errors 0%; smaller: pool_size 1: p99 900 ms)")


def test_ratios_with_the_tie_threshold():
    a = _analysis(["users=40,150"], _burst)
    r = {(x.point.load["users"], x.metric): x for x in a.ratios}
    assert all(x.endpoint == "direct" for x in a.ratios)  # the baseline is not divided by
    assert r[(40, "p99")].value == pytest.approx(34.0 / 20.0) and r[(40, "p99")].tie is False
    assert r[(150, "p99")].value == pytest.approx(45.0 / 90.0)
    assert sa.ratio_text(1.7, False) == "1.70x slower"
    assert sa.ratio_text(0.5, False) == "0.50x faster"
    assert sa.ratio_text(1.05, True) == "tie (1.05x)"
    g, base = _group("direct", p99=52.0), _group("transaction", p99=50.0)
    assert sa.ratio_of(g, base, "p99") == (pytest.approx(1.04), True)  # within 10%
    g, base = _group("direct", p99=70.0, width=0.3), _group("transaction", p99=50.0, width=0.3)
    assert sa.ratio_of(g, base, "p99")[1] is True  # 1.4x, but the intervals overlap


def test_capacity_smallest_tier_per_workload_and_endpoint():
    a = _analysis(["tier=small,micro", "users=40,100"], _burst)
    answers = {(c.workload["users"], c.endpoint): c for c in a.capacity}
    assert answers[(40, "direct")].answer.lab == {"tier": "micro"}  # micro < small
    assert answers[(100, "direct")].answer is None
    assert "none of the swept settings meets p99<100ms,errors<0.1%" in \
        answers[(100, "direct")].sentence
    assert "tier micro: errors 43.0%; tier small: errors 13.0%" in answers[(100, "direct")].sentence
    assert answers[(100, "transaction")].answer.lab == {"tier": "micro"}
    assert answers[(100, "transaction")].sentence.startswith(
        "transaction for 100 concurrent invocations: tier micro is the smallest swept")


def test_capacity_with_load_only_is_the_largest_load_met():
    a = _analysis(["users=40,60,100,150"], _burst, objective="p99<50ms,errors<1%")
    answers = {c.endpoint: c.sentence for c in a.capacity}
    assert answers["direct"] == "direct meets p99<50ms,errors<1% up to 40 concurrent invocations"
    assert answers["transaction"] == ("transaction meets p99<50ms,errors<1% up to 100 "
                                      "concurrent invocations")


def test_not_started_work_counts_against_the_objective():
    o = sp.parse_objective("errors<1%")
    assert sa.meets(_group("t", not_started=50), o) == (False, "errors 5.0%")
    g = _group("t", not_started=50)
    g.not_started_at_end = 50  # due in the load's last second: the stop's, not the endpoint's
    assert sa.meets(g, o) == (True, "")
    assert not sa.serves(_group("t", not_started=50))
    assert math.isnan(sa.measure(None, "p99").value)


# -- the report, from synthetic runs ---------------------------------------------------------


def _without_refusals(run_dir: Path) -> None:
    import pyarrow.compute as pc

    from lab import samples

    table = an.read_requests(run_dir, samples.COLUMNS)
    keep = pc.invert(pc.fill_null(pc.equal(table["error_class"], "too_many_clients"), False))
    samples.write_table(table.filter(keep), run_dir / samples.FILE)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A finished 2 x 2 sweep (tier x users) of synthetic runs, one point failed."""
    root = tmp_path_factory.mktemp("sweep")
    plan = execute.build_plan(_request(scenario="serverless-burst",
                                       vary=("tier=micro,small", "users=5,10,20"),
                                       endpoints=("direct", "transaction"),
                                       objective="p99<600ms,errors<1%",
                                       baseline="transaction"), None)
    doc = manifest.new(plan, root.name, "serverless_burst.py", None)
    for entry, point in zip(doc["points"], plan.points, strict=True):
        if point.index == 6:
            entry.update(status="failed", reason="the lab did not come up")
            continue
        path = synthetic.make_run(root / point.id, requests=600, duration_s=10, cooldown_s=1,
                                  scenarios=("serverless-burst",), endpoints=plan.endpoints,
                                  seed=point.load["users"])
        if point.lab["tier"] == "small" or point.load["users"] == 5:
            _without_refusals(path)  # room enough: direct is refused nothing
        entry.update(status="done", run=point.id)
    manifest.write(root, doc)
    return root


def test_sweep_report_is_written_with_curves_and_the_capacity_answer(sweep_dir):
    paths = build_sweep_report(sweep_dir)
    md = paths.markdown.read_text()
    assert md.startswith(f"# pooler-lab sweep: {sweep_dir.name}")
    head = md.split("## Curves")[0]
    assert "## The capacity answer: p99<600ms,errors<1%" in head
    assert "direct for 5 concurrent invocations: tier micro is the smallest swept" in head
    assert "direct for 10 concurrent invocations: tier small is the smallest swept" in head
    assert ("direct for 20 concurrent invocations: none of the swept settings meets "
            "p99<600ms,errors<1% (tier micro: errors 36.7%; tier small: not measured "
            "(failed))") in head
    assert "direct refuses connections from 10 concurrent invocations on micro" in head
    assert "point p06-tier-small.users-20 failed: the lab did not come up" in head
    assert "## Ratios against transaction" in md and "within 10% of 1" in md
    names = sorted(p.name for p in paths.figures)
    assert names == sorted(f"sweep-{k}.{e}" for k in ("headline", "latency", "failures",
                                                       "connections") for e in ("png", "svg"))
    html = paths.html.read_text()
    assert html.count("data:image/png;base64,") == 4 and "<script" not in html
    assert "PASSWORD" not in md or "[YOUR-PASSWORD]" in md


def test_sweep_json_matches_each_points_own_analysis(sweep_dir):
    a = sa.analyze(sweep_dir)
    data = sa.to_json(a)
    json.dumps(data, allow_nan=False)
    for point in data["points"]:
        if point["status"] != "done":
            continue
        own = an.to_json(an.analyze(sweep_dir / point["run"]))["segments"]
        assert point["segments"] == own
    curve = next(c for c in a.curves if c.endpoint == "direct" and c.facet == (("tier",
                                                                               "micro"),))
    p99 = [e.value for e in curve.measure("p99")]
    own = [an.analyze(sweep_dir / p.id).group(("serverless-burst", "serverless",
                                                "direct")).total.p99 for p in curve.points]
    assert p99 == pytest.approx(own)


def test_lab_report_on_a_sweep_directory(sweep_dir, tmp_path):
    out = lab_cli("report", str(sweep_dir), "--json", "--objective", "p99<50ms",
                  "--baseline", "direct", home=tmp_path)
    data = json.loads(out.stdout)
    assert data["objective"] == "p99<50ms" and data["baseline"] == "direct"
    bad = lab_cli("report", str(sweep_dir), "--baseline", "session", home=tmp_path,
                  check=False)
    assert bad.returncode == 6 and "not an endpoint of this sweep" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cli_dry_run_and_one_line_errors(tmp_path):
    out = lab_cli("sweep", "--preset", "burst-vs-tier", "--dry-run", home=tmp_path)
    assert "6 points x 2 endpoints" in out.stdout and "estimated duration" in out.stdout
    listing = lab_cli("sweep", "--list", home=tmp_path)
    assert "burst-vs-tier" in listing.stdout and "pool-size" in listing.stdout
    bad = lab_cli("sweep", "serverless-burst", "--vary", "tier=huge", home=tmp_path,
                  check=False)
    assert bad.returncode == 2 and "unknown tier" in bad.stderr and "fix:" in bad.stderr
    assert "Traceback" not in bad.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "sweep.json").write_text(json.dumps(manifest.new(
        execute.build_plan(_request(scenario="serverless-burst", vary=("users=1",)), None),
        "s", "f", None)))
    none = lab_cli("report", str(empty), home=tmp_path, check=False)
    assert none.returncode == 6 and "no point" in none.stderr


def test_every_builtin_preset_is_in_the_workshop_guide():
    guide = (Path(__file__).resolve().parent.parent / "docs" / "workshop.md").read_text()
    for preset in sp.presets():
        assert f"lab sweep --preset {preset.name}\n" in guide, preset.name
