"""The variant registry: ``{ffn}_{mixer}`` names for the 2x3 factorial design (+ the ``none`` mixer) and plug-ins.

The vocabulary of the design itself (levels, names, order) lives in the torch-free :mod:`mamba_kan.design`; the
plug-in feedforward blocks and mixers (:mod:`mamba_kan.plugins`) add further names, every feedforward block x every
mixer. ``ALL_VARIANTS``/``VARIANTS`` stay the built-in ones; :func:`all_variants` includes the plug-ins.
"""

from __future__ import annotations

from typing import Any

from mamba_kan import plugins
from mamba_kan.design import (
    ALL_VARIANTS,
    FFN_ONLY_VARIANTS,
    REFERENCE_VARIANT,
    VARIANTS,
)
from mamba_kan.errors import UserError, unknown_choice

__all__ = [
    "ALL_VARIANTS",
    "FFN_ONLY_VARIANTS",
    "REFERENCE_VARIANT",
    "VARIANTS",
    "all_variants",
    "build_plugin_ffn",
    "build_plugin_mixer",
    "is_plugin_ffn",
    "parse_variant",
    "variant_name",
]


def all_variants() -> tuple[str, ...]:
    """The built-in variants (``ALL_VARIANTS``), then every variant with a plug-in feedforward block or mixer."""
    return plugins.all_variants()


def variant_name(ffn: str, mixer: str) -> str:
    """``("kan", "mamba") -> "kan_mamba"``; ``("mlp", "none") -> "mlp_ffn"``; plug-in levels the same way."""
    return plugins.variant_name(ffn, mixer)


def parse_variant(name: str) -> tuple[str, str]:
    """'kan_mamba' -> ('kan', 'mamba'); 'mlp_ffn' -> ('mlp', 'none'); plug-in names the same way. Unknown names
    raise a UserError listing the valid ones."""
    parsed = plugins.try_parse_variant(name)
    if parsed is None:
        raise unknown_choice("model variant", name, all_variants())
    return parsed


def is_plugin_ffn(ffn_type: str) -> bool:
    return ffn_type in plugins.FFNS


def _check_module(kind: str, name: str, module: Any, methods: tuple[str, ...]) -> Any:
    from torch import nn

    entry = (plugins.FFNS if kind == "feedforward block" else plugins.MIXERS)[name]
    where = f"plug-in {kind} {name!r} (from {entry.source.module})"
    if not isinstance(module, nn.Module):
        raise UserError(f"{where}: its builder returned {type(module).__name__}, not a torch.nn.Module")
    missing = [m for m in methods if not callable(getattr(module, m, None))]
    if missing:
        raise UserError(f"{where}: {type(module).__name__} lacks {', '.join(missing)} (see docs/plugins.md)")
    return module


def build_plugin_ffn(ffn_type: str, d_model: int, hidden: int, cfg: Any) -> Any:
    """The plug-in feedforward block ``ffn_type`` at width ``hidden``: ``builder(d_model, hidden, cfg)``, checked
    to be an ``nn.Module`` with ``scale_residual_`` and ``flops_per_token``."""
    if ffn_type not in plugins.FFNS:
        raise ValueError(ffn_type)
    module = plugins.FFNS[ffn_type].builder(d_model, hidden, cfg)
    return _check_module("feedforward block", ffn_type, module, ("scale_residual_", "flops_per_token"))


def build_plugin_mixer(mixer_type: str, cfg: Any) -> Any:
    """The plug-in mixer ``mixer_type``: ``builder(cfg)``, checked like :func:`build_plugin_ffn`."""
    if mixer_type not in plugins.MIXERS:
        raise ValueError(mixer_type)
    module = plugins.MIXERS[mixer_type].builder(cfg)
    return _check_module("mixer", mixer_type, module, ("scale_residual_", "flops_per_token"))
