"""One visual language for every figure, static (matplotlib) and interactive (plotly).

The two factors of the design are encoded redundantly so that a figure reads in colour, in grey and for colour-blind
readers: the feedforward type (factor A) is the colour, taken from the Okabe-Ito palette (Okabe & Ito 2008,
"Color Universal Design"; safe for the common forms of colour blindness), and the sequence mixer (factor B) is the
line style and the marker. Variants outside the design (a user's own name) get the remaining Okabe-Ito colours.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mamba_kan.design import try_parse_variant

#: The Okabe-Ito palette.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
FFN_COLOURS = {"mlp": OKABE_ITO["blue"], "bspline": OKABE_ITO["orange"], "kan": OKABE_ITO["bluish_green"]}
MIXER_COLOURS = {
    "transformer": OKABE_ITO["black"],
    "mamba": OKABE_ITO["vermillion"],
    "none": OKABE_ITO["reddish_purple"],
}
_OTHER_COLOURS = ("reddish_purple", "vermillion", "sky_blue", "black", "yellow")
# matplotlib / plotly spellings of the same dash and marker per mixer
_MPL_DASH = {"transformer": "-", "mamba": "--", "none": ":"}
_MPL_MARKER = {"transformer": "o", "mamba": "s", "none": "^"}
_PLOTLY_DASH = {"transformer": "solid", "mamba": "dash", "none": "dot"}
_PLOTLY_SYMBOL = {"transformer": "circle", "mamba": "square", "none": "triangle-up"}
#: Sequential colour map for p-values and a diverging one for signed effects (both colour-blind safe).
PVALUE_CMAP = "cividis"
EFFECT_CMAP = "PuOr"


@dataclass(frozen=True)
class VariantStyle:
    colour: str
    mpl_dash: str
    mpl_marker: str
    plotly_dash: str
    plotly_symbol: str


def variant_styles(models: Sequence[str]) -> dict[str, VariantStyle]:
    """A style for each of ``models``; the design's variants always get the same one, whatever else is present."""
    out: dict[str, VariantStyle] = {}
    unknown = 0
    for m in models:
        parsed = try_parse_variant(m)
        if parsed is None:
            colour = OKABE_ITO[_OTHER_COLOURS[unknown % len(_OTHER_COLOURS)]]
            unknown += 1
            out[m] = VariantStyle(colour, "-.", "D", "dashdot", "diamond")
            continue
        ffn, mixer = parsed
        out[m] = VariantStyle(
            FFN_COLOURS[ffn], _MPL_DASH[mixer], _MPL_MARKER[mixer], _PLOTLY_DASH[mixer], _PLOTLY_SYMBOL[mixer]
        )
    return out


def mpl_text(text: object) -> str:
    """A string matplotlib shows verbatim: ``$`` would otherwise start mathtext (and a stray one raises)."""
    return str(text).replace("$", r"\$")


def slug(text: str) -> str:
    """A file-name-safe form of a task label (``timeseries/lorenz@context=64`` -> ``timeseries-lorenz-context=64``)."""
    s = re.sub(r"[^A-Za-z0-9_.=-]+", "-", str(text)).strip("-.")
    return s or "task"


def unique_slugs(names: Sequence[str]) -> dict[str, str]:
    """``slug`` for each name, with a numeric suffix where two names would share a file."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for n in names:
        base = s = slug(n)
        i = 2
        while s in used:
            s = f"{base}-{i}"
            i += 1
        used.add(s)
        out[n] = s
    return out
