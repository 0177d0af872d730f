"""Runs of one (task, variant) that differ in a setting: detect, filter (``where``), refuse, or tune
(``tune``).

Every run record carries its resolved training config (``RunRecord.config``: the TrainConfig with
``model_cfg`` and ``task_options`` expanded). The readers flatten it into one ``config.<key>`` column per
setting, nested keys dotted (``config.lr``, ``config.model_cfg.d_model``, ``config.task_options.context``);
lists become tuples.

A *setting varies* when the runs of one (task, variant) — whatever their seed — carry more than one value of
it. Seeds are the replicates that the statistics pair across variants, so every seed of a variant must be the
same configuration: averaging re-runs of one seed with different ``lr`` values, or pairing seed 0 at ``lr =
1e-3`` with seed 1 at ``lr = 3e-3``, would both answer a question nobody asked. The analysis therefore refuses
(a :class:`UserError`, exit status 2 on the CLI) unless the runs are narrowed to one configuration:

- ``where`` (``--where KEY=VALUE``, repeatable): keep only the runs whose setting KEY equals VALUE (several
  values of one key: any of them). Values are read as YAML scalars, so ``lr=1e-3`` matches a stored 0.001.
- ``tune`` (``--tune KEY``, repeatable): for each (task, variant) choose the value (combination) of the tuned
  settings with the best mean validation value of the primary metric over its seeds (``RunRecord.best_val``,
  in the task's direction), and analyse the test metric of that configuration only. Test values never
  influence the choice. Tuning is never automatic: which settings are tuned changes the question, so it must
  be asked for.

Re-runs of the same configuration (the same (task, variant, seed) twice with every setting equal) are not a
conflict: their values are averaged as before, with a note.

Settings that are never a difference between configurations (:data:`EXCLUDED_KEYS`, each with its reason):
``model`` (the variant itself, the factor under comparison), ``task`` (the analysis is per task label; tasks
with different options get different labels and are different tasks), ``seed`` (the replicate), and the
bookkeeping settings that never change results and are left out of the cell's config hash (``threads``,
``checkpoint_every``, the tracking settings ``wandb*``, ``tensorboard``, ``run_name``, and the output settings
``snapshot_every``, ``keep_checkpoints*``). Widths that parameter matching derives
per variant (``model_cfg.ffn_hidden``) are constant within a (task, variant), so they can never make one cell
ambiguous; they are only left out of the note that lists settings chosen differently per variant. A key absent
from a run's config (a record written by an older version) counts as unknown for that run, not as a different
value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mamba_kan.analysis.data import default_scale
from mamba_kan.design import metric_higher_is_better, variant_sort_key
from mamba_kan.errors import UserError

CONFIG_PREFIX = "config."

#: Config keys that are not settings of a configuration, with the reason (see the module docstring). The
#: bookkeeping keys are ``mamba_kan.training.config.NON_RESULT_KEYS`` (a test keeps the two in step; importing
#: the training package here would import torch into the analysis).
EXCLUDED_KEYS: dict[str, str] = {
    "model": "the variant itself: the factor under comparison, not a setting",
    "task": "the task the run belongs to: the analysis is per task label",
    "seed": "the replicate: seeds are paired across variants",
    "threads": "bookkeeping: never changes results (not in the config hash)",
    "checkpoint_every": "bookkeeping: never changes results (not in the config hash)",
    "wandb": "bookkeeping: never changes results (not in the config hash)",
    "wandb_project": "bookkeeping: never changes results (not in the config hash)",
    "tensorboard": "bookkeeping: never changes results (not in the config hash)",
    "wandb_group": "bookkeeping: never changes results (not in the config hash)",
    "wandb_tags": "bookkeeping: never changes results (not in the config hash)",
    "run_name": "bookkeeping: never changes results (not in the config hash)",
    "keep_checkpoints": "bookkeeping: never changes results (not in the config hash)",
    "keep_checkpoints_after_run": "bookkeeping: never changes results (not in the config hash)",
    "snapshot_every": "bookkeeping: never changes results (not in the config hash)",
}
#: Settings the grid may set per variant by design (matched widths): not listed as "chosen per variant".
PER_VARIANT_KEYS = frozenset({"model_cfg.ffn_hidden"})

#: Marker of a key absent from a run's config (unknown there; distinct from an explicit null).
ABSENT = pd.NA

_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


# --------------------------------------------------------------------------------------------------------------
# flattening and values
# --------------------------------------------------------------------------------------------------------------
def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"lr": 1e-3, "model_cfg": {"d_model": 64}}`` -> ``{"lr": 0.001, "model_cfg.d_model": 64}``; lists
    become tuples (hashable, and compared element by element)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_config(v, key + "."))
        else:
            out[key] = _freeze(v)
    return out


def _freeze(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, Mapping):
        return json.dumps(v, sort_keys=True, default=str)
    return v


def config_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """``run_id`` + ``best_val`` + one ``config.<key>`` column per setting (object dtype, :data:`ABSENT` where a run's
    config lacks the key) from :func:`mamba_kan.experiments.store.read_runs` output."""
    flat = [flatten_config(c if isinstance(c, Mapping) else {}) for c in runs["config"]]
    keys = sorted({k for f in flat for k in f})
    data: dict[str, Any] = {"run_id": runs["run_id"].to_numpy(object)}
    data["best_val"] = pd.to_numeric(runs["best_val"], errors="coerce").astype(float).to_numpy()
    for k in keys:
        data[CONFIG_PREFIX + k] = pd.Series([f.get(k, ABSENT) for f in flat], dtype=object).to_numpy(object)
    return pd.DataFrame(data)


def _is_absent(v: Any) -> bool:
    return v is pd.NA


def _is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float | np.floating) and math.isnan(v))


def canonical(v: Any) -> Any:
    """A hashable key under which equal settings coincide: 128 and 128.0 are one value, True is not 1, a list
    read back from a csv as JSON text equals the tuple; None and NaN are one value (null)."""
    if _is_null(v):
        return ("null", None)
    if isinstance(v, bool | np.bool_):
        return ("bool", bool(v))
    if isinstance(v, int | float | np.integer | np.floating):
        return ("num", float(v))
    if isinstance(v, tuple | list):
        return ("list", tuple(canonical(x) for x in v))
    if isinstance(v, str) and v[:1] == "[":
        try:
            parsed = json.loads(v)
        except ValueError:
            return ("str", v)
        if isinstance(parsed, list):
            return canonical(parsed)
    return ("str", str(v))


def format_value(v: Any) -> str:
    """A setting's value as the user would type it after ``--where KEY=``: 0.001, 64, true, null, [-3, 3]."""
    if _is_null(v):
        return "null"
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, float | np.floating):
        short = f"{float(v):g}"  # 0.001, not 0.001000; the full repr where 6 digits would not match the value
        return short if float(short) == float(v) else repr(float(v))
    if isinstance(v, tuple | list):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    return str(v)


def _sort_key(v: Any) -> tuple[int, Any]:
    kind, val = canonical(v)
    return {"null": (0, ""), "num": (1, val)}.get(kind, (2, str(val)))


def canonical_column(values: Iterable[Any]) -> list[Any]:
    """:func:`canonical` of each value, NaN where the key is absent (so that ``nunique`` skips it). A run table
    repeats few distinct values per setting, so each is converted once."""
    cache: dict[tuple[type, Any], Any] = {}
    out = []
    for v in values:
        if _is_absent(v):
            out.append(np.nan)
            continue
        try:
            key = (type(v), v)
            c = cache.get(key)
            if c is None:
                c = cache[key] = canonical(v)
        except TypeError:  # an unhashable value in a user's frame
            c = canonical(v)
        out.append(c)
    return out


def canonical_frame(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One column per setting of ``keys`` with the canonical values (:func:`canonical_column`), same index."""
    return pd.DataFrame(
        {
            k: pd.Series(canonical_column(frame[CONFIG_PREFIX + k]), index=frame.index, dtype=object)
            for k in keys
        },
        index=frame.index,
    )


def _json_value(v: Any) -> Any:
    """A setting's value for the JSON output (tuples as lists, numpy scalars as Python)."""
    if _is_null(v):
        return None
    if isinstance(v, tuple):
        return [_json_value(x) for x in v]
    return v.item() if isinstance(v, np.generic) else v


# --------------------------------------------------------------------------------------------------------------
# --where
# --------------------------------------------------------------------------------------------------------------
def parse_value(raw: str) -> Any:
    """A ``--where`` value as a YAML scalar/flow list: ``1e-3`` -> 0.001, ``64`` -> 64, ``true``, ``null``,
    ``[-3, 3]``; text that is not valid YAML stays text."""
    import yaml  # lazy: only the filter needs it

    text = raw.strip()
    if _FLOAT_TEXT.match(text):  # YAML 1.1 reads '1e-3' (no dot) as a string
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return text


def normalise_key(key: str) -> str:
    """``config.lr`` and ``lr`` name the same setting."""
    key = key.strip()
    return key[len(CONFIG_PREFIX) :] if key.startswith(CONFIG_PREFIX) else key


def parse_where(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["lr=1e-3", "model_cfg.d_model=64", "lr=3e-3"]`` -> ``{"lr": [0.001, 0.003], "model_cfg.d_model": [64]}``
    (a key given twice keeps the runs with either value)."""
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        key = normalise_key(key)
        if not sep or not key:
            raise UserError(f"--where expects KEY=VALUE (e.g. lr=1e-3 or model_cfg.d_model=64), got {item!r}")
        out.setdefault(key, []).append(parse_value(raw))
    return out


def where_mapping(where: Mapping[str, Any] | Sequence[str] | None) -> dict[str, list[Any]]:
    """``where`` as given to the API: ``KEY=VALUE`` strings, or a mapping key -> value, where a list holds
    alternative values and a tuple is one list-valued setting (``{"model_cfg.grid_range": (-3, 3)}``)."""
    if not where:
        return {}
    if isinstance(where, str):
        return parse_where([where])
    if not isinstance(where, Mapping):
        return parse_where(where)
    out: dict[str, list[Any]] = {}
    for k, v in where.items():
        values = list(v) if isinstance(v, list | set) else [v]
        out[normalise_key(str(k))] = [parse_value(x) if isinstance(x, str) else x for x in values]
    return out


def _unknown_key(key: str, flag: str, settings: list[str]) -> UserError:
    import difflib

    # a nested setting named by its last part (d_model for model_cfg.d_model), then near spellings
    close = [s for s in settings if s.rsplit(".", 1)[-1] == key]
    close += [s for s in difflib.get_close_matches(key, settings, n=3, cutoff=0.6) if s not in close]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    listed = ", ".join(settings[:12]) + (f", ... ({len(settings)} in all)" if len(settings) > 12 else "")
    return UserError(f"{flag} {key}: no run has this setting{hint} (settings: {listed or 'none'})")


def _values_text(values: Iterable[Any]) -> str:
    distinct: dict[Any, Any] = {}
    for v in values:
        if not _is_absent(v):
            distinct.setdefault(canonical(v), v)
    return ", ".join(format_value(v) for v in sorted(distinct.values(), key=_sort_key))


def apply_where(tidy: pd.DataFrame, where: Mapping[str, list[Any]]) -> pd.DataFrame:
    """The rows of the runs whose every filtered setting has one of the given values (see :func:`parse_where`)."""
    settings = setting_keys(tidy)
    mask = np.ones(len(tidy), dtype=bool)
    for key, wanted in where.items():
        col = CONFIG_PREFIX + key
        if col not in tidy.columns:
            raise _unknown_key(key, "--where", settings)
        targets = {canonical(w) for w in wanted}
        hit = np.array([c in targets for c in canonical_column(tidy[col])], dtype=bool)
        if not (mask & hit).any():
            asked = " or ".join(f"{key}={format_value(w)}" for w in wanted)
            raise UserError(
                f"--where {asked}: no run matches; {key} in the results: {_values_text(tidy.loc[mask, col])}"
            )
        mask &= hit
    return tidy[mask]


# --------------------------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------------------------
def setting_keys(tidy: pd.DataFrame) -> list[str]:
    """The settings the runs carry (``config.`` columns without the excluded keys), sorted."""
    return sorted(
        c[len(CONFIG_PREFIX) :]
        for c in tidy.columns
        if str(c).startswith(CONFIG_PREFIX) and c[len(CONFIG_PREFIX) :] not in EXCLUDED_KEYS
    )


def _distinct(series: pd.Series) -> dict[Any, Any]:
    """canonical value -> one raw value, over the known (not absent) values of ``series``."""
    out: dict[Any, Any] = {}
    for v, c in zip(series, canonical_column(series)):
        if not (isinstance(c, float) and math.isnan(c)):
            out.setdefault(c, v)
    return out


def _spread(runs: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(most values of each setting within one variant, values within the task): two (task x setting) tables
    of distinct-value counts over the known values."""
    cf = canonical_frame(runs, keys)
    within = cf.groupby([runs["task"], runs["model"]]).nunique().groupby(level=0).max()
    overall = cf.groupby(runs["task"]).nunique()
    return within, overall


def varying_settings(runs: pd.DataFrame, keys: list[str] | None = None) -> dict[str, dict[str, list[Any]]]:
    """task -> {setting: its values} for the settings that take more than one value within some (task, variant)
    of that task (the values listed are all those of that task). ``runs``: one row per run is enough."""
    keys = setting_keys(runs) if keys is None else keys
    if not keys or runs.empty:
        return {}
    within, _ = _spread(runs, keys)
    out: dict[str, dict[str, list[Any]]] = {}
    for task, row in within.iterrows():
        rows = runs[runs["task"] == task]
        for key in row.index[row.to_numpy() > 1]:
            values = _distinct(rows[CONFIG_PREFIX + key]).values()
            out.setdefault(str(task), {})[key] = sorted(values, key=_sort_key)
    return out


def _refusal(varying: dict[str, dict[str, list[Any]]]) -> UserError:
    """The one-line error for runs of one (task, variant) in several configurations."""
    merged: dict[str, dict[Any, Any]] = {}
    for found in varying.values():
        for key, values in found.items():
            for v in values:
                merged.setdefault(key, {}).setdefault(canonical(v), v)
    parts = [
        f"{key} ({', '.join(format_value(v) for v in sorted(vals.values(), key=_sort_key))})"
        for key, vals in sorted(merged.items())
    ]
    tasks = sorted(varying)
    shown = ", ".join(tasks[:3]) + (f" and {len(tasks) - 3} more" if len(tasks) > 3 else "")
    where = " ".join(f"--where {k}=VALUE" for k in sorted(merged))
    tune = " ".join(f"--tune {k}" for k in sorted(merged))
    return UserError(
        f"runs of the same task and variant differ in {', '.join(parts)} (task{'s' if len(tasks) > 1 else ''} "
        f"{shown}); different configurations are not averaged: pass {where} to analyse one, or "
        f"{tune} to choose each variant's best on validation"
    )


def _between_variant_notes(runs: pd.DataFrame, skip: set[str]) -> list[str]:
    """Per task: settings constant within each variant but chosen differently between variants."""
    keys = [k for k in setting_keys(runs) if k not in PER_VARIANT_KEYS and k not in skip]
    if not keys or runs.empty:
        return []
    within, overall = _spread(runs, keys)
    notes = []
    for task in overall.index:
        differ = []
        for key in overall.columns[(overall.loc[task].to_numpy() > 1) & (within.loc[task].to_numpy() <= 1)]:
            rows = runs[runs["task"] == task]
            per_model = {m: _distinct(g[CONFIG_PREFIX + key]) for m, g in rows.groupby("model", sort=False)}
            shown = ", ".join(
                f"{m} {format_value(next(iter(d.values())))}"
                for m, d in sorted(per_model.items(), key=lambda kv: variant_sort_key(kv[0]))
                if d
            )
            differ.append(f"{key} ({shown})")
        if differ:
            notes.append(
                f"task {task}: settings differ between variants (each variant has one value): {'; '.join(differ)}"
            )
    return notes


# --------------------------------------------------------------------------------------------------------------
# tuning
# --------------------------------------------------------------------------------------------------------------
def _direction(task: str, rows: pd.DataFrame) -> bool:
    """Direction of the validation metric (the task's primary metric, which ``best_val`` is measured in)."""
    hib = rows["higher_is_better"].dropna()
    if not hib.empty:
        return bool(hib.iloc[0])
    primary = rows["primary_metric"].dropna()
    guessed = metric_higher_is_better(str(primary.iloc[0])) if not primary.empty else None
    if guessed is None:
        raise UserError(
            f"--tune: task {task!r}: cannot tell whether a higher or lower validation value is better"
        )
    return guessed


def _run_level(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per run (the tidy frame has one per run x metric)."""
    if "run_id" in rows.columns and rows["run_id"].notna().all():
        return rows.drop_duplicates("run_id")
    return rows.drop_duplicates(["seed", "status", "best_val"])


def tune_configurations(
    tidy: pd.DataFrame, tune: list[str], log_scale: bool | None = None
) -> tuple[pd.DataFrame, list[dict[str, Any]], list[str]]:
    """Per (task, variant), keep the runs of the tuned settings' value(s) with the best mean validation value.

    Candidates are the distinct combinations of the ``tune`` settings' values among the (task, variant)'s runs;
    every other setting must be fixed by them (else the refusal error). Each candidate's criterion is the mean over
    its seeds of ``best_val`` (one value per seed: re-runs of a seed are averaged first) — the geometric mean for
    MSE-type metrics analysed on log scale (``log_scale``: None = decide by the metric name as the analysis does;
    used only when every value is > 0). A candidate with seeds lacking a validation value (failed, or diverged
    before an evaluation) ranks after every candidate that has one for all its seeds, so a setting that breaks some
    seeds is not chosen on its survivors. Ties go to the first candidate in sorted order.
    Returns (rows of the chosen configurations, tuning table, notes).
    """
    if "best_val" not in tidy.columns:
        raise UserError("--tune needs each run's best validation value (best_val); this input has none")
    settings = setting_keys(tidy)
    for key in tune:
        if CONFIG_PREFIX + key not in tidy.columns:
            raise _unknown_key(key, "--tune", settings)
    others = [k for k in settings if k not in tune]
    runs = _one_row_per_run(tidy)
    fixed = canonical_frame(runs, others)
    chosen_runs: list[Any] = []
    table: list[dict[str, Any]] = []
    notes: list[str] = []
    tuned_somewhere: set[str] = set()
    for (task, model), g in runs.groupby(["task", "model"], sort=True):
        task, model = str(task), str(model)
        tuned_somewhere |= {k for k in tune if len(_distinct(g[CONFIG_PREFIX + k])) > 1}
        groups = _candidate_groups(g, tune)
        # every other setting must be fixed by the tuned values, else a candidate is itself ambiguous
        label = pd.Series(0, index=g.index)
        for i, idx in enumerate(groups.values()):
            label.loc[idx] = i
        spread = fixed.loc[g.index].groupby(label).nunique().max() if others else pd.Series(dtype=int)
        loose = list(spread.index[spread.to_numpy() > 1])
        if loose:
            raise _refusal(
                {task: {k: sorted(_distinct(g[CONFIG_PREFIX + k]).values(), key=_sort_key) for k in loose}}
            )
        hib = _direction(task, g)
        metric = str(g["primary_metric"].dropna().iloc[0]) if g["primary_metric"].notna().any() else ""
        use_log = default_scale(metric) == "log" if log_scale is None else log_scale
        candidates = [_candidate(key, g.loc[idx], tune, use_log) for key, idx in groups.items()]
        candidates.sort(key=lambda c: tuple(_sort_key(v) for v in c["value"].values()))
        best = min(candidates, key=lambda c: _rank(c, hib))  # min keeps the first of equals
        if best["mean_val"] is None:
            notes.append(f"--tune: task {task}, {model}: no run has a validation value; {model} left out")
            continue
        chosen_runs += groups[best["key"]]
        table.append(
            {
                "task": task,
                "model": model,
                "settings": list(tune),
                "chosen": best["value"],
                "val_metric": metric,
                "higher_is_better": hib,
                "criterion": best["criterion"],
                "candidates": [{k: v for k, v in c.items() if k != "key"} for c in candidates],
            }
        )
        n_ties = sum(_rank(c, hib) == _rank(best, hib) for c in candidates)
        if n_ties > 1:
            notes.append(
                f"--tune: task {task}, {model}: {n_ties} candidates tie on validation; the first is used"
            )
        if best["n_without_val"]:
            notes.append(
                f"--tune: task {task}, {model}: every candidate has seeds without a validation value; chosen on "
                f"the {best['n_seeds'] - best['n_without_val']} of {best['n_seeds']} that have one"
            )
    for key in tune:
        if key not in tuned_somewhere:
            notes.append(f"--tune {key}: {key} has one value in every (task, variant); nothing to tune")
    table.sort(key=lambda r: (r["task"], variant_sort_key(r["model"])))
    if runs is tidy:
        return tidy.loc[chosen_runs], table, notes
    return tidy[tidy["run_id"].isin(runs.loc[chosen_runs, "run_id"])], table, notes


def _candidate_groups(g: pd.DataFrame, tune: list[str]) -> dict[tuple[Any, ...], list[Any]]:
    """Candidate key (canonical values of the tuned settings) -> the frame index of its rows."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    cols = g[[CONFIG_PREFIX + k for k in tune]].itertuples(index=False, name=None)
    for idx, row in zip(g.index, cols):
        key = tuple(None if _is_absent(v) else canonical(v) for v in row)
        groups.setdefault(key, []).append(idx)
    return groups


def _candidate(key: tuple[Any, ...], rows: pd.DataFrame, tune: list[str], use_log: bool) -> dict[str, Any]:
    """One candidate's record: its values, the validation mean over its seeds, seeds with/without a value."""
    # one value per seed: re-runs of a seed averaged, NaN when none of them has a validation value
    vals = _run_level(rows).groupby("seed")["best_val"].mean().to_numpy(float)
    finite = vals[np.isfinite(vals)]
    geometric = bool(use_log and finite.size and np.all(finite > 0))
    if not finite.size:
        mean = None
    else:
        mean = float(np.exp(np.mean(np.log(finite)))) if geometric else float(np.mean(finite))
    first = rows.iloc[0]
    return {
        "key": key,
        "value": {k: _json_value(first[CONFIG_PREFIX + k]) for k in tune},
        "mean_val": mean,
        "criterion": "geometric mean" if geometric else "mean",
        "n_seeds": int(len(vals)),
        "n_without_val": int(np.sum(~np.isfinite(vals))),
    }


def _rank(c: dict[str, Any], higher_is_better: bool) -> tuple[bool, bool, float]:
    """Sort key, best first: has a validation mean, has one for every seed, then the oriented mean."""
    mean = c["mean_val"]
    oriented = 0.0 if mean is None else (-mean if higher_is_better else mean)
    return (mean is None, c["n_without_val"] > 0, oriented)


# --------------------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------------------
def select_configurations(
    tidy: pd.DataFrame,
    where: Mapping[str, Any] | Sequence[str] | None = None,
    tune: Sequence[str] | None = None,
    log_scale: bool | None = None,
) -> tuple[pd.DataFrame, list[dict[str, Any]], list[str]]:
    """Filter by ``where``, then tune or refuse (see the module docstring). Returns (rows, tuning table, notes).

    ``tidy``: the normalised tidy frame; its ``config.<key>`` columns (absent: nothing to check, and ``where`` /
    ``tune`` are errors) and ``best_val`` (for ``tune``).
    """
    where_map = where_mapping(where)
    tune_keys = list(dict.fromkeys(normalise_key(k) for k in (tune or [])))
    has_configs = any(str(c).startswith(CONFIG_PREFIX) for c in tidy.columns)
    if not has_configs:
        if where_map or tune_keys:
            raise UserError(
                "--where/--tune need the runs' configurations, which this input does not carry; analyse the "
                "comparison directory (results.db) instead of an exported metrics table"
            )
        return tidy, [], []
    for key in tune_keys:
        if key in EXCLUDED_KEYS:
            raise UserError(f"--tune {key}: {key} is not a setting ({EXCLUDED_KEYS[key]})")
    for key in where_map:
        if key in EXCLUDED_KEYS and key not in ("model", "task", "seed"):
            raise UserError(f"--where {key}: {key} is not a setting ({EXCLUDED_KEYS[key]})")
    notes: list[str] = []
    if where_map:
        before = _n_runs(tidy)
        tidy = apply_where(tidy, where_map)
        asked = ", ".join(f"{k}={' or '.join(format_value(v) for v in vs)}" for k, vs in where_map.items())
        notes.append(f"--where {asked}: {_n_runs(tidy)} of {before} runs kept")
    table: list[dict[str, Any]] = []
    if tune_keys:
        tidy, table, tune_notes = tune_configurations(tidy, tune_keys, log_scale)
        notes += tune_notes
        if tidy.empty:
            raise UserError("--tune: no (task, variant) has a run with a validation value")
    else:
        varying = varying_settings(_one_row_per_run(tidy))
        if varying:
            raise _refusal(varying)
    notes += _between_variant_notes(_one_row_per_run(tidy), set(tune_keys))
    return tidy, table, notes


def _one_row_per_run(tidy: pd.DataFrame) -> pd.DataFrame:
    """The first row of each run (rows of one run share its settings), when runs are identified."""
    if "run_id" in tidy.columns and tidy["run_id"].notna().all():
        return tidy.drop_duplicates("run_id")
    return tidy


def _n_runs(tidy: pd.DataFrame) -> int:
    """Runs in the frame: distinct run ids, else distinct (task, variant, seed, settings)."""
    if "run_id" in tidy.columns and tidy["run_id"].notna().all():
        return int(tidy["run_id"].nunique())
    identity = ["task", "model", "seed", *[c for c in tidy.columns if str(c).startswith(CONFIG_PREFIX)]]
    return len(tidy.drop_duplicates(identity))
