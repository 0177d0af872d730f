"""Rank-based comparison of k variants over N blocks (Demšar 2006, JMLR 7:1-30, sections 3.2.2 and 3.2.3).

Blocks are tasks (across-task analysis) or seeds (within one task). Ranks are 1 = best, in the direction of the
metric, ties get their average rank. Formulas:

- Friedman: chi2_F = 12N / (k(k+1)) [sum_j R_j^2 - k(k+1)^2 / 4] with R_j the average rank of variant j; with ties
  the statistic is divided by 1 - sum(t^3 - t) / (N k (k^2 - 1)) (as scipy.stats.friedmanchisquare does).
- Iman-Davenport: F_F = (N - 1) chi2_F / (N(k - 1) - chi2_F), F-distributed with (k - 1, (k - 1)(N - 1)) df;
  not computable (None, shown "n/a") when every block ranks the variants identically (denominator 0) or N = 1.
- Nemenyi critical difference: CD = q_alpha sqrt(k(k+1) / (6N)), q_alpha = studentized range quantile / sqrt(2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def rank_blocks(matrix: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """(N, k) values -> (N, k) ranks within each row, 1 = best, ties averaged."""
    m = np.asarray(matrix, dtype=float)
    return stats.rankdata(-m if higher_is_better else m, axis=1)


def friedman_from_ranks(avg_ranks: Sequence[float], n_blocks: int) -> dict[str, float]:
    """Friedman chi2_F and Iman-Davenport F_F from average ranks (Demšar 2006, eqs. for chi2_F and F_F); no ties."""
    r = np.asarray(avg_ranks, dtype=float)
    k, n = len(r), int(n_blocks)
    chi2 = 12.0 * n / (k * (k + 1)) * (np.sum(r**2) - k * (k + 1) ** 2 / 4.0)
    return _with_iman_davenport(float(chi2), k, n)


def _with_iman_davenport(chi2: float, k: int, n: int) -> dict[str, float]:
    df1, df2 = k - 1, (k - 1) * (n - 1)
    denom = n * (k - 1) - chi2
    # chi2 reaches N(k-1) when every block ranks identically: F_F is then infinite and the F approximation says
    # nothing (its p-value would be 0 whatever N is); with N = 1 it has no denominator df. Report n/a (None).
    if denom <= 1e-12 or df2 <= 0:
        f_f: float | None = None
        p_f: float | None = None
    else:
        f_f = (n - 1) * chi2 / denom
        p_f = float(stats.f.sf(f_f, df1, df2))
    return {
        "chi2": chi2,
        "df": float(df1),
        "p_value": float(stats.chi2.sf(chi2, df1)),
        "iman_davenport_F": f_f,
        "iman_davenport_df1": float(df1),
        "iman_davenport_df2": float(df2),
        "iman_davenport_p": p_f,
    }


def nemenyi_q(k: int, alpha: float) -> float:
    """Critical value q_alpha of the Nemenyi test: studentized range (k, inf df) quantile / sqrt(2)."""
    return float(stats.studentized_range.ppf(1.0 - alpha, k, np.inf) / np.sqrt(2.0))


def nemenyi_cd(k: int, n_blocks: int, alpha: float) -> tuple[float, float]:
    """(q_alpha, CD) with CD = q_alpha sqrt(k(k+1) / (6N))."""
    q = nemenyi_q(k, alpha)
    return q, q * float(np.sqrt(k * (k + 1) / (6.0 * n_blocks)))


def friedman_test(
    matrix: np.ndarray, models: Sequence[str], higher_is_better: bool, alpha: float
) -> dict[str, Any]:
    """Friedman + Iman-Davenport + Nemenyi CD on an (N blocks, k variants) matrix without missing cells.

    The chi2 statistic includes the tie correction, so it equals scipy.stats.friedmanchisquare (which needs k >= 3;
    this function also covers k = 2, where Friedman reduces to a two-sided sign test with ties split).
    """
    m = np.asarray(matrix, dtype=float)
    n, k = m.shape
    ranks = rank_blocks(m, higher_is_better)
    avg = ranks.mean(axis=0)
    rank_sums = ranks.sum(axis=0)
    ties = 0.0
    for row in ranks:
        _, counts = np.unique(row, return_counts=True)
        ties += float(np.sum(counts**3 - counts))
    correction = 1.0 - ties / (n * k * (k * k - 1))
    raw = 12.0 / (n * k * (k + 1)) * float(np.sum(rank_sums**2)) - 3.0 * n * (k + 1)
    if correction <= 1e-12:  # every block is one big tie: no information about any ordering
        chi2 = 0.0
    else:
        chi2 = raw / correction
    out: dict[str, Any] = {"n_blocks": int(n), "k": int(k)}
    out.update(_with_iman_davenport(float(chi2), k, n))
    q, cd = nemenyi_cd(k, n, alpha)
    avg_ranks = {str(mod): float(r) for mod, r in zip(models, avg)}
    out.update(
        {
            "average_ranks": avg_ranks,
            "nemenyi_q": q,
            "cd": cd,
            "cliques_nemenyi": cliques_from_cd(avg_ranks, cd),
            # Iman-Davenport when it is computable, else the chi2 approximation
            "significant": bool(
                (out["iman_davenport_p"] if out["iman_davenport_p"] is not None else out["p_value"]) < alpha
            ),
        }
    )
    return out


def _maximal_runs(order: Sequence[str], same: Any) -> list[list[str]]:
    """Maximal runs order[i..j] (j > i) whose members are pairwise not different; ``same(a, b) -> bool``."""
    runs: list[tuple[int, int]] = []
    n = len(order)
    for i in range(n):
        j = i
        while j + 1 < n and all(same(order[t], order[j + 1]) for t in range(i, j + 1)):
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in runs):
            runs.append((i, j))
    return [list(order[a : b + 1]) for a, b in runs]


def cliques_from_cd(avg_ranks: dict[str, float], cd: float) -> list[list[str]]:
    """Groups of variants, in rank order, whose average ranks differ by less than CD (the bars of a CD diagram)."""
    order = sorted(avg_ranks, key=lambda m: avg_ranks[m])
    return _maximal_runs(order, lambda a, b: abs(avg_ranks[a] - avg_ranks[b]) < cd)


def cliques_from_pvalues(
    avg_ranks: dict[str, float], p_matrix: dict[str, dict[str, float | None]], alpha: float
) -> list[list[str]]:
    """Groups of variants, in rank order, with no significant pairwise difference (adjusted p >= alpha or untested)."""
    order = sorted(avg_ranks, key=lambda m: avg_ranks[m])

    def same(a: str, b: str) -> bool:
        p = p_matrix.get(a, {}).get(b)
        return p is None or p >= alpha

    return _maximal_runs(order, same)
