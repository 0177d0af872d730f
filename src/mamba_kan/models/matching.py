"""Parameter (or FLOP) matching of the variants, the width rounding and the width floor.

Every variant's parameter count (and FLOPs/token) is an affine function of its feedforward hidden width h:
P(h) = a h + b. ``a`` is the per-unit cost of the feedforward type (2 d + 1 for an MLP, + G + k + 2 for a B-spline
activation, 2 d (G + k + 2) for KAN edges); ``b`` holds the rest. We measure a and b exactly by building at two
widths and solve P(h) = P_ref.

What P covers is ``cfg.match_scope``:

* ``"mixer"`` (default): P is the feedforward block alone and the reference is the MLP block of width
  ``cfg.reference_hidden``. Since the mixer and the ends are identical within a mixer, this equals matching each
  variant's whole model to the mlp variant *of its own mixer*: D1 = bspline - mlp and D2 = kan - bspline are
  measured at the same feedforward budget under both mixers, and the ffn x mixer interaction is not confounded by a
  feedforward block that shrinks only under Mamba. The two mixers keep their standard sizes (Mamba-1 at expand 2 is
  larger than attention); that difference is the mixer factor and is reported, not absorbed.
* ``"model"``: P is the whole model and the reference is ``mlp_transformer``, so Mamba's extra parameters come out
  of its feedforward block (the original Mamba_KAN project's rule).

Rounding: the exact solution is moved to the nearest multiple of :data:`WIDTH_MULTIPLE` when that keeps P within
:data:`ROUNDING_TOLERANCE` (1%) of its target (odd widths such as 493 are measurably slower in MKL's GEMM);
otherwise the nearest integer is kept. :func:`width_floor` is the smallest hidden width accepted without a warning.

Plug-in feedforward blocks (:func:`mamba_kan.plugins.register_ffn`) are solved by the same rule, so a plug-in
block gets the budget of the MLP of its mixer like the built-in levels do. Their size must be affine in h as
well; that is checked at a third width (h = 3), and a block whose size does not grow with h, or not linearly, is
refused with a message rather than matched wrongly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mamba_kan.errors import UserError
from mamba_kan.io_spec import InputSpec, OutputSpec
from mamba_kan.models.config import ModelConfig
from mamba_kan.models.model import MambaKanModel, make_ffn
from mamba_kan.models.registry import REFERENCE_VARIANT, is_plugin_ffn, parse_variant, variant_name

TOLERANCE = 0.05
WIDTH_MULTIPLE = 8
ROUNDING_TOLERANCE = 0.01
# The smallest accepted feedforward hidden width: max(MIN_WIDTH, d_model // FLOOR_DIVISOR). Below it a KAN FFN is
# a rank-r bottleneck (r << d_model) - a different architecture, not a KAN of the same model size.
MIN_WIDTH = 8
FLOOR_DIVISOR = 8


def width_floor(d_model: int) -> int:
    """Smallest feedforward hidden width that :func:`check_width_floor` accepts: max(8, d_model // 8)."""
    return max(MIN_WIDTH, d_model // FLOOR_DIVISOR)


@dataclass(frozen=True)
class MatchResult:
    """One variant's solved width. ``params``/``flops_per_token`` are the whole model's; ``reference`` names the
    variant it was matched to; ``*_deviation`` compare whole models (variant vs reference at ``ref_hidden``)."""

    variant: str
    ffn_hidden: int
    params: int
    flops_per_token: int
    reference: str
    reference_params: int
    reference_flops_per_token: int
    ffn_params: int
    reference_ffn_params: int

    @property
    def param_deviation(self) -> float:
        return self.params / self.reference_params - 1.0

    @property
    def flops_deviation(self) -> float:
        return self.flops_per_token / self.reference_flops_per_token - 1.0

    @property
    def ffn_param_deviation(self) -> float:
        return self.ffn_params / self.reference_ffn_params - 1.0


def reference_variant(variant: str, cfg: ModelConfig) -> str:
    """The variant ``variant`` is matched to: its own mixer's mlp variant (scope 'mixer') or mlp_transformer."""
    _, mixer = parse_variant(variant)
    return variant_name("mlp", mixer) if cfg.match_scope == "mixer" else REFERENCE_VARIANT


def _count_model(variant, cfg, input_spec, output_spec, hidden, seq_len) -> tuple[int, int]:
    m = MambaKanModel(variant, cfg, input_spec, output_spec, ffn_hidden=hidden, seq_len=seq_len)
    return m.num_params(), m.flops_per_token(seq_len)


def _count_ffn(ffn_type: str, cfg: ModelConfig, hidden: int) -> tuple[int, int]:
    block = make_ffn(ffn_type, cfg.d_model, hidden, cfg)
    return sum(p.numel() for p in block.parameters()), int(block.flops_per_token(cfg.flop_count))


def round_width(exact: float, cost, target: float) -> int:
    """``exact`` moved to the nearest multiple of 8 if ``cost(width)`` stays within 1% of ``target``, else the
    nearest integer (at least 1). ``cost``: width -> matched quantity (affine, so only two widths are tried)."""
    nearest = max(1, round(exact))
    rounded = max(WIDTH_MULTIPLE, WIDTH_MULTIPLE * round(exact / WIDTH_MULTIPLE))
    if abs(cost(rounded) / target - 1.0) <= ROUNDING_TOLERANCE:
        return rounded
    return nearest


def _check_affine(ffn_type: str, what: str, slope: int, c1: int, c3: int) -> None:
    """A plug-in block's ``what`` must grow by the same positive amount per unit of hidden width (P(h) = a h + b,
    measured at h = 1, 2, 3); otherwise solving P(h) = P_ref from two widths would give a wrong width."""
    if slope <= 0:
        raise UserError(
            f"plug-in feedforward block {ffn_type!r}: its {what} do not grow with the hidden width, so it cannot "
            f"be matched; its builder must use the hidden width it is given"
        )
    if c3 - c1 != 2 * slope:
        raise UserError(
            f"plug-in feedforward block {ffn_type!r}: its {what} are not affine in the hidden width "
            f"({c1}, {c1 + slope}, {c3} at widths 1, 2, 3); the matcher needs P(h) = a h + b"
        )


def solve_ffn_hidden(
    variant: str, cfg: ModelConfig, input_spec: InputSpec, output_spec: OutputSpec, seq_len: int = 256
) -> MatchResult:
    """The feedforward width of ``variant`` matched to :func:`reference_variant` by ``cfg.match`` and
    ``cfg.match_scope`` (see the module docstring), rounded by :func:`round_width`."""
    ffn_type, _ = parse_variant(variant)
    reference = reference_variant(variant, cfg)
    ref_hidden = cfg.reference_hidden
    ref_p, ref_f = _count_model(reference, cfg, input_spec, output_spec, ref_hidden, seq_len)
    if cfg.ffn_hidden is not None or cfg.match == "none":
        hidden = cfg.ffn_hidden if cfg.ffn_hidden is not None else ref_hidden
    else:
        if cfg.match_scope == "mixer":
            ref_counts = _count_ffn("mlp", cfg, ref_hidden)

            def count(h: int) -> tuple[int, int]:
                return _count_ffn(ffn_type, cfg, h)
        else:
            ref_counts = (ref_p, ref_f)

            def count(h: int) -> tuple[int, int]:
                return _count_model(variant, cfg, input_spec, output_spec, h, seq_len)

        which = 0 if cfg.match == "params" else 1
        what = "parameters" if which == 0 else f"FLOPs/token ({cfg.flop_count})"
        c1, c2 = count(1)[which], count(2)[which]
        slope, intercept, target = c2 - c1, c1 - (c2 - c1), ref_counts[which]
        if is_plugin_ffn(ffn_type):
            _check_affine(ffn_type, what, slope, c1, count(3)[which])
        exact = (target - intercept) / slope
        if exact < 0.5:
            raise UserError(
                f"cannot match {variant} to {reference} by {what}: its layers without the feedforward "
                f"already exceed the reference budget; raise ref_hidden (now {ref_hidden}) or d_model, "
                f"or use match_scope 'mixer'"
            )
        hidden = round_width(exact, lambda h: slope * h + intercept, target)
    params, flops = _count_model(variant, cfg, input_spec, output_spec, hidden, seq_len)
    return MatchResult(
        variant,
        hidden,
        params,
        flops,
        reference,
        ref_p,
        ref_f,
        _count_ffn(ffn_type, cfg, hidden)[0],
        _count_ffn("mlp", cfg, ref_hidden)[0],
    )


def matched_ffn_widths(cfg: ModelConfig) -> dict[str, int]:
    """{ffn type: hidden width} under ``match_scope='mixer'`` - the widths every mixer uses, needing no ends.

    For a benchmark of the feedforward blocks alone: the same rule and rounding as :func:`solve_ffn_hidden`, so the
    bench and training build the same shapes. (Under scope 'mixer' the widths do not depend on the mixer or ends.)
    """
    from dataclasses import replace

    from mamba_kan.design import FFN_LEVELS
    from mamba_kan.io_spec import NextTokenOutput, TokenInput

    scoped = replace(cfg, match_scope="mixer")
    ends = (TokenInput(2), NextTokenOutput(2))
    return {f: solve_ffn_hidden(variant_name(f, "none"), scoped, *ends).ffn_hidden for f in FFN_LEVELS}


def check_width_floor(
    cfg: ModelConfig,
    variants: Iterable[str],
    input_spec: InputSpec,
    output_spec: OutputSpec,
    seq_len: int = 256,
) -> list[str]:
    """One line per variant whose solved feedforward width is below :func:`width_floor` (empty: all fine)."""
    floor = width_floor(cfg.d_model)
    problems = []
    for v in variants:
        r = solve_ffn_hidden(v, cfg, input_spec, output_spec, seq_len)
        if r.ffn_hidden < floor:
            problems.append(
                f"{v}: feedforward hidden width {r.ffn_hidden} is below the floor {floor} "
                f"(max({MIN_WIDTH}, d_model/{FLOOR_DIVISOR}) at d_model {cfg.d_model}; matched by {cfg.match}, "
                f"scope {cfg.match_scope})"
            )
    return problems


def check_grid_width_floor(cells: Iterable) -> list[str]:
    """:func:`check_width_floor` for a grid: ``cells`` have ``.model`` (a variant) and ``.config.model_cfg`` (a
    ModelConfig dict). The ends cancel out of the matching (they are the same in a variant and its reference), so a
    nominal byte-level token end is used; FLOP matching of attention uses length 256. One line per (variant, size).
    """
    from mamba_kan.io_spec import NextTokenOutput, TokenInput

    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for cell in cells:
        cfg = ModelConfig.from_dict(dict(cell.config.model_cfg))
        key = (cell.model, repr(sorted(cfg.to_dict().items())))
        if key in seen:
            continue
        seen.add(key)
        problems += check_width_floor(cfg, [cell.model], TokenInput(256), NextTokenOutput(256))
    return problems


def build_model(
    variant: str,
    cfg: ModelConfig | None,
    input_spec: InputSpec,
    output_spec: OutputSpec,
    seq_len: int = 256,
) -> MambaKanModel:
    """Build ``variant`` for the given ends with its feedforward width matched (:func:`solve_ffn_hidden`).

    ``seq_len`` is the typical sequence length, used for FLOPs/token (attention cost grows with length) and for
    FLOP matching. Parameter matching does not depend on it.
    """
    cfg = cfg or ModelConfig()
    match = solve_ffn_hidden(variant, cfg, input_spec, output_spec, seq_len)
    return MambaKanModel(variant, cfg, input_spec, output_spec, ffn_hidden=match.ffn_hidden, seq_len=seq_len)
