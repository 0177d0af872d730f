"""The fairness sheet: everything that could differ between the variants besides the two factors, measured.

:func:`fairness_audit` builds every variant exactly as training does (:func:`~mamba_kan.models.build_model`) and
reports, per variant: parameters by role, the FFN's and mixer's parameters and share, FLOPs/token under both
conventions, the feedforward hidden width against the floor, decayed vs not-decayed parameters by role (the rule of
:func:`~mamba_kan.models.model.parameter_role`), the FFN and mixer output std at init on LayerNorm-ed Gaussian input
(after residual scaling), the dropout sites and the grid-update schedule. The result is plain JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from mamba_kan.design import VARIANTS
from mamba_kan.io_spec import InputSpec, OutputSpec
from mamba_kan.models.config import FLOP_COUNTS, ModelConfig
from mamba_kan.models.matching import build_model, solve_ffn_hidden, width_floor
from mamba_kan.models.model import DECAYED_ROLES, ROLES, MambaKanModel

AUDIT_VERSION = 1
# the residual-branch dropout sites (modules/block.py) and the embedding dropout (models/model.py)
DROPOUT_SITES = ("embedding output", "mixer output (residual branch)", "feedforward output (residual branch)")
GRID_UPDATE = "none: grids fixed at grid_range in both spline arms"


def _by_role(model: MambaKanModel) -> dict[str, int]:
    sizes = dict(model.named_parameters())
    counts = dict.fromkeys(ROLES, 0)
    for name, role in model.parameter_roles().items():
        counts[role] += sizes[name].numel()
    return {r: n for r, n in counts.items() if n}


@torch.no_grad()
def _init_stds(model: MambaKanModel, seq_len: int, seed: int) -> dict[str, float | None]:
    """RMS over layers of each residual branch's output std on LayerNorm-ed N(0, 1) input (batch 4, ``seq_len``
    tokens; the ``none`` mixer reads one token per sample, so 1024 samples)."""
    d = model.cfg.d_model
    g = torch.Generator().manual_seed(seed)
    length = min(seq_len, 128) if model.mixer_type != "none" else 1
    x = F.layer_norm(torch.randn(4 if length > 1 else 1024, length, d, generator=g), (d,))
    ffn_var, mixer_var = [], []
    for block in model.blocks:
        ffn_var.append(block.ffn(x).float().var())
        if block.mixer is not None:
            mixer_var.append(block.mixer(x).float().var())
    ffn = float(torch.stack(ffn_var).mean().sqrt())
    mixer = float(torch.stack(mixer_var).mean().sqrt()) if mixer_var else None
    return {"ffn": round(ffn, 5), "mixer": None if mixer is None else round(mixer, 5)}


def variant_audit(
    variant: str, cfg: ModelConfig, input_spec: InputSpec, output_spec: OutputSpec, seq_len: int, seed: int
) -> dict[str, Any]:
    """One variant's row of the sheet (see the module docstring). Seeds (and so changes) the global RNG."""
    match = solve_ffn_hidden(variant, cfg, input_spec, output_spec, seq_len)
    torch.manual_seed(seed)
    model = build_model(variant, cfg, input_spec, output_spec, seq_len).eval()
    roles = model.parameter_roles()
    sizes = dict(model.named_parameters())
    decayed: dict[str, int] = {}
    not_decayed: dict[str, int] = {}
    for name, role in roles.items():
        bucket = decayed if role in DECAYED_ROLES else not_decayed
        bucket[role] = bucket.get(role, 0) + sizes[name].numel()
    total = model.num_params()
    ffn_params = sum(p.numel() for b in model.blocks for p in b.ffn.parameters())
    mixer_params = sum(p.numel() for b in model.blocks if b.mixer is not None for p in b.mixer.parameters())
    floor = width_floor(cfg.d_model)
    return {
        "variant": variant,
        "ffn": model.ffn_type,
        "mixer": model.mixer_type,
        "reference": match.reference,
        "ffn_hidden": model.ffn_hidden,
        "width_floor": floor,
        "below_floor": model.ffn_hidden < floor,
        "params": total,
        "param_deviation": round(match.param_deviation, 6),
        "params_by_role": _by_role(model),
        "ffn_params": ffn_params,
        "ffn_share": round(ffn_params / total, 6),
        "mixer_params": mixer_params,
        "mixer_share": round(mixer_params / total, 6),
        "flops_per_token": {c: model.flops_per_token(seq_len, c) for c in FLOP_COUNTS},
        "decayed_by_role": decayed,
        "not_decayed_by_role": not_decayed,
        "decayed_params": sum(decayed.values()),
        "not_decayed_params": sum(not_decayed.values()),
        "init_std": _init_stds(model, seq_len, seed),
        "dropout": {"p": cfg.dropout, "sites": list(DROPOUT_SITES)},
        "grid_update": GRID_UPDATE if model.ffn_type in ("bspline", "kan") else None,
    }


def fairness_audit(
    model_cfg: ModelConfig | dict[str, Any],
    input_spec: InputSpec,
    output_spec: OutputSpec,
    variants: Iterable[str] = VARIANTS,
    seq_len: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """The fairness sheet as a JSON-ready dict: {"version", "config", "match", "match_scope", "flop_count",
    "seq_len", "decayed_roles", "variants": [one :func:`variant_audit` dict per variant]}.

    ``model_cfg``: a ModelConfig or its dict (as stored in a run's config). Init stds use ``seed`` for the weights
    and the inputs and leave the global RNG state as it was.
    """
    cfg = model_cfg if isinstance(model_cfg, ModelConfig) else ModelConfig.from_dict(dict(model_cfg))
    # matching builds throwaway models, which draw from the global RNG
    with torch.random.fork_rng(devices=[]):
        rows = [variant_audit(v, cfg, input_spec, output_spec, seq_len, seed) for v in variants]
    return {
        "version": AUDIT_VERSION,
        "config": cfg.to_dict(),
        "match": cfg.match,
        "match_scope": cfg.match_scope,
        "flop_count": cfg.flop_count,
        "seq_len": seq_len,
        "decayed_roles": sorted(DECAYED_ROLES),
        "variants": rows,
    }
