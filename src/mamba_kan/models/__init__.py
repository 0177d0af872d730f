"""Models: config, variant registry, the shared backbone and the parameter-matched factory."""

from typing import TYPE_CHECKING, Any

from mamba_kan.design import ALL_MIXERS as MIXER_TYPES
from mamba_kan.design import FFN_LEVELS as FFN_TYPES
from mamba_kan.models.config import ModelConfig
from mamba_kan.models.registry import (
    ALL_VARIANTS,
    FFN_ONLY_VARIANTS,
    REFERENCE_VARIANT,
    VARIANTS,
    parse_variant,
    variant_name,
)

if TYPE_CHECKING:
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

# The torch-backed names load on first use (PEP 562), so the config and the variant names (what the command
# line's parsers need) import without torch.
_LAZY = {
    **dict.fromkeys(
        ("MatchResult", "build_model", "check_grid_width_floor", "check_width_floor", "matched_ffn_widths",
         "solve_ffn_hidden", "width_floor"),
        "mamba_kan.models.matching",
    ),
    **dict.fromkeys(("DECAYED_ROLES", "MambaKanModel", "parameter_role"), "mamba_kan.models.model"),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
