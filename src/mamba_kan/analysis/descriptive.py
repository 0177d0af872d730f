"""Cell means with bootstrap confidence intervals.

The interval is the bias-corrected and accelerated (BCa) bootstrap of the mean (Efron 1987; DiCiccio & Efron 1996)
from ``scipy.stats.bootstrap``. With a handful of seeds any bootstrap interval under-covers (it cannot be wider than
the range of the observed values), which the summary states; the t-based contrast intervals do not share this
problem.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import stats


def bootstrap_mean_ci(
    x: np.ndarray, confidence: float, n_resamples: int, rng: np.random.Generator
) -> tuple[float | None, float | None, str]:
    """(low, high, method) of a BCa interval for the mean of x (n,); degenerate inputs handled explicitly."""
    v = np.asarray(x, dtype=float)
    if v.size < 2:
        return None, None, "none (fewer than 2 values)"
    if np.ptp(v) == 0:
        return float(v[0]), float(v[0]), "degenerate (all values equal)"
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap(
                (v,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method=method, rng=rng
            )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(lo) and np.isfinite(hi):
            return lo, hi, method
    return None, None, "failed"


def cell_summary(
    model: str,
    values: np.ndarray,
    factors: tuple[str, str] | None,
    confidence: float,
    n_resamples: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """One variant's record: n, mean, sd, median, min, max and the BCa interval of the mean (NaN values dropped)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    lo, hi, method = bootstrap_mean_ci(v, confidence, n_resamples, rng)
    return {
        "model": model,
        "ffn": factors[0] if factors else None,
        "mixer": factors[1] if factors else None,
        "n": int(v.size),
        "mean": float(v.mean()) if v.size else None,
        "sd": float(v.std(ddof=1)) if v.size > 1 else None,
        "median": float(np.median(v)) if v.size else None,
        "min": float(v.min()) if v.size else None,
        "max": float(v.max()) if v.size else None,
        "ci_low": lo,
        "ci_high": hi,
        "ci_method": method,
    }
