"""The research-question contrasts within one task, and the activation-vs-topology verdict.

Backward-difference contrasts of the 3-level feedforward factor (REFERENCE.md section 6):
  D1 = bspline - mlp   the activation effect (MLP topology held, learnable B-spline activations added);
  D2 = kan - bspline   the topology effect (spline activations held, KAN edge topology instead of MLP nodes).
Each is estimated pooled over the mixers (the mean of the per-mixer differences), within each mixer, and as its
interaction with the mixer (D | mixer_1 - D | mixer_2). Valid only with parameter-matched variants.

Estimation: seeds fix the data, so every contrast is computed per seed from that seed's runs (the seed needs every
variant the contrast uses) and the per-seed values are tested with a one-sample t-test (a paired t-test; the
repeated-measures analysis of a single-df contrast, which needs no sphericity assumption). Estimate = mean of the
per-seed values (with complete data exactly the difference of cell means), CI = estimate +- t_{1-alpha/2, n-1} SE.
All planned contrasts of a task form one Holm family.

Verdict rule (per task, and per mixer with the within-mixer contrasts). A contrast *supports* its explanation when
its Holm-adjusted p < alpha AND its sign favours the KAN-ward level (bspline over mlp for D1, kan over bspline for
D2) in the metric's direction. It *rules its explanation out* when it is significant in the unfavourable direction
(the KAN-ward level is significantly worse), or when it is not significant although the design had the power to see
an effect of ``sesoi_dz`` (default 0.5): the minimum detectable d_z of a paired t-test on the contrast's seeds, at
alpha / (family size) with the given power, is <= ``sesoi_dz``. Then:
  "both"        D1 and D2 support;
  "activation"  only D1 supports;
  "topology"    only D2 supports;
  "neither"     neither supports and both are ruled out;
  "inconclusive at this power"  neither supports and at least one explanation is not ruled out: a non-significant
                contrast in an under-powered design is absence of evidence, not evidence of absence.
The detail sentence names each contrast's reading (helps / hurts / no significant effect) and its p_holm; the
per-task record also lists contrasts whose dependence on the mixer (D x mixer) is significant.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mamba_kan.analysis.data import MIXER_LEVELS
from mamba_kan.analysis.multitest import holm

CONTRASTS: tuple[tuple[str, str, str, str], ...] = (
    ("D1", "activation", "bspline", "mlp"),
    ("D2", "topology", "kan", "bspline"),
)
VERDICTS = ("activation", "topology", "both", "neither", "inconclusive at this power")


def _t_summary(values: np.ndarray, confidence: float) -> dict[str, Any]:
    """One-sample t-test of per-seed contrast values (n,) against 0, with a t confidence interval."""
    v = np.asarray(values, dtype=float)
    n = int(v.size)
    out: dict[str, Any] = {"n_pairs": n, "estimate": float(v.mean()) if n else None}
    out.update(
        {"se": None, "df": None, "t": None, "p_value": None, "ci_low": None, "ci_high": None, "d_z": None}
    )
    if n < 2:
        out["note"] = f"only {n} seed(s) with every variant the contrast needs"
        return out
    sd = float(np.std(v, ddof=1))
    out["df"] = n - 1
    if sd <= 1e-15 * max(1.0, float(np.max(np.abs(v)))):
        out["se"] = 0.0
        out["ci_low"] = out["ci_high"] = out["estimate"]
        if abs(out["estimate"]) <= 1e-15:
            out["p_value"] = 1.0
            out["note"] = "identical results in every seed"
        else:
            out["note"] = "the same non-zero difference in every seed: no variance to test against"
        return out
    se = sd / np.sqrt(n)
    t = out["estimate"] / se
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * se
    out.update(
        {
            "se": float(se),
            "t": float(t),
            "p_value": float(2.0 * stats.t.sf(abs(t), n - 1)),
            "ci_low": out["estimate"] - half,
            "ci_high": out["estimate"] + half,
            "d_z": float(out["estimate"] / sd),
        }
    )
    return out


def _per_seed(wide: pd.DataFrame, weights: dict[str, float]) -> np.ndarray:
    cols = list(weights)
    rows = wide[cols].dropna()
    return rows.to_numpy(float) @ np.array([weights[c] for c in cols])


def planned_contrasts(
    wide: pd.DataFrame,
    factors: dict[str, tuple[str, str]],
    higher_is_better: bool,
    alpha: float,
    confidence: float,
) -> list[dict[str, Any]]:
    """D1/D2 pooled, within each mixer and x mixer, from the (n_seeds, n_models) matrix ``wide`` (NaN = missing).

    Each record: name, effect, scope (pooled | within | interaction), mixer, label, weights (variant -> weight),
    n_pairs, estimate, se, df, t, p_value, ci_low, ci_high, d_z, favourable, statement, p_holm, significant.
    """
    cell = {v: k for k, v in factors.items()}  # (ffn, mixer) -> variant
    mixers = [m for m in MIXER_LEVELS if any(fm[1] == m for fm in factors.values())]
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
            for m1, m2 in itertools.combinations(ok, 2):
                w = {cell[(hi, m1)]: 1.0, cell[(lo, m1)]: -1.0, cell[(hi, m2)]: -1.0, cell[(lo, m2)]: 1.0}
                specs.append(("interaction", f"{m1} - {m2}", w))
        for scope, mixer, weights in specs:
            rec: dict[str, Any] = {"name": name, "effect": effect, "scope": scope, "mixer": mixer}
            rec["label"] = _label(name, effect, hi, lo, scope, mixer, len(ok))
            rec["weights"] = weights
            rec.update(_t_summary(_per_seed(wide, weights), confidence))
            est = rec["estimate"]
            rec["favourable"] = None if not est else bool(sign * est > 0)
            rec["statement"] = _statement(hi, lo, scope, mixer, rec["favourable"])
            records.append(rec)
    for rec, p in zip(records, holm([r["p_value"] for r in records])):
        rec["p_holm"] = p
        rec["significant"] = bool(p is not None and p < alpha)
    return records


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


def decide(
    d1: dict[str, Any] | None,
    d2: dict[str, Any] | None,
    mde_dz_family: float | None,
    sesoi_dz: float,
    alpha: float,
) -> dict[str, Any]:
    """Apply the verdict rule of the module docstring to two contrast records (with p_holm and favourable)."""
    if d1 is None or d2 is None:
        return {
            "verdict": "not estimable",
            "detail": "needs mlp, bspline and kan variants under a common mixer",
        }

    def supports(r: dict[str, Any]) -> bool:
        return bool(r.get("p_holm") is not None and r["p_holm"] < alpha and r.get("favourable"))

    def hurts(r: dict[str, Any]) -> bool:
        return bool(r.get("p_holm") is not None and r["p_holm"] < alpha and r.get("favourable") is False)

    powered = mde_dz_family is not None and mde_dz_family <= sesoi_dz
    s1, s2 = supports(d1), supports(d2)
    if s1 and s2:
        verdict = "both"
    elif s1:
        verdict = "activation"
    elif s2:
        verdict = "topology"
    elif all(hurts(r) or powered for r in (d1, d2)):
        verdict = "neither"
    else:
        verdict = "inconclusive at this power"
    parts = []
    for r, what in ((d1, "the B-spline activation"), (d2, "the KAN topology")):
        p = r.get("p_holm")
        ptxt = "untestable" if p is None else f"p_holm={p:.3g}"
        if supports(r):
            parts.append(f"{what} helps ({r['statement']}, {ptxt})")
        elif hurts(r):
            parts.append(f"{what} hurts ({r['statement']}, {ptxt})")
        else:
            parts.append(f"no significant effect of {what} ({ptxt})")
    if verdict == "inconclusive at this power":
        mde = "undefined" if mde_dz_family is None else f"{mde_dz_family:.3g}"
        parts.append(f"the smallest detectable d_z here is {mde} > {sesoi_dz:g}")
    return {"verdict": verdict, "detail": "; ".join(parts)}


def verdict_for_task(
    contrasts: list[dict[str, Any]], mde_dz_family: float | None, sesoi_dz: float, alpha: float
) -> dict[str, Any]:
    """Pooled verdict, per-mixer verdicts and the mixer-dependence notes from a task's contrast records."""

    def find(name: str, scope: str, mixer: str | None = None) -> dict[str, Any] | None:
        for r in contrasts:
            if r["name"] == name and r["scope"] == scope and (mixer is None or r["mixer"] == mixer):
                return r
        return None

    out = decide(find("D1", "pooled"), find("D2", "pooled"), mde_dz_family, sesoi_dz, alpha)
    mixers = [r["mixer"] for r in contrasts if r["scope"] == "within" and r["name"] == "D1"]
    out["by_mixer"] = {
        m: decide(find("D1", "within", m), find("D2", "within", m), mde_dz_family, sesoi_dz, alpha)["verdict"]
        for m in mixers
    }
    out["mixer_dependent"] = [
        r["label"] for r in contrasts if r["scope"] == "interaction" and r["significant"]
    ]
    out["mde_dz_family"] = mde_dz_family
    out["sesoi_dz"] = sesoi_dz
    return out
