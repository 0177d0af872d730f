"""Fused causal depthwise conv1d + SiLU for the CPU, float32: Mamba's short convolution in one C pass per direction.

The op (Gu & Dao 2023, §3.4, Figure 3: the causal conv of width K before the SSM, then SiLU), time-major:

    pre[t, b, c] = bias[c] + sum_k w[c, k] x[t - (K - 1) + k, b, c]   (x = 0 before t = 0)
    y = silu(pre) = pre sigmoid(pre)

Backward, with s = sigmoid(pre) recomputed from x (pre is not stored):

    g = dy s (1 + pre (1 - s)),   dx[t] = sum_k w[c, k] g[t + (K - 1) - k],
    dw[c, k] = sum_{t, b} g[t] x[t - (K - 1) + k],   dbias[c] = sum_{t, b} g[t]

Why: PyTorch runs this as K shifted multiply-adds plus a SiLU, each a pass over (L, batch, d) at ~1 ns per element
on a small CPU, and the backward needs 3K + 3 of them; one fused pass costs about as much as one. Work split:
threads take contiguous channel ranges (every channel's sums are private to one thread and run in a fixed order,
so results do not depend on the thread count). dw and dbias add up in float32 over blocks of 64 (t, b)
rows, then in float64.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from mamba_kan.ops.kernels import C_EXP, RowArg, load_kernel, run_kernel, vector_flags

__all__ = ["conv_silu_backward", "conv_silu_forward", "load_conv_kernels"]

_SOURCE = r"""
static inline float sigm(float p) { return 1.0f / (1.0f + mk_exp(-p)); }

/* out[c] = pre[t, b, c0 + c] = bias + sum_k w[c, k] x[t - (K - 1) + k, b, c] for c < n (wt: (K, D)). */
static inline void conv_row(const float* restrict x, const float* restrict wt, const float* restrict bias,
                            float* restrict out, int64_t t, int64_t b, int64_t B, int64_t D, int64_t K,
                            int64_t c0, int64_t n)
{
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) out[c] = bias[c0 + c];
    for (int64_t k = 0; k < K; ++k) {
        const int64_t src = t - (K - 1) + k;
        if (src < 0) continue;
        const float* restrict xs = x + (src * B + b) * D + c0;
#pragma omp simd
        for (int64_t c = 0; c < n; ++c) out[c] = fmaf(wt[k * D + c0 + c], xs[c], out[c]);
    }
}

/* x, y: (L, B, D); wt: the weight transposed, (K, D); bias: (D,). Channels [c0, min(c1, D)). */
int conv_silu_fwd(const float* restrict x, const float* restrict wt, const float* restrict bias, float* restrict y,
                   int64_t L, int64_t B, int64_t D, int64_t K, int64_t c0, int64_t c1)
{
    const int64_t n = (c1 < D ? c1 : D) - c0;
    for (int64_t t = 0; t < L; ++t)
        for (int64_t b = 0; b < B; ++b) {
            float* restrict yt = y + (t * B + b) * D + c0;
            conv_row(x, wt, bias, yt, t, b, B, D, K, c0, n);
#pragma omp simd
            for (int64_t c = 0; c < n; ++c) yt[c] = yt[c] * sigm(yt[c]);
        }
    return 0;
}

/* gy: (L, B, D) -> gx (L, B, D), gwt (K, D), gbias (D,) for channels [c0, min(c1, D)); g: (L, B, D)
   scratch. One pass backwards in time: at step t the rows t .. t + K - 1 of g are known, so dx[t] follows at
   once while they are in cache. dw and dbias add up in float32 over at most FLUSH_ROWS (t, b) rows, then in
   float64. */
#define FLUSH_ROWS 64
int conv_silu_bwd(const float* restrict x, const float* restrict wt, const float* restrict bias,
                   const float* restrict gy, float* restrict g, float* restrict gx, float* restrict gwt,
                   float* restrict gbias, int64_t L, int64_t B, int64_t D, int64_t K, int64_t c0, int64_t c1)
{
    const int64_t n = (c1 < D ? c1 : D) - c0;
    double* acc = (double*)calloc((size_t)(n * (K + 1)), sizeof(double)); /* (K + 1, n): dw rows, then dbias */
    float* part = (float*)calloc((size_t)(n * (K + 1)), sizeof(float));   /* the same, the rows since a flush */
    if (!acc || !part) {
        free(acc);
        free(part);
        return -1;
    }
    int64_t rows = 0;
    for (int64_t t = L - 1; t >= 0; --t) {
        for (int64_t b = 0; b < B; ++b) {
            const int64_t row = (t * B + b) * D + c0;
            float* restrict gt = g + row;
            conv_row(x, wt, bias, gt, t, b, B, D, K, c0, n); /* pre, recomputed */
            const float* restrict gyt = gy + row;
            float* restrict pb = part + K * n;
#pragma omp simd
            for (int64_t c = 0; c < n; ++c) {
                const float p = gt[c], s = sigm(p);
                const float gc = gyt[c] * s * (1.0f + p * (1.0f - s));
                gt[c] = gc;
                pb[c] += gc;
            }
            for (int64_t k = 0; k < K; ++k) {
                const int64_t src = t - (K - 1) + k;
                if (src < 0) continue;
                const float* restrict xs = x + (src * B + b) * D + c0;
                float* restrict pk = part + k * n;
#pragma omp simd
                for (int64_t c = 0; c < n; ++c) pk[c] = fmaf(gt[c], xs[c], pk[c]);
            }
            float* restrict gxt = gx + row;
#pragma omp simd
            for (int64_t c = 0; c < n; ++c) gxt[c] = 0.0f;
            for (int64_t k = 0; k < K; ++k) {
                const int64_t dst = t + (K - 1) - k;
                if (dst >= L) continue;
                const float* restrict gd = g + (dst * B + b) * D + c0;
#pragma omp simd
                for (int64_t c = 0; c < n; ++c) gxt[c] = fmaf(wt[k * D + c0 + c], gd[c], gxt[c]);
            }
        }
        rows += B;
        if (rows >= FLUSH_ROWS || t == 0) {
#pragma omp simd
            for (int64_t i = 0; i < n * (K + 1); ++i) {
                acc[i] += part[i];
                part[i] = 0.0f;
            }
            rows = 0;
        }
    }
    for (int64_t c = 0; c < n; ++c) {
        for (int64_t k = 0; k < K; ++k) gwt[k * D + c0 + c] = (float)acc[k * n + c];
        gbias[c0 + c] = (float)acc[K * n + c];
    }
    free(acc);
    free(part);
    return 0;
}
"""

_FULL_SOURCE = C_EXP + _SOURCE
EXTRA_FLAGS = ("-ffp-contract=fast",)
_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    "conv_silu_fwd": ([_P] * 4 + [_I] * 6, ctypes.c_int),
    "conv_silu_bwd": ([_P] * 8 + [_I] * 6, ctypes.c_int),
}
_CHANNEL_BLOCK = 8  # threads split the channels in multiples of one AVX vector of float32


def load_conv_kernels() -> ctypes.CDLL | None:
    """The compiled kernels, or None when unavailable (no compiler, build error, ``MAMBA_KAN_KERNELS=0``)."""
    return load_kernel("conv_silu", _FULL_SOURCE, EXTRA_FLAGS + vector_flags(), _SIGNATURES)


def _channel_parts(fn, args: list, d: int, elems_per_channel: int) -> None:
    """fn(*args, c0, c1) on contiguous channel ranges (multiples of 8 channels; the kernel clips c1 to D), one
    per thread."""
    blocks = -(-d // _CHANNEL_BLOCK)
    c0, c1 = RowArg(per_start=_CHANNEL_BLOCK), RowArg(per_stop=_CHANNEL_BLOCK)
    run_kernel(fn, [*args, c0, c1], blocks, elems_per_channel * _CHANNEL_BLOCK, status=True)


def conv_silu_forward(kernels: ctypes.CDLL, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """silu(causal depthwise conv(x)): x (L, batch, d) contiguous float32, weight (d, K), bias (d,)."""
    L, bsz, d = x.shape
    k = weight.shape[1]
    y = torch.empty_like(x)
    wt = weight.t().contiguous()
    args = [t.data_ptr() for t in (x, wt, bias, y)]
    if x.numel():
        _channel_parts(kernels.conv_silu_fwd, [*args, L, bsz, d, k], d, L * bsz * k)
    return y


def conv_silu_backward(
    kernels: ctypes.CDLL, x: Tensor, weight: Tensor, bias: Tensor, gy: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(dx (L, batch, d), dweight (d, K), dbias (d,)) of :func:`conv_silu_forward` for the output gradient gy."""
    L, bsz, d = x.shape
    k = weight.shape[1]
    scratch, gx = torch.empty_like(x), torch.empty_like(x)
    wt = weight.t().contiguous()
    gwt, gb = torch.zeros_like(wt), torch.zeros_like(bias)
    args = [t.data_ptr() for t in (x, wt, bias, gy, scratch, gx, gwt, gb)]
    if x.numel():
        _channel_parts(kernels.conv_silu_bwd, [*args, L, bsz, d, k], d, 3 * L * bsz * k)
    return gx, gwt.t().contiguous(), gb
