"""Named grid presets: which variants, tasks, seeds and sizes a ``compare`` runs.

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

        A family name expands to the preset's entries for it; an explicit ``family/config`` runs the preset's
        entries for that configuration, or, when the preset has none, the named configuration with the preset's
        option overrides for its family (sizes, lengths).
        """
        from mamba_kan.tasks.registry import parse_task_name

        out: list[TaskSpec] = []
        for name in names if names is not None else self.families:
            family, config = parse_task_name(name)  # unknown names: UserError listing the valid ones
            preset_specs = self.family_tasks.get(family)
            if not preset_specs:
                specs = [TaskSpec(name if "/" in name else family)]
            elif "/" in name:
                # the preset's own entries for this configuration if it has any (study: induction_heads keeps its
                # lengths), else its family entries' options and sizes applied to the named configuration
                own = [s for s in preset_specs if s.name == f"{family}/{config}"]
                specs = own or [TaskSpec(f"{family}/{config}", s.options, s.settings) for s in preset_specs]
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
    description="the original Mamba_KAN project's full settings for GPUs: 10 seeds, 10000 steps, d_model 128 x 4 "
    "layers, every long-context task at paper scale",
    seeds=10,
    settings={
        "max_steps": 10000,
        "batch_size": 32,
        "eval_every": 500,
        "model_cfg": {"d_model": 128, "n_layers": 4, "n_heads": 4},
    },
    family_tasks={
        # forecasting at the standard context 256 (the family default is the laptop-sized 128)
        "timeseries": (TaskSpec("timeseries", {"context": 256}),),
        # the paper-scale lengths of the three long-context tasks (the family defaults train at 256)
        "long_context": (
            # Zoology's hardest standard setting (Arora et al. 2023): length 512, 64 key-value pairs, vocab 8192
            TaskSpec("long_context/mqar", {"seq_len": 512, "n_pairs": 64}),
            # the original Mamba_KAN project's long-context length
            TaskSpec("long_context/mqar", {"seq_len": 2048, "n_pairs": 64}),
            # Mamba paper §4.1 (Gu & Dao 2023): length 4096, 16 data tokens, vocab 16
            TaskSpec("long_context/selective_copying", {"seq_len": 4096, "n_tokens": 16}),
            # Mamba paper Table 2: trained at 256, tested far longer (here up to 64x = 16384 tokens)
            TaskSpec(
                "long_context/induction_heads",
                {"seq_len": 256, "eval_lengths": [512, 1024, 2048, 4096, 8192, 16384]},
            ),
        ),
    },
)

# Study: the configuration that answers the research question on a 2-core CPU (docs/study.md has the design,
# the pilot, the power analysis and the time measurement). Every task carries its own training budget and model
# size (TaskSpec.settings); the preset's common settings and explicit flags (--max-steps, --set) override them.
# Sizes keep every feedforward width above the fairness floor max(8, d_model / 8).
_STUDY_SEQ = {"d_model": 64, "n_layers": 2, "n_heads": 4}  # ffn widths 13 (kan) .. 256 (mlp)
# small-budget regression (KAN's regime, Liu et al. 2024 §3.1): one layer of width 16, reference MLP width 128,
# a light Mamba block (state 4, expand 1) so the mixer does not eat the budget; kan width 13, ~5.5k parameters
_STUDY_SMALL = {"d_model": 16, "n_layers": 1, "n_heads": 4, "ref_hidden": 128, "d_state": 4, "expand": 1}
_STUDY_FUNCTION = {"n_train": 1000, "n_val": 200, "n_test": 1000}
# Budgets from the time measurement in docs/study.md (CPU seconds per cell; Mamba's scan makes its cells ~2x the
# transformer's and grows with the length, so every sequence task stays at 32-48 tokens): the recall tasks get 400
# steps (they must learn a copy/induction mechanism at all), the language 300, the 512-point real series 200
# (it overfits long before), the small regressions 1000 steps of batch 32 (~30 epochs of the 1000 points).
_RECALL_TRAIN = {"max_steps": 400, "batch_size": 16, "eval_every": 200, "model_cfg": _STUDY_SEQ}
_LANGUAGE_TRAIN = {"max_steps": 300, "batch_size": 16, "eval_every": 150, "model_cfg": _STUDY_SEQ}
_FORECAST_TRAIN = {"max_steps": 200, "batch_size": 16, "eval_every": 100, "model_cfg": _STUDY_SEQ}
_FUNCTION_TRAIN = {"max_steps": 1000, "batch_size": 32, "eval_every": 250, "model_cfg": _STUDY_SMALL}
STUDY = Preset(
    name="study",
    description="6 variants x 6 discriminating task configurations x 10 seeds, sized by a power analysis; "
    "<= 75 min with --workers 2 on a 2-core CPU (docs/study.md)",
    seeds=10,
    settings={"eval_batch_size": 256},
    families=("symbolic", "timeseries", "language", "long_context"),
    family_tasks={
        "symbolic": (
            TaskSpec("symbolic/exp_sin", _STUDY_FUNCTION, _FUNCTION_TRAIN),
            TaskSpec("symbolic/feynman_I.6.20", _STUDY_FUNCTION, _FUNCTION_TRAIN),
        ),
        "timeseries": (TaskSpec("timeseries/elnino", {"context": 48, "horizon": 12}, _FORECAST_TRAIN),),
        "language": (
            TaskSpec("language/synthetic", {"context": 32, "eval_sequences": 128}, _LANGUAGE_TRAIN),
        ),
        "long_context": (
            TaskSpec(
                "long_context/selective_copying",
                {"seq_len": 32, "n_tokens": 4, "n_val": 64, "n_test": 256},
                _RECALL_TRAIN,
            ),
            TaskSpec(
                "long_context/induction_heads",
                {
                    "seq_len": 32,
                    "eval_lengths": [64, 128, 256],
                    "n_val": 64,
                    "n_test": 256,
                    "n_extrapolation": 128,
                },
                _RECALL_TRAIN,
            ),
        ),
    },
)

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
