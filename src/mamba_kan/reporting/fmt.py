"""The report's one number formatter (tables, figure labels, tick labels and the dashboard all use it)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def number(x: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits, plain (no ``x10^n``) between 1e-4 and 1e6; integers as
    integers; None/NaN -> 'n/a'."""
    if x is None or isinstance(x, str):
        return "n/a" if x is None else x
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int | np.integer):
        return str(int(x))
    v = float(x)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}g}"


def si(x: Any) -> str:
    """12930 -> '12.9k', 4.2e6 -> '4.2M' (parameters, FLOPs); None/NaN -> 'n/a'."""
    if x is None or not math.isfinite(float(x)):
        return "n/a"
    v = float(x)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


def tick(x: float) -> str:
    """A tick label: plain digits (``60``, ``0.005``, ``1.2k``), never scientific notation."""
    v = float(x)
    if v == 0:
        return "0"
    if abs(v) >= 1e4:
        return si(v)
    return f"{v:.6g}" if abs(v) >= 1e-4 else f"{v:.1e}"
