"""The variant registry: ``{ffn}_{mixer}`` names for the 2x3 factorial design (+ the ``none`` mixer)."""

from __future__ import annotations

from mamba_kan.errors import unknown_choice
from mamba_kan.models.config import FFN_TYPES

#: The six variants of the factorial design, in display order.
VARIANTS: tuple[str, ...] = (
    "mlp_transformer",
    "bspline_transformer",
    "kan_transformer",
    "mlp_mamba",
    "bspline_mamba",
    "kan_mamba",
)
#: Feedforward-only networks (mixer ``none``), comparable with standalone KAN/MLP networks of the KAN paper.
FFN_ONLY_VARIANTS: tuple[str, ...] = ("mlp_ffn", "bspline_ffn", "kan_ffn")
ALL_VARIANTS: tuple[str, ...] = VARIANTS + FFN_ONLY_VARIANTS
REFERENCE_VARIANT = "mlp_transformer"

_MIXER_SUFFIX = {"transformer": "transformer", "mamba": "mamba", "ffn": "none"}


def parse_variant(name: str) -> tuple[str, str]:
    """'kan_mamba' -> ('kan', 'mamba'); 'mlp_ffn' -> ('mlp', 'none'). Unknown names list the valid ones."""
    ffn, _, suffix = name.partition("_")
    if name not in ALL_VARIANTS or ffn not in FFN_TYPES or suffix not in _MIXER_SUFFIX:
        raise unknown_choice("model variant", name, ALL_VARIANTS)
    return ffn, _MIXER_SUFFIX[suffix]


def variant_name(ffn: str, mixer: str) -> str:
    suffix = {v: k for k, v in _MIXER_SUFFIX.items()}[mixer]
    return f"{ffn}_{suffix}"
