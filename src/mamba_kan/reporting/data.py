"""What a report shows, read once from a comparison directory, and the summaries every figure and table share.

Sources: the results store (:func:`~mamba_kan.experiments.store.read_runs`, :func:`read_curves`), the statistics
(:func:`~mamba_kan.analysis.analyze_directory`, whose ``to_dict()`` contract is in the analysis package docstring)
and the per-run artefacts under ``DIR/runs/<run_id>/``. Numbers shown as "mean ± sd" are computed here from the
completed runs; intervals around cell means (t by default, BCa by option) and every test come from the analysis, so the report never
disagrees with ``mamba-kan analyze``.

Missing data is kept visible: the expected grid of a task is every (variant, seed) seen anywhere in that task, and
each cell is completed, diverged, failed or not recorded.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
import os
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mamba_kan.design import REFERENCE_VARIANT, VARIANTS, family_sort_key, variant_sort_key
from mamba_kan.errors import UserError

log = logging.getLogger(__name__)

#: Confidence of the bands around mean learning curves (t-interval over seeds).
CURVE_CONFIDENCE = 0.95
#: The reference variant of the speed comparison (the design's baseline, as in the parameter matching).
SPEED_REFERENCE = REFERENCE_VARIANT
# Settings that say how a grid was run (shown as the "preset" of a report); model sizes come from model_cfg.
_SETTING_KEYS = ("max_steps", "batch_size", "lr", "eval_every", "early_stopping_patience", "precision")
_MODEL_KEYS = ("d_model", "n_layers", "n_heads", "grid_size", "spline_order", "match")
_ENV_KEYS = (
    "device",
    "device_name",
    "cuda",
    "cpu_count",
    "threads",
    "torch",
    "python",
    "platform",
    "git_commit",
)


@dataclass
class ReportData:
    """The runs, curves and analysis of one comparison directory.

    ``runs``: :func:`read_runs` rows (one per recorded run); ``curves``: :func:`read_curves` rows of completed runs;
    ``analysis``: ``Analysis.to_dict()`` or None (then ``analysis_note`` says why); ``tasks``/``models``/``seeds``:
    the levels present, in the design's order.
    """

    root: Path
    runs: pd.DataFrame
    curves: pd.DataFrame
    analysis: dict[str, Any] | None
    analysis_note: str | None
    tasks: list[str]
    models: list[str]
    seeds: list[int]
    metric: dict[str, str | None]
    higher_is_better: dict[str, bool | None]
    sweeps: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: task label -> the fairness sheet ``compare`` stored for it (:mod:`mamba_kan.experiments.fairness`)
    fairness: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def completed(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "completed"]

    def alpha(self) -> float:
        return float((self.analysis or {}).get("settings", {}).get("alpha", 0.05))

    def task_analysis(self, task: str) -> dict[str, Any] | None:
        return None if self.analysis is None else self.analysis["tasks"].get(task)

    def direction(self, task: str) -> str:
        hib = self.higher_is_better.get(task)
        return "direction unknown" if hib is None else ("higher is better" if hib else "lower is better")

    def metric_label(self, task: str) -> str:
        """``mse (lower is better)``, ``loss (nats/token, lower is better)``: the axis label of a task's primary
        metric, with its unit where the task defines one."""
        metric = self.metric.get(task)
        unit = metric_unit(self, task, metric)
        return f"{metric or 'primary metric'} ({unit + ', ' if unit else ''}{self.direction(task)})"

    def values(self, task: str, model: str) -> pd.Series:
        """Primary metric of the completed runs of (task, model), indexed by seed (finite values only)."""
        r = self.completed
        r = r[(r["task"] == task) & (r["model"] == model)]
        s = pd.Series(r["primary_value"].to_numpy(float), index=r["seed"].to_numpy(int), name=model)
        return s[np.isfinite(s.to_numpy())].sort_index()


def _first(values: pd.Series) -> Any:
    v = values.dropna()
    return None if v.empty else v.iloc[0]


def _read_sweeps(root: Path) -> list[dict[str, Any]]:
    """Rows of the store's ``sweeps`` table (provenance: the compare command lines), read-only; [] if unreadable."""
    from mamba_kan.experiments.store import db_path

    path = db_path(root)
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.Error:
        return []
    with contextlib.closing(con):
        try:
            cur = con.execute("SELECT * FROM sweeps ORDER BY sweep_id")
        except sqlite3.Error as exc:
            log.warning("cannot read the sweeps of %s: %s", path, exc)
            return []
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]


def load_report_data(
    results_dir: str | os.PathLike[str],
    analysis: Any = None,
    *,
    where: Mapping[str, Any] | Sequence[str] | None = None,
    tune: Sequence[str] | None = None,
) -> ReportData:
    """Read a comparison directory. ``analysis``: an ``Analysis`` (or its ``to_dict()``) already computed for it;
    None runs :func:`analyze_directory` with its default settings. A directory without runs is a UserError; an
    analysis that cannot run (e.g. one variant, one seed) leaves ``analysis`` None with the reason as a note.

    ``where`` / ``tune``: the configuration selection of ``analyze --where/--tune``
    (:func:`mamba_kan.analysis.configs.select_configurations`), applied to the runs every figure and table reads
    and passed to the analysis, so a report of a sweep shows one configuration per variant, not a pool of them."""
    from mamba_kan.experiments.store import db_path, read_curves, read_runs

    root = Path(results_dir).expanduser()
    if not root.is_dir() and not db_path(root).is_file():
        raise UserError(
            f"{root} is not a comparison directory (no results.db); run `mamba-kan compare` first"
        )
    if root.suffix == ".db":  # the .db file itself was given: artefacts live next to it
        root = root.parent
    runs = read_runs(root)
    if runs.empty:
        raise UserError(
            f"{db_path(root)} holds no runs yet; run `mamba-kan compare --output-dir {root}` first"
        )
    notes: list[str] = []
    if where or tune:
        runs, selection_notes = _select_runs(runs, where, tune)
        notes += selection_notes
    curves = read_curves(root)
    curves = curves[curves["run_id"].isin(runs.loc[runs["status"] == "completed", "run_id"])]

    tasks = sorted(runs["task"].astype(str).unique(), key=family_sort_key)
    models = sorted(runs["model"].astype(str).unique(), key=variant_sort_key)
    seeds = sorted(int(s) for s in runs["seed"].unique())
    metric: dict[str, str | None] = {}
    hib: dict[str, bool | None] = {}
    for t in tasks:
        rows = runs[runs["task"] == t]
        metric[t] = _first(rows["primary_metric"])
        h = _first(rows["higher_is_better"])
        hib[t] = None if h is None else bool(h)

    analysis_dict, analysis_note = _analysis(root, analysis, where, tune)
    if analysis_dict is not None:  # the analysis infers directions the store may lack (failed-only tasks)
        for t, h in analysis_dict["input"].get("higher_is_better_by_task", {}).items():
            if hib.get(t) is None and h is not None:
                hib[t] = bool(h)
        for t, m in analysis_dict["input"].get("metric_by_task", {}).items():
            metric[t] = metric.get(t) or m
    present = [m for m in VARIANTS if m in models]
    absent = [m for m in VARIANTS if m not in models]
    if present and absent:
        notes.append(f"not part of this comparison (never run): {', '.join(absent)}")
    return ReportData(
        root=root,
        runs=runs,
        curves=curves,
        analysis=analysis_dict,
        analysis_note=analysis_note,
        tasks=tasks,
        models=models,
        seeds=seeds,
        metric=metric,
        higher_is_better=hib,
        sweeps=_read_sweeps(root),
        notes=notes,
        fairness=_read_fairness(root, tasks),
    )


def _read_fairness(root: Path, tasks: list[str]) -> dict[str, dict[str, Any]]:
    """The fairness sheets stored with the results, in task order (none for databases written before them)."""
    import json

    from mamba_kan.experiments.fairness import META_PREFIX
    from mamba_kan.experiments.store import read_meta

    stored = {k[len(META_PREFIX) :]: json.loads(v) for k, v in read_meta(root, META_PREFIX).items()}
    return {t: stored[t] for t in tasks if t in stored}


def _select_runs(
    runs: pd.DataFrame, where: Mapping[str, Any] | Sequence[str] | None, tune: Sequence[str] | None
) -> tuple[pd.DataFrame, list[str]]:
    """The runs of the configurations ``where``/``tune`` select (failed runs of a selected configuration stay, so
    the grid status still shows them), and the selection's notes. Bad keys or values are UserErrors."""
    from mamba_kan.analysis.configs import config_columns, select_configurations

    frame = runs.drop(columns=["best_val"]).merge(config_columns(runs), on="run_id", how="left")
    kept, _, notes = select_configurations(frame, where, tune)
    return runs[runs["run_id"].isin(kept["run_id"])].reset_index(drop=True), notes


def _analysis(
    root: Path,
    analysis: Any,
    where: Mapping[str, Any] | Sequence[str] | None = None,
    tune: Sequence[str] | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    if analysis is not None:
        return (analysis.to_dict() if hasattr(analysis, "to_dict") else dict(analysis)), None
    from mamba_kan.analysis import analyze_directory

    try:
        return analyze_directory(root, where=where or None, tune=list(tune or [])).to_dict(), None
    except UserError as exc:  # too few variants/seeds for any test: the report shows the descriptive part
        log.warning("statistics skipped: %s", exc)
        return None, f"statistics skipped: {exc}"
    except (
        Exception
    ) as exc:  # a bug in the statistics must not cost the user the figures; it is logged in full
        log.exception("the statistical analysis failed")
        return (
            None,
            f"statistics failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
        )


# --------------------------------------------------------------------------------------------------------------
# summaries shared by figures, tables and the dashboard
# --------------------------------------------------------------------------------------------------------------
def grid_status(data: ReportData) -> pd.DataFrame:
    """One row per (task, model): expected seeds (every seed of the task), completed / diverged / failed counts and
    the seeds with no record at all. Models that never ran on a task still get a row (all seeds missing)."""
    rows = []
    for t in data.tasks:
        in_task = data.runs[data.runs["task"] == t]
        expected = sorted(int(s) for s in in_task["seed"].unique())
        for m in data.models:
            r = in_task[in_task["model"] == m]
            counts = r["status"].value_counts()
            recorded = {int(s) for s in r["seed"]}
            rows.append(
                {
                    "task": t,
                    "model": m,
                    "expected": len(expected),
                    "completed": int(counts.get("completed", 0)),
                    "diverged": int(counts.get("diverged", 0)),
                    "failed": int(counts.get("failed", 0)),
                    "missing_seeds": [s for s in expected if s not in recorded],
                }
            )
    return pd.DataFrame(rows)


def cell_stats(data: ReportData) -> pd.DataFrame:
    """Per (task, model): n completed, mean and sd (ddof=1) of the primary metric, and the analysis' 95% interval.

    Columns: task, model, n, expected, mean, sd, ci_low, ci_high, ci_method (NaN/None where not available).
    """
    status = grid_status(data).set_index(["task", "model"])
    rows = []
    for t in data.tasks:
        cells = {c["model"]: c for c in (data.task_analysis(t) or {}).get("cells", [])}
        for m in data.models:
            v = data.values(t, m).to_numpy(float)
            c = cells.get(m, {})
            rows.append(
                {
                    "task": t,
                    "model": m,
                    "n": int(v.size),
                    "expected": int(status.loc[(t, m), "expected"]),
                    "mean": float(np.mean(v)) if v.size else math.nan,
                    "sd": float(np.std(v, ddof=1)) if v.size > 1 else math.nan,
                    "ci_low": _num(c.get("ci_low")),
                    "ci_high": _num(c.get("ci_high")),
                    "ci_method": c.get("ci_method"),
                }
            )
    return pd.DataFrame(rows)


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def best_models(data: ReportData, stats_frame: pd.DataFrame | None = None) -> dict[str, str | None]:
    """task -> the variant with the best mean (by the task's direction); None when no variant has a result."""
    cs = cell_stats(data) if stats_frame is None else stats_frame
    out: dict[str, str | None] = {}
    for t in data.tasks:
        rows = cs[(cs["task"] == t) & cs["mean"].notna()]
        if rows.empty or data.higher_is_better.get(t) is None:
            out[t] = None
            continue
        idx = rows["mean"].idxmax() if data.higher_is_better[t] else rows["mean"].idxmin()
        out[t] = str(rows.loc[idx, "model"])
    return out


def curve_summary(
    data: ReportData,
    task: str,
    split: str,
    metric: str,
    confidence: float = CURVE_CONFIDENCE,
    log: bool = False,
) -> pd.DataFrame:
    """Mean learning curve over seeds per model with a two-sided t-interval at each step.

    Columns: model, step, n, mean, low, high (low/high NaN where fewer than 2 seeds logged the step). The interval is
    mean ± t_{(1+confidence)/2, n-1} * sd / sqrt(n), sd with ddof=1 (Student's t over seeds as replicates).
    ``log``: the same on the log values, transformed back (geometric mean and a multiplicative interval, which
    stays positive: for positive metrics drawn on a log axis); non-positive values are left out.
    """
    c = data.curves
    c = c[(c["task"] == task) & (c["split"] == split) & (c["metric"] == metric) & np.isfinite(c["value"])]
    if log:
        c = c[c["value"] > 0].assign(value=lambda d: np.log(d["value"]))
    if c.empty:
        return pd.DataFrame(columns=["model", "step", "n", "mean", "low", "high"])
    g = c.groupby(["model", "step"])["value"]
    out = g.agg(n="count", mean="mean", sd=lambda s: s.std(ddof=1)).reset_index()
    n = out["n"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * out["sd"].to_numpy(float) / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    out["low"] = out["mean"] - half
    out["high"] = out["mean"] + half
    if log:
        out[["mean", "low", "high"]] = np.exp(out[["mean", "low", "high"]])
    out = out.drop(columns="sd")
    order = {m: i for i, m in enumerate(data.models)}
    return out.sort_values(
        ["model", "step"], key=lambda s: s.map(order) if s.name == "model" else s
    ).reset_index(drop=True)


def _record_value(run: Any, key: str) -> Any:
    """A field of a run record wherever the store keeps it: its own column, the extras, or the test metrics."""
    v = run.get(key) if hasattr(run, "get") else None
    if v is None or (isinstance(v, float) and math.isnan(v)):
        v = (run.get("extra") or {}).get(key) if isinstance(run.get("extra"), dict) else None
    if v is None:
        v = (run.get("metrics") or {}).get(key) if isinstance(run.get("metrics"), dict) else None
    return v


def floors_and_baselines(data: ReportData, task: str) -> tuple[float | None, dict[str, float]]:
    """The task's known floor of its primary metric (the record's ``floor``, e.g. the entropy rate of the synthetic
    language) and its baselines (test metrics named ``baseline_*``, mean over completed runs); None / {} if absent."""
    runs = data.completed[data.completed["task"] == task]
    floors = [float(v) for _, r in runs.iterrows() if _finite_number(v := _record_value(r, "floor"))]
    baselines: dict[str, list[float]] = {}
    for m in runs["metrics"] if "metrics" in runs else []:
        for k, v in (m or {}).items():
            if str(k).startswith("baseline_") and _finite_number(v):
                baselines.setdefault(str(k), []).append(float(v))
    floor = float(np.mean(floors)) if floors else None
    return floor, {k: float(np.mean(v)) for k, v in sorted(baselines.items())}


def _finite_number(v: Any) -> bool:
    return (
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) and math.isfinite(v)
    )


#: Metrics of token outputs (cross-entropy tasks): their presence says the training loss is a cross-entropy.
_TOKEN_METRICS = frozenset({"bpb", "perplexity"})
#: The training loss of each output kind, with its unit (``Task.loss``: cross-entropy in nats or MSE).
LOSS_LABELS = {
    "cross_entropy": "loss (cross-entropy, nats/token)",
    "mse": "loss (MSE, squared target units)",
    None: "loss (task loss)",
}
#: Units of primary metrics where they have one; "loss" depends on the task's output kind.
_UNITS = {"bpb": "bits/byte", "perplexity": None}


def loss_kind(data: ReportData, task: str) -> str | None:
    """ "cross_entropy" or "mse": what the task's training loss is, read from the metrics it records (token outputs
    report bits per byte and perplexity; regression outputs report MSE); None if unknown."""
    runs = data.completed[data.completed["task"] == task]
    names = {str(k) for m in (runs["metrics"] if "metrics" in runs else []) for k in (m or {})}
    if names & _TOKEN_METRICS:
        return "cross_entropy"
    return "mse" if "mse" in names else None


def loss_label(data: ReportData, task: str) -> str:
    """``loss (cross-entropy, nats/token)`` or ``loss (MSE, squared target units)``."""
    return LOSS_LABELS[loss_kind(data, task)]


def metric_unit(data: ReportData, task: str, metric: str | None) -> str | None:
    """The unit of a primary metric where it has one (``loss`` of a token task: nats/token)."""
    if metric == "loss":
        return "nats/token" if loss_kind(data, task) == "cross_entropy" else None
    return _UNITS.get(metric or "")


def speed_summary(data: ReportData) -> pd.DataFrame:
    """Per (task, model) over completed runs: n, mean/sd steps/s, mean tokens/s, params, FLOPs/token, peak memory,
    and ``slowdown`` = mean steps/s of :data:`SPEED_REFERENCE` on the task / this variant's mean (NaN without it)."""
    r = data.completed
    rows = []
    for t in data.tasks:
        in_task = r[r["task"] == t]
        ref = in_task.loc[in_task["model"] == SPEED_REFERENCE, "steps_per_sec"].dropna()
        ref_mean = float(ref.mean()) if len(ref) else math.nan
        for m in data.models:
            x = in_task[in_task["model"] == m]
            sps = x["steps_per_sec"].dropna().to_numpy(float)
            mean = float(np.mean(sps)) if sps.size else math.nan
            rows.append(
                {
                    "task": t,
                    "model": m,
                    "n": int(sps.size),
                    "steps_per_sec": mean,
                    "steps_per_sec_sd": float(np.std(sps, ddof=1)) if sps.size > 1 else math.nan,
                    "tokens_per_sec": float(x["tokens_per_sec"].mean()) if len(x) else math.nan,
                    "params": _median_int(x["params"]),
                    "flops_per_token": _median_int(x["flops_per_token"]),
                    "peak_memory_mb": float(x["peak_memory_mb"].max()) if len(x) else math.nan,
                    "slowdown": ref_mean / mean if mean > 0 and math.isfinite(ref_mean) else math.nan,
                }
            )
    return pd.DataFrame(rows)


def memory_is_per_run(data: ReportData) -> bool:
    """True when peak memory was measured per run (CUDA max allocated). On CPU the training loop records the worker
    process' lifetime peak RSS, an upper bound shared by every run of that process, so tables leave it out."""
    return any(str((e or {}).get("device", "")).startswith("cuda") for e in data.completed["env"])


def _median_int(s: pd.Series) -> float:
    v = pd.to_numeric(s, errors="coerce").dropna()
    return float(np.median(v)) if len(v) else math.nan


def speed_overall(data: ReportData, per_task: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model across tasks: median params and FLOPs/token, geometric mean of steps/s and of the slowdown over the
    tasks where it is defined (ratios average geometrically), tasks counted, max peak memory."""
    sp = speed_summary(data) if per_task is None else per_task
    rows = []
    for m in data.models:
        x = sp[sp["model"] == m]
        sps = x["steps_per_sec"].to_numpy(float)
        sps = sps[np.isfinite(sps) & (sps > 0)]
        slow = x["slowdown"].to_numpy(float)
        slow = slow[np.isfinite(slow) & (slow > 0)]
        rows.append(
            {
                "model": m,
                "n_tasks": int(sps.size),
                "params": _nanmedian(x["params"]),
                "flops_per_token": _nanmedian(x["flops_per_token"]),
                "steps_per_sec": float(stats.gmean(sps)) if sps.size else math.nan,
                "slowdown": float(stats.gmean(slow)) if slow.size else math.nan,
                "peak_memory_mb": float(np.nanmax(x["peak_memory_mb"]))
                if x["peak_memory_mb"].notna().any()
                else math.nan,
            }
        )
    return pd.DataFrame(rows)


def _nanmedian(s: pd.Series) -> float:
    v = s.dropna().to_numpy(float)
    return float(np.median(v)) if v.size else math.nan


# --------------------------------------------------------------------------------------------------------------
# provenance: hardware, settings, date (the README states them next to the numbers)
# --------------------------------------------------------------------------------------------------------------
def _distinct(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


def provenance(data: ReportData) -> dict[str, Any]:
    """Hardware, software, settings and dates of the runs, each as the list of distinct values seen.

    Keys: ``env`` {key: [values]}, ``settings`` {key: [values]}, ``model`` {key: [values]}, ``preset`` (from the
    compare command lines, or None), ``commands``, ``first_run``/``last_run`` (recorded_at), ``n_runs``,
    ``status_counts``, ``code_versions``.
    """
    runs = data.runs
    env = {k: _distinct([e.get(k) for e in runs["env"]]) for k in _ENV_KEYS}
    settings = {k: _distinct([c.get(k) for c in runs["config"]]) for k in _SETTING_KEYS}
    model = {k: _distinct([(c.get("model_cfg") or {}).get(k) for c in runs["config"]]) for k in _MODEL_KEYS}
    commands = [s.get("command") for s in data.sweeps if s.get("command")]
    presets = _distinct([m.group(1) for c in commands for m in [re.search(r"--preset[= ](\S+)", c)] if m])
    recorded = sorted(str(v) for v in runs["recorded_at"].dropna())
    return {
        "env": env,
        "settings": settings,
        "model": model,
        "preset": ", ".join(presets) if presets else None,
        "commands": commands,
        "first_run": recorded[0] if recorded else None,
        "last_run": recorded[-1] if recorded else None,
        "n_runs": len(runs),
        "status_counts": {str(k): int(v) for k, v in runs["status"].value_counts().items()},
        "code_versions": _distinct(list(runs["code_version"])),
        "seeds": data.seeds,
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def describe_values(values: list[Any]) -> str:
    """``[a]`` -> ``a``; ``[a, b]`` -> ``a, b (varies)``; ``[]`` -> ``n/a``."""
    if not values:
        return "n/a"
    text = ", ".join(str(v) for v in values)
    return text if len(values) == 1 else f"{text} (varies between runs)"
