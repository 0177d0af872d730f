"""Family-wise error control: Holm's step-down procedure (Holm 1979, Scand. J. Statist. 6:65-70)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, same order as ``pvalues``.

    p_(i) sorted ascending; adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)). Entries that are None or NaN
    (a test that could not be run) are not members of the family: they come back as None and do not count in m.
    """
    p = np.array([np.nan if v is None else float(v) for v in pvalues], dtype=float)
    ok = np.isfinite(p)
    m = int(ok.sum())
    out: list[float | None] = [None] * len(p)
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv, kind="mergesort")
    stepped = np.maximum.accumulate((m - np.arange(m)) * pv[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, stepped)
    for idx, val in zip(np.flatnonzero(ok), adjusted):
        out[int(idx)] = float(val)
    return out
