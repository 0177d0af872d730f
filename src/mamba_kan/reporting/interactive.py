"""Interactive (plotly) versions of the report's figures, for the offline dashboard.

Same data, intervals and visual encoding as :mod:`mamba_kan.reporting.figures`. Every string that reaches plotly
(task and variant names, titles, hover text) is HTML-escaped first: plotly.js renders a small HTML subset in
labels, so escaping keeps a label that happens to contain markup literal. Each trace of a variant carries
``legendgroup = <variant>`` so the dashboard's variant filter can hide it (and the legend toggles it in every
subplot at once).
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mamba_kan.analysis.data import FFN_LEVELS, MIXER_LEVELS
from mamba_kan.reporting.data import SPEED_REFERENCE, ReportData, cell_stats, curve_summary, speed_summary
from mamba_kan.reporting.figures import (
    MAX_CURVES,
    SkipFigure,
    contrast_label,
    pairwise_matrices,
    pairwise_source,
)
from mamba_kan.reporting.splines import SplineSet
from mamba_kan.reporting.style import FFN_COLOURS, MIXER_COLOURS, variant_styles

HEIGHT = 380
# template "none" plus a light grid: plotly's named templates cost ~40 ms and ~6 kB per figure
_AXIS: dict[str, Any] = {"showgrid": True, "gridcolor": "#e6e6e6", "zeroline": False, "linecolor": "#888",
                         "showline": True, "ticks": "outside", "tickcolor": "#888"}  # fmt: skip
_LAYOUT: dict[str, Any] = {
    "template": "none",
    "paper_bgcolor": "white",
    "plot_bgcolor": "white",
    "font": {"size": 11},
    "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    "legend": {"font": {"size": 10}},
}


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g_, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g_},{b},{alpha})"


def _finish(fig: go.Figure, title: str, height: int = HEIGHT) -> go.Figure:
    fig.update_layout(title={"text": esc(title), "font": {"size": 13}}, height=height, **_LAYOUT)
    fig.update_xaxes(**_AXIS)
    fig.update_yaxes(**_AXIS)
    return fig


def learning_curves(data: ReportData, task: str) -> go.Figure:
    metric = data.metric.get(task)
    panels = [("train", "loss", "training loss")]
    if metric:
        panels.append(("val", metric, f"validation {data.metric_label(task)}"))
    summaries = [(s, m, lab, curve_summary(data, task, s, m)) for s, m, lab in panels]
    summaries = [x for x in summaries if not x[3].empty]
    if not summaries:
        raise SkipFigure(f"no learning curves of completed runs for {task}")
    styles = variant_styles(data.models)
    fig = make_subplots(rows=1, cols=len(summaries), subplot_titles=[esc(x[2]) for x in summaries])
    shown: set[str] = set()
    for col, (_, _, label, s) in enumerate(summaries, start=1):
        for model in data.models:
            c = s[s["model"] == model]
            if c.empty:
                continue
            st = styles[model]
            band = c.dropna(subset=["low", "high"])
            if not band.empty:
                fig.add_trace(
                    go.Scatter(
                        x=list(band["step"]) + list(band["step"][::-1]),
                        y=list(band["high"]) + list(band["low"][::-1]),
                        mode="lines",
                        fill="toself",
                        fillcolor=_rgba(st.colour, 0.18),
                        line={"width": 0},
                        hoverinfo="skip",
                        showlegend=False,
                        legendgroup=model,
                        name=esc(model),
                    ),  # fmt: skip
                    row=1,
                    col=col,
                )
            fig.add_trace(
                go.Scatter(
                    x=c["step"],
                    y=c["mean"],
                    mode="lines",
                    name=esc(model),
                    legendgroup=model,
                    showlegend=model not in shown,
                    line={"color": st.colour, "dash": st.plotly_dash},
                    customdata=np.stack([c["n"], c["low"], c["high"]], axis=-1),
                    hovertemplate=f"{esc(model)}<br>step %{{x}}<br>mean %{{y:.4g}}<br>95%% CI "
                    "[%{customdata[1]:.4g}, %{customdata[2]:.4g}] (n=%{customdata[0]})<extra></extra>",
                ),  # fmt: skip
                row=1,
                col=col,
            )
            shown.add(model)
        fig.update_xaxes(title_text="training step", row=1, col=col)
        fig.update_yaxes(title_text=esc(label), row=1, col=col)
    return _finish(fig, f"Learning curves: {task} (mean over seeds, 95% t-interval)")


def final_metric(data: ReportData, task: str) -> go.Figure:
    cs = cell_stats(data)
    cs = cs[cs["task"] == task]
    if not (cs["n"] > 0).any():
        raise SkipFigure(f"no completed run on {task}")
    styles = variant_styles(data.models)
    fig = go.Figure()
    runs = data.completed[data.completed["task"] == task]
    for model in data.models:
        st = styles[model]
        r = runs[(runs["model"] == model) & np.isfinite(runs["primary_value"])]
        c = cs[cs["model"] == model].iloc[0]
        if r.empty:
            fig.add_trace(
                go.Scatter(
                    x=[esc(model)],
                    y=[None],
                    mode="markers",
                    name=esc(model) + " (no completed run)",
                    legendgroup=model,
                    marker={"symbol": "x", "color": "grey"},
                )  # fmt: skip
            )
            continue
        fig.add_trace(
            go.Box(
                x=[esc(model)] * len(r),
                y=r["primary_value"],
                name=esc(model),
                legendgroup=model,
                boxpoints="all",
                jitter=0.5,
                pointpos=0,
                fillcolor="rgba(0,0,0,0)",
                line={"color": "rgba(0,0,0,0)"},
                marker={"color": st.colour, "symbol": st.plotly_symbol, "size": 7},
                customdata=np.stack([r["seed"].astype(str), r["run_id"].map(esc)], axis=-1),
                hovertemplate="seed %{customdata[0]}: %{y:.4g}<br>%{customdata[1]}<extra></extra>",
                showlegend=False,
            )  # fmt: skip
        )
        err = None
        if math.isfinite(c["ci_low"]) and math.isfinite(c["ci_high"]):
            err = {"type": "data", "symmetric": False, "array": [c["ci_high"] - c["mean"]],
                   "arrayminus": [c["mean"] - c["ci_low"]], "color": st.colour}  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=[esc(model)],
                y=[c["mean"]],
                mode="markers",
                error_y=err,
                name=esc(model),
                legendgroup=model,
                marker={"symbol": "line-ew-open", "size": 22, "color": st.colour, "line": {"width": 2}},
                hovertemplate=f"{esc(model)}: mean %{{y:.4g}}, 95% BCa [{c['ci_low']:.4g}, {c['ci_high']:.4g}], "
                f"n={int(c['n'])}<extra></extra>",
            )  # fmt: skip
        )
    fig.update_yaxes(title_text=esc(data.metric_label(task)))
    fig.update_xaxes(title_text="variant")
    return _finish(fig, f"Final test metric: {task} (points: seeds; bar: mean with 95% BCa CI)")


def interaction(data: ReportData, task: str) -> go.Figure:
    cs = cell_stats(data)
    cs = cs[(cs["task"] == task) & (cs["n"] > 0)]
    fig = go.Figure()
    lines = 0
    for mixer in MIXER_LEVELS:
        xs, ys, lo, hi = [], [], [], []
        for ffn in FFN_LEVELS:
            r = cs[cs["model"] == f"{ffn}_{'ffn' if mixer == 'none' else mixer}"]
            if r.empty:
                continue
            r = r.iloc[0]
            xs.append(ffn)
            ys.append(r["mean"])
            lo.append(r["mean"] - r["ci_low"] if math.isfinite(r["ci_low"]) else 0.0)
            hi.append(r["ci_high"] - r["mean"] if math.isfinite(r["ci_high"]) else 0.0)
        if len(xs) < 2:
            continue
        lines += 1
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                name=mixer,
                line={
                    "color": MIXER_COLOURS[mixer],
                    "dash": {"transformer": "solid", "mamba": "dash"}.get(mixer, "dot"),
                },
                error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo},
            )  # fmt: skip
        )
    if not lines:
        raise SkipFigure(f"{task}: no mixer has two feedforward types with completed runs")
    fig.update_xaxes(title_text="feedforward block", categoryorder="array", categoryarray=list(FFN_LEVELS))
    fig.update_yaxes(title_text=esc(data.metric_label(task)))
    return _finish(fig, f"Interaction ffn x mixer: {task} (mean, 95% BCa CI)")


def performance_vs(data: ReportData, task: str, x: str) -> go.Figure:
    label = {"params": "parameters", "flops_per_token": "forward FLOPs per token"}[x]
    cs = cell_stats(data).merge(speed_summary(data)[["task", "model", x]], on=["task", "model"])
    cs = cs[(cs["task"] == task) & (cs["n"] > 0) & np.isfinite(cs[x])]
    if cs.empty:
        raise SkipFigure(f"no completed run on {task} recorded {label}")
    styles = variant_styles(data.models)
    fig = go.Figure()
    for _, r in cs.iterrows():
        st = styles[r["model"]]
        err = None
        if math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"]):
            err = {"type": "data", "symmetric": False, "array": [r["ci_high"] - r["mean"]],
                   "arrayminus": [r["mean"] - r["ci_low"]]}  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=[r[x]],
                y=[r["mean"]],
                error_y=err,
                mode="markers",
                name=esc(r["model"]),
                legendgroup=r["model"],
                marker={"color": st.colour, "symbol": st.plotly_symbol, "size": 10},
                hovertemplate=f"{esc(r['model'])}<br>{label} %{{x:,.0f}}<br>mean %{{y:.4g}}<extra></extra>",
            )  # fmt: skip
        )
    xs = cs[x].to_numpy(float)
    med = float(np.median(xs))
    if med > 0:  # as in the static figure: a few-percent spread must not fill the axis
        fig.update_xaxes(range=[min(xs.min(), 0.85 * med), max(xs.max(), 1.15 * med)])
    fig.update_xaxes(title_text=label)
    fig.update_yaxes(title_text=esc(data.metric_label(task)))
    return _finish(fig, f"{task}: performance against {label}")


def speed(data: ReportData) -> go.Figure:
    sp = speed_summary(data)
    if not np.isfinite(sp["steps_per_sec"]).any():
        raise SkipFigure("no completed run recorded its training speed")
    styles = variant_styles(data.models)
    has_ref = bool(np.isfinite(sp["slowdown"]).any())
    titles = ["training steps / s (mean ± sd over seeds)"]
    if has_ref:
        titles.append(f"slowdown vs {SPEED_REFERENCE} (x)")
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles)
    tasks = [esc(t) for t in data.tasks]
    for model in data.models:
        st = styles[model]
        rows = sp[sp["model"] == model].set_index("task").reindex(data.tasks)
        pattern = {"shape": "/"} if model.endswith("_mamba") else None
        hover = (
            rows["params"].map(lambda v: f"{v:,.0f}" if math.isfinite(v) else "n/a")
            + " params, "
            + rows["flops_per_token"].map(lambda v: f"{v:,.0f}" if math.isfinite(v) else "n/a")
            + " FLOPs/token"
        ).to_numpy()
        fig.add_trace(
            go.Bar(
                x=tasks,
                y=rows["steps_per_sec"],
                name=esc(model),
                legendgroup=model,
                marker_color=st.colour,
                marker_pattern=pattern,
                error_y={"type": "data", "array": rows["steps_per_sec_sd"].fillna(0)},
                customdata=hover,
                hovertemplate=f"{esc(model)}<br>%{{y:.3g}} steps/s<br>%{{customdata}}<extra></extra>",
            ),  # fmt: skip
            row=1,
            col=1,
        )
        if has_ref:
            fig.add_trace(
                go.Bar(
                    x=tasks,
                    y=rows["slowdown"],
                    name=esc(model),
                    legendgroup=model,
                    marker_color=st.colour,
                    marker_pattern=pattern,
                    showlegend=False,
                    hovertemplate=f"{esc(model)}<br>%{{y:.3g}}x slower than {SPEED_REFERENCE}<extra></extra>",
                ),  # fmt: skip
                row=1,
                col=2,
            )
    fig.update_yaxes(type="log", title_text="steps / s", row=1, col=1)
    if has_ref:
        fig.update_yaxes(type="log", title_text="slowdown (x)", row=1, col=2)
    fig.update_layout(barmode="group")
    return _finish(fig, "Training speed per task", height=420)


def pairwise_heatmaps(data: ReportData, task: str | None) -> go.Figure:
    rec, hib, scope = pairwise_source(data, task)
    models, p, dz = pairwise_matrices(rec, hib)
    if not np.isfinite(p).any():
        raise SkipFigure(f"no pairwise test could be computed ({scope})")
    alpha = data.alpha()
    labels = [esc(m) for m in models]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Holm-adjusted p (Wilcoxon)", "d_z (row better > 0)"],
                        horizontal_spacing=0.2)  # fmt: skip
    ptext = [
        [("" if not np.isfinite(v) else f"{v:.2g}" + ("*" if v < alpha else "")) for v in row] for row in p
    ]
    dtext = [["" if not np.isfinite(v) else f"{v:.2f}" for v in row] for row in dz]
    lim = max(1.0, min(3.0, float(np.nanmax(np.abs(dz))) if np.isfinite(dz).any() else 1.0))
    fig.add_trace(
        go.Heatmap(
            z=np.where(np.isfinite(p), p, None),
            x=labels,
            y=labels,
            zmin=0,
            zmax=1,
            colorscale="Cividis",
            text=ptext,
            texttemplate="%{text}",
            colorbar={"x": 0.42, "title": {"text": "p"}},
            hovertemplate="%{y} vs %{x}: p_holm %{z:.3g}<extra></extra>",
        ),  # fmt: skip
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Heatmap(
            z=np.where(np.isfinite(dz), dz, None),
            x=labels,
            y=labels,
            zmin=-lim,
            zmax=lim,
            colorscale="PuOr",
            text=dtext,
            texttemplate="%{text}",
            colorbar={"title": {"text": "d_z"}},
            hovertemplate="%{y} vs %{x}: d_z %{z:.3g}<extra></extra>",
        ),  # fmt: skip
        row=1,
        col=2,
    )
    fig.update_yaxes(autorange="reversed")
    k = len(models)
    return _finish(fig, f"Pairwise comparisons: {scope}", height=max(HEIGHT, 60 * k + 160))


def contrasts(data: ReportData, task: str) -> go.Figure:
    rec = data.task_analysis(task) or {}
    rows = [c for c in rec.get("contrasts", []) if c.get("estimate") is not None]
    if not rows:
        raise SkipFigure(f"{task}: no estimable D1/D2 contrast")
    colours = {"D1": FFN_COLOURS["bspline"], "D2": FFN_COLOURS["kan"]}
    fig = go.Figure()
    for name in ("D1", "D2"):
        sub = [c for c in rows if c["name"] == name]
        if not sub:
            continue
        has_ci = [c.get("ci_low") is not None and c.get("ci_high") is not None for c in sub]
        fig.add_trace(
            go.Scatter(
                x=[c["estimate"] for c in sub],
                y=[contrast_label(c) for c in sub],
                mode="markers",
                name={"D1": "D1 activation (bspline - mlp)", "D2": "D2 topology (kan - bspline)"}[name],
                marker={
                    "size": 10,
                    "color": [colours[name] if c.get("significant") else "white" for c in sub],
                    "line": {"color": colours[name], "width": 2},
                },
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [c["ci_high"] - c["estimate"] if ok else 0 for c, ok in zip(sub, has_ci)],
                    "arrayminus": [c["estimate"] - c["ci_low"] if ok else 0 for c, ok in zip(sub, has_ci)],
                    "color": colours[name],
                },
                customdata=[[esc(c.get("statement") or ""), c.get("p_holm"), c.get("n_pairs")] for c in sub],
                hovertemplate="%{y}: %{x:.4g}<br>%{customdata[0]}<br>p_holm %{customdata[1]:.3g}, "
                "n=%{customdata[2]}<extra></extra>",
            )  # fmt: skip
        )
    fig.add_vline(x=0, line={"color": "grey", "width": 1})
    hib = data.higher_is_better.get(task)
    better = "> 0 favours the spline/KAN level" if hib else "< 0 favours the spline/KAN level"
    fig.update_xaxes(title_text=esc(f"estimate in {data.metric.get(task)} ({better})"))
    fig.update_yaxes(autorange="reversed")
    verdict = (rec.get("verdict") or {}).get("verdict", "not estimable")
    return _finish(
        fig, f"{task}: D1/D2 contrasts, 95% CI (filled = significant after Holm); verdict: {verdict}"
    )


def learned_functions(s: SplineSet) -> go.Figure:
    modules = list(s.functions)[:4]
    fig = make_subplots(rows=1, cols=len(modules), subplot_titles=[esc(m) for m in modules])
    colour = variant_styles([s.model])[s.model].colour
    silu = s.x / (1.0 + np.exp(-s.x))
    for col, module in enumerate(modules, start=1):
        for i, row in enumerate(s.functions[module][:MAX_CURVES]):
            fig.add_trace(
                go.Scatter(
                    x=s.x,
                    y=row,
                    mode="lines",
                    line={"color": colour, "width": 1.2},
                    showlegend=False,
                    name=f"{esc(module)}[{i}]",
                    legendgroup=s.model,
                    hovertemplate=f"{esc(module)}[{i}]: phi(%{{x:.2f}}) = %{{y:.3g}}<extra></extra>",
                ),  # fmt: skip
                row=1,
                col=col,
            )
        fig.add_trace(
            go.Scatter(
                x=s.x,
                y=silu,
                mode="lines",
                line={"color": "grey", "dash": "dot", "width": 1},
                name="silu (reference)",
                showlegend=col == 1,
                hoverinfo="skip",
            ),  # fmt: skip
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="input x", row=1, col=col)
    fig.update_yaxes(title_text="phi(x)", row=1, col=1)
    return _finish(
        fig, f"{s.model} seed {s.seed} on {s.task}: learned functions (first {MAX_CURVES} per module)"
    )
