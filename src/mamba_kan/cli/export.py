"""``mamba-kan export DIR --format csv|parquet|json [--curves] [--output-dir OUT]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mamba_kan.choices import EXPORT_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory", metavar="DIR", help="comparison directory (holding results.db) or the .db file"
    )
    parser.add_argument("--format", default="csv", choices=EXPORT_FORMATS, help="file format of the tables")
    parser.add_argument("--curves", action="store_true", help="also write the learning curves (curves.FMT)")
    parser.add_argument(
        "--output-dir", default=None, metavar="DIR", help="where to write (default: DIR/export)"
    )


def run(args: argparse.Namespace) -> int:
    from mamba_kan.cli.common import check_writable_dir
    from mamba_kan.experiments.export import export_results

    src = Path(args.directory)
    out_dir = Path(args.output_dir) if args.output_dir is not None else (
        src.parent if src.suffix == ".db" else src) / "export"  # fmt: skip
    if src.exists():  # a missing source is the store's error to report
        check_writable_dir(out_dir, "export directory")
    written = export_results(args.directory, args.format, out_dir, curves=args.curves)
    for path in written:
        print(path)
    return 0
