"""Stage 8 of the pipeline: the report of a run, as self-contained HTML and as Markdown.

``build_report(run_dir, compare=None)`` analyses a run directory (``lab.analysis``), draws its
figures (``lab.plots``) and writes ``report.html``, ``report.md`` and ``figures/`` into it.
With ``compare`` (another run directory) it writes into ``<run_dir>/compare-<other-run-id>/``
instead, adds a table of what changed and overlays the other run in every figure; the plain
report of the run stays as it was.

Order: what makes the runs of a comparison unlike, then the run's own warnings (a busy
machine, outages, work never started, one repeat only), then "What this run says" with each
scenario's headline figure, the summary tables (every scheduled arrival by outcome; rates and
percentiles with their 95% intervals), what changed, the other figures, errors and outages,
how the numbers are made, the manifest.

The HTML references nothing outside itself: styles inline, figures as ``data:`` URIs shown at
their own pixel size (only ever scaled down to fit), no script, no web font. Both documents
are made from one list of blocks, so they say the same. No password reaches a report: the
manifest has none, and every text taken from a run (error messages, manifest values) is
scrubbed of URI passwords once more anyway.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import analysis as an
from lab import plots
from lab.analysis import Comparison, Group, RunAnalysis

MASK = "[YOUR-PASSWORD]"
_URI_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)(?P<pw>[^\s@/]+)@", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'[^']*'|\"[^\"]*\"|[^\s'\"]+)",
                          re.I)


@dataclass(frozen=True)
class ReportPaths:
    directory: Path
    html: Path
    markdown: Path
    figures: tuple[Path, ...]  # every PNG and SVG


def build_report(run_dir: Path | str, compare: Path | str | None = None) -> ReportPaths:
    """Analyse ``run_dir`` (and ``compare``), draw the figures and write both documents."""
    a = an.analyze(run_dir)
    b = an.analyze(compare) if compare is not None else None
    comparison = an.compare(a, b) if b is not None else None
    out = a.run_dir
    if b is not None:
        # The other run's id as it is (ids are [0-9A-Za-z-]); anything else becomes '-'.
        other = re.sub(r"[^0-9A-Za-z_.-]+", "-", b.run_id).strip("-.") or "run"
        out = a.run_dir / f"compare-{other}"
    out.mkdir(parents=True, exist_ok=True)
    figures = plots.render(a, out / "figures", compare=b)
    blocks = document(a, figures, comparison)
    html_path, md_path = out / "report.html", out / "report.md"
    _write(html_path, to_html(blocks, title=f"pooler-lab report: {a.run_id}"))
    _write(md_path, to_markdown(blocks, base=out))
    return ReportPaths(out, html_path, md_path,
                       tuple(p for f in figures for p in (f.png, f.svg)))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def scrub(text: Any) -> str:
    """``text`` as a string with any URI or key=value password replaced by the mask."""
    text = str(text)
    text = _URI_PASSWORD.sub(lambda m: m["head"] + MASK + "@", text)
    return _KV_PASSWORD.sub(lambda m: m["head"] + MASK, text)


# -- number formats ----------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    """Milliseconds with three significant digits or so: 0.371, 4.56, 37.2, 1,234."""
    if value is None or not math.isfinite(value):
        return "-"
    if value < 1:
        return f"{value:.3f}"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def fmt_rate(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def fmt_pct(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{100 * value:.2f}%"


def fmt_int(value: int | float | None) -> str:
    return "-" if value is None else f"{int(value):,}"


def fmt_share(count: int, whole: int) -> str:
    """A count and its share of ``whole``: '1,950 (31.20%)'."""
    return f"{count:,} ({fmt_pct(count / whole if whole else 0.0)})"


def fmt_interval(e: an.Estimate, fmt=fmt_ms) -> str:
    """A value and its 95% interval: '12.3 (11.8-12.9)'; the value alone when the interval is
    unknown or empty."""
    if not math.isfinite(e.value):
        return "-"
    if not (math.isfinite(e.low) and math.isfinite(e.high)):
        return fmt(e.value)
    return f"{fmt(e.value)} ({fmt(e.low)}-{fmt(e.high)})"


def _is_rate(metric: str) -> bool:
    return metric.endswith(" rate")


def fmt_change(change: float | None, ratio: float | None, metric: str) -> str:
    if change is None:
        return "-"
    if _is_rate(metric):
        return f"{100 * change:+.2f} pp"
    if ratio is None:
        return f"{change:+,.4g}"
    return f"{100 * (ratio - 1):+.1f}%"


# -- the document as blocks --------------------------------------------------------------------


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass(frozen=True)
class Para:
    text: str
    strong: str | None = None  # a bold lead-in
    kind: str = ""  # "", "note" or "warning"


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    numeric: Sequence[bool] = ()  # right-aligned columns
    caption: str | None = None


@dataclass(frozen=True)
class Image:
    figure: plots.FigureFile


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: Sequence[str] = field(default_factory=list)


Block = Heading | Para | Table | Image | Code | Bullets


def _group_label(g: Group, groups: Sequence[Group]) -> str:
    return g.endpoint if len({x.phase for x in groups}) == 1 else f"{g.endpoint} ({g.phase})"


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%H:%M:%S")


def document(a: RunAnalysis, figures: Sequence[plots.FigureFile],
             comparison: Comparison | None = None) -> list[Block]:
    m = a.manifest
    blocks: list[Block] = [Heading(1, f"pooler-lab report: {scrub(a.run_id)}")]
    if comparison is not None:
        # what makes the two runs unlike comes before any number
        blocks += [Para(scrub(w), strong="Runs differ:", kind="warning")
                   for w in comparison.warnings]
    scenario = (m.get("scenario") or {}).get("name", "?")
    endpoints = ", ".join(dict.fromkeys(g.endpoint for g in a.groups))
    blocks.append(Para(
        f"Scenario {scrub(scenario)} against {endpoints}; started {scrub(m.get('started_at'))}, "
        f"ended {scrub(m.get('ended_at'))} ({_duration(m.get('duration_s'))}"
        + (f", {a.repeats} repeats" if a.repeats > 1 else "")
        + f"); {a.total_scheduled:,} arrivals scheduled, {a.total_requests:,} started."))
    network = network_text(m)
    if network:
        blocks.append(Para(scrub(network), strong="Network:"))
    distributed = an.distributed_text(m)
    if distributed:
        blocks.append(Para(scrub(distributed), strong="Load:"))
    if comparison is not None:
        blocks.append(Para(
            f"this run (A) against {scrub(comparison.b.run_id)} (B). Every figure draws B in the "
            "same colours, faint and dashed (bars faint with a dashed outline, points hollow "
            "with dashed whiskers), and its legend says what is drawn; the table \"What "
            "changed\" compares rates, never counts.", strong="Comparison:", kind="note"))
    blocks += [Para(scrub(w), strong="Warning:", kind="warning") for w in a.warnings]
    if comparison is not None:
        own = set(a.warnings)
        blocks += [Para(scrub(w), strong="Warning (run B):", kind="warning")
                   for w in comparison.b.warnings if w not in own]
    if a.skipped_lines:
        blocks.append(Para(f"{a.skipped_lines} unreadable line(s) of connections.jsonl were "
                           "skipped (a killed run leaves a torn last line).", kind="note"))
    if not a.connections:
        blocks.append(Para("this run has no connection samples (connections.jsonl): peaks and "
                           "the connections figures are empty.", strong="No connection samples:",
                           kind="warning"))
    blocks += _says(a, figures)
    blocks += _summary(a)
    blocks += _fault_table(a)
    blocks += _connect_cost(m)
    if comparison is not None:
        blocks += _changes(comparison)
    blocks += _figures(a, figures)
    blocks += _errors(a)
    blocks += _definitions(a)
    blocks += _manifest(a)
    return blocks


PATH_LABELS = ("client-db", "client-pooler", "pooler-db")


def network_text(m: dict[str, Any]) -> str | None:
    """The run's distance and TLS in one sentence: configured, then measured."""
    net = m.get("network")
    tls = m.get("tls") or {}
    if not isinstance(net, dict):
        return None
    configured = net.get("configured_ms") or {}
    measured = net.get("measured_ms") or {}
    floors = net.get("min_ms") or {}  # absent from manifests written before it
    preset = net.get("preset", "?")
    if any(configured.get(p) for p in PATH_LABELS):
        head = f"{preset}, round trips configured " + ", ".join(
            f"{p} {_ms_value(configured.get(p))}" for p in PATH_LABELS)
    else:
        head = f"{preset} (no round trip added between the hosts)"
    seen = [f"{p} {_ms_value(measured.get(p))}"
            + (f" (floor {_ms_value(floors[p])})"
               if isinstance(floors.get(p), int | float) and floors[p] != measured[p] else "")
            for p in PATH_LABELS if measured.get(p) is not None]
    text = head + ("; measured " + ", ".join(seen) if seen else "")
    if net.get("relay") == "always":
        text += "; relays on every path"
    if tls:
        text += (f". TLS: clients sslmode={tls.get('sslmode', '?')}, ssl_enforce "
                 f"{'on' if tls.get('ssl_enforce') else 'off'}")
    return text + "."


def _ms_value(value: Any) -> str:
    if not isinstance(value, int | float):
        return "?"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def _connect_cost(m: dict[str, Any]) -> list[Block]:
    cost = m.get("connect_cost")
    if not isinstance(cost, dict) or not cost.get("endpoints"):
        return []
    rows = []
    for name, per in cost["endpoints"].items():
        for mode in ("tls", "plain"):
            r = per.get(mode) or {}
            err = r.get("errors") or {}
            rows.append([name, f"{mode} ({r.get('sslmode', '?')})", fmt_int(r.get("n")),
                         fmt_ms(r.get("connect_p50_ms")), fmt_ms(r.get("connect_p95_ms")),
                         fmt_ms(r.get("invocation_p50_ms")), fmt_ms(r.get("invocation_p95_ms")),
                         scrub(f"{err['count']}x {err['class']}: {err['message']}")
                         if err else ""])
        extra = per.get("tls_extra_p50_ms")
        if isinstance(extra, int | float):
            rows[-2][-1] = rows[-2][-1] or f"TLS adds {fmt_ms(extra)} ms to the p50 connect"
    return [
        Heading(2, "What one connection costs", "connect-cost"),
        Para(f"A serverless invocation reduced to its price: connect, SELECT 1, close; "
             f"{fmt_int(cost.get('invocations'))} times per endpoint, with TLS "
             "(sslmode=verify-full) and without (sslmode=disable) interleaved, before the load. "
             "A client that connects per request pays this every time; a pooled app server "
             "pays it once."),
        Table(["endpoint", "TLS", "n", "connect p50 (ms)", "connect p95 (ms)",
               "invocation p50 (ms)", "invocation p95 (ms)", "note"], rows,
              numeric=[False, False, True, True, True, True, True, False]),
    ]


def _duration(value: Any) -> str:
    if not isinstance(value, int | float):
        return "duration unknown"
    return f"{value:,.0f} s" if value >= 10 else f"{value:.1f} s"


def _says(a: RunAnalysis, figures: Sequence[plots.FigureFile] = ()) -> list[Block]:
    blocks: list[Block] = [Heading(2, "What this run says", "says")]
    headlines = {f.scenario: f for f in figures if f.kind == "headline"}
    shown: set[str] = set()
    for rec in a.recommendations:
        title = f"{rec.scenario}: {rec.workload} workload" + (
            f" (phase {rec.phase})" if rec.phase != rec.workload else "")
        blocks.append(Heading(3, title))
        if rec.scenario in headlines and rec.scenario not in shown:
            blocks.append(Image(headlines[rec.scenario]))  # the one figure for the room
            shown.add(rec.scenario)
        if rec.choice is not None:
            label = an.LABELS.get(rec.choice, rec.choice)
            if rec.agrees and rec.choice == rec.default:
                verdict = "as the guide advises"
            elif rec.agrees:
                verdict = "one of the guide's choices"
            else:
                verdict = "not the guide's choice"
            blocks.append(Para(f"{rec.choice} ({label}), {verdict}.",
                               strong="Recommended connection method:"))
        else:
            blocks.append(Para("none of the measured endpoints served this load.",
                               strong="Recommended connection method:", kind="warning"))
        blocks.append(Bullets([scrub(s) for s in rec.sentences]))
        if rec.limits:
            blocks.append(Table(
                ["endpoint", "limit", "value", "measured", "what to do"],
                [[h.endpoint, h.limit, fmt_int(h.value), scrub(h.evidence), h.fix]
                 for h in rec.limits],
                numeric=[False, False, True, False, False]))
    for scenario, f in headlines.items():  # a scenario without a recommendation
        if scenario not in shown:
            blocks += [Heading(3, scenario), Image(f)]
    if any(g.faults for g in a.groups):
        blocks += [Heading(3, "Under the injected faults"), Bullets(fault_sentences(a)),
                   Para(FAULT_READING, kind="note")]
    return blocks


FAULT_READING = (
    "A serverless function opens a connection per invocation: while its endpoint is gone every "
    "invocation fails (connection_refused), and the first one after it is back succeeds; it "
    "never has to recover, but it retries nothing either. An app server's pool loses the "
    "connections it held (connection_lost for the requests in flight) and reconnects by itself "
    "with a backoff, so it comes back a little after the pooler does, without anyone redeploying "
    "it. A frozen host (pause) or a paused pool (pool-pause) fails nothing: requests wait, "
    "and their latency shows the fault.")


def _classes_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {cls}" for cls, n in counts.items())


def fault_sentences(a: RunAnalysis) -> list[str]:
    """One sentence per fault and group: what failed, and when it was whole again."""
    result = []
    for g in a.groups:
        label = _group_label(g, a.groups_of(g.scenario))
        for f in g.faults:
            where = f"{f.description} at {f.at_s:.1f} s" + (
                f" (repeat {f.repeat})" if a.repeats > 1 else "")
            if not f.injected:
                result.append(f"{g.scenario}, {label}: {where} could not be injected "
                              f"({scrub(f.answer)}).")
                continue
            if not f.failed and not f.not_started:
                slower = ""
                if f.recovered_s is not None and f.recovered_s >= 1.0:
                    slower = f"; its latency was back to normal {f.recovered_s:.1f} s after"
                result.append(f"{g.scenario}, {label}: {where}: nothing failed{slower}.")
                continue
            parts = []
            if f.failed_during:
                parts.append(f"{_classes_text(f.failed_during)} while it lasted")
            if f.failed_after:
                parts.append(f"{_classes_text(f.failed_after)} after it")
            if f.not_started:
                parts.append(f"{f.not_started:,} arrivals never started")
            back = (f"whole again {f.recovered_s:.1f} s after it began"
                    if f.recovered_s is not None else "not whole again before the segment ended")
            result.append(f"{g.scenario}, {label}: {where}: {'; '.join(parts)}; {back}.")
    return result


def _triple(values: tuple[float | None, float | None, float | None]) -> str:
    return " / ".join("-" if v is None else f"{v:.0f}" for v in values)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _fault_table(a: RunAnalysis) -> list[Block]:
    rows = []
    for g in a.groups:
        label = _group_label(g, a.groups_of(g.scenario))
        for f in g.faults:
            rows.append([scrub(f.fault), f"{g.scenario}: {label}", f"{f.in_effect_s:.1f} s",
                         _classes_text(f.failed_during) or "0",
                         _classes_text(f.failed_after) or "0", fmt_int(f.not_started),
                         _seconds(f.first_success_s), _seconds(f.recovered_s),
                         fmt_ms(f.pre_p95_ms), _triple(f.backends), _triple(f.clients)])
    if not rows:
        return []
    return [
        Heading(2, "Faults", "faults"),
        Para("Each fault was injected into every segment at the same time after its load "
             "started (faults.jsonl has what the engine answered). Failed during: requests it "
             "broke or refused while in effect; after: due once it had ended. First success: "
             "when the first request due once the fault was in effect (its action done and "
             "a request failed) succeeded; whole again: the first moment from which a second "
             "passed without a failure and with the p95 within 20% "
             "of the 10 s before the fault (both from the fault's start). Backends and clients: "
             "before (median of the 5 s before) / during (peak, once its action was done) / "
             "after (median)."),
        Table(["fault", "segment", "in effect", "failed during", "failed after", "not started",
               "first success", "whole again", "p95 before (ms)", "backends b/d/a",
               "clients b/d/a"], rows,
              numeric=[False, False, True, False, False, True, True, True, True, False, False]),
    ]


SUMMARY_LATENCY = ["total p50 (95% CI)", "total p95 (95% CI)", "total p99 (95% CI)",
                   "total max"]
SUMMARY_PARTS = [f"{metric} {p}" for metric in ("connect", "query")
                 for p in ("p50", "p95", "p99", "max")]


def _peak_backends(g: Group) -> str:
    """Peak backends, the dedicated pooler's auth_query logins apart: '18 + 2 auth'."""
    if g.peak_backends is None:
        return "-"
    if g.peak_auth_backends:
        return f"{g.peak_backends:,} + {g.peak_auth_backends:,} auth"
    return f"{g.peak_backends:,}"


def summary_rows(a: RunAnalysis, scenario: str) -> tuple[list[str], list[list[str]],
                                                         list[str], list[list[str]],
                                                         list[str], list[list[str]]]:
    """The three summary tables of a scenario, as (headers, rows) pairs: arrivals by outcome,
    total-time latency with its intervals, and the parts of it (connect, query).
    Every scheduled arrival is in one column: succeeded + failed + not started = scheduled."""
    groups = a.groups_of(scenario)
    seen = {c for g in groups for c in g.errors}
    classes = [c for c in a.error_classes if c in seen]
    load_headers = ["endpoint", "scheduled", "succeeded", "failed",
                    *[f"failed: {c}" for c in classes], "not started",
                    "requests/s (95% CI)", "peak backends", "peak waiting"]
    load_rows, latency_rows, part_rows = [], [], []
    for g in groups:
        label = _group_label(g, groups)
        load_rows.append([label, fmt_int(g.scheduled), fmt_share(g.ok, g.scheduled),
                          fmt_share(g.failed, g.scheduled),
                          *[fmt_share(g.errors.get(c, 0), g.scheduled) for c in classes],
                          fmt_share(g.not_started, g.scheduled),
                          fmt_interval(g.estimate("rps"), fmt_rate),
                          _peak_backends(g), fmt_int(g.peak_waiting)])
        latency_rows.append([label, *[fmt_interval(g.estimate(p)) for p in ("p50", "p95", "p99")],
                             fmt_ms(g.total.max)])
        part_rows.append([label, *[fmt_ms(getattr(getattr(g, metric), p))
                                   for metric in ("connect", "query")
                                   for p in ("p50", "p95", "p99", "max")]])
    return (load_headers, load_rows, ["endpoint", *SUMMARY_LATENCY], latency_rows,
            ["endpoint", *SUMMARY_PARTS], part_rows)


def _summary(a: RunAnalysis) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Summary", "summary")]
    for scenario in a.scenarios:
        blocks.append(Heading(3, scenario))
        load_h, load_r, lat_h, lat_r, part_h, part_r = summary_rows(a, scenario)
        blocks.append(Table(load_h, load_r, numeric=[False] + [True] * (len(load_h) - 1),
                            caption="Every scheduled arrival, by outcome: succeeded, failed "
                                    "(in all and by error class) or not started, each with "
                                    "its share of the scheduled; requests started per second "
                                    "of load time with its 95% interval; peaks from the "
                                    "connection samples while the endpoint ran (the dedicated "
                                    "pooler's own auth_query logins apart)"))
        blocks.append(Table(lat_h, lat_r, numeric=[False] + [True] * (len(lat_h) - 1),
                            caption="Total time in ms of successful requests, from the "
                                    "intended start (so time queued counts), with 95% "
                                    "intervals"))
        blocks.append(Table(part_h, part_r, numeric=[False] + [True] * (len(part_h) - 1),
                            caption="Its parts in ms, successful requests only: connect (a "
                                    "new connection or a pool checkout) and query (all "
                                    "queries; a session pooler's queue for a server "
                                    "connection shows here when each request connects)"))
    return blocks


def _changes(c: Comparison) -> list[Block]:
    blocks: list[Block] = [Heading(2, "What changed", "changes")]
    blocks.append(Para(f"A is this run ({scrub(c.a.run_id)}), B the --compare run "
                       f"({scrub(c.b.run_id)}). Rates only, never counts (runs of different "
                       "lengths have different counts). Each cell: A, then B and the change "
                       "from B to A; † marks a change where the two 95% intervals do not "
                       "overlap."))
    for scenario in c.a.scenarios:
        keys = list(dict.fromkeys(d.key for d in c.deltas if d.key[0] == scenario))
        if not keys:
            continue
        blocks.append(Heading(3, scenario))
        groups = c.a.groups_of(scenario)
        rows = []
        for key in keys:
            g = c.a.group(key)
            cells = [_group_label(g, groups)]
            for metric in an.DELTA_METRICS:
                d = next(x for x in c.deltas if x.key == key and x.metric == metric)
                mark = " †" if d.beyond_intervals else ""
                cells.append(f"{_delta_value(d.a, metric)} (B {_delta_value(d.b, metric)}, "
                             f"{fmt_change(d.change, d.ratio, metric)}{mark})")
            rows.append(cells)
        blocks.append(Table(["endpoint", *an.DELTA_METRICS], rows,
                            numeric=[False] + [True] * len(an.DELTA_METRICS)))
    if c.only_a or c.only_b:
        items = [f"only in A: {' / '.join(k)}" for k in c.only_a]
        items += [f"only in B: {' / '.join(k)}" for k in c.only_b]
        blocks.append(Bullets(items))
    if c.settings:
        blocks.append(Table(["setting (by meaning)", "A", "B"],
                            [[k, scrub(_value(va)), scrub(_value(vb))]
                             for k, va, vb in c.settings],
                            caption="Settings that differ between the runs, compared by "
                                    "meaning (a scenario's parameters whether the run had one "
                                    "scenario or several)"))
    else:
        blocks.append(Para("Both runs used the same settings, scenario parameters and versions."))
    return blocks


def _delta_value(value: float | None, metric: str) -> str:
    if metric == "requests/s":
        return fmt_rate(value)
    if _is_rate(metric):
        return fmt_pct(value)
    if metric.startswith("peak"):
        return fmt_int(value)
    return fmt_ms(value)


def _figures(a: RunAnalysis, figures: Sequence[plots.FigureFile]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Figures", "figures")]
    for scenario in a.scenarios:
        blocks.append(Heading(3, scenario))
        for f in figures:
            if f.scenario == scenario and f.kind != "headline":  # shown in "What this run says"
                blocks.append(Image(f))
    return blocks


def _errors(a: RunAnalysis) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Errors and gaps", "errors")]
    if a.error_samples:
        blocks.append(Table(
            ["scenario", "endpoint", "class", "count", "SQLSTATE", "most frequent message"],
            [[s.key[0], _key_label(a, s.key), s.error_class, fmt_int(s.count),
              s.sqlstate or "-", scrub(s.message or "-")] for s in a.error_samples],
            numeric=[False, False, False, True, False, False]))
    else:
        blocks.append(Para("No request failed."))
    if a.outages:
        several = a.repeats > 1
        blocks.append(Para(f"a target stopped answering the sampler ({an.OUTAGE_SAMPLES} or "
                           "more failed samples in a row) while an endpoint ran; failures "
                           "there count as connection refused or lost, never as pool size.",
                           strong="Outages:"))
        blocks.append(Bullets([scrub(f"{o.scenario} on {o.endpoint}"
                                     + (f" (repeat {o.repeat})" if several else "")
                                     + f": {o.describe()} ({o.error})") for o in a.outages]))
    gaps = []
    for series in a.connections.values():
        for start, end, error in _gap_runs(series):
            gaps.append([series.target, _utc(start), _utc(end), f"{end - start:.1f} s",
                         scrub(error)])
    if gaps:
        blocks.append(Table(["sampled target", "from (UTC)", "to (UTC)", "for", "error"], gaps,
                            numeric=[False, False, False, True, False],
                            caption="Connection samples that failed: gaps in the "
                                    "connections figure"))
    return blocks


def _key_label(a: RunAnalysis, key: an.Key) -> str:
    one_phase = len({g.phase for g in a.groups_of(key[0])}) == 1
    return key[2] if one_phase else f"{key[2]} ({key[1]})"


def _gap_runs(series: an.Series) -> list[tuple[float, float, str]]:
    runs = []
    failures = dict(series.failures)
    i, n = 0, len(series.t)
    while i < n:
        if not series.ok[i]:
            j = i
            while j + 1 < n and not series.ok[j + 1]:
                j += 1
            # the gap lasts until the next good sample (or the last failed one)
            end = series.t[j + 1] if j + 1 < n else series.t[j]
            runs.append((float(series.t[i]), float(end),
                         failures.get(series.t[i], "sample failed")))
            i = j + 1
        else:
            i += 1
    return runs


def _definitions(a: RunAnalysis) -> list[Block]:
    threshold = next((r.threshold for r in a.recommendations), an.THRESHOLD)
    items = [
        "Every number comes from the raw per-request samples (requests.parquet), never from "
        "Locust's rounded statistics, and from the connection samples (connections.jsonl).",
        "Every scheduled arrival has one outcome: succeeded, failed (by error class) or not "
        "started (the load never began it: every concurrency slot was busy, or the segment "
        "ended first; not a failure, but work not done). Scheduled = succeeded + failed + not "
        "started, per segment; shares and rates are of the scheduled arrivals, and an arrival "
        "counts in the segment it was scheduled in.",
        "Latency percentiles use successful requests only (linear interpolation, as "
        "numpy.percentile); failed requests are counted by error class instead.",
        "total time runs from the request's intended start (the arrival schedule) to its end, "
        "so time spent queued behind a stall counts (no coordinated omission); connect time is "
        "a new connection, a pool checkout, or 0 for a held connection; a scenario's "
        "client-side work (hold_ms) is part of total time, drawn as a reference line.",
        "requests/s is the requests started over the time the load ran (summed over repeats).",
        "Peak backends: most Postgres client backends seen by the sampler while the endpoint "
        "ran (all origins), without the dedicated pooler's own auth_query logins (role "
        "pgbouncer), which are counted apart (\"+ N auth\"); peak waiting: most clients queued "
        "in that endpoint's pooler.",
        f"An outage is {an.OUTAGE_SAMPLES} or more failed connection samples in a row of "
        "Postgres or of the endpoint's pooler; requests failing in it are connection refused "
        "or lost, never a pool-size limit.",
    ]
    if a.ci_method:
        items.append(a.ci_method)
    items.append(
        "The recommendation starts from the guide's choice among the eligible endpoints (no "
        "outage, no arrival left not started, at most "
        f"{fmt_pct(an.HEALTHY_ERROR_RATE)} failed, no documented limit reached) and departs "
        f"from it only for an endpoint whose p95 total time is lower by more than "
        f"{100 * threshold:.0f}% with its whole 95% interval below the guide's choice's; "
        "otherwise there is no meaningful difference and the guide's choice stands.")
    return [Heading(2, "How the numbers are made", "definitions"), Bullets(items)]


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value(v)}" for k, v in value.items())
    return str(value)


def _segment_label(s: dict) -> str:
    label = f"{_value(s.get('scenario'))} -> {_value(s.get('endpoint'))}" \
        if s.get("scenario") else _value(s.get("endpoint"))
    if isinstance(s.get("repeat"), int) and s["repeat"] > 1:
        label += f" (repeat {s['repeat']})"
    return label


def _manifest(a: RunAnalysis) -> list[Block]:
    m = a.manifest
    blocks: list[Block] = [Heading(2, "Manifest", "manifest")]
    git = m.get("git") or {}
    commit = git.get("commit")
    scenario = m.get("scenario") or {}
    rows = [
        ["run", m.get("run_id")],
        ["started / ended (UTC)", f"{_value(m.get('started_at'))} / {_value(m.get('ended_at'))}"],
        ["duration", _duration(m.get("duration_s"))],
        ["interrupted", m.get("interrupted")],
        ["pooler-lab", m.get("lab_version")],
        ["git commit", (f"{commit[:12]}{' (dirty)' if git.get('dirty') else ''}"
                        if isinstance(commit, str) else None)],
        ["scenario", f"{_value(scenario.get('name'))} ({_value(scenario.get('file'))}), "
                     f"seed {_value(scenario.get('seed'))}"],
        ["scenario parameters", scenario.get("params")],
        ["load", m.get("load")],
        ["lab settings", m.get("lab") if m.get("lab") is not None else "none (--target run)"],
    ]
    blocks.append(Table(["what", "value"], [[k, scrub(_value(v))] for k, v in rows]))
    endpoints = m.get("endpoints") or {}
    if endpoints:
        blocks.append(Table(
            ["endpoint", "connection string (masked)", "pool mode", "pooler", "user"],
            [[name, scrub(_value(e.get("uri"))), _value(e.get("pool_mode")),
              _value(e.get("pooler")), _value(e.get("user"))]
             for name, e in endpoints.items() if isinstance(e, dict)],
            caption="Endpoints as the run used them"))
    segments = [s for s in m.get("segments") or [] if isinstance(s, dict)]
    if segments:
        blocks.append(Table(
            ["segment", "started", "ended", "spike windows", "unserved", "Locust exit",
             "interrupted"],
            [[_segment_label(s), _value(s.get("started_at")), _value(s.get("ended_at")),
              str(len(s.get("spikes") or [])), _value(s.get("unserved")),
              _value(s.get("locust_exit")), _value(s.get("interrupted"))] for s in segments],
            numeric=[False, False, False, True, True, True, False],
            caption="Segments in run order (unserved: arrivals still queued when the load "
                    "stopped)"))
    components = m.get("components") or {}
    host = m.get("host") or {}
    versions = [[k, scrub(_value(v))] for k, v in components.items() if k != "image"]
    image = components.get("image")
    if isinstance(image, dict):
        versions.append(["image", scrub(_value(image))])
    versions += [[f"host {k}", _value(v) if k != "memory_bytes" or not isinstance(v, int)
                  else f"{v / 2**30:.1f} GiB"] for k, v in host.items()]
    if versions:
        blocks.append(Table(["component", "version"], versions, caption="Versions and host"))
    reproduce = m.get("reproduce")
    if not isinstance(reproduce, str) or not reproduce:
        command = m.get("command")
        reproduce = shlex.join(map(str, command)) if isinstance(command, list) else None
    if reproduce:
        blocks.append(Para("To reproduce:"))
        blocks.append(Code(scrub(reproduce)))
    return blocks


# -- Markdown ----------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block], base: Path) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Para):
            out.append(f"**{block.strong}** {block.text}" if block.strong else block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Code):
            out.append(f"```\n{block.text}\n```")
        elif isinstance(block, Image):
            f = block.figure
            png = f.png.relative_to(base).as_posix()
            svg = f.svg.relative_to(base).as_posix()
            out.append(f"![{f.title}]({png})\n\n*{f.title}.* {f.caption} ([SVG]({svg}))")
        elif isinstance(block, Table):
            align = ["---:" if (block.numeric[i] if i < len(block.numeric) else False)
                     else "---" for i in range(len(block.headers))]
            lines = ["| " + " | ".join(_md_cell(h) for h in block.headers) + " |",
                     "| " + " | ".join(align) + " |"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            if block.caption:
                lines.append(f"\n*{block.caption}.*")
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


# -- HTML --------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 2rem auto; max-width: 1400px; padding: 0 1.5rem; color: #1d1d1f;
       line-height: 1.45; font-size: 17px; }
h1 { font-size: 2rem; margin-bottom: .3rem; }
h2 { margin-top: 2.6rem; border-bottom: 2px solid #e3e3e3; padding-bottom: .3rem; }
h3 { margin-top: 1.8rem; }
table { border-collapse: collapse; margin: .8rem 0 1.4rem; font-size: 15px; }
th, td { padding: .35rem .7rem; border-bottom: 1px solid #e6e6e6; vertical-align: top; }
th { background: #f5f5f7; text-align: left; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
caption { caption-side: bottom; text-align: left; color: #555; font-size: 14px;
          padding-top: .4rem; }
.scroll { overflow-x: auto; }
figure { margin: 1.2rem 0 2.2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 15px; margin-top: .4rem; }
pre { background: #f5f5f7; padding: .8rem 1rem; overflow-x: auto; font-size: 14px; }
.note { background: #eef6ff; border-left: 4px solid #0072B2; padding: .5rem .8rem; }
.warning { background: #fff4e5; border-left: 4px solid #D55E00; padding: .5rem .8rem; }
li { margin: .25rem 0; }
"""


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def to_html(blocks: Sequence[Block], title: str) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>"]
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f' id="{e(block.anchor)}"' if block.anchor else ""
            out.append(f"<h{block.level}{anchor}>{e(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            cls = f' class="{block.kind}"' if block.kind else ""
            lead = f"<strong>{e(block.strong)}</strong> " if block.strong else ""
            out.append(f"<p{cls}>{lead}{e(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Code):
            out.append(f"<pre><code>{e(block.text)}</code></pre>")
        elif isinstance(block, Image):
            f = block.figure
            data = f.png.read_bytes()
            width, height = png_size(data)
            # the PNG's own size: shown 1:1, only ever scaled down to fit (max-width)
            src = f"data:image/png;base64,{base64.b64encode(data).decode('ascii')}"
            out.append(f'<figure><img src="{src}" width="{width}" height="{height}" '
                       f'alt="{e(f.title)}"><figcaption><strong>{e(f.title)}.</strong> '
                       f"{e(f.caption)}</figcaption></figure>")
        elif isinstance(block, Table):
            def cell(tag: str, text: str, i: int, numeric: Sequence[bool] = block.numeric) -> str:
                num = ' class="num"' if i < len(numeric) and numeric[i] else ""
                return f"<{tag}{num}>{e(str(text))}</{tag}>"

            rows = ["<tr>" + "".join(cell("td", c, i) for i, c in enumerate(r)) + "</tr>"
                    for r in block.rows]
            head = "".join(cell("th", h, i) for i, h in enumerate(block.headers))
            caption = f"<caption>{e(block.caption)}</caption>" if block.caption else ""
            out.append(f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead>'
                       f"<tbody>{''.join(rows)}</tbody></table></div>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
