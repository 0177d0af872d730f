"""The six variants: parameter matching, causality, trainability, errors, and the `models` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mamba_kan.errors import UserError
from mamba_kan.io_spec import ContinuousInput, ForecastOutput, NextTokenOutput, RegressionOutput, TokenInput
from mamba_kan.models import ALL_VARIANTS, VARIANTS, ModelConfig, build_model, parse_variant, solve_ffn_hidden

TOK = (TokenInput(32), NextTokenOutput(32))
CONT = (ContinuousInput(12), RegressionOutput(2))


def test_registry_names_and_factors():
    assert VARIANTS == (
        "mlp_transformer",
        "bspline_transformer",
        "kan_transformer",
        "mlp_mamba",
        "bspline_mamba",
        "kan_mamba",
    )
    assert parse_variant("kan_mamba") == ("kan", "mamba")
    assert parse_variant("bspline_ffn") == ("bspline", "none")


def test_unknown_variant_lists_valid_names():
    with pytest.raises(UserError, match="mlp_transformer.*kan_mamba"):
        parse_variant("kan_lstm")


@pytest.mark.parametrize(
    "size",
    [
        dict(d_model=32, n_layers=2, n_heads=2),
        dict(d_model=64, n_layers=2),
        dict(d_model=128, n_layers=4),
        dict(d_model=256, n_layers=6, n_heads=8),
        dict(d_model=64, n_layers=2, grid_size=10, spline_order=2),
    ],
)
def test_parameters_matched_within_5_percent(size):
    cfg = ModelConfig(**size)
    for variant in ALL_VARIANTS:
        r = solve_ffn_hidden(variant, cfg, TokenInput(256), NextTokenOutput(256))
        assert abs(r.param_deviation) < 0.05, (variant, size, r)
        # independent recount from the built model
        model = build_model(variant, cfg, TokenInput(256), NextTokenOutput(256))
        assert sum(p.numel() for p in model.parameters()) == r.params


def test_flops_matching_selectable():
    cfg = ModelConfig(d_model=64, match="flops")
    for variant in VARIANTS:
        r = solve_ffn_hidden(variant, cfg, *TOK, seq_len=256)
        assert abs(r.flops_deviation) < 0.05, (variant, r)


def test_param_counts_follow_the_per_edge_formula():
    """KAN edges cost G + k + 2 parameters; the B-spline activation costs the same per hidden neuron."""
    cfg = ModelConfig(d_model=32, n_layers=1, ffn_hidden=10, match="none")
    sizes = {v: build_model(v, cfg, *TOK).num_params() for v in ("mlp_ffn", "bspline_ffn", "kan_ffn")}
    g, k, d, h = 5, 3, 32, 10
    mlp_ffn = 2 * d * h + h + d
    assert sizes["bspline_ffn"] - sizes["mlp_ffn"] == h * (g + k + 2)
    assert sizes["kan_ffn"] - sizes["mlp_ffn"] == 2 * d * h * (g + k + 2) - mlp_ffn


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_causal_outputs_do_not_see_the_future(variant):
    torch.manual_seed(0)
    model = build_model(variant, ModelConfig(d_model=32, n_layers=2, n_heads=2), *TOK).eval()
    x = torch.randint(0, 32, (2, 24))
    t = 11
    x2 = x.clone()
    x2[:, t + 1 :] = torch.randint(0, 32, (2, 24 - t - 1))
    y1, y2 = model(x), model(x2)
    torch.testing.assert_close(y1[:, : t + 1], y2[:, : t + 1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(y1[:, t + 1 :], y2[:, t + 1 :])


def _overfit(variant: str, ends, make_batch, steps: int = 250) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_model(variant, ModelConfig(d_model=32, n_layers=2, n_heads=2), *ends)
    x, y, loss_fn = make_batch()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, loss.item()


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_every_variant_overfits_a_tiny_token_batch(variant):
    def batch():
        g = torch.Generator().manual_seed(1)
        x = torch.randint(0, 32, (4, 16), generator=g)
        if variant.endswith("_ffn"):  # no token mixing: the target can only depend on the current token
            y = torch.randperm(32, generator=g)[x]
        else:  # random targets: memorising them needs the context
            y = torch.randint(0, 32, (4, 16), generator=g)
        return x, y, lambda out, t: torch.nn.functional.cross_entropy(out.reshape(-1, 32), t.reshape(-1))

    first, last = _overfit(variant, TOK, batch)
    assert last < first / 10, (first, last)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_every_variant_overfits_a_tiny_regression_batch(variant):
    def batch():
        g = torch.Generator().manual_seed(2)
        x = torch.rand(16, 12, generator=g) * 2 - 1
        y = torch.stack([torch.sin(3 * x[:, 0]) * x[:, -1], torch.exp(x[:, 5])], -1)
        return x, y, torch.nn.functional.mse_loss

    first, last = _overfit(variant, CONT, batch, steps=300)
    assert last < first / 20, (first, last)


def test_output_ends_shapes():
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2)
    m = build_model("kan_transformer", cfg, ContinuousInput(40), ForecastOutput(10))
    assert m(torch.randn(3, 40)).shape == (3, 10)
    m = build_model("mlp_mamba", cfg, *CONT)
    assert m(torch.randn(3, 12)).shape == (3, 2)
    m = build_model("bspline_mamba", cfg, *TOK)
    assert m(torch.randint(0, 32, (3, 7))).shape == (3, 7, 32)


def test_optimizer_groups_exclude_norms_biases_embeddings_and_ssm_params():
    m = build_model("kan_mamba", ModelConfig(d_model=32, n_layers=1), *TOK)
    decay, no_decay = m.optimizer_groups(0.1)
    nd = {id(p) for p in no_decay["params"]}
    names_nd = {n for n, p in m.named_parameters() if id(p) in nd}
    assert any(n.endswith("A_log") for n in names_nd) and any(n.endswith(".D") for n in names_nd)
    assert "embed.embedding.weight" in names_nd
    assert any("norm" in n for n in names_nd)
    assert all(p.dim() >= 2 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(d_model=30, n_heads=4), "divisible by n_heads"),
        (dict(grid_size=0), "grid_size"),
        (dict(spline_order=-1), "spline_order"),
        (dict(match="equal"), "params, flops, none"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, match):
    with pytest.raises(UserError, match=match):
        ModelConfig(**kwargs)


def test_ffn_only_variants_read_the_whole_input_vector():
    """With no token mixing, a regression output must still depend on every input variable."""
    m = build_model("kan_ffn", ModelConfig(d_model=32, n_layers=1), *CONT)
    x = torch.randn(4, 12)
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert not torch.allclose(m(x), m(x2))


def test_mismatched_input_shapes_are_clear_errors():
    m = build_model("mlp_transformer", ModelConfig(d_model=32, n_heads=2, n_layers=1), *CONT)
    with pytest.raises(UserError, match="exceeds the model's max_len"):
        m(torch.randn(2, 13))
    with pytest.raises(UserError, match="continuous input must be"):
        m(torch.randn(2, 12, 1))
    m = build_model("mlp_transformer", ModelConfig(d_model=32, n_heads=2, n_layers=1), *TOK)
    with pytest.raises(UserError, match="token input must be"):
        m(torch.randn(2, 12))


def test_models_command_json_default_size_within_5_percent():
    out = subprocess.run(
        [sys.executable, "-m", "mamba_kan", "models", "--json"], capture_output=True, text=True, check=True
    ).stdout
    rows = json.loads(out)
    assert [r["name"] for r in rows] == list(VARIANTS)
    for r in rows:
        assert set(r) >= {
            "name",
            "ffn",
            "mixer",
            "params",
            "param_deviation",
            "flops_per_token",
            "ffn_hidden",
        }
        assert abs(r["param_deviation"]) < 5.0


def test_models_command_bad_input_exit_2_one_line():
    p = subprocess.run(
        [sys.executable, "-m", "mamba_kan", "models", "--d-model", "30", "--n-heads", "4"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "divisible" in p.stderr
    assert "Traceback" not in p.stderr
