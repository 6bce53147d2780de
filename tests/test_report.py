"""`lab report`: numbers, figures and documents from a run directory (no Docker needed, except
the last test, which makes a real run on a real lab).

The synthetic run (lab.synthetic) is in the real formats: a manifest/1, a requests/1 Parquet
file with errors of several classes, arrivals that never started, an outage of the session
pooler, over four endpoints and two scenarios, and connection samples with the dedicated
pooler's auth_query logins apart. Every number the report prints is recomputed here from the
raw files with plain pyarrow + numpy, without lab.analysis. The figures are checked as drawn:
what comes first, what is labelled, what is clipped, how run B of a comparison looks.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from lab import analysis, plots, report, synthetic
from lab.errors import ReportError

from .conftest import ROOT, lab_cli

KINDS = ("headline", "latency-over-time", "latency-distribution", "connections",
         "throughput-errors", "comparison")
TIME_KINDS = ("headline", "latency-over-time", "connections", "throughput-errors")
SCENARIOS = ("serverless-burst", "persistent-server")
SECRET = "s3cret-Pa55word"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return synthetic.make_run(tmp_path_factory.mktemp("runs") / "run-a", requests=16_000,
                              torn_line=True)


@pytest.fixture(scope="module")
def built(run_dir) -> report.ReportPaths:
    return report.build_report(run_dir)


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory) -> Path:
    return synthetic.make_run(tmp_path_factory.mktemp("runs") / "Run-B", requests=8_000,
                              seed=11)


@pytest.fixture(scope="module")
def killed_dir(tmp_path_factory) -> Path:
    """The transaction pooler killed 16 s into persistent-server (issue 8, finding 1)."""
    return synthetic.make_run(tmp_path_factory.mktemp("runs") / "killed", requests=8_000,
                              kill=("persistent-server", "transaction", 16.0))


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory) -> Path:
    """`mixed`: serverless and persistent phases under one scenario name."""
    run = synthetic.make_run(tmp_path_factory.mktemp("runs") / "mixed", requests=2_000,
                             endpoints=("direct", "transaction"))
    table = pq.read_table(run / "requests.parquet")
    table = table.set_column(table.schema.get_field_index("scenario"),
                             table.schema.field("scenario"),
                             pa.array(["mixed"] * table.num_rows).dictionary_encode())
    pq.write_table(table, run / "requests.parquet")
    return run


@pytest.fixture(scope="module")
def one_dir(tmp_path_factory) -> Path:
    """One endpoint, one scenario, nothing failed or left not started."""
    return synthetic.make_run(tmp_path_factory.mktemp("runs") / "one", requests=3_000,
                              endpoints=("transaction",), scenarios=("serverless-burst",))


# -- an independent recomputation ------------------------------------------------------------


def raw(run_dir: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(run_dir / "requests.parquet")
    out = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            out[name] = np.array(column.to_pylist(), dtype=object)
        else:
            out[name] = column.to_numpy()
    return out


def samples(run_dir: Path) -> list[dict]:
    records = []
    for line in (run_dir / "connections.jsonl").read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # the torn last line
            records.append(json.loads(line))
    return records


def stamp(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def down_windows(conns: list[dict], target: str, start: float,
                 end: float) -> list[tuple[float, float]]:
    """Runs of two or more failed samples of a target overlapping [start, end]: (first failed
    sample, next good sample or the segment's end)."""
    series = sorted((r["t"], r["ok"]) for r in conns if r["target"] == target)
    windows, i = [], 0
    while i < len(series):
        if series[i][1]:
            i += 1
            continue
        j = i
        while j + 1 < len(series) and not series[j + 1][1]:
            j += 1
        back = series[j + 1][0] if j + 1 < len(series) else end
        if j > i and series[i][0] < end and back > start:
            windows.append((max(series[i][0], start), min(back, end)))
        i = j + 1
    return windows


def expected(run_dir: Path) -> dict[tuple[str, str, str], dict]:
    """Per (scenario, phase, endpoint) of a run with one repeat: the summary numbers, straight
    from the raw files."""
    cols = raw(run_dir)
    conns = samples(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    duration = manifest["load"]["duration_s"]
    segments = {(s["scenario"], s["endpoint"]): s for s in manifest["segments"]}
    cls = cols["error_class"].astype(str)
    ends = cols["start"] + cols["service_ms"] / 1000
    ends = np.where(np.isnan(ends), cols["intended_start"], ends)
    result = {}
    keys = set(zip(cols["scenario"], cols["phase"], cols["endpoint"], strict=True))
    for key in keys:
        rows = ((cols["scenario"] == key[0]) & (cols["phase"] == key[1])
                & (cols["endpoint"] == key[2]))
        not_started = rows & (cls == "not_started")
        started = rows & ~not_started
        ok = rows & cols["ok"]
        failed = started & ~cols["ok"]
        seg = segments[(key[0], key[2])]
        start, end = stamp(seg["started_at"]), stamp(seg["ended_at"])
        # the load ran from its schedule's t0 (or its first arrival) to the segment's end
        t0s = [json.loads(f.read_text())["t0"] for f in
               (run_dir / "schedule").glob(f"{key[0]}.{key[2]}-*.json")]
        load_start = min([*t0s, cols["intended_start"][rows].min()])
        load_s = min(end - load_start, duration)
        classes = cls.copy()
        targets = ["postgres"] + ([key[2]] if key[2] != "direct" else [])
        for target in targets:  # pool timeouts in an outage are the outage's
            for a, b in down_windows(conns, target, start, end):
                inside = failed & (classes == "pool_timeout") & \
                    (cols["intended_start"] < b) & (ends >= a)
                classes[inside] = "connection_refused"
        entry = {"scheduled": int(rows.sum()), "requests": int(started.sum()),
                 "ok": int(ok.sum()), "not_started": int(not_started.sum()),
                 "rps": started.sum() / load_s, "t0": start}
        for metric in ("connect", "query", "total"):
            values = cols[f"{metric}_ms"][ok]
            values = values[~np.isnan(values)]
            p50, p95, p99 = np.percentile(values, [50, 95, 99])
            entry[metric] = (p50, p95, p99, values.max())
        names, counts = np.unique(classes[failed], return_counts=True)
        entry["errors"] = dict(zip(names.tolist(), counts.tolist(), strict=True))
        during = [r for r in conns if r["ok"] and start <= r["t"] <= end]
        backends = [r["total"] - r["by_origin"].get("dedicated_auth", 0) for r in during
                    if r["target"] == "postgres"]
        entry["peak_backends"] = max(backends) if backends else None
        auth = [r["by_origin"].get("dedicated_auth", 0) for r in during
                if r["target"] == "postgres"]
        entry["peak_auth"] = max(auth) if auth and key[2] == "dedicated" else None
        waiting = [r["pools"]["cl_waiting"] for r in during if r["target"] == key[2]]
        entry["peak_waiting"] = max(waiting) if waiting else None
        result[key] = entry
    return result


def md_tables(text: str, heading: str) -> list[list[list[str]]]:
    """The Markdown tables in the section under ``heading`` (up to the next heading of the
    same or a higher level)."""
    level = heading.split(" ")[0]
    start = text.index(f"\n{heading}\n")
    rest = text[start + len(heading) + 2:]
    stop = re.search(rf"\n#{{1,{len(level)}}} ", rest)
    section = rest[: stop.start()] if stop else rest
    tables, current = [], []
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            if not all(set(c) <= set("-: ") for c in cells):
                current.append([c.strip() for c in cells])
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def count_of(cell: str) -> int:
    """'1,725 (69.00%)' -> 1725."""
    return int(cell.split(" ")[0].replace(",", ""))


# -- numbers ---------------------------------------------------------------------------------


def test_every_group_matches_a_recomputation_from_the_raw_samples(run_dir):
    result = analysis.analyze(run_dir)
    want = expected(run_dir)
    assert {g.key for g in result.groups} == set(want)
    assert len(want) == 8  # two scenarios x four endpoints
    for g in result.groups:
        w = want[g.key]
        assert (g.scheduled, g.requests, g.ok, g.not_started) == (
            w["scheduled"], w["requests"], w["ok"], w["not_started"]), g.key
        assert g.rps == pytest.approx(w["rps"], rel=1e-9)
        for metric in ("connect", "query", "total"):
            stats = getattr(g, metric)
            assert (stats.p50, stats.p95, stats.p99, stats.max) == pytest.approx(
                w[metric], rel=1e-9), (g.key, metric)
        assert g.errors == w["errors"], g.key
        assert g.peak_backends == w["peak_backends"], g.key
        assert g.peak_auth_backends == w["peak_auth"], g.key
        if g.endpoint == "direct":
            assert g.peak_waiting is None
        else:
            assert g.peak_waiting == w["peak_waiting"]
    # the run has what the report must show: work never started, an outage, auth logins
    assert want[("serverless-burst", "serverless", "session")]["not_started"] > 0
    assert "connection_refused" in want[("persistent-server", "persistent", "session")]["errors"]
    assert want[("serverless-burst", "serverless", "dedicated")]["peak_auth"] > 0


def test_the_summary_tables_account_for_every_arrival(run_dir, built):
    text = built.markdown.read_text()
    want = expected(run_dir)
    result = analysis.analyze(run_dir)
    for scenario in SCENARIOS:
        load, latency, parts = md_tables(text, f"### {scenario}")[:3]
        header = load[0]
        assert header[:4] == ["endpoint", "scheduled", "succeeded", "failed"]
        assert header[-4:] == ["not started", "requests/s (95% CI)", "peak backends",
                               "peak waiting"]
        classes = [h.removeprefix("failed: ") for h in header[4:-4]]
        for row in load[1:]:
            key = next(k for k in want if k[0] == scenario and k[2] == row[0])
            w, g = want[key], result.group(key)
            n = w["scheduled"]
            assert row[1] == report.fmt_int(n)
            assert row[2] == report.fmt_share(w["ok"], n)
            assert row[3] == report.fmt_share(w["requests"] - w["ok"], n)
            for cls, cell in zip(classes, row[4:-4], strict=True):
                assert cell == report.fmt_share(w["errors"].get(cls, 0), n), cls
            assert row[-4] == report.fmt_share(w["not_started"], n)
            # every scheduled arrival in exactly one column
            assert count_of(row[2]) + count_of(row[3]) + count_of(row[-4]) == count_of(row[1])
            assert sum(count_of(c) for c in row[4:-4]) == count_of(row[3])
            e = g.estimate("rps")
            assert row[-3] == (f"{report.fmt_rate(w['rps'])} ({report.fmt_rate(e.low)}-"
                               f"{report.fmt_rate(e.high)})")
            assert e.low <= w["rps"] <= e.high
            backends = report.fmt_int(w["peak_backends"])
            if w["peak_auth"]:
                backends += f" + {w['peak_auth']} auth"
            assert row[-2] == backends
            assert row[-1] == report.fmt_int(w["peak_waiting"] if row[0] != "direct" else None)
        assert latency[0][1:] == report.SUMMARY_LATENCY
        for row in latency[1:]:
            key = next(k for k in want if k[0] == scenario and k[2] == row[0])
            g = result.group(key)
            for cell, p, value in zip(row[1:4], ("p50", "p95", "p99"), want[key]["total"],
                                      strict=False):
                e = g.estimate(p)
                assert e.low <= value <= e.high
                assert cell == (f"{report.fmt_ms(value)} ({report.fmt_ms(e.low)}-"
                                f"{report.fmt_ms(e.high)})"), (key, p)
            assert row[4] == report.fmt_ms(want[key]["total"][3])
        assert parts[0][1:] == report.SUMMARY_PARTS
        for row in parts[1:]:
            key = next(k for k in want if k[0] == scenario and k[2] == row[0])
            printed = [report.fmt_ms(v) for m in ("connect", "query") for v in want[key][m]]
            assert row[1:] == printed, key


def test_per_second_windows_match_a_recomputation(run_dir):
    result = analysis.analyze(run_dir)
    cols = raw(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    segment = manifest["segments"][0]
    assert segment["endpoint"] == "direct"
    g = result.group(("serverless-burst", "serverless", "direct"))
    t0 = analysis._time(segment["started_at"])
    assert g.t0 == t0
    assert g.spikes == [(a - t0, b - t0) for a, b in segment["spikes"]]
    rows = (cols["scenario"] == "serverless-burst") & (cols["endpoint"] == "direct")
    second = np.floor(cols["intended_start"] - t0)
    checked = 0
    for i, t in enumerate(g.windows.t):
        in_bin = rows & (second == t)
        assert g.windows.requests[i] == in_bin.sum()
        assert g.windows.ok[i] == (in_bin & cols["ok"]).sum()
        refused = (in_bin & (cols["error_class"] == "too_many_clients")).sum()
        assert g.windows.errors.get("too_many_clients", np.zeros(len(g.windows.t)))[i] == refused
        values = cols["total_ms"][in_bin & cols["ok"]]
        if len(values):
            assert [g.windows.p50[i], g.windows.p95[i], g.windows.p99[i]] == pytest.approx(
                np.percentile(values, [50, 95, 99]).tolist(), rel=1e-9)
            checked += 1
        else:
            assert math.isnan(g.windows.p95[i])
    assert checked >= 50
    # arrivals that never started are windowed apart, by when they were due
    session = result.group(("serverless-burst", "serverless", "session"))
    rows = (cols["scenario"] == "serverless-burst") & (cols["endpoint"] == "session")
    never = rows & (cols["error_class"] == "not_started")
    second = np.floor(cols["intended_start"] - session.t0)
    for i, t in enumerate(session.windows.t):
        assert session.windows.not_started[i] == (never & (second == t)).sum()
        assert session.windows.requests[i] == (rows & ~never & (second == t)).sum()


def test_failed_connection_samples_are_gaps_not_zeros(run_dir):
    result = analysis.analyze(run_dir)
    session = result.connections["session"]
    failed = ~session.ok
    assert failed.sum() >= 10  # the synthetic pause of the session pooler
    assert np.isnan(session.values["clients"][failed]).all()
    assert np.isnan(session.values["waiting"][failed]).all()
    assert not np.isnan(session.values["clients"][session.ok]).any()
    assert result.skipped_lines == 1  # the torn last line
    # a stretch with no samples at all (a sampler that stalled) is broken too
    t = np.array([0.0, 0.5, 1.0, 1.5, 6.0, 6.5])
    series = analysis.Series("x", "pgbouncer", t, np.ones(6, bool), {"clients": np.ones(6)}, {})
    times, values = plots._with_gaps(series, series.values["clients"])
    assert len(times) == 7 and math.isnan(values[4]) and 1.5 < times[4] < 6.0


# -- what the run says -------------------------------------------------------------------------


def test_the_recommendation_follows_the_guide_and_names_the_limits(run_dir, built):
    result = analysis.analyze(run_dir)
    recs = {r.scenario: r for r in result.recommendations}
    serverless, persistent = recs["serverless-burst"], recs["persistent-server"]
    assert serverless.workload == "serverless" and persistent.workload == "persistent"
    assert serverless.choice in ("transaction", "dedicated") and serverless.agrees
    assert persistent.choice == "direct" and persistent.agrees
    hits = {(h.endpoint, h.error_class): h for h in serverless.limits + persistent.limits}
    assert hits[("direct", "too_many_clients")].limit == "Postgres max_connections"
    assert hits[("direct", "too_many_clients")].value == 60
    assert hits[("session", "pool_timeout")].limit == "pool size"
    assert hits[("session", "pool_timeout")].value == 15
    assert hits[("transaction", "prepared_statement")].limit == \
        "transaction mode without prepared statements"
    assert "prepare_threshold=None" in hits[("transaction", "prepared_statement")].fix
    # the report says why, and by which rule
    text = built.markdown.read_text()
    assert serverless.reason and scrub_free(serverless.reason) in text
    definitions = text[text.index("## How the numbers are made"):]
    assert f"more than {100 * serverless.threshold:.0f}%" in definitions
    assert result.ci_method in definitions


def scrub_free(text: str) -> str:
    return report.scrub(text)


def test_no_recommendation_when_nothing_served_the_load(tmp_path):
    run = synthetic.make_run(tmp_path / "direct-only", requests=3_000, endpoints=("direct",),
                             scenarios=("serverless-burst",))
    (rec,) = analysis.analyze(run).recommendations
    assert rec.choice is None and not rec.agrees
    assert [h.limit for h in rec.limits] == ["Postgres max_connections"]
    text = report.build_report(run).markdown.read_text()
    assert "none of the measured endpoints served this load" in text


def test_a_scenario_with_two_phases_is_told_apart_by_phase(mixed_dir):
    """`mixed` runs serverless and persistent workloads under one scenario name."""
    result = analysis.analyze(mixed_dir)
    assert [g.key for g in result.groups] == [
        ("mixed", "serverless", "direct"), ("mixed", "serverless", "transaction"),
        ("mixed", "persistent", "direct"), ("mixed", "persistent", "transaction")]
    assert [(r.phase, r.choice) for r in result.recommendations] == [
        ("serverless", "transaction"), ("persistent", "direct")]
    tables = report.summary_rows(result, "mixed")
    for rows in tables[1::2]:
        assert [row[0] for row in rows] == ["direct (serverless)", "transaction (serverless)",
                                            "direct (persistent)", "transaction (persistent)"]


# -- figures -------------------------------------------------------------------------------------


def test_every_figure_exists_as_png_and_svg_with_something_drawn(built):
    names = {p.name for p in built.figures}
    assert len(names) == len(KINDS) * len(SCENARIOS) * 2
    for scenario in SCENARIOS:
        for kind in KINDS:
            png = built.directory / "figures" / f"{kind}-{scenario}.png"
            svg = built.directory / "figures" / f"{kind}-{scenario}.svg"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            pixels = (imread(png)[..., :3] * 255).astype(np.int32)
            # projector-sized, and no wider than a report page shows at its natural size
            assert 1200 <= pixels.shape[1] <= plots.MAX_WIDTH_PX
            packed = pixels[..., 0] << 16 | pixels[..., 1] << 8 | pixels[..., 2]
            assert len(np.unique(packed)) > 50, png.name  # far more than a blank canvas
            text = svg.read_text()
            assert text.lstrip().startswith("<?xml") and "<svg" in text
            assert text.count("<path") > 20, svg.name


def test_figures_drawn_here_equal_those_of_the_worker_processes(run_dir, built, tmp_path):
    """The default draws in worker processes (one per core); jobs=1 draws in this process.
    Both must give the very same files (SVG ids are salted, dates left out)."""
    here = plots.render(analysis.analyze(run_dir), tmp_path / "figures", jobs=1)
    assert len(here) == len(KINDS) * len(SCENARIOS)
    for f in here:
        for path in (f.png, f.svg):
            assert path.read_bytes() == (built.directory / "figures" / path.name).read_bytes()


def test_the_headline_figure_comes_first(run_dir, built, tmp_path):
    """One figure for the back of a room, first: under "What this run says", before any table,
    not repeated under Figures."""
    figures = plots.render(analysis.analyze(run_dir), tmp_path / "figures", jobs=1)
    for scenario in SCENARIOS:
        first = next(f for f in figures if f.scenario == scenario)
        assert first.kind == "headline"
    html = built.html.read_text()
    alts = re.findall(r'<img [^>]*alt="([^"]+)"', html)
    assert alts[0] == "Clients and Postgres backends: serverless-burst"
    assert alts.count("Clients and Postgres backends: persistent-server") == 1
    first_img = html.index("<img ")
    assert html.index(">What this run says</h2>") < first_img < html.index("<table")
    assert first_img < html.index(">Summary</h2>")
    text = built.markdown.read_text()
    says = text[text.index("## What this run says"):text.index("## Summary")]
    assert says.count("![") == len(SCENARIOS) and "headline-serverless-burst.png" in says
    figures_section = text[text.index("## Figures"):]
    assert "headline-" not in figures_section


def test_the_headline_is_few_thick_directly_labelled_lines(run_dir):
    result = analysis.analyze(run_dir)
    fig, _title, caption = plots.figure(result, "serverless-burst", "headline")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4 and not fig.legends  # direct labels, no legend
    for ax in axes:
        data = [line for line in ax.lines if len(line.get_xdata()) > 2]
        assert len(data) <= 3  # clients, backends (and nothing else to read)
        assert all(line.get_linewidth() >= 3 for line in data)
        texts = [t.get_text() for t in ax.texts]
        assert any(t.startswith("backends") for t in texts)
        assert "max_connections 60" in texts
        assert all(t.get_fontsize() >= 13 for t in ax.texts)
    labels = [t.get_text() for t in axes[2].texts]  # transaction: clients told from backends
    assert any(t.startswith("clients\npeak") for t in labels)
    assert "max_connections" in caption and "role pgbouncer" in caption


def tight_bbox_inside(fig) -> None:
    renderer = fig.canvas.get_renderer()
    tight = fig.get_tightbbox(renderer)
    width, height = fig.get_size_inches()
    assert tight.x0 >= -0.02 and tight.y0 >= -0.02, tight
    assert tight.x1 <= width + 0.02 and tight.y1 <= height + 0.02, (tight, width, height)
    assert width * plots.DPI <= plots.MAX_WIDTH_PX + 1


@pytest.mark.parametrize("which", ["one endpoint", "four endpoints", "compare", "outage",
                                   "two phases"])
def test_no_figure_is_clipped(which, one_dir, run_dir, other_dir, killed_dir, mixed_dir):
    """Every artist (titles, legends, tick labels, placed labels) lies within the figure, no
    two panel titles overlap, and every label placed in a panel stays in its panel, whatever
    the number of endpoints."""
    run = {"one endpoint": one_dir, "four endpoints": run_dir, "compare": run_dir,
           "outage": killed_dir, "two phases": mixed_dir}[which]
    a = analysis.analyze(run)
    b = analysis.analyze(other_dir) if which == "compare" else None
    for scenario in a.scenarios:
        for kind in KINDS:
            fig, _title, _caption = plots.figure(a, scenario, kind, compare=b)
            tight_bbox_inside(fig)
            renderer = fig.canvas.get_renderer()
            titles = [ax.title.get_window_extent(renderer) for ax in fig.axes
                      if ax.get_visible() and ax.get_title()]
            for i, box in enumerate(titles):
                assert not any(box.overlaps(other) for other in titles[i + 1:]), \
                    (kind, scenario, "panel titles overlap")
            for ax in fig.axes:
                frame = ax.get_window_extent(renderer)
                for text in ax.texts:
                    box = text.get_window_extent(renderer)
                    if text.get_rotation() or not text.get_text():
                        continue  # the bars' own labels stand above them
                    assert frame.x0 - 2 <= box.x0 and box.x1 <= frame.x1 + 2, \
                        (kind, scenario, text.get_text())
                    assert frame.y0 - 2 <= box.y0 and box.y1 <= frame.y1 + 2, \
                        (kind, scenario, text.get_text())


def test_a_clipped_figure_would_be_caught():
    """The clipping check can fail: a legend wider than its figure."""
    fig = Figure(figsize=(4, 3), dpi=plots.DPI)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label="a very long legend entry " * 3)
    fig.legend(loc="upper center", ncol=1)
    with pytest.raises(AssertionError):
        tight_bbox_inside(fig)


def test_shared_axes_fit_every_panel(run_dir):
    result = analysis.analyze(run_dir)
    groups = result.groups_of("serverless-burst")
    fig, *_ = plots.figure(result, "serverless-burst", "throughput-errors")
    for ax, g in zip(fig.axes, groups, strict=True):
        low, high = ax.get_ylim()
        lost = g.windows.requests - g.windows.ok + g.windows.not_started
        assert low == 0 and high >= max(g.windows.ok.max(), lost.max()), g.endpoint
    fig, *_ = plots.figure(result, "serverless-burst", "latency-over-time")
    for ax, g in zip(fig.axes, groups, strict=True):
        low, high = ax.get_ylim()
        assert low <= np.nanmin(g.windows.p50) and high >= np.nanmax(g.windows.p99), g.endpoint
    max_conn = result.limits["max_connections"]
    for kind in ("connections", "headline"):
        fig, *_ = plots.figure(result, "serverless-burst", kind)
        for ax, g in zip(fig.axes, groups, strict=True):
            top = ax.get_ylim()[1]
            assert top >= max_conn and top >= min(g.peak_clients or 0, 3 * max_conn), g.endpoint
            # scaled to the budget: max_client_conn (200) does not stretch the axis
            assert top < 1.3 * max(max_conn, max(x.peak_clients or 0 for x in groups))


def test_connections_are_scaled_to_max_connections_and_limits_named_on_their_lines(run_dir):
    result = analysis.analyze(run_dir)
    fig, _title, caption = plots.figure(result, "persistent-server", "connections")
    top = fig.axes[0].get_ylim()[1]
    assert result.limits["max_connections"] <= top < 1.3 * result.limits["max_connections"]
    # max_client_conn (200) far above: a footnote, not a line squashing the panels
    notes = [t.get_text() for t in fig.texts]
    assert any("max_client_conn 200" in t for t in notes)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert not any(k in t for t in legend for k in ("max_connections", "pool_size"))
    session = fig.axes[1]
    assert {"max_connections 60", "pool_size 15"} <= {t.get_text() for t in session.texts}
    widths = {line.get_color(): line.get_linewidth() for line in session.lines
              if len(line.get_xdata()) > 2}
    assert widths[plots.BACKENDS_COLOR] == max(widths.values())  # the backends line is bold
    assert "bold" in caption


def test_the_dedicated_poolers_auth_logins_are_drawn_and_counted_apart(run_dir, built):
    result = analysis.analyze(run_dir)
    g = result.group(("serverless-burst", "serverless", "dedicated"))
    assert g.peak_auth_backends == synthetic.AUTH_BACKENDS
    fig, _title, caption = plots.figure(result, "serverless-burst", "connections")
    dedicated = fig.axes[3]
    auth = [line for line in dedicated.lines if line.get_color() == plots.AUTH_COLOR]
    assert len(auth) == 1 and np.nanmax(auth[0].get_ydata()) == synthetic.AUTH_BACKENDS
    backends = next(line for line in dedicated.lines if line.get_color() == plots.BACKENDS_COLOR
                    and len(line.get_xdata()) > 2)
    assert np.nanmax(backends.get_ydata()) == g.peak_backends  # the auth logins not in it
    assert not any(line.get_color() == plots.AUTH_COLOR for line in fig.axes[2].lines)
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "auth_query" in legend and "role pgbouncer" in caption
    headline, _t, headline_caption = plots.figure(result, "serverless-burst", "headline")
    assert any("auth_query" in t.get_text() for t in headline.axes[3].texts)
    assert "role pgbouncer" in headline_caption
    assert "18 + 2 auth" in built.markdown.read_text()


def test_client_side_work_is_labelled_as_client_time(run_dir):
    """serverless-burst holds its connection for hold_ms of the function's own work: part of
    every total, not pooler latency."""
    result = analysis.analyze(run_dir)
    assert plots.hold_ms(result, "serverless-burst") == 200.0
    assert plots.hold_ms(result, "persistent-server") is None
    words = plots.hold_text(200.0)
    assert words == "200 ms of it is the function's own work (hold_ms)"
    fig, _title, caption = plots.figure(result, "serverless-burst", "latency-over-time")
    for ax in fig.axes:
        assert words in [t.get_text() for t in ax.texts]
        low, high = ax.get_ylim()
        assert low < 200 < high
    assert words in caption and "not pooler latency" in caption
    for kind in ("latency-distribution", "comparison"):
        fig, _title, caption = plots.figure(result, "serverless-burst", kind)
        legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
        assert "hold_ms" in legend, kind
    assert "client time" in plots.figure(result, "serverless-burst",
                                         "latency-distribution")[2]
    fig, _title, caption = plots.figure(result, "persistent-server", "latency-over-time")
    assert not any("hold_ms" in t.get_text() for ax in fig.axes for t in ax.texts)
    assert "hold_ms" not in caption


def test_the_latency_distribution_caption_says_where_queueing_shows(run_dir):
    """Finding 4: with a connection per request, session-mode queueing is in the first query,
    not in connect time."""
    result = analysis.analyze(run_dir)
    caption = plots.figure(result, "serverless-burst", "latency-distribution")[2]
    assert "Connect time is where" not in caption
    assert "first query" in caption and "pool checkout" in caption


def panel_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_an_empty_error_panel_says_no_errors(one_dir, run_dir):
    result = analysis.analyze(one_dir)
    fig, *_ = plots.figure(result, "serverless-burst", "comparison")
    errors = fig.axes[2]
    assert errors.get_title() == "failed by class, and not started"
    assert [t.get_text() for t in errors.texts] == ["no errors: every arrival\nstarted and "
                                                   "succeeded"]
    assert not errors.patches  # no bar of zero height pretending to be data
    fig, *_ = plots.figure(result, "serverless-burst", "throughput-errors")
    assert "no errors" in panel_texts(fig)
    # a run with errors: the panel is not empty and says so only where an endpoint had none
    result = analysis.analyze(run_dir)
    fig, *_ = plots.figure(result, "serverless-burst", "comparison")
    errors = fig.axes[2]
    assert errors.patches
    assert [t.get_text() for t in errors.texts] == ["no errors", "no errors"]  # the poolers
    fig, *_ = plots.figure(result, "serverless-burst", "throughput-errors")
    assert [t.get_text() for t in fig.axes[0].texts] == []  # direct failed


def test_not_started_is_a_class_of_its_own_in_the_error_figures(run_dir):
    result = analysis.analyze(run_dir)
    for kind in ("throughput-errors", "comparison"):
        fig, _title, caption = plots.figure(result, "serverless-burst", kind)
        handles = {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(),
                                                   fig.legends[0].legend_handles, strict=True)}
        assert plots.NOT_STARTED_LABEL in handles, kind
        assert handles[plots.NOT_STARTED_LABEL].get_hatch() == plots.NOT_STARTED_HATCH
        assert not any(h.get_hatch() for name, h in handles.items()
                       if name.startswith("failed:"))
        assert "not started" in caption
        session = fig.axes[1] if kind == "throughput-errors" else fig.axes[2]
        assert any(p.get_hatch() == plots.NOT_STARTED_HATCH for p in session.patches), kind


def test_outages_are_marked_in_every_time_figure(killed_dir, run_dir):
    result = analysis.analyze(killed_dir)
    g = result.group(("persistent-server", "persistent", "transaction"))
    (outage,) = [o for o in g.outages if o.target == "transaction"]
    assert outage.describe() == "transaction pooler unreachable from 16.0 s to the end"
    for kind in TIME_KINDS:
        fig, _title, caption = plots.figure(result, "persistent-server", kind)
        panel = fig.axes[2]
        assert panel.get_title() == "transaction"
        said = [" ".join(t.get_text().split()) for t in panel.texts]
        assert outage.describe() in said, kind
        bands = [p for p in panel.patches if p.get_hatch() == "//"]
        assert bands, kind
        x0, x1 = bands[0].get_x(), bands[0].get_x() + bands[0].get_width()
        assert x0 == pytest.approx(outage.start_s) and x1 >= 59.0, kind
        assert "outage" in caption, kind
        # no outage on direct: no band
        assert not [p for p in fig.axes[0].patches if p.get_hatch() == "//"], kind
        # the other run of a comparison: its outage named as run B's
        fig, *_ = plots.figure(analysis.analyze(run_dir), "persistent-server", kind,
                               compare=result)
        said = [" ".join(t.get_text().split()) for t in fig.axes[2].texts]
        assert f"B: {outage.describe()}" in said, kind


def test_the_comparison_has_no_log_scale_bars_and_shows_intervals(run_dir):
    result = analysis.analyze(run_dir)
    fig, *_ = plots.figure(result, "serverless-burst", "comparison")
    for ax in fig.axes:
        if ax.get_yscale() == "log":
            assert not [p for p in ax.patches if isinstance(p, Rectangle)], ax.get_title()
    latency, rate = fig.axes[0], fig.axes[1]
    assert latency.get_yscale() == "log" and latency.containers  # points with error bars
    intervals = []
    for container in latency.containers:
        (segments,) = container[2]
        intervals += [s[:, 1] for s in segments.get_segments()]
    p95 = result.group(("serverless-burst", "serverless", "session")).estimate("p95")
    assert any(low == pytest.approx(p95.low) and high == pytest.approx(p95.high)
               for low, high in intervals)
    rps = result.group(("serverless-burst", "serverless", "direct")).estimate("rps")
    whiskers = [tuple(line.get_ydata()) for line in rate.lines]
    assert (pytest.approx(rps.low), pytest.approx(rps.high)) in whiskers


def test_run_b_is_faint_and_dashed_in_every_figure(run_dir, other_dir):
    """Finding 7: the report promised B 'faint and dashed' while the connections figure drew
    it solid."""
    a, b = analysis.analyze(run_dir), analysis.analyze(other_dir)
    for kind in KINDS:
        fig, _title, caption = plots.figure(a, "serverless-burst", kind, compare=b)
        faint = [line for ax in fig.axes for line in ax.lines
                 if line.get_alpha() == plots.OTHER_ALPHA]
        assert faint, kind
        drawn = [line for line in faint if line.get_linestyle() != "None"]
        assert drawn and all(line.get_linestyle() == "--" for line in drawn), kind
        points = [line for line in faint if line.get_linestyle() == "None"
                  and line.get_marker() in plots.PERCENTILE_MARKERS.values()]
        assert all(line.get_markerfacecolor() == "white" for line in points), kind  # hollow
        solid_a = [line for ax in fig.axes for line in ax.lines
                   if line.get_alpha() in (None, 1.0) and len(line.get_xdata()) > 2]
        if kind != "comparison":
            assert solid_a, kind
        bars = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle)
                and p.get_alpha() == plots.OTHER_ALPHA]
        assert all(p.get_linestyle() == "--" for p in bars), kind
        legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
        assert f"B: {b.run_id} (faint, dashed" in legend, kind
        assert "faint and dashed" in caption, kind


# -- documents -----------------------------------------------------------------------------------


def test_each_endpoint_keeps_its_colour_in_every_figure(built):
    for kind in KINDS:
        pixels = imread(built.directory / "figures" / f"{kind}-serverless-burst.png")
        for endpoint in synthetic.ENDPOINTS:
            assert count_color(pixels, plots.ENDPOINT_COLORS[endpoint]) > 100, (kind, endpoint)


def count_color(pixels: np.ndarray, hex_color: str) -> int:
    rgb = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(pixels[..., :3] - rgb).max(axis=-1) < 0.02).sum())


def test_the_html_is_self_contained(built):
    text = built.html.read_text()
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower() and "@import" not in text and "url(" not in text
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", text)
    assert refs and all(ref.startswith("data:") or ref.startswith("#") for ref in refs)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == len(KINDS) * len(SCENARIOS)
    pngs = {p.read_bytes() for p in built.figures if p.suffix == ".png"}
    assert {base64.b64decode(data) for data in images} == pngs
    for section in ("What this run says", "Summary", "Figures", "Errors and gaps",
                    "How the numbers are made", "Manifest"):
        assert f">{section}</h2>" in text
    assert "python -m lab.synthetic" in text  # the command to reproduce


def test_html_figures_are_shown_at_their_natural_size(built):
    """A PNG is never stretched beyond its pixels: no width: 100%, its own size as
    attributes, only ever scaled down to fit (max-width)."""
    text = built.html.read_text()
    style = text[text.index("<style>"):text.index("</style>")]
    assert not re.search(r"(?<![-\w])width\s*:\s*100%", style)
    rule = re.search(r"figure img\s*\{([^}]*)\}", style)[1]
    assert "max-width: 100%" in rule and "height: auto" in rule
    tags = re.findall(r'<img src="data:image/png;base64,([^"]+)" width="(\d+)" '
                      r'height="(\d+)"', text)
    assert len(tags) == len(KINDS) * len(SCENARIOS)
    for data, width, height in tags:
        png = base64.b64decode(data)
        assert (int(width), int(height)) == report.png_size(png)
        assert imread(io.BytesIO(png)).shape[:2] == (int(height), int(width))


def test_warnings_and_outages_are_said_at_the_top(killed_dir):
    built = report.build_report(killed_dir)
    result = analysis.analyze(killed_dir)
    text = built.markdown.read_text()
    says = text.index("## What this run says")
    assert result.warnings
    for warning in result.warnings:
        at = text.index(f"**Warning:** {warning}")
        assert at < says
    assert any("transaction pooler unreachable from 16.0 s to the end" in w
               for w in result.warnings)
    html = built.html.read_text()
    assert html.count('<p class="warning"><strong>Warning:</strong>') == len(result.warnings)
    errors = text[text.index("## Errors and gaps"):text.index("## How the numbers are made")]
    assert "persistent-server on transaction: transaction pooler unreachable from 16.0 s to " \
           "the end" in errors


def test_the_markdown_links_its_figures(built):
    text = built.markdown.read_text()
    for path in re.findall(r"\]\((figures/[^)]+)\)", text):
        assert (built.directory / path).is_file()
    assert text.count("![") == len(KINDS) * len(SCENARIOS)


def test_no_password_reaches_a_report(tmp_path):
    run = synthetic.make_run(tmp_path / "leaky", requests=4_000)
    table = pq.read_table(run / "requests.parquet")
    leaked = f"connection to postgresql://postgres:{SECRET}@127.0.0.2:5432/postgres failed"
    messages = pa.array([leaked if m is not None else None
                         for m in table.column("message").to_pylist()]).dictionary_encode()
    table = table.set_column(table.schema.get_field_index("message"),
                             table.schema.field("message"), messages)
    pq.write_table(table, run / "requests.parquet")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["reproduce"] += f" password={SECRET}"
    (run / "manifest.json").write_text(json.dumps(manifest))
    built = report.build_report(run)
    for path in (built.html, built.markdown, *built.figures):
        assert SECRET.encode() not in path.read_bytes(), path.name
    assert "postgresql://postgres:[YOUR-PASSWORD]@127.0.0.2" in built.markdown.read_text()


def test_an_interrupted_run_is_read_from_its_chunks(run_dir, tmp_path):
    copy = tmp_path / "interrupted"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("report*", "figures"))
    table = pq.read_table(copy / "requests.parquet")
    (copy / "requests").mkdir()
    for i, start in enumerate(range(0, table.num_rows, 5_000)):
        pq.write_table(table.slice(start, 5_000), copy / "requests" / f"part-0-{i:06d}.parquet")
    (copy / "requests.parquet").unlink()
    a, b = analysis.analyze(run_dir), analysis.analyze(copy)
    assert [(g.key, g.scheduled, g.requests, g.total.p99, g.errors) for g in a.groups] == \
        [(g.key, g.scheduled, g.requests, g.total.p99, g.errors) for g in b.groups]


def test_compare_adds_what_changed_and_overlays_the_other_run(run_dir, built, other_dir):
    paths = report.build_report(run_dir, compare=other_dir)
    assert paths.directory == run_dir / "compare-Run-B"  # the run id as it is
    text = paths.markdown.read_text()
    assert "## What changed" in text
    a, b = analysis.analyze(run_dir), analysis.analyze(other_dir)
    rows = md_tables(text, "## What changed")
    table = rows[0]
    assert table[0][1:] == list(analysis.DELTA_METRICS)
    assert not any(m.startswith(("requests ", "peak")) for m in analysis.DELTA_METRICS)
    direct = next(r for r in table if r[0] == "direct")
    ga = a.group(("serverless-burst", "serverless", "direct"))
    gb = b.group(("serverless-burst", "serverless", "direct"))
    delta = next(d for d in analysis.compare(a, b).deltas
                 if d.key == ga.key and d.metric == "requests/s")
    mark = " †" if delta.beyond_intervals else ""
    assert direct[1] == (f"{report.fmt_rate(ga.rps)} (B {report.fmt_rate(gb.rps)}, "
                         f"{100 * (ga.rps / gb.rps - 1):+.1f}%{mark})")
    assert direct[2].endswith(" pp)") or direct[2].endswith(" pp †)")  # a rate: points
    # the settings that differ: the seed
    settings = next(t for t in rows if t[0][0] == "setting (by meaning)")
    assert ["scenario.seed", "7", "11"] in settings
    # the figures are drawn again with the other run in them, beside the plain report
    for kind in KINDS:
        plain = built.directory / "figures" / f"{kind}-serverless-burst.png"
        overlaid = paths.directory / "figures" / f"{kind}-serverless-burst.png"
        assert plain.read_bytes() != overlaid.read_bytes(), kind
    assert built.html.is_file() and "What changed" not in built.html.read_text()
    html = paths.html.read_text()
    assert "http://" not in html and "https://" not in html
    assert "faint and dashed" in text


def test_compare_warns_first_when_the_runs_differ(run_dir, tmp_path):
    """Finding 7: a 20 s run against a 12 s one reported 'requests/s -40%' without saying that
    the durations differ. What makes the runs unlike comes before any number."""
    short = synthetic.make_run(tmp_path / "short", requests=4_000, duration_s=30.0,
                               scenarios=("serverless-burst",))
    comparison = analysis.compare(analysis.analyze(run_dir), analysis.analyze(short))
    assert any(w.startswith("Durations differ") for w in comparison.warnings)
    assert any(w.startswith("The scenarios differ") for w in comparison.warnings)
    paths = report.build_report(run_dir, compare=short)
    text = paths.markdown.read_text()
    first_number = min(text.index(s) for s in ("Scenario ", "## What this run says",
                                               "## What changed", "**Warning:**"))
    at = [text.index(f"**Runs differ:** {w}") for w in comparison.warnings]
    assert at == sorted(at) and max(at) < first_number
    assert text.index("# pooler-lab report") < min(at)
    html = paths.html.read_text()
    first = html.index('<p class="warning"><strong>Runs differ:</strong>')
    assert first < html.index("<h2") and first < html.index("<img ")


# -- damaged run directories -------------------------------------------------------------------


def _damage(run: Path, how: str) -> Path:
    if how == "missing directory":
        shutil.rmtree(run)
    elif how == "no manifest":
        (run / "manifest.json").unlink()
    elif how == "unparsable manifest":
        (run / "manifest.json").write_text('{"format": "manifest/1", "run_id": ')
    elif how == "unknown manifest version":
        data = json.loads((run / "manifest.json").read_text())
        data["format"] = "manifest/2"
        (run / "manifest.json").write_text(json.dumps(data))
    elif how == "no samples":
        (run / "requests.parquet").unlink()
    elif how == "unknown samples version":
        table = pq.read_table(run / "requests.parquet")
        pq.write_table(table.replace_schema_metadata({"pooler-lab.format": "requests/2"}),
                       run / "requests.parquet")
    elif how == "damaged samples":
        (run / "requests.parquet").write_bytes(b"PAR1 this is not parquet")
    elif how == "unknown connections version":
        lines = (run / "connections.jsonl").read_text().splitlines()
        lines[3] = lines[3].replace('"v":1', '"v":2')
        (run / "connections.jsonl").write_text("\n".join(lines) + "\n")
    return run


DAMAGE = {
    "missing directory": "does not exist",
    "no manifest": "has no manifest.json",
    "unparsable manifest": "is damaged",
    "unknown manifest version": "is format manifest/2; this pooler-lab reads manifest/1",
    "no samples": "has no request samples",
    "unknown samples version": "is format requests/2; this pooler-lab reads requests/1",
    "damaged samples": "is unreadable",
    "unknown connections version": "connections/2",
}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_run_directory_is_one_line_with_a_fix(tmp_path, how):
    run = _damage(synthetic.make_run(tmp_path / "run", requests=800), how)
    with pytest.raises(ReportError) as info:
        report.build_report(run)
    line = info.value.one_line()
    assert "\n" not in line and DAMAGE[how] in line
    assert "; fix: " in line and info.value.fix
    assert info.value.exit_code == 6
    assert not (run / "report.html").exists()


def test_lab_report_prints_its_paths_or_one_line_with_a_fix(tmp_path):
    run = synthetic.make_run(tmp_path / "small", requests=1_000)
    proc = lab_cli("report", str(run), home=tmp_path)
    assert proc.stdout.splitlines() == [str(run / "report.html"), str(run / "report.md")]
    proc = lab_cli("report", str(tmp_path / "missing"), home=tmp_path, check=False)
    assert proc.returncode == 6 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and "does not exist; fix: " in line


# -- the real stack ------------------------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.timeout(600)
def test_a_real_short_run_renders_a_report(lab_factory, tmp_path):
    """`lab run` on a real lab, then `lab report` on what it wrote: every figure, the summary
    equal to a recomputation from the run's own samples."""
    lab = lab_factory()
    reports = tmp_path / "reports"
    proc = lab.cli("run", "serverless-burst", "-e", "direct", "-e", "transaction",
                   "--duration", "8s", "--users", "20", "--cooldown", "1s",
                   "-P", "spike_every=4", "-P", "spike_length=2", "-P", "spike_offset=2",
                   "-P", "spike_rate=60", "-P", "hold_ms=20", "--reports-dir", str(reports),
                   timeout=300)
    run = Path(proc.stdout.strip().splitlines()[-1])
    run = run if run.is_absolute() else ROOT / run
    built = lab_cli("report", str(run), home=lab.home)
    printed = built.stdout.strip().splitlines()
    assert str(run / "report.html") in printed[0] or any("report.html" in p for p in printed)
    result = analysis.analyze(run)
    want = expected(run)
    assert {g.endpoint for g in result.groups} == {"direct", "transaction"}
    for g in result.groups:
        assert g.requests == want[g.key]["requests"] and g.requests > 10
        assert g.total.p95 == pytest.approx(want[g.key]["total"][1], rel=1e-9)
        assert g.peak_backends is not None and g.peak_backends >= 1
    for kind in KINDS:
        assert (run / "figures" / f"{kind}-serverless-burst.png").stat().st_size > 10_000
    html = (run / "report.html").read_text()
    assert "http://" not in html and "https://" not in html
    assert lab.password not in html and lab.password not in (run / "report.md").read_text()
