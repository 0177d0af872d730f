"""The B-spline activation and the KAN layer against their formulas and pykan."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.interpolate import BSpline

from mamba_kan.modules.ffn import KANFFN, BSplineMLP
from mamba_kan.modules.splines import BSplineActivation, KANLinear
from mamba_kan.ops.bspline import uniform_knots


def _explicit_edge_sum(layer: KANLinear, x: torch.Tensor) -> torch.Tensor:
    """y_o = sum_i [w_b silu(x_i) + w_s sum_m c B_m(x_i)], bases from scipy, float64 loops."""
    g, k = layer.grid_size, layer.spline_order
    xn = x.double().numpy()
    out = np.zeros((xn.shape[0], layer.out_features))
    for i in range(layer.in_features):
        lo = layer.grid_low[i].item()
        hi = lo + layer.grid_h[i].item() * g
        knots = uniform_knots(g, k, lo, hi, torch.float64).numpy()
        xi = np.clip(xn[:, i], lo, hi - 1e-12)
        silu = xn[:, i] / (1 + np.exp(-xn[:, i]))
        for o in range(layer.out_features):
            spline = BSpline(knots, layer.coef[o, i].detach().double().numpy(), k)(xi)
            out[:, o] += layer.base_weight[o, i].item() * silu + layer.spline_weight[o, i].item() * spline
    return torch.from_numpy(out)


def test_kan_layer_equals_explicit_per_edge_sum():
    layer = KANLinear(4, 3, grid_size=5, spline_order=3, grid_range=(-2, 2))
    with torch.no_grad():
        layer.coef.normal_()
        layer.spline_weight.normal_()
    x = torch.rand(50, 4) * 4 - 2
    torch.testing.assert_close(layer(x).double(), _explicit_edge_sum(layer, x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.reference_forward(x), layer(x), atol=1e-5, rtol=1e-5)


def test_kan_layer_equals_pykan_kanlayer():
    from kan.KANLayer import KANLayer

    torch.manual_seed(1)
    ours = KANLinear(3, 2, grid_size=5, spline_order=3, grid_range=(-1, 1))
    ref = KANLayer(in_dim=3, out_dim=2, num=5, k=3, grid_range=[-1, 1])
    with torch.no_grad():
        ours.coef.normal_()
        ref.coef.copy_(ours.coef.permute(1, 0, 2))
        ref.scale_base.copy_(ours.base_weight.t())
        ref.scale_sp.copy_(ours.spline_weight.t())
        ref.mask.fill_(1.0)
    x = torch.rand(100, 3) * 1.98 - 0.99
    y_ref = ref(x)[0]
    torch.testing.assert_close(ours(x), y_ref, atol=1e-5, rtol=1e-4)


def test_kan_layer_parameters_per_edge():
    layer = KANLinear(7, 5, grid_size=5, spline_order=3)
    assert sum(p.numel() for p in layer.parameters()) == 7 * 5 * (5 + 3 + 2)


@pytest.mark.parametrize("base", [True, False])
def test_bspline_activation_equals_formula(base):
    act = BSplineActivation(6, grid_size=4, spline_order=3, grid_range=(-3, 3), base=base)
    with torch.no_grad():
        act.coef.normal_()
        act.spline_weight.uniform_(0.5, 1.5)
    x = torch.rand(20, 6) * 6 - 3
    expected = torch.zeros(20, 6, dtype=torch.float64)
    for j in range(6):
        knots = uniform_knots(4, 3, -3.0, 3.0, torch.float64).numpy()
        spline = BSpline(knots, act.coef[j].detach().double().numpy(), 3)(
            np.clip(x[:, j].double().numpy(), -3, 3 - 1e-12)
        )
        expected[:, j] = act.spline_weight[j].item() * torch.from_numpy(spline)
        if base:
            expected[:, j] += act.base_weight[j].item() * F.silu(x[:, j].double())
    torch.testing.assert_close(act(x).double(), expected, atol=1e-5, rtol=1e-5)
    # the fast gather path has the same gradients as the dense formula
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    act(x1).square().sum().backward()
    g_fast = (x1.grad.clone(), act.coef.grad.clone())
    act.zero_grad()
    act.reference_forward(x2).square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g_fast[1], act.coef.grad, atol=1e-5, rtol=1e-4)


def test_spline_only_activation_starts_as_scaled_silu():
    """The least-squares init targets g silu(x) with g^2 = E[gelu^2] / E[silu^2] (scipy quadrature here)."""
    from scipy.integrate import quad
    from scipy.special import erf

    def moment(f):
        return quad(lambda z: f(z) ** 2 * np.exp(-z * z / 2) / np.sqrt(2 * np.pi), -12, 12)[0]

    gain = np.sqrt(
        moment(lambda z: 0.5 * z * (1 + erf(z / np.sqrt(2)))) / moment(lambda z: z / (1 + np.exp(-z)))
    )
    act = BSplineActivation(3, base=False)
    x = torch.linspace(-2.5, 2.5, 50).unsqueeze(-1).expand(-1, 3)
    assert (act(x) - gain * F.silu(x)).abs().max() < 0.02


def test_kan_regulariser_finite_with_zero_coefficients():
    layer = KANLinear(3, 3)
    with torch.no_grad():
        layer.coef.zero_()
        layer.coef[0, 0] = 1.0
    reg = layer.regularization_loss()
    assert torch.isfinite(reg)
    reg.backward()
    assert torch.isfinite(layer.coef.grad).all()


def test_ffn_blocks_map_d_model_to_d_model():
    x = torch.randn(2, 5, 16)
    for ffn in (BSplineMLP(16, 24), KANFFN(16, 8)):
        assert ffn(x).shape == x.shape


def test_kan_hidden_inputs_stay_inside_grid_at_init():
    """Splines must not die: with LayerNorm-ed inputs, the second KAN layer's inputs are mostly inside its grid."""
    ffn = KANFFN(64, 32)
    x = F.layer_norm(torch.randn(4096, 64), (64,))
    h = ffn.kan_in(x)
    inside = ((h > -3) & (h < 3)).float().mean()
    assert inside > 0.95
    assert h.std() > 0.3  # and they use the grid, not just its centre


@pytest.mark.parametrize("bad", [dict(grid_size=0), dict(spline_order=-1), dict(grid_range=(1.0, -1.0))])
def test_bad_spline_settings_are_clear_errors(bad):
    from mamba_kan.errors import UserError

    with pytest.raises(UserError, match=next(iter(bad))):
        KANLinear(3, 3, **bad)
