"""A tiny regression family, ``sine``: y = f(x) + noise on inputs uniform in [-1, 1]^n, one token per variable.

Configurations: ``sin1d`` (f = sin(pi x)) and ``sin2d`` (f = sin(pi x1) cos(pi x2)). The data of a seed are fixed
(train/val/test drawn from their own streams) and training batch ``step`` is a pure function of (seed, step,
batch size), as the Task interface requires, so every variant sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from mamba_kan.errors import UserError
from mamba_kan.io_spec import ContinuousInput, RegressionOutput
from mamba_kan.tasks import Batch, FamilyInfo, Task

FUNCTIONS = {
    "sin1d": (1, lambda x: np.sin(np.pi * x[:, 0]), "sin(pi x) on [-1, 1]"),
    "sin2d": (
        2,
        lambda x: np.sin(np.pi * x[:, 0]) * np.cos(np.pi * x[:, 1]),
        "sin(pi x1) cos(pi x2) on [-1, 1]^2",
    ),
}
OPTIONS: dict[str, Any] = {"n_train": 512, "n_val": 256, "n_test": 256, "noise": 0.0}
SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


class SineTask(Task):
    family = "sine"
    primary_metric = "mse"
    higher_is_better = False

    def __init__(self, config_name: str, seed: int, **options: Any) -> None:
        super().__init__(config_name, seed)
        opts = {**OPTIONS, **options}
        self.noise = float(opts["noise"])
        if self.noise < 0:
            raise UserError(f"sine: noise must be >= 0, got {self.noise}")
        self.n_vars, self.fn, self.formula = FUNCTIONS[config_name]
        self.sizes = {s: int(opts[f"n_{s}"]) for s in SPLIT_STREAM}
        if min(self.sizes.values()) < 1:
            raise UserError(f"sine: n_train, n_val and n_test must be >= 1, got {self.sizes}")
        self.data = {split: self._draw(split) for split in SPLIT_STREAM}

    def _draw(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x (n, n_vars), clean f(x) (n,), noisy targets (n,)), float64, from the split's own stream."""
        rng = np.random.default_rng([self.seed, SPLIT_STREAM[split], self.n_vars])
        x = rng.uniform(-1.0, 1.0, (self.sizes[split], self.n_vars))
        clean = self.fn(x)
        return x, clean, clean + self.noise * rng.standard_normal(clean.shape)

    def _batch(self, split: str, index: np.ndarray) -> Batch:
        x, _, y = self.data[split]
        return Batch(torch.from_numpy(x[index]).float(), torch.from_numpy(y[index]).float().unsqueeze(1))

    @property
    def input_spec(self) -> ContinuousInput:
        return ContinuousInput(max_len=self.n_vars)  # inputs (B, n_vars): one token per variable

    @property
    def output_spec(self) -> RegressionOutput:
        return RegressionOutput(out_dim=1)  # targets (B, 1)

    @property
    def tokens_per_sample(self) -> int:
        return self.n_vars

    def train_batch(self, step: int, batch_size: int) -> Batch:
        index = np.random.default_rng([self.seed, 7, step]).integers(0, self.sizes["train"], batch_size)
        return self._batch("train", index)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        n = self.sizes[split]
        for start in range(0, n, batch_size):
            yield self._batch(split, np.arange(start, min(start + batch_size, n)))

    def compute_reference_values(self, split: str) -> dict[str, float]:
        """``floor``: the realised MSE of the exact f (the noise actually drawn); ``baseline_constant``: the MSE of
        the training-target mean."""
        _, clean, y = self.data[split]
        mean = float(self.data["train"][2].mean())
        return {
            "floor": float(np.mean((y - clean) ** 2)),
            "baseline_constant": float(np.mean((y - mean) ** 2)),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "formula": self.formula,
            "noise": self.noise,
            **self.sizes,
        }


SINE_FAMILY = FamilyInfo(
    name="sine",
    description="y = f(x) + noise on [-1, 1]^n (a plug-in example family)",
    configs=tuple(FUNCTIONS),
    default_config="sin1d",
    factory=lambda config, seed, **options: SineTask(config, seed, **options),
    options=dict(OPTIONS),
    option_help={
        "n_train": "training samples",
        "n_val": "validation samples",
        "n_test": "test samples",
        "noise": "standard deviation of Gaussian noise added to the targets",
    },
    config_help={name: formula for name, (_, _, formula) in FUNCTIONS.items()},
    input_end="continuous (one token per variable)",
    output_end="regression (out_dim 1)",
    primary_metric="mse",
    higher_is_better=False,
    metrics=("mse", "rmse", "mae", "r2", "nmse", "floor", "gap_to_floor", "baseline_constant"),
    floor="realised MSE of the exact function (0 without noise)",
)
