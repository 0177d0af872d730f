"""The research-question contrasts within one task, and the verdict that answers the question as asked.

Backward-difference contrasts of the 3-level feedforward factor (Wobbrock-style planned contrasts of a factorial
design; the activation / topology split of Yu, Yu & Wang 2024, "KAN or MLP: A Fairer Comparison"):
  K  = kan - mlp       the KAN advantage itself (the question: is kan better than mlp?), K = D1 + D2;
  D1 = bspline - mlp   the activation effect (MLP topology held, learnable B-spline activations added);
  D2 = kan - bspline   the topology effect (spline activations held, KAN edge topology instead of MLP nodes).
Each is estimated pooled over the mixers (the mean of the per-mixer differences), within each mixer, and (D1, D2)
as its interaction with the mixer (D | mixer_1 - D | mixer_2). Valid only with parameter-matched variants.

Estimation: seeds fix the data, so every contrast is computed per seed from that seed's runs (the seed needs every
variant the contrast uses) and the per-seed values are tested with a one-sample t-test (a paired t-test; the
repeated-measures analysis of a single-df contrast, which needs no sphericity assumption). Estimate = mean of the
per-seed values (with complete data exactly the difference of cell means), CI = estimate +- t_{(1+c)/2, n-1} SE.
On a log-scale task (MSE-type metrics, see :mod:`mamba_kan.analysis.data`) the values are log(metric) and the
contrast is also reported as a ratio exp(estimate) with its back-transformed interval ("kan's mse is 0.70x
bspline's"); the pooled D over mixers is then the geometric mean of the per-mixer ratios.

Families (Holm 1979 within each; serial gatekeeping, Dmitrienko, Offen & Westfall 2003, between the first two):
  gate       K pooled, tested at alpha;
  primary    {D1 pooled, D2 pooled}, Holm at alpha, read only when the gate is passed;
  secondary  every within-mixer and interaction contrast (K, D1, D2 | mixer; D1, D2 x mixer), Holm at alpha.
The gate-then-primary sequence controls the family-wise error of every claim the headline makes at alpha.

Equivalence (two one-sided tests, Schuirmann 1987) of a contrast with the smallest effect of interest ``sesoi_dz``:
H0 |d_z| >= sesoi_dz is rejected at alpha when the observed t lies inside the alpha and 1 - alpha quantiles of the
noncentral t with df n - 1 and noncentrality +-sesoi_dz sqrt(n) (the exact TOST for a standardised bound);
``p_equivalence`` is the larger one-sided p-value, ``equivalent`` is p_equivalence < alpha.

Verdict (per task; per mixer with the secondary within-mixer contrasts):
  1. Is kan better than mlp? K "better" (significant, favourable), "worse" (significant, unfavourable),
     "equivalent" (TOST), "not significant" or "untestable".
  2. If better: "both" (D1 and D2 significant and favourable in the primary family), "activation" (only D1),
     "topology" (only D2), "undetermined" (neither step is significant on its own).
  3. If not better: "neither" when D1 and D2 are both shown equivalent to 0 within +-SESOI; else "no KAN advantage"
     when K is significantly worse or shown equivalent (there is no KAN advantage to explain); else
     "inconclusive at this power". D1 and D2 are then reported as secondary readings only.
  K untestable (fewer than 2 seeds with kan and mlp, or the same difference in every seed): "not estimable".
A KAN that is worse than the MLP can therefore never be headlined "activation" or "topology".
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mamba_kan.analysis.multitest import holm
from mamba_kan.design import MIXER_LEVELS

#: (name, effect, KAN-ward level, other level) of every contrast; D1 and D2 answer the question, K gates it.
CONTRASTS: tuple[tuple[str, str, str, str], ...] = (
    ("D1", "activation", "bspline", "mlp"),
    ("D2", "topology", "kan", "bspline"),
    ("K", "kan vs mlp", "kan", "mlp"),
)
VERDICTS = (
    "activation",
    "topology",
    "both",
    "undetermined",
    "neither",
    "no KAN advantage",
    "inconclusive at this power",
    "not estimable",
)
#: Verdicts that claim that kan beats mlp (a false claim when it does not).
CLAIMS_KAN_BETTER = ("activation", "topology", "both", "undetermined")
QUESTION = "is kan better than mlp?"


# --------------------------------------------------------------------------------------------------------------
# vectorised core (used by the pipeline for one data set and by the calibration for thousands)
# --------------------------------------------------------------------------------------------------------------
def t_test_arrays(v: np.ndarray, confidence: float) -> dict[str, np.ndarray]:
    """One-sample t-tests against 0 along the last axis of v (..., n): estimate, sd, se, t, p, ci_low, ci_high.

    A zero sd (identical per-seed values) gives t = +-inf and p = 0 for a non-zero mean, t = 0 and p = 1 for a zero
    mean, where "zero" is relative to the values' magnitude (floating-point noise is not variance).
    """
    v = np.asarray(v, dtype=float)
    n = v.shape[-1]
    est = v.mean(axis=-1)
    sd = v.std(axis=-1, ddof=1)
    scale = np.maximum(1.0, np.max(np.abs(v), axis=-1))
    tiny = sd <= 1e-12 * scale
    sd = np.where(tiny, 0.0, sd)
    zero_mean = np.abs(est) <= 1e-12 * scale
    est = np.where(tiny & zero_mean, 0.0, est)
    se = sd / np.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(tiny, np.where(zero_mean, 0.0, np.sign(est) * np.inf), est / np.where(tiny, 1.0, se))
    p = 2.0 * stats.t.sf(np.abs(t), n - 1)
    half = stats.t.ppf(0.5 + confidence / 2.0, n - 1) * se
    return {"estimate": est, "sd": sd, "se": se, "t": t, "p": p, "ci_low": est - half, "ci_high": est + half}


def tost_dz(t: np.ndarray, n: int, sesoi_dz: float) -> np.ndarray:
    """p-value of the exact TOST of H0 |d_z| >= sesoi_dz from one-sample t statistics t on n values (df n - 1)."""
    nc = sesoi_dz * np.sqrt(n)
    t = np.asarray(t, dtype=float)
    tt = np.clip(t, -1e6, 1e6)  # a zero-variance contrast: equivalent if its mean is 0, else far outside
    upper = stats.nct.cdf(tt, n - 1, nc)  # H0: d_z >= +sesoi
    lower = stats.nct.sf(tt, n - 1, -nc)  # H0: d_z <= -sesoi
    return np.maximum(upper, lower)


def tost_fixed(est: np.ndarray, se: np.ndarray, df: int, bound: float) -> np.ndarray:
    """p-value of the t TOST of H0 |mean| >= bound (a bound in the estimate's units), standard error se, df."""
    est, se = np.asarray(est, float), np.asarray(se, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_up = stats.t.cdf((est - bound) / se, df)
        p_lo = stats.t.sf((est + bound) / se, df)
    p = np.maximum(p_up, p_lo)
    return np.where(se > 0, p, np.where(np.abs(est) < bound, 0.0, 1.0))


def holm_arrays(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values along the last axis of p (..., m) (no missing entries)."""
    p = np.asarray(p, dtype=float)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="mergesort")
    ps = np.take_along_axis(p, order, axis=-1)
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * ps, axis=-1))
    out = np.empty_like(stepped)
    np.put_along_axis(out, order, stepped, axis=-1)
    return out


def verdict_codes(
    k_p: np.ndarray,
    k_est: np.ndarray,
    d1_p: np.ndarray,
    d1_est: np.ndarray,
    d2_p: np.ndarray,
    d2_est: np.ndarray,
    k_eq: np.ndarray,
    d1_eq: np.ndarray,
    d2_eq: np.ndarray,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(verdict, kan_vs_mlp) string arrays from the gate p-value of K, the primary-family (Holm) p-values of D1
    and D2, their oriented estimates (> 0 = the KAN-ward level is better) and the equivalence flags."""
    k_p, d1_p, d2_p = (np.nan_to_num(np.asarray(x, float), nan=1.0) for x in (k_p, d1_p, d2_p))
    k_better = (k_p < alpha) & (np.asarray(k_est) > 0)
    k_worse = (k_p < alpha) & (np.asarray(k_est) < 0)
    s1 = (d1_p < alpha) & (np.asarray(d1_est) > 0)
    s2 = (d2_p < alpha) & (np.asarray(d2_est) > 0)
    k_eq, d1_eq, d2_eq = (np.asarray(x, bool) for x in (k_eq, d1_eq, d2_eq))
    verdict = np.select(
        [
            k_better & s1 & s2,
            k_better & s1,
            k_better & s2,
            k_better,
            d1_eq & d2_eq,
            k_worse | k_eq,
        ],
        ["both", "activation", "topology", "undetermined", "neither", "no KAN advantage"],
        default="inconclusive at this power",
    )
    kvm = np.select([k_better, k_worse, k_eq], ["better", "worse", "equivalent"], default="not significant")
    return verdict, kvm


def task_verdict_arrays(
    y: np.ndarray, alpha: float, sesoi_dz: float, confidence: float = 0.95
) -> dict[str, np.ndarray]:
    """The per-task verdict of complete grids, vectorised: y (..., n_seeds, 3 ffn levels in FFN order, n_mixers),
    oriented so that higher is better, on the analysis scale. Returns verdict, kan_vs_mlp and the pooled
    contrasts' estimate / ci_low / ci_high / p (raw) per name ("K", "D1", "D2") on the oriented scale.

    Equals :func:`planned_contrasts` + :func:`decide` on the same complete data (a test checks this)."""
    y = np.asarray(y, dtype=float)
    mlp, bsp, kan = y[..., 0, :], y[..., 1, :], y[..., 2, :]
    per_seed = {"K": (kan - mlp).mean(-1), "D1": (bsp - mlp).mean(-1), "D2": (kan - bsp).mean(-1)}
    n = y.shape[-3]
    res = {name: t_test_arrays(v, confidence) for name, v in per_seed.items()}
    eq = {name: tost_dz(r["t"], n, sesoi_dz) < alpha for name, r in res.items()}
    return _verdict_arrays(res, eq, alpha)


def _verdict_arrays(
    res: dict[str, dict[str, np.ndarray]], eq: dict[str, np.ndarray], alpha: float
) -> dict[str, np.ndarray]:
    """Verdict codes and the K/D1/D2 estimates, intervals and p-values from the three t-tests and their
    equivalence flags (the K gate, then Holm over {D1, D2}), shared by the per-task and across-task paths."""
    primary = holm_arrays(np.stack([res["D1"]["p"], res["D2"]["p"]], axis=-1))
    verdict, kvm = verdict_codes(
        res["K"]["p"],
        res["K"]["estimate"],
        primary[..., 0],
        res["D1"]["estimate"],
        primary[..., 1],
        res["D2"]["estimate"],
        eq["K"],
        eq["D1"],
        eq["D2"],
        alpha,
    )
    out: dict[str, np.ndarray] = {"verdict": verdict, "kan_vs_mlp": kvm}
    for name, r in res.items():
        for key in ("estimate", "ci_low", "ci_high", "p"):
            out[f"{name}_{key}"] = r[key]
    return out


def noise_sd_arrays(y: np.ndarray) -> np.ndarray:
    """Run-to-run noise sd of complete grids y (..., n_seeds, 3, n_mixers): the root mean square residual of the
    additive model seed + variant, df (n_seeds - 1)(n_variants - 1). Effects of the variants do not enter it
    (unlike the sd over all runs), so a task with a large effect is not shrunk towards the others."""
    y = np.asarray(y, dtype=float)
    flat = y.reshape(y.shape[:-2] + (-1,))  # (..., n_seeds, V)
    n, v = flat.shape[-2], flat.shape[-1]
    resid = (
        flat
        - flat.mean(-1, keepdims=True)
        - flat.mean(-2, keepdims=True)
        + flat.mean((-2, -1), keepdims=True)
    )
    return np.sqrt(np.sum(resid**2, axis=(-2, -1)) / ((n - 1) * (v - 1)))


def across_verdict_arrays(
    y: np.ndarray, alpha: float, sesoi: float, confidence: float = 0.95
) -> dict[str, np.ndarray]:
    """The across-task verdict of complete grids, vectorised: y (..., n_tasks, n_seeds, 3 ffn levels, n_mixers),
    oriented (higher = better) on the analysis scale. Each task is put in units of its own run-to-run noise sd
    (:func:`noise_sd_arrays`); each pooled contrast is estimated per task (mean over seeds) and t-tested over the
    tasks (df = n_tasks - 1); equivalence is the t TOST with the fixed bound +-``sesoi`` noise sds.

    Equals the pipeline's ``across.task_level`` procedure on the same complete data (a test checks this)."""
    y = np.asarray(y, dtype=float)
    z = y / noise_sd_arrays(y)[..., None, None, None]
    mlp, bsp, kan = z[..., 0, :], z[..., 1, :], z[..., 2, :]
    per_task = {
        "K": (kan - mlp).mean(-1).mean(-1),
        "D1": (bsp - mlp).mean(-1).mean(-1),
        "D2": (kan - bsp).mean(-1).mean(-1),
    }
    n_tasks = y.shape[-4]
    res = {name: t_test_arrays(v, confidence) for name, v in per_task.items()}
    eq = {name: tost_fixed(r["estimate"], r["se"], n_tasks - 1, sesoi) < alpha for name, r in res.items()}
    return _verdict_arrays(res, eq, alpha)


def task_level_contrasts(
    per_task: dict[str, list[dict[str, Any]]], alpha: float, confidence: float, sesoi: float
) -> list[dict[str, Any]]:
    """Across-task contrasts from each task's contrast records (estimates in the task's run-noise sds, oriented so
    that positive = better): one t-test over the tasks' estimates per contrast (df = n_tasks - 1; a task's own seed noise and the
    task-to-task variation of the effect are both in the spread of its estimate), families and Holm as per task,
    equivalence by the t TOST with the fixed bound +-``sesoi`` noise sds."""
    keyed: dict[tuple[str, str, str | None], list[tuple[str, dict[str, Any]]]] = {}
    for task, recs in per_task.items():
        for r in recs:
            if r["estimate"] is not None:
                keyed.setdefault((r["name"], r["scope"], r["mixer"]), []).append((task, r))
    out = []
    for (name, scope, mixer), items in keyed.items():
        first = items[0][1]
        est = np.array([r["estimate"] for _, r in items], dtype=float)
        n = int(est.size)
        rec: dict[str, Any] = {
            "name": name,
            "effect": first["effect"],
            "scope": scope,
            "mixer": mixer,
            "label": first["label"],
            "n_tasks": n,
            "per_task": {t: r["estimate"] for t, r in items},
            "family": first["family"],
            "statement": first["statement"],
        }
        if n >= 2:
            r = {k: float(x) for k, x in t_test_arrays(est, confidence).items()}
            rec.update(
                {
                    "estimate": r["estimate"],
                    "se": r["se"],
                    "df": n - 1,
                    "t": r["t"] if np.isfinite(r["t"]) else None,
                    "p_value": r["p"] if r["se"] > 0 or r["estimate"] == 0 else None,
                    "ci_low": r["ci_low"],
                    "ci_high": r["ci_high"],
                    "p_equivalence": float(
                        tost_fixed(np.array(r["estimate"]), np.array(r["se"]), n - 1, sesoi)
                    ),
                }
            )
            rec["equivalent"] = bool(rec["p_equivalence"] < alpha)
        else:
            rec.update(
                {
                    k: None
                    for k in ("se", "df", "t", "p_value", "ci_low", "ci_high", "p_equivalence", "equivalent")
                }
            )
            rec["estimate"] = float(est.mean()) if n else None
            rec["note"] = "estimable in fewer than 2 tasks"
        e = rec["estimate"]
        rec["favourable"] = None if not e else bool(e > 0)
        hi, lo = next((h, lo_) for nm, _, h, lo_ in CONTRASTS if nm == name)
        rec["statement"] = _statement(hi, lo, scope, mixer, rec["favourable"])
        out.append(rec)
    for family in ("gate", "primary", "secondary"):
        members = [r for r in out if r["family"] == family]
        for rec, p in zip(members, holm([r["p_value"] for r in members])):
            rec["p_holm"] = p
            rec["significant"] = bool(p is not None and p < alpha)
    return out


# --------------------------------------------------------------------------------------------------------------
# records for one task
# --------------------------------------------------------------------------------------------------------------
def _t_summary(values: np.ndarray, confidence: float, sesoi_dz: float) -> dict[str, Any]:
    """One-sample t-test of per-seed contrast values (n,) against 0, t confidence interval, TOST of +-sesoi_dz."""
    v = np.asarray(values, dtype=float)
    n = int(v.size)
    out: dict[str, Any] = {"n_pairs": n, "estimate": float(v.mean()) if n else None}
    out.update(
        {
            "se": None,
            "df": None,
            "t": None,
            "p_value": None,
            "ci_low": None,
            "ci_high": None,
            "d_z": None,
            "p_equivalence": None,
            "equivalent": None,
        }
    )
    if n < 2:
        out["note"] = f"only {n} seed(s) with every variant the contrast needs"
        return out
    r = {k: float(x) for k, x in t_test_arrays(v, confidence).items()}
    out["df"] = n - 1
    out["estimate"] = r["estimate"]
    out["p_equivalence"] = float(tost_dz(np.array(r["t"]), n, sesoi_dz))
    if r["sd"] == 0.0:
        out["se"] = 0.0
        out["ci_low"] = out["ci_high"] = out["estimate"]
        if r["estimate"] == 0.0:
            out["p_value"] = 1.0
            out["note"] = "identical results in every seed"
        else:
            out["note"] = "the same non-zero difference in every seed: no variance to test against"
        return out
    out.update(
        {
            "se": r["se"],
            "t": r["t"],
            "p_value": r["p"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
            "d_z": r["estimate"] / r["sd"],
        }
    )
    return out


def _per_seed(wide: pd.DataFrame, weights: dict[str, float]) -> np.ndarray:
    cols = list(weights)
    rows = wide[cols].dropna()
    return rows.to_numpy(float) @ np.array([weights[c] for c in cols])


def _family(name: str, scope: str) -> str:
    if scope == "pooled":
        return "gate" if name == "K" else "primary"
    return "secondary"


def planned_contrasts(
    wide: pd.DataFrame,
    factors: dict[str, tuple[str, str]],
    higher_is_better: bool,
    alpha: float,
    confidence: float,
    *,
    scale: str = "raw",
    sesoi_dz: float = 0.5,
    metric: str = "the metric",
) -> list[dict[str, Any]]:
    """K/D1/D2 pooled, within each mixer, and D1/D2 x mixer, from the (n_seeds, n_models) matrix ``wide`` on the
    analysis scale (NaN = missing).

    Each record: name, effect, scope (pooled | within | interaction), mixer, label, weights (variant -> weight),
    n_pairs, estimate, se, df, t, p_value, ci_low, ci_high, d_z, favourable, statement, family (gate | primary |
    secondary), p_holm (within its family), significant, p_equivalence, equivalent, scale, ratio, ratio_ci_low,
    ratio_ci_high (log scale only), effect_text.
    """
    cell = {tuple(v): k for k, v in factors.items()}  # (ffn, mixer) -> variant
    mixers = [m for m in MIXER_LEVELS + ("none",) if any(fm[1] == m for fm in factors.values())]
    sign = 1.0 if higher_is_better else -1.0
    records: list[dict[str, Any]] = []
    for name, effect, hi, lo in CONTRASTS:
        ok = [m for m in mixers if (hi, m) in cell and (lo, m) in cell]
        if not ok:
            continue
        specs: list[tuple[str, str | None, dict[str, float]]] = []
        pooled = {}
        for m in ok:
            pooled[cell[(hi, m)]] = 1.0 / len(ok)
            pooled[cell[(lo, m)]] = -1.0 / len(ok)
        specs.append(("pooled", None if len(ok) > 1 else ok[0], pooled))
        if len(ok) > 1:
            for m in ok:
                specs.append(("within", m, {cell[(hi, m)]: 1.0, cell[(lo, m)]: -1.0}))
            if name != "K":  # K x mixer = D1 x mixer + D2 x mixer: not a separate question
                for m1, m2 in itertools.combinations(ok, 2):
                    w = {cell[(hi, m1)]: 1.0, cell[(lo, m1)]: -1.0, cell[(hi, m2)]: -1.0, cell[(lo, m2)]: 1.0}
                    specs.append(("interaction", f"{m1} - {m2}", w))
        for scope, mixer, weights in specs:
            rec: dict[str, Any] = {"name": name, "effect": effect, "scope": scope, "mixer": mixer}
            rec["label"] = _label(name, effect, hi, lo, scope, mixer, len(ok))
            rec["weights"] = weights
            rec.update(_t_summary(_per_seed(wide, weights), confidence, sesoi_dz))
            if rec["p_equivalence"] is not None:
                rec["equivalent"] = bool(rec["p_equivalence"] < alpha)
            est = rec["estimate"]
            rec["favourable"] = None if not est else bool(sign * est > 0)
            rec["statement"] = _statement(hi, lo, scope, mixer, rec["favourable"])
            rec["family"] = _family(name, scope)
            rec["scale"] = scale
            rec.update(_ratio(rec, scale))
            rec["effect_text"] = _effect_text(rec, hi, lo, metric, confidence)
            records.append(rec)
    for family in ("gate", "primary", "secondary"):
        members = [r for r in records if r["family"] == family]
        for rec, p in zip(members, holm([r["p_value"] for r in members])):
            rec["p_holm"] = p
            rec["significant"] = bool(p is not None and p < alpha)
    return records


def _ratio(rec: dict[str, Any], scale: str) -> dict[str, Any]:
    if scale != "log" or rec["estimate"] is None:
        return {"ratio": None, "ratio_ci_low": None, "ratio_ci_high": None}
    ex = lambda x: None if x is None else float(np.exp(x))  # noqa: E731
    return {
        "ratio": ex(rec["estimate"]),
        "ratio_ci_low": ex(rec["ci_low"]),
        "ratio_ci_high": ex(rec["ci_high"]),
    }


def _effect_text(rec: dict[str, Any], hi: str, lo: str, metric: str, confidence: float) -> str:
    """The estimate in words: a ratio on log scale ("kan's mse is 0.70x bspline's"), a difference otherwise."""
    if rec["estimate"] is None:
        return "not estimable"
    conf = f"{confidence * 100:g}% t CI"
    ci = "" if rec["ci_low"] is None else f" ({conf} {rec['ci_low']:.3g} to {rec['ci_high']:.3g})"
    if rec["scope"] == "interaction":
        if rec["ratio"] is not None:
            rci = (
                ""
                if rec["ratio_ci_low"] is None
                else f" ({conf} {rec['ratio_ci_low']:.3g} to {rec['ratio_ci_high']:.3g})"
            )
            return f"ratio of the {hi}/{lo} ratios ({rec['mixer']}): {rec['ratio']:.3g}{rci}"
        return f"difference of {hi} - {lo} between mixers ({rec['mixer']}): {rec['estimate']:.3g}{ci}"
    if rec["ratio"] is not None:
        rci = (
            ""
            if rec["ratio_ci_low"] is None
            else f" ({conf} {rec['ratio_ci_low']:.3g} to {rec['ratio_ci_high']:.3g})"
        )
        return f"{hi}'s {metric} is {rec['ratio']:.3g}x {lo}'s{rci}"
    return f"{hi} - {lo} = {rec['estimate']:.3g} {metric}{ci}"


def _label(name: str, effect: str, hi: str, lo: str, scope: str, mixer: str | None, n_mixers: int) -> str:
    base = f"{name} {effect} ({hi} - {lo})"
    if scope == "pooled":
        return f"{base}, pooled over mixers" if n_mixers > 1 else f"{base}, {mixer}"
    if scope == "within":
        return f"{base} | {mixer}"
    return f"{base} x mixer ({mixer})"


def _statement(hi: str, lo: str, scope: str, mixer: str | None, favourable: bool | None) -> str:
    if favourable is None:
        return "no difference"
    if scope == "interaction":
        m1, m2 = (mixer or " - ").split(" - ")
        return f"{hi} gains more over {lo} under {m1 if favourable else m2} than under {m2 if favourable else m1}"
    return f"{hi} better than {lo}" if favourable else f"{lo} better than {hi}"


# --------------------------------------------------------------------------------------------------------------
# the verdict
# --------------------------------------------------------------------------------------------------------------
def _oriented(r: dict[str, Any]) -> float:
    fav = r.get("favourable")
    return 0.0 if fav is None else (1.0 if fav else -1.0)


def decide(
    k: dict[str, Any] | None,
    d1: dict[str, Any] | None,
    d2: dict[str, Any] | None,
    alpha: float,
    sesoi_text: str = "the SESOI",
) -> dict[str, Any]:
    """Apply the verdict rule of the module docstring to the gate (K) and primary (D1, D2) contrast records
    (each with p_holm within its family, favourable and equivalent)."""
    if k is None or d1 is None or d2 is None:
        return {
            "verdict": "not estimable",
            "question": QUESTION,
            "kan_vs_mlp": "untestable",
            "headline": "not estimable: needs mlp, bspline and kan variants under a common mixer",
            "detail": "needs mlp, bspline and kan variants under a common mixer",
        }
    p = lambda r: np.nan if r.get("p_holm") is None else float(r["p_holm"])  # noqa: E731
    eq = lambda r: bool(r.get("equivalent"))  # noqa: E731
    verdict, kvm = verdict_codes(
        np.array(p(k)),
        np.array(_oriented(k)),
        np.array(p(d1)),
        np.array(_oriented(d1)),
        np.array(p(d2)),
        np.array(_oriented(d2)),
        np.array(eq(k)),
        np.array(eq(d1)),
        np.array(eq(d2)),
        alpha,
    )
    verdict, kvm = str(verdict), str(kvm)
    if k.get("p_holm") is None:  # too few seeds with kan and mlp, or no variance to test against
        kvm, verdict = "untestable", "not estimable"

    def reading(r: dict[str, Any], what: str) -> str:
        ph = r.get("p_holm")
        ptxt = "untestable" if ph is None else f"p_holm={ph:.3g}"
        sig = ph is not None and ph < alpha
        if sig and r.get("favourable"):
            return f"{what} helps ({r['statement']}, {ptxt})"
        if sig and r.get("favourable") is False:
            return f"{what} hurts ({r['statement']}, {ptxt})"
        if r.get("equivalent"):
            return f"{what} is equivalent to none within +-{sesoi_text} (TOST p={r['p_equivalence']:.3g})"
        return f"no significant effect of {what} ({ptxt})"

    kp = k.get("p_holm")
    ktxt = "untestable" if kp is None else f"p={kp:.3g}"
    first = {
        "better": f"kan beats mlp ({k['statement']}, {ktxt})",
        "worse": f"kan is worse than mlp ({k['statement']}, {ktxt}): no KAN advantage to explain",
        "equivalent": f"kan and mlp are equivalent within +-{sesoi_text} (TOST p={k.get('p_equivalence') or 0:.3g}): "
        "no KAN advantage to explain",
        "not significant": f"kan is not significantly better than mlp ({ktxt})",
        "untestable": f"kan vs mlp is untestable here ({k.get('note') or 'no p-value'})",
    }[kvm]
    second = {
        "both": "due to both the B-spline activation (D1) and the KAN topology (D2)",
        "activation": "due to the B-spline activation (D1), not shown for the topology (D2)",
        "topology": "due to the KAN topology (D2), not shown for the activation (D1)",
        "undetermined": "the split between activation (D1) and topology (D2) is undetermined",
        "neither": "neither the activation nor the topology changes it by more than the SESOI",
        "no KAN advantage": "no KAN advantage to explain" if kvm == "not significant" else "",
        "inconclusive at this power": "nor shown equivalent to it within the SESOI: inconclusive at this power "
        "(no KAN advantage established)",
    }.get(verdict, "")
    headline = first + ("; " + second if second else "")
    parts = [reading(d1, "the B-spline activation"), reading(d2, "the KAN topology")]
    if kvm != "better":
        parts = [f"secondary: {x}" for x in parts]
    return {
        "verdict": verdict,
        "question": QUESTION,
        "kan_vs_mlp": kvm,
        "headline": headline,
        "detail": "; ".join([first] + parts),
    }


def verdict_for_task(
    contrasts: list[dict[str, Any]], mde_dz_family: float | None, sesoi_dz: float, alpha: float
) -> dict[str, Any]:
    """Pooled verdict, per-mixer verdicts (secondary family) and the mixer-dependence notes of one task."""

    def find(name: str, scope: str, mixer: str | None = None) -> dict[str, Any] | None:
        for r in contrasts:
            if r["name"] == name and r["scope"] == scope and (mixer is None or r["mixer"] == mixer):
                return r
        return None

    sesoi = f"{sesoi_dz:g} d_z"
    out = decide(find("K", "pooled"), find("D1", "pooled"), find("D2", "pooled"), alpha, sesoi)
    mixers = [r["mixer"] for r in contrasts if r["scope"] == "within" and r["name"] == "D1"]
    out["by_mixer"] = {
        m: decide(find("K", "within", m), find("D1", "within", m), find("D2", "within", m), alpha, sesoi)[
            "verdict"
        ]
        for m in mixers
    }
    out["mixer_dependent"] = [
        r["label"] for r in contrasts if r["scope"] == "interaction" and r["significant"]
    ]
    out["mde_dz_family"] = mde_dz_family
    out["sesoi_dz"] = sesoi_dz
    out["families"] = {
        f: [r["label"] for r in contrasts if r["family"] == f] for f in ("gate", "primary", "secondary")
    }
    return out
