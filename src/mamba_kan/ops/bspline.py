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

import concurrent.futures
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


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
# Profiling BSplineMLP(128, 496) forward + backward on 2048 tokens showed the matmuls at ~5% of the time: the rest
# was ~150 small element-wise ops (the local-value recursion, gathers of the k+1 active coefficients, scatters).
# Three ideas make the spline layers cost about as much as their matmuls:
#
# 1. Piecewise-polynomial table. On interval j a spline sum_m c_m B_m is one polynomial of degree k in the local
#    fraction t = u - j (u = (x - low) / h), with coefficients P[j, p] = sum_r c[j + k - r] Mc[r, p], where
#    v_r(t) = M_k(t + r) = sum_p Mc[r, p] t^p are the k+1 cardinal pieces (module docstring; for k = 3 the
#    closed form of REFERENCE.md §1). The table (F, G + 2, k + 1) also holds two constant rows for inputs left and
#    right of the grid (the clamped, constant extension), so evaluation is "pick a row, Horner" and the derivative
#    of the clamped region is 0 without a mask. The table is a tiny differentiable function of the coefficients:
#    the hand-written backward only produces d loss / d table (sum_n g t^p per row), autograd maps it to coef.
#    On [0, 1] the monomial form is well conditioned (|Mc| <= 1), so float32 keeps ~1e-7 relative accuracy.
# 2. Recomputation instead of saving: the backward recomputes t and the row from x (a few flops), and the KAN
#    layer recomputes its (N, in * (G + k + 1)) feature matrix instead of keeping it for the weight gradient.
# 3. Small generated C kernels (CPU, float32), one pass over the data per direction, compiled on first use with the
#    system C compiler and loaded with ctypes (no torch headers: ~1 s to build, cached per source and CPU). They
#    are optional: without a compiler, on other devices and dtypes, or with MAMBA_KAN_KERNELS=0, the same maths
#    runs as plain PyTorch ops ("eager" below); tests compare both against the float64 reference.
#
# Derivatives: d/dx = (dP/dt) / h inside the grid, 0 outside (constant extension). At exactly u = G the
# polynomial-table paths take the (zero) derivative of the right extension, the dense-basis path the left one; the
# values agree (splines are continuous), only this measure-zero kink differs. The dense-basis path
# (bspline_basis_fast, and the KAN layer without the kernels) differentiates the local values in closed form,
# d/du M_k(t) = M_{k-1}(t) - M_{k-1}(t-1), i.e. dv_k[r]/df = v_{k-1}[r] - v_{k-1}[r-1], recomputed from x.
#
# Measured (BSplineMLP / KANFFN vs MLP, d_model 128, 2048 tokens, fwd + bwd, 1 thread; docs/benchmarks.md): the
# PyTorch path 2.4-3x / 2.7-2.9x the MLP, the C kernels ~1.2x / ~1.25x (the seed project: 24.5x; efficient-kan
# 5.4x). The activation kernels cost ~2 ms forward and ~3.5 ms backward on a (2048, 496) input.
# --------------------------------------------------------------------------------------------------------------

log = logging.getLogger(__name__)


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


# --- 1. the piecewise-polynomial table ------------------------------------------------------------------------
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


# --- 3. generated C kernels -------------------------------------------------------------------------------------
_C_EXP = """
#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) = 2^i * 2^f, f in [-1/2, 1/2], 2^f by its degree-7 Taylor polynomial (relative error < 5e-9 before
   float32 rounding). Written with selects and bit moves so that gcc/clang vectorise it; inputs clamped to
   [-87, 88] (NaN -> -87: callers propagate NaN through their other operands). */
static inline float mk_exp(float x) {
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    float z = x * 1.44269504088896341f;
    float n = floorf(z + 0.5f);
    float f = z - n;
    float p = 1.5252733804059841e-5f;
    p = fmaf(p, f, 1.5403530393381609e-4f);
    p = fmaf(p, f, 1.3333558146428443e-3f);
    p = fmaf(p, f, 9.6181291076284772e-3f);
    p = fmaf(p, f, 5.5504108664821580e-2f);
    p = fmaf(p, f, 2.4022650695910071e-1f);
    p = fmaf(p, f, 6.9314718055994531e-1f);
    p = fmaf(p, f, 1.0f);
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, 4);
    return p * s;
}
"""


def _c_float(v: float) -> str:
    return f"{v!r}f" if "e" in repr(v) or "." in repr(v) else f"{v!r}.0f"


def _c_horner(coeffs: list[float], var: str) -> str:
    """C expression for sum_p coeffs[p] var^p."""
    expr = _c_float(coeffs[-1])
    for c in reversed(coeffs[:-1]):
        expr = f"fmaf({expr}, {var}, {_c_float(c)})"
    return expr


def _kernel_source(grid_size: int, order: int, block: int = 64) -> str:
    """C source of the four kernels for one (G, k): everything unrolled, so the loop over features vectorises.

    Layouts (row-major, float32): activation x, y, g: (rows, F); table: (G + 2, k + 1, F); KAN features:
    (rows, 1 + G + k, F) = [silu(x) | B_0(x) | ... | B_{G+k-1}(x)] per row.
    """
    g, k = grid_size, order
    k1, rows_t, n_basis = k + 1, g + 2, g + k
    mc = cardinal_piece_coefficients(k)
    lines = [f"/* mamba-kan spline kernels, G = {g}, k = {k} */", _C_EXP]

    ind = " " * 16

    def select_table() -> list[str]:
        """c0..ck = coefficients of table row j (0 = left of grid .. G + 1 = right), by selects (no gathers)."""
        out = [f"{ind}float c{p} = tb[{p}][l];" for p in range(k1)]
        for r in range(1, rows_t):
            out += [f"{ind}c{p} = (j == {r}) ? tb[{r * k1 + p}][l] : c{p};" for p in range(k1)]
        return out

    head = [
        f"{ind}float xv = x[o + l];",
        f"{ind}float u = fmaf(xv, sc[l], sh[l]);",
        f"{ind}float uc = u > -1.0f ? u : -1.0f;",  # NaN -> -1: a valid row; t keeps the NaN
        f"{ind}uc = uc < {g}.0f ? uc : {g}.0f;",
        f"{ind}float jf = floorf(uc);",
        f"{ind}float t = (u != u) ? u : uc - jf;",
        f"{ind}int j = (int)jf + 1;",
    ]
    horner = "c" + str(k)
    for p in range(k - 1, -1, -1):
        horner = f"fmaf({horner}, t, c{p})"
    dhorner = "0.0f"
    if k >= 1:
        dhorner = f"{k}.0f * c{k}"
        for p in range(k - 1, 0, -1):
            dhorner = f"fmaf({dhorner}, t, {p}.0f * c{p})"
    # The backward walks features in blocks of 64 (four AVX-512 vectors) with the rows inside: the block's table
    # slice, grid and sums of g t^p live in small aligned local arrays (L1) instead of being re-read and
    # re-written per row. 64 wide, each row's slice is a few whole cache lines (16-wide blocks of rows of
    # F % 16 != 0 floats straddled lines and ran ~2x slower). A last, partial block is shifted left to end at F so
    # every block is full width (a scalar remainder was ~3x slower); its first `skip` lanes repeat features of
    # the previous block: they rewrite the same gx but add no sums twice.
    block_open = f"""
    const int64_t W = F < {block} ? F : {block};
    float tb[{rows_t * k1}][{block}], sc[{block}], sh[{block}], wl[{block}];
    for (int64_t b = 0; b < F; b += {block}) {{
        const int64_t f0 = (F - b < {block} && F >= {block}) ? F - {block} : b;
        const int64_t skip = b - f0;
        for (int64_t l = 0; l < W; ++l) {{
            for (int q = 0; q < {rows_t * k1}; ++q) tb[q][l] = table[q * F + f0 + l];
            sc[l] = scale[f0 + l];
            sh[l] = shift[f0 + l];
            wl[l] = wb ? wb[f0 + l] : 0.0f;
        }}
        (void)wl;"""
    for base in (0, 1):
        # forward: rows outer, features inner (contiguous streams; the table is read in place, it stays in L2)
        fwd = [ln.replace("[l]", "[f]").replace("[o + l]", "[o + f]") for ln in head]
        fwd = [ln.replace("sc[f]", "scale[f]").replace("sh[f]", "shift[f]") for ln in fwd]
        fwd += [f"{ind}float c{p} = table[{p} * F + f];" for p in range(k1)]
        for r in range(1, rows_t):
            fwd += [f"{ind}c{p} = (j == {r}) ? table[{r * k1 + p} * F + f] : c{p};" for p in range(k1)]
        fwd.append(f"{ind}float s = {horner};")
        if base:
            fwd.append(f"{ind}s = fmaf(wb[f], xv / (1.0f + mk_exp(-xv)), s);")
        fwd.append(f"{ind}y[o + f] = s;")
        lines.append(
            f"""
void act_fwd{base}(const float* restrict x, float* restrict y, int64_t rows, int64_t F,
                  const float* restrict scale, const float* restrict shift,
                  const float* restrict table, const float* restrict wb) {{
    (void)wb;
    for (int64_t n = 0; n < rows; ++n) {{
        const int64_t o = n * F;
#pragma omp simd
        for (int64_t f = 0; f < F; ++f) {{
"""
            + "\n".join(fwd)
            + """
        }
    }
}
"""
        )
        body = head + [f"{ind}float gv = g[o + l];"] + select_table()
        body.append(f"{ind}float d = ({dhorner}) * sc[l];")
        if base:
            body += [
                f"{ind}float sg = 1.0f / (1.0f + mk_exp(-xv));",
                f"{ind}float sl = xv * sg;",
                f"{ind}d = fmaf(wl[l], sg + sl * (1.0f - sg), d);",
                f"{ind}accw[l] = fmaf(gv, sl, accw[l]);",
            ]
        body.append(f"{ind}gx[o + l] = gv * d;")
        body.append(f"{ind}float q0 = gv;")
        body += [f"{ind}float q{p} = q{p - 1} * t;" for p in range(1, k1)]
        # sums of g t^p per table row; the select form (not `+= cond ? q : 0`) is what gcc vectorises
        for r in range(rows_t):
            for p in range(k1):
                a = f"acc[{r * k1 + p}][l]"
                body.append(f"{ind}{a} = (j == {r}) ? {a} + q{p} : {a};")
        lines.append(
            f"""
void act_bwd{base}(const float* restrict x, const float* restrict g, float* restrict gx, int64_t rows,
                  int64_t F, const float* restrict scale, const float* restrict shift,
                  const float* restrict table, const float* restrict wb,
                  float* restrict gtable, float* restrict gwb) {{{block_open}
        float acc[{rows_t * k1}][{block}];
        float accw[{block}];
        memset(acc, 0, sizeof(acc));
        memset(accw, 0, sizeof(accw));
        for (int64_t n = 0; n < rows; ++n) {{
            const int64_t o = n * F + f0;
#pragma omp simd
            for (int64_t l = 0; l < W; ++l) {{
"""
            + "\n".join(body)
            + f"""
            }}
        }}
        for (int q = 0; q < {rows_t * k1}; ++q)
            for (int64_t l = skip; l < W; ++l) gtable[q * F + f0 + l] += acc[q][l];
        if (gwb)
            for (int64_t l = skip; l < W; ++l) gwb[f0 + l] += accw[l];
    }}
}}
"""
        )

    # KAN features: dense bases on the clamped input, exactly as uniform_bspline_local (interval j <= G - 1)
    head = [
        "            float xv = x[n * F + f];",
        "            float u = fmaf(xv, scale[f], shift[f]);",
        "            float uc = u > 0.0f ? u : 0.0f;",
        f"            uc = uc < {g}.0f ? uc : {g}.0f;",
        "            float jf = floorf(uc);",
        f"            jf = jf < {g - 1}.0f ? jf : {g - 1}.0f;",
        "            float t = (u != u) ? u : uc - jf;",
        "            int j = (int)jf;",
    ]

    def basis_selects(vals: str) -> list[str]:
        """b_m = value of basis m: v_r with j + k - r = m, else 0."""
        out = []
        for m in range(n_basis):
            out.append(f"            float b{m} = 0.0f;")
            for r in range(k1):
                jj = m - k + r
                if 0 <= jj <= g - 1:
                    out.append(f"            b{m} = (j == {jj}) ? {vals}{r} : b{m};")
        return out

    fwd = list(head)
    fwd += [f"            float v{r} = {_c_horner(list(mc[r]), 't')};" for r in range(k1)]
    fwd.append("            o[f] = xv / (1.0f + mk_exp(-xv));")
    fwd += basis_selects("v")
    fwd += [f"            o[{m + 1} * F + f] = b{m};" for m in range(n_basis)]
    lines.append(
        f"""
void kan_fwd(const float* restrict x, float* restrict out, int64_t rows, int64_t F,
             const float* restrict scale, const float* restrict shift) {{
    for (int64_t n = 0; n < rows; ++n) {{
        float* restrict o = out + n * {n_basis + 1} * F;
#pragma omp simd
        for (int64_t f = 0; f < F; ++f) {{
"""
        + "\n".join(fwd)
        + """
        }
    }
}
"""
    )
    bwd = list(head)
    for r in range(k1):
        dc = [p * mc[r][p] for p in range(1, k1)] or [0.0]
        bwd.append(f"            float dv{r} = {_c_horner(dc, 't')};")
    bwd += basis_selects("dv")
    bwd.append("            float acc = 0.0f;")
    bwd += [f"            acc += gi[{m + 1} * F + f] * b{m};" for m in range(n_basis)]
    bwd += [
        "            float sg = 1.0f / (1.0f + mk_exp(-xv));",
        "            float ds = sg + xv * sg * (1.0f - sg);",
        f"            float inside = (u >= 0.0f && u <= {g}.0f) ? scale[f] : 0.0f;",
        "            gx[n * F + f] = gi[f] * ds + (inside != 0.0f ? acc * inside : 0.0f);",
    ]
    lines.append(
        f"""
void kan_bwd(const float* restrict x, const float* restrict gfeat, float* restrict gx, int64_t rows, int64_t F,
             const float* restrict scale, const float* restrict shift) {{
    for (int64_t n = 0; n < rows; ++n) {{
        const float* restrict gi = gfeat + n * {n_basis + 1} * F;
#pragma omp simd
        for (int64_t f = 0; f < F; ++f) {{
"""
        + "\n".join(bwd)
        + """
        }
    }
}
"""
    )
    return "\n".join(lines)


_C_FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math")
_C_LIBS = ("-lm",)
_KERNEL_CACHE: dict[tuple[int, int], _Kernels | None] = {}
_ENV_SWITCH = "MAMBA_KAN_KERNELS"  # "0" = never use the C kernels


def _cache_dir() -> Path:
    """$MAMBA_KAN_CACHE_DIR, else ~/.cache/mamba_kan/kernels (or the temp dir when home is not writable)."""
    env = os.environ.get("MAMBA_KAN_CACHE_DIR")
    for path in ([Path(env)] if env else []) + [
        Path.home() / ".cache" / "mamba_kan" / "kernels",
        Path(tempfile.gettempdir()) / f"mamba_kan_kernels_{os.getuid() if hasattr(os, 'getuid') else 0}",
    ]:
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    raise OSError("no writable cache directory for the spline kernels")


def _machine_tag() -> str:
    """Identifies the CPU (the kernels are built with -march=native): model and feature flags where readable."""
    info = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            info += "".join(
                ln for ln in fh.read().splitlines()[:40] if ln.startswith(("model name", "flags"))
            )
    except OSError:
        pass
    return info


class _Kernels:
    """ctypes handles of one compiled (G, k) kernel library. Calls release the GIL, so row chunks can run on
    Python threads in parallel (torch.get_num_threads() of them)."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        p, i = ctypes.c_void_p, ctypes.c_int64
        for name, args in (
            ("act_fwd0", [p, p, i, i, p, p, p, p]),
            ("act_fwd1", [p, p, i, i, p, p, p, p]),
            ("act_bwd0", [p, p, p, i, i, p, p, p, p, p, p]),
            ("act_bwd1", [p, p, p, i, i, p, p, p, p, p, p]),
            ("kan_fwd", [p, p, i, i, p, p]),
            ("kan_bwd", [p, p, p, i, i, p, p]),
        ):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, None
        self.lib = lib
        self.path = path


def _compile(source: str, out: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise OSError("no C compiler (cc, gcc or clang) on PATH")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        src = Path(tmp) / "kernels.c"
        src.write_text(source)
        so = Path(tmp) / out.name
        errors = ""
        for arch in (["-march=native"], []):  # some compilers (Apple clang on arm64) reject -march=native
            cmd = [compiler, *_C_FLAGS, *arch, str(src), "-o", str(so), *_C_LIBS]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if res.returncode == 0:
                os.replace(so, out)  # atomic: concurrent processes may build the same file
                return
            errors = res.stderr.strip().splitlines()[-1:] or [f"exit status {res.returncode}"]
        raise OSError(f"compiling the spline kernels failed: {errors[0]}")


def load_kernels(grid_size: int, order: int) -> _Kernels | None:
    """The compiled kernels for (G, k), building them on first use; None when unavailable (no compiler, build
    error, or MAMBA_KAN_KERNELS=0) - callers then use the PyTorch path. Failures are logged once per (G, k)."""
    key = (grid_size, order)
    if os.environ.get(_ENV_SWITCH, "1") == "0":
        return None
    if key in _KERNEL_CACHE:
        return _KERNEL_CACHE[key]
    kernels = None
    try:
        source = _kernel_source(grid_size, order)
        digest = hashlib.sha256("\0".join([source, *_C_FLAGS, _machine_tag()]).encode()).hexdigest()[:20]
        path = _cache_dir() / f"splines_g{grid_size}_k{order}_{digest}.so"
        if not path.exists():
            t0 = time.perf_counter()
            _compile(source, path)
            log.info(
                "built spline kernels G=%d k=%d in %.1f s: %s",
                grid_size,
                order,
                time.perf_counter() - t0,
                path,
            )
        kernels = _Kernels(path)
    except (OSError, subprocess.SubprocessError, AttributeError) as exc:
        log.warning("spline C kernels unavailable (%s); using the PyTorch path", exc)
    _KERNEL_CACHE[key] = kernels
    return kernels


def _cpu_autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def kernel_backend(x: Tensor, grid_size: int, order: int) -> _Kernels | None:
    """Kernels for this input, or None when the PyTorch path must run (not CPU float32, autocast on, no build)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or _cpu_autocast_on():
        return None
    return load_kernels(grid_size, order)


_POOL: dict[int, concurrent.futures.ThreadPoolExecutor] = {}  # by size
_MIN_CHUNK = 1 << 16  # elements per thread below which splitting costs more than it saves


def _run_rows(fn: Callable[[int, int, int], None], rows: int, row_elems: int) -> int:
    """Call fn(start, stop, part) on row ranges covering [0, rows), on up to torch.get_num_threads() threads.
    Returns the number of parts (fixed for a given thread count and size, so results are reproducible)."""
    parts = max(1, min(torch.get_num_threads(), rows, (rows * row_elems) // _MIN_CHUNK))
    if parts == 1:
        fn(0, rows, 0)
        return 1
    pool = _POOL.get(parts)
    if pool is None:
        pool = _POOL[parts] = concurrent.futures.ThreadPoolExecutor(
            parts, thread_name_prefix="mamba-kan-spline"
        )
    bounds = [rows * i // parts for i in range(parts + 1)]
    futures = [pool.submit(fn, bounds[i], bounds[i + 1], i) for i in range(parts)]
    for fut in futures:
        fut.result()
    return parts


def _ptr(t: Tensor, offset_elems: int = 0) -> int:
    return t.data_ptr() + offset_elems * t.element_size()


# --- autograd functions ---------------------------------------------------------------------------------------
def _table_rows(x2: Tensor, low: Tensor, h: Tensor, grid_size: int) -> tuple[Tensor, Tensor]:
    """PyTorch path: local fraction t and flat table row f * (G + 2) + j + 1 for x2 (N, F)."""
    u = ((x2 - low) / h).clamp_(-1.0, float(grid_size))
    j = u.floor()
    t = u.sub_(j)  # NaN inputs keep t = NaN (and so a NaN output) ...
    j.nan_to_num_(nan=-1.0)  # ... while their row stays a valid index
    base = torch.arange(x2.shape[1], device=x2.device, dtype=j.dtype) * (grid_size + 2) + 1
    return t, (j + base).long()


class _SplineTableFn(torch.autograd.Function):
    """y = P[row(x)](t(x)) (+ w_b silu(x)) for x2 (N, F), table (F, G + 2, k + 1), optional base weight (F,).

    Returns y and, in backward, d/dx, d/dtable = sum_n g t^p per row and d/dw_b = sum_n g silu(x).
    ``kernels`` None = PyTorch ops (any device or dtype), else the C kernels (CPU float32).
    """

    @staticmethod
    def forward(ctx, x2, table, base_weight, low, h, grid_size, kernels):  # type: ignore[override]
        ctx.save_for_backward(x2, table, base_weight, low, h)
        ctx.grid_size, ctx.kernels = grid_size, kernels
        if kernels is not None:
            return _act_kernel_forward(kernels, x2, table, base_weight, low, h)
        n_feat, rows_t, k1 = table.shape
        t, row = _table_rows(x2, low, h, grid_size)
        flat = table.reshape(n_feat * rows_t, k1).t().contiguous()  # (k+1, F * (G + 2))
        y = flat[k1 - 1].take(row)
        for p in range(k1 - 2, -1, -1):
            y = y.mul_(t).add_(flat[p].take(row))
        if base_weight is not None:
            y = y.addcmul_(torch.nn.functional.silu(x2), base_weight)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x2, table, base_weight, low, h = ctx.saved_tensors
        grad = grad.contiguous()
        if ctx.kernels is not None:
            gx, gtable, gwb = _act_kernel_backward(ctx.kernels, x2, grad, table, base_weight, low, h)
            return gx, gtable, gwb, None, None, None, None
        n_feat, rows_t, k1 = table.shape
        t, row = _table_rows(x2, low, h, ctx.grid_size)
        dflat = (table[..., 1:] * torch.arange(1, k1, dtype=table.dtype, device=table.device)).reshape(
            n_feat * rows_t, k1 - 1
        )
        dflat = dflat.t().contiguous()
        if k1 > 1:
            d = dflat[k1 - 2].take(row)
            for p in range(k1 - 3, -1, -1):
                d = d.mul_(t).add_(dflat[p].take(row))
            gx = d.mul_(grad).div_(h)
        else:
            gx = torch.zeros_like(x2)
        gwb = None
        if base_weight is not None:
            gx.addcmul_(torch.ops.aten.silu_backward(grad, x2), base_weight)
            gwb = (grad * torch.nn.functional.silu(x2)).sum(0)
        powers = [grad]
        for _ in range(1, k1):
            powers.append(powers[-1] * t)
        gtable = torch.zeros(n_feat * rows_t, k1, dtype=table.dtype, device=table.device)
        gtable.index_add_(0, row.reshape(-1), torch.stack(powers, -1).reshape(-1, k1))
        return gx, gtable.reshape(n_feat, rows_t, k1), gwb, None, None, None, None


def _scale_shift(low: Tensor, h: Tensor, n_feat: int) -> tuple[Tensor, Tensor]:
    """u = x * scale + shift with scale = 1/h, shift = -low/h, as contiguous float32 (F,) vectors."""
    scale = (1.0 / h).to(torch.float32).expand(n_feat).contiguous()
    shift = (-low / h).to(torch.float32).expand(n_feat).contiguous()
    return scale, shift


def _act_kernel_forward(kernels: _Kernels, x2, table, base_weight, low, h) -> Tensor:
    """C-kernel forward of :class:`_SplineTableFn`; x2 (N, F) contiguous float32."""
    n, n_feat = x2.shape
    tab = table.detach().permute(1, 2, 0).contiguous()  # (G + 2, k + 1, F)
    scale, shift = _scale_shift(low, h, n_feat)
    wb = base_weight.detach().contiguous() if base_weight is not None else scale
    y = torch.empty_like(x2)
    fn = kernels.lib.act_fwd1 if base_weight is not None else kernels.lib.act_fwd0

    def part(start: int, stop: int, _i: int) -> None:
        fn(_ptr(x2, start * n_feat), _ptr(y, start * n_feat), stop - start, n_feat, _ptr(scale), _ptr(shift),
           _ptr(tab), _ptr(wb))  # fmt: skip

    _run_rows(part, n, n_feat)
    return y


def _act_kernel_backward(kernels: _Kernels, x2, grad, table, base_weight, low, h):
    """C-kernel backward: (d/dx2, d/dtable (F, G + 2, k + 1), d/dw_b or None); per-thread sums, then added."""
    n, n_feat = x2.shape
    tab = table.permute(1, 2, 0).contiguous()
    scale, shift = _scale_shift(low, h, n_feat)
    wb = base_weight.contiguous() if base_weight is not None else scale
    gx = torch.empty_like(x2)
    parts = max(1, torch.get_num_threads())
    gtabs = torch.zeros(parts, *tab.shape)
    gwbs = torch.zeros(parts, n_feat)
    fn = kernels.lib.act_bwd1 if base_weight is not None else kernels.lib.act_bwd0

    def part(start: int, stop: int, i: int) -> None:
        fn(_ptr(x2, start * n_feat), _ptr(grad, start * n_feat), _ptr(gx, start * n_feat), stop - start,
           n_feat, _ptr(scale), _ptr(shift), _ptr(tab), _ptr(wb), _ptr(gtabs[i]), _ptr(gwbs[i]))  # fmt: skip

    used = _run_rows(part, n, n_feat)
    gtable = gtabs[:used].sum(0).permute(2, 0, 1)
    return gx, gtable, (gwbs[:used].sum(0) if base_weight is not None else None)


def _kan_features(
    x2: Tensor, low: Tensor, h: Tensor, grid_size: int, order: int, kernels: _Kernels
) -> Tensor:
    """(N, in) -> (N, (1 + G + k) * in) = per row [silu(x) | B_0(x) | ... | B_{G+k-1}(x)], each block (in,)."""
    n, n_in = x2.shape
    width = grid_size + order + 1
    scale, shift = _scale_shift(low, h, n_in)
    out = torch.empty(n, width * n_in)

    def part(start: int, stop: int, _i: int) -> None:
        kernels.lib.kan_fwd(_ptr(x2, start * n_in), _ptr(out, start * width * n_in), stop - start, n_in,
                            _ptr(scale), _ptr(shift))  # fmt: skip

    _run_rows(part, n, width * n_in)
    return out


def _kan_features_backward(x2, grad_feat, low, h, grid_size: int, order: int, kernels: _Kernels) -> Tensor:
    """d loss / d x2 (N, in) from d loss / d features (N, (1 + G + k) * in)."""
    n, n_in = x2.shape
    width = grid_size + order + 1
    scale, shift = _scale_shift(low, h, n_in)
    gx = torch.empty_like(x2)
    grad_feat = grad_feat.contiguous()

    def part(start: int, stop: int, _i: int) -> None:
        kernels.lib.kan_bwd(_ptr(x2, start * n_in), _ptr(grad_feat, start * width * n_in),
                            _ptr(gx, start * n_in), stop - start, n_in, _ptr(scale), _ptr(shift))  # fmt: skip

    _run_rows(part, n, width * n_in)
    return gx


class _KANLinearFn(torch.autograd.Function):
    """y = features(x2) @ weight^T with the C kernels; x2 (N, in) float32, weight (out, (1 + G + k) * in) in the
    features' block order. The features are recomputed in backward instead of saved ((1 + G + k) x the input)."""

    @staticmethod
    def forward(ctx, x2, weight, low, h, grid_size, order, kernels):  # type: ignore[override]
        ctx.save_for_backward(x2, weight, low, h)
        ctx.grid, ctx.kernels = (grid_size, order), kernels
        return _kan_features(x2, low, h, grid_size, order, kernels) @ weight.t()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x2, weight, low, h = ctx.saved_tensors
        grid_size, order = ctx.grid
        gx = gw = None
        if ctx.needs_input_grad[1]:
            gw = grad.t() @ _kan_features(x2, low, h, grid_size, order, ctx.kernels)
        if ctx.needs_input_grad[0]:
            gx = _kan_features_backward(x2, grad @ weight, low, h, grid_size, order, ctx.kernels)
        return gx, gw, None, None, None, None, None


# --- public functions -------------------------------------------------------------------------------------------
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


def bspline_activation(
    x: Tensor,
    coef: Tensor,
    low,
    h,
    grid_size: int,
    order: int,
    base_weight: Tensor | None = None,
) -> Tensor:
    """Per-feature spline plus optional silu branch: y[..., f] = sum_m coef[f, m] B_m(x[..., f]) + w_b[f] silu(x).

    x (..., F), coef (F, G + k), base_weight (F,) or None -> (..., F) in float32 (float64 stays float64).
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, low_t, h_t = _prepare(x, low, h)
        n_feat = coef.shape[0]
        x2 = x.reshape(-1, n_feat)
        table = spline_table(coef.to(x.dtype), grid_size, order)
        wb = base_weight.to(x.dtype) if base_weight is not None else None
        kernels = kernel_backend(x2, grid_size, order)
        if kernels is not None:
            x2 = x2.contiguous()  # the kernels take raw row-major pointers (also of the saved input)
        y = _SplineTableFn.apply(x2, table, wb, low_t, h_t, grid_size, kernels)
        return y.reshape(x.shape)


def spline_activation(x: Tensor, coef: Tensor, low, h, grid_size: int, order: int) -> Tensor:
    """Per-feature spline sum_m coef[f, m] B_m(x[..., f]); x (..., F), coef (F, G + k) -> (..., F)."""
    return bspline_activation(x, coef, low, h, grid_size, order)


def kan_linear(
    x: Tensor,
    base_weight: Tensor,
    spline_weight: Tensor,
    coef: Tensor,
    low,
    h,
    grid_size: int,
    order: int,
) -> Tensor:
    """A KAN layer, y_o = sum_i w_b[o, i] silu(x_i) + w_s[o, i] sum_m c[o, i, m] B_m(x_i), as one GEMM.

    x (..., in); base_weight, spline_weight (out, in); coef (out, in, G + k) -> (..., out). The features
    [silu(x) | B_0(x) | ... ] (N, (1 + G + k) * in) meet the packed weight [w_b | w_s c] in the same block order.
    With the C kernels the features are recomputed in backward (not saved); under autocast the matmul runs in
    the autocast dtype (bf16 on GPUs).
    """
    n_out, n_in = base_weight.shape
    spline = spline_weight.unsqueeze(-1) * coef  # (out, in, G + k)
    shape = x.shape
    kernels = kernel_backend(x, grid_size, order)
    if kernels is not None:  # block-major features (N, 1 + G + k, in): the kernel writes contiguous rows
        x, low_t, h_t = _prepare(x, low, h)
        packed = torch.cat([base_weight.unsqueeze(1), spline.transpose(1, 2)], dim=1).reshape(n_out, -1)
        x2 = x.reshape(-1, n_in).contiguous()
        y = _KANLinearFn.apply(x2, packed, low_t, h_t, grid_size, order, kernels)
    else:  # PyTorch: autograd through the dense basis (efficient-kan's layout); the matmul follows autocast
        with torch.autocast(device_type=x.device.type, enabled=False):
            xf, low_t, h_t = _prepare(x, low, h)
            x2 = xf.reshape(-1, n_in)
            basis = _UniformBasisFn.apply(x2, low_t, h_t, grid_size, order)  # (N, in, G + k)
            feats = torch.cat(
                [torch.nn.functional.silu(x2).unsqueeze(-1), basis], dim=-1
            )  # (N, in, 1 + G + k)
        packed = torch.cat([base_weight.unsqueeze(-1), spline], dim=-1).reshape(n_out, -1)
        y = feats.reshape(x2.shape[0], -1) @ packed.to(feats.dtype).t()
    return y.reshape(*shape[:-1], n_out)
