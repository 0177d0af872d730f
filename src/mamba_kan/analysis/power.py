"""Power of paired comparisons: what the seeds and tasks at hand can and cannot detect.

Paired t-test power (Cohen 1988) through statsmodels' ``TTestPower``: with n pairs, the smallest standardised
effect d_z = mean(diff) / sd(diff) detectable with the given power at level alpha (two-sided). Exact rank tests have
a floor on their p-value that no effect can beat: an exact two-sided Wilcoxon signed-rank test on n pairs cannot go
below 2 / 2^n (all differences of one sign), and an exact Friedman test on N blocks of k variants cannot go below
(k!)^-(N-1) (every block ranks the variants identically).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from statsmodels.stats.power import TTestPower


def min_detectable_dz(n: int, alpha: float, power: float = 0.8) -> float | None:
    """Smallest d_z a two-sided paired t-test on ``n`` pairs detects with ``power`` at ``alpha``; None if n < 2."""
    if n < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' root finder warns on its bracketing for tiny n
        d = TTestPower().solve_power(
            effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided"
        )
    d = float(d if not hasattr(d, "__len__") else d[0])
    return d if math.isfinite(d) and d > 0 else None


def pairs_needed(dz: float, alpha: float, power: float = 0.8) -> int:
    """Pairs (seeds) a two-sided paired t-test needs to detect ``dz`` with ``power`` at ``alpha``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = TTestPower().solve_power(
            effect_size=dz, nobs=None, alpha=alpha, power=power, alternative="two-sided"
        )
    n = float(n if not hasattr(n, "__len__") else n[0])
    return max(2, math.ceil(n - 1e-9))


def min_p_wilcoxon(n: int) -> float | None:
    """Smallest two-sided p-value of the exact Wilcoxon signed-rank test on ``n`` non-zero paired differences."""
    return None if n < 1 else min(1.0, 2.0 / 2**n)


def min_p_friedman(k: int, n_blocks: int) -> float | None:
    """Smallest p-value of the exact Friedman test: k! of the (k!)^N equally likely rankings share one order."""
    if k < 2 or n_blocks < 1:
        return None
    return float(math.exp(-(n_blocks - 1) * math.lgamma(k + 1)))


def power_summary(
    n: int, alpha: float, power: float, target_dz: float, families: dict[str, int], replicates: str = "seeds"
) -> dict[str, Any]:
    """The power facts for paired tests on ``n`` replicates, with Holm families of the given sizes.

    ``mde_dz``: at the nominal alpha. ``mde_dz_family[name]``: at alpha / size, the level the smallest p-value of a
    Holm family must beat. ``needed_for_target``: replicates for ``target_dz`` at the nominal alpha.
    ``min_p_wilcoxon``: the smallest raw exact Wilcoxon p-value; ``min_p_wilcoxon_holm[name]``: the same after Holm.
    """
    min_p = min_p_wilcoxon(n)
    return {
        "replicates": replicates,
        "n": int(n),
        "alpha": alpha,
        "power": power,
        "mde_dz": min_detectable_dz(n, alpha, power),
        "mde_dz_family": {k: min_detectable_dz(n, alpha / max(1, m), power) for k, m in families.items()},
        "family_sizes": dict(families),
        "target_dz": target_dz,
        "needed_for_target": pairs_needed(target_dz, alpha, power),
        "min_p_wilcoxon": min_p,
        "min_p_wilcoxon_holm": {
            k: None if min_p is None else min(1.0, max(1, m) * min_p) for k, m in families.items()
        },
    }
