"""``mamba-kan export DIR --format csv|parquet|json [--curves] [--output-dir OUT]``."""

from __future__ import annotations

import argparse

from mamba_kan.experiments.export import FORMATS, export_results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory", metavar="DIR", help="comparison directory (holding results.db) or the .db file"
    )
    parser.add_argument("--format", default="csv", help=f"one of {', '.join(FORMATS)} (default csv)")
    parser.add_argument("--curves", action="store_true", help="also write the learning curves (curves.FMT)")
    parser.add_argument("--output-dir", default=None, help="where to write (default DIR/export)")


def run(args: argparse.Namespace) -> int:
    written = export_results(args.directory, args.format, args.output_dir, curves=args.curves)
    for path in written:
        print(path)
    return 0
