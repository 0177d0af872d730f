#!/usr/bin/env python
"""Train one variant on one task for one or more seeds (same flags as `mamba-kan train`).

python scripts/run_experiment.py --model mlp_transformer --task symbolic --seeds 1 --max-steps 100 --no-wandb
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from mamba_kan.cli.train import main
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from mamba_kan.cli.train import main

if __name__ == "__main__":
    sys.exit(main(prog="run_experiment.py"))
