"""All pairwise variant comparisons, paired by block: Wilcoxon signed-rank with Holm correction and effect sizes.

Following Benavoli, Corani & Mangili (2016, JMLR 17) pairs are compared with the Wilcoxon signed-rank test (not
mean-rank post-hoc tests, whose outcome depends on the other variants in the pool), with Holm's correction over all
k(k-1)/2 pairs. Effect sizes, all on the raw metric (a - b), with the direction stated separately:

- Cohen's d_z = mean(a - b) / sd(a - b) (paired, Cohen 1988 eq. 2.3.5; sd with ddof=1);
- Cliff's delta = P(a_i > b_j) - P(a_i < b_j) over all n^2 pairs (Cliff 1993);
- ``p_a_better``: the fraction of blocks in which a beats b in the metric's direction (ties count one half), the
  paired probability of superiority.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mamba_kan.analysis.multitest import holm


def cohens_dz(diff: np.ndarray) -> float | None:
    """mean / sd of paired differences; None when undefined (n < 2 or every difference equal)."""
    d = np.asarray(diff, dtype=float)
    if d.size < 2:
        return None
    sd = float(np.std(d, ddof=1))
    if sd <= 1e-15 * max(1.0, float(np.max(np.abs(d)))):
        return None
    return float(np.mean(d) / sd)


def cliffs_delta(a: np.ndarray, b: np.ndarray) -> float:
    """P(a_i > b_j) - P(a_i < b_j) over all pairs (i, j)."""
    x = np.asarray(a, dtype=float)[:, None]
    y = np.asarray(b, dtype=float)[None, :]
    return float((np.sum(x > y) - np.sum(x < y)) / (x.size * y.size))


def wilcoxon_paired(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of a - b (scipy defaults: zero differences dropped, exact when n <= 50
    without ties). Returns statistic, p_value (None when no test is possible) and why not."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n_nonzero = int(np.sum(d != 0))
    if d.size < 2:
        return {
            "statistic": None,
            "p_value": None,
            "n_nonzero": n_nonzero,
            "reason": f"only {d.size} pair(s)",
        }
    if n_nonzero == 0:
        # identical results in every block: no evidence of any difference
        return {"statistic": 0.0, "p_value": 1.0, "n_nonzero": 0, "reason": "all paired differences are zero"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.wilcoxon(a, b)
    return {
        "statistic": float(res.statistic),
        "p_value": float(res.pvalue),
        "n_nonzero": n_nonzero,
        "reason": None,
    }


def pairwise_tests(wide: pd.DataFrame, higher_is_better: bool, alpha: float) -> list[dict[str, Any]]:
    """Every pair (a, b) of the columns of ``wide`` ((n_blocks, k), NaN = missing), paired over the blocks where
    both have a value. Holm over the pairs that could be tested. One record per pair, in column order."""
    records: list[dict[str, Any]] = []
    sign = 1.0 if higher_is_better else -1.0
    for a, b in itertools.combinations(list(wide.columns), 2):
        both = wide[[a, b]].dropna()
        x, y = both[a].to_numpy(float), both[b].to_numpy(float)
        diff = x - y
        test = wilcoxon_paired(x, y)
        mean_diff = float(np.mean(diff)) if diff.size else None
        if mean_diff is None or mean_diff == 0:
            better = None
        else:
            better = a if sign * mean_diff > 0 else b
        wins = np.sign(sign * diff)
        records.append(
            {
                "a": str(a),
                "b": str(b),
                "n_pairs": int(diff.size),
                "mean_a": float(np.mean(x)) if x.size else None,
                "mean_b": float(np.mean(y)) if y.size else None,
                "mean_diff": mean_diff,
                "median_diff": float(np.median(diff)) if diff.size else None,
                "statistic": test["statistic"],
                "p_value": test["p_value"],
                "n_nonzero": test["n_nonzero"],
                "d_z": cohens_dz(diff),
                "cliff_delta": cliffs_delta(x, y) if diff.size else None,
                "p_a_better": float(np.mean((wins > 0) + 0.5 * (wins == 0))) if diff.size else None,
                "better": better,
                "note": test["reason"],
            }
        )
    adjusted = holm([r["p_value"] for r in records])
    for r, p in zip(records, adjusted):
        r["p_holm"] = p
        r["significant"] = bool(p is not None and p < alpha)
    return records


def pvalue_matrix(
    models: list[str], records: list[dict[str, Any]], key: str = "p_holm"
) -> dict[str, dict[str, float | None]]:
    """Symmetric {a: {b: p}} from pairwise records (diagonal None), the input of a CD diagram's bars."""
    mat: dict[str, dict[str, float | None]] = {m: {n: None for n in models} for m in models}
    for r in records:
        if r["a"] in mat and r["b"] in mat:
            mat[r["a"]][r["b"]] = r[key]
            mat[r["b"]][r["a"]] = r[key]
    return mat
