"""Learnable spline functions: the per-neuron B-spline activation and the KAN layer.

Both use the SAME function family, phi(x) = w_b * silu(x) + w_s * sum_m c_m B_m(x) (KAN paper eq. 2.10), so the
factorial contrasts are clean: ``BSplineActivation`` puts one such function on every hidden *node* (Yu et al. 2024,
"KAN or MLP: A Fairer Comparison"), ``KANLinear`` puts one on every *edge* (Liu et al. 2024).

Grids are uniform and per input feature (buffers ``grid_low`` and ``grid_h``), so the fast local basis of
:mod:`mamba_kan.ops.bspline` applies. Inputs beyond the grid are clamped for the spline term (constant extension)
while the silu branch sees the raw input. Grids stay fixed during training (no grid update in either spline arm:
a least-squares refit changes the functions - measured 6% relative L2 of the spline term at G=5 on N(0, 1) data -
and would be one more arm-specific intervention to keep equal).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamba_kan.errors import require
from mamba_kan.ops.bspline import bspline_activation, bspline_basis_fast, kan_linear, uniform_bspline_basis


def _gaussian_second_moment(fn) -> float:
    """E[fn(z)^2], z ~ N(0, 1), by 64-point Gauss-Hermite quadrature (exact to ~1e-12 for silu and gelu)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    z = torch.from_numpy(nodes)
    return float((torch.from_numpy(weights) * fn(z) ** 2).sum() / math.sqrt(2.0 * math.pi))


# E[silu(z)^2] ~ 0.3557 and E[gelu(z)^2] ~ 0.4252 for z ~ N(0, 1): the init scales that give every feedforward arm
# the MLP's output second moment (KAN layers: unit variance; B-spline activation: gelu's second moment).
SILU_SECOND_MOMENT = _gaussian_second_moment(F.silu)
GELU_SECOND_MOMENT = _gaussian_second_moment(F.gelu)
# the B-spline activation's initial silu gain: E[(g silu(z))^2] = E[gelu(z)^2]
ACTIVATION_GAIN = math.sqrt(GELU_SECOND_MOMENT / SILU_SECOND_MOMENT)


def _check_grid(grid_size: int, spline_order: int, grid_range: tuple[float, float]) -> None:
    require(grid_size >= 1, f"grid_size must be >= 1, got {grid_size}")
    require(spline_order >= 0, f"spline_order must be >= 0, got {spline_order}")
    require(grid_range[0] < grid_range[1], f"grid_range must have low < high, got {tuple(grid_range)}")


def _ridge_lstsq(basis: Tensor, target: Tensor, ridge: float = 1e-6) -> Tensor:
    """Batched least squares min ||basis @ X - target||^2 + ridge ||X||^2.

    basis: (F, N, M); target: (F, N, O) -> (F, M, O). The ridge term keeps rank-deficient bases (intervals with no
    data, efficient-kan issue #50) solvable; it is tiny relative to B^T B for populated intervals.
    """
    bt = basis.transpose(1, 2)
    gram = bt @ basis
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    scale = gram.diagonal(dim1=1, dim2=2).mean(-1, keepdim=True).unsqueeze(-1).clamp_min(1e-12)
    return torch.linalg.solve(gram + ridge * scale * eye, bt @ target)


class _UniformGridMixin(nn.Module):
    """Per-feature uniform grid buffers shared by both spline modules."""

    grid_low: Tensor
    grid_h: Tensor

    def _init_grid(self, n_features: int, grid_size: int, spline_order: int, grid_range: tuple[float, float]):
        _check_grid(grid_size, spline_order, grid_range)
        self.grid_size = grid_size
        self.spline_order = spline_order
        low, high = float(grid_range[0]), float(grid_range[1])
        self.register_buffer("grid_low", torch.full((n_features,), low))
        self.register_buffer("grid_h", torch.full((n_features,), (high - low) / grid_size))

    @property
    def n_basis(self) -> int:
        return self.grid_size + self.spline_order

    def basis(self, x: Tensor) -> Tensor:
        """Dense bases (..., F, G + k) in float32 (hand-written backward)."""
        return bspline_basis_fast(x, self.grid_low, self.grid_h, self.grid_size, self.spline_order)

    def grid_bounds(self) -> tuple[Tensor, Tensor]:
        return self.grid_low, self.grid_low + self.grid_h * self.grid_size


class BSplineActivation(_UniformGridMixin):
    """A learnable activation per feature: a_j(x) = w_b[j] silu(x) + w_s[j] sum_m c[j, m] B_m(x).

    Input/output (..., n_features). Parameters per feature: G + k coefficients + w_b + w_s (the cost of one KAN
    edge). Init: w_s = 1, c ~ N(0, noise_scale^2), w_b = sqrt(E[gelu^2] / E[silu^2]) ~ 1.093, so on unit-variance
    inputs the activation has GELU's second moment and the B-spline MLP starts at the MLP's output scale.
    ``base=False`` gives Yu et al.'s spline-only activation (no silu branch, no w_b); its coefficients are
    initialised by least squares to the same scaled silu, so it does not start dead (all-zero).
    """

    def __init__(
        self,
        n_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] = (-3.0, 3.0),
        base: bool = True,
        noise_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self._init_grid(n_features, grid_size, spline_order, grid_range)
        self.n_features = n_features
        self.base = base
        self.coef = nn.Parameter(torch.empty(n_features, self.n_basis))
        self.spline_weight = nn.Parameter(torch.ones(n_features))
        self.base_weight = nn.Parameter(torch.ones(n_features)) if base else None
        self.noise_scale = noise_scale
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.spline_weight.fill_(1.0)
        if self.base_weight is not None:
            self.base_weight.fill_(ACTIVATION_GAIN)
            self.coef.normal_(0.0, self.noise_scale)
        else:
            lo, hi = self.grid_bounds()
            xs = lo + (hi - lo) * torch.linspace(0, 1, 4 * self.n_basis + 1).unsqueeze(-1)  # (S, F)
            basis = self.basis(xs).transpose(0, 1)  # (F, S, M)
            target = ACTIVATION_GAIN * F.silu(xs).transpose(0, 1).unsqueeze(-1)  # (F, S, 1)
            self.coef.copy_(_ridge_lstsq(basis, target).squeeze(-1))

    def forward(self, x: Tensor) -> Tensor:
        coef = self.coef * self.spline_weight.unsqueeze(-1)  # (F, M): w_s folded into the coefficients
        # spline and silu branch in one pass (ops.bspline's fast path); computed in float32
        y = bspline_activation(
            x, coef, self.grid_low, self.grid_h, self.grid_size, self.spline_order, self.base_weight
        )
        return y.to(x.dtype)

    def reference_forward(self, x: Tensor) -> Tensor:
        """The formula written out with dense bases (for tests and plots)."""
        basis = uniform_bspline_basis(x, self.grid_low, self.grid_h, self.grid_size, self.spline_order)
        y = torch.einsum("...fm,fm->...f", basis, self.coef) * self.spline_weight
        if self.base_weight is not None:
            y = y + self.base_weight * F.silu(x)
        return y

    def functions(self, xs: Tensor) -> Tensor:
        """Each feature's activation evaluated at points xs (S,) -> (F, S)."""
        x = xs.reshape(-1, 1).expand(-1, self.n_features)
        return self.reference_forward(x).transpose(0, 1)

    def extra_repr(self) -> str:
        return f"{self.n_features}, G={self.grid_size}, k={self.spline_order}, base={self.base}"


class KANLinear(_UniformGridMixin):
    """One KAN layer: y_o = sum_i phi_oi(x_i), phi_oi(x) = w_b[o,i] silu(x) + w_s[o,i] sum_m c[o,i,m] B_m(x).

    Input (..., in_features) -> (..., out_features). No per-edge bias (KAN paper). Parameters per edge: G + k + 2.
    Computed as ONE matmul (efficient-kan): features [silu(x) | B(x)] of shape (N, in * (G+k+1)) times the packed
    weight [w_b | w_s * c] of shape (out, in * (G+k+1)) (see ops.bspline.kan_linear).

    Init: c ~ N(0, noise_scale^2), w_s = 1/sqrt(in) (pykan), w_b ~ N(0, 1/(in E[silu^2])) so a unit-variance input
    gives a roughly unit-variance output (keeps the next layer's inputs inside its grid; KANFFN then scales its
    second layer to the MLP's output scale).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] = (-3.0, 3.0),
        noise_scale: float = 0.1,
    ) -> None:
        super().__init__()
        require(in_features >= 1 and out_features >= 1, "KANLinear needs in_features, out_features >= 1")
        self._init_grid(in_features, grid_size, spline_order, grid_range)
        self.in_features = in_features
        self.out_features = out_features
        self.noise_scale = noise_scale
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.coef = nn.Parameter(torch.empty(out_features, in_features, self.n_basis))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.base_weight.normal_(0.0, 1.0 / math.sqrt(self.in_features * SILU_SECOND_MOMENT))
        self.spline_weight.fill_(1.0 / math.sqrt(self.in_features))
        self.coef.normal_(0.0, self.noise_scale)

    def forward(self, x: Tensor) -> Tensor:
        # features [silu(x) | B(x)] times the packed weight as one GEMM (ops.bspline.kan_linear: generated CPU
        # kernels, features recomputed in backward instead of stored)
        y = kan_linear(
            x,
            self.base_weight,
            self.spline_weight,
            self.coef,
            self.grid_low,
            self.grid_h,
            self.grid_size,
            self.spline_order,
        )
        return y.to(x.dtype)

    def reference_forward(self, x: Tensor) -> Tensor:
        """Explicit per-edge sum, materialising phi (N, out, in) - for tests only."""
        basis = self.basis(x)  # (..., in, M)
        spline = torch.einsum("...im,oim->...oi", basis, self.coef)
        phi = self.base_weight * F.silu(x).unsqueeze(-2) + self.spline_weight * spline
        return phi.sum(-1)

    def regularization_loss(self, weight_l1: float = 1.0, weight_entropy: float = 1.0) -> Tensor:
        """efficient-kan's regulariser: L1 of mean |c| per edge plus entropy of the normalised L1 (0 log 0 := 0)."""
        l1 = self.coef.abs().mean(-1)  # (out, in)
        total = l1.sum()
        p = l1 / total.clamp_min(1e-12)
        # p log p with p -> 0 limit 0; clamping inside the log keeps the gradient finite as well
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
        return weight_l1 * total + weight_entropy * entropy

    def functions(self, xs: Tensor, max_edges: int = 16) -> Tensor:
        """The first ``max_edges`` edge functions phi_oi at points xs (S,) -> (E, S), edges in row-major (o, i)."""
        x = xs.reshape(-1, 1).expand(-1, self.in_features)
        basis = self.basis(x)  # (S, in, M)
        spline = torch.einsum("sim,oim->ois", basis, self.coef)
        phi = (
            self.base_weight.unsqueeze(-1) * F.silu(x).t().unsqueeze(0)
            + self.spline_weight.unsqueeze(-1) * spline
        )
        return phi.reshape(-1, xs.numel())[:max_edges]

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, G={self.grid_size}, k={self.spline_order}"
