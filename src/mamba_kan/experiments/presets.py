"""Named grid presets: which variants, tasks, seeds and sizes a ``compare`` runs.

Each preset is an experiment file shipped with the package (``mamba_kan/configs/presets/<name>.yaml``, the format
of :mod:`mamba_kan.experiments.spec` and docs/experiments.md), so ``compare --preset study`` and ``compare
--config path/to/study.yaml`` (a copy of that file) run the same cells.

- ``quick``: all six variants on one representative configuration of each of the five task families, 3 seeds, at
  small sizes (d_model 32, 2 layers, short sequences), sized to finish within 15 minutes on a 2-core CPU.
- ``study``: the six variants on six task configurations chosen because they discriminate (selective copying,
  induction heads with 8x length extrapolation, two small-budget symbolic regressions, the synthetic language, a
  real time series), 10 seeds, sized from a power analysis to finish within 75 minutes with ``--workers 2`` on a
  2-core CPU (docs/study.md).
- ``paper``: the original Mamba_KAN project's full settings for GPUs: 10 seeds, 10000 steps, d_model 128 x 4
  layers, the families' defaults, and every long-context task at paper scale (MQAR at 512 and 2048, selective
  copying at 4096, induction heads trained at 256 and tested up to 16384).

Without ``--preset`` the grid uses the library defaults (``TrainConfig``, ``ModelConfig`` and each family's
documented defaults), so a ``compare`` cell is exactly the ``train`` run with the same flags. Explicit flags
(``--models``, ``--tasks``, ``--seeds``, ``--max-steps``, ``--set``) override whatever the preset says.
"""

from __future__ import annotations

from pathlib import Path

from mamba_kan.errors import unknown_choice
from mamba_kan.experiments.spec import Experiment, load_experiment

#: A preset is an experiment (the name is kept for the callers that predate experiment files).
Preset = Experiment

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "presets"
PRESET_NAMES = ("quick", "study", "paper")


def preset_path(name: str) -> Path:
    """The packaged experiment file of preset ``name``."""
    return PRESET_DIR / f"{name}.yaml"


def _load(name: str) -> Experiment:
    preset = load_experiment(preset_path(name), check=False)  # settings checked when expanded (and by tests)
    if preset.name != name:  # the file's own name is what results and reports show
        raise RuntimeError(f"{preset_path(name)} names itself {preset.name!r}, not {name!r}")
    return preset


QUICK = _load("quick")
STUDY = _load("study")
PAPER = _load("paper")

#: No preset: library defaults for every setting, 3 seeds.
DEFAULT = Preset(
    name="default", description="library defaults (TrainConfig, ModelConfig, task families)", seeds=3
)

PRESETS: dict[str, Preset] = {p.name: p for p in (QUICK, PAPER, STUDY)}


def get_preset(name: str | None) -> Preset:
    """The preset called ``name`` (None = library defaults); unknown names list the valid ones."""
    if name is None:
        return DEFAULT
    if name not in PRESETS:
        raise unknown_choice("preset", name, PRESETS)
    return PRESETS[name]
