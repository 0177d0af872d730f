"""A SwiGLU feedforward block (Shazeer 2020, "GLU Variants Improve Transformer"): W_o (silu(W_g x) * (W_v x)).

Parameters: 3 d h + 2 h + d (three matrices, biases on all three) - affine in the hidden width h, as the
matcher requires; at the same parameter budget its h is about 2/3 of the MLP's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SILU_FLOPS = 5  # x * sigmoid(x): exp, add, divide, multiply, negate (the convention of mamba_kan.modules.ffn)


class SwiGLU(nn.Module):
    """(..., d_model) -> (..., d_model): position-wise, like every feedforward block."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gate = nn.Linear(d_model, hidden)
        self.value = nn.Linear(d_model, hidden)
        self.fc_out = nn.Linear(hidden, d_model)
        for lin in (self.gate, self.value, self.fc_out):  # LeCun-normal like the built-in blocks
            nn.init.normal_(lin.weight, 0.0, 1.0 / math.sqrt(lin.in_features))
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(F.silu(self.gate(x)) * self.value(x))

    @torch.no_grad()
    def scale_residual_(self, factor: float) -> None:
        """The model's residual scaling at init (GPT-2): shrink the output projection."""
        self.fc_out.weight.mul_(factor)

    def flops_per_token(self, flop_count: str = "yu2024") -> int:
        """Matmuls 2 m n each (three of d x h), silu and the gating product per hidden unit; the same under both
        of mamba-kan's conventions (they differ only for spline evaluation)."""
        d, h = self.gate.in_features, self.hidden
        return 6 * d * h + (SILU_FLOPS + 1) * h
