"""The design vocabulary of the factorial comparison: one torch-free module every package imports.

Factor A is the feedforward block (``FFN_LEVELS``), factor B the sequence mixer (``MIXER_LEVELS``). A variant is
named ``{ffn}_{mixer}`` (``kan_mamba``); the token-mixing-free ``none`` mixer is spelled ``ffn`` in names
(``kan_ffn``). Nothing else in the code base builds or parses a variant name by hand.

The two backward-difference contrasts the project exists for are ``D1 = bspline - mlp`` (the learnable activation,
MLP topology held fixed) and ``D2 = kan - bspline`` (the KAN topology, spline activations held fixed).

Metric directions: a task declares ``higher_is_better`` for its primary metric and that travels with every run
record. :func:`metric_higher_is_better` is only for tables a user brings (no task to ask), where the direction has
to be read off the metric's name.
"""

from __future__ import annotations

import re
from typing import NamedTuple

#: Factor A: feedforward blocks, in contrast order (mlp -> bspline -> kan).
FFN_LEVELS: tuple[str, ...] = ("mlp", "bspline", "kan")
#: Factor B: sequence mixers of the factorial design.
MIXER_LEVELS: tuple[str, ...] = ("transformer", "mamba")
#: Mixers including ``none`` (feedforward-only networks, comparable with the KAN paper's standalone networks).
ALL_MIXERS: tuple[str, ...] = MIXER_LEVELS + ("none",)
#: How a mixer is spelled in a variant name.
_MIXER_SUFFIX: dict[str, str] = {"transformer": "transformer", "mamba": "mamba", "none": "ffn"}
_SUFFIX_MIXER: dict[str, str] = {v: k for k, v in _MIXER_SUFFIX.items()}


class Variant(NamedTuple):
    """One cell of the design: a feedforward level and a mixer level."""

    ffn: str
    mixer: str

    @property
    def name(self) -> str:
        return f"{self.ffn}_{_MIXER_SUFFIX[self.mixer]}"


def variant_name(ffn: str, mixer: str) -> str:
    """``("kan", "mamba") -> "kan_mamba"``; ``("mlp", "none") -> "mlp_ffn"``."""
    if ffn not in FFN_LEVELS or mixer not in ALL_MIXERS:
        raise ValueError(f"not a design level: ffn={ffn!r} mixer={mixer!r}")
    return Variant(ffn, mixer).name


def try_parse_variant(name: str) -> Variant | None:
    """``"kan_mamba" -> Variant("kan", "mamba")``; ``"mlp_ffn" -> Variant("mlp", "none")``; None otherwise."""
    ffn, sep, suffix = str(name).partition("_")
    if sep and ffn in FFN_LEVELS and suffix in _SUFFIX_MIXER:
        return Variant(ffn, _SUFFIX_MIXER[suffix])
    return None


#: The six variants of the factorial design, mixer-major in display order.
VARIANTS: tuple[str, ...] = tuple(variant_name(f, m) for m in MIXER_LEVELS for f in FFN_LEVELS)
#: Feedforward-only networks (mixer ``none``).
FFN_ONLY_VARIANTS: tuple[str, ...] = tuple(variant_name(f, "none") for f in FFN_LEVELS)
ALL_VARIANTS: tuple[str, ...] = VARIANTS + FFN_ONLY_VARIANTS
#: The variant every other is parameter-matched to under whole-model matching.
REFERENCE_VARIANT = "mlp_transformer"


def variant_sort_key(name: str) -> tuple[int, int, str]:
    """Canonical order: mixer-major, then mlp < bspline < kan (the order of ``ALL_VARIANTS``); unknown last."""
    v = try_parse_variant(name)
    if v is None:
        return (len(ALL_MIXERS), 0, str(name))
    return (ALL_MIXERS.index(v.mixer), FFN_LEVELS.index(v.ffn), str(name))


#: The task families, in the order of the original Mamba_KAN project (reports and tables use it).
FAMILY_ORDER: tuple[str, ...] = ("symbolic", "special_functions", "timeseries", "language", "long_context")


def family_sort_key(task: str) -> tuple[int, str]:
    """Order task labels (``family`` or ``family/config...``) by :data:`FAMILY_ORDER`, then by name."""
    family = str(task).split("/", 1)[0]
    return (FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER), str(task))


# Direction of metrics by name, for user-supplied tables only (a task's own metric carries its direction).
_HIGHER_BETTER = frozenset(
    {"accuracy", "acc", "r2", "exact_match", "f1", "auc", "precision", "recall", "score"}
)
_LOWER_BETTER = frozenset(
    {
        "mse",
        "rmse",
        "mae",
        "mase",
        "smape",
        "mape",
        "loss",
        "nll",
        "cross_entropy",
        "perplexity",
        "ppl",
        "bits_per_byte",
        "bpb",
        "bpc",
        "gap_to_floor",
        "error",
    }
)


def metric_higher_is_better(metric: str) -> bool | None:
    """Direction guessed from a metric's name (``val_accuracy`` -> True, ``test_mse`` -> False); None if unknown.

    Only for tables a user brings: results produced by this project carry the task's ``higher_is_better``.
    """
    base = re.split(r"[@/\[(=]", str(metric).lower())[0].strip()
    base = re.sub(r"^(test|val|valid|train|eval)_", "", base)
    if base in _HIGHER_BETTER:
        return True
    if base in _LOWER_BETTER:
        return False
    return None
