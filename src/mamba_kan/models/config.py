"""Model configuration: one dataclass for all six variants, validated at the boundary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from mamba_kan.errors import UserError, require

MATCH_MODES = ("params", "flops", "none")
# what the matched quantity covers: "mixer" = each mixer's own mlp variant is the reference (the feedforward blocks
# of one mixer are matched to each other; the mixer itself is the same in all three), "model" = every variant's
# whole model is matched to mlp_transformer (the mixer's extra parameters come out of the feedforward block)
MATCH_SCOPES = ("mixer", "model")
# FLOP conventions: "yu2024" = Yu et al. (2024)'s accounting (every spline evaluation pays the Cox-de Boor
# recursion), "implementation" = the operations this project's kernels perform (one local polynomial per scalar)
FLOP_COUNTS = ("yu2024", "implementation")


@dataclass
class ModelConfig:
    """Sizes and hyperparameters shared by every variant.

    Only ``ffn`` and ``mixer`` differ between the six variants; the feedforward hidden width of every variant is
    solved from its reference (``match_scope='mixer'``: the mlp variant of the same mixer; ``'model'``:
    ``mlp_transformer``; both with hidden width ``ref_hidden``) so that parameters (or FLOPs/token under
    ``match='flops'``, counted by ``flop_count``) agree within 5%. ``ffn_hidden`` forces a width and disables
    matching. ``dropout`` acts on the embedding and on every residual branch (after each mixer and each
    feedforward block), the same sites in every variant.
    """

    d_model: int = 64
    n_layers: int = 2
    # attention
    n_heads: int = 4
    # reference MLP width (mlp_transformer); default 4 * d_model as in GPT-2
    ref_hidden: int | None = None
    match: str = "params"
    match_scope: str = "mixer"
    flop_count: str = "yu2024"
    ffn_hidden: int | None = None
    # B-spline / KAN edge functions (KAN paper defaults G=5, k=3)
    grid_size: int = 5
    spline_order: int = 3
    grid_range: tuple[float, float] = (-3.0, 3.0)
    spline_base: bool = True  # keep the silu base branch (False = Yu et al.'s spline-only activation)
    # Mamba-1 (mamba_simple.py defaults)
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None  # default ceil(d_model / 16)
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    # misc
    dropout: float = 0.0
    tie_embeddings: bool = True
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        self.grid_range = tuple(float(v) for v in self.grid_range)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        require(self.d_model >= 1, f"d_model must be >= 1, got {self.d_model}")
        require(self.n_layers >= 1, f"n_layers must be >= 1, got {self.n_layers}")
        require(self.n_heads >= 1, f"n_heads must be >= 1, got {self.n_heads}")
        require(
            self.d_model % self.n_heads == 0,
            f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})",
        )
        require(self.grid_size >= 1, f"grid_size must be >= 1, got {self.grid_size}")
        require(self.spline_order >= 0, f"spline_order must be >= 0, got {self.spline_order}")
        require(
            len(self.grid_range) == 2 and self.grid_range[0] < self.grid_range[1],
            f"grid_range must be (low, high) with low < high, got {self.grid_range}",
        )
        if self.match not in MATCH_MODES:
            raise UserError(f"unknown match mode {self.match!r}; valid choices: {', '.join(MATCH_MODES)}")
        if self.match_scope not in MATCH_SCOPES:
            raise UserError(
                f"unknown match scope {self.match_scope!r}; valid choices: {', '.join(MATCH_SCOPES)}"
            )
        if self.flop_count not in FLOP_COUNTS:
            raise UserError(
                f"unknown FLOP count {self.flop_count!r}; valid choices: {', '.join(FLOP_COUNTS)}"
            )
        require(self.ref_hidden is None or self.ref_hidden >= 1, "ref_hidden must be >= 1")
        require(self.ffn_hidden is None or self.ffn_hidden >= 1, "ffn_hidden must be >= 1")
        require(
            self.d_state >= 1 and self.d_conv >= 1 and self.expand >= 1,
            "d_state, d_conv, expand must be >= 1",
        )
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def reference_hidden(self) -> int:
        return self.ref_hidden if self.ref_hidden is not None else 4 * self.d_model

    @property
    def resolved_dt_rank(self) -> int:
        return self.dt_rank if self.dt_rank is not None else -(-self.d_model // 16)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["grid_range"] = list(self.grid_range)
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise UserError(
                f"unknown model setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
            )
        return cls(**values)
