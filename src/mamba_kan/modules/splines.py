"""Learnable spline functions: the per-neuron B-spline activation and the KAN layer.

Both use the SAME function family, phi(x) = w_b * silu(x) + w_s * sum_m c_m B_m(x) (KAN paper eq. 2.10), so the
factorial contrasts are clean: ``BSplineActivation`` puts one such function on every hidden *node* (Yu et al. 2024,
"KAN or MLP: A Fairer Comparison"), ``KANLinear`` puts one on every *edge* (Liu et al. 2024).

Grids are uniform and per input feature (buffers ``grid_low`` and ``grid_h``), so the fast local basis of
:mod:`mamba_kan.ops.bspline` applies. Inputs beyond the grid are clamped for the spline term (constant extension)
while the silu branch sees the raw input; :meth:`update_grid` re-fits a grid to the range of observed data and
re-fits the coefficients by (ridge-regularised) least squares so that every function is preserved.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamba_kan.errors import require
from mamba_kan.ops.bspline import uniform_bspline_basis
from mamba_kan.ops.bspline_autograd import (
    bspline_activation,
    bspline_activation_kernel,
    bspline_basis_fast,
    kan_linear_kernel,
    spline_kernels,
)

# E[silu(x)^2] for x ~ N(0, 1); used to give KAN layers unit-variance outputs at init.
_SILU_SECOND_MOMENT = 0.3557


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

    @torch.no_grad()
    def _new_grid_from_data(self, x: Tensor, margin: float) -> tuple[Tensor, Tensor]:
        """Uniform grid per feature covering the observed range of x (N, F), widened by ``margin`` of the range."""
        lo = x.amin(0).float()
        hi = x.amax(0).float()
        span = (hi - lo).clamp_min(1e-3)
        lo = lo - margin * span
        hi = hi + margin * span
        return lo, (hi - lo) / self.grid_size


class BSplineActivation(_UniformGridMixin):
    """A learnable activation per feature: a_j(x) = w_b[j] silu(x) + w_s[j] sum_m c[j, m] B_m(x).

    Input/output (..., n_features). Parameters per feature: G + k coefficients + w_b + w_s (the cost of one KAN
    edge). ``base=False`` gives Yu et al.'s spline-only activation (no silu branch, no w_b); its coefficients are
    initialised by least squares to silu, so it starts as a SiLU MLP instead of a dead (all-zero) activation.
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
            self.base_weight.fill_(1.0)
            self.coef.normal_(0.0, self.noise_scale)
        else:
            lo, hi = self.grid_bounds()
            xs = lo + (hi - lo) * torch.linspace(0, 1, 4 * self.n_basis + 1).unsqueeze(-1)  # (S, F)
            basis = self.basis(xs).transpose(0, 1)  # (F, S, M)
            target = F.silu(xs).transpose(0, 1).unsqueeze(-1)  # (F, S, 1)
            self.coef.copy_(_ridge_lstsq(basis, target).squeeze(-1))

    def forward(self, x: Tensor) -> Tensor:
        coef = self.coef * self.spline_weight.unsqueeze(-1)  # (F, M): w_s folded into the coefficients
        grid = (self.grid_low, self.grid_h, self.grid_size, self.spline_order)
        kernels = spline_kernels(x, self.grid_size, self.spline_order)
        if kernels is None:
            # eager, in float32: y = sum_m coef[f, m] B_m(x) + w_b[f] silu(x), the spline evaluated per grid
            # interval as a polynomial in the local fraction (ops.bspline.spline_table); hand-written backward
            return bspline_activation(x, coef, *grid, self.base_weight).to(x.dtype)
        # --- fast branch: generated C kernel (CPU float32), the same maths in one pass per direction
        return bspline_activation_kernel(x, coef, *grid, self.base_weight, kernels).to(x.dtype)

    def reference_forward(self, x: Tensor) -> Tensor:
        """The formula written out with dense bases (for tests and plots)."""
        basis = uniform_bspline_basis(x, self.grid_low, self.grid_h, self.grid_size, self.spline_order)
        y = torch.einsum("...fm,fm->...f", basis, self.coef) * self.spline_weight
        if self.base_weight is not None:
            y = y + self.base_weight * F.silu(x)
        return y

    @torch.no_grad()
    def update_grid(self, x: Tensor, margin: float = 0.05) -> None:
        """Refit grids to the range of ``x`` (..., F), keeping every activation's spline term (least squares)."""
        x = x.reshape(-1, self.n_features).float()
        target = torch.einsum("nfm,fm->fn", self.basis(x), self.coef).unsqueeze(-1)  # unscaled: no w_s here
        self.grid_low, self.grid_h = self._new_grid_from_data(x, margin)
        new_basis = self.basis(x).transpose(0, 1)
        self.coef.copy_(_ridge_lstsq(new_basis, target).squeeze(-1))

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
    weight [w_b | w_s * c] of shape (out, in * (G+k+1)).

    Init: c ~ N(0, noise_scale^2), w_s = 1/sqrt(in) (pykan), w_b ~ N(0, 1/(in E[silu^2])) so a unit-variance input
    gives a roughly unit-variance output (keeps the next layer's inputs inside its grid).
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
        self.base_weight.normal_(0.0, 1.0 / math.sqrt(self.in_features * _SILU_SECOND_MOMENT))
        self.spline_weight.fill_(1.0 / math.sqrt(self.in_features))
        self.coef.normal_(0.0, self.noise_scale)

    def packed_weight(self) -> Tensor:
        """(out, in * (G + k + 1)): per input feature [w_b, w_s * c_0, ..., w_s * c_{G+k-1}]."""
        w = torch.cat([self.base_weight.unsqueeze(-1), self.spline_weight.unsqueeze(-1) * self.coef], dim=-1)
        return w.reshape(self.out_features, -1)

    def forward(self, x: Tensor) -> Tensor:
        kernels = spline_kernels(x, self.grid_size, self.spline_order)
        if kernels is None:
            # eager (efficient-kan): per input the features [silu(x) | B_0(x) .. B_{G+k-1}(x)] in float32, times
            # the packed weight [w_b | w_s c] as ONE GEMM; the matmul follows autocast (bf16 on GPUs)
            with torch.autocast(device_type=x.device.type, enabled=False):
                xf = x.double() if x.dtype == torch.float64 else x.float()
                feats = torch.cat([F.silu(xf).unsqueeze(-1), self.basis(xf)], dim=-1)  # (..., in, 1 + G + k)
            spline = self.spline_weight.unsqueeze(-1) * self.coef  # (out, in, G + k)
            packed = torch.cat([self.base_weight.unsqueeze(-1), spline], -1).flatten(1)  # (out, in(1+G+k))
            return (feats.flatten(-2) @ packed.to(feats.dtype).t()).to(x.dtype)
        # --- fast branch: generated C kernels (CPU float32), the same features and GEMM; the features are
        # written by the kernel and recomputed in backward instead of stored
        grid = (self.grid_low, self.grid_h, self.grid_size, self.spline_order)
        y = kan_linear_kernel(x, self.base_weight, self.spline_weight, self.coef, *grid, kernels)
        return y.to(x.dtype)

    def reference_forward(self, x: Tensor) -> Tensor:
        """Explicit per-edge sum, materialising phi (N, out, in) - for tests only."""
        basis = self.basis(x)  # (..., in, M)
        spline = torch.einsum("...im,oim->...oi", basis, self.coef)
        phi = self.base_weight * F.silu(x).unsqueeze(-2) + self.spline_weight * spline
        return phi.sum(-1)

    @torch.no_grad()
    def update_grid(self, x: Tensor, margin: float = 0.05) -> None:
        """Refit each input's grid to the range of ``x`` (..., in), preserving every edge function.

        The least-squares target is the *unscaled* spline sum_m c B_m(x); w_s is left alone. (efficient-kan fits the
        scaled c * w_s and stores it in c, so each update multiplies the spline by w_s once more - REFERENCE.md §1.)
        """
        x = x.reshape(-1, self.in_features).float()
        target = torch.einsum("nim,oim->ino", self.basis(x), self.coef)  # (in, N, out)
        self.grid_low, self.grid_h = self._new_grid_from_data(x, margin)
        new_basis = self.basis(x).transpose(0, 1)  # (in, N, M)
        coef = _ridge_lstsq(new_basis, target)  # (in, M, out)
        self.coef.copy_(coef.permute(2, 0, 1))

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
