"""Regression on a known function of a few real inputs: the shared machinery of ``symbolic`` and
``special_functions``.

Data (KAN paper §3, Liu et al. 2024): inputs drawn uniformly from the stated box, targets = f(inputs), 1000 train /
1000 test by default; a validation set (default 500) is drawn from its own stream. The training set is a fixed
dataset: epoch ``e`` visits it in a permutation drawn from (seed, e), and ``train_batch(step, B)`` takes positions
``step*B .. step*B+B-1`` of the concatenated epochs, so the batch order is fixed by the seed alone.

Model view: ``ContinuousInput(max_len=n_vars)`` -- each variable is one token -- and ``RegressionOutput(1)``.
Inputs are mapped affinely from their range to [-1, 1] by default (``scale_inputs``; a bijection, so the target
is the same function of the new variables; it keeps every variable on the scale the B-spline grids are built for).
Targets are kept raw unless the configuration (or ``standardize``) asks for standardisation with the mean and
standard deviation of the *training* targets; metrics are then on the standardised scale (raw MSE = MSE * std^2,
``describe()`` reports the statistics).

Beside the MSE (primary) the metrics carry ``nmse`` (MSE / variance of the split's targets, = 1 - R^2, comparable
across functions whose target variances differ by orders of magnitude) and ``baseline_constant``: the MSE of
predicting the training-target mean everywhere, the score of a model that learned nothing about f.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mamba_kan.errors import UserError
from mamba_kan.io_spec import ContinuousInput, RegressionOutput
from mamba_kan.tasks.base import Batch, Task
from mamba_kan.tasks.common import as_bool, as_int, check_seed, check_split, check_step, make_rng
from mamba_kan.tasks.registry import FamilyInfo

FUNCTION_OPTIONS: dict[str, Any] = {
    "n_train": 1000,
    "n_val": 500,
    "n_test": 1000,
    "scale_inputs": True,
    "standardize": None,
}
FUNCTION_OPTION_HELP: dict[str, str] = {
    "n_train": "training samples (a fixed set, visited in a per-epoch permutation)",
    "n_val": "validation samples (own random stream)",
    "n_test": "test samples (own random stream)",
    "scale_inputs": "map each input affinely from its range to [-1, 1]",
    "standardize": "standardise targets with training mean/std (null = the configuration's default)",
}


@dataclass(frozen=True)
class FunctionSpec:
    """A target function: ``fn`` maps (N, n_vars) float64 inputs to (N,) float64 targets."""

    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    ranges: tuple[tuple[float, float], ...]
    formula: str
    note: str = ""  # why the domain or scaling was chosen, when it matters
    standardize: bool = False

    @property
    def n_vars(self) -> int:
        return len(self.ranges)

    @property
    def description(self) -> str:
        boxes = [f"[{_fmt(lo)}, {_fmt(hi)}]" for lo, hi in self.ranges]
        box = f"{boxes[0]}^{len(boxes)}" if len(boxes) > 1 and len(set(boxes)) == 1 else " x ".join(boxes)
        text = f"{self.formula} on {box}"
        if self.standardize:
            text += "; targets standardised"
        return f"{text}. {self.note}".strip() if self.note else text


def _fmt(v: float) -> str:
    """A bound as text, multiples of pi/10 written with pi (2pi, 0.4pi)."""
    ratio = v / math.pi
    if v != 0 and math.isclose(ratio * 10, round(ratio * 10), abs_tol=1e-9):
        r = round(ratio, 1)
        return {1.0: "pi", -1.0: "-pi"}.get(r, f"{r:g}pi")
    return f"{v:g}"


class FunctionRegressionTask(Task):
    """y = f(x) regression with fixed train/val/test sets (see the module docstring)."""

    primary_metric = "mse"
    higher_is_better = False

    def __init__(self, spec: FunctionSpec, seed: int, **options: Any) -> None:
        super().__init__(spec.name, check_seed(seed))
        self.spec = spec
        self.n = {
            "train": as_int("n_train", options["n_train"]),
            "val": as_int("n_val", options["n_val"]),
            "test": as_int("n_test", options["n_test"]),
        }
        self.scale_inputs = as_bool("scale_inputs", options["scale_inputs"])
        std_opt = options["standardize"]
        self.standardize = spec.standardize if std_opt is None else as_bool("standardize", std_opt)
        self._raw = {split: self._sample(split) for split in ("train", "val", "test")}
        y_train = self._raw["train"][1]
        if self.standardize:
            self.target_mean, self.target_std = float(y_train.mean()), float(y_train.std())
            if not self.target_std > 0:
                raise UserError(
                    f"task {self.name}: cannot standardise constant targets; use standardize=false"
                )
        else:
            self.target_mean, self.target_std = 0.0, 1.0
        self._tensors = {split: self._to_tensors(*xy) for split, xy in self._raw.items()}
        self._perm_cache: dict[int, np.ndarray] = {}

    # --- data ----------------------------------------------------------------------------------------------
    def _sample(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) in float64 for ``split``: x uniform in the box (n, n_vars), y = f(x) (n,)."""
        rng = make_rng(self.seed, "function", self.name, split)
        lows = np.array([lo for lo, _ in self.spec.ranges])
        highs = np.array([hi for _, hi in self.spec.ranges])
        x = lows + (highs - lows) * rng.random((self.n[split], self.spec.n_vars))
        y = np.asarray(self.spec.fn(x), dtype=np.float64).reshape(-1)
        if y.shape != (x.shape[0],) or not np.all(np.isfinite(y)):
            # a bug in a function table, not a user error: the domains are chosen to keep targets finite
            raise RuntimeError(f"task {self.name}: target function gave non-finite or misshaped values")
        return x, y

    def _to_tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scale_inputs:
            lows = np.array([lo for lo, _ in self.spec.ranges])
            highs = np.array([hi for _, hi in self.spec.ranges])
            x = 2.0 * (x - lows) / (highs - lows) - 1.0
        y = (y - self.target_mean) / self.target_std
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32)).unsqueeze(1)

    def raw(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The unscaled float64 inputs (n, n_vars) and targets (n,) of ``split`` (for checks and plots)."""
        check_split(split, ("train", "val", "test"))
        return self._raw[split]

    def _permutation(self, epoch: int) -> np.ndarray:
        perm = self._perm_cache.get(epoch)
        if perm is None:
            perm = make_rng(self.seed, "function", self.name, "epoch", epoch).permutation(self.n["train"])
            if len(self._perm_cache) > 4:  # batches only ever straddle two consecutive epochs
                self._perm_cache.clear()
            self._perm_cache[epoch] = perm
        return perm

    def train_batch(self, step: int, batch_size: int) -> Batch:
        check_step(step, batch_size)
        n = self.n["train"]
        positions = np.arange(step * batch_size, (step + 1) * batch_size)
        epochs, offsets = np.divmod(positions, n)
        index = np.empty(batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            index[sel] = self._permutation(int(epoch))[offsets[sel]]
        x, y = self._tensors["train"]
        idx = torch.from_numpy(index)
        return Batch(x[idx], y[idx])

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        check_split(split)
        check_step(0, batch_size)
        x, y = self._tensors[split]
        for start in range(0, x.shape[0], batch_size):
            yield Batch(x[start : start + batch_size], y[start : start + batch_size])

    def compute_reference_values(self, split: str) -> dict[str, float]:
        """``baseline_constant``: MSE on ``split`` of the training-target mean (on the metric's scale)."""
        check_split(split)
        y = (self._raw[split][1] - self.target_mean) / self.target_std
        centre = (self._raw["train"][1].mean() - self.target_mean) / self.target_std
        return {"baseline_constant": float(np.mean((y - centre) ** 2))}

    # --- declared ends -------------------------------------------------------------------------------------
    @property
    def input_spec(self) -> ContinuousInput:
        return ContinuousInput(max_len=self.spec.n_vars)

    @property
    def output_spec(self) -> RegressionOutput:
        return RegressionOutput(out_dim=1)

    @property
    def tokens_per_sample(self) -> int:
        return self.spec.n_vars

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "formula": self.spec.formula,
            "ranges": [list(r) for r in self.spec.ranges],
            "n_vars": self.spec.n_vars,
            "n_train": self.n["train"],
            "n_val": self.n["val"],
            "n_test": self.n["test"],
            "scale_inputs": self.scale_inputs,
            "standardize": self.standardize,
            "target_mean": self.target_mean,
            "target_std": self.target_std,
        }


def function_fit_family(
    name: str, description: str, specs: dict[str, Any], default_config: str, factory: Callable[..., Task]
) -> FamilyInfo:
    """The registry entry shared by the regression families (symbolic, special_functions): same options, ends and
    metrics, differing only in their function specs."""
    return FamilyInfo(
        name=name,
        description=description,
        configs=tuple(specs),
        default_config=default_config,
        factory=factory,
        options=dict(FUNCTION_OPTIONS),
        option_help=dict(FUNCTION_OPTION_HELP),
        config_help={config: spec.description for config, spec in specs.items()},
        input_end="continuous (one token per variable, max_len = n_vars)",
        output_end="regression (out_dim 1)",
        primary_metric="mse",
        higher_is_better=False,
        metrics=("mse", "rmse", "mae", "r2", "nmse", "baseline_constant"),
        floor="none known; baseline_constant = MSE of the training-target mean",
    )
