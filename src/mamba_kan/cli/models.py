"""`mamba-kan models`: the variants with parameters, deviation from the reference, FLOPs/token, hidden width."""

from __future__ import annotations

import argparse
import json

from mamba_kan.cli.common import print_table
from mamba_kan.io_spec import NextTokenOutput, TokenInput
from mamba_kan.models import ALL_VARIANTS, VARIANTS, ModelConfig, parse_variant, solve_ffn_hidden


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--d-model", type=int, default=ModelConfig.d_model)
    p.add_argument("--n-layers", type=int, default=ModelConfig.n_layers)
    p.add_argument("--n-heads", type=int, default=ModelConfig.n_heads)
    p.add_argument("--ref-hidden", type=int, default=None, help="reference MLP width (default 4 * d_model)")
    p.add_argument("--grid-size", type=int, default=ModelConfig.grid_size)
    p.add_argument("--spline-order", type=int, default=ModelConfig.spline_order)
    p.add_argument("--d-state", type=int, default=ModelConfig.d_state)
    p.add_argument("--match", choices=("params", "flops"), default="params")
    p.add_argument(
        "--vocab-size", type=int, default=256, help="token end used for counting (byte-level: 256)"
    )
    p.add_argument("--seq-len", type=int, default=256, help="sequence length for FLOPs/token")
    p.add_argument("--all", action="store_true", help="also list the feedforward-only (*_ffn) variants")
    p.add_argument("--json", action="store_true", help="print a JSON list")


def rows(args: argparse.Namespace) -> list[dict]:
    cfg = ModelConfig(
        d_model=args.d_model,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        ref_hidden=args.ref_hidden,
        grid_size=args.grid_size,
        spline_order=args.spline_order,
        d_state=args.d_state,
        match=args.match,
    )
    out = []
    for name in ALL_VARIANTS if args.all else VARIANTS:
        ffn, mixer = parse_variant(name)
        r = solve_ffn_hidden(
            name, cfg, TokenInput(args.vocab_size), NextTokenOutput(args.vocab_size), args.seq_len
        )
        out.append(
            {
                "name": name,
                "ffn": ffn,
                "mixer": mixer,
                "params": r.params,
                "param_deviation": round(100.0 * r.param_deviation, 3),
                "flops_per_token": r.flops_per_token,
                "flops_deviation": round(100.0 * r.flops_deviation, 3),
                "ffn_hidden": r.ffn_hidden,
            }
        )
    return out


def run(args: argparse.Namespace) -> int:
    table = rows(args)
    if args.json:
        print(json.dumps(table))
        return 0
    print_table(
        f"variants (d_model={args.d_model}, n_layers={args.n_layers}, matched by {args.match}; "
        "deviations in % of mlp_transformer)",
        [
            "name",
            "ffn",
            "mixer",
            "params",
            "param_deviation",
            "flops_per_token",
            "flops_deviation",
            "ffn_hidden",
        ],
        table,
    )
    return 0
