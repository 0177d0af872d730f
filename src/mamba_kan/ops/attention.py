"""Causal self-attention with rotary positions: the op under :class:`mamba_kan.modules.attention.CausalSelfAttention`.

Two paths with the same maths (causal softmax attention of Vaswani et al. 2017, §3.2.1; RoPE of Su et al. 2021):

* fused - the generated C kernel of :mod:`mamba_kan.ops.attention_kernel` for CPU float32 with head dimension
  <= 8 at any length or <= 16 up to L = 512 (the sizes the quick and study presets train; measured faster than
  SDPA there), when it builds and ``MAMBA_KAN_KERNELS`` is not 0;
* PyTorch - RoPE on the (B, H, L, hd) views and ``torch.nn.functional.scaled_dot_product_attention``
  (flash / memory-efficient kernels where the device has them): every other device, dtype, head size, autocast.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from mamba_kan.ops.attention_kernel import attention_backward, attention_forward, load_attention_kernels
from mamba_kan.ops.kernels import cpu_float32

__all__ = [
    "apply_rope",
    "causal_attention",
    "fused_attention_applies",
    "fused_attention_kernels",
    "rope_cos_sin",
]


@functools.lru_cache(maxsize=64)
def _rope_tables(seq_len: int, head_dim: int, device: torch.device, dtype: torch.dtype, base: float):
    with torch.inference_mode(False):  # a first call under inference mode must not cache inference tensors
        return compute_rope_cos_sin(seq_len, head_dim, device, dtype, base)


def compute_rope_cos_sin(seq_len: int, head_dim: int, device, dtype, base: float = 10000.0):
    """The uncached tables of :func:`rope_cos_sin`, computed afresh on every call."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.arange(seq_len, device=device, dtype=torch.float32).unsqueeze(-1) * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rope_cos_sin(seq_len: int, head_dim: int, device, dtype, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """(L, head_dim/2) cos and sin tables of RoPE with frequencies base^(-2i/head_dim).

    Cached per (length, head dim, device, dtype, base): every layer and step of a run reuses one pair of tables
    instead of recomputing L x hd/2 cosines and sines per layer per step. The tables are constants (no grad);
    callers must not write into them.
    """
    return _rope_tables(int(seq_len), int(head_dim), torch.device(device), dtype, float(base))


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of x (B, H, L, D) by the angles of position L."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


# Where the fused kernel beats SDPA (fwd + bwd, 1 thread, AVX2, 2026-12-03; sdpa time / fused time): head dim 8:
# L 256 2.7x, 512 3.9x, 1024 2.5x, 2048 2.0x; head dim 16: L 128 1.45x, 512 1.1x, 1024 0.54x, 2048 0.48x; head
# dim 32: L 256 0.65x, 1024 0.23x. Its per-row passes over the (hd, L) key block fall out of L1 for wide heads at
# long lengths, where SDPA's blocked kernel wins.
_FUSED_MAX_LENGTH = {8: None, 16: 512}  # largest head dim -> longest sequence (None: any)


def fused_attention_applies(head_dim: int, length: int) -> bool:
    """Whether the fused kernel is the faster path for this head dimension and sequence length (table above)."""
    for max_hd, max_len in sorted(_FUSED_MAX_LENGTH.items()):
        if head_dim <= max_hd:
            return max_len is None or length <= max_len
    return False


def fused_attention_kernels(qkv: Tensor, head_dim: int):
    """The fused C kernels for this input, or None when the PyTorch path must run (not CPU float32 with
    autocast off, a head size / length where SDPA is faster (:func:`fused_attention_applies`), an odd head
    dimension, no C compiler, or ``MAMBA_KAN_KERNELS=0``)."""
    if not cpu_float32(qkv) or not fused_attention_applies(head_dim, qkv.shape[1] if qkv.dim() == 3 else 0):
        return None
    return load_attention_kernels(head_dim)


class _FusedCausalAttention(torch.autograd.Function):
    """qkv (B, L, 3 d) -> y (B, L, d) in C; saves qkv, y and the row log-sum-exps (B, H, L) for the backward,
    which recomputes the probabilities (no (L, L) matrix is stored)."""

    @staticmethod
    def forward(ctx, qkv: Tensor, cos: Tensor, sin: Tensor, n_heads: int, kernels):  # type: ignore[override]
        y, lse = attention_forward(kernels, qkv, cos, sin, n_heads)
        ctx.save_for_backward(qkv, cos, sin, y, lse)
        ctx.opts = (n_heads, kernels)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor):  # type: ignore[override]
        qkv, cos, sin, y, lse = ctx.saved_tensors
        n_heads, kernels = ctx.opts
        gqkv = attention_backward(kernels, qkv, cos, sin, y, lse, gy.contiguous(), n_heads)
        return gqkv, None, None, None, None


def _pytorch_attention(qkv: Tensor, n_heads: int, cos: Tensor, sin: Tensor) -> Tensor:
    b, length, three_d = qkv.shape
    d = three_d // 3
    q, k, v = qkv.split(d, dim=-1)
    # (B, H, L, hd)
    q, k, v = (t.view(b, length, n_heads, d // n_heads).transpose(1, 2) for t in (q, k, v))
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return y.transpose(1, 2).reshape(b, length, d)


def causal_attention(qkv: Tensor, n_heads: int, fused: bool = True) -> Tensor:
    """Causal multi-head attention with RoPE: qkv (B, L, 3 d), the concatenated q, k, v projections -> (B, L, d).

    ``fused=False`` forces the PyTorch path (which the fused kernel is tested against).
    """
    b, length, three_d = qkv.shape
    head_dim = three_d // 3 // n_heads
    kernels = fused_attention_kernels(qkv, head_dim) if fused else None
    cos, sin = rope_cos_sin(length, head_dim, qkv.device, qkv.dtype)
    if kernels is not None:
        return _FusedCausalAttention.apply(qkv.contiguous(), cos, sin, n_heads, kernels)
    return _pytorch_attention(qkv, n_heads, cos, sin)
