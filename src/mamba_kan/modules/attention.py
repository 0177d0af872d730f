"""Factor B, first level: causal multi-head self-attention.

Uses ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels where the device has
them). Positions: rotary embeddings (RoPE, Su et al. 2021) on queries and keys. Why RoPE rather than learned absolute
positions: it has no maximum length, so the long-context tasks can evaluate at lengths longer than those trained on
(induction-heads extrapolation), it is the de-facto modern default, and it adds no parameters - so the attention
mixer's parameter count does not depend on the sequence length, which keeps parameter matching length-independent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamba_kan.errors import require


def rope_cos_sin(seq_len: int, head_dim: int, device, dtype, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """(L, head_dim/2) cos and sin tables of RoPE with frequencies base^(-2i/head_dim)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.arange(seq_len, device=device, dtype=torch.float32).unsqueeze(-1) * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of x (B, H, L, D) by the angles of position L."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


class CausalSelfAttention(nn.Module):
    """(batch, L, d_model) -> (batch, L, d_model), causal.

    No attention-probability dropout: dropout is applied on the residual branch by the Block, at the same place for
    every mixer (a Mamba mixer has no attention probabilities to drop).
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        require(d_model % n_heads == 0, f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        require(
            self.head_dim % 2 == 0, f"head dimension d_model/n_heads = {self.head_dim} must be even for RoPE"
        )
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        # (B, H, L, hd)
        q, k, v = (t.view(b, length, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        cos, sin = rope_cos_sin(length, self.head_dim, x.device, q.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(y.transpose(1, 2).reshape(b, length, d))

    def flops_per_token(self, seq_len: int) -> int:
        """Projections 8 d^2 plus scores and weighted sum 4 d L_eff, L_eff = (L + 1) / 2 under the causal mask."""
        d = self.d_model
        return 8 * d * d + int(4 * d * (seq_len + 1) / 2)
