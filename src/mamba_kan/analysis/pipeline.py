"""The analysis pipeline: per-task factorial statistics, across-task rank tests and mixed model, power.

Entry points: :func:`analyze_frame` (tidy DataFrame), :func:`analyze_directory` (comparison directory or results
file) and :func:`run_full_analysis` (any accepted input, the original Mamba_KAN project's API). All return an :class:`Analysis`
whose ``to_dict()`` is the JSON contract documented in the package docstring.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mamba_kan import __version__
from mamba_kan.analysis.anova import art_anova, assumption_checks, rm_anova, two_way_anova
from mamba_kan.analysis.configs import select_configurations
from mamba_kan.analysis.contrasts import decide, planned_contrasts, task_level_contrasts, verdict_for_task
from mamba_kan.analysis.data import (
    TaskData,
    build_task_data,
    model_sort_key,
    normalise_frame,
    read_results_path,
    tidy_from_dict,
)
from mamba_kan.analysis.descriptive import INTERVALS, cell_summary
from mamba_kan.analysis.mixed import mixed_model
from mamba_kan.analysis.pairwise import pairwise_tests, pvalue_matrix
from mamba_kan.analysis.power import min_detectable_dz, min_p_friedman, power_summary
from mamba_kan.analysis.ranks import cliques_from_pvalues, friedman_test
from mamba_kan.errors import UserError

SCHEMA = "mamba-kan-analysis/1"


@dataclass
class Settings:
    """Knobs of the analysis. ``sesoi_dz``: the smallest effect of interest of the equivalence tests (d_z per task,
    task sds across tasks); ``target_dz``: the effect for which the seeds needed are reported; ``block_seeds``:
    seed as ANOVA block; ``scale``: "auto" (log for MSE-type metrics), "raw" or "log"; ``interval``: cell-mean
    interval, "t" (default) or "bca" (bootstrap, under-covers with few seeds); ``mixed_model``: also fit the
    descriptive across-task mixed model (the verdict does not use it); ``where``: keep only the runs whose settings
    have these values (setting -> value or list of values, or ``KEY=VALUE`` strings); ``tune``: settings chosen per
    (task, variant) on validation (see :mod:`mamba_kan.analysis.configs`)."""

    alpha: float = 0.05
    confidence: float = 0.95
    n_bootstrap: int = 9999
    random_state: int = 0
    power: float = 0.8
    sesoi_dz: float = 0.5
    target_dz: float = 0.5
    block_seeds: bool = True
    metric: str | None = None
    higher_is_better: bool | None = None
    scale: str = "auto"
    interval: str = "t"
    mixed_model: bool = True
    where: dict[str, list[Any]] = field(default_factory=dict)
    tune: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.interval not in INTERVALS:
            raise UserError(f"unknown interval {self.interval!r}; valid choices: {', '.join(INTERVALS)}")
        for name in ("alpha", "confidence", "power"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0.0 < float(v) < 1.0):
                raise UserError(f"{name} must be a number strictly between 0 and 1, got {v!r}")
        if int(self.n_bootstrap) < 100:
            raise UserError(f"n_bootstrap must be >= 100, got {self.n_bootstrap}")
        for name in ("sesoi_dz", "target_dz"):
            if not float(getattr(self, name)) > 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)!r}")


@dataclass
class Analysis:
    """The result. Attributes mirror the keys of ``to_dict()`` (see the package docstring for the schema)."""

    settings: dict[str, Any]
    input: dict[str, Any]
    missing_runs: list[dict[str, Any]]
    notes: list[str]
    tasks: dict[str, dict[str, Any]]
    across: dict[str, Any] | None
    #: per (task, variant) the tuned settings' chosen value and every candidate's validation mean (``tune``)
    tuning: list[dict[str, Any]] = field(default_factory=list)
    schema: str = SCHEMA
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict: only str/int/float/bool/None/list/dict, non-finite floats as None."""
        return json_ready(asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    @property
    def verdicts(self) -> dict[str, str]:
        """task -> verdict ("activation", "topology", "both", "undetermined", "neither", "no KAN advantage",
        "inconclusive at this power", "not estimable")."""
        return {t: (r.get("verdict") or {}).get("verdict", "not estimable") for t, r in self.tasks.items()}


def json_ready(obj: Any) -> Any:
    """Recursively convert numpy/pandas scalars and containers; NaN and +-inf become None."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_ready(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


# --------------------------------------------------------------------------------------------------------------
# per task
# --------------------------------------------------------------------------------------------------------------
def analyze_task(td: TaskData, settings: Settings, index: int) -> dict[str, Any]:
    """Every per-task result for one task (see the package docstring for the keys)."""
    alpha = settings.alpha
    notes = list(td.notes)
    complete = td.complete()
    out: dict[str, Any] = {
        "task": td.name,
        "metric": td.metric,
        "higher_is_better": td.higher_is_better,
        "direction_source": td.direction_source,
        "models": td.models,
        "seeds": td.seeds,
        "n_seeds": len(td.seeds),
        "n_complete_seeds": int(len(complete)),
        "missing": td.missing,
    }
    cells = []
    for j, model in enumerate(td.models):
        rng = np.random.default_rng([settings.random_state, index, j])  # independent of analysis order
        cells.append(
            cell_summary(
                model,
                td.values[model].to_numpy(),
                td.factors.get(model),
                settings.confidence,
                settings.n_bootstrap,
                rng,
                settings.interval,
                td.scale,
            )
        )
    # Friedman over seeds as blocks: the omnibus test behind the pairwise comparisons and the CD diagram
    friedman = None
    if len(complete) >= 2 and len(td.models) >= 2:
        friedman = friedman_test(complete.to_numpy(float), td.models, td.higher_is_better, alpha)
    elif len(td.models) >= 2:
        notes.append(f"Friedman test skipped: {len(complete)} seed(s) with every variant (needs 2)")
    for c in cells:
        c["average_rank"] = None if friedman is None else friedman["average_ranks"][c["model"]]
    pairs = pairwise_tests(td.values, td.higher_is_better, alpha)
    p_matrix = pvalue_matrix(td.models, pairs)
    out.update({"cells": cells, "friedman": friedman, "pairwise": pairs, "pairwise_p_matrix": p_matrix})
    out["cd_diagram"] = _cd_inputs(friedman, p_matrix, alpha)
    out.update(_factorial(td, settings, notes))
    n_primary = sum(1 for c in out["contrasts"] if c["family"] == "primary" and c["p_value"] is not None)
    out["power"] = power_summary(
        len(complete),
        alpha,
        settings.power,
        settings.target_dz,
        {"pairwise": len(pairs), "contrasts": max(1, n_primary)},
    )
    out["power"]["family_sizes"]["secondary_contrasts"] = sum(
        1 for c in out["contrasts"] if c["family"] == "secondary" and c["p_value"] is not None
    )
    if out["contrasts"]:
        pooled = [c["n_pairs"] for c in out["contrasts"] if c["family"] == "primary"]
        mde = min_detectable_dz(min(pooled), alpha / max(1, n_primary), settings.power) if pooled else None
        out["verdict"] = verdict_for_task(out["contrasts"], mde, settings.sesoi_dz, alpha)
    else:
        out["verdict"] = None
    out["scale"] = td.scale
    if 0 < len(complete) < 10:
        notes.append(
            f"{len(complete)} complete seed(s): rank tests have a p-value floor (see power)"
            + (
                "; bootstrap (BCa) intervals under-cover at this many seeds"
                if settings.interval == "bca"
                else ""
            )
        )
    diverged = sorted({m["model"] for m in td.missing if m["status"] == "diverged"}, key=model_sort_key)
    if diverged:
        notes.append(
            "diverged runs are excluded (complete-case); if divergence is a property of a variant "
            f"({', '.join(diverged)}) this flatters it"
        )
    out["notes"] = notes
    return out


def _cd_inputs(
    friedman: dict[str, Any] | None, p_matrix: dict[str, dict[str, float | None]], alpha: float
) -> dict[str, Any] | None:
    if friedman is None:
        return None
    ranks = friedman["average_ranks"]
    return {
        "average_ranks": ranks,
        "n_blocks": friedman["n_blocks"],
        "cd": friedman["cd"],
        "p_matrix": p_matrix,
        "cliques_nemenyi": friedman["cliques_nemenyi"],
        "cliques_wilcoxon": cliques_from_pvalues(ranks, p_matrix, alpha),
    }


def ffns_in_order(ffns: list[str]) -> list[str]:
    """The feedforward levels present, in the design's contrast order (mlp, bspline, kan)."""
    from mamba_kan.design import FFN_LEVELS

    return [f for f in FFN_LEVELS if f in ffns]


def _factorial(td: TaskData, settings: Settings, notes: list[str]) -> dict[str, Any]:
    """ANOVA, its assumption checks, ART and the planned contrasts for the variants that parse into the design."""
    empty: dict[str, Any] = {"anova": None, "anova_rm": None, "art": None, "contrasts": []}
    unparsed = [m for m in td.models if m not in td.factors]
    if unparsed:
        notes.append(f"not in the ffn x mixer design (name does not parse): {', '.join(unparsed)}")
    if len(td.factors) < 2:
        notes.append("factorial analysis skipped: fewer than 2 variants parse into ffn x mixer")
        return empty
    cols = [m for m in td.models if m in td.factors]
    analysed = td.analysed()
    long = analysed[cols].stack().rename("value").dropna().reset_index()
    long["ffn"] = [td.factors[m][0] for m in long["model"]]
    long["mixer"] = [td.factors[m][1] for m in long["model"]]
    ffns = sorted(set(long["ffn"]))
    mixers = sorted(set(long["mixer"]))
    absent = [
        f"{f}_{m}" for f in ffns for m in mixers if not ((long["ffn"] == f) & (long["mixer"] == m)).any()
    ]
    contrasts = planned_contrasts(
        analysed,
        td.factors,
        td.higher_is_better,
        settings.alpha,
        settings.confidence,
        scale=td.scale,
        sesoi_dz=settings.sesoi_dz,
        metric=td.metric,
    )
    out: dict[str, Any] = {"anova": None, "anova_rm": None, "art": None, "contrasts": contrasts}
    if absent:
        notes.append(f"ANOVA and ART skipped: the ffn x mixer grid lacks {', '.join(absent)}")
        return out
    block = long["seed"].tolist() if settings.block_seeds and long["seed"].nunique() > 1 else None
    y = long["value"].to_numpy(float)
    anova = two_way_anova(y, long["ffn"].tolist(), long["mixer"].tolist(), block)
    if anova["df_resid"] <= 0:
        notes.append("ANOVA skipped: no residual degrees of freedom (too few seeds)")
        return out
    groups = [g["value"].to_numpy(float) for _, g in long.groupby(["ffn", "mixer"])]
    anova["assumptions"] = assumption_checks(anova.pop("residuals"), groups, settings.alpha)
    anova["balanced"] = bool(long.groupby(["ffn", "mixer"]).size().nunique() == 1)
    out["anova"] = anova
    if anova["residual_is_rounding_noise"]:
        notes.append(
            "ANOVA: the residuals are rounding noise (every variant gives the same value within a seed, up to "
            "floating point); F is undefined, not evidence of an effect"
        )
    for r in anova["table"]:
        if r["df"] == 0:
            notes.append(
                f"ANOVA: {r['effect']} has 0 degrees of freedom (confounded with the seed block: its levels do "
                "not share seeds); it is not tested"
            )
    complete = analysed[cols].dropna()
    if len(complete) >= 2:
        cube = np.stack(
            [
                np.stack(
                    [complete[next(m for m in cols if td.factors[m] == (f, x))] for x in mixers], axis=-1
                )
                for f in ffns_in_order(ffns)
            ],
            axis=1,
        )
        out["anova_rm"] = rm_anova(cube)
        if len(complete) < long["seed"].nunique():
            notes.append(
                f"repeated-measures ANOVA on the {len(complete)} seeds with every variant (complete cases)"
            )
    out["art"] = art_anova(y, long["ffn"].tolist(), long["mixer"].tolist(), block)
    return out


# --------------------------------------------------------------------------------------------------------------
# across tasks
# --------------------------------------------------------------------------------------------------------------
def _task_scores(tasks: list[TaskData]) -> pd.DataFrame:
    """(n_tasks, n_models) per-task means on one scale: oriented (higher = better) and divided by the task's
    standard deviation over all its completed runs, centred on the task's mean of variant means; on the task's
    analysis scale (log for MSE-type metrics)."""
    rows = {}
    for td in tasks:
        analysed = td.analysed()
        v = analysed.to_numpy(float)
        finite = v[np.isfinite(v)]
        sd = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
        means = analysed.mean(axis=0, skipna=True)
        sign = 1.0 if td.higher_is_better else -1.0
        rows[td.name] = sign * (means - means.mean()) / sd if sd > 0 else means * 0.0
    return pd.DataFrame(rows).T


def analyze_across(
    tasks: list[TaskData], settings: Settings, task_results: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """Friedman/Iman-Davenport/Nemenyi and Wilcoxon-Holm over tasks as blocks, the mixed model, power."""
    if len(tasks) < 2:
        return None
    alpha = settings.alpha
    notes: list[str] = []
    scores = _task_scores(tasks)
    all_models = sorted(scores.columns, key=model_sort_key)
    scores = scores[all_models]
    # keep every variant (drop tasks lacking one) or every task (drop variants missing somewhere): whichever keeps
    # more cells of the task x variant table
    by_task = scores.dropna(axis=0, how="any")
    by_model = scores.dropna(axis=1, how="any")
    table = by_task if by_task.size >= by_model.size else by_model
    dropped_tasks = [t for t in scores.index if t not in table.index]
    dropped_models = [m for m in scores.columns if m not in table.columns]
    if dropped_tasks:
        notes.append(f"tasks without every variant left out of the rank tests: {', '.join(dropped_tasks)}")
    if dropped_models:
        notes.append(
            f"variants missing from some task left out of the rank tests: {', '.join(dropped_models)}"
        )
    means = []
    for td in tasks:
        for m in td.models:
            col = td.values[m].dropna()
            means.append(
                {
                    "task": td.name,
                    "model": m,
                    "metric": td.metric,
                    "higher_is_better": td.higher_is_better,
                    "mean": float(col.mean()),
                    "n": int(col.size),
                    "score": _get(scores, td.name, m),
                }
            )
    out: dict[str, Any] = {
        "tasks": list(table.index),
        "models": list(table.columns),
        "dropped_tasks": dropped_tasks,
        "dropped_models": dropped_models,
        "means": means,
        "score_units": "task standard deviations, oriented so that positive = better",
        "friedman": None,
        "pairwise": [],
        "pairwise_p_matrix": None,
        "cd_diagram": None,
    }
    n, k = table.shape
    if n >= 2 and k >= 2:
        friedman = friedman_test(table.to_numpy(float), list(table.columns), True, alpha)
        pairs = pairwise_tests(table, True, alpha)
        p_matrix = pvalue_matrix(list(table.columns), pairs)
        out.update({"friedman": friedman, "pairwise": pairs, "pairwise_p_matrix": p_matrix})
        out["cd_diagram"] = _cd_inputs(friedman, p_matrix, alpha)
    else:
        notes.append(f"rank tests skipped: {n} task(s) x {k} variant(s) after dropping incomplete ones")
    task_level = task_level_analysis(tasks, settings)
    out["task_level"] = task_level
    if settings.mixed_model:
        mm = mixed_model(tasks, alpha, settings.confidence)
    else:
        mm = {"error": "not fitted (mixed_model=False)", "notes": []}
    out["mixed_model"] = mm
    n_primary = sum(
        1 for c in task_level["contrasts"] if c["family"] == "primary" and c["p_value"] is not None
    )
    out["power"] = power_summary(
        task_level["n_tasks"],
        alpha,
        settings.power,
        settings.target_dz,
        {"pairwise": len(out["pairwise"]), "contrasts": max(1, n_primary)},
        "tasks",
    )
    out["power"]["min_p_friedman_exact"] = min_p_friedman(k, n)
    pooled = {c["name"]: c for c in task_level["contrasts"] if c["scope"] == "pooled"}
    if task_level.get("error") or not pooled:
        out["verdict"] = {
            "verdict": "not estimable",
            "question": "is kan better than mlp?",
            "kan_vs_mlp": "untestable",
            "headline": "not estimable",
            "detail": f"task-level contrasts: {task_level.get('error', 'no K/D1/D2 contrasts')}",
        }
    else:
        mde = min_detectable_dz(task_level["n_tasks"], alpha / max(1, n_primary), settings.power)
        out["verdict"] = decide(
            pooled.get("K"), pooled.get("D1"), pooled.get("D2"), alpha, f"{settings.sesoi_dz:g} noise sds"
        )
        out["verdict"]["mde_dz_family"] = mde
        out["verdict"]["basis"] = (
            f"one-sample t over the {task_level['n_tasks']} tasks' pooled K/D1/D2 estimates (noise sds, "
            f"df = {task_level['n_tasks'] - 1}); K gate at alpha, then Holm over {{D1, D2}}"
        )
        out["verdict"]["families"] = {
            f: [c["label"] for c in task_level["contrasts"] if c["family"] == f]
            for f in ("gate", "primary", "secondary")
        }
    counts = Counter((r.get("verdict") or {}).get("verdict", "not estimable") for r in task_results.values())
    out["task_verdict_counts"] = dict(counts)
    if n <= 6:
        notes.append(
            f"{n} tasks as blocks: an exact Wilcoxon test cannot go below p = {out['power']['min_p_wilcoxon']:.4g}"
        )
    out["notes"] = notes + task_level.get("notes", []) + mm.get("notes", [])
    return out


def noise_sd(wide: pd.DataFrame) -> float | None:
    """Run-to-run noise sd of one task (seeds x variants, analysis scale): root mean square residual of the additive
    model seed + variant on the seeds with every variant; None without 2 such seeds or without spread."""
    y = wide.dropna().to_numpy(float)
    if y.shape[0] < 2 or y.shape[1] < 2:
        return None
    resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
    s2 = float(np.sum(resid**2)) / ((y.shape[0] - 1) * (y.shape[1] - 1))
    scale = float(np.max(np.abs(y))) if y.size else 0.0
    return float(np.sqrt(s2)) if np.sqrt(s2) > 1e-10 * max(scale, 1e-300) else None


def task_level_analysis(tasks: list[TaskData], settings: Settings) -> dict[str, Any]:
    """The across-task inference of the verdict: each task's K/D1/D2 contrasts on its standardised scores, then a
    one-sample t-test over the tasks per contrast (see :func:`mamba_kan.analysis.contrasts.task_level_contrasts`).

    With 3-5 tasks a mixed model's Wald z tests reject a true null 2-3x too often; the t-test over per-task
    estimates (df = n_tasks - 1) keeps its level whatever each contrast's task-to-task variance is, and so tests
    the interaction contrasts against their own task-to-task variation too."""
    notes: list[str] = []
    per_task: dict[str, list[dict[str, Any]]] = {}
    for td in tasks:
        cols = [m for m in td.models if m in td.factors]
        if len(cols) < 2:
            continue
        y = td.analysed()[cols] * (1.0 if td.higher_is_better else -1.0)
        sd = noise_sd(y)
        if sd is None:
            notes.append(
                f"task {td.name}: run-to-run noise not estimable (needs 2 seeds with every variant and some spread); "
                "left out of the task-level tests"
            )
            continue
        recs = planned_contrasts(y / sd, td.factors, True, settings.alpha, settings.confidence)
        per_task[td.name] = recs
    n_tasks = len(per_task)
    out: dict[str, Any] = {
        "method": "one-sample t over per-task contrast estimates (df = n_tasks - 1)",
        "units": "each task's run-to-run noise sd on its analysis scale, oriented so that positive = better",
        "n_tasks": n_tasks,
        "tasks": list(per_task),
        "sesoi": settings.sesoi_dz,
        "notes": notes,
        "contrasts": [],
    }
    if n_tasks < 2:
        out["error"] = "needs at least 2 tasks with factorial variants"
        return out
    out["contrasts"] = task_level_contrasts(per_task, settings.alpha, settings.confidence, settings.sesoi_dz)
    return out


def _get(frame: pd.DataFrame, row: str, col: str) -> float | None:
    try:
        v = float(frame.loc[row, col])
    except KeyError:
        return None
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------------------
def analyze_frame(
    df: pd.DataFrame,
    alpha: float = 0.05,
    metric: str | None = None,
    *,
    higher_is_better: bool | None = None,
    source: str = "DataFrame",
    **options: Any,
) -> Analysis:
    """Analyse a tidy results frame (columns as :func:`mamba_kan.experiments.store.read_tidy`; only ``model, seed,
    value`` are required). ``options`` are the other :class:`Settings` fields (confidence, n_bootstrap, ...)."""
    unknown = sorted(set(options) - set(Settings.__dataclass_fields__))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(Settings.__dataclass_fields__)}"
        )
    from mamba_kan.analysis.configs import normalise_key, where_mapping

    where = where_mapping(options.pop("where", None))
    tune = options.pop("tune", None)
    tune = [normalise_key(tune)] if isinstance(tune, str) else [normalise_key(k) for k in (tune or [])]
    settings = Settings(
        alpha=alpha, metric=metric, higher_is_better=higher_is_better, where=where, tune=tune, **options
    )
    settings.validate()
    tidy = normalise_frame(df)
    log_scale = {"raw": False, "log": True}.get(settings.scale)
    tidy, tuning, config_notes = select_configurations(tidy, settings.where, settings.tune, log_scale)
    tasks, notes = build_task_data(tidy, metric, higher_is_better, settings.scale)
    notes = config_notes + notes
    results = {td.name: analyze_task(td, settings, i) for i, td in enumerate(tasks)}
    across = analyze_across(tasks, settings, results)
    if across is None:
        notes.append("across-task tests need at least 2 tasks")
    models = sorted({m for td in tasks for m in td.models}, key=model_sort_key)
    return Analysis(
        settings=asdict(settings),
        input={
            "source": source,
            "n_rows": int(len(tidy)),
            "n_tasks": len(tasks),
            "n_models": len(models),
            "n_missing_runs": sum(len(td.missing) for td in tasks),
            "tasks": [td.name for td in tasks],
            "models": models,
            "metric_by_task": {td.name: td.metric for td in tasks},
            "higher_is_better_by_task": {td.name: td.higher_is_better for td in tasks},
        },
        missing_runs=[m for td in tasks for m in td.missing],
        notes=notes,
        tasks=results,
        across=across,
        tuning=tuning,
    )


def analyze_directory(
    path: str | Path, alpha: float = 0.05, metric: str | None = None, **options: Any
) -> Analysis:
    """Analyse a comparison directory (or its ``results.db``, or an exported tidy csv/parquet/json)."""
    return analyze_frame(read_results_path(path), alpha, metric, source=str(path), **options)


def run_full_analysis(
    data: Mapping[str, Any] | pd.DataFrame | str | Path,
    alpha: float = 0.05,
    metric: str | None = None,
    **options: Any,
) -> Analysis:
    """The original Mamba_KAN project's entry point: ``run_full_analysis({'mlp_transformer': [0.52, 0.51, ...], ...})``.

    ``data``: the dict form (list position = seed; one task "default"; higher is better unless
    ``higher_is_better=False``), a nested dict ``{task: {variant: [values]}}``, a tidy DataFrame, or a path.
    """
    if isinstance(data, str | Path):
        return analyze_directory(data, alpha, metric, **options)
    if isinstance(data, pd.DataFrame):
        return analyze_frame(data, alpha, metric, **options)
    if isinstance(data, Mapping):
        given = options.pop("higher_is_better", None)
        hib = True if given is None else bool(given)
        analysis = analyze_frame(
            tidy_from_dict(data, hib), alpha, metric, higher_is_better=hib, source="dict", **options
        )
        if given is None:
            analysis.notes.append(
                "dict input: higher values taken as better (pass higher_is_better=False for losses)"
            )
        return analysis
    raise UserError(
        f"cannot analyse a {type(data).__name__}; give a dict, a DataFrame or a results directory"
    )
