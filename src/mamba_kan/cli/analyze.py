"""``mamba-kan analyze DIR``: the statistical analysis of a comparison directory.

Prints a readable summary (or, with ``--json``, the full machine-readable result) and optionally writes LaTeX
booktabs and Markdown tables. DIR may also be the ``results.db`` itself or a tidy csv/parquet/json export.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dir", metavar="DIR", help="comparison directory holding results.db (or the .db / a tidy export)"
    )
    parser.add_argument(
        "--metric", default=None, help="metric to analyse (default: each task's primary metric)"
    )
    parser.add_argument(
        "--alpha", type=float, default=0.05, help="family-wise significance level (default 0.05)"
    )
    parser.add_argument(
        "--direction",
        choices=("higher", "lower"),
        default=None,
        help="whether higher or lower --metric values are better (default: from the results / the metric name)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the full result as JSON instead of the summary"
    )
    parser.add_argument(
        "--latex", metavar="FILE", type=Path, default=None, help="write LaTeX (booktabs) tables"
    )
    parser.add_argument("--markdown", metavar="FILE", type=Path, default=None, help="write Markdown tables")
    parser.add_argument(
        "--n-bootstrap", type=int, default=9999, help="bootstrap resamples for the BCa intervals"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed of the bootstrap (results are reproducible)"
    )
    parser.add_argument(
        "--sesoi",
        type=float,
        default=0.5,
        help="smallest effect of interest (d_z) for the 'neither' vs 'inconclusive' verdict (default 0.5)",
    )
    parser.add_argument(
        "--target-dz",
        type=float,
        default=0.5,
        help="effect size (d_z) for which the seeds needed are reported",
    )


def run(args: argparse.Namespace) -> int:
    from mamba_kan.analysis import analyze_directory, format_summary, to_latex, to_markdown
    from mamba_kan.cli.common import check_writable_file

    # before the analysis (which may take minutes): a bad output path must not cost the whole run
    for flag, target in (("--latex", args.latex), ("--markdown", args.markdown)):
        if target is not None:
            check_writable_file(target, flag)
    higher = None if args.direction is None else args.direction == "higher"
    analysis = analyze_directory(
        args.dir,
        alpha=args.alpha,
        metric=args.metric,
        higher_is_better=higher,
        n_bootstrap=args.n_bootstrap,
        random_state=args.seed,
        sesoi_dz=args.sesoi,
        target_dz=args.target_dz,
    )
    if args.json:
        sys.stdout.write(analysis.to_json() + "\n")
    else:
        sys.stdout.write(format_summary(analysis))
    if args.latex is not None:
        args.latex.write_text(to_latex(analysis))
        log.info("wrote LaTeX tables to %s", args.latex)
    if args.markdown is not None:
        args.markdown.write_text(to_markdown(analysis))
        log.info("wrote Markdown tables to %s", args.markdown)
    return 0
