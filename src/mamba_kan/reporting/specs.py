"""Every figure of the report as data: one function per figure returns a :class:`FigureSpec`.

A spec holds what is drawn (series with their intervals, reference lines such as a task's known floor or a baseline,
heatmaps), how (axis labels with units, log or linear scales, tick labels, legend labels, colours from
:mod:`mamba_kan.reporting.style`), what it means (the caption) and, where there is nothing to draw, why
(``skip``). Two thin renderers consume the same spec: :mod:`mamba_kan.reporting.figures` (matplotlib, the static
files) and :mod:`mamba_kan.reporting.interactive` (plotly, the dashboard), so the two never disagree on what a
figure shows or on when it is skipped. Nothing here imports matplotlib or plotly.

Strings in a spec are plain text; each renderer escapes them for its own markup (mathtext, HTML).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mamba_kan.design import FFN_LEVELS, MIXER_LEVELS, REFERENCE_VARIANT, try_parse_variant, variant_name
from mamba_kan.reporting.data import (
    ReportData,
    cell_stats,
    curve_summary,
    floors_and_baselines,
    loss_label,
    speed_overall,
    speed_summary,
)
from mamba_kan.reporting.fmt import number, si
from mamba_kan.reporting.splines import SplineSet
from mamba_kan.reporting.style import (
    EFFECT_CMAP,
    FFN_COLOURS,
    MIXER_COLOURS,
    OKABE_ITO,
    PVALUE_CMAP,
    variant_styles,
)

#: What each figure shows (keys are figure kinds; the dashboard and the README print them under the figure).
CAPTIONS = {
    "learning_curves": "Mean over seeds (line) with a 95% t-interval over seeds (band); completed runs only. "
    "Left: training loss; right: the task's primary validation metric. Positive error metrics (loss, MSE) are "
    "drawn on a log axis with the geometric mean and a t-interval of the log values (it stays positive). "
    "Dashed grey: the task's known floor (best achievable value); dotted: baselines where the task reports them.",
    "final_metric": "Test value of the primary metric: each point is one seed; the bar is the mean with its 95% "
    "interval from the analysis (a t-interval unless `analyze --interval bca`). A cross marks a variant without a completed run. Dashed grey: the "
    "task's known floor; dotted: baselines where the task reports them.",
    "interaction": "Interaction plot: cell means (95% interval from the analysis) against the feedforward type, one line per "
    "sequence mixer. Non-parallel lines suggest an ffn x mixer interaction.",
    "speed": "Training throughput measured during the grid (timed training steps only; runs may share the machine). "
    f"Slowdown = {REFERENCE_VARIANT} steps/s / variant steps/s on the same task; the overall value is the "
    "geometric mean over tasks, annotated with parameters and forward FLOPs per token.",
    "perf_vs_params": "Primary metric (mean, 95% interval from the analysis) against parameter count, the fair-comparison view of "
    "Yu et al. (2024). Variants are parameter-matched, so points should share an x position.",
    "perf_vs_flops": "Primary metric (mean, 95% interval from the analysis) against forward FLOPs per token (Yu et al. 2024 compare "
    "at equal parameters and at equal FLOPs).",
    "pairwise": "Left: Holm-adjusted p-values of two-sided paired Wilcoxon signed-rank tests (* = below alpha). "
    "Right: paired effect size d_z, oriented so that positive = the row variant is better.",
    "cd_diagram": "Critical-difference diagram (Demšar 2006): average ranks, 1 = best; bars join variants whose "
    "Holm-adjusted Wilcoxon test is not significant (Benavoli et al. 2016).",
    "contrasts": "Activation (D1 = bspline - mlp) and topology (D2 = kan - bspline) contrasts with 95% confidence "
    "intervals, in the metric's units (log units, i.e. log ratios, for MSE-type metrics analysed on log scale); filled = significant after Holm. Per mixer and pooled; 'x mixer' rows "
    "are the interaction (transformer - mamba).",
    "learned_functions": "Learned 1-D functions from each spline variant's final weights (lowest seed): B-spline MLP "
    "activations per neuron and a sample of KAN edge functions phi(x) = w_b silu(x) + w_s sum c_m B_m(x); grey "
    "dotted: silu(x), the base function, for reference.",
}
#: Learned functions: spline modules per variant and functions per module that a figure shows.
MAX_MODULES = 4
MAX_CURVES = 8
#: Metrics drawn on a log axis (positive, lower is better, falling over decades during training).
LOG_METRICS = frozenset({"loss", "mse", "rmse", "mae", "nll", "bpb", "perplexity"})
_MISSING_COLOUR = "#808080"
_REF_COLOUR = "#4d4d4d"


class SkipFigure(Exception):
    """Nothing to draw for this figure; the message says why (kept for callers that build figures directly)."""


# --------------------------------------------------------------------------------------------------------------
# the spec
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Series:
    """One drawn series. ``kind``: "line" (``band`` draws low/high as a filled band), "points", "errorbar" (low/high
    on y, or ``xlow``/``xhigh`` on x), "bar", "barh" (bar length in ``x`` for barh), "missing" (a cross at
    each x in the middle of the axis: no data). ``group``: the variant it belongs to (the dashboard's filter and
    legend group). ``label``: the legend entry (None: not in the legend). ``filled``: per point, open marker when
    False."""

    kind: str
    x: list[Any]
    y: list[Any]
    label: str | None = None
    group: str | None = None
    colour: str = "#000000"
    dash: str = "solid"  # solid | dash | dot | dashdot
    marker: str | None = None  # circle | square | triangle | diamond | x | hline
    low: list[float] | None = None
    high: list[float] | None = None
    xlow: list[float] | None = None
    xhigh: list[float] | None = None
    band: bool = False
    hatch: str | None = None  # "/" (mamba) or "." (no mixer)
    width: float | None = None
    alpha: float = 1.0
    size: float = 6.0
    filled: list[bool] | None = None
    hover: list[str] | None = None  # one per point, or a single text for the whole series


@dataclass
class RefLine:
    """A reference line: ``axis`` "y" (horizontal, at y = value) or "x". ``label`` None: no legend entry (the zero or
    no-slowdown line). ``style``: "floor" (dashed), "baseline" (dotted), "zero" (thin solid)."""

    axis: str
    value: float
    label: str | None = None
    style: str = "zero"


@dataclass
class Heatmap:
    """A matrix with row/column labels; NaN cells are blank. ``text``: the annotation of each cell."""

    z: list[list[float]]
    labels: list[str]
    text: list[list[str]]
    zmin: float
    zmax: float
    cmap: str
    colourbar: str


@dataclass
class Annotation:
    x: float
    y: float
    text: str


@dataclass
class Panel:
    """One subplot. ``xticks``/``yticks``: (positions, labels) for categorical axes; ``xlim``: fixed range."""

    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    xscale: str = "linear"
    yscale: str = "linear"
    series: list[Series] = field(default_factory=list)
    lines: list[RefLine] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)
    heatmap: Heatmap | None = None
    xticks: tuple[list[float], list[str]] | None = None
    yticks: tuple[list[float], list[str]] | None = None
    xlim: tuple[float, float] | None = None
    grid: str = "both"  # both | x | y
    reversed_y: bool = False


@dataclass
class FigureSpec:
    """A whole figure: panels laid out in ``ncols`` columns of ``panel_size`` inches each (matplotlib) and the same
    grid of subplots (plotly). ``skip``: why nothing is drawn (then ``panels`` is empty). ``cd``: the critical-
    difference record of a CD diagram (drawn by the analysis' own plot function, static only)."""

    kind: str
    title: str
    caption: str
    panels: list[Panel] = field(default_factory=list)
    ncols: int = 3
    panel_size: tuple[float, float] = (4.2, 3.2)
    skip: str | None = None
    task: str | None = None
    cd: dict[str, Any] | None = None

    @property
    def drawable(self) -> bool:
        return self.skip is None


def skipped(kind: str, reason: str, task: str | None = None) -> FigureSpec:
    return FigureSpec(kind=kind, title="", caption=CAPTIONS[kind], skip=reason, task=task)


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------
def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, int | float | np.floating | np.integer) and math.isfinite(float(v))


def _ref_lines(data: ReportData, task: str) -> list[RefLine]:
    """The task's known floor and its baselines (``baseline_*`` test metrics) as horizontal lines."""
    floor, baselines = floors_and_baselines(data, task)
    out = []
    if floor is not None:
        out.append(RefLine("y", floor, f"floor {number(floor)} (best achievable)", "floor"))
    for name, value in baselines.items():
        out.append(
            RefLine("y", value, f"{name.removeprefix('baseline_')} baseline {number(value)}", "baseline")
        )
    return out


def _positive_log_metric(metric: str, values: np.ndarray) -> bool:
    v = values[np.isfinite(values)]
    return metric in LOG_METRICS and v.size > 0 and bool(np.all(v > 0))


def _log_label(label: str) -> str:
    """``validation mse (lower is better)`` -> ``validation mse (lower is better; log scale)``."""
    return label[:-1] + "; log scale)" if label.endswith(")") else label + " (log scale)"


def _style_kwargs(model: str, styles: dict[str, Any]) -> dict[str, Any]:
    st = styles[model]
    return {"colour": st.colour, "dash": st.plotly_dash, "marker": _MARKER[st.plotly_symbol]}


_MARKER = {"circle": "circle", "square": "square", "triangle-up": "triangle", "diamond": "diamond"}


def _hatch(model: str) -> str | None:
    v = try_parse_variant(model)
    return None if v is None or v.mixer == "transformer" else ("/" if v.mixer == "mamba" else ".")


# --------------------------------------------------------------------------------------------------------------
# learning curves
# --------------------------------------------------------------------------------------------------------------
def learning_curves(data: ReportData, task: str) -> FigureSpec:
    """Two panels: mean training loss and mean validation primary metric against step; band = 95% t-interval
    (in log space on a log axis), floor and baselines where known."""
    metric = data.metric.get(task)
    panels_in = [("train", "loss", f"training {loss_label(data, task)}")]
    if metric:
        panels_in.append(("val", metric, f"validation {data.metric_label(task)}"))
    styles = variant_styles(data.models)
    refs = _ref_lines(data, task)
    panels = []
    for split, m, label in panels_in:
        raw = curve_summary(data, task, split, m)
        if raw.empty:
            continue
        log = _positive_log_metric(m, raw["mean"].to_numpy(float))
        s = curve_summary(data, task, split, m, log=True) if log else raw
        p = Panel(xlabel="training step", ylabel=_log_label(label) if log else label,
                  yscale="log" if log else "linear")  # fmt: skip
        for model in data.models:
            c = s[s["model"] == model]
            if c.empty:
                continue
            hover = [
                f"{model} step {st}: {number(v)} (n={n})" for st, v, n in zip(c["step"], c["mean"], c["n"])
            ]
            p.series.append(Series("line", list(c["step"]), list(c["mean"]), label=model, group=model,
                                   low=list(c["low"]), high=list(c["high"]), band=True, hover=hover,
                                   **{**_style_kwargs(model, styles), "marker": None}))  # fmt: skip
        # the floor and baselines are values of the primary metric (the training loss too when it is the metric)
        if m == metric:
            p.lines = list(refs)
        panels.append(p)
    if not panels:
        return skipped("learning_curves", f"no learning curves of completed runs for {task}", task)
    return FigureSpec("learning_curves", f"Learning curves: {task}", CAPTIONS["learning_curves"], panels,
                      ncols=2, task=task)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# final metric and interaction
# --------------------------------------------------------------------------------------------------------------
def _tasks(data: ReportData, tasks: Sequence[str] | None) -> list[str]:
    return list(data.tasks if tasks is None else tasks)


def final_metric(data: ReportData, tasks: Sequence[str] | None = None) -> FigureSpec:
    """One panel per task: the seeds as points, the mean with its 95% interval, missing variants marked."""
    tasks = _tasks(data, tasks)
    cs = cell_stats(data)
    cs = cs[cs["task"].isin(tasks)]
    if not (cs["n"] > 0).any():
        return skipped("final_metric", "no completed run has a value of its primary metric", _one(tasks))
    styles = variant_styles(data.models)
    runs = data.completed
    panels = []
    for task in tasks:
        # positive error metrics (MSE, loss) spread multiplicatively: a log axis keeps seeds and baselines visible
        log = _positive_log_metric(data.metric.get(task) or "", runs.loc[runs["task"] == task, "primary_value"]
                                   .to_numpy(float))  # fmt: skip
        label = data.metric_label(task)
        p = Panel(title=task, ylabel=_log_label(label) if log else label, grid="y", yscale="log" if log else "linear",
                  xticks=(list(range(len(data.models))), list(data.models)), lines=_ref_lines(data, task))  # fmt: skip
        for i, model in enumerate(data.models):
            v = data.values(task, model)
            row = cs[(cs["task"] == task) & (cs["model"] == model)].iloc[0]
            if v.empty:
                p.series.append(Series("missing", [i], [None], group=model, colour=_MISSING_COLOUR,
                                       hover=[f"{model}: no completed run"]))  # fmt: skip
                continue
            ids = runs[(runs["task"] == task) & (runs["model"] == model)].set_index("seed")["run_id"]
            jitter = np.linspace(-0.18, 0.18, len(v)) if len(v) > 1 else np.zeros(1)
            kw = _style_kwargs(model, styles)
            p.series.append(Series("points", list(i + jitter), list(v.to_numpy(float)), group=model, alpha=0.75,
                                   size=5, hover=[f"{model} seed {s}: {number(x)} ({ids.get(s, '')})"
                                                  for s, x in v.items()], **kw))  # fmt: skip
            lo, hi = row["ci_low"], row["ci_high"]
            ok = _finite(lo) and _finite(hi)
            p.series.append(Series("errorbar", [i + 0.3], [row["mean"]], label=model, group=model,
                                   low=[lo] if ok else None, high=[hi] if ok else None, size=12,
                                   hover=[f"{model}: mean {number(row['mean'])}, 95% CI [{number(lo)}, "
                                          f"{number(hi)}], n={int(row['n'])}"],
                                   **{**kw, "marker": "hline"}))  # fmt: skip
        panels.append(p)
    return FigureSpec("final_metric", "Final test metric per variant (points: seeds; bar: mean with 95% CI)",
                      CAPTIONS["final_metric"], panels, ncols=3, panel_size=(4.6, 3.4), task=_one(tasks))  # fmt: skip


def _one(tasks: Sequence[str]) -> str | None:
    return tasks[0] if len(tasks) == 1 else None


def interaction(data: ReportData, tasks: Sequence[str] | None = None) -> FigureSpec:
    """One panel per task with two feedforward types: mean (95% CI) against ffn type, one line per mixer."""
    tasks = _tasks(data, tasks)
    cs = cell_stats(data)
    panels = []
    for task in tasks:
        rows = cs[(cs["task"] == task) & (cs["n"] > 0)].set_index("model")
        p = Panel(title=task, xlabel="feedforward block", ylabel=data.metric_label(task),
                  xticks=(list(range(len(FFN_LEVELS))), list(FFN_LEVELS)))  # fmt: skip
        for k, mixer in enumerate(MIXER_LEVELS):
            cells = [(j, rows.loc[variant_name(f, mixer)]) for j, f in enumerate(FFN_LEVELS)
                     if variant_name(f, mixer) in rows.index]  # fmt: skip
            if len(cells) < 2:
                continue
            p.series.append(Series(
                "errorbar", [j + (k - 0.5) * 0.06 for j, _ in cells],  # a small dodge: intervals do not overlap
                [r["mean"] for _, r in cells], label=mixer, colour=MIXER_COLOURS[mixer],
                dash={"transformer": "solid", "mamba": "dash"}.get(mixer, "dot"), marker="circle",
                low=[r["ci_low"] if _finite(r["ci_low"]) else r["mean"] for _, r in cells],
                high=[r["ci_high"] if _finite(r["ci_high"]) else r["mean"] for _, r in cells],
                hover=[f"{mixer}, {FFN_LEVELS[j]}: mean {number(r['mean'])}" for j, r in cells]))  # fmt: skip
        if p.series:
            panels.append(p)
    if not panels:
        return skipped("interaction", "no task has two feedforward types with completed runs", _one(tasks))
    return FigureSpec("interaction", "Interaction: feedforward type x sequence mixer (mean, 95% CI)",
                      CAPTIONS["interaction"], panels, task=_one(tasks))  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# speed and efficiency
# --------------------------------------------------------------------------------------------------------------
def speed(data: ReportData) -> FigureSpec:
    """Steps/s per task and variant, slowdown vs the reference variant per task, and the overall slowdown with
    parameters and FLOPs/token."""
    sp = speed_summary(data)
    if not np.isfinite(sp["steps_per_sec"]).any():
        return skipped("speed", "no completed run recorded its training speed")
    styles = variant_styles(data.models)
    has_ref = bool(np.isfinite(sp["slowdown"]).any())
    width = 0.8 / max(1, len(data.models))
    ticks = (list(range(len(data.tasks))), list(data.tasks))
    panels = [Panel(title="throughput per task (bars: mean; whiskers: sd over seeds)", yscale="log", grid="y",
                    ylabel="training steps / s (log scale)", xticks=ticks)]  # fmt: skip
    if has_ref:
        panels.append(Panel(title="slowdown per task", ylabel=f"slowdown vs {REFERENCE_VARIANT} (x, log scale)",
                            yscale="log", grid="y", xticks=ticks, lines=[RefLine("y", 1.0)]))  # fmt: skip
    for i, m in enumerate(data.models):
        rows = sp[sp["model"] == m].set_index("task").reindex(data.tasks)
        xs = [j + (i - (len(data.models) - 1) / 2) * width for j in range(len(data.tasks))]
        mean, sd = rows["steps_per_sec"].to_numpy(float), rows["steps_per_sec_sd"].to_numpy(float)
        ok = np.isfinite(mean)
        info = [
            f"{si(p)} params, {si(f)} FLOPs/token" for p, f in zip(rows["params"], rows["flops_per_token"])
        ]
        kw = {"group": m, "colour": styles[m].colour, "hatch": _hatch(m), "width": width}
        panels[0].series.append(Series(
            "bar", [x for x, o in zip(xs, ok) if o], list(mean[ok]), label=m,
            low=list((mean - np.nan_to_num(sd))[ok]), high=list((mean + np.nan_to_num(sd))[ok]),
            hover=[f"{m}: {number(v, 3)} steps/s; {h}" for v, h, o in zip(mean, info, ok) if o], **kw))  # fmt: skip
        if has_ref:
            slow = rows["slowdown"].to_numpy(float)
            ok2 = np.isfinite(slow)
            panels[1].series.append(Series(
                "bar", [x for x, o in zip(xs, ok2) if o], list(slow[ok2]),
                hover=[f"{m}: {number(v, 3)}x the time per step of {REFERENCE_VARIANT}" for v in slow[ok2]],
                **kw))  # fmt: skip
    if has_ref:
        ov = speed_overall(data, sp)
        ov = ov[np.isfinite(ov["slowdown"])]
        ys = list(range(len(ov)))[::-1]
        p = Panel(
            title="overall",
            xscale="log",
            grid="x",
            yticks=(ys, list(ov["model"])),
            xlabel=f"slowdown vs {REFERENCE_VARIANT} (x, geometric mean over tasks)",
            lines=[RefLine("x", 1.0)],
        )
        lo = float(ov["slowdown"].min()) if len(ov) else 1.0
        hi = float(ov["slowdown"].max()) if len(ov) else 1.0
        p.xlim = (min(0.5, lo * 0.8), hi * 8)  # room for the annotations
        for y, r in zip(ys, ov.itertuples(index=False)):
            text = f" {r.slowdown:.2f}x  ({si(r.params)} params, {si(r.flops_per_token)} FLOPs/tok)"
            p.series.append(Series("barh", [r.slowdown], [y], group=r.model, colour=styles[r.model].colour,
                                   hatch=_hatch(r.model), width=0.8, hover=[text.strip()]))  # fmt: skip
            p.annotations.append(Annotation(r.slowdown, y, text))
        panels.append(p)
    return FigureSpec("speed", "Training speed", CAPTIONS["speed"], panels, ncols=3, panel_size=(5.0, 3.6))


def performance_vs(data: ReportData, x: str, tasks: Sequence[str] | None = None) -> FigureSpec:
    """Primary metric against ``x`` ("params" or "flops_per_token"), one panel per task."""
    kind = {"params": "perf_vs_params", "flops_per_token": "perf_vs_flops"}[x]
    label = {"params": "parameters", "flops_per_token": "forward FLOPs per token"}[x]
    tasks = _tasks(data, tasks)
    cs = cell_stats(data).merge(speed_summary(data)[["task", "model", x]], on=["task", "model"])
    cs = cs[(cs["n"] > 0) & np.isfinite(cs[x]) & cs["task"].isin(tasks)]
    if cs.empty:
        return skipped(kind, f"no completed run recorded {label}", _one(tasks))
    styles = variant_styles(data.models)
    panels = []
    for task in [t for t in tasks if (cs["task"] == t).any()]:
        rows = cs[cs["task"] == task]
        xs = rows[x].to_numpy(float)
        med = float(np.median(xs))
        spread = (xs.max() - xs.min()) / med * 100 if med > 0 else 0.0
        p = Panel(
            title=task, xlabel=f"{label} (spread {spread:.1f}% of median)", ylabel=data.metric_label(task)
        )
        if med > 0:  # never zoom into a few-percent spread: matched variants should look matched
            p.xlim = (min(xs.min(), 0.85 * med), max(xs.max(), 1.15 * med))
        for r in rows.itertuples(index=False):
            ok = _finite(r.ci_low) and _finite(r.ci_high)
            p.series.append(Series("errorbar", [getattr(r, x)], [r.mean], label=r.model, group=r.model,
                                   low=[r.ci_low] if ok else None, high=[r.ci_high] if ok else None,
                                   hover=[f"{r.model}: {si(getattr(r, x))} {label}, mean {number(r.mean)}"],
                                   **_style_kwargs(r.model, styles)))  # fmt: skip
        panels.append(p)
    return FigureSpec(kind, f"Performance against {label} (mean, 95% CI)", CAPTIONS[kind], panels,
                      task=_one(tasks))  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------------------------
def pairwise_source(data: ReportData, task: str | None) -> tuple[dict[str, Any], bool, str]:
    """(record holding pairwise results, higher_is_better, scope title) of a task or, for None, across tasks.
    Raises SkipFigure when there is none."""
    if data.analysis is None:
        raise SkipFigure(data.analysis_note or "no statistical analysis")
    if task is None:
        rec = data.analysis.get("across")
        if rec is None:
            raise SkipFigure("across-task statistics need at least 2 tasks")
        return rec, True, f"across {len(rec.get('tasks') or [])} tasks (tasks as blocks, scores in task SDs)"
    rec = data.task_analysis(task)
    if rec is None:
        raise SkipFigure(f"no analysis of {task}")
    return rec, bool(rec.get("higher_is_better", True)), f"{task} (seeds as blocks)"


def pairwise_matrices(
    rec: dict[str, Any], higher_is_better: bool
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(models, Holm p-value matrix, oriented d_z matrix) from an analysis record; NaN where undefined.

    ``dz[i, j]`` > 0 means model i is better than model j (d_z of i - j, sign-flipped when lower is better).
    """
    pm = rec.get("pairwise_p_matrix") or {}
    models = list(pm)
    if len(models) < 2:
        raise SkipFigure("fewer than 2 variants in the pairwise tests")
    k = len(models)
    p = np.full((k, k), np.nan)
    dz = np.full((k, k), np.nan)
    idx = {m: i for i, m in enumerate(models)}
    for a in models:
        for b, v in (pm[a] or {}).items():
            if b in idx and v is not None:
                p[idx[a], idx[b]] = float(v)
    sign = 1.0 if higher_is_better else -1.0
    for r in rec.get("pairwise") or []:
        if r["a"] in idx and r["b"] in idx and r.get("d_z") is not None:
            i, j = idx[r["a"]], idx[r["b"]]
            dz[i, j] = sign * float(r["d_z"])
            dz[j, i] = -sign * float(r["d_z"])
    return models, p, dz


def pairwise(data: ReportData, task: str | None) -> FigureSpec:
    """Holm p-values and oriented d_z of the pairwise Wilcoxon tests, as two heatmaps."""
    try:
        rec, hib, scope = pairwise_source(data, task)
        models, p, dz = pairwise_matrices(rec, hib)
    except SkipFigure as exc:
        return skipped("pairwise", str(exc), task)
    if not np.isfinite(p).any():
        return skipped("pairwise", f"no pairwise test could be computed ({scope})", task)
    alpha = data.alpha()
    lim = max(1.0, min(3.0, float(np.nanmax(np.abs(dz))) if np.isfinite(dz).any() else 1.0))
    ptext = [
        ["" if not np.isfinite(v) else number(v, 2) + ("*" if v < alpha else "") for v in row] for row in p
    ]
    dtext = [["" if not np.isfinite(v) else f"{v:.1f}" for v in row] for row in dz]
    k = len(models)
    panels = [
        Panel(title="Wilcoxon signed-rank, Holm", grid="none", reversed_y=True,
              heatmap=Heatmap(p.tolist(), models, ptext, 0.0, 1.0, PVALUE_CMAP, "Holm-adjusted p")),
        Panel(title="effect size d_z", grid="none", reversed_y=True,
              heatmap=Heatmap(dz.tolist(), models, dtext, -lim, lim, EFFECT_CMAP, "d_z (row better > 0)")),
    ]  # fmt: skip
    return FigureSpec("pairwise", f"Pairwise comparisons: {scope}", CAPTIONS["pairwise"], panels, ncols=2,
                      panel_size=(0.55 * k + 2.6, 0.5 * k + 1.8), task=task)  # fmt: skip


def cd_diagram(data: ReportData, task: str | None) -> FigureSpec:
    """The critical-difference diagram of the analysis (drawn by ``analysis.cd_diagram.plot_cd_diagram``)."""
    try:
        rec, _, scope = pairwise_source(data, task)
    except SkipFigure as exc:
        return skipped("cd_diagram", str(exc), task)
    cd = rec.get("cd_diagram")
    if not cd:
        return skipped(
            "cd_diagram", f"no rank test ({scope}): the Friedman test needs 2 complete blocks", task
        )
    return FigureSpec("cd_diagram", f"Average ranks {scope}; bars: Wilcoxon-Holm n.s.", CAPTIONS["cd_diagram"],
                      task=task, cd=cd)  # fmt: skip


def contrast_label(c: dict[str, Any]) -> str:
    """``D1 pooled``, ``D1 | mamba``, ``D1 x mixer``."""
    scope = c.get("scope")
    if scope == "within":
        return f"{c['name']} | {c.get('mixer')}"
    if scope == "interaction":
        return f"{c['name']} x mixer"
    return f"{c['name']} pooled"


def contrasts(data: ReportData, tasks: Sequence[str] | None = None) -> FigureSpec:
    """Forest plot of the D1/D2 contrasts (estimate, 95% CI) per task; filled = significant after Holm."""
    tasks = _tasks(data, tasks)
    if data.analysis is None:
        return skipped("contrasts", data.analysis_note or "no statistical analysis", _one(tasks))
    est = {t: [c for c in (data.task_analysis(t) or {}).get("contrasts", []) if c.get("estimate") is not None]
           for t in tasks}  # fmt: skip
    tasks = [t for t in tasks if est[t]]
    if not tasks:
        return skipped("contrasts", "no estimable D1/D2 contrast (needs mlp, bspline and kan variants with "
                       "paired seeds)", _one(list(est)))  # fmt: skip
    colours = {"K": OKABE_ITO["black"], "D1": FFN_COLOURS["bspline"], "D2": FFN_COLOURS["kan"]}
    names = {"K": "K kan - mlp", "D1": "D1 activation (bspline - mlp)", "D2": "D2 topology (kan - bspline)"}
    panels = []
    for task in tasks:
        rows = est[task]
        ys = list(range(len(rows)))[::-1]
        hib = data.higher_is_better.get(task)
        better = "> 0 favours the spline/KAN level" if hib else "< 0 favours the spline/KAN level"
        verdict = ((data.task_analysis(task) or {}).get("verdict") or {}).get("verdict", "not estimable")
        unit = data.metric.get(task)
        if ((data.task_analysis(task) or {}).get("scale")) == "log":
            unit = f"log({unit}), i.e. a log ratio"
        p = Panel(title=f"{task}: {verdict}", xlabel=f"estimate in {unit} ({better})", grid="x",
                  yticks=(ys, [contrast_label(c) for c in rows]), lines=[RefLine("x", 0.0)])  # fmt: skip
        for name in names:
            sub = [(y, c) for y, c in zip(ys, rows) if c["name"] == name]
            if not sub:
                continue
            ok = [c.get("ci_low") is not None and c.get("ci_high") is not None for _, c in sub]
            p.series.append(Series(
                "errorbar", [c["estimate"] for _, c in sub], [y for y, _ in sub], label=names[name],
                colour=colours[name], marker="circle", dash="none", size=7,
                xlow=[c["ci_low"] if o else c["estimate"] for (_, c), o in zip(sub, ok)],
                xhigh=[c["ci_high"] if o else c["estimate"] for (_, c), o in zip(sub, ok)],
                filled=[bool(c.get("significant")) for _, c in sub],
                hover=[f"{contrast_label(c)}: {number(c['estimate'])}; {c.get('statement') or ''}; p_holm "
                       f"{number(c.get('p_holm'), 3)}, n={c.get('n_pairs')}" for _, c in sub]))  # fmt: skip
        if p.series:
            panels.append(p)
    if not panels:
        return skipped("contrasts", "no estimable K/D1/D2 contrast", _one(tasks))
    n_rows = max(len(est[t]) for t in tasks)
    # 0.42 in per row: the contrast labels (7 pt) never touch
    return FigureSpec("contrasts", "Activation (D1 = bspline - mlp) vs topology (D2 = kan - bspline), 95% CI",
                      CAPTIONS["contrasts"], panels, ncols=2, panel_size=(5.0, 0.42 * n_rows + 1.4),
                      task=_one(tasks))  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# learned functions
# --------------------------------------------------------------------------------------------------------------
def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def function_panel(s: SplineSet, module: str, colour: str, title: str = "") -> Panel:
    """Up to MAX_CURVES functions of one module of one run, with silu (the base function) labelled."""
    p = Panel(title=title, xlabel="input x", ylabel="phi(x)")
    for i, row in enumerate(s.functions[module][:MAX_CURVES]):
        p.series.append(Series("line", list(s.x), list(row), group=s.model, colour=colour, alpha=0.85,
                               hover=[f"{s.model} {module}[{i}]"]))  # fmt: skip
    p.series.append(Series("line", list(s.x), list(silu(s.x)), label="silu(x) (reference)", colour="#808080",
                           dash="dot"))  # fmt: skip
    return p


def learned_functions(sets: Sequence[SplineSet], task: str) -> FigureSpec:
    """Rows: spline variants; columns: their spline modules (first MAX_MODULES)."""
    if not sets:
        return skipped("learned_functions", f"no spline variant with a final model on {task}", task)
    ncols = min(MAX_MODULES, max(len(s.functions) for s in sets))
    styles = variant_styles([s.model for s in sets])
    panels: list[Panel] = []
    for s in sets:
        modules = list(s.functions)[:ncols]
        for c in range(ncols):
            if c >= len(modules):
                panels.append(Panel())  # an empty slot keeps one variant per row
                continue
            n = min(MAX_CURVES, s.functions[modules[c]].shape[0])
            panels.append(function_panel(s, modules[c], styles[s.model].colour,
                                         f"{s.model} seed {s.seed}\n{modules[c]} (first {n})"))  # fmt: skip
    return FigureSpec("learned_functions", f"Learned functions after training: {task}",
                      CAPTIONS["learned_functions"], panels, ncols=ncols,
                      panel_size=(3.6 if ncols > 1 else 7.2, 2.8), task=task)  # fmt: skip


def series_frame(spec: FigureSpec) -> pd.DataFrame:
    """The spec's data as one long table (panel, series, kind, label, group, x, y, low, high): for tests and for
    exporting exactly what a figure draws."""
    rows = []
    for i, p in enumerate(spec.panels):
        for j, s in enumerate(p.series):
            for k, (x, y) in enumerate(zip(s.x, s.y)):
                rows.append({"panel": i, "series": j, "kind": s.kind, "label": s.label, "group": s.group, "x": x,
                             "y": y, "low": None if s.low is None else s.low[k],
                             "high": None if s.high is None else s.high[k]})  # fmt: skip
    return pd.DataFrame(rows)
