"""Input and output ends: how a task's data enters and leaves the shared backbone.

Inputs: token ids -> embedding; continuous values -> each scalar one token = value embedding (a learned affine map
of the scalar) + a learned position/variable embedding. Outputs: next-token logits at every position (optionally tied
to the token embedding), or a regression / multi-step forecast read out at the last position (under a causal mixer the
last position is the only one that has seen the whole input).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mamba_kan.errors import UserError
from mamba_kan.io_spec import (
    ContinuousInput,
    ForecastOutput,
    InputSpec,
    NextTokenOutput,
    OutputSpec,
    RegressionOutput,
    TokenInput,
)


class TokenEmbedding(nn.Module):
    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embedding.weight, 0.0, 0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or tokens.dtype not in (torch.int32, torch.int64):
            raise UserError(
                f"token input must be (batch, L) integer ids, got {tuple(tokens.shape)} {tokens.dtype}"
            )
        return self.embedding(tokens)


class ContinuousEmbedding(nn.Module):
    """(batch, L) real values -> (batch, L, d_model); L <= max_len."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.value = nn.Linear(1, d_model)
        self.position = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.position.weight, 0.0, 0.02)

    def forward(self, values: Tensor) -> Tensor:
        if values.dim() != 2 or not values.is_floating_point():
            raise UserError(
                f"continuous input must be (batch, L) floats, got {tuple(values.shape)} {values.dtype}"
            )
        length = values.shape[1]
        if length > self.max_len:
            raise UserError(f"input length {length} exceeds the model's max_len {self.max_len}")
        pos = self.position(torch.arange(length, device=values.device))
        return self.value(values.unsqueeze(-1).to(self.value.weight.dtype)) + pos


class VectorEmbedding(nn.Module):
    """(batch, n) real values -> (batch, 1, d_model): the whole input vector as ONE token.

    Used with the ``none`` mixer: with no token mixing, per-scalar tokens could never be combined, so the
    feedforward-only variants read the input like a standalone MLP/KAN network does (KAN paper).
    """

    def __init__(self, n_features: int, d_model: int) -> None:
        super().__init__()
        self.n_features = n_features
        self.proj = nn.Linear(n_features, d_model)

    def forward(self, values: Tensor) -> Tensor:
        if values.dim() != 2 or not values.is_floating_point() or values.shape[1] != self.n_features:
            raise UserError(
                f"continuous input must be (batch, {self.n_features}) floats, got {tuple(values.shape)} {values.dtype}"
            )
        return self.proj(values.to(self.proj.weight.dtype)).unsqueeze(1)


class LastPositionHead(nn.Module):
    """Reads the last position: (batch, L, d) -> (batch, out_dim)."""

    def __init__(self, d_model: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, out_dim)

    def forward(self, h: Tensor) -> Tensor:
        return self.proj(h[:, -1, :])


class NextTokenHead(nn.Module):
    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size, bias=False)
        nn.init.normal_(self.proj.weight, 0.0, 0.02)

    def forward(self, h: Tensor) -> Tensor:
        return self.proj(h)


def make_input_end(spec: InputSpec, d_model: int, token_mixing: bool = True) -> nn.Module:
    if isinstance(spec, TokenInput):
        return TokenEmbedding(spec.vocab_size, d_model)
    if isinstance(spec, ContinuousInput) and not token_mixing:
        return VectorEmbedding(spec.max_len, d_model)
    if isinstance(spec, ContinuousInput):
        return ContinuousEmbedding(spec.max_len, d_model)
    raise UserError(f"unknown input end {spec!r}; valid: TokenInput, ContinuousInput")


def make_output_end(spec: OutputSpec, d_model: int) -> nn.Module:
    if isinstance(spec, NextTokenOutput):
        return NextTokenHead(d_model, spec.vocab_size)
    if isinstance(spec, RegressionOutput):
        return LastPositionHead(d_model, spec.out_dim)
    if isinstance(spec, ForecastOutput):
        return LastPositionHead(d_model, spec.horizon)
    raise UserError(f"unknown output end {spec!r}; valid: NextTokenOutput, RegressionOutput, ForecastOutput")
