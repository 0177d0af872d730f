"""Training one (variant, task, seed) cell: config, loop, checkpoints, data-parallel support.

from mamba_kan.training import TrainConfig, run_experiment
result = run_experiment(TrainConfig(model="mlp_transformer", task="symbolic", seed=0, max_steps=100), run_dir)

``Trainer`` is the loop's public step API (``step``, ``sync``, ``log_train``, ``evaluate``, ``run``); the record a
run returns is ``mamba_kan.record.RunRecord`` as a dict.
"""

from mamba_kan.training.config import (
    NON_RESULT_KEYS,
    TrainConfig,
    compose_config,
    config_hash,
    load_yaml_config,
    parse_set_overrides,
)
from mamba_kan.training.loop import Trainer, run_experiment

__all__ = [
    "NON_RESULT_KEYS",
    "TrainConfig",
    "Trainer",
    "compose_config",
    "config_hash",
    "load_yaml_config",
    "parse_set_overrides",
    "run_experiment",
]
