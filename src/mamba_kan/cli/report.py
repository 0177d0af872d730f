"""``mamba-kan report DIR``: figures, GIF, tables and the offline dashboard of a comparison directory.

    mamba-kan report results/quick
    mamba-kan report results/quick --out paper/figs --format png,svg,pdf

The statistics are computed with the analysis' defaults (as ``mamba-kan analyze DIR``); a directory with too few
runs for them still gets every descriptive figure and the dashboard.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mamba_kan.choices import FIGURE_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="comparison directory (holding results.db)")
    parser.add_argument(
        "--out", metavar="DIR", default=None, help="where to write the report (default: DIR/report)"
    )
    parser.add_argument(
        "--format",
        default="png",
        metavar="FMT[,FMT]",
        help=f"static figure formats, comma-separated, of {', '.join(FIGURE_FORMATS)} (png for screens, "
        "svg and pdf for papers)",
    )
    parser.add_argument("--dpi", type=int, default=150, help="resolution of PNG figures")
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="report only the runs whose setting KEY has this value, as analyze --where (repeatable)",
    )
    parser.add_argument(
        "--tune",
        action="append",
        default=[],
        metavar="KEY",
        help="per task and variant, report the value of setting KEY with the best mean validation metric, as "
        "analyze --tune (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    from mamba_kan.errors import UserError
    from mamba_kan.reporting.report import generate_report, parse_formats

    formats = parse_formats(args.format)  # bad formats fail before any work
    if args.dpi < 30 or args.dpi > 1200:
        raise UserError(f"--dpi must be between 30 and 1200, got {args.dpi}")
    from mamba_kan.analysis.configs import parse_where

    where = parse_where(args.where)  # a malformed KEY=VALUE fails before any reading
    out = generate_report(args.dir, args.out, formats, dpi=args.dpi, where=where, tune=args.tune)
    manifest = json.loads((out / "manifest.json").read_text())
    n_files = sum(len(f["files"]) for f in manifest["figures"])
    print(f"figures:   {len(manifest['figures'])} ({n_files} files) in {out / 'figures'}")
    if manifest.get("animation"):
        print(f"animation: {out / manifest['animation']['file']}")
    for s in manifest["skipped"]:
        print(f"skipped:   {s['figure']}: {s['reason']}")
    print(f"tables:    {out / 'tables.md'}")
    print(f"dashboard: {Path(out / 'dashboard.html').resolve()}")
    return 0
