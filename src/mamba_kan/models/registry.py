"""The variant registry: ``{ffn}_{mixer}`` names for the 2x3 factorial design (+ the ``none`` mixer).

The vocabulary itself (levels, names, order) lives in the torch-free :mod:`mamba_kan.design`.
"""

from __future__ import annotations

from mamba_kan.design import (
    ALL_VARIANTS,
    FFN_ONLY_VARIANTS,
    REFERENCE_VARIANT,
    VARIANTS,
    try_parse_variant,
    variant_name,
)
from mamba_kan.errors import unknown_choice

__all__ = [
    "ALL_VARIANTS",
    "FFN_ONLY_VARIANTS",
    "REFERENCE_VARIANT",
    "VARIANTS",
    "parse_variant",
    "variant_name",
]


def parse_variant(name: str) -> tuple[str, str]:
    """'kan_mamba' -> ('kan', 'mamba'); 'mlp_ffn' -> ('mlp', 'none'). Unknown names list the valid ones."""
    v = try_parse_variant(name)
    if v is None:
        raise unknown_choice("model variant", name, ALL_VARIANTS)
    return v.ffn, v.mixer
