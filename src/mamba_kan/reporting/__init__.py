"""Figures, GIF animation and the offline dashboard of a comparison directory.

    from mamba_kan.reporting import generate_report
    report_dir = generate_report("results/quick", formats=("png", "svg"))   # -> results/quick/report

Modules: ``data`` (runs, curves, analysis and the summaries everything shares), ``specs`` (every figure as data:
series, intervals, reference lines, labels, scales, caption, skip reason), ``figures`` and ``interactive`` (the
matplotlib and plotly renderers of those specs), ``fmt`` (the one number formatter), ``splines`` (learned
functions from checkpoints and snapshots), ``animation`` (GIFs), ``tables`` (headline tables and key findings as
Markdown), ``dashboard`` (the self-contained HTML from ``templates/`` and ``static/``), ``report``
(:func:`generate_report`). matplotlib (object API with Agg, no pyplot) and plotly are imported only here, and only
when a report is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["generate_report"]


def generate_report(*args: Any, **kwargs: Any) -> Any:
    """See :func:`mamba_kan.reporting.report.generate_report` (imported on first use: matplotlib and plotly load
    only when a report is built)."""
    from mamba_kan.reporting.report import generate_report as _generate_report

    return _generate_report(*args, **kwargs)
