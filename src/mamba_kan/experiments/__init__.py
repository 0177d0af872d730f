"""The comparison grid: expansion into cells, presets, the sweep driver with local and Ray backends, the SQLite
results store and export.

    from mamba_kan.experiments import QUICK, expand_grid, run_sweep, read_tidy
    cells = expand_grid(QUICK.models, QUICK.task_specs(), range(QUICK.seeds), QUICK.settings)
    run_sweep(cells, "results/quick")          # re-running skips recorded cells, resumes interrupted ones
    df = read_tidy("results/quick")            # one row per run x metric

Modules: ``grid`` (cells and cell keys), ``presets`` (quick, paper), ``runner`` (the driver, the only writer of
the database), ``backends`` (process pool, Ray), ``worker`` (one cell), ``store`` (schema and readers),
``export`` (csv/parquet/json).
"""

from typing import TYPE_CHECKING, Any

from mamba_kan.experiments.grid import Cell, TaskSpec, code_version, expand_grid, parse_seeds
from mamba_kan.experiments.presets import PAPER, PRESETS, QUICK, Preset, get_preset

if TYPE_CHECKING:
    from mamba_kan.experiments.runner import SweepOptions, SweepSummary, run_sweep
    from mamba_kan.experiments.store import (
        RESULTS_DB,
        SCHEMA_VERSION,
        ResultsStore,
        read_curves,
        read_runs,
        read_tidy,
    )

# The pandas-backed names load on first use (PEP 562), so the grid and the presets (what the command line's
# parsers need) import without pandas.
_LAZY = {
    **dict.fromkeys(("SweepOptions", "SweepSummary", "run_sweep"), "mamba_kan.experiments.runner"),
    **dict.fromkeys(
        ("RESULTS_DB", "SCHEMA_VERSION", "ResultsStore", "read_curves", "read_runs", "read_tidy"),
        "mamba_kan.experiments.store",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PAPER",
    "PRESETS",
    "QUICK",
    "RESULTS_DB",
    "SCHEMA_VERSION",
    "Cell",
    "Preset",
    "ResultsStore",
    "SweepOptions",
    "SweepSummary",
    "TaskSpec",
    "code_version",
    "expand_grid",
    "get_preset",
    "parse_seeds",
    "read_curves",
    "read_runs",
    "read_tidy",
    "run_sweep",
]
