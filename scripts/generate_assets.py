#!/usr/bin/env python
"""Write the README's results assets from a comparison directory: a few PNG figures, the GIF and
``results_tables.md`` (provenance, accuracy and speed tables, key findings, grid status, figure links).

    python scripts/generate_assets.py                      # results/quick -> docs/assets
    python scripts/generate_assets.py results/paper --out docs/assets/paper

A thin shell over :func:`mamba_kan.reporting.report.write_assets`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "dir", nargs="?", default="results/quick", help="comparison directory (default results/quick)"
    )
    parser.add_argument("--out", default="docs/assets", help="asset directory (default docs/assets)")
    parser.add_argument(
        "--link-prefix",
        default=None,
        help="path of the assets as the README links them (default: --out relative to the current directory)",
    )
    parser.add_argument("--dpi", type=int, default=110, help="PNG resolution (default 110: small files)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from mamba_kan.errors import UserError
    from mamba_kan.reporting.report import write_assets

    prefix = args.link_prefix
    if prefix is None:
        prefix = Path(os.path.relpath(Path(args.out).resolve(), Path.cwd())).as_posix()
    try:
        files = write_assets(args.dir, args.out, prefix, dpi=args.dpi)
    except UserError as exc:
        print(f"generate_assets: error: {exc}", file=sys.stderr)
        return 2
    for f in files:
        print(f"wrote {f} ({f.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
