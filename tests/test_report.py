"""`lab report`: numbers, figures and documents from a run directory (no Docker needed, except
the last test, which makes a real run on a real lab).

The synthetic run (lab.synthetic) is in the real formats: a manifest/1, a requests/1 Parquet
file with errors of several classes over four endpoints and two scenarios, and connection
samples with a gap. Every number the report prints is recomputed here from the raw files with
plain pyarrow + numpy, without lab.analysis.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from matplotlib.image import imread

from lab import analysis, plots, report, synthetic
from lab.errors import ReportError

from .conftest import ROOT, lab_cli

KINDS = ("latency-over-time", "latency-distribution", "connections", "throughput-errors",
         "comparison")
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


def expected(run_dir: Path) -> dict[tuple[str, str, str], dict]:
    """Per (scenario, phase, endpoint): the summary numbers, straight from the raw files."""
    cols = raw(run_dir)
    conns = samples(run_dir)
    result = {}
    keys = set(zip(cols["scenario"], cols["phase"], cols["endpoint"], strict=True))
    for key in keys:
        rows = ((cols["scenario"] == key[0]) & (cols["phase"] == key[1])
                & (cols["endpoint"] == key[2]))
        ok = rows & cols["ok"]
        first = cols["intended_start"][rows].min()
        last = (cols["start"][rows] + cols["service_ms"][rows] / 1000).max()
        entry = {"requests": int(rows.sum()), "ok": int(ok.sum()),
                 "rps": rows.sum() / (last - first)}
        for metric in ("connect", "query", "total"):
            values = cols[f"{metric}_ms"][ok]
            values = values[~np.isnan(values)]
            p50, p95, p99 = np.percentile(values, [50, 95, 99])
            entry[metric] = (p50, p95, p99, values.max())
        classes, counts = np.unique(cols["error_class"][rows & ~cols["ok"]].astype(str),
                                    return_counts=True)
        entry["errors"] = dict(zip(classes.tolist(), counts.tolist(), strict=True))
        backends = [r["total"] for r in conns if r["target"] == "postgres" and r["ok"]
                    and first <= r["t"] <= last]
        entry["peak_backends"] = max(backends) if backends else None
        waiting = [r["pools"]["cl_waiting"] for r in conns if r["target"] == key[2]
                   and r["ok"] and first <= r["t"] <= last]
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


# -- numbers ---------------------------------------------------------------------------------


def test_every_group_matches_a_recomputation_from_the_raw_samples(run_dir):
    result = analysis.analyze(run_dir)
    want = expected(run_dir)
    assert {g.key for g in result.groups} == set(want)
    assert len(want) == 8  # two scenarios x four endpoints
    for g in result.groups:
        w = want[g.key]
        assert (g.requests, g.ok) == (w["requests"], w["ok"])
        assert g.rps == pytest.approx(w["rps"], rel=1e-12)
        for metric in ("connect", "query", "total"):
            stats = getattr(g, metric)
            assert (stats.p50, stats.p95, stats.p99, stats.max) == pytest.approx(
                w[metric], rel=1e-9), (g.key, metric)
        assert g.errors == w["errors"]
        assert g.peak_backends == w["peak_backends"]
        if g.endpoint == "direct":
            assert g.peak_waiting is None
        else:
            assert g.peak_waiting == w["peak_waiting"]


def test_the_summary_tables_print_those_numbers(run_dir, built):
    text = built.markdown.read_text()
    want = expected(run_dir)
    for scenario in SCENARIOS:
        load, latency = md_tables(text, f"### {scenario}")[:2]
        header = load[0]
        classes = header[4:-2]
        for row in load[1:]:
            key = next(k for k in want if k[0] == scenario and k[2] == row[0])
            w = want[key]
            assert row[1] == report.fmt_int(w["requests"])
            assert row[2] == report.fmt_rate(w["rps"])
            assert row[3] == report.fmt_pct((w["requests"] - w["ok"]) / w["requests"])
            for cls, cell in zip(classes, row[4:-2], strict=True):
                assert cell == report.fmt_pct(w["errors"].get(cls, 0) / w["requests"]), cls
            assert row[-2] == report.fmt_int(w["peak_backends"])
            assert row[-1] == report.fmt_int(w["peak_waiting"] if row[0] != "direct" else None)
        assert latency[0][1:] == report.SUMMARY_LATENCY
        for row in latency[1:]:
            key = next(k for k in want if k[0] == scenario and k[2] == row[0])
            printed = [report.fmt_ms(v) for m in ("connect", "query", "total")
                       for v in want[key][m]]
            assert row[1:] == printed, key


def test_per_second_windows_match_a_recomputation(run_dir):
    result = analysis.analyze(run_dir)
    cols = raw(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    g = result.group(("serverless-burst", "serverless", "direct"))
    segment = manifest["segments"][0]
    assert segment["endpoint"] == "direct"
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
        assert g.windows.errors.get("too_many_clients", np.zeros(1))[i] == refused
        values = cols["total_ms"][in_bin & cols["ok"]]
        if len(values):
            assert [g.windows.p50[i], g.windows.p95[i], g.windows.p99[i]] == pytest.approx(
                np.percentile(values, [50, 95, 99]).tolist(), rel=1e-9)
            checked += 1
        else:
            assert math.isnan(g.windows.p95[i])
    assert checked >= 50


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


def test_the_recommendation_follows_the_guide_and_names_the_limits(run_dir):
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


def test_no_recommendation_when_nothing_served_the_load(tmp_path):
    run = synthetic.make_run(tmp_path / "direct-only", requests=3_000, endpoints=("direct",),
                             scenarios=("serverless-burst",))
    (rec,) = analysis.analyze(run).recommendations
    assert rec.choice is None and not rec.agrees
    assert [h.limit for h in rec.limits] == ["Postgres max_connections"]
    text = report.build_report(run).markdown.read_text()
    assert "none of the measured endpoints served this load" in text


def test_a_scenario_with_two_phases_is_told_apart_by_phase(tmp_path):
    """`mixed` runs serverless and persistent workloads under one scenario name."""
    run = synthetic.make_run(tmp_path / "mixed", requests=2_000,
                             endpoints=("direct", "transaction"))
    table = pq.read_table(run / "requests.parquet")
    field = table.schema.field("scenario")
    table = table.set_column(table.schema.get_field_index("scenario"), field,
                             pa.array(["mixed"] * table.num_rows).dictionary_encode())
    pq.write_table(table, run / "requests.parquet")
    result = analysis.analyze(run)
    assert [g.key for g in result.groups] == [
        ("mixed", "serverless", "direct"), ("mixed", "serverless", "transaction"),
        ("mixed", "persistent", "direct"), ("mixed", "persistent", "transaction")]
    assert [(r.phase, r.choice) for r in result.recommendations] == [
        ("serverless", "transaction"), ("persistent", "direct")]
    load, _latency = report.summary_rows(result, "mixed")[1::2]
    assert [row[0] for row in load] == ["direct (serverless)", "transaction (serverless)",
                                        "direct (persistent)", "transaction (persistent)"]


# -- figures and documents ---------------------------------------------------------------------


def test_every_figure_exists_as_png_and_svg_with_something_drawn(built):
    names = {p.name for p in built.figures}
    assert len(names) == len(KINDS) * len(SCENARIOS) * 2
    for scenario in SCENARIOS:
        for kind in KINDS:
            png = built.directory / "figures" / f"{kind}-{scenario}.png"
            svg = built.directory / "figures" / f"{kind}-{scenario}.svg"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            pixels = (imread(png)[..., :3] * 255).astype(np.int32)
            assert pixels.shape[1] >= 1200  # projector-sized
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


def test_shared_axes_fit_every_panel(run_dir):
    result = analysis.analyze(run_dir)
    groups = result.groups_of("serverless-burst")
    fig = plots._throughput_errors(result, groups, {}, None)
    for ax, g in zip(fig.axes, groups, strict=True):
        low, high = ax.get_ylim()
        failed = g.windows.requests - g.windows.ok
        assert low == 0 and high >= max(g.windows.ok.max(), failed.max()), g.endpoint
    fig = plots._connections(result, groups, {}, None)
    for ax, g in zip(fig.axes, groups, strict=True):
        assert ax.get_ylim()[1] >= (g.peak_clients or 0), g.endpoint


def count_color(pixels: np.ndarray, hex_color: str) -> int:
    rgb = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(pixels[..., :3] - rgb).max(axis=-1) < 0.02).sum())


@pytest.mark.parametrize("kind", ["latency-over-time", "latency-distribution", "connections",
                                  "throughput-errors", "comparison"])
def test_each_endpoint_keeps_its_colour_in_every_figure(built, kind):
    pixels = imread(built.directory / "figures" / f"{kind}-serverless-burst.png")
    for endpoint in synthetic.ENDPOINTS:
        assert count_color(pixels, plots.ENDPOINT_COLORS[endpoint]) > 100, endpoint


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
    for section in ("What this run says", "Summary", "Figures", "Errors and gaps", "Manifest"):
        assert f">{section}</h2>" in text
    assert "python -m lab.synthetic" in text  # the command to reproduce


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
    assert [(g.key, g.requests, g.total.p99, g.errors) for g in a.groups] == \
        [(g.key, g.requests, g.total.p99, g.errors) for g in b.groups]


def test_compare_adds_what_changed_and_overlays_the_other_run(run_dir, built, other_dir):
    paths = report.build_report(run_dir, compare=other_dir)
    assert paths.directory == run_dir / "compare-Run-B"  # the run id as it is
    text = paths.markdown.read_text()
    assert "## What changed" in text
    a, b = analysis.analyze(run_dir), analysis.analyze(other_dir)
    rows = md_tables(text, "## What changed")
    table = rows[0]
    assert table[0][1:] == list(analysis.DELTA_METRICS)
    direct = next(r for r in table if r[0] == "direct")
    ga = a.group(("serverless-burst", "serverless", "direct"))
    gb = b.group(("serverless-burst", "serverless", "direct"))
    assert direct[1] == (f"{report.fmt_rate(ga.rps)} (B {report.fmt_rate(gb.rps)}, "
                         f"{100 * (ga.rps / gb.rps - 1):+.1f}%)")
    # the settings that differ: the seed and the request count in the reproduce command
    settings = next(t for t in rows if t[0][0] == "setting (manifest)")
    assert ["scenario.seed", "7", "11"] in settings
    # the figures are drawn again with the other run in them, beside the plain report
    for kind in KINDS:
        plain = built.directory / "figures" / f"{kind}-serverless-burst.png"
        overlaid = paths.directory / "figures" / f"{kind}-serverless-burst.png"
        assert plain.read_bytes() != overlaid.read_bytes(), kind
    assert built.html.is_file() and "What changed" not in built.html.read_text()
    html = paths.html.read_text()
    assert "http://" not in html and "https://" not in html


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
