"""The one residual Block used by every variant (mamba_ssm's Block(dim, mixer_cls, mlp_cls) seam).

    x = x + drop(mixer(norm1(x)));  x = x + drop(ffn(norm2(x)))

The block does not know which mixer or feedforward it holds; ``mixer=None`` is the token-mixing-free ``none`` mixer.
Dropout (residual dropout, as GPT-2's ``resid_pdrop``) sits on the output of every residual branch, so it acts at
the same places whatever the mixer or feedforward type; no mixer or feedforward block drops anything inside itself.
"""

from __future__ import annotations

from torch import Tensor, nn


class Block(nn.Module):
    def __init__(
        self,
        d_model: int,
        mixer: nn.Module | None,
        ffn: nn.Module,
        norm_eps: float = 1e-5,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.mixer = mixer
        self.norm1 = nn.LayerNorm(d_model, eps=norm_eps) if mixer is not None else None
        self.norm2 = nn.LayerNorm(d_model, eps=norm_eps)
        self.ffn = ffn
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.mixer is not None:
            x = x + self.drop(self.mixer(self.norm1(x)))
        return x + self.drop(self.ffn(self.norm2(x)))
