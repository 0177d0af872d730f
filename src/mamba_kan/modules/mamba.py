"""Mamba-1 mixer (Gu & Dao 2023, §3.4 Figure 3), following mamba_ssm/modules/mamba_simple.py.

    x, z = in_proj(u).chunk(2)                     d_model -> 2 * d_inner, no bias
    x = silu(causal depthwise conv1d(x))           kernel d_conv, padding d_conv - 1, cut to L, with bias
    dt, B, C = x_proj(x).split(dt_rank, N, N)      no bias
    dt = dt_proj.weight @ dt                       bias and softplus applied inside the scan, as mamba_simple
    y = (scan(x; dt, A, B, C) + D * x) * silu(z)   A = -exp(A_log)
    out = out_proj(y)                              d_inner -> d_model, no bias

The parameter names equal mamba_simple's and mambapy's ``MambaBlock`` (in_proj, conv1d, x_proj, dt_proj, A_log, D,
out_proj), so state dicts move between them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from mamba_kan.models.config import ModelConfig
from mamba_kan.ops.conv_kernel import conv_silu_backward, conv_silu_forward, load_conv_kernels
from mamba_kan.ops.kernels import cpu_float32
from mamba_kan.ops.selective_scan import selective_scan

# Forward FLOPs per (token, channel, state) of the scan: 9, the count in VMamba's flops_selective_scan_fn (after
# state-spaces/mamba issue #110): delta*A, exp, delta*B, *u, the h update (mul, add), <h, C> (mul, add), ~1 spare.
SCAN_FLOPS_PER_STATE = 9
# Elementwise nonlinearities, FLOPs per element (Yu et al. 2024's accounting, Appendix: silu 5);
# softplus (exp, log1p, add) is counted like silu.
SILU_FLOPS = 5
SOFTPLUS_FLOPS = 5


class _CausalDepthwiseConv(torch.autograd.Function):
    """y[t] = bias + sum_k w[:, k] * x[t - (K - 1) + k] (zero before t = 0), on time-major x: (L, batch, d).

    Equal to nn.Conv1d(d, d, K, groups=d, padding=K - 1)(x)[..., :L] in (batch, d, L) layout. Written as K shifted
    multiply-adds because that layout change plus torch's depthwise conv backward cost ~3x more on CPU (measured).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        L, K = x.shape[0], weight.shape[1]
        y = torch.addcmul(bias, x, weight[:, K - 1])
        for k in range(K - 1):
            shift = K - 1 - k
            if shift < L:
                y[shift:].addcmul_(x[: L - shift], weight[:, k])
        ctx.save_for_backward(x, weight)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        L, K = x.shape[0], weight.shape[1]
        g_x = gy * weight[:, K - 1]
        g_w = torch.zeros_like(weight)
        g_w[:, K - 1] = (gy * x).sum((0, 1))
        for k in range(K - 1):
            shift = K - 1 - k
            if shift < L:
                g_x[: L - shift].addcmul_(gy[shift:], weight[:, k])
                g_w[:, k] = (gy[shift:] * x[: L - shift]).sum((0, 1))
        return g_x, g_w, gy.sum((0, 1))


def causal_depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Causal depthwise conv1d over time. x: (L, batch, d); weight: (d, K); bias: (d,) -> (L, batch, d)."""
    return _CausalDepthwiseConv.apply(x, weight, bias)


class _FusedConvSilu(torch.autograd.Function):
    """silu(causal depthwise conv(x)) in generated C (:mod:`mamba_kan.ops.conv_kernel`); saves only x."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, kernels) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight, bias)
        ctx.kernels = kernels
        return conv_silu_forward(kernels, x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor):  # type: ignore[override]
        x, weight, bias = ctx.saved_tensors
        gx, gw, gb = conv_silu_backward(ctx.kernels, x, weight, bias, gy.contiguous())
        return gx, gw, gb, None


def causal_conv_silu(x: Tensor, weight: Tensor, bias: Tensor, fused: bool = True) -> Tensor:
    """silu(causal_depthwise_conv(x, weight, bias)): one fused C pass per direction on CPU float32 (autocast off)
    when the kernel builds; else the PyTorch ops. x: (L, batch, d) -> (L, batch, d)."""
    kernels = load_conv_kernels() if fused and cpu_float32(x) and weight.dtype == torch.float32 else None
    if kernels is not None:
        return _FusedConvSilu.apply(x.contiguous(), weight.contiguous(), bias.contiguous(), kernels)
    return F.silu(causal_depthwise_conv(x, weight, bias))


class Mamba(nn.Module):
    """Mamba-1 selective-SSM mixer: (batch, L, d_model) -> (batch, L, d_model), causal.

    Sizes from ``cfg``: d_state (N), d_conv, expand (d_inner = expand * d_model), resolved_dt_rank,
    dt_min / dt_max / dt_init_floor for the step-size initialisation.
    """

    def __init__(self, d_model: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = cfg.d_state
        self.d_conv = cfg.d_conv
        self.d_inner = cfg.expand * d_model
        self.dt_rank = cfg.resolved_dt_rank

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=self.d_conv,
            groups=self.d_inner,
            padding=self.d_conv - 1,
            bias=True,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        # S4D-real initialisation A = -(1..N) per channel, stored as log so A stays negative; kept in fp32.
        a_init = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a_init))  # (d_inner, N)
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        # conv + SiLU as one C kernel where it applies (CPU float32; see causal_conv_silu); False: PyTorch ops.
        # fused_scan False: the PyTorch chunked scan instead of the fused C / mamba-ssm kernels (selective_scan)
        self.fused_conv = True
        self.fused_scan = True
        self._init_dt(cfg.dt_min, cfg.dt_max, cfg.dt_init_floor)

    def _init_dt(self, dt_min: float, dt_max: float, dt_init_floor: float) -> None:
        """mamba_simple.py: dt ~ exp(U[log dt_min, log dt_max]) clamped >= floor; bias = softplus^{-1}(dt)."""
        bound = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        u = torch.rand(self.d_inner)
        dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
        # softplus^{-1}(dt) = dt + log(1 - exp(-dt)) (pytorch issue #72759)
        inv_dt = dt + torch.log(-torch.expm1(-dt))
        with torch.no_grad():
            self.dt_proj.bias.copy_(
                inv_dt
            )  # no model-level init runs after this one: it is never overwritten

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden: (batch, L, d_model) -> (batch, L, d_model).

        Runs time-major, (L, batch, .), inside: the scan kernel works on contiguous time steps, and the linear
        layers do not care, so the only layout changes are the two (batch, L, d_model) transposes at the ends.
        """
        # (L, batch, d_model), copied once: each linear would otherwise copy the transposed view itself
        h = hidden.transpose(0, 1).contiguous()
        # in_proj as two matmuls on the halves of its weight: same maths, but x and z come out contiguous, and no
        # (L, batch, 2 * d_inner) tensor is allocated (at L=4096, batch 4 it would be 32 MiB, glibc's largest
        # reusable block, so every step would pay fresh page faults for it and its gradient: 21 ms, measured)
        w_x, w_z = self.in_proj.weight.chunk(2, dim=0)
        x, z = F.linear(h, w_x), F.linear(h, w_z)  # (L, batch, d_inner) each
        x = causal_conv_silu(x, self.conv1d.weight[:, 0, :], self.conv1d.bias, fused=self.fused_conv)
        x_dbl = self.x_proj(x)  # (L, batch, dt_rank + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # (L, batch, d_inner); bias and softplus inside the scan
        # A, D and the dt bias enter the scan in fp32 (as mamba_simple), or fp64 for a float64 model
        ct = torch.float64 if x.dtype == torch.float64 else torch.float32
        A = -torch.exp(self.A_log.to(ct))  # (d_inner, N)
        y = selective_scan(
            x,
            dt,
            A,
            B,  # (L, batch, N)
            C,
            D=self.D.to(ct),
            z=z,
            delta_bias=self.dt_proj.bias.to(ct),
            delta_softplus=True,
            time_major=True,
            fused=self.fused_scan,
        )  # (L, batch, d_inner)
        return self.out_proj(y).transpose(0, 1).contiguous()

    def flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs per token (independent of ``seq_len``: the scan is linear in length).

        Matmuls 2 * in * out (in_proj, x_proj, dt_proj, out_proj); depthwise conv 2 * d_inner * d_conv + bias;
        scan 9 * d_inner * N; elementwise per d_inner channel: conv silu 5, dt bias 1, softplus 5, D skip 2,
        gate silu 5 + product 1. d_model=128 (d_inner 256, N 16, dt_rank 8): 221,184 + 2,304 + 36,864 + 4,864.
        """
        del seq_len  # kept for a uniform mixer interface (attention's cost grows with it)
        di, n, r = self.d_inner, self.d_state, self.dt_rank
        matmuls = 2 * self.d_model * 2 * di + 2 * di * (r + 2 * n) + 2 * r * di + 2 * di * self.d_model
        conv = 2 * di * self.d_conv + di  # taps + bias
        scan = SCAN_FLOPS_PER_STATE * di * n
        # per channel: conv silu, dt bias, softplus, D skip (mul, add), gate silu(z) and the product
        elementwise = di * (SILU_FLOPS + 1 + SOFTPLUS_FLOPS + 2 + SILU_FLOPS + 1)
        return matmuls + conv + scan + elementwise
