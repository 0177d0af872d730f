"""Critical-difference diagram (Demšar 2006, JMLR 7, Fig. 1 and 2) from an analysis' ``cd_diagram`` record.

The axis shows average ranks (1 = best, on the left); each variant hangs from its rank; a thick bar joins variants
that are not significantly different. The groups come either from the Nemenyi critical difference (the CD
interval is drawn above the axis) or, as Benavoli et al. (2016) recommend, from the pairwise Wilcoxon-Holm
p-values. Uses matplotlib's object API (no pyplot global state), so it is safe in a headless report build.
"""

from __future__ import annotations

import math
from typing import Any

from mamba_kan.errors import unknown_choice

GROUPINGS = ("nemenyi", "wilcoxon")


def plot_cd_diagram(cd: dict[str, Any], groups: str = "wilcoxon", title: str | None = None) -> Any:
    """A matplotlib Figure of the CD diagram. ``cd``: ``analysis.to_dict()["across"]["cd_diagram"]`` (or a task's).

    ``groups``: "wilcoxon" (bars from the Holm-adjusted Wilcoxon p-values) or "nemenyi" (bars within CD).
    """
    from matplotlib.figure import Figure

    if groups not in GROUPINGS:
        raise unknown_choice("grouping", groups, GROUPINGS)
    ranks: dict[str, float] = cd["average_ranks"]
    cliques: list[list[str]] = cd["cliques_nemenyi" if groups == "nemenyi" else "cliques_wilcoxon"]
    order = sorted(ranks, key=lambda m: ranks[m])
    k = len(order)
    lo, hi = 1, max(k, math.ceil(max(ranks.values())))
    half = math.ceil(k / 2)
    n_rows = max(half, k - half)
    depth = 0.55 * n_rows + 0.35 * len(cliques) + 0.4
    fig = Figure(figsize=(8.0, 0.9 + 0.45 * depth + (0.3 if title else 0.0)))
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.9 if title else 1.0))
    pad = 0.5 + 0.55 * (hi - lo)  # room for the labels either side of the axis
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(-depth, 1.6)
    ax.axis("off")
    ax.hlines(0, lo, hi, color="black", lw=1)
    for r in range(lo, hi + 1):
        ax.vlines(r, 0, 0.15, color="black", lw=1)
        ax.text(r, 0.25, str(r), ha="center", va="bottom", fontsize=9)
    # best half labelled on the left, worst half on the right, as in Demšar's figures
    for i, m in enumerate(order):
        x = ranks[m]
        left = i < half
        row = i if left else k - 1 - i
        y = -(row + 1) * 0.55 - 0.35 * len(cliques)
        edge = lo - 0.5 if left else hi + 0.5
        ax.plot([x, x, edge], [0, y, y], color="black", lw=0.8)
        ax.text(edge, y, f"{m} ({x:.2f})", ha="right" if left else "left", va="center", fontsize=8)
    for j, group in enumerate(cliques):
        xs = [ranks[m] for m in group]
        y = -0.25 - 0.3 * j
        ax.hlines(y, min(xs) - 0.03, max(xs) + 0.03, color="black", lw=3)
    if groups == "nemenyi" and cd.get("cd") is not None:
        ax.hlines(1.1, lo, lo + cd["cd"], color="black", lw=1)
        ax.vlines([lo, lo + cd["cd"]], 1.0, 1.2, color="black", lw=1)
        ax.text(lo + cd["cd"] / 2, 1.25, f"CD = {cd['cd']:.2f}", ha="center", va="bottom", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
