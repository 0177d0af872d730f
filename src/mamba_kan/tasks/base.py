"""The one task interface.

A task is one named configuration of a family (``family/config``). Given a seed it fixes the train/val/test data
and the training batch order, so every variant sees exactly the same data for the same seed (seeds are paired).

Determinism contract:
- ``train_batch(step, batch_size)`` is a pure function of (task config, seed, step, batch_size). Resuming a run at
  step s therefore needs no saved data state beyond s, and two models given the same seed see identical batches.
- ``eval_batches(split, batch_size)`` yields the same fixed batches every call.

Reference values reported beside the metrics (``evaluate()`` adds them to every split's metrics, so figures and
tables can draw them next to the learned models):
- ``floor``: the best achievable value of the primary metric, where it is known. Where the data come from a known
  generator it is *realised*: the score of the exact (Bayes-optimal) predictor on the split's actual examples
  (a finite set can make it lower than its expectation); the expected value is then ``floor_expected``.
  ``gap_to_floor`` = how far the model is from it, in the metric's good direction (>= 0 unless the model beats it).
- ``baseline_<what>``: the primary metric of a named predictor that needs none of the structure the task tests
  (chance, a constant, a positional shortcut, a naive forecast), computed on the same split's examples unless the
  name says it is analytic. Always in the units of the primary metric, so it can be drawn on the same axis; a
  model that does not beat its baselines has learned nothing the task is about.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from mamba_kan.io_spec import (
    ForecastOutput,
    InputSpec,
    NextTokenOutput,
    OutputSpec,
    RegressionOutput,
)
from mamba_kan.ops.cross_entropy import cross_entropy

SPLITS = ("train", "val", "test")


@dataclass
class Batch:
    """One batch. ``inputs``: (B, L) long tokens or (B, L) float values. ``targets``: (B, L) long for next-token
    outputs, (B, out_dim) for regression, (B, H) for forecasts. ``mask``: optional (B, L) bool of positions that
    count in the loss and metrics (token outputs only; None = all positions). ``extra`` carries task-specific
    tensors needed by metrics (e.g. the seasonal-naive scale for MASE)."""

    inputs: Tensor
    targets: Tensor
    mask: Tensor | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.inputs.to(device, non_blocking=True),
            self.targets.to(device, non_blocking=True),
            None if self.mask is None else self.mask.to(device, non_blocking=True),
            {k: v.to(device, non_blocking=True) for k, v in self.extra.items()},
        )

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])


class Task(ABC):
    """Base class of every task. Subclasses set the class attributes and implement the data methods.

    ``floor`` is the best achievable value of the primary metric on the test split when it is known (e.g. the
    realised optimal cross-entropy of the synthetic language), else None; :meth:`reference_values` gives it with
    the baselines per split (see the module docstring).
    """

    family: ClassVar[str]
    primary_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = False

    def __init__(self, config_name: str, seed: int) -> None:
        self.config_name = config_name
        self.seed = int(seed)
        self._reference_cache: dict[str, dict[str, float]] = {}

    @property
    def name(self) -> str:
        return f"{self.family}/{self.config_name}"

    # --- declared ends -------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def input_spec(self) -> InputSpec: ...

    @property
    @abstractmethod
    def output_spec(self) -> OutputSpec: ...

    @property
    def floor(self) -> float | None:
        """Best achievable primary metric on the test split (None = unknown)."""
        value = self.reference_values("test").get("floor")
        return None if value is None else float(value)

    def reference_values(self, split: str) -> dict[str, float]:
        """``floor`` / ``floor_expected`` / ``baseline_<what>`` of ``split`` (cached: computed once per split)."""
        if split not in self._reference_cache:
            values = self.compute_reference_values(split)
            self._reference_cache[split] = {k: float(v) for k, v in values.items()}
        return dict(self._reference_cache[split])

    def compute_reference_values(self, split: str) -> dict[str, float]:
        """Override: the split's floor and baselines (see the module docstring); default none."""
        return {}

    @property
    def tokens_per_sample(self) -> int:
        """Tokens one sample feeds the model (for tokens/s); every family overrides it (default: 1)."""
        return 1

    def describe(self) -> dict[str, Any]:
        """Resolved settings of this task (saved with every run)."""
        return {"name": self.name, "seed": self.seed}

    # --- data ----------------------------------------------------------------------------------------------
    @abstractmethod
    def train_batch(self, step: int, batch_size: int) -> Batch:
        """Training batch number ``step`` (0-based); deterministic in (seed, step, batch_size)."""

    @abstractmethod
    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """Fixed batches of ``split`` ('val' or 'test')."""

    # --- loss and metrics ----------------------------------------------------------------------------------
    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        """Training loss (a scalar) for the model ``output`` on ``batch``. Computed in float32."""
        return default_loss(self.output_spec, output.float(), batch)

    def new_metric_state(self) -> MetricState:
        return MetricState(self.output_spec)

    @torch.no_grad()
    def evaluate(
        self,
        model: Callable[[Tensor], Tensor],
        split: str,
        batch_size: int,
        device: torch.device | str = "cpu",
    ) -> dict[str, float]:
        """Metrics of ``model`` on ``split``; the model is called on ``batch.inputs``."""
        state = self.new_metric_state()
        for batch in self.eval_batches(split, batch_size):
            batch = batch.to(device)
            state.update(model(batch.inputs).float(), batch)
        metrics = self.finalize_metrics(state.compute())
        refs = self.reference_values(split)
        metrics.update(refs)
        if "floor" in refs:
            value, floor = metrics[self.primary_metric], refs["floor"]
            metrics["gap_to_floor"] = floor - value if self.higher_is_better else value - floor
        return metrics

    def finalize_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Hook to add task-specific metrics computed from the model's metrics."""
        return metrics


IGNORE_INDEX = -100  # torch's default ignore_index of cross_entropy


def default_loss(spec: OutputSpec, output: Tensor, batch: Batch) -> Tensor:
    if isinstance(spec, NextTokenOutput):
        logits = output.reshape(-1, output.shape[-1])
        targets = batch.targets.reshape(-1)
        if batch.mask is not None:
            # unscored positions get the ignore index rather than being cut out with logits[mask]: the same mean
            # over the scored positions, without the gather of the logits and the zero-filled scatter of its
            # backward (~3 ms of a 30 ms quick language step)
            targets = targets.masked_fill(~batch.mask.reshape(-1), IGNORE_INDEX)
        # F.cross_entropy's value and gradient; one fused C pass on CPU float32 (ops.cross_entropy)
        return cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    return F.mse_loss(output, batch.targets.float())


class MetricState:
    """Accumulates sufficient statistics over evaluation batches (exact, independent of batch size).

    Token outputs: cross-entropy in nats (``loss``), bits per token (``bpb``), perplexity, accuracy.
    Regression/forecast: MSE, RMSE, MAE, R^2 and ``nmse`` = MSE / the variance of the split's targets (= 1 - R^2;
    comparable across targets of different scale; the constant mean predictor scores about 1), pooled over output
    dimensions.
    """

    def __init__(self, spec: OutputSpec) -> None:
        self.spec = spec
        self.n = 0.0
        self.sums: dict[str, float] = {}

    def _add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def update(self, output: Tensor, batch: Batch) -> None:
        if isinstance(self.spec, NextTokenOutput):
            logits = output.reshape(-1, output.shape[-1])
            targets = batch.targets.reshape(-1)
            if batch.mask is not None:  # select the scored positions first: float64 copies only of those
                mask = batch.mask.reshape(-1)
                logits, targets = logits[mask], targets[mask]
            logits = logits.double()
            nll = F.cross_entropy(logits, targets, reduction="sum")
            self._add("nll", nll.item())
            self._add("correct", (logits.argmax(-1) == targets).sum().item())
            self.n += targets.numel()
        else:
            target = batch.targets.double()
            err = output.double() - target
            self._add("se", (err**2).sum().item())
            self._add("ae", err.abs().sum().item())
            self._add("y", target.sum().item())
            self._add("yy", (target**2).sum().item())
            self.n += target.numel()

    def compute(self) -> dict[str, float]:
        n = max(self.n, 1.0)
        s = self.sums
        if isinstance(self.spec, NextTokenOutput):
            ce = s.get("nll", math.nan) / n
            return {
                "loss": ce,
                "bpb": ce / math.log(2.0),
                "perplexity": math.exp(min(ce, 700.0)),
                "accuracy": s.get("correct", 0.0) / n,
            }
        mse = s.get("se", math.nan) / n
        var = s.get("yy", 0.0) / n - (s.get("y", 0.0) / n) ** 2
        out = {"mse": mse, "rmse": math.sqrt(mse), "mae": s.get("ae", math.nan) / n}
        out["r2"] = 1.0 - mse / var if var > 0 else math.nan
        out["nmse"] = mse / var if var > 0 else math.nan
        return out


def is_regression(spec: OutputSpec) -> bool:
    return isinstance(spec, RegressionOutput | ForecastOutput)
