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
  the closed form (1-f)^3/6, (3f^3 - 6f^2 + 4)/6, (-3f^3 + 3f^2 + 3f + 1)/6, f^3/6 (the uniform cubic B-spline
  weights; de Boor 2001, ch. IX).

Grid convention (KAN paper, pykan, efficient-kan): G intervals on [low, high], h = (high - low) / G, knots
t_m = low + (m - k) h for m = 0..G+2k, giving G + k basis functions; basis m is supported on [t_m, t_{m+k+1}].
The bases form a partition of unity on [low, high].

Out-of-grid inputs: the fast path clamps x to [low, high] before evaluating, i.e. every spline is extended as a
*constant* beyond its grid (its boundary value). A spline therefore never silently "dies" (all-zero bases) outside
its grid; the silu base branch of KAN edges and B-spline activations still sees the unclamped x.
All bases are computed in float32 (float64 inputs stay float64), also under autocast.

Piecewise-polynomial table (:func:`spline_table`): on interval j a spline sum_m c_m B_m is one polynomial of degree
k in the local fraction t = u - j (u = (x - low) / h), with coefficients P[j, p] = sum_r c[j + k - r] Mc[r, p],
where v_r(t) = M_k(t + r) = sum_p Mc[r, p] t^p are the k+1 cardinal pieces (:func:`cardinal_piece_coefficients`).
The table (F, G + 2, k + 1) also holds two constant rows for inputs left and right of the grid (the clamped,
constant extension), so evaluation is "pick a row, Horner" (:func:`table_rows`) and the derivative in the clamped
region is 0 without a mask. On [0, 1] the monomial form is well conditioned (|Mc| <= 1), so float32 keeps ~1e-7
relative accuracy.

Derivatives: d/dx = (dP/dt) / h inside the grid, 0 outside (constant extension). The dense-basis path
differentiates the local values in closed form, d/du M_k(t) = M_{k-1}(t) - M_{k-1}(t-1), i.e.
dv_k[r]/df = v_{k-1}[r] - v_{k-1}[r-1] (:func:`local_values_and_derivative`). At exactly u = G the table takes the
(zero) derivative of the right extension, the dense basis the left one; the values agree (splines are
continuous), only this measure-zero kink differs.

The autograd functions (hand-written backward passes) and the dispatch to the optional C kernels are in
:mod:`mamba_kan.ops.bspline_autograd`.
"""

from __future__ import annotations

import functools
from fractions import Fraction

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


def local_values(f: Tensor, order: int) -> list[Tensor]:
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
        vals = torch.stack(local_values(f, order), dim=-1)
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


def local_values_and_derivative(
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
        lower = local_values(f, order - 1)  # k values of order k-1
        vals = torch.stack(local_values(f, order), dim=-1)
        zero = torch.zeros_like(f)
        d = [(lower[r] if r < order else zero) - (lower[r - 1] if r >= 1 else zero) for r in range(order + 1)]
        dvals = torch.stack(d, dim=-1) * (inside.to(f.dtype) / h).unsqueeze(-1)
    r = torch.arange(order + 1, device=x.device)
    idx = j.long().unsqueeze(-1) + order - r
    return vals, dvals, idx


@functools.cache
def cardinal_piece_coefficients(order: int) -> tuple[tuple[float, ...], ...]:
    """Mc[r][p]: v_r(t) = M_k(t + r) = sum_p Mc[r][p] t^p on t in [0, 1], r, p = 0..k, exact (rational arithmetic).

    From the cardinal recurrence of the module docstring applied to polynomials; v_r belongs to basis j + k - r.
    k = 3: v_0 = t^3/6, v_1 = (1 + 3t + 3t^2 - 3t^3)/6, v_2 = (4 - 6t^2 + 3t^3)/6, v_3 = (1 - t)^3/6.
    """

    def add(a: list[Fraction], b: list[Fraction]) -> list[Fraction]:
        n = max(len(a), len(b))
        return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n)]

    def times_linear(a: list[Fraction], c0: Fraction, c1: Fraction) -> list[Fraction]:
        """a(t) * (c0 + c1 t)."""
        return add([c0 * v for v in a], [Fraction(0)] + [c1 * v for v in a])

    v: list[list[Fraction]] = [[Fraction(1)]]
    for p in range(1, order + 1):
        nxt = []
        for r in range(p + 1):
            term: list[Fraction] = [Fraction(0)]
            if r < p:  # (t + r) v[r]
                term = add(term, times_linear(v[r], Fraction(r), Fraction(1)))
            if r >= 1:  # (p + 1 - t - r) v[r - 1]
                term = add(term, times_linear(v[r - 1], Fraction(p + 1 - r), Fraction(-1)))
            nxt.append([c / p for c in term])
        v = nxt
    return tuple(tuple(float(c[i]) if i < len(c) else 0.0 for i in range(order + 1)) for c in v)


def spline_table(coef: Tensor, grid_size: int, order: int) -> Tensor:
    """Monomial coefficients (F, G + 2, k + 1) of each feature's spline, per row: [left of grid, interval 0, ...,
    interval G-1, right of grid]. coef: (F, G + k). Differentiable in coef (small ops only)."""
    k1 = order + 1
    mc = torch.tensor(cardinal_piece_coefficients(order), dtype=coef.dtype, device=coef.device)  # (r, p)
    windows = coef.unfold(-1, k1, 1)  # (F, G, k+1): windows[f, j, q] = coef[f, j + q], i.e. r = k - q
    interior = windows @ mc.flip(0)  # (F, G, k+1)
    zeros = interior.new_zeros(coef.shape[0], 1, order)
    left = torch.cat([interior[:, :1, :1], zeros], dim=-1)  # value at u = 0
    right = torch.cat([interior[:, -1:, :].sum(-1, keepdim=True), zeros], dim=-1)  # value at u = G
    return torch.cat([left, interior, right], dim=1)


def table_rows(x2: Tensor, low: Tensor, h: Tensor, grid_size: int) -> tuple[Tensor, Tensor]:
    """Local fraction t and flat table row f * (G + 2) + j + 1 for x2 (N, F)."""
    u = ((x2 - low) / h).clamp_(-1.0, float(grid_size))
    j = u.floor()
    t = u.sub_(j)  # NaN inputs keep t = NaN (and so a NaN output) ...
    j.nan_to_num_(nan=-1.0)  # ... while their row stays a valid index
    base = torch.arange(x2.shape[1], device=x2.device, dtype=j.dtype) * (grid_size + 2) + 1
    return t, (j + base).long()
