"""The matplotlib renderer of the figure specs (:mod:`mamba_kan.reporting.specs`): the report's static files.

Object API only (no pyplot global state: safe in a headless build and in a notebook). :func:`render` turns a
:class:`~mamba_kan.reporting.specs.FigureSpec` into a ``matplotlib.figure.Figure``; :func:`save_figure` writes it
with reproducible metadata and TrueType (Type 42) fonts in PDF/PS, which publishers ask for instead of Type 3.
Log axes get plain tick labels (``60``, not ``6x10^1``); linear axes at most a few ticks so labels never overlap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from mamba_kan.choices import FIGURE_FORMATS
from mamba_kan.reporting.fmt import tick
from mamba_kan.reporting.specs import CAPTIONS, FigureSpec, Panel, RefLine, Series, SkipFigure, SplineSet
from mamba_kan.reporting.specs import function_panel as _function_panel
from mamba_kan.reporting.style import mpl_text

__all__ = ["CAPTIONS", "FORMATS", "SkipFigure", "plot_functions", "render", "save_figure"]

FORMATS = FIGURE_FORMATS
# reproducible files: no timestamps in the vector formats
_METADATA: dict[str, dict[str, Any]] = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
#: Embed TrueType outlines (Type 42) in PDF and PostScript instead of Type 3 bitmaps-as-procedures.
FONT_RC = {"pdf.fonttype": 42, "ps.fonttype": 42}
_DASH = {"solid": "-", "dash": "--", "dot": ":", "dashdot": "-.", "none": "none"}
_MARK = {"circle": "o", "square": "s", "triangle": "^", "diamond": "D", "x": "x", "hline": "_", None: None}
_HATCH = {"/": "///", ".": "...", None: ""}
_REF = {"floor": ("--", "0.3", 1.0), "baseline": (":", "0.3", 1.2), "zero": ("-", "0.3", 0.8)}


def plain_log_axis(axis: Any) -> None:
    """Plain-number labels on a log axis; minor ticks labelled only when the axis spans less than a decade."""
    axis.set_major_locator(LogLocator(base=10))
    axis.set_major_formatter(FuncFormatter(lambda v, _: tick(v)))
    lo, hi = axis.get_view_interval()
    few_decades = lo > 0 and hi / lo < 20
    axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0) if few_decades else "auto"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: tick(v)) if few_decades else NullFormatter())


def _pick(err: list[np.ndarray] | None, idx: list[int]) -> list[np.ndarray] | None:
    return None if err is None else [err[0][idx], err[1][idx]]


def _draw_series(ax: Axes, s: Series) -> None:
    colour, dash, marker = s.colour, _DASH.get(s.dash, "-"), _MARK.get(s.marker)
    x = np.asarray(s.x, dtype=float)
    y = np.asarray([np.nan if v is None else v for v in s.y], dtype=float)
    if s.kind == "line":
        ax.plot(x, y, color=colour, linestyle=dash, marker=marker, lw=1.4 if s.group else 1.0, alpha=s.alpha)
        if s.band and s.low is not None and s.high is not None:
            lo, hi = np.asarray(s.low, dtype=float), np.asarray(s.high, dtype=float)
            ok = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(x, lo, hi, where=ok, color=colour, alpha=0.18, lw=0)
    elif s.kind == "points":
        ax.scatter(x, y, s=s.size * 3, color=colour, alpha=s.alpha, marker=marker, lw=0, zorder=3)
    elif s.kind == "missing":
        for xi in x:
            ax.plot([xi], [0.5], marker="x", color="0.5", transform=ax.get_xaxis_transform(), ms=8)
    elif s.kind == "errorbar":
        yerr = xerr = None
        if s.low is not None and s.high is not None:
            yerr = [np.maximum(0, y - np.asarray(s.low, float)), np.maximum(0, np.asarray(s.high, float) - y)]
        if s.xlow is not None and s.xhigh is not None:
            xerr = [
                np.maximum(0, x - np.asarray(s.xlow, float)),
                np.maximum(0, np.asarray(s.xhigh, float) - x),
            ]
        filled = s.filled if s.filled is not None else [True] * len(x)
        for fill in (True, False):  # open markers: not significant
            idx = [i for i, f in enumerate(filled) if f is fill]
            if not idx:
                continue
            ax.errorbar(x[idx], y[idx], yerr=_pick(yerr, idx), xerr=_pick(xerr, idx), color=colour,
                        linestyle=dash if len(idx) > 1 else "none", marker=marker, ms=s.size, capsize=3,
                        lw=1.4, mfc=colour if fill else "white")  # fmt: skip
    elif s.kind in ("bar", "barh"):
        style = {"color": colour, "hatch": _HATCH[s.hatch], "edgecolor": "white", "linewidth": 0}
        if s.kind == "bar":
            err = None
            if s.low is not None and s.high is not None:
                err = [
                    np.maximum(0, y - np.asarray(s.low, float)),
                    np.maximum(0, np.asarray(s.high, float) - y),
                ]
            ax.bar(x, y, s.width or 0.8, yerr=err, error_kw={"lw": 0.8}, **style)
        else:
            ax.barh(y, x, s.width or 0.8, **style)
    else:
        raise ValueError(f"unknown series kind {s.kind!r}")


def _legend_handle(s: Series) -> Any:
    if s.kind in ("bar", "barh"):
        return Patch(facecolor=s.colour, hatch=_HATCH[s.hatch], edgecolor="white", label=mpl_text(s.label))
    marker = None if s.kind == "line" else _MARK.get(s.marker)
    if marker == "_":
        marker = None
    return Line2D([], [], color=s.colour, linestyle=_DASH.get(s.dash, "-") if s.dash != "none" else "none",
                  marker=marker, label=mpl_text(s.label))  # fmt: skip


def _ref_line(ax: Axes, r: RefLine) -> Any:
    ls, colour, lw = _REF[r.style]
    draw = ax.axhline if r.axis == "y" else ax.axvline
    return draw(r.value, color=colour, linestyle=ls, lw=lw, label=mpl_text(r.label) if r.label else None)


def _heatmap(fig: Figure, ax: Axes, p: Panel) -> None:
    h = p.heatmap
    assert h is not None
    z = np.asarray(h.z, dtype=float)
    im = ax.imshow(np.ma.masked_invalid(z), cmap=h.cmap, vmin=h.zmin, vmax=h.zmax)
    fig.colorbar(im, ax=ax, shrink=0.8, label=mpl_text(h.colourbar))
    span = h.zmax - h.zmin
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            if not h.text[i][j]:
                continue
            frac = (z[i, j] - h.zmin) / span if span else 0.5
            dark = frac < 0.5 if h.zmin >= 0 else abs(z[i, j]) > 0.6 * h.zmax
            ax.text(
                j, i, h.text[i][j], ha="center", va="center", fontsize=7, color="white" if dark else "black"
            )
    labels = [mpl_text(m) for m in h.labels]
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)


def draw_panel(fig: Figure, ax: Axes, p: Panel) -> None:
    """Draw one panel of a spec onto ``ax``."""
    if p.heatmap is not None:
        _heatmap(fig, ax, p)
        ax.set_title(mpl_text(p.title), fontsize=9)
        return
    for s in p.series:
        _draw_series(ax, s)
    for r in p.lines:
        _ref_line(ax, r)
    for a in p.annotations:
        ax.text(a.x, a.y, mpl_text(a.text), va="center", fontsize=7)
    if p.xlim is not None:
        ax.set_xlim(*p.xlim)
    if p.xticks is not None:
        pos, labels = p.xticks
        long = max((len(str(t)) for t in labels), default=0) > 6
        ax.set_xticks(pos, [mpl_text(t) for t in labels], rotation=35 if long else 0, ha="right" if long else "center",
                      fontsize=7)  # fmt: skip
    if p.yticks is not None:
        ax.set_yticks(p.yticks[0], [mpl_text(t) for t in p.yticks[1]], fontsize=7)
    for axis, scale, fixed in ((ax.xaxis, p.xscale, p.xticks), (ax.yaxis, p.yscale, p.yticks)):
        if fixed is not None:
            continue
        if scale == "log":
            (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
            plain_log_axis(axis)
        else:  # few ticks: labels like -0.0075 never run into each other in a 4-inch panel
            axis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    ax.set_xlabel(mpl_text(p.xlabel), fontsize=8)
    ax.set_ylabel(mpl_text(p.ylabel), fontsize=8)
    ax.set_title(mpl_text(p.title), fontsize=9)
    if p.grid != "none":
        ax.grid(axis=p.grid, alpha=0.3)
    if p.reversed_y:
        ax.invert_yaxis()


def render(spec: FigureSpec) -> Figure:
    """The matplotlib Figure of a spec; raises :class:`SkipFigure` with ``spec.skip`` when there is nothing to draw."""
    if spec.skip is not None:
        raise SkipFigure(spec.skip)
    if spec.cd is not None:
        from mamba_kan.analysis.cd_diagram import plot_cd_diagram

        return plot_cd_diagram(spec.cd, groups="wilcoxon", title=mpl_text(spec.title))
    n = len(spec.panels)
    ncols = max(1, min(spec.ncols, n))
    nrows = math.ceil(n / ncols)
    w, h = spec.panel_size
    fig = Figure(figsize=(w * ncols, h * nrows + 0.6), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    handles: dict[str, Any] = {}
    for ax, p in zip(axes, spec.panels):
        if not (p.series or p.heatmap):
            ax.set_visible(False)
            continue
        draw_panel(fig, ax, p)
        for s in p.series:
            if s.label and s.label not in handles:
                handles[s.label] = _legend_handle(s)
        for r in p.lines:
            if r.label and r.label not in handles:
                ls, colour, lw = _REF[r.style]
                handles[r.label] = Line2D([], [], color=colour, linestyle=ls, lw=lw, label=mpl_text(r.label))
    if handles:
        fig.legend(handles=list(handles.values()), loc="outside lower center", ncols=min(6, len(handles)),
                   frameon=False, fontsize=8)  # fmt: skip
    fig.suptitle(mpl_text(spec.title), fontsize=10)
    return fig


def save_figure(
    fig: Figure, directory: Path, stem: str, formats: Sequence[str], dpi: int = 150
) -> list[Path]:
    """Write ``fig`` as ``directory/stem.<fmt>`` for each format (TrueType fonts in PDF); returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    with matplotlib.rc_context(FONT_RC):
        for fmt in formats:
            path = directory / f"{stem}.{fmt}"
            fig.savefig(path, format=fmt, dpi=dpi, metadata=_METADATA.get(fmt, {}))
            out.append(path)
    return out


def plot_functions(
    ax: Axes, s: SplineSet, module: str, colour: str, ylim: tuple[float, float] | None = None
) -> None:
    """Up to MAX_CURVES functions of one module of one run onto ``ax`` (the GIF's frames), silu for reference."""
    p = _function_panel(s, module, colour)
    draw_panel(ax.figure, ax, p)  # type: ignore[arg-type]
    ax.legend(
        handles=[_legend_handle(x) for x in p.series if x.label], fontsize=7, loc="upper left", frameon=False
    )
    if ylim is not None:
        ax.set_ylim(*ylim)
