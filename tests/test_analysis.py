"""lab.analysis: numbers a benchmark report can stand on (issue 8), on synthetic run directories
(lab.synthetic: the real formats, no Docker).

The findings of issue 8 first, each as the run's own records contradicting what a report said:
work that never ran vanished (1), the recommendation flipped between identical runs and chose
an endpoint whose limits were flagged (2), a killed pooler read as pool size (3), session
queueing was evidenced by connect time (4), the dedicated pooler's auth_query backends were
drawn as its load (6), and --compare between a bench run and a single-scenario run listed equal
settings as different and kept quiet about the durations (7). Then the intervals, the JSON and
a million rows.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from lab import analysis, synthetic

PERSISTENT = "persistent-server"
SERVERLESS = "serverless-burst"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def plain(runs) -> analysis.RunAnalysis:
    return analysis.analyze(synthetic.make_run(runs / "plain", requests=16_000))


@pytest.fixture(scope="module")
def killed_dir(runs) -> Path:
    """The transaction pooler killed 16 s into persistent-server (repeat 1 of 2), Locust's
    start-up taking 1.5 s of each segment."""
    return synthetic.make_run(runs / "killed", requests=16_000, repeats=2, startup_s=1.5,
                              kill=(PERSISTENT, "transaction", 16.0))


@pytest.fixture(scope="module")
def killed(killed_dir) -> analysis.RunAnalysis:
    return analysis.analyze(killed_dir)


def rewrite(run: Path, change) -> None:
    """Apply ``change(table) -> table`` to a run's requests.parquet, keeping its format tag."""
    path = run / "requests.parquet"
    table = pq.read_table(path)
    metadata = table.schema.metadata
    pq.write_table(change(table).replace_schema_metadata(metadata), path)


def rows_of(table: pa.Table, scenario: str, endpoint: str) -> pa.ChunkedArray:
    return pc.and_(pc.equal(table.column("scenario").cast(pa.string()), scenario),
                   pc.equal(table.column("endpoint").cast(pa.string()), endpoint))


# -- (1) every arrival has an outcome ------------------------------------------------------------


def test_every_scheduled_arrival_is_counted_once(plain, killed):
    for result in (plain, killed):
        for g in result.groups:
            assert g.scheduled == g.ok + sum(g.errors.values()) + g.not_started, g.key
            assert g.requests == g.ok + g.failed
            assert analysis.NOT_STARTED not in g.errors
            w = g.windows
            assert w.requests.sum() == g.requests and w.ok.sum() == g.ok
            assert w.not_started.sum() == g.not_started
            assert sum(e.sum() for e in w.errors.values()) == g.failed
            assert g.error_rate == pytest.approx(g.failed / g.scheduled)
            assert g.not_started_rate == pytest.approx(g.not_started / g.scheduled)


def test_arrivals_that_never_started_are_reported_not_dropped(plain):
    """Finding 1: serverless-burst on session said '368 requests, 0.00% errors' while 45% of
    its schedule never started."""
    session = plain.group((SERVERLESS, "serverless", "session"))
    assert session.not_started > 0.2 * session.scheduled
    assert session.errors == {} and session.error_rate == 0.0
    assert session.requests == session.scheduled - session.not_started
    assert any("never started" in w and "session" in w for w in plain.warnings)
    rec = next(r for r in plain.recommendations if r.scenario == SERVERLESS)
    assert "not started" in rec.ineligible["session"]
    assert f"{session.not_started:,} of {session.scheduled:,} arrivals" in \
        rec.ineligible["session"]


def test_a_segment_whose_pooler_died_has_windows_to_its_end(killed_dir, tmp_path):
    """Finding 1: with the transaction pooler killed 16 s in, nothing after 16 s appeared. Even
    when no row at all is left after the kill, the windows run to the segment's end."""
    run = tmp_path / "killed"
    shutil.copytree(killed_dir, run)
    manifest = json.loads((run / "manifest.json").read_text())
    seg = next(s for s in manifest["segments"] if s["scenario"] == PERSISTENT
               and s["endpoint"] == "transaction" and s["repeat"] == 1)
    start, end = analysis._time(seg["started_at"]), analysis._time(seg["ended_at"])

    def cut(table):
        mine = pc.and_(rows_of(table, PERSISTENT, "transaction"),
                       pc.equal(table.column("repeat"), 1))
        late = pc.greater(table.column("intended_start"), start + 17.0)
        return table.filter(pc.invert(pc.and_(mine, late)))

    rewrite(run, cut)
    g = analysis.analyze(run).group((PERSISTENT, "persistent", "transaction"))
    assert g.windows.t[0] == 0.0
    assert g.windows.t[-1] + 1 >= end - start - 1e-6
    # repeat 2 still ran: the late windows hold only its half of the rows
    late = g.windows.t >= 18
    assert g.windows.requests[late].sum() > 0
    assert len(g.windows.t) == len(g.windows.requests) == len(g.windows.not_started)
    outage = next(o for o in g.outages if o.target == "transaction")
    assert outage.end_s is None and outage.describe().endswith("to the end")


def test_rates_count_the_load_time_of_every_repeat(killed):
    """requests/s divides by the time the load ran (each segment from its schedule's start to
    its end, at most --duration), summed over repeats: not by the span of what succeeded."""
    for g in killed.groups:
        assert g.repeats == 2
        assert g.segment_s == pytest.approx(2 * 60.0, abs=1e-6), g.key
        assert g.rps == pytest.approx(g.requests / g.segment_s)
        # windows from the segment start: the first 1.5 s are Locust starting up
        assert g.windows.t[0] == 0.0 and g.windows.scheduled[0] == 0
        assert g.windows.t[-1] == 61.0
        assert (g.windows.runs == 2).all()


# -- (2) a recommendation that holds still ---------------------------------------------------


def test_the_recommendation_holds_still_between_runs_that_differ_only_in_noise(runs):
    picks = []
    for noise in (1, 2, 3):
        result = analysis.analyze(synthetic.make_run(runs / f"noise-{noise}", requests=8_000,
                                                     noise_seed=noise))
        picks.append([(r.scenario, r.phase, r.choice, r.default) for r in
                      result.recommendations])
        for rec in result.recommendations:
            assert rec.threshold == analysis.THRESHOLD
            assert "so the guide's choice stands" in rec.reason
    assert picks[0] == picks[1] == picks[2]
    assert [p[2] for p in picks[0]] == ["transaction", "direct"]


def test_the_guide_choice_stands_unless_another_is_clearly_faster(plain):
    """dedicated is a little faster than transaction here (p95 within 20%): the guide's choice
    stands, and the reason says why."""
    rec = next(r for r in plain.recommendations if r.scenario == SERVERLESS)
    dedicated = plain.group((SERVERLESS, "serverless", "dedicated"))
    transaction = plain.group((SERVERLESS, "serverless", "transaction"))
    assert dedicated.total.p95 < transaction.total.p95  # the old rule would pick dedicated
    assert (rec.choice, rec.default, rec.agrees) == ("transaction", "transaction", True)
    assert rec.reason.endswith("so the guide's choice stands")
    assert any("as the guide advises" in s for s in rec.sentences)


def test_another_endpoint_is_chosen_only_when_faster_beyond_threshold_and_intervals(tmp_path):
    run = synthetic.make_run(tmp_path / "fast", requests=8_000, scenarios=(SERVERLESS,))

    def halve(table):
        mine = rows_of(table, SERVERLESS, "dedicated")
        total = pc.if_else(mine, pc.multiply(table.column("total_ms"), 0.5),
                           table.column("total_ms"))
        return table.set_column(table.schema.get_field_index("total_ms"), "total_ms", total)

    rewrite(run, halve)
    (rec,) = analysis.analyze(run).recommendations
    assert (rec.choice, rec.default, rec.agrees) == ("dedicated", "transaction", True)
    assert "faster than the guide's choice transaction" in rec.reason
    assert "20%" in rec.reason and "outside the 95% intervals" in rec.reason
    assert not any("as the guide advises" in s for s in rec.sentences)


def test_a_guide_endpoint_with_queued_clients_is_never_chosen(tmp_path):
    """Finding 2: session was recommended for persistent servers while its own section flagged
    its pool size (25 clients queued for the whole run)."""
    run = synthetic.make_run(tmp_path / "queued", requests=6_000, faults=False,
                             scenarios=(PERSISTENT,), endpoints=("session", "dedicated"))
    result = analysis.analyze(run)
    (rec,) = result.recommendations
    session = result.group((PERSISTENT, "persistent", "session"))
    assert session.errors == {} and session.not_started == 0 and not session.outages
    assert session.peak_waiting == 25
    assert [h.limit for h in rec.limits] == ["pool size"]
    assert rec.choice == "dedicated" and not rec.agrees and rec.default == "dedicated"
    assert "session reached pool size" in rec.reason
    assert "the guide's endpoints" not in rec.reason
    assert not any("as the guide advises" in s for s in rec.sentences)


def test_an_endpoint_that_failed_or_left_work_is_never_recommended(plain):
    for rec in plain.recommendations:
        for g in plain.groups:
            if (g.scenario, g.phase) != (rec.scenario, rec.phase):
                continue
            bad = (g.error_rate > analysis.HEALTHY_ERROR_RATE or g.not_started or g.outages
                   or analysis.limit_hits(g, plain.limits))
            assert (g.endpoint in rec.ineligible) == bool(bad), g.key
            if bad:
                assert rec.choice != g.endpoint


def add_not_started(run: Path, scenario: str, endpoint: str, due: list[float]) -> None:
    """Rows for arrivals of ``endpoint`` that never started, due at ``due`` (s after its
    segment's start)."""
    manifest = json.loads((run / "manifest.json").read_text())
    seg = next(s for s in manifest["segments"] if (s["scenario"], s["endpoint"]) ==
               (scenario, endpoint))
    start = analysis._time(seg["started_at"])

    def change(table):
        rows = table.filter(rows_of(table, scenario, endpoint)).slice(0, len(due)).to_pylist()
        for row, t in zip(rows, due, strict=True):
            row.update(intended_start=start + t, start=math.nan, connect_ms=math.nan,
                       query_ms=math.nan, service_ms=math.nan, total_ms=math.nan, ok=False,
                       error_class=analysis.NOT_STARTED, sqlstate=None, message=None)
        return pa.concat_tables([table, pa.Table.from_pylist(rows, schema=table.schema)])

    rewrite(run, change)


def test_arrivals_the_stop_cut_off_do_not_bar_a_recommendation(tmp_path):
    """Arrivals due in the last second of the load may find the load stopped: that is the
    stop's doing, not the endpoint's. Earlier ones bar it."""
    run = synthetic.make_run(tmp_path / "stop", requests=4_000, scenarios=(SERVERLESS,),
                             endpoints=("transaction", "dedicated"))
    add_not_started(run, SERVERLESS, "transaction", [59.4, 59.8])
    result = analysis.analyze(run)
    (rec,) = result.recommendations
    g = result.group((SERVERLESS, "serverless", "transaction"))
    assert (g.not_started, g.not_started_at_end) == (2, 2)
    assert rec.choice == "transaction" and "left only 2 arrival(s) unstarted" in rec.reason
    assert any("all due in the last 1 s of the load" in w for w in result.warnings)
    add_not_started(run, SERVERLESS, "transaction", [30.0])
    (rec,) = analysis.analyze(run).recommendations
    assert rec.choice == "dedicated" and "transaction left 3 of" in rec.reason


def test_no_recommendation_when_nothing_was_eligible(tmp_path):
    run = synthetic.make_run(tmp_path / "direct-only", requests=3_000, endpoints=("direct",),
                             scenarios=(SERVERLESS,))
    (rec,) = analysis.analyze(run).recommendations
    assert rec.choice is None and rec.default is None and not rec.agrees
    assert rec.reason.startswith("no endpoint was eligible: direct failed")
    assert not any("as the guide advises" in s for s in rec.sentences)


# -- (3) a killed pooler is an outage ---------------------------------------------------------


def test_a_killed_pooler_is_an_outage_never_pool_size(killed):
    """Finding 3: 'transaction | pool size | 800 requests timed out queueing for a server
    connection; peak 0 waiting clients'."""
    g = killed.group((PERSISTENT, "persistent", "transaction"))
    (outage,) = g.outages
    assert (outage.target, outage.repeat, outage.end_s) == ("transaction", 1, None)
    assert outage.start_s == pytest.approx(16.0, abs=0.6)
    assert outage.describe() == f"transaction pooler unreachable from {outage.start_s:.1f} s " \
                                "to the end"
    assert outage in killed.outages
    assert "pool_timeout" not in g.errors and g.reclassified > 0
    assert g.errors["connection_refused"] > g.reclassified
    rec = next(r for r in killed.recommendations if r.scenario == PERSISTENT)
    mine = [h for h in rec.limits if h.endpoint == "transaction"]
    assert mine and all(h.limit != "pool size" for h in mine)
    refused = next(h for h in mine if h.error_class == "connection_refused")
    assert outage.describe() in refused.evidence
    assert f"{g.reclassified:,} of them pool timeouts during the outage" in refused.evidence
    assert rec.choice != "transaction" and "unreachable" in rec.ineligible["transaction"]
    assert any(outage.describe() in w for w in killed.warnings)


def test_pool_timeouts_outside_an_outage_stay_pool_size(plain):
    """The session pooler's 6 s pause is an outage with an end; its pool timeouts before and
    after remain what they are."""
    g = plain.group((PERSISTENT, "persistent", "session"))
    (outage,) = g.outages
    assert outage.end_s is not None and outage.end_s - outage.start_s == pytest.approx(6.0)
    assert outage.describe() == f"session pooler unreachable from {outage.start_s:.1f} s to " \
                                f"{outage.end_s:.1f} s"
    assert g.reclassified > 0 and g.errors.get("pool_timeout", 0) > 0
    assert not plain.group((PERSISTENT, "persistent", "direct")).outages


def test_postgres_down_takes_every_endpoint_down(tmp_path):
    run = synthetic.make_run(tmp_path / "pg-down", requests=4_000, scenarios=(PERSISTENT,),
                             kill=(PERSISTENT, "direct", 20.0))
    result = analysis.analyze(run)
    (outage,) = result.group((PERSISTENT, "persistent", "direct")).outages
    assert outage.target == "postgres"
    assert outage.describe().startswith("Postgres unreachable from 20.")
    assert not result.group((PERSISTENT, "persistent", "dedicated")).outages


def test_older_files_network_class_is_split_and_unserved_counted(tmp_path):
    """requests/1 files: one class `network`, no not_started rows (the manifest's unserved),
    the auth_query backends inside by_origin.dedicated."""
    new = analysis.analyze(synthetic.make_run(tmp_path / "new", requests=8_000))
    old_dir = synthetic.make_run(tmp_path / "old", requests=8_000, legacy=True)
    assert "repeat" not in pq.read_schema(old_dir / "requests.parquet").names
    old = analysis.analyze(old_dir)
    for a, b in zip(new.groups, old.groups, strict=True):
        assert (a.key, a.scheduled, a.ok, a.errors, a.not_started, a.reclassified) == \
            (b.key, b.scheduled, b.ok, b.errors, b.not_started, b.reclassified)
        assert (a.peak_backends, a.peak_auth_backends) == (b.peak_backends, b.peak_auth_backends)
    assert analysis.legacy_connection_class(None, "consuming input failed: server closed the "
                                                  "connection unexpectedly") == "connection_lost"
    assert analysis.legacy_connection_class("08006", 'connection to server at "h", port 1 '
                                                     "failed: Connection refused") == \
        "connection_refused"


# -- (4) session queueing is shown where it happens -------------------------------------------


def test_session_queueing_is_evidenced_by_the_first_query(plain):
    """Finding 4: 'up to 135 clients queued (connect p99 38.7 ms)' while the wait was in the
    first query (query p50 3,554 ms)."""
    g = plain.group((SERVERLESS, "serverless", "session"))
    assert g.query.p50 > 10 * g.connect.p99
    hit = next(h for h in analysis.limit_hits(g, plain.limits) if h.limit == "pool size")
    assert hit.error_class is None
    assert f"up to {g.peak_waiting} clients queued for a server connection" in hit.evidence
    assert f"the wait shows in the first query (query p50 {analysis._ms(g.query.p50)}" in \
        hit.evidence
    assert "not in connect" in hit.evidence


def test_app_pool_queueing_is_evidenced_by_the_checkout(tmp_path):
    run = synthetic.make_run(tmp_path / "pool", requests=4_000, faults=False,
                             scenarios=(PERSISTENT,), endpoints=("session",))
    result = analysis.analyze(run)
    g = result.group((PERSISTENT, "persistent", "session"))
    (hit,) = analysis.limit_hits(g, result.limits)
    assert "the wait shows in the pool checkout (connect p50" in hit.evidence


def test_a_passing_queue_in_transaction_mode_is_not_a_limit(plain):
    g = plain.group((SERVERLESS, "serverless", "transaction"))
    g2 = analysis.Group(**{**g.__dict__, "peak_waiting": 3, "peak_wait_s": 0.05})
    assert not analysis.limit_hits(g2, plain.limits)
    g3 = analysis.Group(**{**g.__dict__, "peak_waiting": 3, "peak_wait_s": 2.0})
    assert [h.limit for h in analysis.limit_hits(g3, plain.limits)] == ["pool size"]


def test_session_refusals_name_the_session_limit_only_when_the_lab_refuses(plain):
    """session_overflow = "refuse": max_client_conn refusals on session are the session-mode
    limit (pool_size, Supavisor's EMAXCONNSESSION); a lab that queues (or a manifest from
    before the setting) leaves them to the pooler's max_client_conn."""
    g = plain.group((SERVERLESS, "serverless", "session"))
    refused = analysis.Group(**{**g.__dict__, "errors": {"max_client_conn": 12}})
    pool, max_client = plain.limits["pool_size"], plain.limits["max_client_conn"]
    (hit,) = [h for h in analysis.limit_hits(refused, {**plain.limits,
                                                       "session_max_clients": pool})
              if h.error_class == "max_client_conn"]
    assert hit.limit == "session mode max clients (pool_size; session_overflow = refuse)"
    assert hit.value == pool and "refused at connect" in hit.evidence
    assert "transaction mode" in hit.fix
    (hit,) = [h for h in analysis.limit_hits(refused, plain.limits)
              if h.error_class == "max_client_conn"]
    assert hit.limit == "pooler max_client_conn (max pooler clients)"
    assert hit.value == max_client
    assert "session_max_clients" not in plain.limits  # the synthetic lab queues


def test_the_session_limit_comes_from_the_manifest(tmp_path):
    manifest = {"lab": {"max_connections": 60, "pool_size": 15, "max_client_conn": 200,
                        "session_overflow": "refuse"}}
    assert analysis._limits(manifest, {})["session_max_clients"] == 15
    manifest["lab"]["session_overflow"] = "queue"
    assert "session_max_clients" not in analysis._limits(manifest, {})
    del manifest["lab"]["session_overflow"]  # before the setting, the lab queued
    assert "session_max_clients" not in analysis._limits(manifest, {})


# -- (6) the dedicated pooler's auth connections ----------------------------------------------


def test_dedicated_auth_backends_are_counted_apart(plain):
    """Finding 6: 12 backends drawn as the dedicated pooler's load were 6 auth + 6 serving."""
    g = plain.group((SERVERLESS, "serverless", "dedicated"))
    postgres = plain.connections["postgres"]
    assert g.peak_auth_backends == synthetic.AUTH_BACKENDS
    spans = [(s.start, s.end) for s in g.spans]
    totals = postgres.peak_in("backends", spans)
    assert totals == g.peak_backends
    # serving backends: baseline + the pool's; the sampler's total had the auth ones too
    inside = (postgres.t >= spans[0][0]) & (postgres.t < spans[0][1]) & postgres.ok
    assert (postgres.values["dedicated_auth"][inside] == synthetic.AUTH_BACKENDS).all()
    assert (postgres.values["backends"][inside] == synthetic.BASELINE_BACKENDS
            + postgres.values["dedicated"][inside]).all()
    assert plain.group((SERVERLESS, "serverless", "transaction")).peak_auth_backends is None


# -- (7) compare by meaning --------------------------------------------------------------------


def test_compare_a_bench_run_with_a_single_scenario_run_by_meaning(tmp_path):
    bench = analysis.analyze(synthetic.make_run(tmp_path / "bench", requests=8_000,
                                                duration_s=20.0))
    single = analysis.analyze(synthetic.make_run(tmp_path / "single", requests=4_000,
                                                 duration_s=12.0, scenarios=(SERVERLESS,)))
    assert "+" in bench.manifest["scenario"]["name"]
    assert "base_rate" in single.manifest["scenario"]["params"]
    c = analysis.compare(bench, single)
    keys = [k for k, _a, _b in c.settings]
    assert not [k for k in keys if ".params." in k or k.startswith("load.users")
                or k.startswith("load.spawn_rate")], keys
    assert ("load.duration_s", 20.0, 12.0) in c.settings
    assert c.warnings[0].startswith("Durations differ: A ran 20 s per segment, B 12 s")
    assert any(w.startswith("The scenarios differ: only A ran persistent-server")
               for w in c.warnings)
    assert analysis.DELTA_METRICS == ("requests/s", "error rate", "not-started rate",
                                      "p50 total ms", "p95 total ms", "p99 total ms")
    d = next(x for x in c.deltas if x.key == (SERVERLESS, "serverless", "transaction")
             and x.metric == "requests/s")
    assert d.a == bench.group(d.key).rps and d.b == single.group(d.key).rps
    assert d.a_ci == bench.group(d.key).ci["rps"]
    # a parameter that really differs is still listed, under the scenario's name
    manifest = json.loads((tmp_path / "single" / "manifest.json").read_text())
    manifest["scenario"]["params"]["base_rate"] = 9.0
    manifest["legs"][0]["params"]["base_rate"] = 9.0
    (tmp_path / "single" / "manifest.json").write_text(json.dumps(manifest))
    c = analysis.compare(bench, analysis.analyze(tmp_path / "single"))
    assert ("scenario.params.serverless-burst.base_rate", 5.0, 9.0) in c.settings


def test_compare_warns_about_machines_tiers_and_repeats_in_that_order(tmp_path):
    a_dir = synthetic.make_run(tmp_path / "a", requests=4_000, scenarios=(PERSISTENT,))
    b_dir = synthetic.make_run(tmp_path / "b", requests=4_000, scenarios=(PERSISTENT,),
                               repeats=2)
    manifest = json.loads((b_dir / "manifest.json").read_text())
    manifest["host"]["cores"] = 8
    manifest["lab"]["tier"] = "small"
    (b_dir / "manifest.json").write_text(json.dumps(manifest))
    c = analysis.compare(analysis.analyze(a_dir), analysis.analyze(b_dir))
    assert [w.split(":")[0] for w in c.warnings] == ["Tiers or limits differ",
                                                     "The machines differ", "Repeats differ"]
    same = analysis.compare(analysis.analyze(a_dir), analysis.analyze(a_dir))
    assert same.warnings == [] and same.settings == []


# -- uncertainty -------------------------------------------------------------------------------


def test_every_interval_contains_its_value(plain, killed):
    for result in (plain, killed):
        for g in result.groups:
            assert set(g.ci) >= {"p50", "p95", "p99", "rps", "error_rate"}
            for name, e in g.ci.items():
                assert e.low <= e.value <= e.high, (g.key, name, e)
            assert g.ci["p95"].value == g.total.p95 and g.ci["rps"].value == g.rps
            assert g.ci["error_rate"].value == g.error_rate


def test_intervals_are_reproducible(plain, runs):
    again = analysis.analyze(runs / "plain")
    assert [g.ci for g in again.groups] == [g.ci for g in plain.groups]


def test_intervals_narrow_with_more_data(runs):
    def widths(result):  # relative to the value
        g = result.group((PERSISTENT, "persistent", "direct"))
        return {k: (g.ci[k].high - g.ci[k].low) / g.ci[k].value for k in ("p50", "p95", "rps")}

    small = widths(analysis.analyze(synthetic.make_run(runs / "small", requests=4_000)))
    large = widths(analysis.analyze(synthetic.make_run(runs / "large", requests=64_000)))
    repeated = analysis.analyze(synthetic.make_run(runs / "repeated", requests=16_000,
                                                   repeats=4))
    for k in small:
        assert large[k] < small[k] / 2, k
        assert widths(repeated)[k] < small[k], k
    assert repeated.repeats == 4
    assert "all 4 repeats" in repeated.ci_method
    assert not any("One repeat only" in w for w in repeated.warnings)


def test_a_group_without_successes_has_unknown_latency_intervals(tmp_path):
    run = synthetic.make_run(tmp_path / "fail", requests=2_000, scenarios=(PERSISTENT,),
                             endpoints=("direct",), kill=(PERSISTENT, "direct", 0.0))
    (g,) = analysis.analyze(run).groups
    assert g.ok == 0 and g.error_rate == 1.0
    assert math.isnan(g.ci["p95"].value) and math.isnan(g.ci["p95"].low)
    assert g.ci["error_rate"].low == g.ci["error_rate"].high == 1.0
    assert np.isnan(g.windows.p95).all()


# -- warnings ------------------------------------------------------------------------------------


def test_a_noisy_machine_is_said_out_loud(tmp_path):
    result = analysis.analyze(synthetic.make_run(tmp_path / "noisy", requests=4_000,
                                                 noisy=True, interrupted=True))
    text = "\n".join(result.warnings)
    assert result.warnings[0].startswith("The run was interrupted")
    assert "The machine was busy: a load average above 1.5 (0.75 x 2 cores)" in text
    assert "other pooler-lab lab(s) (other)" in text and "2 other container(s)" in text
    assert "Locust warned 1 time(s)" in text
    assert "One repeat only: the intervals come from windows of one run" in text
    quiet = analysis.analyze(synthetic.make_run(tmp_path / "quiet", requests=4_000,
                                                scenarios=(SERVERLESS,),
                                                endpoints=("transaction",)))
    assert [w.split(":")[0] for w in quiet.warnings] == ["One repeat only"]


# -- JSON ------------------------------------------------------------------------------------------


def test_to_json_has_the_documented_shape(killed):
    data = analysis.to_json(killed)
    text = json.dumps(data, allow_nan=False)  # NaN would not be JSON
    assert json.loads(text) == data
    assert set(data) == {"run_id", "segments", "outages", "recommendations", "warnings",
                         "ci_method"}
    assert len(data["segments"]) == len(killed.groups)
    for seg, g in zip(data["segments"], killed.groups, strict=True):
        assert {"scenario", "phase", "endpoint", "repeats", "scheduled", "succeeded", "failed",
                "not_started", "requests_per_s", "error_rate", "latency_ms", "peak_backends",
                "peak_auth_backends", "peak_waiting"} <= set(seg)
        assert seg["scheduled"] == seg["succeeded"] + sum(seg["failed"].values()) \
            + seg["not_started"]
        for p in ("p50", "p95", "p99"):
            value, (low, high) = seg["latency_ms"][p]["value"], seg["latency_ms"][p]["ci"]
            assert value == getattr(g.total, p) and low <= value <= high
        assert seg["requests_per_s"]["value"] == pytest.approx(g.rps)
    (outage,) = [o for o in data["outages"] if o["endpoint"] == "transaction"]
    assert outage["end_s"] is None and outage["target"] == "transaction"
    assert outage["repeat"] == 1 and 15.5 < outage["start_s"] < 16.6
    for rec in data["recommendations"]:
        assert {"scenario", "phase", "workload", "endpoint", "guide", "agrees",
                "reason"} <= set(rec)
        assert rec["reason"]
    assert data["ci_method"].startswith("95% intervals")


def test_to_json_turns_nan_into_null(tmp_path):
    run = synthetic.make_run(tmp_path / "fail", requests=1_000, scenarios=(PERSISTENT,),
                             endpoints=("direct",), kill=(PERSISTENT, "direct", 0.0))
    (seg,) = analysis.to_json(analysis.analyze(run))["segments"]
    assert seg["latency_ms"]["p95"] == {"value": None, "ci": [None, None]}
    json.dumps(seg, allow_nan=False)


# -- a million rows --------------------------------------------------------------------------


def test_a_million_requests_are_analysed(tmp_path):
    """bench/report_1m.py times it; here only that it runs and adds up."""
    result = analysis.analyze(synthetic.make_run(tmp_path / "1m", requests=1_000_000))
    assert result.total_scheduled == 1_000_000
    assert all(g.ci["p99"].low <= g.total.p99 <= g.ci["p99"].high for g in result.groups)
