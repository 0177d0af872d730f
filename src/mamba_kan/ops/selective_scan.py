"""The Mamba-1 selective scan (S6), Gu & Dao 2023, §3.2 Algorithm 2 and eq. (2a)-(2b), (4).

Same tensor layout and meaning as mamba-ssm's ``selective_scan_fn`` / ``selective_scan_ref``
(mamba_ssm/ops/selective_scan_interface.py):

    delta = softplus(delta + delta_bias)          (the bias is added when given; softplus only if asked)
    dA_t  = exp(delta_t * A)                      zero-order hold for A
    dBu_t = delta_t * B_t * u_t                   Euler step for B
    h_t   = dA_t * h_{t-1} + dBu_t,  h_{-1} = 0   per (batch, channel d, state n)
    y_t   = <h_t, C_t> + D * u_t
    y    *= silu(z)

Shapes: u, delta, z: (batch, d_inner, L); A: (d_inner, N); B, C: (batch, N, L); D, delta_bias: (d_inner,).
``time_major=True`` takes u, delta, z as (L, batch, d_inner) and B, C as (L, batch, N) instead (the layout the CPU
kernel works in, so a caller that holds time-major activations skips two transposes). The output has u's dtype; the
maths runs in float32 (float64 inputs stay float64, so gradcheck works), with autocast switched off.

Implementations:

* :func:`selective_scan_ref` - a plain per-time-step loop recorded by autograd. Readable; tests and tiny inputs.
* :func:`selective_scan` dispatches: CUDA -> mamba-ssm's fused kernel when ``mamba_ssm`` is importable;
  CPU float32 / float64 -> :class:`_FusedScan`, the fused C scan of :mod:`mamba_kan.ops.scan_kernel` (state in
  registers, checkpointed recomputing backward; built with the system C compiler on first use and cached) when
  it builds and MAMBA_KAN_KERNELS is not 0; otherwise :class:`_ChunkedScan`, the PyTorch scan below (the
  fallback, and with the float64 loop the reference the fused scan is tested against).

The PyTorch scan (chosen by measurement among PyTorch formulations)
-------------------------------------------------------------------
A blocked *sequential* scan in a ``torch.autograd.Function`` with a hand-written backward. Time is cut into chunks
of T steps. Per chunk, dA and dBu are formed for that chunk only, in (T, batch, N, d_inner) buffers, so a time step
is one contiguous slice: the recurrence runs in place with one fused ``addcmul_`` per step and y is one batched
mat-vec. Only the state entering each chunk is saved. The backward walks the chunks in reverse, recomputes the
chunk's states from its saved boundary state, runs the adjoint recurrence

    dh_t = C_t * dy_t + dA_{t+1} * dh_{t+1}

in place (one ``addcmul_`` per step; the carry dA * dh crosses chunk boundaries) and reduces the gradients of u,
delta, A, B, C over the chunk with vectorised sums. Memory: three chunk buffers plus L / T boundary states, never
the (batch, L, d_inner, N) tensors a pure-autograd Mamba keeps (mambapy keeps several). The recurrence only
multiplies by factors in (0, 1], so nothing overflows (closed-form chunk scans that use exp(-cumsum(delta A))
overflow in float32 once sum(delta * |A|) over a chunk passes ~88).

Rejected after measuring: a parallel (Blelloch) scan (mambapy): O(log L) full memory-bound passes kept for autograd
(mambapy issue #57); autograd over the chunk loop (stores every step); (batch, d, N) buffer order (reductions over an
innermost axis of 16 and (d, N) @ (N, 1) bmms were 3-5x slower than sums over the non-innermost N axis);
``exp`` (``exp2`` of x * log2 e is ~2.5x faster in torch on AVX-512: 16.8M floats 6.5 vs 15.8 ms).

Measured on this project's 2-core CPU (AMD EPYC Zen 4, torch 2.13 CPU, fp32), the whole Mamba layer
(modules/mamba.py: d_model 128, d_inner 256, N 16, batch 4) forward + backward, beside mambapy's MambaBlock (same
sizes) and one causal SDPA call, each in a fresh process:

    2 threads, wall, L=1024, idle box:  this layer 91 ms   mambapy 723 ms (8.0x)   attention 48 ms (1.9x)
    1 thread, CPU time, L=1024:         this layer 151 ms  mambapy 1297 ms         attention 85 ms
    1 thread, CPU time, L=4096:         this layer 558 ms (3.7x L=1024)  mambapy 5002 ms
    peak RSS growth, L=1024 / 4096:     this layer 80 / 294 MB           mambapy 714 / 2580 MB

The kernel alone (batch 4, d_inner 256, N 16, L 1024, 1 thread): T=16 84 ms, T=32 80 ms, T=64 99 ms; at batch 16,
d_inner 512 the optimum moves to T=4 (see :func:`auto_chunk`).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from mamba_kan.errors import UserError
from mamba_kan.ops.scan_kernel import (
    CHECKPOINT_STEPS,
    ScanKernels,
    load_scan_kernels,
    scan_backward,
    scan_forward,
)

__all__ = ["CHUNK_ELEMENTS", "auto_chunk", "selective_scan", "selective_scan_ref"]

# Target size, in elements, of one (T, batch, N, d_inner) chunk buffer: 2 MiB of fp32 keeps the kernel's three
# buffers inside L2 + L3 (2 MiB L2 per core here). T=32 at batch 4, d_inner 256, N 16, the measured optimum.
CHUNK_ELEMENTS = 1 << 19
_LOG2E = math.log2(math.e)


def auto_chunk(bsz: int, d_inner: int, n: int) -> int:
    """Chunk length T for the project's kernel: CHUNK_ELEMENTS / (batch * d_inner * N), clamped to [4, 64].

    Measured optima (1 thread, fwd + bwd): T=4 at batch 16, d_inner 512; T=32 at batch 4, d_inner 256; T=64 at
    batch 1, d_inner 128. Shorter chunks only add Python calls per chunk; longer ones push the buffers out of cache.
    """
    return max(4, min(64, CHUNK_ELEMENTS // max(1, bsz * d_inner * n)))


def _check_shapes(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    time_major: bool,
) -> None:
    """Raise UserError unless the shapes follow the layout described in the module docstring."""
    names = "(L, batch, d_inner)" if time_major else "(batch, d_inner, L)"
    if u.dim() != 3:
        raise UserError(f"selective_scan: u must be {names}, got shape {tuple(u.shape)}")
    if time_major:
        L, bsz, d = u.shape
    else:
        bsz, d, L = u.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise UserError(f"selective_scan: A must be (d_inner={d}, N), got shape {tuple(A.shape)}")
    n = A.shape[1]
    seq = (L, bsz, d) if time_major else (bsz, d, L)
    proj = (L, bsz, n) if time_major else (bsz, n, L)
    expected = {
        "delta": (delta, seq),
        "B": (B, proj),
        "C": (C, proj),
        "D": (D, (d,)),
        "z": (z, seq),
        "delta_bias": (delta_bias, (d,)),
    }
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise UserError(f"selective_scan: {name} must have shape {shape}, got {tuple(tensor.shape)}")


def _compute_dtype(u: Tensor) -> torch.dtype:
    """float32 for half / bfloat16 / float32 inputs, float64 for float64 (as selective_scan_ref)."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _cast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """Readable reference: one autograd-recorded step per time step (as mamba-ssm's ``selective_scan_ref``).

    Shapes as :func:`selective_scan` (batch-major layout only). O(L) autograd nodes: tests and tiny inputs only.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias, time_major=False)
    dtype_in = u.dtype
    ct = _compute_dtype(u)
    u, delta, A, B, C = (t.to(ct) for t in (u, delta, A, B, C))
    D, z, delta_bias = _cast(D, ct), _cast(z, ct), _cast(delta_bias, ct)
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    bsz, d, L = u.shape
    h = u.new_zeros(bsz, d, A.shape[1])  # (batch, d_inner, N)
    ys = []
    for t in range(L):
        dA = torch.exp(delta[:, :, t, None] * A)  # (batch, d_inner, N)
        dBu = delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]  # (batch, d_inner, N)
        h = dA * h + dBu
        ys.append((h * C[:, None, :, t]).sum(-1))  # (batch, d_inner)
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(bsz, d, 0)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y.to(dtype_in)


class _Buffers:
    """Three reusable (T, batch, N, d_inner) chunk buffers: dA (a), states (h), adjoint / scratch (g)."""

    def __init__(self, T: int, bsz: int, n: int, d: int, like: Tensor) -> None:
        self.a = like.new_empty(T, bsz, n, d)
        self.h = like.new_empty(T, bsz, n, d)
        self.g = like.new_empty(T, bsz, n, d)


def _chunk_states(
    delta: Tensor, du: Tensor, At2: Tensor, B: Tensor, h0: Tensor, bufs: _Buffers
) -> tuple[Tensor, Tensor]:
    """dA_t and states h_t of one chunk, each (T, batch, N, d_inner), written into bufs.a and bufs.h.

    delta, du = delta * u: (T, batch, d_inner); At2 = A^T * log2(e): (N, d_inner); B: (T, batch, N);
    h0: (batch, N, d_inner), the state before the chunk.
    """
    T = delta.shape[0]
    # exp(x) = exp2(x * log2 e): relative error |x| * 2^-23, the same order as rounding delta * A itself.
    a = torch.mul(delta[:, :, None, :], At2, out=bufs.a[:T]).exp2_()
    h = torch.mul(B[:, :, :, None], du[:, :, None, :], out=bufs.h[:T])
    # h_t = a_t * h_{t-1} + dBu_t: one fused op per step on a contiguous (batch, N, d_inner) slice; unbind makes
    # the T views in one call (indexing h[t] in the loop costs ~30% more per step, measured)
    hs, as_ = h.unbind(0), a.unbind(0)
    hs[0].addcmul_(as_[0], h0)
    for t in range(1, T):
        hs[t].addcmul_(as_[t], hs[t - 1])
    return a, h


class _ChunkedScan(torch.autograd.Function):
    """The whole selective scan (module docstring), time-major and chunked, with a hand-written backward.

    Inputs (one dtype): u, delta, z: (L, batch, d_inner); A: (d_inner, N); B, C: (L, batch, N), contiguous;
    D, delta_bias: (d_inner,); D, z, delta_bias may be None. Output: (L, batch, d_inner).

    The bias, softplus, D skip and silu(z) gate are applied chunk by chunk inside the loop (as mamba-ssm's kernel
    fuses them), so the only (L, batch, d_inner) tensor the op allocates is its output: no full-length temporaries
    for softplus(delta), y or y + D u and their gradients (at L=4096 each is 16 MB, and fresh large allocations cost
    page faults on every step).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus: bool, chunk: int):  # type: ignore[override]
        L, bsz, d = u.shape
        n = A.shape[1]
        At = A.t().contiguous()  # (N, d_inner)
        At2 = At * _LOG2E
        n_chunks = -(-L // chunk)
        out = u.new_empty(L, bsz, d)
        # h_start[c] = state entering chunk c: the only per-step state kept for backward
        h_start = u.new_zeros(n_chunks, bsz, n, d)
        bufs = _Buffers(min(chunk, L), bsz, n, d, u)
        for c in range(n_chunks):
            t0, t1 = c * chunk, min(L, (c + 1) * chunk)
            uc = u[t0:t1]
            dl = _step_size(delta[t0:t1], delta_bias, softplus)  # (T, batch, d)
            _, h = _chunk_states(dl, dl * uc, At2, B[t0:t1], h_start[c], bufs)
            if c + 1 < n_chunks:
                h_start[c + 1].copy_(h[-1])
            y = _readout(h, C[t0:t1], uc, D)  # (T, batch, d) = <h_t, C_t> + D u_t
            if z is not None:
                y.mul_(F.silu(z[t0:t1]))
            out[t0:t1] = y
        ctx.chunk, ctx.softplus = chunk, softplus
        ctx.save_for_backward(u, delta, At, B, C, D, z, delta_bias, h_start)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out: Tensor):  # type: ignore[override]
        u, delta, At, B, C, D, z, delta_bias, h_start = ctx.saved_tensors
        chunk, softplus = ctx.chunk, ctx.softplus
        L, bsz, d = u.shape
        n = At.shape[0]
        At2 = At * _LOG2E
        g_u, g_delta = torch.empty_like(u), torch.empty_like(delta)
        g_B, g_C = torch.empty_like(B), torch.empty_like(C)
        g_At = torch.zeros_like(At)
        g_D = None if D is None else torch.zeros_like(D)
        g_z = None if z is None else torch.empty_like(z)
        bufs = _Buffers(min(chunk, L), bsz, n, d, u)
        carry = u.new_zeros(bsz, n, d)  # dA_{t1} * dh_{t1}: the adjoint flowing in from the next chunk
        for c in reversed(range(h_start.shape[0])):
            t0, t1 = c * chunk, min(L, (c + 1) * chunk)
            T = t1 - t0
            uc, Bc, Cc = u[t0:t1], B[t0:t1], C[t0:t1]
            pre = delta[t0:t1] if delta_bias is None else delta[t0:t1] + delta_bias
            dl = F.softplus(pre) if softplus else pre
            du = dl * uc
            a, h = _chunk_states(dl, du, At2, Bc, h_start[c], bufs)  # (T, batch, N, d) each
            g = g_out[t0:t1]
            if z is not None:  # out = y * silu(z): d silu / dz = s (1 + z (1 - s)), s = sigmoid(z)
                zc = z[t0:t1]
                s = torch.sigmoid(zc)
                y = _readout(h, Cc, uc, D)
                g_z[t0:t1] = g * y * s * (1 + zc * (1 - s))
                g = g * zc * s
            if D is not None:
                g_D.add_((g * uc).sum((0, 1)))
            # dC_t[n] = sum_d h_t[n, d] g_t[d]  (bufs.g as scratch before it holds the adjoint)
            torch.sum(torch.mul(h, g[:, :, None, :], out=bufs.g[:T]), -1, out=g_C[t0:t1])
            # adjoint dh_t = C_t g_t + dA_{t+1} dh_{t+1}, in place in bufs.g
            dh = torch.mul(Cc[:, :, :, None], g[:, :, None, :], out=bufs.g[:T])
            dhs, as_ = dh.unbind(0), a.unbind(0)
            dhs[T - 1].add_(carry)
            for t in range(T - 2, -1, -1):
                dhs[t].addcmul_(as_[t + 1], dhs[t + 1])
            torch.mul(a[0], dh[0], out=carry)
            # through dA_t = exp(delta_t A): d/d(delta_t A) = dh_t * h_{t-1} * dA_t, in place in bufs.a
            w = a.mul_(dh)
            w[1:].mul_(h[:-1])
            w[0].mul_(h_start[c])
            scratch = bufs.h[:T]  # the states are no longer needed
            gdl = torch.sum(torch.mul(w, At, out=scratch), -2)  # (T, batch, d): d loss / d delta_t
            g_At.add_(torch.sum(torch.mul(w, dl[:, :, None, :], out=scratch).view(T * bsz, n, d), 0))
            # through dBu_t = delta_t u_t B_t
            torch.sum(torch.mul(dh, du[:, :, None, :], out=scratch), -1, out=g_B[t0:t1])
            q = torch.bmm(Bc.view(T * bsz, 1, n), dh.view(T * bsz, n, d)).view(T, bsz, d)  # sum_n B_t dh_t
            gu = torch.mul(q, dl, out=g_u[t0:t1])
            if D is not None:
                gu.addcmul_(g, D)
            gdl.addcmul_(q, uc)
            if softplus:
                gdl.mul_(torch.sigmoid(pre))
            g_delta[t0:t1] = gdl
        g_bias = None if delta_bias is None else g_delta.sum((0, 1))
        return g_u, g_delta, g_At.t(), g_B, g_C, g_D, g_z, g_bias, None, None


def fused_kernels(u: Tensor, n_state: int) -> ScanKernels | None:
    """The fused C scan for this input, or None when the PyTorch path must run: not a CPU float32 / float64
    tensor, no C compiler, or the kernels switched off with MAMBA_KAN_KERNELS=0."""
    if u.device.type != "cpu" or u.dtype not in (torch.float32, torch.float64):
        return None
    return load_scan_kernels(n_state)


class _FusedScan(torch.autograd.Function):
    """The whole selective scan in generated C (:mod:`mamba_kan.ops.scan_kernel`), forward and backward.

    Inputs as :class:`_ChunkedScan` (time-major, contiguous, one dtype: float32 or float64). Saved for backward:
    the inputs and the state entering every ``chunk`` steps, (ceil(L / chunk), batch, N, d_inner); the backward
    recomputes each chunk's states from there.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus: bool, chunk: int, kernels):  # type: ignore[override]
        d = u.shape[2]
        At = A.t().contiguous()  # (N, d_inner): a state row is contiguous over channels
        Dv = torch.zeros(d, dtype=u.dtype) if D is None else D.contiguous()
        bias = torch.zeros(d, dtype=u.dtype) if delta_bias is None else delta_bias.contiguous()
        y, hck = scan_forward(kernels, u, delta, At, B, C, Dv, z, bias, softplus, chunk)
        ctx.save_for_backward(u, delta, At, B, C, Dv, z, bias, hck)
        ctx.opts = (softplus, chunk, kernels, D is not None, delta_bias is not None)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out: Tensor):  # type: ignore[override]
        u, delta, At, B, C, Dv, z, bias, hck = ctx.saved_tensors
        softplus, chunk, kernels, has_d, has_bias = ctx.opts
        gu, gdelta, gz, gB, gC, gAt, gD, gbias = scan_backward(
            kernels, u, delta, At, B, C, Dv, z, bias, softplus, chunk, hck, g_out.contiguous()
        )
        return (gu, gdelta, gAt.t(), gB, gC, gD if has_d else None, gz, gbias if has_bias else None,
                None, None, None)  # fmt: skip


def _step_size(delta: Tensor, delta_bias: Tensor | None, softplus: bool) -> Tensor:
    """softplus(delta + delta_bias) (each part optional) for one chunk, (T, batch, d_inner)."""
    pre = delta if delta_bias is None else delta + delta_bias
    return F.softplus(pre) if softplus else pre


def _readout(h: Tensor, C: Tensor, u: Tensor, D: Tensor | None) -> Tensor:
    """y_t[d] = sum_n C_t[n] h_t[n, d] + D[d] u_t[d] as one batched mat-vec. h: (T, batch, N, d) -> (T, batch, d)."""
    T, bsz, n, d = h.shape
    y = torch.bmm(C.view(T * bsz, 1, n), h.view(T * bsz, n, d)).view(T, bsz, d)
    return y if D is None else y.addcmul_(u, D)


@functools.cache
def _mamba_ssm_scan():
    """mamba-ssm's fused CUDA scan, or None when the optional package is not installed (looked up once)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    *,
    time_major: bool = False,
    chunk: int | None = None,
    fused: bool = True,
) -> Tensor:
    """Selective scan with mamba-ssm's ``selective_scan_fn`` signature; differentiable in every tensor input.

    Args:
        u: (batch, d_inner, L) input; (L, batch, d_inner) if ``time_major``.
        delta: step size before ``delta_bias`` / softplus, shaped like u.
        A: (d_inner, N) state matrix (negative for a stable scan).
        B, C: (batch, N, L) input / output projections; (L, batch, N) if ``time_major``.
        D: optional (d_inner,) skip.  z: optional gate shaped like u.  delta_bias: optional (d_inner,).
        delta_softplus: apply softplus to delta + delta_bias.
        time_major: layout switch (module docstring).
        chunk: time steps per chunk: checkpoint interval of the fused C scan (default CHECKPOINT_STEPS), chunk
            length of the PyTorch scan (default :func:`auto_chunk`); tuning only, the result does not depend on it.
        fused: use a fused kernel when one is available - mamba-ssm's on CUDA, the C scan on CPU (False:
            always the project's PyTorch scan, on any device; for comparisons and tests).
    Returns:
        y shaped like u, in u's dtype.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias, time_major)
    if chunk is not None and chunk < 1:
        raise UserError(f"selective_scan: chunk must be >= 1 (or None for automatic), got {chunk}")
    if u.is_cuda and fused:
        mamba_ssm_fn = _mamba_ssm_scan()
        if mamba_ssm_fn is not None:
            if time_major:  # mamba-ssm wants (batch, d, L) and (batch, N, L)
                u, delta, B, C = (t.permute(1, 2, 0) for t in (u, delta, B, C))
                z = None if z is None else z.permute(1, 2, 0)
            y = mamba_ssm_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
            return y.permute(2, 0, 1) if time_major else y
    with torch.autocast(device_type=u.device.type, enabled=False):
        return _scan_project_kernel(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, time_major, chunk, fused
        )


def _scan_project_kernel(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    time_major: bool,
    chunk: int | None,
    fused: bool = True,
) -> Tensor:
    """Cast to the compute dtype, bring to time-major layout, run :class:`_FusedScan` (CPU, when the C kernel
    builds) or :class:`_ChunkedScan`, and back."""
    dtype_in = u.dtype
    ct = _compute_dtype(u)
    u, delta, A, B, C = (t.to(ct) for t in (u, delta, A, B, C))
    D, z, delta_bias = _cast(D, ct), _cast(z, ct), _cast(delta_bias, ct)
    if (
        not time_major
    ):  # (batch, d, L) -> (L, batch, d): a time step becomes one contiguous slice in the kernel
        u, delta, B, C = (t.permute(2, 0, 1) for t in (u, delta, B, C))
        z = None if z is None else z.permute(2, 0, 1)
    L, bsz, d = u.shape
    u, delta, A, B, C = (t.contiguous() for t in (u, delta, A, B, C))
    kernels = fused_kernels(u, A.shape[1]) if fused else None
    if kernels is not None:
        T = CHECKPOINT_STEPS if chunk is None else chunk
        z = None if z is None else z.contiguous()
        y = _FusedScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, T, kernels)
    else:
        T = auto_chunk(bsz, d, A.shape[1]) if chunk is None else chunk
        y = _ChunkedScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, T)  # (L, batch, d_inner)
    if not time_major:
        y = y.permute(1, 2, 0)
    return y.to(dtype_in)
