"""The report of a sweep directory: ``report.html`` (self-contained), ``report.md`` and
``figures/`` in the sweep directory, made with the run report's blocks and writers
(``lab.report``).

Order: the capacity answer for the objective, what the curves say (knees in words), warnings,
the curves, the ratios against the baseline endpoint with the tie threshold, every point's
numbers, the points that failed, how the numbers are made, and the sweep's commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lab import analysis as an
from lab import plots
from lab.report import (
    Block,
    Bullets,
    Code,
    Heading,
    Image,
    Para,
    ReportPaths,
    Table,
    fmt_int,
    fmt_interval,
    fmt_pct,
    scrub,
    to_html,
    to_markdown,
)
from lab.sweep import analysis as sa
from lab.sweep import plots as sweepplots
from lab.sweep.plan import duration_text, value_text


def build_sweep_report(sweep_dir: Path | str, objective: str | None = None,
                       baseline: str | None = None) -> ReportPaths:
    """Analyse every finished point, draw the curves, write both documents."""
    from lab.state import atomic_write

    sweep_dir = Path(sweep_dir)
    a = sa.analyze(sweep_dir, objective, baseline)
    figures = sweepplots.render(a, sweep_dir / "figures")
    blocks = document(a, figures)
    html_path, md_path = sweep_dir / "report.html", sweep_dir / "report.md"
    atomic_write(html_path, to_html(blocks, title=f"pooler-lab sweep: {a.sweep_id}"), 0o644)
    atomic_write(md_path, to_markdown(blocks, base=sweep_dir), 0o644)
    return ReportPaths(sweep_dir, html_path, md_path,
                       tuple(p for f in figures for p in (f.png, f.svg)))


def _settings(p: sa.PointResult) -> str:
    return ", ".join(f"{k.removeprefix('P.')} {value_text(v)}"
                     for k, v in p.values.items()) or "-"


def _in_axis_order(a: sa.SweepAnalysis, points: Sequence[sa.PointResult]
                   ) -> list[sa.PointResult]:
    """Points by their values in --vary order (the run order puts the lab's current settings
    first): tables read like the curves."""
    def key(p: sa.PointResult) -> tuple:
        return tuple(ax.values.index(p.values[ax.key]) if p.values.get(ax.key) in ax.values
                     else len(ax.values) for ax in a.plan.axes)

    return sorted(points, key=key)


def document(a: sa.SweepAnalysis, figures: Sequence[plots.FigureFile]) -> list[Block]:
    doc, plan = a.doc, a.plan
    c = {s: sum(1 for p in a.points if p.status == s) for s in ("done", "failed")}
    swept = "; ".join(f"{ax.name} {', '.join(map(value_text, ax.values))}" for ax in plan.axes)
    blocks: list[Block] = [Heading(1, f"pooler-lab sweep: {scrub(a.sweep_id)}")]
    blocks.append(Para(
        f"Scenario {scrub(plan.scenario)} on {', '.join(plan.endpoints)}"
        + (f" (preset {plan.preset})" if plan.preset else "")
        + f"; swept {scrub(swept)}: {len(a.points)} points, {c['done']} measured"
        + (f", {c['failed']} failed" if c["failed"] else "")
        + f". Every point ran {plan.duration_s:g} s per endpoint with seed {plan.seed}"
        + (f", {plan.repeat} repeats" if plan.repeat > 1 else "")
        + f"; started {scrub(doc.get('created_at'))}, last written "
          f"{scrub(doc.get('updated_at'))}."))
    if a.objective is not None and a.capacity:
        blocks.append(Heading(2, f"The capacity answer: {a.objective.text}", "capacity"))
        lead = ("The smallest lab settings swept that meet the objective, per workload and "
                "endpoint" if any(ax.kind == "lab" and len(ax.values) > 1 for ax in plan.axes)
                else "How far each endpoint meets the objective along the swept load")
        blocks.append(Para(f"{lead} (errors count failed arrivals and arrivals never "
                           "started; every condition must hold for the measured value)."))
        blocks.append(Bullets([scrub(x.sentence) for x in a.capacity]))
    if a.knees:
        blocks.append(Heading(2, "What the curves say", "says"))
        blocks.append(Bullets([scrub(k) for k in a.knees]))
    blocks += [Para(scrub(w), strong="Warning:", kind="warning") for w in a.warnings]
    blocks.append(Heading(2, "Curves", "curves"))
    blocks += [Image(f) for f in figures]
    blocks += _ratios(a)
    blocks += _points(a)
    failed = [p for p in a.points if p.status == "failed"]
    if failed:
        blocks.append(Heading(2, "Points that failed", "failed"))
        blocks.append(Bullets([f"{p.id} ({scrub(_settings(p))}): {scrub(p.reason)}"
                               for p in failed]))
    blocks += _definitions(a)
    blocks.append(Heading(2, "The sweep", "sweep"))
    blocks.append(Para("the same sweep again (the lab is brought up with each point's "
                       "settings; it keeps the last point's settings afterwards):",
                       strong="Reproduce:"))
    blocks.append(Code(scrub(doc.get("reproduce", ""))))
    blocks.append(Para(f"lab sweep --resume {scrub(a.sweep_dir)} runs the points that have "
                       "not finished; lab report on a point's run directory gives its own "
                       "report.", strong="Resume:"))
    actual = sum(float(e.get("duration_s") or 0) for e in doc.get("points", []))
    restarts = sum(1 for e in doc.get("points", []) if e.get("restarted"))
    blocks.append(Para(f"estimated {duration_text(float(doc.get('estimate_s') or 0))}; the "
                       f"points took {duration_text(actual)} with {restarts} lab restart(s) "
                       f"({doc.get('restarts_planned', 0)} planned).", strong="Time:"))
    return blocks


def _ratios(a: sa.SweepAnalysis) -> list[Block]:
    if not a.ratios:
        return []
    rows = []
    by_key: dict[tuple[str, str, str], dict[str, sa.Ratio]] = {}
    order = {p.id: i for i, p in enumerate(_in_axis_order(a, a.points))}
    for r in sorted(a.ratios, key=lambda r: order[r.point.id]):
        by_key.setdefault((r.point.id, r.endpoint, r.phase), {})[r.metric] = r
    phases = {r.phase for r in a.ratios}
    for (_, endpoint, phase), metrics in by_key.items():
        any_r = next(iter(metrics.values()))
        name = endpoint if len(phases) == 1 else f"{endpoint} ({phase})"
        rows.append([scrub(_settings(any_r.point)), name,
                     *(sa.ratio_text(metrics[m].value, metrics[m].tie) if m in metrics
                       else "-" for m in ("p50", "p99")),
                     f"{fmt_pct(any_r.endpoint_errors)} vs {fmt_pct(any_r.baseline_errors)}"])
    return [Heading(2, f"Ratios against {a.baseline}", "ratios"),
            Table(["point", "endpoint", f"p50 / {a.baseline}", f"p99 / {a.baseline}",
                   f"failed (vs {a.baseline})"], rows, numeric=[False, False, True, True, True],
                  caption=f"Each endpoint's total-time percentile divided by {a.baseline}'s at "
                          f"the same point; below 1 is faster. A ratio within "
                          f"{100 * sa.TIE_THRESHOLD:g}% of 1, or whose 95% interval overlaps "
                          f"{a.baseline}'s, is a tie")]


def _points(a: sa.SweepAnalysis) -> list[Block]:
    rows = []
    for p in _in_axis_order(a, a.points):
        if p.analysis is None:
            rows.append([p.id, scrub(_settings(p)), "-", p.status, *["-"] * 8])
            continue
        for g in p.analysis.groups:
            name = g.endpoint if len({x.phase for x in p.analysis.groups}) == 1 \
                else f"{g.endpoint} ({g.phase})"
            worst = max(g.errors, key=lambda k: g.errors[k]) if g.errors else ""
            rows.append([p.id, scrub(_settings(p)), name, p.status, fmt_int(g.scheduled),
                         f"{fmt_pct(g.error_rate)}" + (f" ({worst})" if worst else ""),
                         fmt_pct(g.not_started_rate),
                         fmt_interval(g.estimate("p50")), fmt_interval(g.estimate("p95")),
                         fmt_interval(g.estimate("p99")), fmt_int(g.peak_backends),
                         fmt_int(g.peak_waiting)])
    return [Heading(2, "Every point", "points"),
            Table(["point", "settings", "endpoint", "status", "scheduled", "failed",
                   "not started", "p50 ms (95% CI)", "p95 ms (95% CI)", "p99 ms (95% CI)",
                   "peak backends", "peak waiting"], rows,
                  numeric=[False] * 4 + [True] * 8,
                  caption="Each point's numbers as its own run report has them "
                          "(lab report SWEEP_DIR/<point>)")]


def _definitions(a: sa.SweepAnalysis) -> list[Block]:
    facets = ", ".join(f.name for f in a.facets)
    return [Heading(2, "How the numbers are made", "how"), Bullets([
        "Every point is one lab run into this directory (docs/formats.md), analysed exactly as "
        "its own report: every scheduled arrival succeeded, failed (by class) or never started; "
        "latency percentiles over successful requests, from the intended start.",
        f"The x axis is {a.x.name}" + (f"; each value of {facets} has a column of panels"
                                      if facets else "") + ". Lab settings change between "
        "points by bringing the lab up again (only when they change); load values vary "
        "within one lab; every point uses the same seed.",
        f"An endpoint serves a point when at most {100 * sa.HEALTHY_ERROR_RATE:g}% of its "
        "arrivals failed and at most as many never started (those due in the last second of "
        "the load excepted). \"Refuses from X\": the first X where more than "
        f"{100 * sa.HEALTHY_ERROR_RATE:g}% failed, named by the commonest class. \"p99 bends "
        f"at X\": the first X whose p99 is more than {sa.BEND_FACTOR:g} times the p99 at the "
        "first value, with the two 95% intervals apart.",
        f"Ratios divide by {a.baseline}'s value at the same point; within "
        f"{100 * sa.TIE_THRESHOLD:g}% of 1, or with overlapping 95% intervals, they are a "
        "tie.",
        "The capacity answer: with lab settings swept, the smallest combination (tier in "
        "Supabase's order, then max_connections, pool_size, max_client_conn, then the other "
        "settings) whose point meets every condition of the objective, per workload and "
        "endpoint; with load only, the largest load met with every smaller one met too. "
        "errors = (failed + never started) / scheduled.",
        an.ci_method(max((p.analysis.repeats for p in a.finished), default=1)),
    ])]
