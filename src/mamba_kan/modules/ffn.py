"""Factor A: the three feedforward blocks, each a drop-in (..., d_model) -> (..., d_model) module.

* ``MLP``        Linear -> GELU -> Linear.
* ``BSplineMLP`` Linear -> learnable B-spline activation per hidden neuron -> Linear (Yu et al. 2024).
* ``KANFFN``     KANLinear(d -> h) -> KANLinear(h -> d) (Liu et al. 2024).

MLP and B-spline MLP differ ONLY in the activation (same linears, same init), so bspline - mlp isolates the
learnable activation; B-spline MLP and KAN use the same edge-function family, so kan - bspline isolates the topology.

Init: the input projection is LeCun-normal (N(0, 1/d_in)), so at init the pre-activations have unit variance when
the input is LayerNorm-ed - that keeps them inside the spline grid [-3, 3] (+-3 sd). Every block exposes
``scale_residual_(factor)`` so the model can shrink its residual output at init (GPT-2 / Mamba).

FLOPs per token (forward, implementation count; K = spline order, G = grid size):
  spline evaluation per scalar  S = 9K(G + 1.5K) + 2G - 2.5K - 1   (Yu et al. 2024 accounting)
  mlp      4 d h + 14 h                    (GELU 14 FLOPs, Yu et al.)
  bspline  4 d h + h (S + 8)               (+ silu 5, two scalings and an add when the base branch is on)
  kan      per layer: d_in (S + 5) + 2 d_in (G + K + 1) d_out   (basis once per input, then one GEMM)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamba_kan.modules.splines import BSplineActivation, KANLinear


def spline_eval_flops(grid_size: int, order: int) -> int:
    """Yu et al. (2024) FLOPs to evaluate one B-spline function of G intervals and order K at one point."""
    k, g = order, grid_size
    return int(9 * k * (g + 1.5 * k) + 2 * g - 2.5 * k - 1)


def _lecun_(linear: nn.Linear) -> None:
    nn.init.normal_(linear.weight, 0.0, 1.0 / math.sqrt(linear.in_features))
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


class MLP(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.fc_in = nn.Linear(d_model, hidden)
        self.fc_out = nn.Linear(hidden, d_model)
        _lecun_(self.fc_in)
        _lecun_(self.fc_out)

    def activation(self, x: Tensor) -> Tensor:
        return F.gelu(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.activation(self.fc_in(x)))

    @torch.no_grad()
    def scale_residual_(self, factor: float) -> None:
        self.fc_out.weight.mul_(factor)

    def flops_per_token(self) -> int:
        d, h = self.fc_in.in_features, self.hidden
        return 4 * d * h + 14 * h


class BSplineMLP(MLP):
    """MLP whose hidden activation is a learnable B-spline function per neuron (same family as a KAN edge)."""

    def __init__(
        self,
        d_model: int,
        hidden: int,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] = (-3.0, 3.0),
        base: bool = True,
    ) -> None:
        super().__init__(d_model, hidden)
        self.act = BSplineActivation(hidden, grid_size, spline_order, grid_range, base=base)

    def activation(self, x: Tensor) -> Tensor:
        return self.act(x)

    def flops_per_token(self) -> int:
        d, h = self.fc_in.in_features, self.hidden
        extra = 8 if self.act.base else 1
        return 4 * d * h + h * (spline_eval_flops(self.act.grid_size, self.act.spline_order) + extra)


class KANFFN(nn.Module):
    """Two KAN layers d_model -> hidden -> d_model."""

    def __init__(
        self,
        d_model: int,
        hidden: int,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] = (-3.0, 3.0),
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.kan_in = KANLinear(d_model, hidden, grid_size, spline_order, grid_range)
        self.kan_out = KANLinear(hidden, d_model, grid_size, spline_order, grid_range)

    def forward(self, x: Tensor) -> Tensor:
        return self.kan_out(self.kan_in(x))

    @torch.no_grad()
    def scale_residual_(self, factor: float) -> None:
        self.kan_out.base_weight.mul_(factor)
        self.kan_out.spline_weight.mul_(factor)

    def flops_per_token(self) -> int:
        total = 0
        for layer in (self.kan_in, self.kan_out):
            s = spline_eval_flops(layer.grid_size, layer.spline_order)
            total += (
                layer.in_features * (s + 5) + 2 * layer.in_features * (layer.n_basis + 1) * layer.out_features
            )
        return total

    def regularization_loss(self, weight_l1: float = 1.0, weight_entropy: float = 1.0) -> Tensor:
        return self.kan_in.regularization_loss(weight_l1, weight_entropy) + self.kan_out.regularization_loss(
            weight_l1, weight_entropy
        )
