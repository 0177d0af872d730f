"""`mamba-kan models`: the variants with parameters, deviation from their reference, both FLOP counts and every
feedforward width (warned below the floor); `--audit` prints the fairness sheet (:mod:`mamba_kan.models.audit`)."""

from __future__ import annotations

import argparse
import json

from mamba_kan.cli.common import console, print_table
from mamba_kan.io_spec import NextTokenOutput, TokenInput
from mamba_kan.models.config import FLOP_COUNTS, MATCH_MODES, MATCH_SCOPES, ModelConfig
from mamba_kan.models.registry import ALL_VARIANTS, VARIANTS, parse_variant

# what --match offers: the matched quantities ("none" is what a forced ffn_hidden means, not a choice here)
MATCH_CHOICES = tuple(m for m in MATCH_MODES if m != "none")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--d-model", type=int, default=ModelConfig.d_model, help="model (residual stream) width")
    p.add_argument("--n-layers", type=int, default=ModelConfig.n_layers, help="blocks (mixer + feedforward)")
    p.add_argument("--n-heads", type=int, default=ModelConfig.n_heads, help="attention heads (transformer)")
    p.add_argument("--ref-hidden", type=int, default=None, help="reference MLP width (default 4 * d_model)")
    p.add_argument(
        "--grid-size", type=int, default=ModelConfig.grid_size, help="B-spline grid intervals (bspline, kan)"
    )
    p.add_argument(
        "--spline-order", type=int, default=ModelConfig.spline_order, help="B-spline order (3 = cubic)"
    )
    p.add_argument("--d-state", type=int, default=ModelConfig.d_state, help="Mamba state size per channel")
    p.add_argument(
        "--dropout",
        type=float,
        default=ModelConfig.dropout,
        help="dropout on embedding and residual branches",
    )
    p.add_argument(
        "--match",
        choices=MATCH_CHOICES,
        default=ModelConfig.match,
        help="quantity the feedforward widths are solved to match: parameters or FLOPs/token",
    )
    p.add_argument(
        "--match-scope",
        choices=MATCH_SCOPES,
        default=ModelConfig.match_scope,
        help="mixer: each mixer's mlp variant is the reference; model: every model vs mlp_transformer",
    )
    p.add_argument(
        "--flop-count",
        choices=FLOP_COUNTS,
        default=ModelConfig.flop_count,
        help="FLOP convention used by --match flops: yu2024 (Yu et al. 2024) or implementation",
    )
    p.add_argument(
        "--vocab-size", type=int, default=256, help="token end used for counting (byte-level: 256)"
    )
    p.add_argument("--seq-len", type=int, default=256, help="sequence length for FLOPs/token")
    p.add_argument("--all", action="store_true", help="also list the feedforward-only (*_ffn) variants")
    p.add_argument(
        "--audit", action="store_true", help="the fairness sheet: roles, decay, init scales, dropout, FLOPs"
    )
    p.add_argument("--json", action="store_true", help="print JSON")


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(
        d_model=args.d_model,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        ref_hidden=args.ref_hidden,
        grid_size=args.grid_size,
        spline_order=args.spline_order,
        d_state=args.d_state,
        dropout=args.dropout,
        match=args.match,
        match_scope=args.match_scope,
        flop_count=args.flop_count,
    )


def _variants(args: argparse.Namespace) -> tuple[str, ...]:
    """The design's six (with --all the feedforward-only ones too), then the variants of loaded plug-ins."""
    from mamba_kan.plugins import plugin_variants, try_parse_variant

    extra = [v for v in plugin_variants() if args.all or try_parse_variant(v)[1] != "none"]
    return (ALL_VARIANTS if args.all else VARIANTS) + tuple(extra)


def rows(args: argparse.Namespace) -> list[dict]:
    from mamba_kan.models import MambaKanModel, solve_ffn_hidden, width_floor

    cfg = model_config(args)
    floor = width_floor(cfg.d_model)
    out = []
    for name in _variants(args):
        ffn, mixer = parse_variant(name)
        ends = (TokenInput(args.vocab_size), NextTokenOutput(args.vocab_size))
        r = solve_ffn_hidden(name, cfg, *ends, args.seq_len)
        model = MambaKanModel(name, cfg, *ends, ffn_hidden=r.ffn_hidden, seq_len=args.seq_len)
        out.append(
            {
                "name": name,
                "ffn": ffn,
                "mixer": mixer,
                "reference": r.reference,
                "params": r.params,
                "param_deviation": round(100.0 * r.param_deviation, 3),
                "ffn_param_deviation": round(100.0 * r.ffn_param_deviation, 3),
                "ffn_share": round(100.0 * r.ffn_params / r.params, 2),
                "flops_per_token": r.flops_per_token,
                "flops_deviation": round(100.0 * r.flops_deviation, 3),
                "flops_yu2024": model.flops_per_token(args.seq_len, "yu2024"),
                "flops_implementation": model.flops_per_token(args.seq_len, "implementation"),
                "ffn_hidden": r.ffn_hidden,
                "width_floor": floor,
                "below_floor": r.ffn_hidden < floor,
            }
        )
    return out


def _audit(args: argparse.Namespace) -> int:
    from mamba_kan.models.audit import fairness_audit

    variants = _variants(args)
    ends = (TokenInput(args.vocab_size), NextTokenOutput(args.vocab_size))
    sheet = fairness_audit(model_config(args), *ends, variants=variants, seq_len=args.seq_len)
    if args.json:
        print(json.dumps(sheet))
        return 0
    vs = sheet["variants"]
    print_table(
        f"fairness sheet (d_model={args.d_model}, n_layers={args.n_layers}, matched by {args.match}, "
        f"scope {args.match_scope}; init std on LayerNorm-ed N(0,1) input, after residual scaling)",
        [
            "name",
            "reference",
            "params",
            "ffn_hidden",
            "ffn_share",
            "mixer_share",
            "flops_yu2024",
            "flops_impl",
            "decayed",
            "not_decayed",
            "ffn_std",
            "mixer_std",
        ],
        [
            {
                "name": v["variant"],
                "reference": v["reference"],
                "params": v["params"],
                "ffn_hidden": f"{v['ffn_hidden']}{' (< floor)' if v['below_floor'] else ''}",
                "ffn_share": f"{100 * v['ffn_share']:.1f}%",
                "mixer_share": f"{100 * v['mixer_share']:.1f}%",
                "flops_yu2024": v["flops_per_token"]["yu2024"],
                "flops_impl": v["flops_per_token"]["implementation"],
                "decayed": v["decayed_params"],
                "not_decayed": v["not_decayed_params"],
                "ffn_std": v["init_std"]["ffn"],
                "mixer_std": v["init_std"]["mixer"],
            }
            for v in vs
        ],
    )
    roles = sorted({r for v in vs for r in v["params_by_role"]})
    print_table(
        f"parameters by role (decayed roles: {', '.join(sheet['decayed_roles'])}; the rest get no weight decay)",
        ["name", *roles],
        [{"name": v["variant"], **{r: v["params_by_role"].get(r, 0) for r in roles}} for v in vs],
    )
    first = vs[0]
    console().print(
        f"dropout p={first['dropout']['p']} at: {'; '.join(first['dropout']['sites'])} (every variant)\n"
        f"grid update: {next((v['grid_update'] for v in vs if v['grid_update']), 'n/a')}"
    )
    _warn_floor(
        [
            {
                "name": v["variant"],
                "ffn_hidden": v["ffn_hidden"],
                "below_floor": v["below_floor"],
                "width_floor": v["width_floor"],
            }
            for v in vs
        ]
    )
    return 0


def _warn_floor(table: list[dict]) -> None:
    low = [r for r in table if r["below_floor"]]
    if low:
        names = ", ".join(f"{r['name']} ({r['ffn_hidden']})" for r in low)
        console(stderr=True).print(
            f"warning: feedforward width below the floor {low[0]['width_floor']} (max(8, d_model/8)): {names}; "
            "a comparison at this size would refuse unless forced (raise d_model or use --match-scope mixer)"
        )


def run(args: argparse.Namespace) -> int:
    from mamba_kan.models import width_floor

    if args.audit:
        return _audit(args)
    table = rows(args)
    if args.json:
        print(json.dumps(table))
        return 0
    print_table(
        f"variants (d_model={args.d_model}, n_layers={args.n_layers}, matched by {args.match} "
        f"({args.flop_count} FLOPs) within scope {args.match_scope}; deviations in % of each reference; "
        f"width floor {width_floor(args.d_model)})",
        [
            "name",
            "reference",
            "params",
            "param_deviation",
            "ffn_param_deviation",
            "ffn_share",
            "flops_yu2024",
            "flops_implementation",
            "ffn_hidden",
        ],
        table,
    )
    _warn_floor(table)
    return 0
