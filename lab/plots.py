"""Stage 7 of the pipeline: the figures of a report, as PNG and SVG.

``render(analysis, out_dir, compare=None)`` draws six figures per scenario from a
``RunAnalysis`` (and overlays a second run for ``--compare``), in report order:

0. the headline: per endpoint, clients against Postgres backends against max_connections, in
   a few thick, directly labelled lines (the one figure for the back of a room);
1. latency over time: p50/p95/p99 of total time in one-second windows;
2. latency distribution: percentile plots of connect, query and total time, log axes;
3. connections over time: clients, pooler server connections, waiting clients and Postgres
   backends (bold), the dedicated pooler's auth_query logins apart, limits labelled on their
   lines;
4. throughput and errors over time: successes, failures stacked by class, arrivals that never
   started stacked as a class of their own (hatched);
5. the endpoints side by side: percentiles and rates with their 95% intervals as error bars,
   failures and not-started shares, peak backends.

Every time figure shades the arrival schedule's spike windows (grey) and marks outages as
hatched red bands labelled in words ("transaction pooler unreachable from 16.2 s to the end").
A scenario's client-side work (the ``hold_ms`` parameter) is drawn as a reference line on the
latency figures, so it is not read as pooler latency.

Matplotlib's object API with the Agg canvas (no pyplot, no global state), sized for a
projector and for a report page at its natural size (at most ``MAX_WIDTH_PX`` wide): large
type, thick lines, one colour per endpoint in every figure. Each figure's height is fitted
around its title and legend, so nothing is clipped whatever the number of endpoints. The other
run of a comparison is drawn in the same colours, faint and dashed (dashed outlines on bars,
hollow markers with dashed whiskers on points), and every legend says so.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
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

from lab import analysis as an
from lab.analysis import Group, Outage, RunAnalysis, Series

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
    "tls": "#0072B2",
    "connection_refused": "#3B3B3B",
    "connection_lost": "#7A7A7A",
    "unfinished": "#6A3D9A",
    "other": "#B5B5B5",
}
# arrivals that never started: not a failure, so no fill colour of its own, a hatch instead
NOT_STARTED_FACE, NOT_STARTED_HATCH, NOT_STARTED_EDGE = "#FFFFFF", "xx", "#3B3B3B"
NOT_STARTED_LABEL = "not started (never ran)"
LIMIT_COLORS = {"max_connections": "#C00000", "pool_size": "#7A4F00",
                "max_client_conn": "#555555"}
LIMIT_STYLE = (0, (9, 3, 2, 3))  # dash-dot: no data line is drawn like this
BACKENDS_COLOR = "#111111"
AUTH_COLOR = "#8A8A8A"
HOLD_COLOR = "#5A5A5A"
PERCENTILE_STYLES = (("p50", "-", 2.6), ("p95", "--", 2.2), ("p99", ":", 2.4))
# --compare: p50 and p99 only, told apart by width, so that dashes can mean "run B"
COMPARE_PERCENTILES = (("p50", 1.6), ("p99", 3.4))
PERCENTILE_MARKERS = {"p50": "o", "p95": "s", "p99": "^"}
SPIKE_COLOR = "#9E9E9E"
OUTAGE_FACE, OUTAGE_EDGE = "#FFCDD2", "#C62828"
FAULT_FACE, FAULT_EDGE = "#E1BEE7", "#6A1B9A"  # an injected fault (lab run --fault)
OTHER_ALPHA = 0.45  # the --compare run
OTHER_DASH = (0, (4, 2))
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
    # titles at a fixed height: placing them around tick labels measured every label again
    # (a fifth of the drawing time); no panel has tick labels on top
    "axes.titley": 1.0,
    "hatch.linewidth": 1.0,
    "svg.hashsalt": "pooler-lab",  # stable ids: the same run draws the same SVG
    "svg.fonttype": "none",  # text stays text (the viewer's sans-serif): small, searchable
    "axes.formatter.use_mathtext": False,
    "path.simplify": True,
}
HEADLINE_STYLE = {**STYLE, "font.size": 18, "axes.titlesize": 22, "axes.labelsize": 18,
                  "xtick.labelsize": 16, "ytick.labelsize": 16, "legend.fontsize": 15,
                  "figure.titlesize": 23}
DPI = 100
MAX_WIDTH_PX = 1340  # a report page shows every figure at its natural size
WIDTH = MAX_WIDTH_PX / DPI
PANEL_H = 4.2
# clients far above max_connections would squash the budget the figure is about: the y axis
# stops at this many times max_connections and says what went above it
MAX_OVER_BUDGET = 3.0


@dataclass(frozen=True)
class FigureFile:
    name: str  # file stem under figures/
    kind: str  # headline, latency-over-time, latency-distribution, connections, ...
    scenario: str
    title: str
    caption: str
    png: Path
    svg: Path


def color(endpoint: str) -> str:
    if endpoint in ENDPOINT_COLORS:
        return ENDPOINT_COLORS[endpoint]
    return EXTRA_COLORS[sum(map(ord, endpoint)) % len(EXTRA_COLORS)]


def error_color(cls: str) -> str:
    return ERROR_COLORS.get(cls, ERROR_COLORS["other"])


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
    tasks = [(scenario, kind) for scenario in analysis.scenarios for kind in KINDS]
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


def figure(analysis: RunAnalysis, scenario: str, kind: str,
           compare: RunAnalysis | None = None) -> tuple[Figure, str, str]:
    """One figure, laid out and titled but not saved: (figure, title, caption)."""
    spec = FIGURES[kind]
    groups = analysis.groups_of(scenario)
    others = {g.key: compare.group(g.key) for g in groups} if compare else {}
    ctx = _Context(analysis, compare, scenario, groups, others)
    with matplotlib.rc_context(spec.style):
        title = f"{spec.title}: {scenario}"
        fig = spec.draw(ctx, title)
    return fig, title, spec.caption(ctx)


def _draw(task: tuple[str, str]) -> FigureFile:
    scenario, kind = task
    analysis: RunAnalysis = _STATE["analysis"]  # type: ignore[assignment]
    compare: RunAnalysis | None = _STATE["compare"]  # type: ignore[assignment]
    out_dir: Path = _STATE["out_dir"]  # type: ignore[assignment]
    fig, title, caption = figure(analysis, scenario, kind, compare)
    name = f"{kind}-{slug(scenario)}"
    png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
    with matplotlib.rc_context(FIGURES[kind].style):
        fig.savefig(png, format="png", dpi=DPI)
        fig.savefig(svg, format="svg", metadata={"Date": None})
    return FigureFile(name, kind, scenario, title, caption, png, svg)


@dataclass
class _Context:
    analysis: RunAnalysis
    compare: RunAnalysis | None
    scenario: str
    groups: list[Group]
    others: dict[an.Key, Group | None]

    def other(self, g: Group) -> Group | None:
        return self.others.get(g.key)


# -- layout ----------------------------------------------------------------------------------


@dataclass
class _Grid:
    """Panel geometry in inches; the figure's height is settled by ``_finish``."""

    nrows: int
    panel_h: float
    width: float = WIDTH
    left: float = 1.15
    right: float = 0.3
    bottom: float = 0.95
    row_gap: float = 0.95  # between rows of panels: x tick labels and the next panel's title
    wspace: float = 0.2
    panel_title: float = 0.5  # above the top row: the panels' own titles


def _figure(n: int, *, ncols: int | None = None, panel_h: float = PANEL_H,
            sharex: bool = False, sharey: bool = False, **grid) -> tuple[Figure, list, _Grid]:
    ncols = ncols or (1 if n == 1 else 2)
    nrows = math.ceil(n / ncols)
    layout = _Grid(nrows, panel_h, **grid)
    fig = Figure(figsize=(layout.width, panel_h * nrows + 3), dpi=DPI)
    FigureCanvasAgg(fig)
    # fixed margins (in inches, set in _finish): constrained layout measures every label twice
    # per save and was most of the drawing time
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n]), layout


def _finish(fig: Figure, layout: _Grid, title: str, handles: Sequence = (),
            notes: Sequence[str] = ()) -> Figure:
    """Title, legend (as many columns as fit the width) and footnotes; then the figure's
    height is made to fit them above and below the panels."""
    renderer = fig.canvas.get_renderer()
    width_px = layout.width * DPI
    legend_h = 0.0
    legend = None
    if handles:
        ncol = min(len(handles), 5)
        while True:
            legend = fig.legend(handles=list(handles), loc="upper center", ncol=ncol,
                                frameon=False, borderaxespad=0.0, columnspacing=1.4,
                                handlelength=2.4)
            box = legend.get_window_extent(renderer)
            if box.width <= 0.97 * width_px or ncol == 1:
                break
            legend.remove()
            ncol -= 1
        legend_h = box.height / DPI
    title_h = matplotlib.rcParams["figure.titlesize"] / 72 * 1.45
    top = 0.12 + title_h + (legend_h + 0.12 if legend is not None else 0.0) + layout.panel_title
    note_h = 0.34 * len(notes)
    panels = layout.nrows * layout.panel_h + (layout.nrows - 1) * layout.row_gap
    height = top + panels + layout.bottom + note_h
    fig.set_size_inches(layout.width, height)
    fig.subplots_adjust(left=layout.left / layout.width, right=1 - layout.right / layout.width,
                        top=1 - top / height, bottom=(layout.bottom + note_h) / height,
                        hspace=layout.row_gap / layout.panel_h, wspace=layout.wspace)
    fig.suptitle(title, y=1 - 0.12 / height, va="top")
    if legend is not None:
        legend.set_bbox_to_anchor((0.5, 1 - (0.12 + title_h) / height), transform=fig.transFigure)
    for i, note in enumerate(notes):
        fig.text(0.15 / layout.width, (0.12 + 0.34 * (len(notes) - 1 - i)) / height, note,
                 fontsize=13, color="#444444", va="bottom", ha="left")
    _place_labels(fig)
    return fig


# -- labels placed where they hide nothing ----------------------------------------------------


@dataclass
class _Label:
    """A text to place inside a panel once the figure's size is settled: the first of its
    candidate positions that covers no data line and no other label (else the least bad)."""

    text: str
    # (x, y, xycoords, dx, dy, ha, va): an anchor, an offset in points and the alignment
    candidates: list[tuple]
    style: dict
    priority: int = 1


def _later(ax, text: str, candidates: list[tuple], priority: int = 1, **style) -> None:
    ax.__dict__.setdefault("_lab_labels", []).append(_Label(text, candidates, style, priority))


def _place_labels(fig: Figure) -> None:
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = sorted(ax.__dict__.pop("_lab_labels", []), key=lambda x: x.priority)
        if not labels or not ax.get_visible():
            continue
        frame = ax.get_window_extent(renderer)
        points = [line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))
                  for line in ax.lines if line.get_visible() and len(line.get_xydata())]
        pts = np.vstack(points) if points else np.zeros((0, 2))
        pts = pts[np.isfinite(pts).all(axis=1)]
        placed = [t.get_window_extent(renderer) for t in ax.texts if t.get_visible()]
        for label in labels:
            best, best_score, best_box = None, math.inf, None
            for x, y, coords, dx, dy, ha, va in label.candidates:
                ann = ax.annotate(label.text, xy=(x, y), xycoords=coords, xytext=(dx, dy),
                                  textcoords="offset points", ha=ha, va=va,
                                  annotation_clip=False, **label.style)
                box = ann.get_window_extent(renderer).padded(3)
                hits = int(((pts[:, 0] >= box.x0) & (pts[:, 0] <= box.x1)
                            & (pts[:, 1] >= box.y0) & (pts[:, 1] <= box.y1)).sum())
                score = hits + 1000 * sum(box.overlaps(other) for other in placed)
                if (box.x0 < frame.x0 - 1 or box.x1 > frame.x1 + 1 or box.y0 < frame.y0 - 1
                        or box.y1 > frame.y1 + 1):
                    score += 5000  # outside its panel: over a title, a tick label or the edge
                if score < best_score:
                    if best is not None:
                        best.remove()
                    best, best_score, best_box = ann, score, box
                else:
                    ann.remove()
                if score == 0:
                    break
            if best_box is not None:
                placed.append(best_box)


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


def _xlabel(axes: Sequence, ncols: int, text: str) -> None:
    """The x label under the bottom panel of each column."""
    for ax in axes[-ncols:]:
        ax.set_xlabel(text)


def _ncols(n: int) -> int:
    return 1 if n == 1 else 2


def _shade_spikes(ax, group: Group) -> None:
    for a, b in group.spikes:
        ax.axvspan(a, b, color=SPIKE_COLOR, alpha=0.18, linewidth=0, zorder=0)


def _outage_text(o: Outage, group: Group, repeats: Sequence[int] = (), run: str = "") -> str:
    """The outage in words, with the repeats it happened in when there were several."""
    text = o.describe()
    reps = sorted(set(repeats or [o.repeat]))
    if group.repeats > 1:
        if len(reps) == group.repeats:
            text += " (every repeat)"
        elif len(reps) == 1:
            text += f" (repeat {reps[0]})"
        else:
            text += f" (repeats {', '.join(map(str, reps))})"
    return f"{run}{text}"


def _mark_outages(ax, group: Group, *, faint: bool = False, run: str = "",
                  text: bool = True, fontsize: float = 12, wrap: int = 32) -> None:
    """Outages of the group's endpoint (or of Postgres) as hatched red bands, labelled in
    words inside the panel (where the words hide no line); the same outage in several repeats
    is one band and one label."""
    same: dict[tuple, list[Outage]] = {}
    for o in group.outages:
        key = (o.target, round(o.start_s, 1), None if o.end_s is None else round(o.end_s, 1))
        same.setdefault(key, []).append(o)
    for outages in same.values():
        o = outages[0]
        end = o.until_s if math.isfinite(o.until_s) else _segment_end(group) - group.t0
        ax.axvspan(o.start_s, end, facecolor=OUTAGE_FACE, edgecolor=OUTAGE_EDGE,
                   hatch="//", alpha=0.35 if faint else 0.6, linewidth=0, zorder=0.5)
        if not text:
            continue
        words = textwrap.fill(_outage_text(o, group, [x.repeat for x in outages], run), wrap,
                              break_long_words=False)
        candidates = []
        for y, dy, va in ((1.0, -6, "top"), (0.5, 0, "center"), (0.0, 6, "bottom"),
                          (0.75, 0, "center"), (0.25, 0, "center")):
            coords = ("data", "axes fraction")
            candidates += [(o.start_s, y, coords, 6, dy, "left", va),
                           (end, y, coords, -6, dy, "right", va),
                           (o.start_s, y, coords, -6, dy, "right", va),
                           (end, y, coords, 6, dy, "left", va),
                           ((o.start_s + end) / 2, y, coords, 0, dy, "center", va)]
        # a narrow panel: anywhere in it, the band still shows where
        candidates += [(x, y, "axes fraction", dx, 0, ha, "center") for y in (0.5, 0.75, 0.25)
                       for x, dx, ha in ((0.0, 6, "left"), (1.0, -6, "right"))]
        _later(ax, words, candidates, priority=2, fontsize=fontsize, color=OUTAGE_EDGE,
               fontweight="bold", zorder=6,
               bbox={"boxstyle": "round,pad=0.25", "facecolor": "white",
                     "edgecolor": OUTAGE_EDGE, "alpha": 0.9, "linewidth": 0.8})


def _mark_faults(ax, group: Group, *, fontsize: float = 12, wrap: int = 22) -> None:
    """Injected faults of the group's first repeat: a violet band from the inject to the end
    of its recover, edged at both ends, named at the top of the panel."""
    for f in group.faults:
        if f.repeat != 1:
            continue
        start, end = f.begin - group.t0, max(f.end, f.begin + 0.05) - group.t0
        ax.axvspan(start, end, facecolor=FAULT_FACE, alpha=0.45, linewidth=0, zorder=0.4)
        for x in (start, end):
            ax.axvline(x, color=FAULT_EDGE, linewidth=1.4, linestyle=(0, (4, 2)), zorder=0.6)
        coords = ("data", "axes fraction")
        words = textwrap.fill(f"fault: {f.description}", wrap, break_long_words=False)
        _later(ax, words, [(start, 0.98, coords, 4, -4, "left", "top"),
                           (start, 0.98, coords, -4, -4, "right", "top"),
                           (end, 0.98, coords, 4, -4, "left", "top"),
                           (start, 0.55, coords, 4, 0, "left", "center")],
               priority=1, fontsize=fontsize, color=FAULT_EDGE, fontweight="bold", zorder=6,
               bbox={"boxstyle": "round,pad=0.25", "facecolor": "white",
                     "edgecolor": FAULT_EDGE, "alpha": 0.9, "linewidth": 0.8})


def _fault_handle(ctx: _Context) -> list:
    if any(g.faults for g in ctx.groups):
        return [Patch(facecolor=FAULT_FACE, edgecolor=FAULT_EDGE, linestyle="--",
                      label="injected fault (lab run --fault)")]
    return []


def _mark_run_outages(ax, ctx: _Context, g: Group, **style) -> None:
    """The outages of run A's group, and (fainter, named "B: ...") those of run B's; and the
    faults injected into A."""
    _mark_faults(ax, g, fontsize=style.get("fontsize", 12), wrap=min(style.get("wrap", 22), 16))
    _mark_outages(ax, g, **style)
    other = ctx.other(g)
    if other is not None:
        _mark_outages(ax, other, faint=True, run="B: ", **style)


def _segment_end(group: Group) -> float:
    """When the group's (first) segment ended (Unix s): after it come the cooldown and the
    next segment, whose connections are not this group's."""
    return group.spans[0].end if group.spans else group.last


def _time_extent(group: Group) -> tuple[float, float]:
    """The panel's x range: the segment (every window), from its start."""
    end = _segment_end(group) - group.t0
    if len(group.windows.t):
        end = max(end, float(group.windows.t[-1]) + 1.0)
    return min(0.0, float(group.windows.t[0]) if len(group.windows.t) else 0.0) - 1.0, end + 1.0


def _run_handles(ctx: _Context, what: str = "") -> list:
    """Legend entries telling the two runs apart: A as it is, B faint and dashed."""
    if ctx.compare is None:
        return []
    return [Line2D([], [], color="black", label=f"A: {ctx.analysis.run_id} (solid)"),
            Line2D([], [], color="black", alpha=OTHER_ALPHA, linestyle=OTHER_DASH,
                   label=f"B: {ctx.compare.run_id} (faint, dashed{what})")]


def _spike_handle(groups: Sequence[Group]) -> list:
    if any(g.spikes for g in groups):
        return [Patch(color=SPIKE_COLOR, alpha=0.35, label="spike window")]
    return []


def _outage_handle(ctx: _Context) -> list:
    runs = [g for g in ctx.groups if g.outages]
    runs += [o for o in ctx.others.values() if o is not None and o.outages]
    if runs:
        return [Patch(facecolor=OUTAGE_FACE, edgecolor=OUTAGE_EDGE, hatch="//",
                      label="outage (target unreachable)")]
    return []


def _no_data(ax, text: str, size: float = 15) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
            color="#666666", fontsize=size)


def hold_ms(analysis: RunAnalysis, scenario: str) -> float | None:
    """The scenario's client-side work per invocation (its ``hold_ms`` parameter), if any."""
    leg = an.legs_of(analysis.manifest).get(scenario) or {}
    value = (leg.get("params") or {}).get("hold_ms")
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _holds(ctx: _Context, g: Group) -> float | None:
    """hold_ms where it applies: requests of a serverless (invocation) phase."""
    return hold_ms(ctx.analysis, ctx.scenario) if g.phase != "persistent" else None


def hold_text(value: float) -> str:
    return f"{value:,.0f} ms of it is the function's own work (hold_ms)"


def _draw_hold(ax, value: float, *, label: bool = True, fontsize: float = 12) -> None:
    """A reference line at the client-side work every successful invocation includes."""
    ax.axhline(value, color=HOLD_COLOR, linewidth=1.6, linestyle=(0, (1, 2)), zorder=1)
    if label:
        coords = ("axes fraction", "data")
        _later(ax, hold_text(value),
               [(x, value, coords, dx, dy, ha, va) for dy, va in ((-3, "top"), (3, "bottom"))
                for x, dx, ha in ((0.01, 0, "left"), (0.99, 0, "right"), (0.5, 0, "center"))],
               fontsize=fontsize, color=HOLD_COLOR, zorder=6)


# -- connection series ---------------------------------------------------------------------


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


SAMPLE_MARGIN_S = 0.5  # one connection sample (the sampler's default interval)


def _trace(series: Series | None, name: str, g: Group) -> tuple[np.ndarray, np.ndarray] | None:
    """One value of a connection series over the group's (first) segment, seconds after its
    start, broken where samples failed or are missing; None when there is nothing."""
    if series is None or name not in series.values:
        return None
    # Within the segment, give or take one sample: with no cooldown the next segment's
    # clients connect within a second or two of this one's end, and are not this group's.
    lo = g.first - 2
    if g.spans:
        lo = max(lo, g.spans[0].start - SAMPLE_MARGIN_S)
    inside = (series.t >= lo) & (series.t <= _segment_end(g) + SAMPLE_MARGIN_S)
    if not inside.any():
        return None
    sub = Series(series.target, series.kind, series.t[inside], series.ok[inside],
                 {name: series.values[name][inside]}, series.limits)
    t, values = _with_gaps(sub, sub.values[name])
    return t - g.t0, values


def _clients(run: RunAnalysis, g: Group) -> tuple[np.ndarray, np.ndarray] | None:
    """Clients of the endpoint: its pooler's (active + waiting), or direct backends."""
    bouncer = run.connections.get(g.endpoint)
    if bouncer is not None and bouncer.kind == "pgbouncer":
        return _trace(bouncer, "clients", g)
    if g.endpoint == "direct":
        return _trace(run.connections.get("postgres"), "direct", g)
    return None


def _peak(trace: tuple[np.ndarray, np.ndarray] | None) -> tuple[float, float] | None:
    """(t, value) of a trace's maximum."""
    if trace is None or not np.isfinite(trace[1]).any():
        return None
    i = int(np.nanargmax(trace[1]))
    return float(trace[0][i]), float(trace[1][i])


def _y_top(analysis: RunAnalysis, peaks: Sequence[float]) -> tuple[float, float | None]:
    """The y axis's top for a connections panel, and the value it cut off (or None): room for
    max_connections and the data, but never more than MAX_OVER_BUDGET x max_connections."""
    max_conn = analysis.limits.get("max_connections")
    peak = max([1.0, *peaks])
    if max_conn is None:
        return peak * 1.15, None
    cap = MAX_OVER_BUDGET * max_conn
    top = max(max_conn * 1.18, min(peak, cap) * 1.12)
    return top, (peak if peak > top else None)


def _limit_line(ax, key: str, value: float, *, fontsize: float = 12, lw: float = 1.7) -> None:
    """A limit, labelled on the line itself (never in the legend)."""
    ax.axhline(value, color=LIMIT_COLORS[key], linestyle=LIMIT_STYLE, linewidth=lw, zorder=1)
    coords = ("axes fraction", "data")
    _later(ax, f"{key} {value:,.0f}",
           [(x, value, coords, dx, dy, ha, va) for dy, va in ((3, "bottom"), (-3, "top"))
            for x, dx, ha in ((1.0, -4, "right"), (0.0, 4, "left"), (0.5, 0, "center"),
                              (0.7, 0, "center"), (0.3, 0, "center"), (0.85, 0, "center"),
                              (0.15, 0, "center"))],
           priority=0, fontsize=fontsize, color=LIMIT_COLORS[key], fontweight="bold", zorder=6,
           bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none",
                 "alpha": 0.75})


# -- 0. the headline ---------------------------------------------------------------------------


def _headline(ctx: _Context, title: str) -> Figure:
    groups = ctx.groups
    ncols = min(len(groups), 4)
    # narrow panels: "endpoint · phase" on two lines
    two_lines = ncols > 2 and any(" · " in _label(g, groups) for g in groups)
    fig, axes, layout = _figure(len(groups), ncols=ncols, panel_h=4.6, sharey=True,
                                left=1.2, wspace=0.12, row_gap=1.5 if two_lines else 1.1,
                                panel_title=1.0 if two_lines else 0.6)
    a = ctx.analysis
    max_conn = a.limits.get("max_connections")
    traces = []
    for g in groups:
        clients, backends = _clients(a, g), _trace(a.connections.get("postgres"), "backends", g)
        other = ctx.other(g)
        b_traces = ((_clients(ctx.compare, other),
                     _trace(ctx.compare.connections.get("postgres"), "backends", other))
                    if other is not None and ctx.compare is not None else (None, None))
        traces.append((clients, backends, b_traces))
    peaks = [p[1] for c, b, (bc, bb) in traces for p in map(_peak, (c, b, bc, bb)) if p]
    top, cut = _y_top(a, peaks)
    notes = []
    for ax, g, (clients, backends, (b_clients, b_backends)) in zip(axes, groups, traces,
                                                                   strict=True):
        _shade_spikes(ax, g)
        ax.set_xlim(*_time_extent(g))
        _mark_run_outages(ax, ctx, g, fontsize=13, wrap=18)
        c = color(g.endpoint)
        for trace, line_color, width, z in ((b_backends, BACKENDS_COLOR, 4.0, 2),
                                            (b_clients, c, 3.0, 2)):
            if trace is not None:
                ax.plot(*trace, color=line_color, linewidth=width, alpha=OTHER_ALPHA,
                        linestyle=OTHER_DASH, zorder=z)
        # backends under clients: where the two are one (direct) a black-edged coloured line
        if backends is not None:
            ax.plot(*backends, color=BACKENDS_COLOR, linewidth=6.0, zorder=3,
                    solid_capstyle="butt")
        if clients is not None:
            ax.plot(*clients, color=c, linewidth=3.4, zorder=4)
        if max_conn is not None:
            _limit_line(ax, "max_connections", max_conn, fontsize=15, lw=2.6)
        ax.set_ylim(0, top)
        label = _label(g, groups)
        ax.set_title(label.replace(" · ", "\n") if two_lines else label, color=c)
        _direct_labels(ax, clients, backends, c, direct=g.endpoint == "direct")
        if g.endpoint == "dedicated" and g.peak_auth_backends:
            coords = "axes fraction"
            _later(ax, f"+{g.peak_auth_backends} auth_query logins\n(role pgbouncer) not "
                   "counted", [(x, y, coords, 0, 0, ha, "center") for y in (0.6, 0.45, 0.75, 0.3)
                               for x, ha in ((0.98, "right"), (0.02, "left"))],
                   priority=4, fontsize=13, color="#444444", zorder=6)
        if clients is None and backends is None:
            _no_data(ax, "no connection samples")
    axes[0].set_ylabel("connections")
    _xlabel(axes, ncols, "seconds")
    if cut is not None:
        notes.append(f"The y axis stops at {MAX_OVER_BUDGET:g} x max_connections: the highest "
                     f"count, {cut:,.0f}, is above it.")
    handles = _run_handles(ctx)
    return _finish(fig, layout, title, handles, notes)


def _direct_labels(ax, clients, backends, c: str, direct: bool = False) -> None:
    """'clients' and 'backends' written beside their lines (at the peak where there is room),
    with the peak value: direct labels instead of a legend. A direct connection's clients are
    its backends: one label says so."""
    lines = [(backends, "backends = clients" if direct and backends is not None else "backends",
              BACKENDS_COLOR)]
    if not direct or backends is None:
        lines.append((clients, "clients", c))
    for priority, (trace, text, col) in enumerate(lines):
        peak = _peak(trace)
        if peak is None:
            continue
        t, values = trace
        anchors = [peak]
        finite = np.flatnonzero(np.isfinite(values))
        for frac in (0.5, 0.15, 0.85, 0.3, 0.7):
            i = finite[int(frac * (len(finite) - 1))]
            anchors.append((float(t[i]), float(values[i])))
        candidates = []
        for x, y in anchors:
            for dy, va in ((8, "bottom"), (-8, "top")):
                candidates += [(x, y, "data", 0, dy, "center", va),
                               (x, y, "data", 6, dy, "left", va),
                               (x, y, "data", -6, dy, "right", va)]
            candidates += [(x, y, "data", 10, 0, "left", "center"),
                           (x, y, "data", -10, 0, "right", "center")]
        # else anywhere free in the panel's upper half: the colour still tells whose it is
        candidates += [(x, y, "axes fraction", 0, 0, "center", "top")
                       for y in (0.97, 0.8, 0.63) for x in (0.5, 0.3, 0.7, 0.2, 0.8)]
        _later(ax, f"{text}\npeak {peak[1]:,.0f}", candidates, priority=1 + priority,
               fontsize=17, fontweight="bold", color=col, zorder=7, linespacing=1.0,
               multialignment="center",
               bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none",
                     "alpha": 0.7})


def _headline_caption(ctx: _Context) -> str:
    text = ("Per endpoint: its clients (coloured: connections the load held to it, queued ones "
            "included) against Postgres backends (black: client backends, what counts against "
            "max_connections, the red line). A pooler serves many clients with few backends; "
            "a direct connection is a backend per client, so its black and coloured lines are "
            "one.")
    if any(g.endpoint == "dedicated" and g.peak_auth_backends for g in ctx.groups):
        text += (" The dedicated pooler's own auth_query logins (role pgbouncer) are not its "
                 "load and are not counted as its backends.")
    if any(g.outages for g in ctx.groups):
        text += " Red hatched bands: a target was unreachable (outage), named on the band."
    return text + _compare_caption(ctx)


def _compare_caption(ctx: _Context) -> str:
    if ctx.compare is None:
        return ""
    return (f" Run B ({ctx.compare.run_id}) is drawn in the same colours, faint and dashed "
            "(bars: faint with a dashed outline; points: hollow with dashed whiskers).")


# -- 1. latency over time ----------------------------------------------------------------------


def _latency_over_time(ctx: _Context, title: str) -> Figure:
    groups = ctx.groups
    ncols = _ncols(len(groups))
    fig, axes, layout = _figure(len(groups), ncols=ncols, sharex=True, sharey=True)
    comparing = ctx.compare is not None
    styles = ([(name, "-", w) for name, w in COMPARE_PERCENTILES] if comparing
              else list(PERCENTILE_STYLES))
    drawn_any = False
    bottoms: list[float] = []
    for ax, g in zip(axes, groups, strict=True):
        _shade_spikes(ax, g)
        drawn = False
        runs = [(g, 1.0, None)]
        other = ctx.other(g)
        if other is not None:
            runs.append((other, OTHER_ALPHA, OTHER_DASH))
        for run, alpha, dash in runs:
            w = run.windows
            for name, style, width in styles:
                values = getattr(w, name)
                if np.isfinite(values).any():
                    ax.plot(w.t + 0.5, values, linestyle=dash or style, color=color(g.endpoint),
                            linewidth=width, alpha=alpha)
                    drawn = True
        ax.set_title(_label(g, groups), color=color(g.endpoint))
        if drawn:
            ax.set_yscale("log")
            _log_axis(ax.yaxis)
            hold = _holds(ctx, g)
            if hold is not None:
                _draw_hold(ax, hold)
                low = min(np.nanmin(getattr(g.windows, n)) for n, *_ in styles
                          if np.isfinite(getattr(g.windows, n)).any())
                bottoms.append(min(hold, low) / 1.8)
        else:
            _no_data(ax, "no successful requests")
        drawn_any = drawn_any or drawn
        ax.set_ylabel("total time (ms)")
    lo = min(_time_extent(g)[0] for g in groups)
    hi = max(_time_extent(g)[1] for g in groups)
    axes[0].set_xlim(lo, hi)
    if bottoms:  # room under the hold_ms line for its words (the totals hug it from above);
        # once all panels are drawn, so the shared axis still fits every one of them
        axes[0].set_ylim(bottom=min(axes[0].get_ylim()[0], *bottoms))
    for ax, g in zip(axes, groups, strict=True):
        _mark_run_outages(ax, ctx, g)
    _xlabel(axes, ncols, "seconds since the segment started (by intended start)")
    if comparing:
        handles = [Line2D([], [], color="black", linewidth=w, label=f"{n} (thin)" if w < 2
                          else f"{n} (thick)") for n, w in COMPARE_PERCENTILES]
    else:
        handles = [Line2D([], [], color="black", linestyle=s, linewidth=w, label=n)
                   for n, s, w in PERCENTILE_STYLES]
    if drawn_any and any(_holds(ctx, g) for g in groups):
        handles.append(Line2D([], [], color=HOLD_COLOR, linestyle=(0, (1, 2)), linewidth=1.6,
                              label="client-side work (hold_ms)"))
    handles += _spike_handle(groups) + _outage_handle(ctx) + _fault_handle(ctx) + _run_handles(ctx)
    return _finish(fig, layout, title, handles)


def _latency_over_time_caption(ctx: _Context) -> str:
    which = "p50 and p99" if ctx.compare is not None else "p50, p95 and p99"
    text = (f"{which} of total time (from the intended start, so queueing before the request "
            "started counts) in one-second windows of successful requests, one panel per "
            "endpoint; grey bands are the arrival schedule's spikes. Look for the spikes: "
            "which endpoint's p99 climbs, and how far.")
    hold = hold_ms(ctx.analysis, ctx.scenario)
    if hold is not None:
        text += (f" The dotted line is the invocation's own client-side work ({hold_text(hold)}):"
                 " it is part of every total and not pooler latency.")
    return text + _outage_caption(ctx) + _compare_caption(ctx)


def _outage_caption(ctx: _Context) -> str:
    if any(g.outages for g in ctx.groups):
        return " Red hatched bands: outages (the target unreachable), named on the band."
    return ""


# -- 2. latency distribution -------------------------------------------------------------------

NINES_TICKS = (2.0, 10.0, 100.0, 1e3, 1e4, 1e5)
NINES_LABELS = ("50%", "90%", "99%", "99.9%", "99.99%", "99.999%")


def _latency_distribution(ctx: _Context, title: str) -> Figure:
    metrics = (("connect", "connect time"), ("query", "query time"), ("total", "total time"))
    fig, axes, layout = _figure(3, ncols=3, panel_h=PANEL_H * 1.15, left=1.05, wspace=0.28)
    groups = ctx.groups
    for ax, (metric, panel_title) in zip(axes, metrics, strict=True):
        drawn = False
        for g in groups:
            runs = [(g, 1.0, "-")]
            other = ctx.other(g)
            if other is not None:
                runs.append((other, OTHER_ALPHA, OTHER_DASH))
            for run, alpha, style in runs:
                q, values = run.distribution[metric]
                keep = values > 0  # a held connection's connect time is 0: no place on a log axis
                if keep.sum() < 2:
                    continue
                ax.plot(1.0 / (1.0 - q[keep]), values[keep], color=color(g.endpoint),
                        linestyle=style, alpha=alpha)
                drawn = True
        ax.set_title(panel_title)
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
        if metric == "total" and drawn:
            holds = {_holds(ctx, g) for g in groups} - {None}
            if len(holds) == 1:
                _draw_hold(ax, holds.pop(), label=False)
    axes[0].set_ylabel("ms (successful requests)")
    handles = [Line2D([], [], color=color(g.endpoint), label=_label(g, groups)) for g in groups]
    if any(_holds(ctx, g) for g in groups):
        hold = hold_ms(ctx.analysis, ctx.scenario) or 0.0
        handles.append(Line2D([], [], color=HOLD_COLOR, linestyle=(0, (1, 2)), linewidth=1.6,
                              label=f"client-side work: hold_ms {hold:,.0f}"))
    handles += _run_handles(ctx)
    return _finish(fig, layout, title, handles)


def _latency_distribution_caption(ctx: _Context) -> str:
    text = ("Percentile plots of the three times of a successful request: connect (a new "
            "connection, or a checkout from an app-side pool; a held connection's 0 is left "
            "out), query (all its queries) and total (from the intended start to the end). "
            "Both axes are logarithmic, so the tail (99%, 99.9%) gets as much room as the "
            "median. Where the wait for a server connection shows depends on how the client "
            "connects: with a connection per request a session-mode pooler accepts the login "
            "at once and holds the first query, so its queueing is in query time; with an "
            "app-side pool it is in the pool checkout (connect time).")
    hold = hold_ms(ctx.analysis, ctx.scenario)
    if hold is not None and any(_holds(ctx, g) for g in ctx.groups):
        text += (f" Total time includes the invocation's client-side work: {hold_text(hold)} "
                 "(dotted line), client time rather than pooler latency.")
    return text + _compare_caption(ctx)


# -- 3. connections over time ------------------------------------------------------------------


def _connection_lines(g: Group, run: RunAnalysis) -> list[tuple[str, str, str, str, dict]]:
    """(legend label, target, value name, colour, style) of what a panel draws for a group,
    bottom to top."""
    lines = []
    c = color(g.endpoint)
    bouncer = run.connections.get(g.endpoint)
    postgres = run.connections.get("postgres")
    if postgres is not None:
        lines.append(("Postgres backends", "postgres", "backends", BACKENDS_COLOR,
                      {"linewidth": 4.2}))
        if g.endpoint == "dedicated" and g.peak_auth_backends:
            lines.append(("dedicated pooler's auth_query logins (role pgbouncer), apart",
                          "postgres", "dedicated_auth", AUTH_COLOR, {"linewidth": 2.0}))
    if bouncer is not None and bouncer.kind == "pgbouncer":
        lines.append(("clients", g.endpoint, "clients", c, {"linewidth": 2.6}))
        lines.append(("pooler server connections", g.endpoint, "servers", c,
                      {"linestyle": (0, (3, 1.5)), "linewidth": 2.0}))
        lines.append(("waiting clients", g.endpoint, "waiting", c,
                      {"linestyle": ":", "linewidth": 2.4}))
    elif postgres is not None and g.endpoint == "direct":
        lines.append(("clients", "postgres", "direct", c, {"linewidth": 2.6}))
    return lines


def _connections(ctx: _Context, title: str) -> Figure:
    groups = ctx.groups
    a = ctx.analysis
    ncols = _ncols(len(groups))
    fig, axes, layout = _figure(len(groups), ncols=ncols, sharey=True)
    handles: dict[str, object] = {}
    peaks: list[float] = []
    drawn: list[list] = []
    for ax, g in zip(axes, groups, strict=True):
        _shade_spikes(ax, g)
        panel = []
        for label, target, name, line_color, style in _connection_lines(g, a):
            trace = _trace(a.connections.get(target), name, g)
            if trace is None:
                continue
            ax.plot(*trace, color=line_color, linestyle=style.get("linestyle", "-"),
                    linewidth=style["linewidth"], zorder=3)
            panel.append(trace)
            neutral = line_color if line_color in (BACKENDS_COLOR, AUTH_COLOR) else "#666666"
            handles.setdefault(label, Line2D([], [], color=neutral,
                                             linestyle=style.get("linestyle", "-"),
                                             linewidth=style["linewidth"], label=label))
        other = ctx.other(g)
        if other is not None and ctx.compare is not None:
            # run B: its backends and clients, faint and dashed
            for trace, line_color, width in (
                    (_trace(ctx.compare.connections.get("postgres"), "backends", other),
                     BACKENDS_COLOR, 3.0),
                    (_clients(ctx.compare, other), color(g.endpoint), 2.2)):
                if trace is not None:
                    ax.plot(*trace, color=line_color, alpha=OTHER_ALPHA, linestyle=OTHER_DASH,
                            linewidth=width, zorder=2)
                    panel.append(trace)
        if not panel:
            _no_data(ax, "no connection samples")
        peaks += [p[1] for p in map(_peak, panel) if p]
        drawn.append(panel)
        ax.set_xlim(*_time_extent(g))
        ax.set_title(_label(g, groups), color=color(g.endpoint))
        ax.set_ylabel("connections")
    top, cut = _y_top(a, peaks)
    axes[0].set_ylim(0, top)
    notes = []
    # limits on their lines: max_connections everywhere, the pool size on pooled endpoints,
    # max_client_conn only when the axis reaches it (else a footnote: it can be thousands)
    above: dict[str, None] = {}
    for ax, g in zip(axes, groups, strict=True):
        _mark_run_outages(ax, ctx, g)
        pooled = g.endpoint in a.connections and a.connections[g.endpoint].kind == "pgbouncer"
        for key in ("max_connections", "pool_size", "max_client_conn"):
            value = a.limits.get(key)
            if value is None or (key != "max_connections" and not pooled):
                continue
            if value <= top:
                _limit_line(ax, key, value)
            else:
                above[f"{key} {value:,}"] = None
    if above:
        notes.append(f"Above the chart: {', '.join(above)}.")
    if cut is not None:
        notes.append(f"The y axis stops at {MAX_OVER_BUDGET:g} x max_connections: the highest "
                     f"count, {cut:,.0f}, is above it.")
    _xlabel(axes, ncols, "seconds since the segment started")
    items = list(handles.values()) + _spike_handle(groups) + _outage_handle(ctx)
    items += _fault_handle(ctx)
    items += _run_handles(ctx, "; backends and clients only")
    return _finish(fig, layout, title, items, notes)


def _connections_caption(ctx: _Context) -> str:
    text = ("Clients against Postgres backends per endpoint, sampled every 0.5 s. Postgres "
            "backends (bold black) are what counts against max_connections; a pooler in "
            "transaction mode serves many clients with few server connections (multiplexing), "
            "direct clients are backends. Limits are the dash-dot lines named on the line; a "
            "failed sample is a gap, not a zero.")
    if any(g.endpoint == "dedicated" and g.peak_auth_backends for g in ctx.groups):
        text += (" The dedicated pooler's own auth_query logins (role pgbouncer: how it looks "
                 "up passwords, not load) are the thin grey line, counted apart from its "
                 "serving backends.")
    if ctx.analysis.repeats > 1:
        text += " With repeats, each panel shows the endpoint's first repeat."
    return text + _outage_caption(ctx) + _compare_caption(ctx)


# -- 4. throughput and errors ------------------------------------------------------------------


def _closed(t: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A post-step line that also draws its last one-second window."""
    return np.append(t, t[-1] + 1.0), np.append(values, values[-1])


def _per_run(w: an.Windows, counts: np.ndarray) -> np.ndarray:
    """Window counts as a rate of one run: repeats add up window by window."""
    runs = w.runs if len(w.runs) == len(counts) else np.ones(len(counts))
    return counts / np.maximum(runs, 1)


def _throughput_errors(ctx: _Context, title: str) -> Figure:
    groups = ctx.groups
    ncols = _ncols(len(groups))
    fig, axes, layout = _figure(len(groups), ncols=ncols, sharex=True, sharey=True)
    classes: dict[str, None] = {}
    not_started = False
    for ax, g in zip(axes, groups, strict=True):
        _shade_spikes(ax, g)
        w = g.windows
        if len(w.t) == 0:
            _no_data(ax, "no requests")
            continue
        edges = np.append(w.t, w.t[-1] + 1.0)
        bottom = np.zeros(len(w.t))
        for cls, counts in w.errors.items():
            # one filled staircase per class (stacked): a bar per window is 60 artists a panel
            top = bottom + _per_run(w, counts)
            ax.stairs(top, edges, baseline=bottom, fill=True, color=error_color(cls),
                      linewidth=0, zorder=2)
            bottom = top
            classes[cls] = None
        if len(w.not_started) and w.not_started.any():
            ax.stairs(bottom + _per_run(w, w.not_started), edges, baseline=bottom, fill=True,
                      facecolor=NOT_STARTED_FACE, edgecolor=NOT_STARTED_EDGE,
                      hatch=NOT_STARTED_HATCH, linewidth=0.8, zorder=2)
            not_started = True
        ax.step(*_closed(w.t, _per_run(w, w.ok)), where="post", color=color(g.endpoint),
                zorder=3)
        other = ctx.other(g)
        if other is not None and len(other.windows.t):
            ow = other.windows
            ax.step(*_closed(ow.t, _per_run(ow, ow.ok)), where="post", color=color(g.endpoint),
                    alpha=OTHER_ALPHA, linestyle=OTHER_DASH, linewidth=1.8, zorder=3)
            lost = _per_run(ow, (ow.requests - ow.ok)
                            + (ow.not_started if len(ow.not_started) else 0))
            if np.any(lost):
                ax.step(*_closed(ow.t, lost), where="post", color="#333333",
                        alpha=OTHER_ALPHA, linestyle=OTHER_DASH, linewidth=1.6, zorder=3)
        if not g.failed and not g.not_started:
            _later(ax, "no errors", [(x, y, "axes fraction", 0, 0, ha, "bottom")
                                     for y in (0.04, 0.5, 0.85)
                                     for x, ha in ((0.98, "right"), (0.02, "left"))],
                   fontsize=14, color="#555555", zorder=6,
                   bbox={"boxstyle": "square,pad=0.15", "facecolor": "white",
                         "edgecolor": "none", "alpha": 0.8})
        ax.set_title(_label(g, groups), color=color(g.endpoint))
        ax.set_ylabel("per second" if g.repeats == 1 else "per second (mean of repeats)")
    lo = min(_time_extent(g)[0] for g in groups)
    hi = max(_time_extent(g)[1] for g in groups)
    axes[0].set_xlim(lo, hi)
    axes[0].set_ylim(bottom=0)  # once, after every panel: the shared y axis fits all of them
    for ax, g in zip(axes, groups, strict=True):
        _mark_run_outages(ax, ctx, g)
    _xlabel(axes, ncols, "seconds since the segment started (by intended start)")
    handles = [Line2D([], [], color="#666666", label="succeeded")]
    handles += [Patch(color=error_color(c), label=f"failed: {c}") for c in classes]
    if not_started:
        handles.append(Patch(facecolor=NOT_STARTED_FACE, edgecolor=NOT_STARTED_EDGE,
                             hatch=NOT_STARTED_HATCH, label=NOT_STARTED_LABEL))
    if ctx.compare is not None:
        handles.append(Line2D([], [], color="#333333", alpha=OTHER_ALPHA, linestyle=OTHER_DASH,
                              label="B: failed + not started"))
    handles += _spike_handle(groups) + _outage_handle(ctx) + _fault_handle(ctx) + _run_handles(ctx)
    return _finish(fig, layout, title, handles)


def _throughput_errors_caption(ctx: _Context) -> str:
    text = ("Every scheduled arrival per second, by intended start, per endpoint: succeeded "
            "(line), failed stacked by error class (filled), and not started (hatched: "
            "arrivals the load never began, because every slot was busy or the run ended; not "
            "a failure, but work that was not done).")
    if ctx.analysis.repeats > 1:
        text += " With repeats, each second is the mean over the repeats that ran it."
    return text + _outage_caption(ctx) + _compare_caption(ctx)


# -- 5. endpoints side by side -----------------------------------------------------------------


def _comparison(ctx: _Context, title: str) -> Figure:
    groups = ctx.groups
    # tick labels: "endpoint · phase" on two lines; many endpoints slanted
    two_lines = any(" · " in _label(g, groups) for g in groups)
    rotate = len(groups) > 3 and not two_lines
    low_labels = rotate or two_lines
    fig, axes, layout = _figure(4, ncols=2, panel_h=PANEL_H * 1.05, left=1.15, wspace=0.24,
                                row_gap=1.25 if low_labels else 1.0,
                                bottom=1.25 if low_labels else 0.95)
    lat, rate, err, conn = axes
    runs: list[tuple[int, Callable[[Group], Group | None]]] = [(0, lambda g: g)]
    if ctx.compare is not None:
        runs.append((1, ctx.other))
    n_runs = len(runs)
    x = np.arange(len(groups), dtype=float)
    labels = [_label(g, groups).replace(" · ", "\n") for g in groups]
    width = 0.8 / n_runs

    def pos(i: int, r: int) -> float:
        return x[i] - 0.4 + width * (r + 0.5)

    # (a) total-time percentiles: points with their 95% intervals (a log axis; no bars)
    drawn = False
    offsets = (-0.26, 0.0, 0.26)
    for r, pick in runs:
        for i, g in enumerate(groups):
            run_g = pick(g)
            if run_g is None:
                continue
            for (name, _style, _w), off in zip(PERCENTILE_STYLES, offsets, strict=True):
                e = run_g.estimate(name)
                value = getattr(run_g.total, name)
                if not math.isfinite(value) or value <= 0:
                    continue
                low = e.low if e.known and math.isfinite(e.low) else value
                high = e.high if e.known and math.isfinite(e.high) else value
                px = x[i] + off * (0.55 if n_runs > 1 else 1.0) + (0.13 * (2 * r - 1)
                                                                    if n_runs > 1 else 0)
                c = color(g.endpoint)
                bars = lat.errorbar(px, value, yerr=[[value - low], [high - value]],
                                    fmt=PERCENTILE_MARKERS[name], markersize=9,
                                    color=c, ecolor="#222222" if r == 0 else c,
                                    elinewidth=1.8, capsize=4,
                                    markerfacecolor=c if r == 0 else "white",
                                    markeredgecolor=c, markeredgewidth=1.8,
                                    alpha=1.0 if r == 0 else OTHER_ALPHA, zorder=3)
                if r:
                    for line in bars[2]:
                        line.set_linestyle((0, (3, 2)))
                drawn = True
    lat.set_title("total time p50 / p95 / p99")
    lat.set_ylabel("ms (successful requests)")
    if drawn:
        lat.set_yscale("log")
        _log_axis(lat.yaxis)
        holds = {_holds(ctx, g) for g in groups} - {None}
        if len(holds) == 1:
            _draw_hold(lat, holds.pop(), label=False)
        low_y, high_y = lat.get_ylim()
        lat.set_ylim(low_y / 1.3, high_y * 1.3)
    else:
        _no_data(lat, "no successful requests")

    # (b) requests/s with their intervals
    for r, pick in runs:
        for i, g in enumerate(groups):
            run_g = pick(g)
            if run_g is None or not math.isfinite(run_g.rps):
                continue
            _bar(rate, pos(i, r), run_g.rps, width, color(g.endpoint), r)
            _whisker(rate, pos(i, r), run_g.estimate("rps"), 0.0, r)
    rate.set_title("requests started per second")
    rate.set_ylabel("requests/s")
    rate.set_ylim(bottom=0)

    # (c) failed by class and not started, as shares of the scheduled arrivals
    classes: dict[str, None] = {}
    any_lost = False
    for r, pick in runs:
        for i, g in enumerate(groups):
            run_g = pick(g)
            if run_g is None:
                continue
            bottom = 0.0
            for cls in run_g.errors:
                share = 100.0 * run_g.error_rate_of(cls)
                _bar(err, pos(i, r), share, width, error_color(cls), r, bottom=bottom)
                bottom += share
                classes[cls] = None
            if run_g.failed:
                _whisker(err, pos(i, r) - width * 0.15, run_g.estimate("error_rate"), 0.0, r,
                         scale=100.0)
            share = 100.0 * run_g.not_started_rate
            if share > 0:
                _bar(err, pos(i, r), share, width, NOT_STARTED_FACE, r, bottom=bottom,
                     hatch=NOT_STARTED_HATCH, edge=NOT_STARTED_EDGE)
                _whisker(err, pos(i, r) + width * 0.15, run_g.estimate("not_started_rate"),
                         bottom, r, scale=100.0)
            lost = bottom + share
            any_lost = any_lost or lost > 0
            if lost == 0 and r == 0:
                err.annotate("no errors", xy=(pos(i, r), 0), xytext=(0, 4),
                             textcoords="offset points", ha="center", va="bottom",
                             fontsize=12, color="#555555", rotation=90)
    err.set_title("failed by class, and not started")
    err.set_ylabel("% of scheduled arrivals")
    if any_lost:
        err.set_ylim(bottom=0, top=max(1.0, err.get_ylim()[1]))
    else:
        err.set_ylim(0, 1)
        err.set_yticks([0])
        for t in list(err.texts):  # one statement for the whole panel instead
            t.remove()
        _no_data(err, "no errors: every arrival\nstarted and succeeded", size=17)

    # (d) peak backends, the dedicated pooler's auth logins apart
    auth_drawn = False
    for r, pick in runs:
        for i, g in enumerate(groups):
            run_g = pick(g)
            if run_g is None or run_g.peak_backends is None:
                continue
            _bar(conn, pos(i, r), run_g.peak_backends, width, color(g.endpoint), r)
            top = float(run_g.peak_backends)
            if run_g.peak_auth_backends:
                _bar(conn, pos(i, r), run_g.peak_auth_backends, width, AUTH_COLOR, r,
                     bottom=top, hatch="..", edge="#444444")
                top += run_g.peak_auth_backends
                auth_drawn = True
                if r == 0:
                    conn.annotate(f"+{run_g.peak_auth_backends} auth", xy=(pos(i, r), top),
                                  xytext=(0, 3), textcoords="offset points", ha="center",
                                  va="bottom", fontsize=11, color="#444444")
                    top += 0.06 * (ctx.analysis.limits.get("max_connections") or top)
            if run_g.peak_waiting and r == 0:
                conn.annotate(f"{run_g.peak_waiting} waiting", xy=(pos(i, r), top),
                              xytext=(0, 3), textcoords="offset points", ha="center",
                              va="bottom", fontsize=11, rotation=90 if n_runs > 1 else 0)
    max_conn = ctx.analysis.limits.get("max_connections")
    if max_conn is not None:
        highest = max([float(max_conn)] + [float((g.peak_backends or 0)
                                                 + (g.peak_auth_backends or 0))
                                           for g in groups])
        conn.set_ylim(0, highest * 1.3)
        _limit_line(conn, "max_connections", max_conn)
    conn.set_title("peak Postgres backends")
    conn.set_ylabel("backends")
    for ax in axes:
        ax.set_xticks(x, labels, rotation=20 if rotate else 0, ha="right" if rotate else "center")
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.grid(axis="x", visible=False)
    handles: list = [Line2D([], [], linestyle="none", marker=PERCENTILE_MARKERS[n],
                            markersize=9, color="#444444", label=n)
                     for n, _s, _w in PERCENTILE_STYLES]
    handles.append(Line2D([], [], color="#222222", marker="|", markersize=12, linestyle="none",
                          label="95% interval"))
    handles += [Patch(color=error_color(c), label=f"failed: {c}") for c in classes]
    if any(g.not_started for g in groups) or any(
            o is not None and o.not_started for o in ctx.others.values()):
        handles.append(Patch(facecolor=NOT_STARTED_FACE, edgecolor=NOT_STARTED_EDGE,
                             hatch=NOT_STARTED_HATCH, label=NOT_STARTED_LABEL))
    if auth_drawn:
        handles.append(Patch(facecolor=AUTH_COLOR, edgecolor="#444444", hatch="..",
                             label="auth_query logins (dedicated)"))
    if any(_holds(ctx, g) for g in groups) and drawn:
        handles.append(Line2D([], [], color=HOLD_COLOR, linestyle=(0, (1, 2)), linewidth=1.6,
                              label="client-side work (hold_ms)"))
    if ctx.compare is not None:
        handles += [Patch(facecolor="#888888", edgecolor="#888888",
                          label=f"A: {ctx.analysis.run_id} (filled)"),
                    Patch(facecolor="#888888", alpha=OTHER_ALPHA, edgecolor="#222222",
                          linestyle="--",
                          label=f"B: {ctx.compare.run_id} (faint, dashed outline; "
                                "hollow points)")]
    return _finish(fig, layout, title, handles)


def _bar(ax, x: float, height: float, width: float, face: str, run: int, *,
         bottom: float = 0.0, hatch: str | None = None, edge: str | None = None) -> None:
    """A bar of run A (filled), or of run B (faint, with a dashed outline)."""
    if run == 0:
        ax.bar(x, height, width, bottom=bottom, color=face, hatch=hatch,
               edgecolor=edge or "white", linewidth=0.8 if edge else 0.5, zorder=2)
    else:
        ax.bar(x, height, width, bottom=bottom, color=face, alpha=OTHER_ALPHA, hatch=hatch,
               edgecolor=edge or "#222222", linewidth=1.4, linestyle="--", zorder=2)


def _whisker(ax, x: float, e: an.Estimate, base: float, run: int, scale: float = 1.0) -> None:
    """The 95% interval of a bar's value, as a whisker (dashed for run B)."""
    if not e.known or not (math.isfinite(e.low) and math.isfinite(e.high)):
        return
    if e.high - e.low <= 0:
        return
    (line,) = ax.plot([x, x], [base + scale * e.low, base + scale * e.high],
                      color="#222222", linewidth=1.8, alpha=1.0 if run == 0 else OTHER_ALPHA,
                      linestyle="-" if run == 0 else (0, (3, 2)), zorder=4,
                      solid_capstyle="butt")
    for y in (base + scale * e.low, base + scale * e.high):
        ax.plot([x - 0.06, x + 0.06], [y, y], color=line.get_color(), alpha=line.get_alpha(),
                linewidth=1.8, linestyle=line.get_linestyle(), zorder=4)


def _comparison_caption(ctx: _Context) -> str:
    return ("Every endpoint of the scenario side by side, with 95% intervals as whiskers "
            "(how they are made: \"How the numbers are made\"): total-time p50/p95/p99 of "
            "successful requests (points on a log axis), requests started per second, failed "
            "requests by class and arrivals not started (hatched) as shares of everything "
            "scheduled, and the peak of Postgres backends (the dedicated pooler's auth_query "
            "logins stacked apart)." + _compare_caption(ctx))


@dataclass(frozen=True)
class _Spec:
    title: str
    draw: Callable[[_Context, str], Figure]
    caption: Callable[[_Context], str]
    style: dict


FIGURES: dict[str, _Spec] = {
    "headline": _Spec("Clients and Postgres backends", _headline, _headline_caption,
                      HEADLINE_STYLE),
    "latency-over-time": _Spec("Latency over time", _latency_over_time,
                               _latency_over_time_caption, STYLE),
    "latency-distribution": _Spec("Latency distribution", _latency_distribution,
                                  _latency_distribution_caption, STYLE),
    "connections": _Spec("Connections over time", _connections, _connections_caption, STYLE),
    "throughput-errors": _Spec("Throughput and errors", _throughput_errors,
                               _throughput_errors_caption, STYLE),
    "comparison": _Spec("Endpoints compared", _comparison, _comparison_caption, STYLE),
}
KINDS = tuple(FIGURES)
