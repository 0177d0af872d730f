"""Parameter (or FLOP) matching of the six variants.

Every variant's total parameter count (and FLOPs/token) is an affine function of its feedforward hidden width h:
P(h) = a h + b, where b absorbs everything else (embeddings, norms, heads, and the mixer - Mamba's is larger than
attention) and a the per-unit cost of the feedforward type (2 d + 1 for an MLP, + G + k + 2 for a B-spline
activation, 2 d (G + k + 2) for KAN edges). We measure a and b exactly by building the model at two widths, then solve
P(h) = P_ref for the reference ``mlp_transformer`` with hidden width ``cfg.reference_hidden``. Rounding to an integer
width leaves a deviation well under 1% at practical sizes; a budget the mixer alone exceeds is a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass

from mamba_kan.errors import UserError
from mamba_kan.io_spec import InputSpec, OutputSpec
from mamba_kan.models.config import ModelConfig
from mamba_kan.models.model import MambaKanModel
from mamba_kan.models.registry import REFERENCE_VARIANT, parse_variant

TOLERANCE = 0.05


@dataclass(frozen=True)
class MatchResult:
    variant: str
    ffn_hidden: int
    params: int
    flops_per_token: int
    reference_params: int
    reference_flops_per_token: int

    @property
    def param_deviation(self) -> float:
        return self.params / self.reference_params - 1.0

    @property
    def flops_deviation(self) -> float:
        return self.flops_per_token / self.reference_flops_per_token - 1.0


def _measure(variant, cfg, input_spec, output_spec, hidden, seq_len) -> tuple[int, int]:
    m = MambaKanModel(variant, cfg, input_spec, output_spec, ffn_hidden=hidden, seq_len=seq_len)
    return m.num_params(), m.flops_per_token(seq_len)


def solve_ffn_hidden(
    variant: str, cfg: ModelConfig, input_spec: InputSpec, output_spec: OutputSpec, seq_len: int = 256
) -> MatchResult:
    """The feedforward width of ``variant`` that matches the reference by ``cfg.match`` ('params' | 'flops')."""
    parse_variant(variant)
    ref_hidden = cfg.reference_hidden
    ref_p, ref_f = _measure(REFERENCE_VARIANT, cfg, input_spec, output_spec, ref_hidden, seq_len)
    if cfg.ffn_hidden is not None or cfg.match == "none":
        hidden = cfg.ffn_hidden if cfg.ffn_hidden is not None else ref_hidden
    else:
        p1, f1 = _measure(variant, cfg, input_spec, output_spec, 1, seq_len)
        p2, f2 = _measure(variant, cfg, input_spec, output_spec, 2, seq_len)
        if cfg.match == "params":
            slope, intercept, target, what = p2 - p1, p1 - (p2 - p1), ref_p, "parameters"
        else:
            slope, intercept, target, what = f2 - f1, f1 - (f2 - f1), ref_f, "FLOPs/token"
        hidden = round((target - intercept) / slope)
        if hidden < 1:
            raise UserError(
                f"cannot match {variant} to {REFERENCE_VARIANT} by {what}: its layers without the feedforward "
                f"already exceed the reference budget; raise ref_hidden (now {ref_hidden}) or d_model"
            )
    params, flops = _measure(variant, cfg, input_spec, output_spec, hidden, seq_len)
    return MatchResult(variant, hidden, params, flops, ref_p, ref_f)


def build_model(
    variant: str,
    cfg: ModelConfig | None,
    input_spec: InputSpec,
    output_spec: OutputSpec,
    seq_len: int = 256,
) -> MambaKanModel:
    """Build ``variant`` for the given ends with its feedforward width matched to the reference.

    ``seq_len`` is the typical sequence length, used for FLOPs/token (attention cost grows with length) and for
    FLOP matching. Parameter matching does not depend on it.
    """
    cfg = cfg or ModelConfig()
    match = solve_ffn_hidden(variant, cfg, input_spec, output_spec, seq_len)
    return MambaKanModel(variant, cfg, input_spec, output_spec, ffn_hidden=match.ffn_hidden, seq_len=seq_len)
