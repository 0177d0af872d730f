"""The comparison is fair by construction: decay by role, init scale, widths, dropout sites, FLOPs, the sheet.

References are independent of the code under test: module types (not the role function) for decay, scipy
quadrature for GELU's second moment, the published FLOP formulas (Yu et al. 2024) written out by hand, and the
closed-form width solution of the per-unit parameter costs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.integrate import quad
from scipy.special import erf
from torch import nn

from mamba_kan.io_spec import NextTokenOutput, TokenInput
from mamba_kan.models import (
    VARIANTS,
    MambaKanModel,
    ModelConfig,
    build_model,
    check_width_floor,
    matched_ffn_widths,
    solve_ffn_hidden,
    width_floor,
)
from mamba_kan.modules.ffn import KANFFN, MLP, BSplineMLP
from mamba_kan.modules.splines import BSplineActivation, KANLinear

TOK = (TokenInput(64), NextTokenOutput(64))
SPLINE_PARAMS = ("coef", "spline_weight", "base_weight")


def _group_names(model: MambaKanModel, weight_decay: float = 0.1) -> tuple[set[str], set[str]]:
    decay, no_decay = model.optimizer_groups(weight_decay)
    ids_d, ids_n = {id(p) for p in decay["params"]}, {id(p) for p in no_decay["params"]}
    names = dict(model.named_parameters())
    return {n for n, p in names.items() if id(p) in ids_d}, {n for n, p in names.items() if id(p) in ids_n}


# --- 1. weight decay by role ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mixer", ["transformer", "mamba"])
def test_spline_family_gets_the_same_decay_in_both_spline_arms(mixer):
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2)
    seen = {}
    for ffn in ("bspline", "kan"):
        model = build_model(f"{ffn}_{mixer}", cfg, *TOK)
        decayed, not_decayed = _group_names(model)
        assert not decayed & not_decayed
        assert decayed | not_decayed == set(dict(model.named_parameters()))
        for mod_name, mod in model.named_modules():
            if isinstance(mod, BSplineActivation | KANLinear):
                for p in SPLINE_PARAMS:
                    if getattr(mod, p, None) is not None:
                        seen.setdefault((ffn, p), set()).add(f"{mod_name}.{p}" in decayed)
    # coefficients, spline scales and base scales: never decayed, whichever arm holds them
    for p in SPLINE_PARAMS:
        assert seen[("bspline", p)] == seen[("kan", p)] == {False}, p


@pytest.mark.parametrize("variant", VARIANTS)
def test_linear_weights_decayed_norms_biases_embeddings_ssm_not(variant):
    model = build_model(variant, ModelConfig(d_model=32, n_layers=1, n_heads=2), *TOK)
    decayed, not_decayed = _group_names(model)
    for mod_name, mod in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(mod, nn.Linear):
            assert f"{prefix}weight" in decayed or f"{prefix}weight" not in dict(model.named_parameters())
            if mod.bias is not None:
                assert f"{prefix}bias" in not_decayed
        if isinstance(mod, nn.LayerNorm):
            assert {f"{prefix}weight", f"{prefix}bias"} <= not_decayed
    assert "embed.embedding.weight" in not_decayed
    for name in dict(model.named_parameters()):
        if name.endswith(("A_log", ".D", "dt_proj.bias")):
            assert name in not_decayed


def test_mlp_and_bspline_arms_decay_the_same_linears():
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, ffn_hidden=24, match="none")
    d_mlp, _ = _group_names(build_model("mlp_transformer", cfg, *TOK))
    d_bsp, _ = _group_names(build_model("bspline_transformer", cfg, *TOK))
    assert d_mlp == d_bsp  # the activation's parameters are the only difference, and they are not decayed


def test_a_parameter_without_a_role_is_an_error():
    model = build_model("mlp_transformer", ModelConfig(d_model=32, n_layers=1, n_heads=2), *TOK)
    model.blocks[0].extra = nn.Parameter(torch.zeros(3))
    with pytest.raises(TypeError, match="no weight-decay role"):
        model.optimizer_groups(0.1)


# --- 2. matched init scale ----------------------------------------------------------------------------------------
def _gelu_second_moment() -> float:
    def f(z: float) -> float:
        g = 0.5 * z * (1 + erf(z / math.sqrt(2)))
        return g * g * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    return quad(f, -12, 12)[0]


def _ffn_std(variant: str, cfg: ModelConfig, seeds: int = 4) -> float:
    """RMS over seeds and layers of the FFN branch's output std on LayerNorm-ed N(0, 1) tokens."""
    var = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = build_model(variant, cfg, *TOK)
        x = F.layer_norm(torch.randn(2048, cfg.d_model), (cfg.d_model,))
        with torch.no_grad():
            var += [b.ffn(x).var().item() for b in model.blocks]
    return math.sqrt(float(np.mean(var)))


@pytest.mark.parametrize("mixer", ["transformer", "mamba"])
@pytest.mark.parametrize("d_model", [32, 64])
def test_every_arm_starts_at_the_mlp_output_scale(mixer, d_model):
    cfg = ModelConfig(d_model=d_model, n_layers=2, n_heads=2)
    mlp = _ffn_std(f"mlp_{mixer}", cfg)
    # the MLP itself: E[gelu^2] through LeCun linears, then 1/sqrt(2 n_layers) residual scaling
    assert mlp == pytest.approx(math.sqrt(_gelu_second_moment()) / math.sqrt(2 * cfg.n_layers), rel=0.1)
    for ffn in ("bspline", "kan"):
        assert _ffn_std(f"{ffn}_{mixer}", cfg) == pytest.approx(mlp, rel=0.1), ffn


# --- 3. widths: rounding, floor, scope -----------------------------------------------------------------------------
def _exact_width(ffn: str, d: int, g: int = 5, k: int = 3) -> float:
    ref = 2 * d * 4 * d + 4 * d + d  # MLP(d, 4d) with biases
    if ffn == "bspline":
        return (ref - d) / (2 * d + 1 + g + k + 2)
    return ref / (2 * d * (g + k + 2))


@pytest.mark.parametrize("d_model", [32, 64, 128])
def test_widths_round_to_multiples_of_8_only_within_1_percent(d_model):
    widths = matched_ffn_widths(ModelConfig(d_model=d_model))
    ref = 2 * d_model * 4 * d_model + 5 * d_model
    cost = {
        "bspline": lambda h: 2 * d_model * h + h + d_model + 10 * h,
        "kan": lambda h: 20 * d_model * h,
    }
    for ffn in ("bspline", "kan"):
        exact = _exact_width(ffn, d_model)
        eighth = max(8, 8 * round(exact / 8))
        expected = eighth if abs(cost[ffn](eighth) / ref - 1) <= 0.01 else round(exact)
        assert widths[ffn] == expected, (ffn, exact)


def test_bench_builds_the_training_widths():
    from mamba_kan.bench.items import matched_ffn_widths as bench_widths

    for d in (16, 32, 64, 128):
        assert bench_widths(d) == matched_ffn_widths(ModelConfig(d_model=d, n_heads=4))


def test_width_floor_flags_degenerate_widths_only():
    assert width_floor(32) == 8 and width_floor(128) == 16 and width_floor(256) == 32
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2)
    assert check_width_floor(cfg, VARIANTS, *TOK) == []
    problems = check_width_floor(
        ModelConfig(d_model=32, n_layers=2, n_heads=2, match_scope="model"), VARIANTS, *TOK
    )
    assert len(problems) == 1 and problems[0].startswith("kan_mamba: feedforward hidden width 4 ")


def test_grid_check_reports_each_degenerate_variant_and_size_once():
    from types import SimpleNamespace

    from mamba_kan.models import check_grid_width_floor

    def cell(model: str, scope: str) -> SimpleNamespace:
        cfg = ModelConfig(d_model=32, n_heads=2, match_scope=scope).to_dict()
        return SimpleNamespace(model=model, config=SimpleNamespace(model_cfg=cfg))

    cells = [cell(v, s) for s in ("mixer", "model") for v in VARIANTS for _seed in range(2)]
    problems = check_grid_width_floor(cells)
    assert len(problems) == 1 and "kan_mamba" in problems[0] and "scope model" in problems[0]


def test_within_mixer_matching_gives_each_mixer_the_same_feedforward_budget():
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2)
    for ffn in ("mlp", "bspline", "kan"):
        t = solve_ffn_hidden(f"{ffn}_transformer", cfg, *TOK)
        m = solve_ffn_hidden(f"{ffn}_mamba", cfg, *TOK)
        assert t.ffn_hidden == m.ffn_hidden
        assert (t.reference, m.reference) == ("mlp_transformer", "mlp_mamba")
        assert abs(m.param_deviation) < 0.01 and abs(m.ffn_param_deviation) < 0.01
    # whole-model matching (kept selectable) takes Mamba's extra parameters out of its feedforward block
    old = solve_ffn_hidden(
        "mlp_mamba", ModelConfig(d_model=32, n_layers=2, n_heads=2, match_scope="model"), *TOK
    )
    assert old.reference == "mlp_transformer" and old.ffn_hidden < 128


def test_models_command_shows_widths_and_warns_below_the_floor(capsys):
    from mamba_kan.cli import main

    assert main(["models", "--d-model", "32", "--n-heads", "2", "--match-scope", "model", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["ffn_hidden"] for r in rows}["kan_mamba"] == 4
    assert [r["name"] for r in rows if r["below_floor"]] == ["kan_mamba"]
    assert all({"flops_yu2024", "flops_implementation", "ffn_share"} <= set(r) for r in rows)
    assert main(["models", "--d-model", "32", "--n-heads", "2", "--match-scope", "model"]) == 0
    err = capsys.readouterr().err
    assert "below the floor 8" in err and "kan_mamba (4)" in err


# --- 4./5. no grid update; dropout at the same sites ----------------------------------------------------------------
def test_no_grid_update_in_either_arm():
    assert not any(
        hasattr(c, n)
        for c in (MambaKanModel, KANLinear, BSplineActivation)
        for n in ("update_grids", "update_grid")
    )


@pytest.mark.parametrize("variant", [*VARIANTS, "kan_ffn"])
def test_dropout_runs_at_the_same_sites_in_every_variant(variant):
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, dropout=0.3)
    model = build_model(variant, cfg, *TOK).train()
    calls: list[str] = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Dropout):
            assert mod.p == 0.3
            mod.register_forward_hook(lambda m, a, o, name=name: calls.append(name))
    model(torch.randint(0, 64, (2, 8)))
    per_block = 2 if model.mixer_type != "none" else 1
    assert calls.count("drop") == 1  # embedding
    assert all(calls.count(f"blocks.{i}.drop") == per_block for i in range(cfg.n_layers))
    assert len(calls) == 1 + per_block * cfg.n_layers
    # nothing else is random: in eval mode two calls agree exactly
    model.eval()
    x = torch.randint(0, 64, (2, 8))
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


# --- 6. FLOPs by hand -------------------------------------------------------------------------------------------------
def test_ffn_flops_by_hand_both_conventions():
    d, g, k = 32, 5, 3
    s = 9 * k * (g + 1.5 * k) + 2 * g - 2.5 * k - 1  # Yu et al. (2024): 258 at G=5, K=3
    assert s == 258
    assert (
        MLP(d, 128).flops_per_token("yu2024")
        == MLP(d, 128).flops_per_token("implementation")
        == (2 * d * 128 + 14 * 128 + 2 * 128 * d)
    )
    h = 112
    bsp = BSplineMLP(d, h)
    # their B-spline MLP layer: 2 d_in d_out + d_out * S; plus our base branch (silu 5, w_b, add) and the w_s scaling
    assert bsp.flops_per_token("yu2024") == 2 * d * h + h * (258 + 5 + 2 + 1) + 2 * h * d
    # kernel: locate (6) + one cubic by Horner (2K) + base branch (7)
    assert bsp.flops_per_token("implementation") == 4 * d * h + h * (6 + 6 + 7)
    h = 13
    kan = KANFFN(d, h)

    def yu_kan_layer(i: int, o: int) -> int:  # d_in d_out [S + 2] + F_silu d_in + 2 d_in d_out
        return int(i * o * (s + 2) + 5 * i + 2 * i * o)

    assert kan.flops_per_token("yu2024") == yu_kan_layer(d, h) + yu_kan_layer(h, d)

    def impl_kan_layer(i: int, o: int) -> int:  # K + 1 local cubics per input + silu, then a dense GEMM
        return i * (6 + 2 * k * (k + 1) + 5) + 2 * i * (g + k + 1) * o

    assert kan.flops_per_token("implementation") == impl_kan_layer(d, h) + impl_kan_layer(h, d)


def test_ffn_modules_and_config_name_the_same_flop_conventions():
    from mamba_kan.models.config import FLOP_COUNTS
    from mamba_kan.modules import ffn

    assert ffn.FLOP_COUNTS == FLOP_COUNTS


def test_flop_matching_uses_the_named_convention():
    ref = {c: MLP(32, 128).flops_per_token(c) for c in ("yu2024", "implementation")}
    cases = [
        ("yu2024", "bspline_transformer"),
        ("implementation", "bspline_mamba"),
        ("implementation", "kan_mamba"),
    ]
    for count, v in cases:
        cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, match="flops", flop_count=count)
        ffn = build_model(v, cfg, *TOK).blocks[0].ffn.flops_per_token(count)
        assert abs(ffn / ref[count] - 1) < 0.05, (count, v)
    # Yu et al. charge every KAN edge the Cox-de Boor recursion: at d_model 32 the FLOP-matched KAN is 1 wide,
    # which the width floor reports
    yu = ModelConfig(d_model=32, n_heads=2, match="flops")
    assert solve_ffn_hidden("kan_transformer", yu, *TOK).ffn_hidden == 1
    assert check_width_floor(yu, ["kan_transformer"], *TOK)
    impl = ModelConfig(d_model=32, n_heads=2, match="flops", flop_count="implementation")
    assert solve_ffn_hidden("kan_transformer", impl, *TOK).ffn_hidden > width_floor(32)


# --- 8. the fairness sheet ----------------------------------------------------------------------------------------------
def test_fairness_audit_is_json_and_consistent():
    from mamba_kan.models.audit import fairness_audit

    state = torch.random.get_rng_state()
    sheet = fairness_audit(ModelConfig(d_model=32, n_layers=2, n_heads=2, dropout=0.1), *TOK, seq_len=32)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone
    sheet = json.loads(json.dumps(sheet))
    assert sheet["match_scope"] == "mixer" and sheet["decayed_roles"] == ["conv_weight", "linear_weight"]
    rows = {v["variant"]: v for v in sheet["variants"]}
    assert list(rows) == list(VARIANTS)
    for name, v in rows.items():
        model = build_model(name, ModelConfig(d_model=32, n_layers=2, n_heads=2), *TOK, seq_len=32)
        assert (
            v["params"] == sum(v["params_by_role"].values()) == v["decayed_params"] + v["not_decayed_params"]
        )
        assert v["params"] == model.num_params() and v["ffn_hidden"] == model.ffn_hidden
        assert set(v["flops_per_token"]) == {"yu2024", "implementation"}
        assert 0 < v["ffn_share"] < 1 and 0 < v["mixer_share"] < 1
        assert not {"spline_coef", "spline_scale", "base_scale"} & set(v["decayed_by_role"])
        assert v["dropout"]["p"] == 0.1 and len(v["dropout"]["sites"]) == 3
        assert v["init_std"]["ffn"] > 0 and v["init_std"]["mixer"] > 0
    assert rows["kan_mamba"]["init_std"]["ffn"] == pytest.approx(
        rows["mlp_mamba"]["init_std"]["ffn"], rel=0.25
    )


def test_models_audit_command(capsys):
    from mamba_kan.cli import main

    assert main(["models", "--d-model", "32", "--n-heads", "2", "--audit", "--json", "--seq-len", "16"]) == 0
    sheet = json.loads(capsys.readouterr().out)
    assert [v["variant"] for v in sheet["variants"]] == list(VARIANTS)
    assert main(["models", "--d-model", "32", "--n-heads", "2", "--audit", "--seq-len", "16"]) == 0
    out = capsys.readouterr().out
    assert "fairness sheet" in out and "parameters by role" in out and "grid update" in out
