"""Named grid presets: which variants, tasks, seeds and sizes a ``compare`` runs.

- ``quick``: all six variants on one representative configuration of each of the five task families, 3 seeds, at
  small sizes (d_model 32, 2 layers, short sequences), sized to finish within 15 minutes on a 2-core CPU.
- ``paper``: the original Mamba_KAN project's full settings for GPUs: 10 seeds, 10000 steps, d_model 128 x 4
  layers, the families' full-size defaults, and the long-context task at lengths 2048 and 4096 (two separate task
  labels).

Without ``--preset`` the grid uses the library defaults (``TrainConfig``, ``ModelConfig`` and each family's
documented defaults), so a ``compare`` cell is exactly the ``train`` run with the same flags. Explicit flags
(``--models``, ``--tasks``, ``--seeds``, ``--max-steps``, ``--set``) override whatever the preset says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mamba_kan.design import FAMILY_ORDER, VARIANTS
from mamba_kan.errors import unknown_choice
from mamba_kan.experiments.grid import TaskSpec


@dataclass(frozen=True)
class Preset:
    """``settings``: TrainConfig fields for every cell. ``family_tasks``: what a family name expands to (task
    configurations with option overrides); a family without an entry runs its default configuration."""

    name: str
    description: str
    seeds: int
    settings: Mapping[str, Any] = field(default_factory=dict)
    family_tasks: Mapping[str, tuple[TaskSpec, ...]] = field(default_factory=dict)
    models: tuple[str, ...] = VARIANTS
    families: tuple[str, ...] = FAMILY_ORDER

    def task_specs(self, names: Sequence[str] | None = None) -> list[TaskSpec]:
        """Task entries for ``names`` (families or ``family/config``; None = the preset's families).

        A family name expands to the preset's entries for it; an explicit ``family/config`` keeps the preset's
        option overrides for its family (sizes, lengths) but runs the named configuration.
        """
        from mamba_kan.tasks.registry import parse_task_name

        out: list[TaskSpec] = []
        for name in names if names is not None else self.families:
            family, config = parse_task_name(name)  # unknown names: UserError listing the valid ones
            preset_specs = self.family_tasks.get(family)
            if not preset_specs:
                specs = [TaskSpec(name if "/" in name else family)]
            elif "/" in name:
                specs = [TaskSpec(f"{family}/{config}", s.options) for s in preset_specs]
            else:
                specs = list(preset_specs)
            out.extend(s for s in specs if s not in out)
        return out


# Quick: 90 cells in <= 15 min with 2 workers x 1 thread, i.e. ~15 s per cell including evaluation. Sizes are
# chosen for that budget: one representative configuration per family (the family default, except where noted),
# d_model 32 x 2 layers, 200 steps of batch 16, short sequences. A pipeline check, not a study: it is far too
# small for claims about the architectures.
_QUICK_FUNCTION = {"n_train": 1000, "n_val": 200, "n_test": 500}
QUICK = Preset(
    name="quick",
    description="6 variants x 5 families (one small configuration each) x 3 seeds; ~15 min on a 2-core CPU",
    seeds=3,
    settings={
        # 400 steps: measured 4m50s for 90 cells at 200 steps (2 workers, fresh clone, 2-core CPU), so 400 steps
        # stay inside the 15-minute budget while the language models get clearly below the unigram entropy.
        "max_steps": 400,
        "batch_size": 16,
        "eval_every": 100,
        "eval_batch_size": 256,
        "model_cfg": {"d_model": 32, "n_layers": 2, "n_heads": 4},
    },
    family_tasks={
        "symbolic": (TaskSpec("symbolic/exp_sin", _QUICK_FUNCTION),),
        "special_functions": (TaskSpec("special_functions/jv", _QUICK_FUNCTION),),
        "timeseries": (TaskSpec("timeseries/lorenz", {"context": 64, "horizon": 10, "eval_windows": 64}),),
        "language": (TaskSpec("language/synthetic", {"context": 128, "eval_sequences": 32}),),
        # MQAR keeps Zoology's structure (V > L, 4 pairs <= L) at a size the CPU affords: L 128, V 256, 8 pairs
        "long_context": (
            TaskSpec(
                "long_context/mqar",
                {"seq_len": 128, "vocab_size": 256, "n_pairs": 8, "n_val": 32, "n_test": 64},
            ),
        ),
    },
)

PAPER = Preset(
    name="paper",
    description="the original Mamba_KAN project's full settings for GPUs: 10 seeds, 10000 steps, "
    "d_model 128 x 4 layers, long-context lengths 2048 and 4096",
    seeds=10,
    settings={
        "max_steps": 10000,
        "batch_size": 32,
        "eval_every": 500,
        "model_cfg": {"d_model": 128, "n_layers": 4, "n_heads": 4},
    },
    family_tasks={
        "long_context": (
            TaskSpec("long_context", {"seq_len": 2048}),
            TaskSpec("long_context", {"seq_len": 4096}),
        ),
    },
)

#: No preset: library defaults for every setting, 3 seeds.
DEFAULT = Preset(
    name="default", description="library defaults (TrainConfig, ModelConfig, task families)", seeds=3
)

PRESETS: dict[str, Preset] = {p.name: p for p in (QUICK, PAPER)}


def get_preset(name: str | None) -> Preset:
    """The preset called ``name`` (None = library defaults); unknown names list the valid ones."""
    if name is None:
        return DEFAULT
    if name not in PRESETS:
        raise unknown_choice("preset", name, PRESETS)
    return PRESETS[name]
