"""The plotly renderer of the figure specs (:mod:`mamba_kan.reporting.specs`), for the offline dashboard.

Same spec, hence the same data, intervals, reference lines, scales and skip reasons as the static figures. Every
string that reaches plotly (task and variant names, titles, hover text) is HTML-escaped first: plotly.js renders a
small HTML subset in labels, so escaping keeps a label that happens to contain markup literal. Each trace of a
variant carries ``legendgroup = <variant>`` so the dashboard's variant filter can hide it (and the legend toggles it
in every subplot at once).
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mamba_kan.reporting.specs import FigureSpec, Panel, Series, SkipFigure

HEIGHT = 380
# template "none" plus a light grid: plotly's named templates cost ~40 ms and ~6 kB per figure
_AXIS: dict[str, Any] = {"showgrid": True, "gridcolor": "#e6e6e6", "zeroline": False, "linecolor": "#888",
                         "showline": True, "ticks": "outside", "tickcolor": "#888"}  # fmt: skip
_LAYOUT: dict[str, Any] = {
    "template": "none",
    "paper_bgcolor": "white",
    "plot_bgcolor": "white",
    "font": {"size": 11},
    "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
    "legend": {"font": {"size": 10}},
}
_SYMBOL = {"circle": "circle", "square": "square", "triangle": "triangle-up", "diamond": "diamond", "x": "x",
           "hline": "line-ew-open", None: "circle"}  # fmt: skip
_REF = {"floor": ("dash", "#4d4d4d"), "baseline": ("dot", "#4d4d4d"), "zero": ("solid", "grey")}
_CMAP = {"cividis": "Cividis", "PuOr": "PuOr"}


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g_, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g_},{b},{alpha})"


def _clean(values: Any) -> list[Any]:
    return [None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v for v in values]


def _err(
    y: list[Any], low: list[float] | None, high: list[float] | None, colour: str
) -> dict[str, Any] | None:
    if low is None or high is None:
        return None
    ya, lo, hi = (np.asarray(_clean(v), dtype=float) for v in (y, low, high))
    return {"type": "data", "symmetric": False, "array": list(np.nan_to_num(np.maximum(0, hi - ya))),
            "arrayminus": list(np.nan_to_num(np.maximum(0, ya - lo))), "color": colour}  # fmt: skip


def _traces(s: Series, shown: set[str]) -> list[Any]:
    """The plotly traces of one series (a band is its own trace, before the line)."""
    legend = bool(s.label) and s.label not in shown
    if legend:
        shown.add(s.label or "")
    common: dict[str, Any] = {"name": esc(s.label or s.group or ""), "legendgroup": s.group or s.label,
                              "showlegend": legend}  # fmt: skip
    # one hover text for a whole series (a learned function) is passed once, not once per point
    hover: Any = None if not s.hover else ([esc(h) for h in s.hover] if len(s.hover) > 1 else esc(s.hover[0]))
    hov: dict[str, Any] = {"hovertext": hover, "hoverinfo": "text"} if hover else {}
    out: list[Any] = []
    if s.kind == "line":
        if s.band and s.low is not None and s.high is not None:
            band = [
                (x, lo, hi)
                for x, lo, hi in zip(s.x, _clean(s.low), _clean(s.high))
                if lo is not None and hi is not None
            ]
            if band:
                xs = [b[0] for b in band]
                out.append(go.Scatter(x=xs + xs[::-1], y=[b[2] for b in band] + [b[1] for b in band][::-1],
                                      mode="lines", fill="toself", fillcolor=_rgba(s.colour, 0.18), line={"width": 0},
                                      hoverinfo="skip", showlegend=False, legendgroup=s.group,
                                      name=esc(s.group or "")))  # fmt: skip
        out.append(go.Scatter(x=s.x, y=_clean(s.y), mode="lines", opacity=s.alpha,
                              line={"color": s.colour, "dash": s.dash, "width": 1.6 if s.group else 1.0},
                              **common, **hov))  # fmt: skip
    elif s.kind == "points":
        out.append(go.Scatter(x=s.x, y=_clean(s.y), mode="markers", opacity=s.alpha,
                              marker={"color": s.colour, "symbol": _SYMBOL[s.marker], "size": s.size + 2},
                              **common, **hov))  # fmt: skip
    elif s.kind == "missing":
        out.append(go.Scatter(x=s.x, y=[None] * len(s.x), mode="markers", marker={"symbol": "x", "color": "grey"},
                              **{**common, "name": esc(f"{s.group} (no completed run)"), "showlegend": True}))  # fmt: skip
    elif s.kind == "errorbar":
        filled = s.filled if s.filled is not None else [True] * len(s.x)
        marker = {
            "symbol": _SYMBOL[s.marker],
            "size": s.size + (10 if s.marker == "hline" else 3),
            "color": [s.colour if f else "white" for f in filled],
            "line": {"color": s.colour, "width": 2},
        }
        mode = "markers" if s.dash == "none" or len(s.x) < 2 else "lines+markers"
        out.append(go.Scatter(x=s.x, y=_clean(s.y), mode=mode, marker=marker,
                              line={"color": s.colour, "dash": s.dash if s.dash != "none" else "solid"},
                              error_y=_err(s.y, s.low, s.high, s.colour), error_x=_err(s.x, s.xlow, s.xhigh, s.colour),
                              **common, **hov))  # fmt: skip
    elif s.kind in ("bar", "barh"):
        pattern = {"shape": s.hatch} if s.hatch else None
        if s.kind == "bar":
            out.append(go.Bar(x=s.x, y=_clean(s.y), width=s.width, marker_color=s.colour, marker_pattern=pattern,
                              error_y=_err(s.y, s.low, s.high, "#333"), **common, **hov))  # fmt: skip
        else:
            out.append(go.Bar(x=_clean(s.x), y=s.y, width=s.width, orientation="h", marker_color=s.colour,
                              marker_pattern=pattern, **common, **hov))  # fmt: skip
    else:
        raise ValueError(f"unknown series kind {s.kind!r}")
    return out


def _axis_kwargs(p: Panel, which: str) -> dict[str, Any]:
    scale = p.xscale if which == "x" else p.yscale
    ticks = p.xticks if which == "x" else p.yticks
    out: dict[str, Any] = {"title_text": esc(p.xlabel if which == "x" else p.ylabel)}
    if scale == "log":
        out["type"] = "log"
    if ticks is not None:
        out.update(tickmode="array", tickvals=list(ticks[0]), ticktext=[esc(t) for t in ticks[1]])
    if which == "x" and p.xlim is not None:
        lo, hi = p.xlim
        out["range"] = [math.log10(lo), math.log10(hi)] if scale == "log" else [lo, hi]
    if which == "y" and p.reversed_y:
        out["autorange"] = "reversed"
    return out


def render(spec: FigureSpec) -> go.Figure:
    """The plotly figure of a spec; raises :class:`SkipFigure` with ``spec.skip`` when there is nothing to draw,
    and for the CD diagram (a static figure: the dashboard embeds its image)."""
    if spec.skip is not None:
        raise SkipFigure(spec.skip)
    if spec.cd is not None:
        raise SkipFigure("the critical-difference diagram is a static figure")
    panels = [p for p in spec.panels if p.series or p.heatmap]
    ncols = max(1, min(spec.ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    heat = any(p.heatmap is not None for p in panels)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[esc(p.title).replace("\n", "<br>") for p in panels],
                        horizontal_spacing=0.3 if heat else (min(0.2, 0.5 / ncols) if ncols > 1 else 0.2),
                        vertical_spacing=min(0.3, 0.6 / nrows) if nrows > 1 else 0.3)  # fmt: skip
    shown: set[str] = set()
    for k, p in enumerate(panels):
        row, col = k // ncols + 1, k % ncols + 1
        if p.heatmap is not None:
            h = p.heatmap
            labels = [esc(m) for m in h.labels]
            right = fig.get_subplot(row, col).xaxis.domain[1]  # the colour bar sits just right of its heatmap
            fig.add_trace(go.Heatmap(
                z=[[None if not math.isfinite(v) else v for v in r] for r in h.z], x=labels, y=labels, zmin=h.zmin,
                zmax=h.zmax, colorscale=_CMAP.get(h.cmap, h.cmap), text=h.text, texttemplate="%{text}",
                colorbar={"x": right + 0.01, "xanchor": "left", "len": 0.9, "thickness": 12,
                          "title": {"text": esc(h.colourbar), "side": "right"}},
                hovertemplate=f"%{{y}} vs %{{x}}: {esc(h.colourbar)} %{{z:.3g}}<extra></extra>"),
                row=row, col=col)  # fmt: skip
            fig.update_yaxes(autorange="reversed", row=row, col=col)
            continue
        for s in p.series:
            for trace in _traces(s, shown):
                fig.add_trace(trace, row=row, col=col)
            for x in s.x if s.kind == "missing" else []:  # a cross in the middle of the axis: no data
                fig.add_annotation(x=x, y=0.5, yref="y domain", text="×", showarrow=False,
                                   font={"size": 18, "color": "grey"}, row=row, col=col)  # fmt: skip
        for r in p.lines:
            dash, colour = _REF[r.style]
            line = {"color": colour, "dash": dash, "width": 1}
            if r.axis == "y":
                fig.add_hline(y=r.value, line=line, row=row, col=col)
            else:
                fig.add_vline(x=r.value, line=line, row=row, col=col)
            if r.label and r.label not in shown:  # a legend entry for the line (shapes have none)
                shown.add(r.label)
                fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=line, name=esc(r.label),
                                         legendgroup=r.label, showlegend=True), row=row, col=col)  # fmt: skip
        for a in p.annotations:
            fig.add_annotation(x=math.log10(a.x) if p.xscale == "log" else a.x, y=a.y, text=esc(a.text),
                               showarrow=False, xanchor="left", font={"size": 10}, row=row, col=col)  # fmt: skip
        fig.update_xaxes(**_axis_kwargs(p, "x"), row=row, col=col)
        fig.update_yaxes(**_axis_kwargs(p, "y"), row=row, col=col)
    if any(s.kind == "bar" for p in panels for s in p.series):
        fig.update_layout(barmode="overlay")  # bars carry their own dodged positions
    height = max(HEIGHT, 320 * nrows + 80)
    if heat:
        height = max(HEIGHT, 60 * len(panels[0].heatmap.labels) + 160)  # type: ignore[union-attr]
    fig.update_layout(title={"text": esc(spec.title), "font": {"size": 13}}, height=height, **_LAYOUT)
    if heat:  # room for the variant names left of the first matrix
        fig.update_layout(margin={**_LAYOUT["margin"], "l": 140, "b": 120})
    fig.update_xaxes(**_AXIS)
    fig.update_yaxes(**_AXIS)
    return fig
