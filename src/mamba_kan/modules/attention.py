"""Factor B, first level: causal multi-head self-attention.

The op is :func:`mamba_kan.ops.attention.causal_attention`: a fused C kernel on CPU float32 for small heads (<= 8,
or <= 16 up to L 512), else ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels
where the device has them). Positions: rotary embeddings (RoPE, Su et al. 2021) on queries and keys. Why RoPE rather than learned absolute
positions: it has no maximum length, so the long-context tasks can evaluate at lengths longer than those trained on
(induction-heads extrapolation), it is the de-facto modern default, and it adds no parameters - so the attention
mixer's parameter count does not depend on the sequence length, which keeps parameter matching length-independent.
"""

from __future__ import annotations

from torch import Tensor, nn

from mamba_kan.errors import require
from mamba_kan.ops.attention import apply_rope, causal_attention, rope_cos_sin

__all__ = ["CausalSelfAttention", "apply_rope", "rope_cos_sin"]


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
        # the fused C kernel where it applies (CPU float32, small heads; see mamba_kan.ops.attention); False
        # forces scaled_dot_product_attention
        self.fused = True

    def forward(self, x: Tensor) -> Tensor:
        return self.out_proj(causal_attention(self.qkv(x), self.n_heads, fused=self.fused))

    def flops_per_token(self, seq_len: int) -> int:
        """Projections 8 d^2 plus scores and weighted sum 4 d L_eff, L_eff = (L + 1) / 2 under the causal mask."""
        d = self.d_model
        return 8 * d * d + int(4 * d * (seq_len + 1) / 2)
