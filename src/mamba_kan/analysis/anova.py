"""Two-way factorial ANOVA (ffn x mixer) and its rank-based check, the Aligned Rank Transform.

ANOVA: a linear model with sum-to-zero ("effect", deviation) coding of every factor, so that type III sums of
squares test each main effect averaged over the levels of the other factor, which is the meaningful question when
a run is missing and the design is unbalanced. SS_effect = RSS(model without the effect's columns) - RSS(full);
F = (SS_effect / df_effect) / (RSS / df_resid); partial eta^2 = SS_effect / (SS_effect + RSS). Seeds fix the data,
so when every variant shares the seeds the seed enters as an additive block (randomised complete block design),
removing between-seed variation from the error term. This equals ``statsmodels.formula.api.ols(
"value ~ C(ffn, Sum) * C(mixer, Sum) + C(seed, Sum)")`` followed by ``anova_lm(typ=3)``.

ART (Wobbrock, Findlater, Gergle & Higgins 2011, CHI, "The Aligned Rank Transform for nonparametric factorial
analyses using only ANOVA procedures"), implemented here because no maintained Python package has it (R's ARTool is
the reference): for each effect separately (1) residual = y - cell mean over the fixed factors; (2) aligned =
residual + the estimated effect (main effect of A: mean_A - grand mean; interaction: cell mean - mean_A - mean_B +
grand mean), marginal means taken over the observations; (3) rank the aligned values (average ranks for ties);
(4) run the full factorial ANOVA (same block term) on the ranks and read only the row of the aligned effect.
The seed block is not aligned away, as ARTool keeps the subject in its error model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def sum_code(codes: np.ndarray, n_levels: int) -> np.ndarray:
    """(n,) level codes 0..L-1 -> (n, L-1) sum-to-zero coding: level j < L-1 is e_j, the last level is -1."""
    x = np.zeros((len(codes), max(n_levels - 1, 0)))
    for j in range(n_levels - 1):
        x[codes == j, j] = 1.0
    x[codes == n_levels - 1, :] = -1.0
    return x


def _codes(labels: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    levels = list(dict.fromkeys(labels))  # order of first appearance
    index = {v: i for i, v in enumerate(levels)}
    return np.array([index[v] for v in labels], dtype=int), levels


def factorial_design(
    a: Sequence[Any],
    b: Sequence[Any],
    block: Sequence[Any] | None = None,
    names: tuple[str, str] = ("ffn", "mixer"),
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Design matrix (n, p) with an intercept, both factors, their interaction and an optional block, all sum-coded.

    Returns (X, effects) where ``effects`` maps each effect name to its column indices. A factor with one level
    contributes no columns (and no interaction).
    """
    n = len(a)
    ca, la = _codes(a)
    cb, lb = _codes(b)
    blocks = [np.ones((n, 1))]
    effects: dict[str, np.ndarray] = {}
    col = 1

    def add(name: str, cols: np.ndarray) -> None:
        nonlocal col
        if cols.shape[1] == 0:
            return
        blocks.append(cols)
        effects[name] = np.arange(col, col + cols.shape[1])
        col += cols.shape[1]

    xa, xb = sum_code(ca, len(la)), sum_code(cb, len(lb))
    add(names[0], xa)
    add(names[1], xb)
    if xa.shape[1] and xb.shape[1]:
        add(f"{names[0]} x {names[1]}", np.einsum("ni,nj->nij", xa, xb).reshape(n, -1))
    if block is not None:
        cs, ls = _codes(block)
        add("seed", sum_code(cs, len(ls)))
    return np.hstack(blocks), effects


def _fit_rss(y: np.ndarray, x: np.ndarray) -> tuple[float, int, np.ndarray]:
    beta, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    return float(resid @ resid), int(rank), resid


def anova_type3(y: np.ndarray, x: np.ndarray, effects: dict[str, np.ndarray]) -> dict[str, Any]:
    """Type III ANOVA table of ``effects`` for y (n,) on design x (n, p). Effects whose df or the residual df are 0
    get F and p None. Returns table rows, residual SS/df and the residuals (n,) of the full model."""
    y = np.asarray(y, dtype=float)
    rss, rank, resid = _fit_rss(y, x)
    df_resid = len(y) - rank
    ms_resid = rss / df_resid if df_resid > 0 else None
    rows = []
    for name, cols in effects.items():
        keep = np.setdiff1d(np.arange(x.shape[1]), cols)
        rss_red, rank_red, _ = _fit_rss(y, x[:, keep])
        ss = max(rss_red - rss, 0.0)
        df = rank - rank_red
        f = p = None
        if df > 0 and ms_resid is not None and ms_resid > 0:
            f = (ss / df) / ms_resid
            p = float(stats.f.sf(f, df, df_resid))
        elif (
            df > 0 and ms_resid == 0 and ss > 0
        ):  # an exact fit: the effect is infinitely larger than the noise
            f, p = float("inf"), 0.0
        eta = ss / (ss + rss) if (ss + rss) > 0 else None
        rows.append({"effect": name, "ss": ss, "df": int(df), "F": f, "p_value": p, "partial_eta_sq": eta})
    return {
        "table": rows,
        "ss_resid": rss,
        "df_resid": int(df_resid),
        "ms_resid": ms_resid,
        "residuals": resid,
    }


def two_way_anova(
    y: Sequence[float],
    a: Sequence[Any],
    b: Sequence[Any],
    block: Sequence[Any] | None = None,
    names: tuple[str, str] = ("ffn", "mixer"),
) -> dict[str, Any]:
    """Type III two-way ANOVA with interaction and optional additive block (see module docstring)."""
    x, effects = factorial_design(a, b, block, names)
    out = anova_type3(np.asarray(y, dtype=float), x, effects)
    terms = f"C({names[0]}, Sum) * C({names[1]}, Sum)" + (" + C(seed, Sum)" if block is not None else "")
    out["formula"] = f"value ~ {terms}"
    out["n"] = len(y)
    return out


def art_anova(
    y: Sequence[float],
    a: Sequence[Any],
    b: Sequence[Any],
    block: Sequence[Any] | None = None,
    names: tuple[str, str] = ("ffn", "mixer"),
) -> dict[str, Any]:
    """Aligned Rank Transform ANOVA (Wobbrock et al. 2011): one aligned-and-ranked ANOVA per effect."""
    y = np.asarray(y, dtype=float)
    ca, la = _codes(a)
    cb, lb = _codes(b)
    grand = y.mean()
    mean_a = np.array([y[ca == i].mean() for i in range(len(la))])
    mean_b = np.array([y[cb == j].mean() for j in range(len(lb))])
    cell = np.zeros((len(la), len(lb)))
    for i in range(len(la)):
        for j in range(len(lb)):
            sel = (ca == i) & (cb == j)
            cell[i, j] = y[sel].mean() if sel.any() else np.nan
    residual = y - cell[ca, cb]
    estimated = {
        names[0]: mean_a[ca] - grand,
        names[1]: mean_b[cb] - grand,
        f"{names[0]} x {names[1]}": cell[ca, cb] - mean_a[ca] - mean_b[cb] + grand,
    }
    x, effects = factorial_design(a, b, block, names)
    rows = []
    for name in effects:
        if name not in estimated:
            continue  # the block is a nuisance term, not an effect of interest
        ranks = stats.rankdata(residual + estimated[name])
        res = anova_type3(ranks, x, effects)
        row = next(r for r in res["table"] if r["effect"] == name)
        rows.append({**row, "df_resid": res["df_resid"]})
    return {
        "table": rows,
        "method": "aligned rank transform (Wobbrock et al. 2011), type III ANOVA on aligned ranks",
    }


def assumption_checks(residuals: np.ndarray, groups: Sequence[np.ndarray], alpha: float) -> dict[str, Any]:
    """Shapiro-Wilk on the model residuals and Levene (median-centred, Brown-Forsythe) across the cells.

    Both have little power with few seeds: a non-significant result is weak reassurance, which is why the ART
    result is reported beside the ANOVA.
    """
    out: dict[str, Any] = {}
    r = np.asarray(residuals, dtype=float)
    if r.size >= 3 and np.ptp(r) > 1e-12 * max(1.0, float(np.max(np.abs(r)))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w, p = stats.shapiro(r)
        out["shapiro"] = {"W": float(w), "p_value": float(p), "n": int(r.size), "ok": bool(p >= alpha)}
    else:
        out["shapiro"] = {
            "W": None,
            "p_value": None,
            "n": int(r.size),
            "ok": None,
            "note": "too few or constant residuals",
        }
    # with 2 values per cell both absolute deviations from the median are equal, so Levene's F degenerates
    usable = [np.asarray(g, dtype=float) for g in groups if len(g) >= 3]
    if len(usable) >= 2 and any(np.ptp(g) > 0 for g in usable):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stat, p = stats.levene(*usable, center="median")
        out["levene"] = {"W": float(stat), "p_value": float(p), "groups": len(usable), "ok": bool(p >= alpha)}
    else:
        out["levene"] = {
            "W": None,
            "p_value": None,
            "groups": len(usable),
            "ok": None,
            "note": "needs 3 or more replicates per cell",
        }
    return out
