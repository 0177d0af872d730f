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
The seed block is not aligned away, as ARTool keeps the subject in its error model. As in ARTool
(``art(rank.comparison.digits = -floor(log10(sqrt(.Machine$double.eps))))``, i.e. 8), aligned values are rounded to
8 decimals before ranking, so that values equal in exact arithmetic tie despite floating-point noise (checked
against ARTool's F values on the Higgins, Blair & Tashtoush 1990 data it ships).

Rounding noise: an ANOVA whose residuals are all rounding error (every variant gives the same value within each
seed) has a residual mean square of ~1e-32 and F = noise / noise. A sum of squares at or below
n (1e-10 max|y|)^2 is treated as exactly zero: effects of that size get SS 0, and a residual of that size makes
every F undefined (None) rather than infinite, with ``residual_is_rounding_noise`` set.

Repeated measures (:func:`rm_anova`): with seed as the subject, each effect is tested against its own effect x seed
interaction (the univariate repeated-measures ANOVA, e.g. Maxwell & Delaney 2004, ch. 12), with the
Greenhouse-Geisser (1959) epsilon for effects with more than one df. The pooled-error ANOVA above tests every effect
against one seed x treatment error; both are reported, and the contrasts (single df, paired) need no sphericity.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

#: Decimals aligned values are rounded to before ranking (ARTool's ``rank.comparison.digits`` default).
RANK_DIGITS = 8


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


def rounding_tolerance(y: np.ndarray) -> float:
    """Sums of squares at or below this are floating-point noise: n (1e-10 max|y|)^2."""
    y = np.asarray(y, dtype=float)
    return float(y.size * (1e-10 * float(np.max(np.abs(y))) if y.size else 0.0) ** 2)


def anova_type3(y: np.ndarray, x: np.ndarray, effects: dict[str, np.ndarray]) -> dict[str, Any]:
    """Type III ANOVA table of ``effects`` for y (n,) on design x (n, p). Effects whose df or the residual df are 0,
    and every effect when the residual is rounding noise, get F and p None. Returns table rows, residual SS/df,
    ``residual_is_rounding_noise`` and the residuals (n,) of the full model."""
    y = np.asarray(y, dtype=float)
    tol = rounding_tolerance(y)
    rss, rank, resid = _fit_rss(y, x)
    noise = rss <= tol
    if noise:
        rss = 0.0
    df_resid = len(y) - rank
    ms_resid = rss / df_resid if df_resid > 0 else None
    rows = []
    for name, cols in effects.items():
        keep = np.setdiff1d(np.arange(x.shape[1]), cols)
        rss_red, rank_red, _ = _fit_rss(y, x[:, keep])
        ss = max(rss_red - rss, 0.0)
        ss = 0.0 if ss <= tol else ss
        df = rank - rank_red
        f = p = None
        if df > 0 and ms_resid is not None and ms_resid > 0:
            f = (ss / df) / ms_resid
            p = float(stats.f.sf(f, df, df_resid))
        eta = ss / (ss + rss) if (ss + rss) > 0 else None
        rows.append({"effect": name, "ss": ss, "df": int(df), "F": f, "p_value": p, "partial_eta_sq": eta})
    return {
        "table": rows,
        "ss_resid": rss,
        "df_resid": int(df_resid),
        "ms_resid": ms_resid,
        "residual_is_rounding_noise": bool(noise),
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
        ranks = stats.rankdata(np.round(residual + estimated[name], RANK_DIGITS))
        res = anova_type3(ranks, x, effects)
        row = next(r for r in res["table"] if r["effect"] == name)
        rows.append({**row, "df_resid": res["df_resid"]})
    return {
        "table": rows,
        "method": "aligned rank transform (Wobbrock et al. 2011), type III ANOVA on aligned ranks",
    }


def _helmert(k: int) -> np.ndarray:
    """(k - 1, k) orthonormal contrasts (rows orthogonal to the constant and to each other)."""
    h = np.zeros((k - 1, k))
    for i in range(1, k):
        h[i - 1, :i] = 1.0
        h[i - 1, i] = -float(i)
        h[i - 1] /= np.linalg.norm(h[i - 1])
    return h


def gg_epsilon(scores: np.ndarray) -> float:
    """Greenhouse-Geisser epsilon from (n_subjects, q) orthonormally transformed scores: tr(S)^2 / (q tr(S^2))."""
    if scores.shape[1] <= 1:
        return 1.0
    cov = np.cov(scores, rowvar=False)
    den = scores.shape[1] * float(np.trace(cov @ cov))
    return float(np.trace(cov) ** 2 / den) if den > 0 else 1.0


def rm_anova(cube: np.ndarray, names: tuple[str, str] = ("ffn", "mixer")) -> dict[str, Any]:
    """Two-way repeated-measures ANOVA with the seed as subject: cube (n_subjects, a, b) of complete data.

    Each effect E is tested against E x subject: F = (SS_E / df_E) / (SS_{E x S} / (df_E (n - 1))); with more
    than one df also the Greenhouse-Geisser corrected p (both df scaled by epsilon). Sums of squares at or below
    the rounding tolerance count as zero; a zero error term leaves F and p None."""
    y = np.asarray(cube, dtype=float)
    n, a, b = y.shape
    tol = rounding_tolerance(y)
    g = y.mean()
    m_sa, m_sb, m_ab = y.mean(axis=2), y.mean(axis=1), y.mean(axis=0)
    m_s, m_a, m_b = y.mean(axis=(1, 2)), y.mean(axis=(0, 2)), y.mean(axis=(0, 1))
    parts = {
        names[0]: (
            n * b * np.sum((m_a - g) ** 2),
            b * np.sum((m_sa - m_s[:, None] - m_a[None, :] + g) ** 2),
            a - 1,
            m_sa @ _helmert(a).T if a > 1 else np.zeros((n, 0)),
        ),
        names[1]: (
            n * a * np.sum((m_b - g) ** 2),
            a * np.sum((m_sb - m_s[:, None] - m_b[None, :] + g) ** 2),
            b - 1,
            m_sb @ _helmert(b).T if b > 1 else np.zeros((n, 0)),
        ),
        f"{names[0]} x {names[1]}": (
            n * np.sum((m_ab - m_a[:, None] - m_b[None, :] + g) ** 2),
            np.sum(
                (
                    y
                    - m_sa[:, :, None]
                    - m_sb[:, None, :]
                    - m_ab[None]
                    + m_s[:, None, None]
                    + m_a[None, :, None]
                    + m_b[None, None, :]
                    - g
                )
                ** 2
            ),
            (a - 1) * (b - 1),
            y.reshape(n, -1) @ np.kron(_helmert(a), _helmert(b)).T if a > 1 and b > 1 else np.zeros((n, 0)),
        ),
    }
    rows = []
    for effect, (ss, ss_err, df, scores) in parts.items():
        if df == 0:
            continue
        ss = 0.0 if ss <= tol else float(ss)
        ss_err = 0.0 if ss_err <= tol else float(ss_err)
        df_err = df * (n - 1)
        row: dict[str, Any] = {
            "effect": effect,
            "ss": ss,
            "df": int(df),
            "ss_error": ss_err,
            "df_error": int(df_err),
            "F": None,
            "p_value": None,
            "epsilon_gg": None,
            "p_gg": None,
            "partial_eta_sq": ss / (ss + ss_err) if ss + ss_err > 0 else None,
        }
        if df_err > 0 and ss_err > 0:
            f = (ss / df) / (ss_err / df_err)
            eps = gg_epsilon(scores) if df > 1 else 1.0
            row.update(
                {
                    "F": float(f),
                    "p_value": float(stats.f.sf(f, df, df_err)),
                    "epsilon_gg": eps,
                    "p_gg": float(stats.f.sf(f, eps * df, eps * df_err)),
                }
            )
        rows.append(row)
    return {
        "method": "repeated measures (seed as subject), each effect against its effect x seed error; "
        "Greenhouse-Geisser p for effects with > 1 df",
        "n_subjects": int(n),
        "table": rows,
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
