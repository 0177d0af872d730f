#!/usr/bin/env python
"""The original Mamba_KAN project's grid script, kept as a thin shell over ``mamba-kan compare`` (same flags):

    python scripts/run_full_comparison.py --tasks symbolic special_functions timeseries language long_context \
        --seeds 10 --max-steps 10000 --output-dir ./results --generate-report
"""

from __future__ import annotations

import sys

from mamba_kan.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
