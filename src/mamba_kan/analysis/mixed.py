"""Across-task linear mixed model for the ffn and mixer effects (statsmodels ``MixedLM``).

Tasks report different metrics on different scales, so each task's values are first put on one scale: oriented
so that higher is better (lower-is-better metrics negated) and standardised by the task's mean and standard
deviation over all its completed runs (z-scores; effects are then in units of the task's spread). The model

    z ~ C(ffn, Sum) * C(mixer, Sum),   groups = task,
    variance components within each task: seed (the paired data of a seed), ffn x task, mixer x task

treats the tasks as a random sample: the fixed effects are tested against how much they vary from task to task,
not only against seed noise. Centring makes a random task intercept redundant, so none is fitted. With few tasks
the variance components are poorly determined and the fit may not converge; the fit then falls back to the seed
component alone (tasks effectively fixed, a narrower inference that the result names), and if that fails too the
error is reported instead of raised.

This model is descriptive: the verdict uses the one-sample t-tests over per-task estimates
(:func:`mamba_kan.analysis.pipeline.task_level_analysis`). Wald z tests of a mixed model with 3-5 groups reject a
true null 2-3x too often (measured: 12/50 at 5 tasks, 16/40 at 3), and the one ffn x task variance shared by the
three ffn levels misstates the variance of a single contrast. Its tests here therefore use a t reference with
df = n_tasks - 1 (F(df, n_tasks - 1) for the joint effects), the denominator df of a contrast whose variance is
dominated by its task-to-task variation, and the model has no ffn x mixer x task term, so its interaction test is
against seed and main-effect x task noise only (the task-level t-tests do not share this).
The estimates are on each task's analysis scale (log for MSE-type metrics).
"""

from __future__ import annotations

import itertools
import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mamba_kan.analysis.contrasts import CONTRASTS
from mamba_kan.analysis.data import TaskData
from mamba_kan.analysis.multitest import holm
from mamba_kan.design import ALL_MIXERS as MIXER_LEVELS
from mamba_kan.design import FFN_LEVELS

log = logging.getLogger(__name__)


def standardised_frame(tasks: list[TaskData]) -> tuple[pd.DataFrame, list[str]]:
    """Long frame (task, seed, model, ffn, mixer, z) of the factorial variants' completed runs; notes on drops."""
    frames, notes = [], []
    for td in tasks:
        cols = [m for m in td.models if m in td.factors]
        if not cols:
            continue
        long = td.analysed()[cols].stack().rename("value").dropna().reset_index()
        y = long["value"].to_numpy(float) * (1.0 if td.higher_is_better else -1.0)
        sd = float(np.std(y, ddof=1)) if y.size > 1 else 0.0
        if not sd > 0:
            notes.append(f"task {td.name}: no spread in {td.metric}; left out of the mixed model")
            continue
        long["z"] = (y - y.mean()) / sd
        long["task"] = td.name
        long["ffn"] = [td.factors[m][0] for m in long["model"]]
        long["mixer"] = [td.factors[m][1] for m in long["model"]]
        long["seed"] = long["seed"].astype(str)
        frames.append(long[["task", "seed", "model", "ffn", "mixer", "z"]])
    if not frames:
        return pd.DataFrame(columns=["task", "seed", "model", "ffn", "mixer", "z"]), notes
    return pd.concat(frames, ignore_index=True), notes


def _fit(df: pd.DataFrame, formula: str, vc: dict[str, str]) -> tuple[Any, Any, list[str]]:
    from statsmodels.regression.mixed_linear_model import MixedLM

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = MixedLM.from_formula(formula, groups="task", re_formula="0", vc_formula=vc, data=df)
        # Powell first: on these small designs the variance components often sit on the boundary (0), where the
        # gradient methods stall without converging; statsmodels moves on to L-BFGS if Powell does not converge
        result = model.fit(reml=True, method=["powell", "lbfgs"])
    messages = list(dict.fromkeys(str(w.message).splitlines()[0] for w in caught))
    return model, result, messages


def _fe_cov(result: Any, names: list[str]) -> np.ndarray | None:
    """Covariance of the fixed effects, or None if unusable. The intercept of centred data carries no information
    (every contrast and Wald test gives it weight 0) and its variance may be NaN at a boundary fit: zero it."""
    k = len(names)
    cov = np.array(result.cov_params(), dtype=float)[:k, :k]
    slope = [i for i, n in enumerate(names) if n != "Intercept"]
    block = cov[np.ix_(slope, slope)]
    if not (np.all(np.isfinite(block)) and np.all(np.diag(block) > 0)):
        return None
    for i, n in enumerate(names):
        if n == "Intercept":
            cov[i, :] = 0.0
            cov[:, i] = 0.0
    return cov


def mixed_model(tasks: list[TaskData], alpha: float, confidence: float) -> dict[str, Any]:
    """Fit the across-task mixed model; never raises for a failed fit (the record carries ``error``)."""
    df, notes = standardised_frame(tasks)
    out: dict[str, Any] = {
        "n_obs": int(len(df)),
        "n_tasks": int(df["task"].nunique()) if len(df) else 0,
        "notes": notes,
    }
    if out["n_tasks"] < 2:
        out["error"] = "needs at least 2 tasks with factorial variants"
        return out
    ffns = [f for f in FFN_LEVELS if f in set(df["ffn"])]
    mixers = [m for m in MIXER_LEVELS if m in set(df["mixer"])]
    missing_cells = [
        f"{f}_{m}" for f in ffns for m in mixers if not ((df["ffn"] == f) & (df["mixer"] == m)).any()
    ]
    if missing_cells:
        out["error"] = f"design cells without any run: {', '.join(missing_cells)}"
        return out
    terms = [t for t, lv in (("C(ffn, Sum)", ffns), ("C(mixer, Sum)", mixers)) if len(lv) > 1]
    if not terms:
        out["error"] = "needs at least two levels of ffn or mixer"
        return out
    formula = "z ~ " + " * ".join(terms)
    full_vc = {"seed": "0 + C(seed)"}
    if len(ffns) > 1:
        full_vc["ffn_x_task"] = "0 + C(ffn)"
    if len(mixers) > 1:
        full_vc["mixer_x_task"] = "0 + C(mixer)"
    attempts = [
        ("seed + ffn x task + mixer x task", full_vc),
        ("seed only (tasks as fixed)", {"seed": "0 + C(seed)"}),
    ]
    failures: list[str] = []
    fallback: tuple[str, Any, Any, np.ndarray, list[str]] | None = None
    for label, vc in attempts:
        try:
            model, result, messages = _fit(df, formula, vc)
        except Exception as exc:  # statsmodels raises many types on degenerate data; report, never crash
            failures.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        cov = _fe_cov(result, list(model.exog_names))
        if cov is None:
            failures.append(f"{label}: no usable fixed-effect covariance (singular fit)")
            continue
        if not getattr(result, "converged", True):
            failures.append(f"{label}: did not converge")
            fallback = fallback or (label, model, result, cov, messages)
            continue
        fallback = (label, model, result, cov, messages)
        break
    if fallback is None:
        out["error"] = "; ".join(failures) or "mixed model could not be fitted"
        log.info("mixed model failed: %s", out["error"])
        return out
    label, model, result, cov, messages = fallback
    try:
        out.update(_summarise(df, model, result, cov, ffns, mixers, alpha, confidence))
    except (ValueError, np.linalg.LinAlgError) as exc:
        out["error"] = f"{label}: fitted but its covariance is unusable ({exc})"
        return out
    out.update({"formula": formula, "random": label, "warnings": messages, "failed_fits": failures})
    out["notes"] = notes + [
        f"mixed model (descriptive; the verdict uses the task-level t-tests): t / F tests with "
        f"{out['n_tasks'] - 1} denominator df (n_tasks - 1); no ffn x mixer x task term"
    ]
    return out


def _summarise(
    df: pd.DataFrame,
    model: Any,
    result: Any,
    cov: np.ndarray,
    ffns: list[str],
    mixers: list[str],
    alpha: float,
    confidence: float,
) -> dict[str, Any]:
    names = list(model.exog_names)
    beta = np.asarray(result.fe_params, dtype=float)
    ddf = max(1, int(df["task"].nunique()) - 1)
    se = np.sqrt(np.diag(cov))
    fixed = [
        {
            "term": n,
            "estimate": float(b),
            "se": float(s),
            "z": float(b / s),
            "df": ddf,
            "p_value": float(2 * stats.t.sf(abs(b / s), ddf)),
        }
        for n, b, s in zip(names, beta, se)
        if n != "Intercept"
    ]
    effects = []
    for label, match in (("ffn", "C(ffn"), ("mixer", "C(mixer"), ("ffn x mixer", ":")):
        if label == "ffn x mixer":
            idx = [i for i, n in enumerate(names) if ":" in n]
        else:
            idx = [i for i, n in enumerate(names) if n.startswith(match) and ":" not in n]
        if not idx:
            continue
        b, v = beta[idx], cov[np.ix_(idx, idx)]
        chi2 = float(b @ np.linalg.solve(v, b))
        effects.append(
            {
                "effect": label,
                "chi2": chi2,
                "df": len(idx),
                "F": chi2 / len(idx),
                "df_denominator": ddf,
                "p_value": float(stats.f.sf(chi2 / len(idx), len(idx), ddf)),
            }
        )
    # the fixed-effect design row of a cell depends on (ffn, mixer) only: take it from any observation of the cell
    exog = np.asarray(model.exog, dtype=float)
    row = {}
    for f in ffns:
        for m in mixers:
            first = int(np.flatnonzero((df["ffn"].to_numpy() == f) & (df["mixer"].to_numpy() == m))[0])
            row[(f, m)] = exog[first]
    zq = float(stats.t.ppf(0.5 + confidence / 2.0, ddf))
    contrasts = []
    for name, effect, hi, lo in CONTRASTS:
        if hi not in ffns or lo not in ffns:
            continue
        specs: list[tuple[str, str | None, np.ndarray]] = [
            ("pooled", None, np.mean([row[(hi, m)] - row[(lo, m)] for m in mixers], axis=0))
        ]
        if len(mixers) > 1:
            specs += [("within", m, row[(hi, m)] - row[(lo, m)]) for m in mixers]
            specs += [
                ("interaction", f"{m1} - {m2}", row[(hi, m1)] - row[(lo, m1)] - row[(hi, m2)] + row[(lo, m2)])
                for m1, m2 in itertools.combinations(mixers, 2)
                if name != "K"  # K x mixer = D1 x mixer + D2 x mixer
            ]
        for scope, mixer, L in specs:
            est, s = float(L @ beta), float(np.sqrt(L @ cov @ L))
            zval = est / s if s > 0 else None
            contrasts.append(
                {
                    "name": name,
                    "effect": effect,
                    "scope": scope,
                    "mixer": mixer,
                    "label": f"{name} {effect} ({hi} - {lo})"
                    + (
                        ""
                        if scope == "pooled"
                        else f" | {mixer}"
                        if scope == "within"
                        else f" x mixer ({mixer})"
                    ),
                    "estimate": est,
                    "se": s,
                    "z": zval,
                    "df": ddf,
                    "p_value": None if zval is None else float(2 * stats.t.sf(abs(zval), ddf)),
                    "ci_low": est - zq * s,
                    "ci_high": est + zq * s,
                    "favourable": None if est == 0 else bool(est > 0),  # z is oriented: positive = better
                }
            )
    for c in contrasts:
        c["family"] = ("gate" if c["name"] == "K" else "primary") if c["scope"] == "pooled" else "secondary"
    for family in ("gate", "primary", "secondary"):
        members = [c for c in contrasts if c["family"] == family]
        for c, p in zip(members, holm([c["p_value"] for c in members])):
            c["p_holm"] = p
            c["significant"] = bool(p is not None and p < alpha)
    for c in contrasts:
        hi, lo = next((h, l) for n, _, h, l in CONTRASTS if n == c["name"])
        if c["favourable"] is None:
            c["statement"] = "no difference"
        elif c["scope"] == "interaction":
            m1, m2 = c["mixer"].split(" - ")
            c["statement"] = f"{hi} gains more over {lo} under {m1 if c['favourable'] else m2}"
        else:
            c["statement"] = f"{hi} better than {lo}" if c["favourable"] else f"{lo} better than {hi}"
    vcomp = dict(zip(model.exog_vc.names, (float(v) for v in np.atleast_1d(result.vcomp))))
    vcomp["residual"] = float(result.scale)
    return {
        "converged": bool(getattr(result, "converged", True)),
        "fixed_effects": fixed,
        "effects": effects,
        "contrasts": contrasts,
        "variance_components": vcomp,
        "units": "task standard deviations, oriented so that positive = better",
    }
