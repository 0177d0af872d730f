"""Input and output "ends" shared by tasks (which declare them) and models (which build them).

A task says what goes in and what comes out; the model factory builds the matching embedding and head, so a new
task never needs a model change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenInput:
    """Integer token ids, shape (batch, L), values in [0, vocab_size)."""

    vocab_size: int


@dataclass(frozen=True)
class ContinuousInput:
    """Real values, shape (batch, L) with L <= max_len: each scalar becomes one token
    (learned value embedding + learned position/variable embedding)."""

    max_len: int


@dataclass(frozen=True)
class NextTokenOutput:
    """Logits at every position, shape (batch, L, vocab_size)."""

    vocab_size: int


@dataclass(frozen=True)
class RegressionOutput:
    """Read out at the last position: shape (batch, out_dim)."""

    out_dim: int = 1


@dataclass(frozen=True)
class ForecastOutput:
    """Multi-step forecast read out at the last position: shape (batch, horizon)."""

    horizon: int


InputSpec = TokenInput | ContinuousInput
OutputSpec = NextTokenOutput | RegressionOutput | ForecastOutput
