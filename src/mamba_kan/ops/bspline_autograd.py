"""Autograd functions of the spline layers, with hand-written backward passes, and the dispatch to the C kernels.

The maths (bases, the piecewise-polynomial table) is :mod:`mamba_kan.ops.bspline`. Here it is made fast:

1. Piecewise-polynomial table (:func:`~mamba_kan.ops.bspline.spline_table`) for the B-spline activation: evaluation
   is "pick a row, Horner". The table is a tiny differentiable function of the coefficients; the hand-written
   backward only produces d loss / d table (sum_n g t^p per row) and autograd maps it to the coefficients.
2. Recomputation instead of saving: the backward recomputes t and the row from x (a few flops), and the KAN layer
   recomputes its (N, in * (1 + G + k)) feature matrix instead of keeping it for the weight gradient.
3. Small generated C kernels (:mod:`mamba_kan.ops.kernels`; CPU, float32), one pass over the data per direction.
   They are optional: without a compiler, on other devices and dtypes, under autocast, or with
   MAMBA_KAN_KERNELS=0, the same maths runs as plain PyTorch ops ("eager"); tests compare both against a float64
   reference. Measured costs are in docs/benchmarks.md.

Entry points (the modules in :mod:`mamba_kan.modules.splines` dispatch between them):

* :func:`spline_kernels` - the compiled kernels for an input, or None when the eager path must run;
* :func:`bspline_activation` (eager) / :func:`bspline_activation_kernel` - y = sum_m c_m B_m(x) + w_b silu(x);
* :func:`kan_linear_kernel` - the KAN layer's features times the packed weight with the kernels (the eager
  formula is written out in :meth:`mamba_kan.modules.splines.KANLinear.forward`);
* :func:`bspline_basis_fast` - dense bases with a hand-written backward.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from mamba_kan.ops.bspline import local_values_and_derivative, spline_table, table_rows
from mamba_kan.ops.kernels import (
    COUNT,
    cpu_float32,
    load_kernel,
    part_ptr,
    ptr,
    row_ptr,
    run_kernel,
    vector_flags,
    vector_lanes,
    wide_vectors,
)
from mamba_kan.ops.kernels.spline_source import SPLINE_SIGNATURES, spline_kernel_source


class SplineKernels:
    """The compiled kernel library of one (G, k): ``lib`` (ctypes handle; calls release the GIL) and ``path``."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.path = Path(lib._name)


_SPLINE_KERNELS: dict[tuple[int, int], SplineKernels | None] = {}


def load_spline_kernels(grid_size: int, order: int) -> SplineKernels | None:
    """The kernels for (G, k), built on first use; None when unavailable (no compiler, build error,
    MAMBA_KAN_KERNELS=0) - callers then use the PyTorch path. Failures are logged once (ops.kernels)."""
    lib = load_kernel(f"splines_g{grid_size}_k{order}", spline_kernel_source(grid_size, order, vector_lanes()),
                      vector_flags(), SPLINE_SIGNATURES)  # fmt: skip
    if lib is None:
        return None
    key = (grid_size, order)
    if key not in _SPLINE_KERNELS or _SPLINE_KERNELS[key].lib is not lib:  # type: ignore[union-attr]
        _SPLINE_KERNELS[key] = SplineKernels(lib)
    return _SPLINE_KERNELS[key]


def spline_kernels(x: Tensor, grid_size: int, order: int) -> SplineKernels | None:
    """Kernels for this input, or None when the PyTorch path must run (not CPU float32, autocast on, no build)."""
    return load_spline_kernels(grid_size, order) if cpu_float32(x) else None


class _UniformBasisFn(torch.autograd.Function):
    """x (..., F) -> dense bases (..., F, G + k); backward recomputes the local derivative from x."""

    @staticmethod
    def forward(ctx, x: Tensor, low: Tensor, h: Tensor, grid_size: int, order: int) -> Tensor:
        vals, _, idx = local_values_and_derivative(x, low, h, grid_size, order)
        ctx.save_for_backward(x, low, h)
        ctx.grid = (grid_size, order)
        out = torch.zeros(*vals.shape[:-1], grid_size + order, dtype=vals.dtype, device=vals.device)
        return out.scatter_(-1, idx, vals)

    @staticmethod
    def backward(ctx, grad_basis: Tensor):
        x, low, h = ctx.saved_tensors
        grid_size, order = ctx.grid
        _, dvals, idx = local_values_and_derivative(x, low, h, grid_size, order)
        grad_x = (grad_basis.gather(-1, idx) * dvals).sum(-1)
        return grad_x, None, None, None, None


class _SplineTableFn(torch.autograd.Function):
    """y = P[row(x)](t(x)) (+ w_b silu(x)) for x2 (N, F), table (F, G + 2, k + 1), optional base weight (F,).

    Returns y and, in backward, d/dx, d/dw_b = sum_n g silu(x) and the coefficient gradient: with PyTorch ops
    (``kernels`` None; any device or dtype) d/dtable = sum_n g t^p per row, which autograd maps to the
    coefficients; with the C kernels (CPU float32) d/dcoef_m = sum_n g B_m(clamped x) directly, for ``coef``
    (F, G + k), the coefficients the table was built from (the same derivative: the table is linear in them).
    """

    @staticmethod
    def forward(ctx, x2, table, base_weight, low, h, grid_size, kernels, coef=None):  # type: ignore[override]
        ctx.save_for_backward(x2, table, base_weight, low, h)
        ctx.grid_size, ctx.kernels = grid_size, kernels
        if kernels is not None:
            return _act_kernel_forward(kernels, x2, table, base_weight, low, h)
        n_feat, rows_t, k1 = table.shape
        t, row = table_rows(x2, low, h, grid_size)
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
            gx, gcoef, gwb = _act_kernel_backward(ctx.kernels, x2, grad, table, base_weight, low, h)
            return gx, None, gwb, None, None, None, None, gcoef
        n_feat, rows_t, k1 = table.shape
        t, row = table_rows(x2, low, h, ctx.grid_size)
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
        return gx, gtable.reshape(n_feat, rows_t, k1), gwb, None, None, None, None, None


def _scale_shift(low: Tensor, h: Tensor, n_feat: int) -> tuple[Tensor, Tensor]:
    """u = x * scale + shift with scale = 1/h, shift = -low/h, as contiguous float32 (F,) vectors."""
    scale = (1.0 / h).to(torch.float32).expand(n_feat).contiguous()
    shift = (-low / h).to(torch.float32).expand(n_feat).contiguous()
    return scale, shift


def _act_kernel_forward(kernels: SplineKernels, x2, table, base_weight, low, h) -> Tensor:
    """C-kernel forward of :class:`_SplineTableFn`; x2 (N, F) contiguous float32."""
    n, n_feat = x2.shape
    tab = table.detach().permute(1, 2, 0).contiguous()  # (G + 2, k + 1, F)
    scale, shift = _scale_shift(low, h, n_feat)
    wb = base_weight.detach().contiguous() if base_weight is not None else scale
    y = torch.empty_like(x2)
    fn = kernels.lib.act_fwd1 if base_weight is not None else kernels.lib.act_fwd0

    args = [row_ptr(x2, n_feat), row_ptr(y, n_feat), COUNT, n_feat, ptr(scale), ptr(shift), ptr(tab), ptr(wb)]
    run_kernel(fn, args, n, n_feat)
    return y


def _act_kernel_backward(kernels: SplineKernels, x2, grad, table, base_weight, low, h):
    """C-kernel backward: (d/dx2, d/dcoef (F, G + k), d/dw_b or None); per-thread sums, then added.

    The kernel walks 8 features at a time (needs F >= 8): narrower inputs are padded with zero-gradient copies
    of feature 0, whose sums are dropped.
    """
    n, n_feat = x2.shape
    pad = max(0, vector_lanes() - n_feat)
    if pad:
        x2, grad = (torch.cat([v, v[:, :1].expand(n, pad)], 1).contiguous() for v in (x2, grad))
        grad[:, n_feat:] = 0.0
        table = torch.cat([table, table[:1].expand(pad, *table.shape[1:])])
        base_weight = None if base_weight is None else torch.cat([base_weight, base_weight[:1].expand(pad)])
        low, h = (v.expand(n_feat).contiguous() if v.dim() else v for v in (low, h))
        low, h = (torch.cat([v, v[:1].expand(pad)]) if v.dim() else v for v in (low, h))
    width = n_feat + pad
    tab = table.permute(1, 2, 0).contiguous()
    n_basis = tab.shape[0] - 2 + tab.shape[1] - 1  # (G + 2) rows, k + 1 powers -> G + k bases
    scale, shift = _scale_shift(low, h, width)
    wb = base_weight.contiguous() if base_weight is not None else scale
    gx = torch.empty_like(x2)
    parts = max(1, torch.get_num_threads())
    gcoefs = torch.zeros(parts, n_basis, width)
    gwbs = torch.zeros(parts, width)
    fn = kernels.lib.act_bwd1 if base_weight is not None else kernels.lib.act_bwd0

    args = [row_ptr(x2, width), row_ptr(grad, width), row_ptr(gx, width), COUNT, width, ptr(scale), ptr(shift),
            ptr(tab), ptr(wb), part_ptr(gcoefs), part_ptr(gwbs)]  # fmt: skip
    used = run_kernel(fn, args, n, width)
    gcoef = gcoefs[:used].sum(0).t()[:n_feat]
    gwb = gwbs[:used].sum(0)[:n_feat] if base_weight is not None else None
    return gx[:, :n_feat] if pad else gx, gcoef, gwb


def _kan_features(
    x2: Tensor, low: Tensor, h: Tensor, grid_size: int, order: int, kernels: SplineKernels
) -> Tensor:
    """(N, in) -> (N, (1 + G + k) * in) = per row [silu(x) | B_0(x) | ... | B_{G+k-1}(x)], each block (in,)."""
    n, n_in = x2.shape
    width = grid_size + order + 1
    scale, shift = _scale_shift(low, h, n_in)
    out = torch.empty(n, width * n_in)

    args = [row_ptr(x2, n_in), row_ptr(out, width * n_in), COUNT, n_in, ptr(scale), ptr(shift)]
    run_kernel(kernels.lib.kan_fwd, args, n, width * n_in)
    return out


def _kan_features_backward(
    x2, grad_feat, low, h, grid_size: int, order: int, kernels: SplineKernels
) -> Tensor:
    """d loss / d x2 (N, in) from d loss / d features (N, (1 + G + k) * in)."""
    n, n_in = x2.shape
    width = grid_size + order + 1
    scale, shift = _scale_shift(low, h, n_in)
    gx = torch.empty_like(x2)
    grad_feat = grad_feat.contiguous()

    args = [row_ptr(x2, n_in), row_ptr(grad_feat, width * n_in), row_ptr(gx, n_in), COUNT, n_in, ptr(scale),
            ptr(shift)]  # fmt: skip
    run_kernel(kernels.lib.kan_bwd, args, n, width * n_in)
    return gx


# CPU GEMMs (MKL / oneDNN) slow down when the output's column count is not a multiple of this
_GEMM_COLUMNS = 8


def _matmul_nt(a: Tensor, b: Tensor) -> Tensor:
    """a @ b^T, a (M, K), b (N, K). With N off the 8-column blocks (KAN widths such as 13 or 51) computed as
    (b @ a^T)^T, which puts the long M side in the columns: 0.84 -> 0.41 ms at (2048, 288) x (288, 13) and
    5.1 -> 4.4 ms at (2048, 1152) x (1152, 51) (measured, 1 thread). The result is then a transposed view."""
    if b.shape[0] % _GEMM_COLUMNS == 0:
        return a @ b.t()
    return (b @ a.t()).t()


def _matmul_nn(a: Tensor, b: Tensor) -> Tensor:
    """a @ b, a (M, N), b (N, K) - a features gradient, returned contiguous. With K off the 8-column blocks and a
    wide N, on AVX2 CPUs computed as (b^T @ a^T)^T and copied: 23.3 -> 19.7 ms at (2048, 256) x (256, 927) and
    6.2 -> 5.3 ms at (2048, 128) x (128, 459); at N 32 the copy costs more than it saves (0.36 -> 0.65 ms), hence
    N >= 64. On AVX-512 CPUs the plain product is the faster one (5.7 vs 7.5 ms and 1.45 vs 3.2 ms at those
    shapes; all measured, 1 thread)."""
    if (
        b.shape[1] % _GEMM_COLUMNS
        and a.shape[1] % _GEMM_COLUMNS == 0
        and a.shape[1] >= 64
        and not wide_vectors()
    ):
        return (b.t() @ a.t()).t().contiguous()
    return a @ b


def _matmul_tn(a: Tensor, b: Tensor) -> Tensor:
    """a^T @ b, a (M, N), b (M, K) - a weight gradient. With K off the 8-column blocks and N on them, computed as
    (b^T @ a)^T (6.2 -> 4.1 ms for the d_model-128 KAN's second layer, N 128, K 459, measured)."""
    if b.shape[1] % _GEMM_COLUMNS and a.shape[1] % _GEMM_COLUMNS == 0:
        return (b.t() @ a).t()
    return a.t() @ b


# Features kept from the forward for the backward up to this size (bytes, per layer call); larger ones are
# recomputed in the backward. Keeping them saves one features pass per step (1.4 ms of a 40 ms KAN FFN step at
# d_model 128 and 2048 tokens, measured); recomputing bounds the autograd tape on long sequences (efficient-kan
# issue #23: a KAN's tape is many times an MLP's).
KEEP_FEATURES_BYTES = 32 << 20


class _KANLinearFn(torch.autograd.Function):
    """y = features(x2) @ weight^T with the C kernels; x2 (N, in) float32, weight (out, (1 + G + k) * in) in the
    features' block order. The features ((1 + G + k) x the input) are kept for the backward when they are at most
    :data:`KEEP_FEATURES_BYTES`, else recomputed there."""

    @staticmethod
    def forward(ctx, x2, weight, low, h, grid_size, order, kernels):  # type: ignore[override]
        feats = _kan_features(x2, low, h, grid_size, order, kernels)
        kept = feats if feats.numel() * feats.element_size() <= KEEP_FEATURES_BYTES else None
        ctx.save_for_backward(x2, weight, low, h, kept)
        ctx.grid, ctx.kernels = (grid_size, order), kernels
        return _matmul_nt(feats, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x2, weight, low, h, feats = ctx.saved_tensors
        grid_size, order = ctx.grid
        gx = gw = None
        if ctx.needs_input_grad[1]:
            if feats is None:
                feats = _kan_features(x2, low, h, grid_size, order, ctx.kernels)
            gw = _matmul_tn(grad, feats)
        if ctx.needs_input_grad[0]:
            gx = _kan_features_backward(x2, _matmul_nn(grad, weight), low, h, grid_size, order, ctx.kernels)
        return gx, gw, None, None, None, None, None


def _prepare(x: Tensor, low, h) -> tuple[Tensor, Tensor, Tensor]:
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    low_t = torch.as_tensor(low, dtype=dtype, device=x.device)
    h_t = torch.as_tensor(h, dtype=dtype, device=x.device)
    return x.to(dtype), low_t, h_t


def bspline_basis_fast(x: Tensor, low, h, grid_size: int, order: int) -> Tensor:
    """Same values as :func:`~mamba_kan.ops.bspline.uniform_bspline_basis` (float32/64, clamped), with a
    hand-written backward."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, low_t, h_t = _prepare(x, low, h)
        return _UniformBasisFn.apply(x, low_t, h_t, grid_size, order)


def _activation(x: Tensor, coef: Tensor, low, h, grid_size: int, order: int, base_weight, kernels) -> Tensor:
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, low_t, h_t = _prepare(x, low, h)
        n_feat = coef.shape[0]
        x2 = x.reshape(-1, n_feat)
        coef = coef.to(x.dtype)
        table = spline_table(coef, grid_size, order)
        wb = base_weight.to(x.dtype) if base_weight is not None else None
        if kernels is not None:
            x2 = x2.contiguous()  # the kernels take raw row-major pointers (also of the saved input)
        y = _SplineTableFn.apply(x2, table, wb, low_t, h_t, grid_size, kernels, coef if kernels else None)
        return y.reshape(x.shape)


def bspline_activation(
    x: Tensor, coef: Tensor, low, h, grid_size: int, order: int, base_weight: Tensor | None = None
) -> Tensor:
    """Per-feature spline plus optional silu branch: y[..., f] = sum_m coef[f, m] B_m(x[..., f]) + w_b[f] silu(x),
    with PyTorch ops (any device and dtype; the spline through the piecewise-polynomial table).

    x (..., F), coef (F, G + k), base_weight (F,) or None -> (..., F) in float32 (float64 stays float64).
    """
    return _activation(x, coef, low, h, grid_size, order, base_weight, None)


def bspline_activation_kernel(
    x: Tensor,
    coef: Tensor,
    low,
    h,
    grid_size: int,
    order: int,
    base_weight: Tensor | None,
    kernels: SplineKernels,
) -> Tensor:
    """:func:`bspline_activation` with the C kernels (``kernels`` from :func:`spline_kernels`; CPU float32 x)."""
    return _activation(x, coef, low, h, grid_size, order, base_weight, kernels)


def kan_linear_kernel(
    x: Tensor,
    base_weight: Tensor,
    spline_weight: Tensor,
    coef: Tensor,
    low,
    h,
    grid_size: int,
    order: int,
    kernels: SplineKernels,
) -> Tensor:
    """A KAN layer, y_o = sum_i w_b[o, i] silu(x_i) + w_s[o, i] sum_m c[o, i, m] B_m(x_i), with the C kernels.

    x (..., in) CPU float32; base_weight, spline_weight (out, in); coef (out, in, G + k) -> (..., out). The
    kernel writes block-major features (N, 1 + G + k, in) = [silu(x) | B_0(x) | ...] (contiguous rows), which
    meet the packed weight [w_b | w_s c] in the same block order in one GEMM; they are recomputed in backward.
    """
    n_out, n_in = base_weight.shape
    spline = spline_weight.unsqueeze(-1) * coef  # (out, in, G + k)
    shape = x.shape
    x, low_t, h_t = _prepare(x, low, h)
    packed = torch.cat([base_weight.unsqueeze(1), spline.transpose(1, 2)], dim=1).reshape(n_out, -1)
    x2 = x.reshape(-1, n_in).contiguous()
    y = _KANLinearFn.apply(x2, packed, low_t, h_t, grid_size, order, kernels)
    return y.reshape(*shape[:-1], n_out)
