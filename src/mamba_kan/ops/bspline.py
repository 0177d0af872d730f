"""B-spline bases.

Two implementations of the same maths:

* :func:`bspline_basis_cox_de_boor` - the Cox-de Boor recursion on an arbitrary non-decreasing knot vector
  (de Boor, "A Practical Guide to Splines", ch. IX). Readable reference; used for non-uniform grids and in tests.
* :func:`uniform_bspline_local` / :func:`uniform_bspline_basis` - the fast path for *uniform* grids, which is what
  every layer in this project uses. On a uniform grid all bases are translates of the cardinal B-spline M_k, so at a
  point x only k+1 bases are non-zero and their values depend only on the fractional position f in the current
  interval. They follow from the cardinal recurrence

      M_p(t) = (t * M_{p-1}(t) + (p + 1 - t) * M_{p-1}(t - 1)) / p,

  evaluated at t = f + r for r = 0..p (v_p[r] = value of basis j - r, j = the interval index):

      v_p[r] = ((f + r) * v_{p-1}[r] + (p + 1 - f - r) * v_{p-1}[r - 1]) / p,  v_0 = [1].

  Every term is a convex combination of non-negative numbers, so it is stable in float32 (unlike the
  truncated-power form sum (-1)^j C(k+1, j) relu(u - j)^k / k!, which cancels catastrophically). For k = 3 it gives
  the closed form (1-f)^3/6, (3f^3 - 6f^2 + 4)/6, (-3f^3 + 3f^2 + 3f + 1)/6, f^3/6 (REFERENCE.md §1).

Grid convention (KAN paper, pykan, efficient-kan): G intervals on [low, high], h = (high - low) / G, knots
t_m = low + (m - k) h for m = 0..G+2k, giving G + k basis functions; basis m is supported on [t_m, t_{m+k+1}].
The bases form a partition of unity on [low, high].

Out-of-grid inputs: the fast path clamps x to [low, high] before evaluating, i.e. every spline is extended as a
*constant* beyond its grid (its boundary value). A spline therefore never silently "dies" (all-zero bases) outside
its grid; the silu base branch of KAN edges and B-spline activations still sees the unclamped x.
All bases are computed in float32 (float64 inputs stay float64), also under autocast.
"""

from __future__ import annotations

import torch
from torch import Tensor


def uniform_knots(grid_size: int, order: int, low: float, high: float, dtype=torch.float32) -> Tensor:
    """The G + 2k + 1 uniform knots low + h * (-k, ..., G + k), h = (high - low) / G."""
    h = (high - low) / grid_size
    steps = torch.arange(-order, grid_size + order + 1, dtype=torch.float64)
    return (low + h * steps).to(dtype)


def bspline_basis_cox_de_boor(x: Tensor, knots: Tensor, order: int) -> Tensor:
    """All B-spline bases of degree ``order`` on ``knots`` at ``x`` via Cox-de Boor.

    Args:
        x: (...,) points.
        knots: (n_knots,) non-decreasing knot vector.
        order: spline degree k >= 0.
    Returns:
        (..., n_knots - k - 1) basis values. Half-open intervals [t_m, t_{m+1}), as scipy's BSpline.
    """
    x = x.unsqueeze(-1)
    t = knots
    # degree 0: indicator of [t_m, t_{m+1})
    b = ((x >= t[:-1]) & (x < t[1:])).to(x.dtype)
    for p in range(1, order + 1):
        left_den = t[p:-1] - t[: -p - 1]
        right_den = t[p + 1 :] - t[1:-p]
        # 0/0 := 0 for repeated knots
        left = torch.where(left_den > 0, (x - t[: -p - 1]) / left_den.clamp_min(1e-300), torch.zeros_like(x))
        right = torch.where(
            right_den > 0, (t[p + 1 :] - x) / right_den.clamp_min(1e-300), torch.zeros_like(x)
        )
        b = left * b[..., :-1] + right * b[..., 1:]
    return b


def _local_values(f: Tensor, order: int) -> list[Tensor]:
    """Values v[r] = M_k(f + r), r = 0..k, of the k+1 non-zero cardinal B-splines at fractional position f."""
    v = [torch.ones_like(f)]
    for p in range(1, order + 1):
        nxt = []
        for r in range(p + 1):
            term = torch.zeros_like(f)
            if r < p:  # v_{p-1}[r]
                term = term + (f + r) * v[r]
            if r >= 1:  # v_{p-1}[r-1]
                term = term + (p + 1 - f - r) * v[r - 1]
            nxt.append(term / p)
        v = nxt
    return v


def uniform_bspline_local(
    x: Tensor, low: Tensor | float, h: Tensor | float, grid_size: int, order: int
) -> tuple[Tensor, Tensor]:
    """Non-zero bases of a uniform grid, in compact form.

    Args:
        x: (..., F) inputs; ``low`` and ``h`` broadcast against x (per-feature grids: shape (F,)).
        grid_size: G; order: k.
    Returns:
        values (..., F, k+1) and indices (..., F, k+1) (long) into the G + k bases: values[..., r] belongs to
        basis index[..., r] = j - r where j is the interval index (shifted by k).
    """
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(compute_dtype)
        u = (x - low) / h
        # clamp into [0, G]; the right end belongs to the last interval (f = 1)
        u = u.clamp(0.0, float(grid_size))
        j = torch.floor(u).clamp_max(grid_size - 1)
        f = u - j
        vals = torch.stack(_local_values(f, order), dim=-1)
        r = torch.arange(order + 1, device=x.device)
        idx = j.long().unsqueeze(-1) + order - r
    return vals, idx


def uniform_bspline_basis(
    x: Tensor, low: Tensor | float, h: Tensor | float, grid_size: int, order: int
) -> Tensor:
    """Dense bases (..., F, G + k) of a uniform grid (inputs clamped to the grid, see module docstring)."""
    vals, idx = uniform_bspline_local(x, low, h, grid_size, order)
    out = torch.zeros(*vals.shape[:-1], grid_size + order, dtype=vals.dtype, device=vals.device)
    return out.scatter(-1, idx, vals)


# --------------------------------------------------------------------------------------------------------------
# Fast paths with hand-written backward passes.
#
# Autograd through `uniform_bspline_local` records ~30 element-wise ops per input and a scatter; its backward is
# several times the forward. On a uniform grid the derivative is closed form, d/du M_k(t) = M_{k-1}(t) - M_{k-1}(t-1),
# i.e. dv_k[r]/df = v_{k-1}[r] - v_{k-1}[r-1], so the backward needs only x (recomputed, nothing big is saved).
# Inputs clamped to the grid get zero derivative through the spline term (the function is constant there).
# --------------------------------------------------------------------------------------------------------------


def _local_with_derivative(
    x: Tensor, low: Tensor, h: Tensor, grid_size: int, order: int
) -> tuple[Tensor, Tensor, Tensor]:
    """values (..., F, k+1), d values / dx (..., F, k+1), indices (..., F, k+1) for a uniform grid."""
    u = (x - low) / h
    inside = (u >= 0) & (u <= grid_size)
    u = u.clamp(0.0, float(grid_size))
    j = torch.floor(u).clamp_max(grid_size - 1)
    f = u - j
    if order == 0:
        vals = torch.ones_like(f).unsqueeze(-1)
        dvals = torch.zeros_like(vals)
    else:
        lower = _local_values(f, order - 1)  # k values of order k-1
        vals = torch.stack(_local_values(f, order), dim=-1)
        zero = torch.zeros_like(f)
        d = [(lower[r] if r < order else zero) - (lower[r - 1] if r >= 1 else zero) for r in range(order + 1)]
        dvals = torch.stack(d, dim=-1) * (inside.to(f.dtype) / h).unsqueeze(-1)
    r = torch.arange(order + 1, device=x.device)
    idx = j.long().unsqueeze(-1) + order - r
    return vals, dvals, idx


class _UniformBasisFn(torch.autograd.Function):
    """x (..., F) -> dense bases (..., F, G + k); backward recomputes the local derivative from x."""

    @staticmethod
    def forward(ctx, x: Tensor, low: Tensor, h: Tensor, grid_size: int, order: int) -> Tensor:
        vals, _, idx = _local_with_derivative(x, low, h, grid_size, order)
        ctx.save_for_backward(x, low, h)
        ctx.grid = (grid_size, order)
        out = torch.zeros(*vals.shape[:-1], grid_size + order, dtype=vals.dtype, device=vals.device)
        return out.scatter_(-1, idx, vals)

    @staticmethod
    def backward(ctx, grad_basis: Tensor):
        x, low, h = ctx.saved_tensors
        grid_size, order = ctx.grid
        _, dvals, idx = _local_with_derivative(x, low, h, grid_size, order)
        grad_x = (grad_basis.gather(-1, idx) * dvals).sum(-1)
        return grad_x, None, None, None, None


class _SplineActivationFn(torch.autograd.Function):
    """s[..., f] = sum_m coef[f, m] B_m(x[..., f]) on per-feature uniform grids, with a hand-written backward.

    grad_x = sum_r g * dv_r * coef[f, j - r];  grad_coef[f, m] = sum_n g * B_m(x) (dense scatter, then a reduction).
    """

    @staticmethod
    def forward(ctx, x: Tensor, coef: Tensor, low: Tensor, h: Tensor, grid_size: int, order: int) -> Tensor:
        vals, _, idx = _local_with_derivative(x, low, h, grid_size, order)
        n_basis = grid_size + order
        offset = torch.arange(coef.shape[0], device=x.device).unsqueeze(-1) * n_basis
        flat_idx = idx + offset
        ctx.save_for_backward(x, coef, low, h)
        ctx.grid = (grid_size, order)
        return (vals * coef.reshape(-1)[flat_idx]).sum(-1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, coef, low, h = ctx.saved_tensors
        grid_size, order = ctx.grid
        vals, dvals, idx = _local_with_derivative(x, low, h, grid_size, order)
        n_basis = grid_size + order
        grad_x = grad_coef = None
        if ctx.needs_input_grad[0]:
            offset = torch.arange(coef.shape[0], device=x.device).unsqueeze(-1) * n_basis
            grad_x = grad * (dvals * coef.reshape(-1)[idx + offset]).sum(-1)
        if ctx.needs_input_grad[1]:
            weighted = (grad.unsqueeze(-1) * vals).reshape(-1, coef.shape[0], order + 1)
            dense = torch.zeros(weighted.shape[0], coef.shape[0], n_basis, dtype=vals.dtype, device=x.device)
            dense.scatter_(-1, idx.reshape(-1, coef.shape[0], order + 1), weighted)
            grad_coef = dense.sum(0)
        return grad_x, grad_coef, None, None, None, None


def _prepare(x: Tensor, low, h) -> tuple[Tensor, Tensor, Tensor]:
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    low_t = torch.as_tensor(low, dtype=dtype, device=x.device)
    h_t = torch.as_tensor(h, dtype=dtype, device=x.device)
    return x.to(dtype), low_t, h_t


def bspline_basis_fast(x: Tensor, low, h, grid_size: int, order: int) -> Tensor:
    """Same values as :func:`uniform_bspline_basis` (float32/64, clamped), with a hand-written backward."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, low_t, h_t = _prepare(x, low, h)
        return _UniformBasisFn.apply(x, low_t, h_t, grid_size, order)


def spline_activation(x: Tensor, coef: Tensor, low, h, grid_size: int, order: int) -> Tensor:
    """Per-feature spline sum_m coef[f, m] B_m(x[..., f]); x (..., F), coef (F, G + k) -> (..., F)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, low_t, h_t = _prepare(x, low, h)
        return _SplineActivationFn.apply(x, coef.to(x.dtype), low_t, h_t, grid_size, order)
