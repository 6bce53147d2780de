"""Stage 7 of the pipeline: the figures of a report, as PNG and SVG.

``render(analysis, out_dir, compare=None)`` draws five figures per scenario from a
``RunAnalysis`` (and overlays a second run for ``--compare``):

1. latency over time: p50/p95/p99 of total time in one-second windows, spike windows shaded;
2. latency distribution: percentile plots of connect, query and total time, log axes;
3. connections over time: clients against Postgres backends, with max_connections and the pool
   size as limit lines (the picture of multiplexing); failed samples are gaps, shaded;
4. throughput and errors over time, errors stacked by class;
5. the endpoints side by side: latency percentiles, error rate by class, peak backends.

Matplotlib's object API with the Agg canvas (no pyplot, no global state), sized for a
projector: large type, thick lines, and one colour per endpoint in every figure. The other run
of a comparison is drawn in the same colours, fainter and dashed.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from lab.analysis import Group, RunAnalysis, Series

ENDPOINT_COLORS = {  # Okabe-Ito: tells apart for colour-blind viewers too
    "direct": "#0072B2",
    "session": "#E69F00",
    "transaction": "#009E73",
    "dedicated": "#CC79A7",
    "target": "#56B4E9",
}
EXTRA_COLORS = ("#332288", "#117733", "#882255", "#999933")
ERROR_COLORS = {
    "too_many_clients": "#D55E00",
    "max_client_conn": "#882255",
    "pool_timeout": "#F0B400",
    "prepared_statement": "#8C564B",
    "authentication": "#17BECF",
    "network": "#555555",
    "other": "#AAAAAA",
}
LIMIT_COLORS = {"max_connections": "#C00000", "pool_size": "#7A4F00",
                "max_client_conn": "#555555"}
PERCENTILE_STYLES = (("p50", "-", 2.6), ("p95", "--", 2.2), ("p99", ":", 2.4))
SPIKE_COLOR = "#9E9E9E"
GAP_COLOR = "#FF8A80"
OTHER_ALPHA = 0.45  # the --compare run
STYLE = {
    "font.size": 15,
    "axes.titlesize": 17,
    "axes.titleweight": "bold",
    "axes.labelsize": 15,
    "xtick.labelsize": 13,
    "ytick.labelsize": 13,
    "legend.fontsize": 13,
    "figure.titlesize": 20,
    "figure.titleweight": "bold",
    "lines.linewidth": 2.4,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "pooler-lab",  # stable ids: the same run draws the same SVG
    "svg.fonttype": "none",  # text stays text (the viewer's sans-serif): small, searchable
    "axes.formatter.use_mathtext": False,
    "path.simplify": True,
}
DPI = 100
TOP_IN = 1.75  # inches above the panels: the title and a two-row legend
PANEL_W, PANEL_H = 8.0, 4.4


@dataclass(frozen=True)
class FigureFile:
    name: str  # file stem under figures/
    kind: str  # latency-over-time, latency-distribution, connections, throughput-errors, ...
    scenario: str
    title: str
    caption: str
    png: Path
    svg: Path


def color(endpoint: str) -> str:
    if endpoint in ENDPOINT_COLORS:
        return ENDPOINT_COLORS[endpoint]
    return EXTRA_COLORS[sum(map(ord, endpoint)) % len(EXTRA_COLORS)]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run"


def render(analysis: RunAnalysis, out_dir: Path | str, compare: RunAnalysis | None = None,
           *, jobs: int | None = None) -> list[FigureFile]:
    """Draw every figure into ``out_dir`` (PNG and SVG each); return them in report order.

    ``jobs`` processes draw them side by side (default: one per core, at most four); with 1
    they are drawn in this process. Drawing is most of a report's time, and every figure is
    independent of the others.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = [(scenario, kind) for scenario in analysis.scenarios for kind, *_ in _FIGURES]
    jobs = min(len(tasks), os.cpu_count() or 1, MAX_JOBS) if jobs is None else max(1, jobs)
    if jobs == 1:
        _init(analysis, compare, out_dir)
        try:
            return [_draw(task) for task in tasks]
        finally:
            _init(None, None, None)
    context = multiprocessing.get_context(_start_method())
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init,
                             initargs=(analysis, compare, out_dir)) as pool:
        return list(pool.map(_draw, tasks))


MAX_JOBS = 4
_STATE: dict[str, object] = {}


def _start_method() -> str:
    """fork where it is safe and cheap (Linux, no other threads running: the workers inherit
    matplotlib already imported); spawn elsewhere."""
    if sys.platform == "linux" and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _init(analysis: RunAnalysis | None, compare: RunAnalysis | None,
          out_dir: Path | None) -> None:
    _STATE.update(analysis=analysis, compare=compare, out_dir=out_dir)


def _draw(task: tuple[str, str]) -> FigureFile:
    scenario, kind = task
    analysis: RunAnalysis = _STATE["analysis"]  # type: ignore[assignment]
    compare: RunAnalysis | None = _STATE["compare"]  # type: ignore[assignment]
    out_dir: Path = _STATE["out_dir"]  # type: ignore[assignment]
    _kind, draw, title, caption = next(f for f in _FIGURES if f[0] == kind)
    groups = analysis.groups_of(scenario)
    others = {g.key: compare.group(g.key) for g in groups} if compare else {}
    with matplotlib.rc_context(STYLE):
        fig = draw(analysis, groups, others, compare)
        name = f"{kind}-{slug(scenario)}"
        png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
        fig.suptitle(f"{title}: {scenario}", y=1 - 0.08 / fig.get_figheight(), va="top")
        fig.savefig(png, format="png", dpi=DPI)
        fig.savefig(svg, format="svg", metadata={"Date": None})
    return FigureFile(name, kind, scenario, f"{title}: {scenario}", caption, png, svg)


# -- layout helpers ----------------------------------------------------------------------------


def _figure(n: int, *, sharex: bool = True, sharey: bool = False, ncols: int | None = None,
            width: float | None = None, panel_h: float = PANEL_H) -> tuple[Figure, list]:
    ncols = ncols or (1 if n == 1 else 2)
    nrows = math.ceil(n / ncols)
    height = panel_h * nrows + 1.6
    width = width or PANEL_W * ncols
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    # fixed margins (in inches, turned into fractions): constrained layout measures every
    # label twice per save and was most of the drawing time
    fig.subplots_adjust(left=1.1 / width, right=1 - 0.3 / width, top=1 - TOP_IN / height,
                        bottom=1.0 / height, hspace=0.75 / panel_h, wspace=0.22)
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _log_axis(axis) -> None:
    """A log axis labelled 1, 2, 5, 10, 20, 50...: plain numbers, no mathtext."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(_plain))
    axis.set_minor_formatter(NullFormatter())


def _plain(value: float, _pos=None) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def _label(group: Group, groups: Sequence[Group]) -> str:
    phases = {g.phase for g in groups}
    return group.endpoint if len(phases) == 1 else f"{group.endpoint} · {group.phase}"


def _shade_spikes(ax, group: Group) -> None:
    for a, b in group.spikes:
        ax.axvspan(a, b, color=SPIKE_COLOR, alpha=0.18, linewidth=0, zorder=0)


def _legend(fig: Figure, handles: list, ncol: int | None = None) -> None:
    if handles:
        # below the title, above the panels (the layout leaves TOP_IN for both)
        fig.legend(handles=handles, loc="upper center",
                   bbox_to_anchor=(0.5, 1 - 0.55 / fig.get_figheight()),
                   ncol=ncol or min(len(handles), 6), frameon=False)


def _run_handles(analysis: RunAnalysis, compare: RunAnalysis | None,
                 dashed: bool = True) -> list:
    """Legend entries telling the two runs apart: B is fainter (and dashed where line styles
    do not already mean something)."""
    if compare is None:
        return []
    return [Line2D([], [], color="black", label=f"A: {analysis.run_id}"),
            Line2D([], [], color="black", alpha=OTHER_ALPHA,
                   linestyle=(0, (4, 2)) if dashed else "-", label=f"B: {compare.run_id}")]


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#666666")


# -- 1. latency over time ----------------------------------------------------------------------


def _latency_over_time(analysis, groups, others, compare) -> Figure:
    fig, axes = _figure(len(groups), sharey=True)
    for ax, g in zip(axes, groups, strict=True):
        _shade_spikes(ax, g)
        drawn = False
        for run, alpha, lw_scale in ((g, 1.0, 1.0), (others.get(g.key), OTHER_ALPHA, 0.75)):
            if run is None:
                continue
            w = run.windows
            for name, style, width in PERCENTILE_STYLES:
                values = getattr(w, name)
                if np.isfinite(values).any():
                    ax.plot(w.t + 0.5, values, linestyle=style, color=color(g.endpoint),
                            linewidth=width * lw_scale, alpha=alpha)
                    drawn = True
        ax.set_title(_label(g, groups), color=color(g.endpoint))
        if drawn:
            ax.set_yscale("log")
            _log_axis(ax.yaxis)
        else:
            _no_data(ax, "no successful requests")
        ax.set_ylabel("total time (ms)")
    for ax in axes[-2:]:
        ax.set_xlabel("seconds since the segment started (by intended start)")
    handles = [Line2D([], [], color="black", linestyle=s, linewidth=w, label=n)
               for n, s, w in PERCENTILE_STYLES]
    if any(g.spikes for g in groups):
        handles.append(Patch(color=SPIKE_COLOR, alpha=0.35, label="spike window"))
    _legend(fig, handles + _run_handles(analysis, compare, dashed=False))
    return fig


# -- 2. latency distribution -------------------------------------------------------------------

NINES_TICKS = (2.0, 10.0, 100.0, 1e3, 1e4, 1e5)
NINES_LABELS = ("50%", "90%", "99%", "99.9%", "99.99%", "99.999%")


def _latency_distribution(analysis, groups, others, compare) -> Figure:
    metrics = (("connect", "connect time"), ("query", "query time"), ("total", "total time"))
    fig, axes = _figure(3, sharex=True, ncols=3, width=PANEL_W * 2, panel_h=PANEL_H * 1.25)
    for ax, (metric, title) in zip(axes, metrics, strict=True):
        drawn = False
        for g in groups:
            for run, alpha, style in ((g, 1.0, "-"), (others.get(g.key), OTHER_ALPHA, "--")):
                if run is None:
                    continue
                q, values = run.distribution[metric]
                keep = values > 0  # a held connection's connect time is 0: no place on a log axis
                if keep.sum() < 2:
                    continue
                ax.plot(1.0 / (1.0 - q[keep]), values[keep], color=color(g.endpoint),
                        linestyle=style, alpha=alpha)
                drawn = True
        ax.set_title(title)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(NINES_TICKS))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(
            lambda x, _pos: NINES_LABELS[NINES_TICKS.index(x)] if x in NINES_TICKS else ""))
        ax.set_xlabel("percentile")
        if drawn:
            ax.set_yscale("log")
            _log_axis(ax.yaxis)
        else:
            _no_data(ax, "no values above 0")
    axes[0].set_ylabel("ms (successful requests)")
    handles = [Line2D([], [], color=color(g.endpoint), label=_label(g, groups)) for g in groups]
    _legend(fig, handles + _run_handles(analysis, compare))
    return fig


# -- 3. connections over time ------------------------------------------------------------------


def _with_gaps(series: Series, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Break the line where samples are missing, not just failed: a time step over three
    sampling intervals gets a NaN point."""
    t = series.t
    if len(t) < 3:
        return t, values
    step = float(np.median(np.diff(t)))
    breaks = np.nonzero(np.diff(t) > 3 * step)[0]
    if len(breaks) == 0:
        return t, values
    return (np.insert(t, breaks + 1, t[breaks] + step),
            np.insert(values, breaks + 1, np.nan))


def _gap_spans(series: Series) -> list[tuple[float, float]]:
    spans = []
    failed = ~series.ok
    i, n = 0, len(failed)
    while i < n:
        if failed[i]:
            j = i
            while j + 1 < n and failed[j + 1]:
                j += 1
            end = series.t[j + 1] if j + 1 < n else series.t[j]
            spans.append((float(series.t[i]), float(end)))
            i = j + 1
        else:
            i += 1
    return spans


def _connection_lines(g: Group, run: RunAnalysis) -> list[tuple[str, Series, str, str, dict]]:
    """(label, series, value name, colour, style) of what a panel draws for a group."""
    lines = []
    postgres = run.connections.get("postgres")
    bouncer = run.connections.get(g.endpoint)
    c = color(g.endpoint)
    if bouncer is not None and bouncer.kind == "pgbouncer":
        lines.append(("clients", bouncer, "clients", c, {"linewidth": 3.2}))
        lines.append(("pooler server connections", bouncer, "servers", c, {"linestyle": "--"}))
        lines.append(("waiting clients", bouncer, "waiting", c,
                      {"linestyle": ":", "linewidth": 2.0}))
    elif postgres is not None and g.endpoint == "direct":
        lines.append(("clients", postgres, "direct", c, {"linewidth": 3.2}))
    if postgres is not None:
        # thinner and on top: where every client is a backend (direct) both lines still show
        lines.append(("Postgres backends", postgres, "backends", "#222222", {"linewidth": 1.6}))
    return lines


def _connections(analysis, groups, others, compare) -> Figure:
    fig, axes = _figure(len(groups), sharex=False, sharey=True)
    handles: dict[str, object] = {}
    peak = 1.0
    for ax, g in zip(axes, groups, strict=True):
        _shade_spikes(ax, g)
        lo, hi = g.first - g.t0 - 2, g.last - g.t0 + 2
        for run_group, run, alpha, scale in ((g, analysis, 1.0, 1.0),
                                             (others.get(g.key), compare, OTHER_ALPHA, 0.75)):
            if run_group is None or run is None:
                continue
            lines = _connection_lines(run_group, run)
            shown = set()
            for label, series, name, line_color, style in lines:
                inside = (series.t >= run_group.first - 2) & (series.t <= run_group.last + 2)
                if not inside.any():
                    continue
                sub = Series(series.target, series.kind, series.t[inside], series.ok[inside],
                             {name: series.values[name][inside]}, series.limits)
                t, values = _with_gaps(sub, sub.values[name])
                width = style.get("linewidth", 2.4) * scale
                (line,) = ax.plot(t - run_group.t0, values, color=line_color, alpha=alpha,
                                  linestyle=style.get("linestyle", "-"), linewidth=width)
                if np.isfinite(values).any():
                    peak = max(peak, float(np.nanmax(values)))
                if run is analysis:
                    handles.setdefault(label, Line2D([], [], color="black" if label.startswith(
                        "Postgres") else "#666666", linestyle=style.get("linestyle", "-"),
                        linewidth=style.get("linewidth", 2.4), label=label))
                if series.target not in shown:
                    shown.add(series.target)
                    for a, b in _gap_spans(sub):
                        ax.axvspan(a - run_group.t0, b - run_group.t0, color=GAP_COLOR,
                                   alpha=0.35 * alpha, hatch="//", linewidth=0, zorder=0)
                        handles.setdefault("gap", Patch(facecolor=GAP_COLOR, alpha=0.35,
                                                        hatch="//",
                                                        label=f"no sample ({series.target})"))
            if not lines:
                _no_data(ax, "no connection samples")
        ax.set_xlim(lo, hi)
        ax.set_title(_label(g, groups), color=color(g.endpoint))
        ax.set_ylabel("connections")
    for ax in axes[-2:]:
        ax.set_xlabel("seconds since the segment started")
    # limit lines: max_connections and the pool size always (how much of the budget a way of
    # connecting uses is the point of the figure); max_client_conn when it is within reach of
    # the rest, else named in a footnote (it can be thousands)
    notes: dict[str, None] = {}
    if analysis.limits.get("max_connections") is not None:
        peak = max(peak, float(analysis.limits["max_connections"]))
    for ax, g in zip(axes, groups, strict=True):
        pooled = g.endpoint in analysis.connections and \
            analysis.connections[g.endpoint].kind == "pgbouncer"
        for key in ("max_connections", "pool_size", "max_client_conn"):
            value = analysis.limits.get(key)
            if value is None or (key != "max_connections" and not pooled):
                continue
            if key != "max_client_conn" or value <= 2.5 * peak:
                ax.axhline(value, color=LIMIT_COLORS[key], linestyle=(0, (6, 3)),
                           linewidth=1.8, zorder=1)
                ax.annotate(f"{key} {value}", xy=(1.0, value), xycoords=("axes fraction", "data"),
                            xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom",
                            fontsize=12, color=LIMIT_COLORS[key])
            else:
                notes[f"{key} {value}"] = None
    if notes:
        fig.text(0.005, 0.005, f"above the chart: {', '.join(notes)}", fontsize=12,
                 color="#555555", va="bottom")
    if axes:
        axes[0].set_ylim(bottom=0)
    items = list(handles.values())
    if any(g.spikes for g in groups):
        items.append(Patch(color=SPIKE_COLOR, alpha=0.35, label="spike window"))
    _legend(fig, items + _run_handles(analysis, compare, dashed=False), ncol=4)
    return fig


# -- 4. throughput and errors ------------------------------------------------------------------


def _closed(t: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A post-step line that also draws its last one-second window."""
    return np.append(t, t[-1] + 1.0), np.append(values, values[-1])


def _throughput_errors(analysis, groups, others, compare) -> Figure:
    fig, axes = _figure(len(groups), sharey=True)
    classes: dict[str, None] = {}
    for ax, g in zip(axes, groups, strict=True):
        _shade_spikes(ax, g)
        w = g.windows
        edges = np.append(w.t, w.t[-1] + 1.0)
        bottom = np.zeros(len(w.t))
        for cls, counts in w.errors.items():
            # one filled staircase per class (stacked): a bar per window is 60 artists a panel
            ax.stairs(bottom + counts, edges, baseline=bottom, fill=True,
                      color=ERROR_COLORS.get(cls, ERROR_COLORS["other"]), linewidth=0, zorder=2)
            bottom = bottom + counts
            classes[cls] = None
        ax.step(*_closed(w.t, w.ok), where="post", color=color(g.endpoint), zorder=3)
        other = others.get(g.key)
        if other is not None:
            ow = other.windows
            ax.step(*_closed(ow.t, ow.ok), where="post", color=color(g.endpoint),
                    alpha=OTHER_ALPHA,
                    linestyle=(0, (4, 2)), linewidth=1.8, zorder=3)
            failed = ow.requests - ow.ok
            if failed.any():
                ax.step(*_closed(ow.t, failed), where="post", color="#333333",
                        alpha=OTHER_ALPHA,
                        linestyle=(0, (4, 2)), linewidth=1.6, zorder=3)
        ax.set_title(_label(g, groups), color=color(g.endpoint))
        ax.set_ylabel("requests per second")
    if axes:  # once, after every panel: the shared y axis then fits all of them
        axes[0].set_ylim(bottom=0)
    for ax in axes[-2:]:
        ax.set_xlabel("seconds since the segment started (by intended start)")
    handles = [Line2D([], [], color="#666666", label="successful")]
    handles += [Patch(color=ERROR_COLORS.get(c, ERROR_COLORS["other"]), label=c)
                for c in classes]
    if compare is not None:
        handles.append(Line2D([], [], color="#333333", alpha=OTHER_ALPHA, linestyle=(0, (4, 2)),
                              label="B: failed"))
    if any(g.spikes for g in groups):
        handles.append(Patch(color=SPIKE_COLOR, alpha=0.35, label="spike window"))
    _legend(fig, handles + _run_handles(analysis, compare))
    return fig


# -- 5. endpoints side by side -----------------------------------------------------------------


def _comparison(analysis, groups, others, compare) -> Figure:
    fig, axes = _figure(3, sharex=False, ncols=3, width=PANEL_W * 2, panel_h=PANEL_H * 1.3)
    lat, err, conn = axes
    runs = [(analysis, 1.0, None)] + ([(compare, OTHER_ALPHA, "//")] if compare else [])
    n_runs = len(runs)
    x = np.arange(len(groups), dtype=float)
    labels = [_label(g, groups) for g in groups]
    # latency percentiles
    width = 0.8 / (3 * n_runs)
    drawn = False
    for r, (_run, alpha, hatch) in enumerate(runs):
        for p, (name, _style, _w) in enumerate(PERCENTILE_STYLES):
            for i, g in enumerate(groups):
                run_g = g if r == 0 else others.get(g.key)
                if run_g is None:
                    continue
                value = getattr(run_g.total, name)
                if not math.isfinite(value) or value <= 0:
                    continue
                shade = (0.45, 0.72, 1.0)[p]
                lat.bar(x[i] - 0.4 + width * (r * 3 + p + 0.5), value, width,
                        color=color(g.endpoint), alpha=shade * alpha, hatch=hatch,
                        edgecolor="white", linewidth=0.5)
                drawn = True
    lat.set_title("total time p50 / p95 / p99")
    lat.set_ylabel("ms (successful requests)")
    if drawn:
        lat.set_yscale("log")
        _log_axis(lat.yaxis)
    # error rate by class
    width = 0.8 / n_runs
    classes: dict[str, None] = {}
    for r, (_run, alpha, hatch) in enumerate(runs):
        for i, g in enumerate(groups):
            run_g = g if r == 0 else others.get(g.key)
            if run_g is None:
                continue
            bottom = 0.0
            for cls in run_g.errors:
                share = 100.0 * run_g.error_rate_of(cls)
                err.bar(x[i] - 0.4 + width * (r + 0.5), share, width, bottom=bottom,
                        color=ERROR_COLORS.get(cls, ERROR_COLORS["other"]), alpha=alpha,
                        hatch=hatch, edgecolor="white", linewidth=0.5)
                bottom += share
                classes[cls] = None
    err.set_title("errors by class")
    err.set_ylabel("% of requests")
    err.set_ylim(bottom=0, top=max(1.0, err.get_ylim()[1]))
    # peak backends and waiting clients
    for r, (_run, alpha, hatch) in enumerate(runs):
        for i, g in enumerate(groups):
            run_g = g if r == 0 else others.get(g.key)
            if run_g is None or run_g.peak_backends is None:
                continue
            pos = x[i] - 0.4 + width * (r + 0.5)
            conn.bar(pos, run_g.peak_backends, width, color=color(g.endpoint), alpha=alpha,
                     hatch=hatch, edgecolor="white", linewidth=0.5)
            if run_g.peak_waiting:
                conn.annotate(f"{run_g.peak_waiting} waiting", xy=(pos, run_g.peak_backends),
                              xytext=(0, 3), textcoords="offset points", ha="center",
                              fontsize=11, rotation=90 if n_runs > 1 else 0)
    max_conn = analysis.limits.get("max_connections")
    if max_conn is not None:
        conn.axhline(max_conn, color=LIMIT_COLORS["max_connections"], linestyle=(0, (6, 3)),
                     linewidth=1.8)
        conn.annotate(f"max_connections {max_conn}", xy=(1.0, max_conn),
                      xycoords=("axes fraction", "data"), xytext=(-4, 3),
                      textcoords="offset points", ha="right", fontsize=12,
                      color=LIMIT_COLORS["max_connections"])
        conn.set_ylim(0, max_conn * 1.2)
    conn.set_title("peak Postgres backends")
    conn.set_ylabel("backends")
    for ax in axes:
        ax.set_xticks(x, labels, rotation=20 if len(groups) > 3 else 0, ha="right"
                      if len(groups) > 3 else "center")
        ax.grid(axis="x", visible=False)
    handles = [Patch(color="#444444", alpha=a, label=n)
               for (n, _s, _w), a in zip(PERCENTILE_STYLES, (0.45, 0.72, 1.0), strict=True)]
    handles += [Patch(color=ERROR_COLORS.get(c, ERROR_COLORS["other"]), label=c)
                for c in classes]
    if compare is not None:
        handles += [Patch(facecolor="#888888", label=f"A: {analysis.run_id}"),
                    Patch(facecolor="#888888", alpha=OTHER_ALPHA, hatch="//",
                          label=f"B: {compare.run_id}")]
    _legend(fig, handles, ncol=min(len(handles), 5))
    return fig


_FIGURES = (
    ("latency-over-time", _latency_over_time, "Latency over time",
     "p50, p95 and p99 of total time (from intended start, so queueing counts) in one-second "
     "windows of successful requests, one panel per endpoint; grey bands are the arrival "
     "schedule's spikes. Look for the spikes: which endpoint's p99 climbs, and how far."),
    ("latency-distribution", _latency_distribution, "Latency distribution",
     "Percentile plots of connect time (new connection or pool checkout), query time and total "
     "time; both axes are logarithmic, so the tail (99%, 99.9%) gets as much room as the "
     "median. Connect time is where pools, poolers and max_connections show."),
    ("connections", _connections, "Connections over time",
     "Clients against Postgres backends per endpoint, with max_connections and the pool size as "
     "limit lines. A pooler in transaction mode serves many clients with few server "
     "connections (multiplexing); direct clients are backends. Hatched red spans are samples "
     "that failed (a target down or paused): gaps, not zeros."),
    ("throughput-errors", _throughput_errors, "Throughput and errors",
     "Successful requests per second (line) and failed ones stacked by error class (bars), by "
     "intended start, per endpoint."),
    ("comparison", _comparison, "Endpoints compared",
     "Total-time percentiles, error rate by class and peak Postgres backends of every endpoint "
     "of the scenario, side by side."),
)
