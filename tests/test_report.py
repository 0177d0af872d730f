"""The report: every figure, the GIF, the tables and the offline dashboard, built from a small real results database.

The database comes from a tiny grid run through the real sweep runner (6 variants x 2 tasks x 3 seeds, 12 steps),
built once per session in a directory whose name contains markup. Added to it with the results store: failed runs of
a seventh variant (``kan_ffn``, zero completed runs) whose run id, config, environment and error message carry
``<script>alert(1)</script>``.

Independent references: numbers are recomputed from the SQLite file with the ``sqlite3`` module and numpy/scipy
(mean, sd, t-intervals, geometric means); learned functions are recomputed from the saved state dict with
``scipy.interpolate.BSpline`` in float64; files are checked with Pillow, an XML parser and the PDF header; the HTML
with Python's ``html.parser``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import xml.etree.ElementTree as ET
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from scipy import interpolate, stats

from mamba_kan.cli import main
from mamba_kan.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
INJECT = "<script>alert(1)</script>"
DIR_NAME = "cmp <img src=x onerror=alert(2)>"  # a comparison directory whose path is markup
SIX = ["mlp_transformer", "bspline_transformer", "kan_transformer", "mlp_mamba", "bspline_mamba", "kan_mamba"]
EMPTY_VARIANT = "kan_ffn"
SEEDS = [0, 1, 2]
TINY = {"max_steps": 12, "batch_size": 8, "eval_every": 4, "eval_batch_size": 64, "log_every": 3,
        "checkpoint_every": 100, "model_cfg": {"d_model": 32, "n_layers": 1, "n_heads": 2}}  # fmt: skip

_CACHE: dict[str, Any] = {}


# --------------------------------------------------------------------------------------------------------------
# the shared results database and report (built once per session; the browser test reuses them)
# --------------------------------------------------------------------------------------------------------------
def _tasks() -> list[Any]:
    from mamba_kan.experiments.grid import TaskSpec

    return [TaskSpec("symbolic/exp_sin", {"n_train": 64, "n_val": 32, "n_test": 32}),
            TaskSpec("timeseries/lorenz", {"context": 16, "horizon": 4, "eval_windows": 16})]  # fmt: skip


def comparison_dir(base: Path) -> Path:
    """Run the tiny grid with the real runner, then record the failed runs of the empty variant."""
    if "dir" in _CACHE:
        return _CACHE["dir"]
    from mamba_kan.experiments.grid import expand_grid
    from mamba_kan.experiments.runner import SweepOptions, run_sweep
    from mamba_kan.experiments.store import ResultsStore

    out = base / DIR_NAME
    cells = expand_grid(SIX, _tasks(), SEEDS, TINY)
    summary = run_sweep(
        cells, out, SweepOptions(workers=2, threads=1, command="mamba-kan compare --preset tiny")
    )
    assert summary.counts == {"completed": len(cells)}, summary
    labels = sorted({c.task for c in cells})
    with ResultsStore(out) as store:
        for task in labels:
            for seed in SEEDS:
                result = {
                    "model": EMPTY_VARIANT, "ffn": "kan", "mixer": "none", "task": task, "seed": seed,
                    "status": "failed", "error": f"RuntimeError: {INJECT} out of memory", "primary_metric": "mse",
                    "higher_is_better": False, "metrics": {}, "curves": [],
                    "config": {"model": EMPTY_VARIANT, "task": task, "seed": seed, "note": INJECT},
                    "env": {"hostname": INJECT, "device": "cpu"},
                }  # fmt: skip
                key = hashlib.sha256(f"{EMPTY_VARIANT}|{task}|{seed}".encode()).hexdigest()
                store.record_run(
                    key,
                    f"{EMPTY_VARIANT}.{task}.{INJECT}.s{seed}",
                    result,
                    task=task,
                    run_dir=f"runs/{INJECT}",
                )
    _CACHE["dir"] = out
    return out


def analysis_of(path: Path) -> Any:
    """The analysis with fewer bootstrap resamples than the default (faster; the report accepts any analysis)."""
    from mamba_kan.analysis import analyze_directory

    return analyze_directory(path, n_bootstrap=999)


def built_report(base: Path) -> Path:
    if "report" not in _CACHE:
        from mamba_kan.reporting import generate_report

        d = comparison_dir(base)
        _CACHE["report"] = generate_report(d, formats=("png",), analysis=analysis_of(d))
    return _CACHE["report"]


@pytest.fixture(scope="session")
def cmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return comparison_dir(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_report(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def data(cmp_dir: Path) -> Any:
    from mamba_kan.reporting.data import load_report_data

    return load_report_data(cmp_dir, analysis_of(cmp_dir))


def sql(path: Path, query: str, *args: Any) -> list[tuple]:
    con = sqlite3.connect(f"{(path / 'results.db').resolve().as_uri()}?mode=ro", uri=True)
    try:
        return con.execute(query, args).fetchall()
    finally:
        con.close()


# --------------------------------------------------------------------------------------------------------------
# numbers against independent computations
# --------------------------------------------------------------------------------------------------------------
def test_accuracy_table_is_mean_and_sd_over_completed_seeds(cmp_dir, data, report):
    from mamba_kan.reporting.tables import accuracy_rows, mean_sd

    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for task, model, v in sql(
        cmp_dir,
        "SELECT task, model, json_extract(record_json, '$.primary_value') FROM runs WHERE status = 'completed'",
    ):
        values[(task, model)].append(v)
    rows = {r["model"]: r for r in accuracy_rows(data)}
    assert set(rows) == set(SIX) | {EMPTY_VARIANT}
    text = (report / "tables.md").read_text()
    for (task, model), v in values.items():
        cell = rows[model][task]
        np.testing.assert_allclose(cell["mean"], np.mean(v), rtol=1e-12)
        np.testing.assert_allclose(cell["sd"], np.std(v, ddof=1), rtol=1e-12)
        assert cell["n"] == len(SEEDS) and mean_sd(np.mean(v), np.std(v, ddof=1), 3, 3) in text
    # the best mean of each task (lower mse is better) is the bold one
    for task in {t for t, _ in values}:
        best = min((m for t, m in values if t == task), key=lambda m: np.mean(values[(task, m)]))
        assert rows[best][task]["best"] and sum(rows[m][task]["best"] for m in rows) == 1
    # the variant without completed runs: a dash, never a number
    for task in data.tasks:
        assert rows[EMPTY_VARIANT][task]["text"] == "—" and rows[EMPTY_VARIANT][task]["n"] == 0


def test_speed_slowdown_is_a_ratio_of_mean_steps_per_second(cmp_dir, data):
    from mamba_kan.reporting.data import speed_overall, speed_summary

    sps: dict[tuple[str, str], list[float]] = defaultdict(list)
    for task, model, v in sql(
        cmp_dir,
        "SELECT task, model, json_extract(record_json, '$.steps_per_sec') FROM runs WHERE status = 'completed'",
    ):
        sps[(task, model)].append(v)
    per_task = speed_summary(data).set_index(["task", "model"])
    ratios: dict[str, list[float]] = defaultdict(list)
    for (task, model), v in sps.items():
        ref = np.mean(sps[(task, "mlp_transformer")])
        expected = ref / np.mean(v)
        np.testing.assert_allclose(per_task.loc[(task, model), "slowdown"], expected, rtol=1e-12)
        ratios[model].append(expected)
    overall = speed_overall(data).set_index("model")
    for model, r in ratios.items():  # geometric mean over tasks
        np.testing.assert_allclose(overall.loc[model, "slowdown"], np.exp(np.mean(np.log(r))), rtol=1e-12)
    assert overall.loc["mlp_transformer", "slowdown"] == pytest.approx(1.0)
    assert np.isnan(overall.loc[EMPTY_VARIANT, "slowdown"])


def test_learning_curve_band_is_a_student_t_interval_over_seeds(cmp_dir, data):
    from mamba_kan.reporting.data import curve_summary

    task = "timeseries/lorenz"
    rows = sql(cmp_dir, "SELECT r.model, c.step, c.value FROM curves c JOIN runs r ON r.cell_key = c.cell_key "
                        "WHERE r.task = ? AND c.split = 'val' AND c.metric = 'mse' AND r.status = 'completed'", task)  # fmt: skip
    by: dict[tuple[str, int], list[float]] = defaultdict(list)
    for model, step, v in rows:
        by[(model, step)].append(v)
    s = curve_summary(data, task, "val", "mse").set_index(["model", "step"])
    assert len(s) == len(by) == len(SIX) * 3  # validation at steps 4, 8, 12
    for key, v in by.items():
        lo, hi = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
        np.testing.assert_allclose([s.loc[key, "mean"], s.loc[key, "low"], s.loc[key, "high"]],
                                   [np.mean(v), lo, hi], rtol=1e-10)  # fmt: skip


def test_pairwise_heatmap_effects_are_oriented_paired_dz(cmp_dir, data):
    from mamba_kan.reporting.specs import pairwise_matrices, pairwise_source

    task = "symbolic/exp_sin"
    v: dict[str, dict[int, float]] = defaultdict(dict)
    for model, seed, value in sql(cmp_dir, "SELECT model, seed, json_extract(record_json, '$.primary_value') FROM runs WHERE task = ? AND "
                                           "status = 'completed'", task):  # fmt: skip
        v[model][seed] = value
    rec, hib, _ = pairwise_source(data, task)
    assert hib is False  # mse: lower is better
    models, p, dz = pairwise_matrices(rec, hib)
    assert set(models) == set(SIX)  # the variant without results is left out of the tests
    for i, a in enumerate(models):
        for j, b in enumerate(models):
            if i == j:
                assert np.isnan(p[i, j]) and np.isnan(dz[i, j])
                continue
            diff = np.array([v[a][s] - v[b][s] for s in SEEDS])
            # d_z of a - b (Cohen 1988), negated because lower is better: positive = the row variant is better
            np.testing.assert_allclose(dz[i, j], -diff.mean() / diff.std(ddof=1), rtol=1e-9)
            assert p[i, j] == p[j, i] and 0 < p[i, j] <= 1


def _phi_reference(sd: dict[str, Any], prefix: str, kan: bool, x: np.ndarray, k: int, n: int) -> np.ndarray:
    """phi(x) = w_b silu(x) + w_s sum_m c_m B_m(x) (KAN paper eq. 2.10) with scipy's B-splines in float64 on the
    uniform knots grid_low + h * (-k .. G + k); KAN edges row-major (o, i), B-spline activations per feature."""
    coef = sd[f"{prefix}.coef"].double().numpy()
    low = sd[f"{prefix}.grid_low"].double().numpy()
    h = sd[f"{prefix}.grid_h"].double().numpy()
    ws = sd[f"{prefix}.spline_weight"].double().numpy()
    wb = sd[f"{prefix}.base_weight"].double().numpy()
    n_basis = coef.shape[-1]
    grid = n_basis - k
    silu = x / (1.0 + np.exp(-x))
    out = []
    if kan:  # coef (out, in, M): edge (o, i) uses input i's grid
        n_out, n_in, _ = coef.shape
        for o in range(n_out):
            for i in range(n_in):
                knots = low[i] + h[i] * np.arange(-k, grid + k + 1)
                spline = interpolate.BSpline(knots, coef[o, i], k)(x)
                out.append(wb[o, i] * silu + ws[o, i] * spline)
                if len(out) == n:
                    return np.array(out)
    else:  # coef (F, M)
        for j in range(min(n, coef.shape[0])):
            knots = low[j] + h[j] * np.arange(-k, grid + k + 1)
            out.append(wb[j] * silu + ws[j] * interpolate.BSpline(knots, coef[j], k)(x))
    return np.array(out)


@pytest.mark.parametrize("model", ["kan_transformer", "bspline_mamba"])
def test_learned_functions_match_a_float64_bspline_evaluation(cmp_dir, data, model):
    import torch

    from mamba_kan.reporting.splines import final_functions, representative_runs

    run = next(r for r in representative_runs(data, "symbolic/exp_sin") if r["model"] == model)
    got = final_functions(cmp_dir, run)
    payload = torch.load(cmp_dir / run["run_dir"] / "final_model.pt", map_location="cpu", weights_only=True)
    k = payload["model_config"]["spline_order"]
    assert got.x[0] == pytest.approx(payload["model_config"]["grid_range"][0])
    assert got.x[-1] == pytest.approx(payload["model_config"]["grid_range"][1])
    assert got.functions, "a spline variant has spline functions"
    for module, fns in got.functions.items():
        ref = _phi_reference(payload["state_dict"], module, model.startswith("kan_"), got.x.astype(float), k,
                             fns.shape[0])  # fmt: skip
        assert ref.shape == fns.shape
        np.testing.assert_allclose(fns, ref, atol=2e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------------------
def _nonblank_png(path: Path) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 150
        a = np.asarray(im.convert("L"), dtype=float)
    assert a.std() > 5 and (a < 128).mean() > 0.002, f"{path.name} looks blank"


def test_every_static_figure_is_written(report, data):
    manifest = json.loads((report / "manifest.json").read_text())
    names = {f["name"] for f in manifest["figures"]}
    expected = {"final_metric", "interaction", "speed", "perf_vs_params", "perf_vs_flops", "contrasts",
                "cd_diagram_across", "pairwise_across"}  # fmt: skip
    for slug in ("symbolic-exp_sin", "timeseries-lorenz"):
        expected |= {
            f"learning_curves_{slug}",
            f"pairwise_{slug}",
            f"cd_diagram_{slug}",
            f"learned_functions_{slug}",
        }
    assert expected <= names
    assert manifest["skipped"] == [], "every figure has its data in a complete grid"
    for f in manifest["figures"]:
        (path,) = f["files"]
        _nonblank_png(report / path)
    for name in ("tables.md", "statistics.md", "statistics.tex", "analysis.json"):
        assert (report / name).stat().st_size > 200


def test_vector_formats_are_valid_svg_and_pdf(data, tmp_path):
    from mamba_kan.reporting import figures as F
    from mamba_kan.reporting import specs as S

    paths = F.save_figure(F.render(S.final_metric(data)), tmp_path, "final_metric", ("svg", "pdf"))
    svg, pdf = paths
    assert ET.parse(svg).getroot().tag.endswith("svg")
    raw = pdf.read_bytes()
    assert raw.startswith(b"%PDF-") and raw.rstrip().endswith(b"%%EOF") and len(raw) > 5000
    assert b"CreationDate" not in raw  # reproducible files: no timestamp
    # fonts embedded as TrueType (Type 42: /CIDFontType2 or /TrueType), never as Type 3 procedures
    assert b"/FontType 3" not in raw and b"/Type3" not in raw
    assert b"/CIDFontType2" in raw or b"/Subtype /TrueType" in raw


# --------------------------------------------------------------------------------------------------------------
# figures as data: one spec per figure, two renderers
# --------------------------------------------------------------------------------------------------------------
def _all_specs(data: Any) -> list[tuple[str, Any]]:
    from mamba_kan.reporting import specs as S
    from mamba_kan.reporting.report import load_learned_functions, static_figures

    out = [(stem, build()) for stem, _, _, build in static_figures(data)]
    splines, _ = load_learned_functions(data)
    return out + [(f"learned_functions {t}", S.learned_functions(splines.get(t, []), t)) for t in data.tasks]


def _finite_list(values: Any) -> list[float]:
    return [float(v) for v in values if v is not None and np.isfinite(float(v))]


def test_each_figure_is_one_spec_that_both_renderers_draw(data):
    from matplotlib.figure import Figure

    from mamba_kan.reporting import figures as F
    from mamba_kan.reporting import interactive as ix
    from mamba_kan.reporting.specs import FigureSpec, SkipFigure

    specs = _all_specs(data)
    kinds = {spec.kind for _, spec in specs}
    assert kinds == {"learning_curves", "final_metric", "interaction", "speed", "perf_vs_params", "perf_vs_flops",
                     "contrasts", "cd_diagram", "pairwise", "learned_functions"}  # fmt: skip
    for name, spec in specs:
        assert isinstance(spec, FigureSpec) and spec.skip is None and spec.caption, name
        fig = F.render(spec)
        assert isinstance(fig, Figure)
        if spec.cd is not None:  # the CD diagram is drawn by the analysis' own static plot
            with pytest.raises(SkipFigure):
                ix.render(spec)
            continue
        panels = [p for p in spec.panels if p.series or p.heatmap]
        assert len([ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]) == len(
            panels
        )
        pfig = ix.render(spec)
        # the same numbers reach both renderers: every finite y of the spec is a y of some plotly trace
        plotted = {round(v, 9) for tr in pfig.data if tr.type != "heatmap" for v in _finite_list(tr.y or [])}
        for p in panels:
            for s in p.series:
                if s.kind == "barh":
                    assert {round(v, 9) for v in _finite_list(s.x)} <= {
                        round(v, 9) for tr in pfig.data if tr.type == "bar" for v in _finite_list(tr.x or [])
                    }
                    continue
                assert {round(v, 9) for v in _finite_list(s.y)} <= plotted, (name, s.label)
        # a variant's traces carry its name as legend group (the dashboard's filter)
        groups = {s.group for p in panels for s in p.series if s.group}
        assert groups <= {tr.legendgroup for tr in pfig.data}, name


def test_skip_reason_is_the_same_in_both_renderers_and_the_dashboard(one_variant_dir):
    from mamba_kan.reporting import figures as F
    from mamba_kan.reporting import interactive as ix
    from mamba_kan.reporting import specs as S
    from mamba_kan.reporting.dashboard import DashboardBuilder
    from mamba_kan.reporting.data import load_report_data

    small = load_report_data(one_variant_dir)
    for spec in (S.contrasts(small), S.interaction(small), S.pairwise(small, None), S.cd_diagram(small, None),
                 S.learned_functions([], "symbolic/exp_sin")):  # fmt: skip
        assert spec.skip, spec.kind
        for renderer in (F.render, ix.render):
            with pytest.raises(S.SkipFigure) as err:
                renderer(spec)
            assert str(err.value) == spec.skip
        b = DashboardBuilder(small)
        b.figure(spec.kind, spec)
        assert b.skipped == [(spec.kind, spec.skip)]
    assert "need at least 2 variants" in S.contrasts(small).skip


def test_mse_and_loss_curves_use_a_log_axis_with_a_positive_band(cmp_dir, data):
    from mamba_kan.reporting import figures as F
    from mamba_kan.reporting import interactive as ix
    from mamba_kan.reporting import specs as S

    task = "timeseries/lorenz"
    spec = S.learning_curves(data, task)
    assert [p.yscale for p in spec.panels] == ["log", "log"]  # training loss (MSE) and validation mse
    assert spec.panels[1].ylabel.endswith("; log scale)")
    # independent reference: a t-interval of the log values over seeds, transformed back (always positive)
    rows = sql(cmp_dir, "SELECT r.model, c.step, c.value FROM curves c JOIN runs r ON r.cell_key = c.cell_key "
                        "WHERE r.task = ? AND c.split = 'val' AND c.metric = 'mse' AND r.status = 'completed'", task)  # fmt: skip
    by: dict[tuple[str, int], list[float]] = defaultdict(list)
    for model, step, v in rows:
        by[(model, step)].append(np.log(v))
    series = {s.group: s for s in spec.panels[1].series}
    for (model, step), logs in by.items():
        s = series[model]
        i = s.x.index(step)
        lo, hi = stats.t.interval(0.95, len(logs) - 1, loc=np.mean(logs), scale=stats.sem(logs))
        np.testing.assert_allclose([s.y[i], s.low[i], s.high[i]], np.exp([np.mean(logs), lo, hi]), rtol=1e-10)
        assert s.low[i] > 0
    fig = F.render(spec)
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "log"]
    pfig = ix.render(spec)
    assert pfig.layout.yaxis.type == "log" and pfig.layout.yaxis2.type == "log"
    # accuracy-like metrics stay linear
    assert S.LOG_METRICS.isdisjoint({"accuracy", "r2"})


def _token_task_data(data: Any, floor: float = 1.2425) -> Any:
    """The report data with symbolic/exp_sin dressed as a token task: its runs report cross-entropy metrics, a
    known floor (as the training loop records it) and a ``baseline_unigram`` test metric."""
    import dataclasses

    runs = data.runs.copy()
    sel = (runs["task"] == "symbolic/exp_sin").to_numpy()
    runs.loc[sel, "metrics"] = pd_series([{"loss": 1.5, "bpb": 2.1, "perplexity": 4.5, "baseline_unigram": 2.77}
                                          for _ in range(int(sel.sum()))], runs.index[sel])  # fmt: skip
    runs.loc[sel, "extra"] = pd_series([{**(e or {}), "floor": floor} for e in runs.loc[sel, "extra"]],
                                       runs.index[sel])  # fmt: skip
    if "floor" in runs:
        runs.loc[sel, "floor"] = floor
    metric = {**data.metric, "symbolic/exp_sin": "mse"}
    return dataclasses.replace(data, runs=runs, metric=metric)


def pd_series(values: list[Any], index: Any) -> Any:
    import pandas as pd

    return pd.Series(values, index=index, dtype=object)


def test_loss_axis_has_its_unit_and_floors_and_baselines_are_drawn(data):
    from matplotlib.lines import Line2D

    from mamba_kan.reporting import figures as F
    from mamba_kan.reporting import interactive as ix
    from mamba_kan.reporting import specs as S

    # forecasting: the training loss is an MSE; no floor is known, only the task's baselines are drawn
    lorenz = S.learning_curves(data, "timeseries/lorenz")
    assert lorenz.panels[0].ylabel.startswith("training loss (MSE")
    assert all(r.style == "baseline" for r in lorenz.panels[1].lines)
    tok = _token_task_data(data)
    spec = S.learning_curves(tok, "symbolic/exp_sin")
    assert "nats/token" in spec.panels[0].ylabel
    fm = S.final_metric(tok, ["symbolic/exp_sin"])
    lines = sorted((r.style, r.value) for r in fm.panels[0].lines)
    assert [r[0] for r in lines] == ["baseline", "floor"]
    assert [r[1] for r in lines] == pytest.approx([2.77, 1.2425], rel=1e-12)
    fig = F.render(fm)
    drawn = [ln for ln in fig.axes[0].get_lines() if isinstance(ln, Line2D) and ln.get_label().startswith(("floor",
             "unigram"))]  # fmt: skip
    assert sorted(float(ln.get_ydata()[0]) for ln in drawn) == pytest.approx([1.2425, 2.77], rel=1e-12)
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any(t.startswith("floor 1.242") for t in legend) and any("unigram baseline" in t for t in legend)
    pfig = ix.render(fm)
    assert sorted(sh.y0 for sh in pfig.layout.shapes) == pytest.approx([1.2425, 2.77], rel=1e-12)
    assert any((tr.name or "").startswith("floor") for tr in pfig.data)


def test_learned_functions_label_the_reference_curve(data):
    from mamba_kan.reporting import figures as F
    from mamba_kan.reporting import specs as S
    from mamba_kan.reporting.report import load_learned_functions

    splines, _ = load_learned_functions(data)
    spec = S.learned_functions(splines["symbolic/exp_sin"], "symbolic/exp_sin")
    ref = [s for p in spec.panels for s in p.series if s.label and "silu" in s.label]
    assert ref and all(np.allclose(s.y, np.asarray(s.x) / (1 + np.exp(-np.asarray(s.x)))) for s in ref)
    legend = [t.get_text() for leg in F.render(spec).legends for t in leg.get_texts()]
    assert "silu(x) (reference)" in legend


def _overlaps(boxes: list[Any]) -> list[tuple[int, int]]:
    return [
        (i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])
    ]


def test_tick_labels_do_not_overlap_and_log_ticks_are_plain_numbers(data):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from mamba_kan.reporting import figures as F

    for name, spec in _all_specs(data):
        if spec.cd is not None:
            continue
        fig = F.render(spec)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            for axis, labels in (("x", ax.get_xticklabels()), ("y", ax.get_yticklabels())):
                shown = [t for t in labels if t.get_visible() and t.get_text() and t.get_rotation() == 0]
                boxes = [t.get_window_extent(renderer) for t in shown]
                assert _overlaps(boxes) == [], (name, axis, [t.get_text() for t in shown])
                if (ax.get_xscale() if axis == "x" else ax.get_yscale()) == "log":
                    for t in labels + (
                        ax.get_xminorticklabels() if axis == "x" else ax.get_yminorticklabels()
                    ):
                        assert re.fullmatch(r"(-?[0-9.]+k?)?", t.get_text()), (name, t.get_text())


def test_gif_shows_the_spline_snapshots_in_order(report, cmp_dir):
    manifest = json.loads((report / "manifest.json").read_text())
    anim = manifest["animation"]
    assert anim["kind"] == "splines" and anim["task"] == "symbolic/exp_sin"
    # independent reference: the snapshot files of the animated runs
    for run_id in anim["runs"]:
        files = sorted((cmp_dir / "runs" / run_id / "snapshots").glob("splines_step*.pt"))
        assert [int(f.stem.removeprefix("splines_step")) for f in files] == anim["steps"] == [4, 8, 12]
    with Image.open(report / anim["file"]) as im:
        assert im.format == "GIF" and im.n_frames == len(anim["steps"]) and im.info.get("loop") == 0
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("L"), dtype=float))
    assert np.abs(frames[0] - frames[-1]).mean() > 0.01, "the functions move between the first and last frame"


# --------------------------------------------------------------------------------------------------------------
# the dashboard
# --------------------------------------------------------------------------------------------------------------
class _Page(HTMLParser):
    """Collects tags, attributes and text of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)


def parse(path: Path) -> tuple[str, _Page]:
    text = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    return text, page


EXTERNAL_LOADS = [
    re.compile(r"<script[^>]*\ssrc\s*=", re.I),
    re.compile(r"<link[^>]*\shref\s*=", re.I),
    re.compile(r"<(img|iframe|source|video|audio|embed)[^>]*\ssrc\s*=\s*[\"']?\s*(https?:)?//", re.I),
    re.compile(r"@import", re.I),
    re.compile(r"url\(\s*[\"']?\s*(https?:)?//", re.I),
]


def test_dashboard_is_self_contained(report):
    from plotly.offline import get_plotlyjs

    html_text, page = parse(report / "dashboard.html")
    for pattern in EXTERNAL_LOADS:
        assert not pattern.search(html_text), pattern.pattern
    for tag, attrs in page.tags:  # images are inline data: URIs
        if tag == "img":
            assert (attrs.get("src") or "").startswith("data:image/"), attrs
    banner = get_plotlyjs()[:60]
    assert html_text.count(banner) == 1, "plotly.js embedded exactly once"
    manifest = json.loads((report / "manifest.json").read_text())
    divs = [a for t, a in page.tags if t == "div" and "plotly-graph-div" in (a.get("class") or "")]
    assert len(divs) == manifest["dashboard"]["interactive_figures"] >= 20
    # one script per figure, plus plotly.js, the variant list and the filter code
    assert len(page.scripts) == len(divs) + 3


def test_dashboard_headline_tables_filters_and_missing_variant(report, data):
    html_text, page = parse(report / "dashboard.html")
    text = " ".join(page.text)
    for heading in (
        "Accuracy comparison",
        "Training speed comparison",
        "Key findings",
        "Grid status",
        "Runs (42)",
    ):
        assert heading in text
    filters = {(a.get("data-filter"), a.get("value")) for t, a in page.tags if t == "input"}
    assert filters == {("task", t) for t in data.tasks} | {("variant", m) for m in data.models}
    # the variant with no completed run: marked in the grid table, listed among the missing runs, no crash
    missing_cells = [a for t, a in page.tags if t == "span" and a.get("class") == "missing"]
    assert len(missing_cells) == 2 * len(data.tasks)  # accuracy and grid tables, one per task
    assert "0/3 (3 failed)" in text
    assert text.count(f"{EMPTY_VARIANT}") >= 8
    # verdicts of the activation-vs-topology question are in the key findings
    assert "Activation vs topology:" in text and "Across 2 tasks" in text


def test_strings_from_configs_paths_and_errors_are_escaped(report, cmp_dir):
    html_text, page = parse(report / "dashboard.html")
    assert INJECT not in html_text and "<img src=x" not in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text  # shown as text
    assert "&lt;img src=x onerror=alert(2)&gt;" in html_text  # the directory name
    text = " ".join(page.text)
    assert INJECT in text and str(cmp_dir.resolve()) in text  # ... and it reads as the original string
    for tag, attrs in page.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)  # no event handler attribute anywhere
    for script in page.scripts:
        assert (
            INJECT not in script
        )  # no injected code in any script (and no extra script elements, see above)
    md = (report / "tables.md").read_text()
    assert "<script" not in md and "<img" not in md


# --------------------------------------------------------------------------------------------------------------
# fewer runs than the statistics need; the command line and the assets script
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def one_variant_dir(cmp_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the database holding only mlp_transformer runs (the artefacts stay in the original directory)."""
    out = tmp_path_factory.mktemp("one_variant")
    src, dst = sqlite3.connect(cmp_dir / "results.db"), sqlite3.connect(out / "results.db")
    src.backup(dst)  # a consistent copy even if a WAL file is around
    src.close()
    dst.execute("DELETE FROM runs WHERE model != 'mlp_transformer'")
    dst.commit()
    dst.close()
    return out


def test_report_of_a_grid_too_small_for_statistics(one_variant_dir, tmp_path, capsys):
    assert main(["report", str(one_variant_dir), "--out", str(tmp_path / "r"), "--format", "svg"]) == 0
    out = capsys.readouterr().out
    assert f"dashboard: {(tmp_path / 'r' / 'dashboard.html').resolve()}" in out
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    names = {f["name"] for f in manifest["figures"]}
    assert {"final_metric", "speed", "learning_curves_symbolic-exp_sin"} <= names
    assert all(f["files"] == [f"figures/{f['name']}.svg"] for f in manifest["figures"])
    skipped = {s["figure"]: s["reason"] for s in manifest["skipped"]}
    assert "need at least 2 variants" in skipped["contrasts"] and "cd_diagram_across" in skipped
    html_text, page = parse(tmp_path / "r" / "dashboard.html")
    assert "statistics skipped: need at least 2 variants" in " ".join(page.text)
    assert not (tmp_path / "r" / "analysis.json").exists()


def test_report_of_a_directory_where_every_run_failed(tmp_path):
    from mamba_kan.experiments.store import ResultsStore
    from mamba_kan.reporting import generate_report

    with ResultsStore(tmp_path / "cmp") as store:
        for seed in (0, 1):
            result = {"model": "kan_mamba", "task": "symbolic/exp_sin", "seed": seed, "status": "failed",
                      "error": f"ValueError: {INJECT} $x$", "metrics": {}, "curves": [], "config": {}, "env": {}}  # fmt: skip
            store.record_run(f"key{seed}", f"run{seed}", result, task="symbolic/exp_sin")
    out = generate_report(tmp_path / "cmp", formats="png")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["figures"] == [] and len(manifest["skipped"]) >= 10
    assert all(s["reason"] for s in manifest["skipped"])
    html_text, page = parse(out / "dashboard.html")
    text = " ".join(page.text)
    assert "Runs (2)" in text and "0/2 (2 failed)" in text and f"ValueError: {INJECT} $x$" in text
    assert INJECT not in html_text


def test_report_command_rejects_bad_input(cmp_dir, tmp_path, capsys):
    assert main(["report", str(cmp_dir), "--format", "png,gif"]) == 2
    err = capsys.readouterr().err
    assert (
        "unknown figure format 'gif'; valid choices: png, svg, pdf" in err
        and len(err.strip().splitlines()) == 1
    )
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a comparison directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    from mamba_kan.experiments.store import ResultsStore

    ResultsStore(empty).close()
    assert main(["report", str(empty)]) == 2
    assert "holds no runs yet" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["report", str(cmp_dir), "--out", str(tmp_path / "file")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_parse_formats():
    from mamba_kan.reporting.report import parse_formats

    assert parse_formats("png, SVG,.pdf,png") == ("png", "svg", "pdf")
    assert parse_formats(["pdf"]) == ("pdf",)
    with pytest.raises(UserError, match="valid choices: png, svg, pdf"):
        parse_formats("jpeg")
    with pytest.raises(UserError, match="no figure format"):
        parse_formats(" , ")


def _assets_script() -> Any:
    """scripts/generate_assets.py loaded as a module (run in-process: no second interpreter start)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_assets", ROOT / "scripts" / "generate_assets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generate_assets_script_writes_figures_and_tables(one_variant_dir, tmp_path, capsys):
    script = _assets_script()
    out = tmp_path / "assets"
    assert script.main([str(one_variant_dir), "--out", str(out), "--link-prefix", "docs/assets"]) == 0
    assert "results_tables.md" in capsys.readouterr().out
    files = {p.name for p in out.iterdir()}
    assert {"final_metric.png", "speed.png", "results_tables.md", "learning_curves.gif"} <= files
    md = (out / "results_tables.md").read_text()
    assert "(docs/assets/final_metric.png)" in md and "### Accuracy comparison" in md
    assert "Hardware: " in md and "preset tiny" in md  # provenance from the runs and the sweep's command line
    for p in out.glob("*.png"):
        _nonblank_png(p)
        assert p.stat().st_size < 400_000
    assert script.main([str(tmp_path / "none")]) == 2
    assert "generate_assets: error:" in capsys.readouterr().err
