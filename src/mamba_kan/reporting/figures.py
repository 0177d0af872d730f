"""Static figures (matplotlib, object API: no pyplot global state, so safe in a headless build and in a notebook).

Each builder takes a :class:`~mamba_kan.reporting.data.ReportData` and returns a ``matplotlib.figure.Figure``, or
raises :class:`SkipFigure` saying why there is nothing to draw (the report lists the reason). Colours, dashes and
markers come from :mod:`mamba_kan.reporting.style` (Okabe-Ito; ffn = colour, mixer = dash/marker). Every axis is
labelled with its quantity and unit; every interval says what it is in the figure's caption (see ``CAPTIONS``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter

from mamba_kan.analysis.data import FFN_LEVELS, MIXER_LEVELS, parse_variant
from mamba_kan.reporting.data import (
    SPEED_REFERENCE,
    ReportData,
    cell_stats,
    curve_summary,
    speed_overall,
    speed_summary,
)
from mamba_kan.reporting.splines import SplineSet
from mamba_kan.reporting.style import (
    EFFECT_CMAP,
    FFN_COLOURS,
    MIXER_COLOURS,
    PVALUE_CMAP,
    VariantStyle,
    mpl_text,
    variant_styles,
)
from mamba_kan.reporting.tables import si

FORMATS = ("png", "svg", "pdf")
# reproducible files: no timestamps in the vector formats
_METADATA: dict[str, dict[str, Any]] = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
_PANEL = (4.2, 3.2)  # inches per panel

#: What each figure shows, for the dashboard and the README (keys are figure names without task suffixes).
CAPTIONS = {
    "learning_curves": "Mean over seeds (line) with a 95% t-interval over seeds (band); completed runs only. "
    "Left: training loss; right: the task's primary validation metric.",
    "final_metric": "Test value of the primary metric: each point is one seed; the bar is the mean with its 95% BCa "
    "bootstrap interval (from the analysis). A cross marks a variant without a completed run.",
    "interaction": "Interaction plot: cell means (95% BCa interval) against the feedforward type, one line per "
    "sequence mixer. Non-parallel lines suggest an ffn x mixer interaction.",
    "speed": "Training throughput measured during the grid (timed training steps only; runs may share the machine). "
    "Slowdown = mlp_transformer steps/s / variant steps/s on the same task; the overall value is the "
    "geometric mean over tasks, annotated with parameters and forward FLOPs per token.",
    "perf_vs_params": "Primary metric (mean, 95% BCa interval) against parameter count, the fair-comparison view of "
    "Yu et al. (2024). Variants are parameter-matched, so points should share an x position.",
    "perf_vs_flops": "Primary metric (mean, 95% BCa interval) against forward FLOPs per token (Yu et al. 2024 compare "
    "at equal parameters and at equal FLOPs).",
    "pairwise": "Left: Holm-adjusted p-values of two-sided paired Wilcoxon signed-rank tests (* = below alpha). "
    "Right: paired effect size d_z, oriented so that positive = the row variant is better.",
    "cd_diagram": "Critical-difference diagram (Demšar 2006): average ranks, 1 = best; bars join variants whose "
    "Holm-adjusted Wilcoxon test is not significant (Benavoli et al. 2016).",
    "contrasts": "Activation (D1 = bspline - mlp) and topology (D2 = kan - bspline) contrasts with 95% confidence "
    "intervals, in the metric's units; filled = significant after Holm. Per mixer and pooled; 'x mixer' rows "
    "are the interaction (transformer - mamba).",
    "learned_functions": "Learned 1-D functions from each spline variant's final weights (lowest seed): B-spline MLP "
    "activations per neuron and a sample of KAN edge functions phi(x) = w_b silu(x) + w_s sum c_m B_m(x); grey "
    "dotted: silu for reference.",
}


class SkipFigure(Exception):
    """Nothing to draw for this figure; the message says why."""


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------
def _panels(n: int, ncols: int = 3, panel: tuple[float, float] = _PANEL) -> tuple[Figure, list[Axes]]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows + 0.6), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _legend(
    fig: Figure, models: Sequence[str], styles: dict[str, VariantStyle], markers: bool = True
) -> None:
    handles = [
        Line2D(
            [],
            [],
            color=styles[m].colour,
            linestyle=styles[m].mpl_dash,
            marker=styles[m].mpl_marker if markers else None,
            label=mpl_text(m),
        )  # fmt: skip
        for m in models
    ]
    if handles:
        fig.legend(
            handles=handles, loc="outside lower center", ncols=min(6, len(handles)), frameon=False, fontsize=8
        )


def _log_scale_ok(values: np.ndarray, lower_is_better: bool) -> bool:
    """Log y for positive error-like metrics spanning more than a factor 10 (losses fall over decades)."""
    v = values[np.isfinite(values)]
    return lower_is_better and v.size > 0 and bool(np.all(v > 0)) and float(v.max() / v.min()) > 10


def _title(ax: Axes, text: str) -> None:
    ax.set_title(mpl_text(text), fontsize=9)


def save_figure(
    fig: Figure, directory: Path, stem: str, formats: Sequence[str], dpi: int = 150
) -> list[Path]:
    """Write ``fig`` as ``directory/stem.<fmt>`` for each format; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        path = directory / f"{stem}.{fmt}"
        fig.savefig(path, format=fmt, dpi=dpi, metadata=_METADATA.get(fmt, {}))
        out.append(path)
    return out


# --------------------------------------------------------------------------------------------------------------
# learning curves
# --------------------------------------------------------------------------------------------------------------
def learning_curves(data: ReportData, task: str) -> Figure:
    """Two panels: mean training loss and mean validation primary metric against step, band = 95% t-interval."""
    metric = data.metric.get(task)
    panels = [("train", "loss", "training loss (task loss)")]
    if metric:
        panels.append(("val", metric, f"validation {data.metric_label(task)}"))
    summaries = [(split, m, label, curve_summary(data, task, split, m)) for split, m, label in panels]
    summaries = [s for s in summaries if not s[3].empty]
    if not summaries:
        raise SkipFigure(f"no learning curves of completed runs for {task}")
    styles = variant_styles(data.models)
    fig, axes = _panels(len(summaries), ncols=2)
    shown: list[str] = []
    lower = data.higher_is_better.get(task) is False
    for ax, (_, m, label, s) in zip(axes, summaries):
        for model in data.models:
            c = s[s["model"] == model]
            if c.empty:
                continue
            st = styles[model]
            ax.plot(c["step"], c["mean"], color=st.colour, linestyle=st.mpl_dash, lw=1.4)
            ax.fill_between(c["step"], c["low"], c["high"], color=st.colour, alpha=0.18, lw=0)
            if model not in shown:
                shown.append(model)
        if _log_scale_ok(s["mean"].to_numpy(float), lower or m == "loss"):
            ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel(mpl_text(label))
        ax.grid(alpha=0.3)
    fig.suptitle(mpl_text(f"Learning curves: {task}"), fontsize=10)
    _legend(fig, shown, styles, markers=False)
    return fig


# --------------------------------------------------------------------------------------------------------------
# final metric and interaction
# --------------------------------------------------------------------------------------------------------------
def final_metric(data: ReportData) -> Figure:
    """One panel per task: the seeds as points, the mean with its BCa interval, missing variants marked."""
    cs = cell_stats(data)
    if not (cs["n"] > 0).any():
        raise SkipFigure("no completed run has a value of its primary metric")
    styles = variant_styles(data.models)
    fig, axes = _panels(len(data.tasks), ncols=3, panel=(4.6, 3.4))
    for ax, task in zip(axes, data.tasks):
        for i, model in enumerate(data.models):
            st = styles[model]
            v = data.values(task, model).to_numpy(float)
            row = cs[(cs["task"] == task) & (cs["model"] == model)].iloc[0]
            if v.size == 0:
                ax.plot([i], [0.5], marker="x", color="0.5", transform=ax.get_xaxis_transform(), ms=8)
                continue
            jitter = np.linspace(-0.18, 0.18, v.size) if v.size > 1 else np.zeros(1)
            ax.scatter(i + jitter, v, s=14, color=st.colour, alpha=0.75, marker=st.mpl_marker, lw=0, zorder=3)
            lo, hi = row["ci_low"], row["ci_high"]
            yerr = None
            if np.isfinite(lo) and np.isfinite(hi):
                yerr = [[max(0.0, row["mean"] - lo)], [max(0.0, hi - row["mean"])]]
            ax.errorbar(
                [i + 0.3], [row["mean"]], yerr=yerr, fmt="_", ms=12, color=st.colour, capsize=3, lw=1.4
            )
        ax.set_xticks(
            range(len(data.models)), [mpl_text(m) for m in data.models], rotation=35, ha="right", fontsize=7
        )
        ax.set_ylabel(mpl_text(data.metric_label(task)), fontsize=8)
        _title(ax, task)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Final test metric per variant (points: seeds; bar: mean with 95% BCa CI)", fontsize=10)
    return fig


def interaction(data: ReportData) -> Figure:
    """One panel per task: mean (BCa CI) against ffn type, one line per mixer."""
    cs = cell_stats(data)
    drawable = []
    for task in data.tasks:
        rows = cs[(cs["task"] == task) & (cs["n"] > 0)]
        ffns = {parse_variant(m)[0] for m in rows["model"] if parse_variant(m) is not None}
        if len(ffns) >= 2:
            drawable.append(task)
    if not drawable:
        raise SkipFigure("no task has two feedforward types with completed runs")
    fig, axes = _panels(len(drawable), ncols=3)
    used_mixers: list[str] = []
    for ax, task in zip(axes, drawable):
        rows = cs[(cs["task"] == task) & (cs["n"] > 0)]
        for k, mixer in enumerate(MIXER_LEVELS):
            xs, ys, lo, hi = [], [], [], []
            for j, ffn in enumerate(FFN_LEVELS):
                variant = f"{ffn}_{'ffn' if mixer == 'none' else mixer}"  # the registry's name of the cell
                r = rows[rows["model"] == variant]
                if r.empty:
                    continue
                r = r.iloc[0]
                xs.append(j + (k - 0.5) * 0.06)  # a small dodge so the intervals do not overlap
                ys.append(r["mean"])
                lo.append(r["mean"] - r["ci_low"] if np.isfinite(r["ci_low"]) else 0.0)
                hi.append(r["ci_high"] - r["mean"] if np.isfinite(r["ci_high"]) else 0.0)
            if not xs:
                continue
            dash = {"transformer": "-", "mamba": "--", "none": ":"}[mixer]
            ax.errorbar(
                xs, ys, yerr=[lo, hi], color=MIXER_COLOURS[mixer], linestyle=dash, marker="o", capsize=3
            )
            if mixer not in used_mixers:
                used_mixers.append(mixer)
        ax.set_xticks(range(len(FFN_LEVELS)), FFN_LEVELS)
        ax.set_xlabel("feedforward block")
        ax.set_ylabel(mpl_text(data.metric_label(task)), fontsize=8)
        _title(ax, task)
        ax.grid(alpha=0.3)
    handles = [
        Line2D(
            [],
            [],
            color=MIXER_COLOURS[m],
            linestyle={"transformer": "-", "mamba": "--", "none": ":"}[m],
            marker="o",
            label=m,
        )  # fmt: skip
        for m in used_mixers
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=8)
    fig.suptitle("Interaction: feedforward type x sequence mixer (mean, 95% BCa CI)", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------------------
# speed and efficiency
# --------------------------------------------------------------------------------------------------------------
def _bar_style(model: str, st: VariantStyle) -> dict[str, Any]:
    parsed = parse_variant(model)
    hatch = (
        "///"
        if parsed is not None and parsed[1] == "mamba"
        else ("..." if parsed and parsed[1] == "none" else "")
    )
    return {"facecolor": st.colour, "hatch": hatch, "edgecolor": "white", "linewidth": 0}


def speed(data: ReportData) -> Figure:
    """Steps/s per task and variant, slowdown vs mlp_transformer per task, and the overall slowdown with
    parameters and FLOPs/token."""
    sp = speed_summary(data)
    if not np.isfinite(sp["steps_per_sec"]).any():
        raise SkipFigure("no completed run recorded its training speed")
    styles = variant_styles(data.models)
    overall = speed_overall(data, sp)
    has_ref = np.isfinite(sp["slowdown"]).any()
    fig, axes = _panels(3 if has_ref else 1, ncols=3, panel=(5.0, 3.6))
    width = 0.8 / max(1, len(data.models))
    x = np.arange(len(data.tasks))
    panels = [("steps_per_sec", "training steps / s (log scale)", axes[0])]
    if has_ref:
        panels.append(("slowdown", f"slowdown vs {SPEED_REFERENCE} (x, log scale)", axes[1]))
    for col, label, ax in panels:
        for i, m in enumerate(data.models):
            rows = sp[sp["model"] == m].set_index("task").reindex(data.tasks)
            vals = rows[col].to_numpy(float)
            err = rows["steps_per_sec_sd"].to_numpy(float) if col == "steps_per_sec" else None
            ax.bar(x + (i - (len(data.models) - 1) / 2) * width, np.nan_to_num(vals, nan=0.0), width,
                   yerr=None if err is None else np.nan_to_num(err, nan=0.0), **_bar_style(m, styles[m]),
                   error_kw={"lw": 0.8})  # fmt: skip
        ax.set_yscale("log")
        ax.set_xticks(x, [mpl_text(t) for t in data.tasks], rotation=25, ha="right", fontsize=7)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        if col == "slowdown":
            ax.axhline(1.0, color="0.3", lw=0.8)
    axes[0].set_title("throughput per task (bars: mean; whiskers: sd over seeds)", fontsize=9)
    if has_ref:
        axes[1].set_title("slowdown per task", fontsize=9)
        ax = axes[2]
        ov = overall[np.isfinite(overall["slowdown"])]
        ys = np.arange(len(ov))[::-1]
        for y, (_, r) in zip(ys, ov.iterrows()):
            ax.barh(y, r["slowdown"], **_bar_style(r["model"], styles[r["model"]]))
            ax.text(r["slowdown"], y, f" {r['slowdown']:.2f}x  ({si(r['params'])} params, "
                    f"{si(r['flops_per_token'])} FLOPs/tok)",
                    va="center", fontsize=7)  # fmt: skip
        ax.set_yticks(ys, [mpl_text(m) for m in ov["model"]], fontsize=7)
        ax.set_xscale("log")
        lim = float(ov["slowdown"].max()) if len(ov) else 1.0
        ax.set_xlim(min(0.5, float(ov["slowdown"].min()) * 0.8) if len(ov) else 0.5, lim * 8)
        ax.axvline(1.0, color="0.3", lw=0.8)
        ax.set_xlabel(f"slowdown vs {SPEED_REFERENCE} (x, geometric mean over tasks)", fontsize=8)
        ax.set_title("overall", fontsize=9)
    handles = [Patch(**_bar_style(m, styles[m]), label=mpl_text(m)) for m in data.models]
    fig.legend(
        handles=handles, loc="outside lower center", ncols=min(6, len(handles)), frameon=False, fontsize=8
    )
    fig.suptitle("Training speed", fontsize=10)
    return fig


def performance_vs(data: ReportData, x: str) -> Figure:
    """Primary metric against ``x`` ("params" or "flops_per_token"), one panel per task."""
    label = {"params": "parameters", "flops_per_token": "forward FLOPs per token"}[x]
    cs = cell_stats(data).merge(speed_summary(data)[["task", "model", x]], on=["task", "model"])
    cs = cs[(cs["n"] > 0) & np.isfinite(cs[x])]
    if cs.empty:
        raise SkipFigure(f"no completed run recorded {label}")
    styles = variant_styles(data.models)
    tasks = [t for t in data.tasks if (cs["task"] == t).any()]
    fig, axes = _panels(len(tasks), ncols=3)
    shown: list[str] = []
    for ax, task in zip(axes, tasks):
        rows = cs[cs["task"] == task]
        for _, r in rows.iterrows():
            st = styles[r["model"]]
            lo, hi = r["ci_low"], r["ci_high"]
            yerr = [[r["mean"] - lo], [hi - r["mean"]]] if np.isfinite(lo) and np.isfinite(hi) else None
            ax.errorbar(
                [r[x]], [r["mean"]], yerr=yerr, color=st.colour, marker=st.mpl_marker, capsize=3, ms=6
            )
            if r["model"] not in shown:
                shown.append(r["model"])
        xs = rows[x].to_numpy(float)
        med = float(np.median(xs))
        spread = (xs.max() - xs.min()) / med * 100 if med > 0 else 0.0
        if med > 0:  # never zoom into a few-percent spread: matched variants should look matched
            ax.set_xlim(min(xs.min(), 0.85 * med), max(xs.max(), 1.15 * med))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_xlabel(f"{label} (spread {spread:.1f}% of median)", fontsize=8)
        ax.set_ylabel(mpl_text(data.metric_label(task)), fontsize=8)
        _title(ax, task)
        ax.grid(alpha=0.3)
    _legend(fig, [m for m in data.models if m in shown], styles)
    fig.suptitle(f"Performance against {label} (mean, 95% BCa CI)", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------------------------
def pairwise_source(data: ReportData, task: str | None) -> tuple[dict[str, Any], bool, str]:
    """(record holding pairwise results, higher_is_better, scope title) of a task or, for None, across tasks."""
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


def pairwise_heatmaps(data: ReportData, task: str | None) -> Figure:
    rec, hib, scope = pairwise_source(data, task)
    models, p, dz = pairwise_matrices(rec, hib)
    if not np.isfinite(p).any():
        raise SkipFigure(f"no pairwise test could be computed ({scope})")
    alpha = data.alpha()
    k = len(models)
    fig, axes = _panels(2, ncols=2, panel=(0.55 * k + 2.6, 0.5 * k + 1.8))
    labels = [mpl_text(m) for m in models]
    im = axes[0].imshow(np.ma.masked_invalid(p), cmap=PVALUE_CMAP, vmin=0, vmax=1)
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="Holm-adjusted p")
    lim = max(1.0, min(3.0, float(np.nanmax(np.abs(dz))) if np.isfinite(dz).any() else 1.0))
    im2 = axes[1].imshow(np.ma.masked_invalid(dz), cmap=EFFECT_CMAP, vmin=-lim, vmax=lim)
    fig.colorbar(im2, ax=axes[1], shrink=0.8, label="d_z (row better > 0)")
    for ax, mat, fmt in ((axes[0], p, "p"), (axes[1], dz, "d")):
        for i in range(k):
            for j in range(k):
                v = mat[i, j]
                if not np.isfinite(v):
                    continue
                text = (f"{v:.2g}" + ("*" if v < alpha else "")) if fmt == "p" else f"{v:.1f}"
                dark = (v < 0.5) if fmt == "p" else abs(v) > 0.6 * lim
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set_xticks(range(k), labels, rotation=40, ha="right", fontsize=7)
        ax.set_yticks(range(k), labels, fontsize=7)
    axes[0].set_title("Wilcoxon signed-rank, Holm", fontsize=9)
    axes[1].set_title("effect size d_z", fontsize=9)
    fig.suptitle(mpl_text(f"Pairwise comparisons: {scope}"), fontsize=10)
    return fig


def cd_diagram(data: ReportData, task: str | None) -> Figure:
    """The critical-difference diagram of the analysis (``analysis.cd_diagram.plot_cd_diagram``)."""
    from mamba_kan.analysis.cd_diagram import plot_cd_diagram

    rec, _, scope = pairwise_source(data, task)
    cd = rec.get("cd_diagram")
    if not cd:
        raise SkipFigure(f"no rank test ({scope}): the Friedman test needs 2 complete blocks")
    return plot_cd_diagram(
        cd, groups="wilcoxon", title=mpl_text(f"Average ranks {scope}; bars: Wilcoxon-Holm n.s.")
    )


def contrast_label(c: dict[str, Any]) -> str:
    """``D1 pooled``, ``D1 | mamba``, ``D1 x mixer``."""
    scope = c.get("scope")
    if scope == "within":
        return f"{c['name']} | {c.get('mixer')}"
    if scope == "interaction":
        return f"{c['name']} x mixer"
    return f"{c['name']} pooled"


def contrasts(data: ReportData) -> Figure:
    """Forest plot of the D1/D2 contrasts (estimate, 95% CI) per task; filled = significant after Holm."""
    if data.analysis is None:
        raise SkipFigure(data.analysis_note or "no statistical analysis")
    tasks = [
        t
        for t in data.tasks
        if any(c.get("estimate") is not None for c in (data.task_analysis(t) or {}).get("contrasts", []))
    ]
    if not tasks:
        raise SkipFigure(
            "no estimable D1/D2 contrast (needs mlp, bspline and kan variants with paired seeds)"
        )
    n_rows = max(len((data.task_analysis(t) or {})["contrasts"]) for t in tasks)
    fig, axes = _panels(len(tasks), ncols=2, panel=(5.0, 0.32 * n_rows + 1.4))
    colours = {"D1": FFN_COLOURS["bspline"], "D2": FFN_COLOURS["kan"]}
    for ax, task in zip(axes, tasks):
        rec = data.task_analysis(task) or {}
        rows = [c for c in rec.get("contrasts", []) if c.get("estimate") is not None]
        ys = np.arange(len(rows))[::-1]
        for y, c in zip(ys, rows):
            colour = colours.get(c["name"], "0.3")
            lo, hi = c.get("ci_low"), c.get("ci_high")
            xerr = [[c["estimate"] - lo], [hi - c["estimate"]]] if lo is not None and hi is not None else None
            ax.errorbar([c["estimate"]], [y], xerr=xerr, fmt="o", color=colour, capsize=3,
                        mfc=colour if c.get("significant") else "white")  # fmt: skip
        ax.axvline(0.0, color="0.3", lw=0.8)
        ax.set_yticks(ys, [contrast_label(c) for c in rows], fontsize=7)
        hib = data.higher_is_better.get(task)
        better = "> 0 favours the spline/KAN level" if hib else "< 0 favours the spline/KAN level"
        ax.set_xlabel(mpl_text(f"estimate in {data.metric.get(task)} ({better})"), fontsize=8)
        verdict = (rec.get("verdict") or {}).get("verdict", "not estimable")
        _title(ax, f"{task}: {verdict}")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Activation (D1 = bspline - mlp) vs topology (D2 = kan - bspline), 95% CI", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------------------
# learned functions
# --------------------------------------------------------------------------------------------------------------
MAX_MODULES = 4
MAX_CURVES = 8


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def plot_functions(
    ax: Axes, s: SplineSet, module: str, colour: str, ylim: tuple[float, float] | None = None
) -> None:
    """Up to MAX_CURVES functions of one module of one run, silu dotted for reference."""
    f = s.functions[module][:MAX_CURVES]
    for row in f:
        ax.plot(s.x, row, color=colour, lw=1.0, alpha=0.85)
    ax.plot(s.x, _silu(s.x), color="0.5", lw=0.8, linestyle=":")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel("input x", fontsize=8)
    ax.set_ylabel("phi(x)", fontsize=8)
    ax.grid(alpha=0.3)


def learned_functions(sets: Sequence[SplineSet], task: str) -> Figure:
    """Rows: spline variants; columns: their spline modules (first MAX_MODULES)."""
    if not sets:
        raise SkipFigure(f"no spline variant with a final model on {task}")
    ncols = min(MAX_MODULES, max(len(s.functions) for s in sets))
    fig = Figure(figsize=(3.6 * max(2, ncols), 2.8 * len(sets) + 0.6), layout="constrained")
    axes = fig.subplots(len(sets), ncols, squeeze=False)
    styles = variant_styles([s.model for s in sets])
    for r, s in enumerate(sets):
        modules = list(s.functions)[:ncols]
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(modules):
                ax.set_visible(False)
                continue
            plot_functions(ax, s, modules[c], styles[s.model].colour)
            n = min(MAX_CURVES, s.functions[modules[c]].shape[0])
            _title(ax, f"{s.model} seed {s.seed}\n{modules[c]} (first {n})")
    fig.suptitle(mpl_text(f"Learned functions after training: {task}"), fontsize=10)
    return fig
