"""``mamba-kan collect``: ingest ``runs/*/result.json`` computed elsewhere into a local results database.

    mamba-kan collect /shared/study/runs --output-dir results/study
    mamba-kan collect other_machine_results/ --output-dir results/study --code-version 0.1.0+abcdef123456

The database must be on a local disk (SQLite does not lock reliably on NFS/Lustre); the runs may be anywhere.
"""

from __future__ import annotations

import argparse
import sys

from mamba_kan.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="run directories, a runs/ folder or comparison directories",
    )
    parser.add_argument(
        "--output-dir",
        required=True,
        metavar="DIR",
        help="comparison directory whose results.db receives them",
    )
    parser.add_argument(
        "--code-version",
        metavar="V",
        help="code version the runs were computed with (default: this installation's, as compare uses)",
    )
    parser.add_argument(
        "--replace", action="store_true", help="overwrite cells already recorded as completed (default: keep)"
    )


def run(args: argparse.Namespace) -> int:
    from mamba_kan.experiments.collect import collect_runs

    summary = collect_runs(args.sources, args.output_dir, version=args.code_version, replace=args.replace)
    if summary.found == 0:
        raise UserError(f"no result.json found under {', '.join(args.sources)}")
    for problem in summary.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    print(
        f"collected {summary.recorded} of {summary.found} run(s) into {args.output_dir}/results.db "
        f"({summary.already} already recorded, {len(summary.problems)} skipped)"
    )
    return 1 if summary.problems else 0
