"""Input normalisation: every accepted input becomes one tidy frame, then one :class:`TaskData` per task.

Accepted inputs
- the original Mamba_KAN project's dict ``{variant: [value per seed, ...]}`` (one task named ``"default"``; list position = seed;
  ``None``/NaN = a run without a result) or the nested form ``{task: {variant: [values]}}``;
- a tidy DataFrame with at least ``model, seed, value`` and optionally ``task, ffn, mixer, status, metric,
  primary_metric, higher_is_better`` (the schema of :func:`mamba_kan.experiments.store.read_tidy`);
- a comparison directory or ``results.db`` (read lazily through the store; each run's resolved settings come
  along as ``config.<key>`` columns, see :mod:`mamba_kan.analysis.configs`), or a tidy ``.csv``/``.parquet``/
  ``.json`` written by ``mamba-kan export``.

Missing runs are never dropped silently: every (task, variant, seed) cell of the task's grid without a finite value
of the analysed metric becomes a record in ``TaskData.missing`` with its status and the reason.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mamba_kan.design import (
    ALL_MIXERS,
    FFN_LEVELS,
    metric_higher_is_better,
    try_parse_variant,
    variant_sort_key,
)
from mamba_kan.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_TASK = "default"
DICT_METRIC = "score"
COMPLETED = "completed"

# The design vocabulary lives in mamba_kan.design (torch-free). These names stay importable from here for the
# modules that used them: MIXER_LEVELS keeps its old meaning here (it includes the feedforward-only "none").
MIXER_LEVELS: tuple[str, ...] = ALL_MIXERS
parse_variant = try_parse_variant
model_sort_key = variant_sort_key
#: Direction by metric name, for user tables only (results from the store carry ``higher_is_better``).
metric_direction = metric_higher_is_better

#: Ratio-scale error metrics whose seed-to-seed spread is multiplicative: analysed on log scale by default.
LOG_SCALE_METRICS = frozenset({"mse", "rmse", "mae", "mase", "gap_to_floor"})
SCALES = ("auto", "raw", "log")


def metric_base(name: str) -> str:
    """``test_mse@L=512`` -> ``mse``: the metric's name without split prefix and qualifiers."""
    base = re.split(r"[@/\[(=]", str(name).lower())[0].strip()
    return re.sub(r"^(test|val|valid|train|eval)_", "", base)


def default_scale(metric: str) -> str:
    """ "log" for MSE-type metrics (ratios of errors are what compares across seeds), else "raw"."""
    return "log" if metric_base(metric) in LOG_SCALE_METRICS else "raw"


@dataclass
class TaskData:
    """One task's values of the analysed metric.

    ``values``: DataFrame (n_seeds, n_models), index = seed (sorted), columns = variants in canonical order, NaN where
    a run has no finite value. ``factors``: variant -> (ffn, mixer) for the variants that parse into the design.
    ``missing``: one record per grid cell without a value (task, model, seed, status, reason).
    ``scale``: the scale of the factorial statistics (contrasts, ANOVA, ART, across-task scores): "raw" or "log"
    (natural log of the values; effects then read as ratios). ``values`` always hold the raw values.
    """

    name: str
    metric: str
    higher_is_better: bool
    direction_source: str
    values: pd.DataFrame
    factors: dict[str, tuple[str, str]]
    missing: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    scale: str = "raw"

    def analysed(self) -> pd.DataFrame:
        """``values`` on the analysis scale: log(values) when ``scale == "log"``, else the values themselves."""
        return np.log(self.values) if self.scale == "log" else self.values

    @property
    def models(self) -> list[str]:
        return list(self.values.columns)

    @property
    def seeds(self) -> list[Any]:
        return list(self.values.index)

    def complete(self) -> pd.DataFrame:
        """Seeds (rows) that have a value for every variant: the blocks of the paired tests."""
        return self.values.dropna(axis=0, how="any")


# --------------------------------------------------------------------------------------------------------------
# inputs -> one tidy frame
# --------------------------------------------------------------------------------------------------------------
def _is_missing_value(v: Any) -> bool:
    if v is None:
        return True
    try:
        return not math.isfinite(float(v))
    except (TypeError, ValueError) as exc:
        raise UserError(f"value {v!r} is not a number") from exc


def tidy_from_dict(data: Mapping[str, Any], higher_is_better: bool | None = None) -> pd.DataFrame:
    """The original Mamba_KAN project's ``{variant: [values per seed]}`` (or ``{task: {variant: [values]}}``) as a tidy frame.

    List position is the seed, so the lists must be aligned (position i = the same seed for every variant).
    """
    if not data:
        raise UserError("no results given: the dict of variant -> values is empty")
    nested = all(isinstance(v, Mapping) for v in data.values())
    if not nested and any(isinstance(v, Mapping) for v in data.values()):
        raise UserError("mixed dict input: give either {variant: [values]} or {task: {variant: [values]}}")
    tasks = data if nested else {DEFAULT_TASK: data}
    hib = True if higher_is_better is None else bool(higher_is_better)
    rows = []
    for task, per_model in tasks.items():
        for model, seq in per_model.items():
            if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence | np.ndarray | pd.Series):
                raise UserError(
                    f"values of {model!r} must be a list of numbers (one per seed), got {type(seq).__name__}"
                )
            for seed, v in enumerate(list(seq)):
                missing = _is_missing_value(v)
                parsed = parse_variant(model)
                rows.append(
                    {
                        "task": str(task),
                        "model": str(model),
                        "ffn": parsed[0] if parsed else None,
                        "mixer": parsed[1] if parsed else None,
                        "seed": seed,
                        "status": "missing" if missing else COMPLETED,
                        "metric": DICT_METRIC,
                        "value": np.nan if missing else float(v),
                        "primary_metric": DICT_METRIC,
                        "higher_is_better": hib,
                    }
                )
    return pd.DataFrame(rows)


def normalise_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Fill the optional columns of a user-given tidy frame; raise :class:`UserError` if required ones are absent."""
    if not isinstance(df, pd.DataFrame):
        raise UserError(f"expected a pandas DataFrame, got {type(df).__name__}")
    required = ("model", "seed", "value")
    absent = [c for c in required if c not in df.columns]
    if absent:
        raise UserError(
            f"results frame lacks column(s) {', '.join(absent)}; it needs model, seed, value "
            f"(optional: task, ffn, mixer, status, metric, primary_metric, higher_is_better); has {', '.join(map(str, df.columns))}"
        )
    out = df.copy()
    if "task" not in out.columns:
        out["task"] = DEFAULT_TASK
    if "metric" not in out.columns:
        out["metric"] = DICT_METRIC if "primary_metric" not in out.columns else out["primary_metric"]
    if "status" not in out.columns:
        out["status"] = COMPLETED
    for col in ("primary_metric", "higher_is_better", "ffn", "mixer"):
        if col not in out.columns:
            out[col] = None
    out["task"] = out["task"].astype(str)
    out["model"] = out["model"].astype(str)
    # a run that failed before its task was built may have no metric name at all: keep it as None, not "nan"
    out["metric"] = [None if _is_null(m) else str(m) for m in out["metric"]]
    out["status"] = out["status"].fillna(COMPLETED).astype(str)
    out["value"] = pd.to_numeric(out["value"], errors="coerce").astype(float)
    return out


def read_results_path(path: str | Path) -> pd.DataFrame:
    """A comparison directory / ``.db`` via the store, or an exported tidy ``.csv``/``.parquet``/``.json``."""
    p = Path(path)
    if not p.exists():
        raise UserError(
            f"{p} does not exist; give a comparison directory (holding results.db) or a results file"
        )
    suffix = p.suffix.lower()
    if p.is_file() and suffix in (".csv", ".parquet", ".json"):
        try:
            if suffix == ".csv":
                return pd.read_csv(p)
            if suffix == ".parquet":
                return pd.read_parquet(p)
            return pd.read_json(p)
        except (ValueError, OSError, ImportError) as exc:
            raise UserError(f"cannot read {p}: {exc}".splitlines()[0]) from exc
    try:
        # lazy: the store imports the experiment machinery
        from mamba_kan.experiments.store import read_runs, read_tidy
    except ImportError as exc:
        raise UserError(
            f"cannot read {p}: the results store (mamba_kan.experiments.store) is not available"
        ) from exc
    return with_run_configs(read_tidy(p), read_runs(p))


def with_run_configs(tidy: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The tidy frame with each run's ``best_val`` and resolved settings as ``config.<key>`` columns (matched on
    ``run_id``; see :mod:`mamba_kan.analysis.configs`), so that runs in different configurations can be told
    apart, filtered and tuned."""
    from mamba_kan.analysis.configs import config_columns

    if runs.empty:
        return tidy
    return tidy.merge(config_columns(runs), on="run_id", how="left", validate="many_to_one")


# --------------------------------------------------------------------------------------------------------------
# tidy frame -> TaskData
# --------------------------------------------------------------------------------------------------------------
def _first_not_null(s: pd.Series) -> Any:
    s = s.dropna()
    return None if s.empty else s.iloc[0]


def _choose_metric(task: str, rows: pd.DataFrame, metric: str | None) -> str | None:
    if metric is not None:
        return metric if (rows["metric"] == metric).any() else None
    primary = _first_not_null(rows["primary_metric"])
    if primary is not None:
        return str(primary)
    names = sorted(rows["metric"].unique())
    if len(names) == 1:
        return names[0]
    raise UserError(
        f"task {task!r} has several metrics and no primary metric; choose one with --metric: {', '.join(names)}"
    )


def _direction(task: str, rows: pd.DataFrame, metric: str, higher_is_better: bool | None) -> tuple[bool, str]:
    if higher_is_better is not None:
        return bool(higher_is_better), "given"
    primary = _first_not_null(rows["primary_metric"])
    hib = _first_not_null(rows["higher_is_better"])
    if hib is not None and (primary is None or str(primary) == metric):
        return bool(hib), "results database"
    guessed = metric_direction(metric)
    if guessed is None:
        raise UserError(
            f"cannot tell whether higher or lower {metric!r} is better (task {task!r}); pass --direction higher|lower"
        )
    return guessed, "metric name"


def _grid_status(rows: pd.DataFrame) -> dict[tuple[str, Any], str]:
    """(model, seed) -> run status, from every row of the run whatever its metric."""
    status: dict[tuple[str, Any], str] = {}
    for (model, seed), g in rows.groupby(["model", "seed"], sort=False):
        st = [s for s in g["status"].astype(str) if s != COMPLETED]
        status[(model, seed)] = st[0] if st else COMPLETED
    return status


def build_task_data(
    tidy: pd.DataFrame, metric: str | None = None, higher_is_better: bool | None = None, scale: str = "auto"
) -> tuple[list[TaskData], list[str]]:
    """Split a tidy frame into per-task seed x variant matrices of the analysed metric.

    Returns (tasks, notes). Raises :class:`UserError` for a metric that exists nowhere (listing those that do), for
    fewer than 2 variants or fewer than 2 seeds with results. ``scale``: "auto" (log for MSE-type metrics whose
    values are all > 0, raw otherwise), "raw" or "log" (an error if a value is <= 0).
    """
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}; valid choices: {', '.join(SCALES)}")
    if tidy.empty:
        raise UserError("the results are empty: no runs to analyse")
    available = sorted(tidy["metric"].dropna().astype(str).unique())
    if metric is not None and metric not in available:
        raise UserError(f"unknown metric {metric!r}; valid choices: {', '.join(available)}")
    notes: list[str] = []
    tasks: list[TaskData] = []
    for task in sorted(tidy["task"].unique()):
        rows = tidy[tidy["task"] == task]
        chosen = _choose_metric(task, rows, metric)
        if chosen is None:
            notes.append(f"task {task}: has no metric {metric!r}; skipped")
            continue
        hib, source = _direction(task, rows, chosen, higher_is_better)
        status = _grid_status(rows)
        models = sorted(rows["model"].unique(), key=model_sort_key)
        seeds = sorted(rows["seed"].unique())
        values = pd.DataFrame(
            np.nan, index=pd.Index(seeds, name="seed"), columns=pd.Index(models, name="model")
        )
        got = rows[(rows["metric"] == chosen) & (rows["status"] == COMPLETED)]
        missing: list[dict[str, Any]] = []
        for (model, seed), g in got.groupby(["model", "seed"], sort=False):
            vals = g["value"].to_numpy(float)
            if len(vals) > 1:
                notes.append(
                    f"task {task}: {model} seed {seed} has {len(vals)} values of {chosen}; using their mean"
                )
            if np.all(np.isfinite(vals)):
                values.loc[seed, model] = float(np.mean(vals))
        for model in models:
            for seed in seeds:
                if np.isfinite(values.loc[seed, model]):
                    continue
                st = status.get((model, seed))
                if st is None:
                    reason = "no run in the results"
                    st = "absent"
                elif st != COMPLETED:
                    reason = f"run {st}"
                elif not ((got["model"] == model) & (got["seed"] == seed)).any():
                    reason = f"completed run has no value for {chosen}"
                else:
                    reason = f"non-finite value of {chosen}"
                missing.append(
                    {"task": task, "model": model, "seed": _py(seed), "status": st, "reason": reason}
                )
        empty_models = [m for m in models if not values[m].notna().any()]
        td_notes = []
        if empty_models:
            td_notes.append(f"no results at all for {', '.join(empty_models)}; left out of this task's tests")
            values = values.drop(columns=empty_models)
        values = values.dropna(axis=0, how="all")
        factors = {m: p for m in values.columns if (p := _factors_of(rows, m)) is not None}
        chosen_scale = _choose_scale(task, chosen, values, scale, td_notes)
        tasks.append(TaskData(task, chosen, hib, source, values, factors, missing, td_notes, chosen_scale))
    _check_enough(tasks)
    return tasks, notes


def _choose_scale(task: str, metric: str, values: pd.DataFrame, scale: str, notes: list[str]) -> str:
    """The analysis scale of one task (see :func:`build_task_data`); a note says when and why it is log."""
    v = values.to_numpy(float)
    positive = bool(np.all(v[np.isfinite(v)] > 0))
    if scale == "log":
        if not positive:
            raise UserError(f"task {task!r}: --scale log needs {metric} > 0 in every run")
        chosen = "log"
    elif scale == "raw":
        chosen = "raw"
    elif default_scale(metric) == "log" and not positive:
        notes.append(f"{metric} has values <= 0: analysed on the raw scale, not log")
        chosen = "raw"
    else:
        chosen = default_scale(metric)
    if chosen == "log":
        notes.append(
            f"{metric} analysed on log scale (effects are ratios, e.g. kan/bspline); "
            + (
                "chosen by --scale"
                if scale == "log"
                else "default for MSE-type metrics, --scale raw to turn off"
            )
        )
    return chosen


def _factors_of(rows: pd.DataFrame, model: str) -> tuple[str, str] | None:
    """(ffn, mixer) from the frame's own columns when they name design levels, else parsed from the name."""
    sub = rows[rows["model"] == model]
    ffn, mixer = _first_not_null(sub["ffn"]), _first_not_null(sub["mixer"])
    if ffn in FFN_LEVELS and mixer in MIXER_LEVELS:
        return str(ffn), str(mixer)
    return parse_variant(model)


def _check_enough(tasks: list[TaskData]) -> None:
    models = sorted({m for t in tasks for m in t.models}, key=model_sort_key)
    if len(models) < 2:
        found = ", ".join(models) if models else "none"
        raise UserError(f"need at least 2 variants with results to compare; found {len(models)} ({found})")
    max_seeds = max((int(t.values.notna().sum(axis=0).max()) for t in tasks if t.models), default=0)
    if max_seeds < 2:
        raise UserError(
            f"need at least 2 seeds per variant (seeds are the replicates); found at most {max_seeds} — run more seeds"
        )


def _is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _py(v: Any) -> Any:
    """numpy scalar -> Python scalar (JSON-ready)."""
    return v.item() if isinstance(v, np.generic) else v
