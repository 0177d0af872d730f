"""Factor A: the three feedforward blocks, each a drop-in (..., d_model) -> (..., d_model) module.

* ``MLP``        Linear -> GELU -> Linear.
* ``BSplineMLP`` Linear -> learnable B-spline activation per hidden neuron -> Linear (Yu et al. 2024).
* ``KANFFN``     KANLinear(d -> h) -> KANLinear(h -> d) (Liu et al. 2024).

MLP and B-spline MLP differ ONLY in the activation (same linears, same init), so bspline - mlp isolates the
learnable activation; B-spline MLP and KAN use the same edge-function family, so kan - bspline isolates the topology.

Init: the input projection is LeCun-normal (N(0, 1/d_in)), so at init the pre-activations have unit variance when
the input is LayerNorm-ed - that keeps them inside the spline grid [-3, 3] (+-3 sd). Every arm starts with the same
function-space scale: its output at init has the MLP's second moment E[gelu(z)^2], z ~ N(0, 1), per unit of input
variance (the B-spline activation's base branch starts at sqrt(E[gelu^2]/E[silu^2]) silu; the KAN block's second
layer is scaled by sqrt(E[gelu^2]) on top of its unit-variance init). Every block exposes ``scale_residual_(factor)``
so the model can shrink its residual output at init (GPT-2 / Mamba).

FLOPs per token, forward (K = spline order, G = grid size), under two conventions (``flop_count``):
  "yu2024" (Yu et al. 2024, their accounting; every spline evaluation pays the Cox-de Boor recursion)
    spline evaluation per scalar  S = 9K(G + 1.5K) + 2G - 2.5K - 1
    mlp      4 d h + 14 h                           (GELU 14)
    bspline  4 d h + h (S + 8)                      (+ silu 5, two scalings and an add for the base branch)
    kan      per layer: d_in d_out (S + 2) + 5 d_in + 2 d_in d_out   (their KAN formula: S + 2 per edge)
  "implementation" (what this project's kernels do)
    locate the interval per scalar: 6 (scale, shift, clamp 2, floor, fraction)
    bspline  4 d h + h (6 + 2K + 7)                 (one degree-K Horner polynomial per scalar; + silu 5, w_b, add)
    kan      per layer: d_in (6 + 2K (K + 1) + 5) + 2 d_in (G + K + 1) d_out   (K + 1 local bases per input, silu,
             then one dense GEMM over the packed [silu | G + K bases] features)
    mlp      as above.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamba_kan.modules.splines import GELU_SECOND_MOMENT, BSplineActivation, KANLinear

# the conventions of ``mamba_kan.models.config.FLOP_COUNTS`` (not imported: models imports this module)
FLOP_COUNTS = ("yu2024", "implementation")

# FLOPs to find a scalar's interval and fractional position: (x - low) * (1/h), clamp (2), floor, fraction
LOCATE_FLOPS = 6
SILU_FLOPS = 5
GELU_FLOPS = 14


def spline_eval_flops(grid_size: int, order: int) -> int:
    """Yu et al. (2024) FLOPs to evaluate one B-spline function of G intervals and order K at one point."""
    k, g = order, grid_size
    return int(9 * k * (g + 1.5 * k) + 2 * g - 2.5 * k - 1)


def _check_count(flop_count: str) -> None:
    if flop_count not in FLOP_COUNTS:
        raise ValueError(f"unknown FLOP count {flop_count!r}; valid: {', '.join(FLOP_COUNTS)}")


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

    def flops_per_token(self, flop_count: str = "yu2024") -> int:
        _check_count(flop_count)
        d, h = self.fc_in.in_features, self.hidden
        return 4 * d * h + GELU_FLOPS * h


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

    def flops_per_token(self, flop_count: str = "yu2024") -> int:
        _check_count(flop_count)
        d, h, k = self.fc_in.in_features, self.hidden, self.act.spline_order
        base = SILU_FLOPS + 2 if self.act.base else 0  # silu, w_b, add
        if flop_count == "yu2024":
            per_unit = spline_eval_flops(self.act.grid_size, k) + base + 1  # + the w_s scaling
        else:  # w_s is folded into the coefficients before the kernel runs
            per_unit = LOCATE_FLOPS + 2 * k + base
        return 4 * d * h + h * per_unit


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
        self.scale_residual_(math.sqrt(GELU_SECOND_MOMENT))  # the MLP's output scale (module docstring)

    def forward(self, x: Tensor) -> Tensor:
        return self.kan_out(self.kan_in(x))

    @torch.no_grad()
    def scale_residual_(self, factor: float) -> None:
        self.kan_out.base_weight.mul_(factor)
        self.kan_out.spline_weight.mul_(factor)

    def flops_per_token(self, flop_count: str = "yu2024") -> int:
        _check_count(flop_count)
        total = 0
        for layer in (self.kan_in, self.kan_out):
            d_in, d_out, k = layer.in_features, layer.out_features, layer.spline_order
            if flop_count == "yu2024":
                s = spline_eval_flops(layer.grid_size, k)
                total += d_in * d_out * (s + 2) + SILU_FLOPS * d_in + 2 * d_in * d_out
            else:
                total += (
                    d_in * (LOCATE_FLOPS + 2 * k * (k + 1) + SILU_FLOPS)
                    + 2 * d_in * (layer.n_basis + 1) * d_out
                )
        return total
