"""Fused softmax cross-entropy for the CPU, float32: the mean token loss and its gradient in one pass.

Why: a next-token loss over a byte vocabulary is ~1/10 of a quick-size training step on the CPU. PyTorch runs it
as log_softmax (a max, a sum of exps and a subtraction pass over the logits) and nll_loss, then in the backward
nll_loss_backward (a zero-filled scatter) and log_softmax_backward (the exps again). Here one C pass per row of
logits computes the loss and writes the gradient of the mean loss, which the backward only scales by the
incoming gradient (a scalar).

Maths (per row n with target t_n, ignore_index rows excluded; N = the number of scored rows):

    m_n = max_j x_nj,   s_n = sum_j exp(x_nj - m_n),   loss = (1 / N) sum_n (m_n + log s_n - x_n,t_n),
    d loss / d x_nj = (exp(x_nj - m_n) / s_n - [j = t_n]) / N   (0 on ignored rows).

That is ``F.cross_entropy(logits, targets, ignore_index=...)`` with the default mean reduction (tests compare
the two in float64). exp is :data:`mamba_kan.ops.kernels.C_EXP`'s polynomial (relative error ~1e-7). A row with
a NaN or +inf logit, or with every logit -inf, gets a NaN loss and NaN gradients, as PyTorch's; a target outside
[0, V) that is not the ignore index raises ``F.cross_entropy``'s own error (it is asked to check the batch).
Rows are split across threads in contiguous ranges; each row is independent, so results do not depend on the
thread count.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from mamba_kan.ops.kernels import (
    C_EXP,
    COUNT,
    cpu_float32,
    load_kernel,
    part_ptr,
    ptr,
    row_ptr,
    run_kernel,
    vector_flags,
)

__all__ = ["cross_entropy", "load_cross_entropy_kernel"]

_SOURCE = r"""
/* x, grad: (rows, V) float32; tgt: (rows,) int64; loss: (rows,) per-row losses (0 on ignored rows); grad is
   that of the mean loss, *inv_count = 1 / the scored rows of the whole batch; bad[0] += rows whose target is
   neither the ignore index nor in [0, V). */
void ce_fwd(const float* restrict x, const int64_t* restrict tgt, float* restrict grad, float* restrict loss,
            int64_t rows, int64_t V, int64_t ignore, const float* restrict inv_count, int64_t* restrict bad)
{
    const float w = *inv_count;
    for (int64_t n = 0; n < rows; ++n) {
        const float* restrict xr = x + n * V;
        float* restrict gr = grad + n * V;
        const int64_t t = tgt[n];
        if (t == ignore || t < 0 || t >= V) {
            if (t != ignore) bad[0] += 1;
            memset(gr, 0, sizeof(float) * (size_t)V);
            loss[n] = 0.0f;
            continue;
        }
        float m = xr[0];
        int nan = 0, live = 0;
        /* live: some logit above -inf. Not read off m: OpenMP leaves the max reduction's identity to the compiler
           (clang starts the lanes at -FLT_MAX, so a row of -inf would give m = -FLT_MAX, not -inf) */
#pragma omp simd reduction(max : m) reduction(| : nan, live)
        for (int64_t j = 0; j < V; ++j) {
            m = xr[j] > m ? xr[j] : m;
            nan |= xr[j] != xr[j];
            live |= xr[j] > -INFINITY;
        }
        if (nan || !(m < INFINITY) || !live) { /* PyTorch's result: NaN loss and gradient */
            for (int64_t j = 0; j < V; ++j) gr[j] = NAN;
            loss[n] = NAN;
            continue;
        }
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < V; ++j) {
            const float e = mk_exp(xr[j] - m);
            gr[j] = e;
            s += e;
        }
        const float inv = w / s;
#pragma omp simd
        for (int64_t j = 0; j < V; ++j) gr[j] *= inv;
        gr[t] -= w;
        loss[n] = (m + logf(s)) - xr[t];
    }
}
"""

_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {"ce_fwd": ([_P, _P, _P, _P, _I, _I, _I, _P, _P], None)}


def load_cross_entropy_kernel() -> ctypes.CDLL | None:
    """The compiled kernel, or None when kernels are unavailable (no compiler, ``MAMBA_KAN_KERNELS=0``)."""
    return load_kernel("cross_entropy", C_EXP + _SOURCE, vector_flags(), _SIGNATURES)


class _FusedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits (N, V) float32 against targets (N,) int64; the gradient of the mean is
    computed in the forward (the softmax rows minus the one-hot targets, over the scored count) and only scaled by
    the incoming gradient in the backward (not even that for the usual 1: the buffer is handed on as it is)."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, ignore_index: int, lib) -> Tensor:  # type: ignore[override]
        n, vocab = logits.shape
        grad = torch.empty_like(logits)
        rows = torch.empty(n, dtype=torch.float32)
        bad = torch.zeros(max(1, torch.get_num_threads()), dtype=torch.int64)
        scored = (targets != ignore_index).sum().to(torch.float32)
        inv_count = 1.0 / scored  # inf for no scored row: NaN loss and gradients, as PyTorch's loss
        args = [row_ptr(logits, vocab), row_ptr(targets, 1), row_ptr(grad, vocab), row_ptr(rows, 1), COUNT, vocab,
                ignore_index, ptr(inv_count), part_ptr(bad)]  # fmt: skip
        run_kernel(lib.ce_fwd, args, n, vocab)
        if bool(bad.any()):  # a target out of range: PyTorch's own error, from its own check
            F.cross_entropy(logits, targets, ignore_index=ignore_index)
            raise IndexError("cross_entropy: a target is outside [0, vocabulary size)")  # if it did not raise
        ctx.save_for_backward(grad)
        return rows.sum() * inv_count

    @staticmethod
    @once_differentiable  # the saved gradient is a constant: a second derivative must raise, not come out 0
    def backward(ctx, grad_loss: Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        if grad_loss.item() != 1.0:
            grad = grad * grad_loss
        return grad, None, None, None


def cross_entropy(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """``F.cross_entropy(logits, targets, ignore_index=ignore_index)`` (mean over the scored rows) for logits
    (N, V) and targets (N,): the fused C kernel for CPU float32 logits that need a gradient, else PyTorch's."""
    lib = None
    if logits.dim() == 2 and logits.requires_grad and torch.is_grad_enabled() and cpu_float32(logits):
        lib = load_cross_entropy_kernel()
    if lib is None or targets.dtype != torch.int64 or targets.shape != logits.shape[:1]:
        return F.cross_entropy(logits, targets, ignore_index=ignore_index)
    return _FusedCrossEntropy.apply(logits.contiguous(), targets.contiguous(), int(ignore_index), lib)
