"""Models: config, variant registry, the shared backbone and the parameter-matched factory."""

from mamba_kan.design import ALL_MIXERS as MIXER_TYPES
from mamba_kan.design import FFN_LEVELS as FFN_TYPES
from mamba_kan.models.config import ModelConfig
from mamba_kan.models.matching import (
    MatchResult,
    build_model,
    check_grid_width_floor,
    check_width_floor,
    matched_ffn_widths,
    solve_ffn_hidden,
    width_floor,
)
from mamba_kan.models.model import DECAYED_ROLES, MambaKanModel, parameter_role
from mamba_kan.models.registry import (
    ALL_VARIANTS,
    FFN_ONLY_VARIANTS,
    REFERENCE_VARIANT,
    VARIANTS,
    parse_variant,
    variant_name,
)

__all__ = [
    "ALL_VARIANTS",
    "DECAYED_ROLES",
    "FFN_ONLY_VARIANTS",
    "FFN_TYPES",
    "MIXER_TYPES",
    "REFERENCE_VARIANT",
    "VARIANTS",
    "MambaKanModel",
    "MatchResult",
    "ModelConfig",
    "build_model",
    "check_grid_width_floor",
    "check_width_floor",
    "matched_ffn_widths",
    "parameter_role",
    "parse_variant",
    "solve_ffn_hidden",
    "variant_name",
    "width_floor",
]
