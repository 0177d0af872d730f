"""B-spline bases against scipy.interpolate.BSpline, and their numerical properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

from mamba_kan.ops.bspline import (
    bspline_basis_cox_de_boor,
    uniform_bspline_basis,
    uniform_bspline_local,
    uniform_knots,
)


def scipy_bases(knots: np.ndarray, order: int, x: np.ndarray) -> np.ndarray:
    """All bases of degree ``order`` on ``knots`` at x, from scipy (0 outside each support)."""
    n = len(knots) - order - 1
    cols = []
    for m in range(n):
        b = BSpline.basis_element(knots[m : m + order + 2], extrapolate=False)(x)
        cols.append(np.nan_to_num(b))
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_cox_de_boor_equals_scipy_on_random_nonuniform_grids(order):
    rng = np.random.default_rng(order)
    for _ in range(5):
        knots = np.sort(rng.uniform(-3, 3, size=order + 8))
        x = rng.uniform(knots[0], knots[-1], size=400)
        ours = bspline_basis_cox_de_boor(torch.from_numpy(x), torch.from_numpy(knots), order).numpy()
        np.testing.assert_allclose(ours, scipy_bases(knots, order, x), atol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("grid_size", [1, 3, 5, 10])
def test_uniform_fast_path_equals_scipy(order, grid_size):
    rng = np.random.default_rng(10 * order + grid_size)
    low, high = sorted(rng.uniform(-4, 4, size=2))
    knots = uniform_knots(grid_size, order, low, high, torch.float64).numpy()
    x = rng.uniform(low, high, size=500)
    ours = uniform_bspline_basis(torch.from_numpy(x), low, (high - low) / grid_size, grid_size, order).numpy()
    np.testing.assert_allclose(ours, scipy_bases(knots, order, x), atol=1e-12)


def test_float32_fast_path_accurate_and_partition_of_unity():
    x = torch.linspace(-3, 3, 10001)
    b32 = uniform_bspline_basis(x, -3.0, 6.0 / 5, 5, 3)
    b64 = uniform_bspline_basis(x.double(), -3.0, 6.0 / 5, 5, 3)
    assert b32.dtype == torch.float32
    assert (b32.double() - b64).abs().max() < 1e-6
    torch.testing.assert_close(b32.sum(-1), torch.ones_like(x), atol=1e-6, rtol=0)
    assert (b32 >= 0).all()


def test_cubic_closed_form():
    """The four non-zero uniform cubic B-spline weights at fractional position f (de Boor 2001, ch. IX)."""
    f = torch.rand(1000, dtype=torch.float64) * 0.999
    vals, _ = uniform_bspline_local(f, 0.0, 1.0, 1, 3)  # one interval [0, 1]
    expected = torch.stack(
        [f**3 / 6, (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6, (3 * f**3 - 6 * f**2 + 4) / 6, (1 - f) ** 3 / 6],
        -1,
    )
    torch.testing.assert_close(vals, expected, atol=1e-14, rtol=0)


def test_out_of_grid_inputs_are_clamped_not_dead():
    low, high, g = -1.0, 1.0, 4
    inside_low = uniform_bspline_basis(torch.tensor([low]), low, (high - low) / g, g, 3)
    inside_high = uniform_bspline_basis(torch.tensor([high]), low, (high - low) / g, g, 3)
    far = uniform_bspline_basis(torch.tensor([-50.0, 50.0]), low, (high - low) / g, g, 3)
    torch.testing.assert_close(far[0], inside_low[0])
    torch.testing.assert_close(far[1], inside_high[0])
    assert torch.allclose(far.sum(-1), torch.ones(2))


def test_bases_computed_in_float32_under_autocast():
    x = torch.randn(64, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b = uniform_bspline_basis(x.bfloat16(), -3.0, 1.2, 5, 3)
    assert b.dtype == torch.float32


def test_gradient_wrt_x_matches_scipy_derivative():
    g, k, low, high = 5, 3, -2.0, 2.0
    knots = uniform_knots(g, k, low, high, torch.float64).numpy()
    coef = np.random.default_rng(0).normal(size=g + k)
    x = torch.linspace(low + 0.01, high - 0.01, 200, dtype=torch.float64, requires_grad=True)
    y = uniform_bspline_basis(x, low, (high - low) / g, g, k) @ torch.from_numpy(coef)
    (grad,) = torch.autograd.grad(y.sum(), x)
    spline = BSpline(knots, coef, k)
    np.testing.assert_allclose(grad.numpy(), spline.derivative()(x.detach().numpy()), atol=1e-10)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_fast_paths_hand_written_backward_gradcheck(order):
    from mamba_kan.ops.bspline_autograd import bspline_activation, bspline_basis_fast

    g = torch.Generator().manual_seed(order)
    # points both inside and outside the per-feature grids (clamped region has zero spline derivative)
    x = (torch.rand(6, 3, generator=g, dtype=torch.float64) * 7 - 3.5).requires_grad_()
    low = torch.tensor([-2.0, -1.0, -3.0], dtype=torch.float64)
    h = torch.tensor([0.8, 0.5, 1.2], dtype=torch.float64)
    coef = torch.randn(3, 4 + order, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: bspline_basis_fast(x, low, h, 4, order), (x,))
    assert torch.autograd.gradcheck(lambda x, c: bspline_activation(x, c, low, h, 4, order), (x, coef))
    # and the values equal the plain basis
    torch.testing.assert_close(
        bspline_basis_fast(x, low, h, 4, order), uniform_bspline_basis(x, low, h, 4, order)
    )
