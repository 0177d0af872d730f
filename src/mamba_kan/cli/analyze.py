"""``mamba-kan analyze DIR``: the statistical analysis of a comparison directory.

Prints a readable summary (or, with ``--json``, the full machine-readable result) and optionally writes LaTeX
booktabs and Markdown tables. DIR may also be the ``results.db`` itself or a tidy csv/parquet/json export.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mamba_kan.errors import UserError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dir", metavar="DIR", help="comparison directory holding results.db (or the .db / a tidy export)"
    )
    parser.add_argument(
        "--metric", default=None, help="metric to analyse (default: each task's primary metric)"
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise significance level")
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
        help="smallest effect of interest: the equivalence (TOST) bound, d_z per task, run-noise sds across tasks",
    )
    parser.add_argument(
        "--scale",
        choices=("auto", "raw", "log"),
        default="auto",
        help="scale of the factorial statistics: auto = log for MSE-type metrics (mse, rmse, mae, mase, "
        "gap_to_floor; effects as ratios), raw otherwise",
    )
    parser.add_argument(
        "--interval",
        choices=("t", "bca"),
        default="t",
        help="interval of cell means: t (keeps its coverage with few seeds) or bca (bootstrap)",
    )
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="analyse only the runs whose setting KEY has this value (repeatable; dotted keys such as "
        "model_cfg.d_model or task_options.context; VALUE read as YAML, so lr=1e-3 matches 0.001)",
    )
    parser.add_argument(
        "--tune",
        action="append",
        default=[],
        metavar="KEY",
        help="per task and variant, keep the value of setting KEY with the best mean validation metric over "
        "seeds and analyse its test metric (repeatable: the best combination); runs that differ in a setting "
        "neither --where nor --tune selects are refused, not averaged",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="instead of the analysis, simulate grids shaped like DIR's and report the verdicts' false-claim "
        "rates, power at the SESOI and interval coverage",
    )
    parser.add_argument(
        "--n-sims", type=int, default=1000, help="simulated grids per scenario for --calibrate"
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
    from mamba_kan.analysis.configs import parse_where

    where = parse_where(getattr(args, "where", None) or [])  # a malformed KEY=VALUE fails before any reading
    if getattr(args, "calibrate", False):
        return _calibrate(args, higher, where)
    analysis = analyze_directory(
        args.dir,
        alpha=args.alpha,
        metric=args.metric,
        higher_is_better=higher,
        n_bootstrap=args.n_bootstrap,
        random_state=args.seed,
        sesoi_dz=args.sesoi,
        target_dz=args.target_dz,
        scale=args.scale,
        interval=args.interval,
        where=where,
        tune=getattr(args, "tune", None) or [],
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


def _calibrate(args: argparse.Namespace, higher: bool | None, where: dict) -> int:
    """``--calibrate``: the calibration table (or its JSON) for a grid shaped like DIR's."""
    import json

    from mamba_kan.analysis.calibration import calibrate, format_calibration, shape_from_tasks
    from mamba_kan.analysis.configs import select_configurations
    from mamba_kan.analysis.data import build_task_data, normalise_frame, read_results_path

    if not (0.0 < args.alpha < 1.0):
        raise UserError(f"alpha must be a number strictly between 0 and 1, got {args.alpha!r}")
    if not args.sesoi > 0:
        raise UserError(f"sesoi must be > 0, got {args.sesoi!r}")
    tidy = normalise_frame(read_results_path(args.dir))
    tidy, _, _ = select_configurations(tidy, where, getattr(args, "tune", None) or [])  # the grid analysed
    tasks, _ = build_task_data(tidy, args.metric, higher, args.scale)
    result = calibrate(
        shape_from_tasks(tasks), n_sims=args.n_sims, alpha=args.alpha, sesoi_dz=args.sesoi, seed=args.seed
    )
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(format_calibration(result))
    if args.markdown is not None:
        args.markdown.write_text(format_calibration(result))
    return 0
