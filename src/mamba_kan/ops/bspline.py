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
        right = torch.where(right_den > 0, (t[p + 1 :] - x) / right_den.clamp_min(1e-300), torch.zeros_like(x))
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
