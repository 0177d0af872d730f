"""GIF animations: learned spline functions evolving during training, or (without snapshots) the learning curves
unfolding. Frames are drawn with matplotlib's Agg canvas and assembled with Pillow; axes limits are fixed over all
frames so that the motion is the functions' and not the axes'.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from mamba_kan.reporting.data import ReportData, curve_summary
from mamba_kan.reporting.figures import plain_log_axis, plot_functions
from mamba_kan.reporting.specs import LOG_METRICS, SkipFigure
from mamba_kan.reporting.splines import SplineSet, SplinesUnavailable, representative_runs, snapshot_series
from mamba_kan.reporting.style import mpl_text, variant_styles

log = logging.getLogger(__name__)

MAX_FRAMES = 60
FRAME_MS = 500
HOLD_LAST = 4  # the last frame stays this many frames long
DPI = 90


@dataclass
class Animation:
    """What a GIF shows: ``kind`` ("splines" or "learning_curves"), the task, run ids and the step of each frame."""

    path: Path
    kind: str
    task: str
    run_ids: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    description: str = ""


def figure_to_image(fig: Figure, dpi: int = DPI) -> Image.Image:
    """Render a Figure with Agg into an RGB Pillow image."""
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    w, h = canvas.get_width_height()
    return Image.frombuffer("RGBA", (w, h), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")


def save_gif(frames: list[Image.Image], path: Path, frame_ms: int = FRAME_MS) -> None:
    """An endlessly looping GIF; the last frame is held longer."""
    if not frames:
        raise ValueError("no frames")
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [frame_ms] * len(frames)
    durations[-1] = frame_ms * HOLD_LAST
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=False)


def _subsample(steps: list[int], limit: int) -> list[int]:
    """At most ``limit`` steps, evenly spread, always keeping the first and the last."""
    if len(steps) <= limit:
        return steps
    idx = np.unique(np.round(np.linspace(0, len(steps) - 1, limit)).astype(int))
    return [steps[i] for i in idx]


def _pick_spline_runs(data: ReportData) -> tuple[str, list[list[SplineSet]]]:
    """The first task (in order) with snapshots, and up to two runs on it: one B-spline MLP and one KAN variant,
    preferring the same mixer and seed. Raises SkipFigure when no run saved snapshots."""
    for task in data.tasks:
        series = []
        for run in representative_runs(data, task):
            try:
                frames = snapshot_series(data.root, run)
            except SplinesUnavailable:  # no run directory (e.g. collected without artefacts): not animatable
                continue
            if frames:
                series.append(frames)
        if not series:
            continue
        chosen: list[list[SplineSet]] = []
        for ffn in ("bspline", "kan"):
            match = [s for s in series if s[0].model.startswith(f"{ffn}_")]
            if match:
                chosen.append(match[0])
        return task, chosen or series[:2]
    raise SkipFigure(
        "no spline snapshots in any run directory (spline variants save them at each validation)"
    )


def spline_evolution_gif(data: ReportData, path: Path, max_frames: int = MAX_FRAMES) -> Animation:
    """Each frame: the first spline module of each chosen run (first 8 functions) at one training step."""
    task, runs = _pick_spline_runs(data)
    common = set.intersection(*({s.step for s in r} for r in runs))
    if not common:  # runs validated at different steps: animate the first one only
        runs = runs[:1]
        common = {s.step for s in runs[0]}
    steps = _subsample(sorted(int(s) for s in common if s is not None), max_frames)
    by_step = [{s.step: s for s in r} for r in runs]
    modules = [next(iter(r[0].functions)) for r in runs]
    limits = []
    for r, module in zip(runs, modules):
        vals = np.concatenate([s.functions[module][:8].ravel() for s in r if module in s.functions])
        lo, hi = float(np.nanmin(vals)), float(np.nanmax(vals))
        pad = 0.05 * (hi - lo or 1.0)
        limits.append((lo - pad, hi + pad))
    styles = variant_styles([r[0].model for r in runs])
    frames = []
    for step in steps:
        fig = Figure(figsize=(4.4 * len(runs), 3.6), layout="constrained")
        axes = fig.subplots(1, len(runs), squeeze=False)[0]
        for ax, lookup, module, ylim in zip(axes, by_step, modules, limits):
            s = lookup[step]
            plot_functions(ax, s, module, styles[s.model].colour, ylim)
            ax.set_title(mpl_text(f"{s.model} seed {s.seed}: {module}"), fontsize=9)
        fig.suptitle(mpl_text(f"Learned spline functions on {task}: step {step}"), fontsize=10)
        frames.append(figure_to_image(fig))
    save_gif(frames, path)
    return Animation(
        path=path,
        kind="splines",
        task=task,
        run_ids=[r[0].run_id for r in runs],
        steps=steps,
        description=f"Learned spline functions evolving during training on {task} "
        f"({', '.join(r[0].model for r in runs)}; first 8 functions of the first spline module; "
        f"{len(steps)} validation steps).",
    )


def learning_curve_gif(data: ReportData, path: Path, max_frames: int = MAX_FRAMES) -> Animation:
    """Each frame: the mean validation curves of the first task with curves, drawn up to one step."""
    for task in data.tasks:
        metric = data.metric.get(task)
        if not metric:
            continue
        s = curve_summary(data, task, "val", metric)
        if not s.empty:
            # the same axis as the static learning curves: log, with a log-space band, for positive error metrics
            log_axis = metric in LOG_METRICS and bool((s["mean"] > 0).all())
            s = curve_summary(data, task, "val", metric, log=True) if log_axis else s
            break
    else:
        raise SkipFigure("no validation curves of completed runs")
    steps = _subsample(sorted(int(v) for v in s["step"].unique()), max_frames)
    styles = variant_styles(data.models)
    y = np.concatenate([s["mean"].to_numpy(float), s["low"].to_numpy(float), s["high"].to_numpy(float)])
    y = y[np.isfinite(y)]
    pad = 0.05 * (float(y.max() - y.min()) or 1.0)
    ylim = (
        (float(y.min()) * 0.9, float(y.max()) * 1.1)
        if log_axis
        else (float(y.min()) - pad, float(y.max()) + pad)
    )
    frames = []
    for step in steps:
        fig = Figure(figsize=(6.0, 3.8), layout="constrained")
        ax = fig.subplots()
        for model in data.models:
            c = s[(s["model"] == model) & (s["step"] <= step)]
            if c.empty:
                continue
            st = styles[model]
            ax.plot(c["step"], c["mean"], color=st.colour, linestyle=st.mpl_dash, label=mpl_text(model))
            ax.fill_between(c["step"], c["low"], c["high"], color=st.colour, alpha=0.18, lw=0)
        ax.set_xlim(float(s["step"].min()), float(s["step"].max()))
        if log_axis:
            ax.set_yscale("log")
        ax.set_ylim(*ylim)
        if log_axis:
            plain_log_axis(ax.yaxis)
        ax.set_xlabel("training step")
        ax.set_ylabel(mpl_text(f"validation {data.metric_label(task)}"))
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
        fig.suptitle(mpl_text(f"Learning curves on {task}: step {step}"), fontsize=10)
        frames.append(figure_to_image(fig))
    save_gif(frames, path)
    return Animation(
        path=path,
        kind="learning_curves",
        task=task,
        steps=steps,
        description=f"Mean validation curves unfolding on {task} (no spline snapshots were found).",
    )
