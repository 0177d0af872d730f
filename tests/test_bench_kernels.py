"""The fast spline paths (generated C kernels and their PyTorch fallback) against float64 references.

References are independent of the fast paths: scipy's B-splines for the cardinal pieces, and float64 autograd
through the dense Cox-de Boor-free basis ``uniform_bspline_basis`` (itself checked against scipy in
test_bspline.py) for values and every gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.interpolate import BSpline

import mamba_kan.ops.bspline as B
import mamba_kan.ops.bspline_autograd as BA
import mamba_kan.ops.kernels as K
from mamba_kan.modules.splines import BSplineActivation, KANLinear


@pytest.fixture
def kernels_on(monkeypatch):
    """The C kernels (skip where no C compiler can build them, e.g. a bare Windows box)."""
    monkeypatch.setenv("MAMBA_KAN_KERNELS", "1")
    if BA.load_spline_kernels(5, 3) is None:
        pytest.skip("no C compiler: the spline kernels cannot be built here")


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_cardinal_pieces_equal_scipy_bspline(order):
    """v_r(t) = M_k(t + r): the polynomial coefficients reproduce scipy's cardinal B-spline on every piece."""
    mc = np.array(B.cardinal_piece_coefficients(order))  # (r, p)
    t = np.linspace(0, 1, 101)[:-1]
    cardinal = BSpline.basis_element(np.arange(order + 2), extrapolate=False)
    for r in range(order + 1):
        ours = np.polynomial.polynomial.polyval(t, mc[r])
        np.testing.assert_allclose(ours, cardinal(t + r), atol=1e-14)


def test_cubic_pieces_are_the_closed_form():
    """The uniform cubic B-spline pieces (de Boor 2001, ch. IX): f^3/6, (-3f^3 + 3f^2 + 3f + 1)/6,
    (3f^3 - 6f^2 + 4)/6, (1 - f)^3/6."""
    expected = [
        [0, 0, 0, 1 / 6],
        [1 / 6, 3 / 6, 3 / 6, -3 / 6],
        [4 / 6, 0, -6 / 6, 3 / 6],
        [1 / 6, -3 / 6, 3 / 6, -1 / 6],
    ]
    np.testing.assert_allclose(np.array(B.cardinal_piece_coefficients(3)), expected, atol=1e-15)


def _reference_activation(x, coef, low, h, g, k, base_weight):
    """float64 autograd through the dense basis: y = sum_m c_m B_m(x) + w_b silu(x)."""
    basis = B.uniform_bspline_basis(x, low, h, g, k)
    y = (basis * coef).sum(-1)
    return y + base_weight * F.silu(x) if base_weight is not None else y


def _grads(fn, *tensors):
    """[output, d/d each input that requires grad]; an input the output does not depend on (x of a
    piecewise-constant spline without the silu branch) gets a zero gradient."""
    out = fn(*tensors)
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    inputs = [t for t in tensors if t.requires_grad]
    grads = torch.autograd.grad((out * weight).sum(), inputs, allow_unused=True)
    return [out, *(torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads))]


def _inputs(n, n_feat, g, k, seed, spread=1.6):
    gen = torch.Generator().manual_seed(seed)
    low = -2.0 + torch.rand(n_feat, generator=gen, dtype=torch.float64)
    h = (0.3 + torch.rand(n_feat, generator=gen, dtype=torch.float64)) * 4.0 / g
    centre = low + h * g / 2
    x = centre + spread * (h * g / 2) * (2 * torch.rand(n, n_feat, generator=gen, dtype=torch.float64) - 1)
    coef = torch.randn(n_feat, g + k, generator=gen, dtype=torch.float64)
    wb = torch.randn(n_feat, generator=gen, dtype=torch.float64)
    return x, coef, wb, low, h


@pytest.fixture(params=[8, 16], ids=["8-lanes", "16-lanes"])
def lanes(request, monkeypatch):
    """The spline kernels built with 8-lane (AVX2) and with 16-lane (AVX-512) vectors, whatever this CPU has:
    vector_lanes() picks one per machine, so each machine would otherwise test only its own (on an AVX-512 CPU
    the 16-lane build uses mask registers, the 8-lane build the portable selects)."""
    monkeypatch.setattr(BA, "vector_lanes", lambda: request.param)
    monkeypatch.setattr(BA, "vector_flags", lambda: ())
    return request.param


@pytest.mark.parametrize(("g", "k"), [(5, 3), (3, 2), (1, 1), (4, 3), (8, 3), (2, 0), (1, 0)])
@pytest.mark.parametrize("base", [True, False])
def test_spline_activation_kernel_matches_float64_reference(kernels_on, lanes, g, k, base):
    # 37 features: two full blocks of 16 and a shifted partial one; 1.6 x the grid span: inputs on both sides
    x, coef, wb, low, h = _inputs(300, 37, g, k, seed=g * 10 + k)
    wb = wb if base else None
    ref = _grads(
        lambda x_, c_, *w: _reference_activation(x_, c_, low, h, g, k, w[0] if w else None),
        x.clone().requires_grad_(),
        coef.clone().requires_grad_(),
        *([wb.clone().requires_grad_()] if base else []),
    )
    x32, c32 = x.float().requires_grad_(), coef.float().requires_grad_()
    extra = [wb.float().requires_grad_()] if base else []
    kernels = BA.spline_kernels(x32, g, k)
    assert kernels is not None
    fast = _grads(
        lambda x_, c_, *w: BA.bspline_activation_kernel(x_, c_, low, h, g, k, w[0] if w else None, kernels),
        x32,
        c32,
        *extra,
    )
    for i, (got, want) in enumerate(zip(fast, ref)):
        # values and d/dx are per element; parameter gradients are float32 sums over 300 rows
        tol = 2e-5 if i < 2 else 1e-4
        torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize(
    ("g", "k", "n_in", "n_out", "keep"),
    [
        (5, 3, 19, 5, True),
        # inputs narrower than one vector (the scalar kernels), one vector exactly, one and a shifted chunk
        (5, 3, 7, 3, True),
        (5, 3, 16, 3, True),
        (5, 3, 17, 3, True),
        (3, 2, 19, 5, True),
        (2, 1, 19, 5, True),
        (3, 0, 19, 5, True),  # piecewise-constant splines: no derivative, one basis per interval
        # the GEMM layouts chosen by width (ops.bspline_autograd._matmul_*): an output width off the 8-column
        # blocks, a wide output beside an odd features width; features kept or recomputed in the backward
        (5, 3, 32, 13, True),
        (5, 3, 51, 128, True),
        (5, 3, 51, 128, False),
    ],
)
@pytest.mark.parametrize("wide", [False, True], ids=["avx2-layouts", "avx512-layouts"])
def test_kan_linear_kernel_matches_float64_reference(
    kernels_on, lanes, g, k, n_in, n_out, keep, wide, monkeypatch
):
    monkeypatch.setattr(BA, "wide_vectors", lambda: wide)  # the layout choice only; the kernels stay as built
    if not keep:
        monkeypatch.setattr(BA, "KEEP_FEATURES_BYTES", 0)
    layer = KANLinear(n_in, n_out, grid_size=g, spline_order=k, grid_range=(-1.5, 2.0))
    with torch.no_grad():
        layer.coef.normal_()
        layer.spline_weight.normal_()
    x = torch.rand(200, n_in, dtype=torch.float64) * 5 - 2  # inside and beyond the grid
    params = [layer.base_weight, layer.spline_weight, layer.coef]

    def reference(x_, wb, ws, c):  # explicit per-edge sum in float64
        basis = B.uniform_bspline_basis(x_, layer.grid_low.double(), layer.grid_h.double(), g, k)
        spline = torch.einsum("nim,oim->noi", basis, c)
        return (wb * F.silu(x_).unsqueeze(1) + ws * spline).sum(-1)

    ref = _grads(
        reference, x.clone().requires_grad_(), *[p.detach().double().requires_grad_() for p in params]
    )
    fast = _grads(
        lambda x_, wb, ws, c: BA.kan_linear_kernel(
            x_, wb, ws, c, layer.grid_low, layer.grid_h, g, k, BA.spline_kernels(x_, g, k)
        ),
        x.float().requires_grad_(),
        *[p.detach().clone().requires_grad_() for p in params],
    )
    for got, want in zip(fast, ref):
        torch.testing.assert_close(got.double(), want, atol=5e-5, rtol=5e-5)


def test_kernels_and_pytorch_fallback_agree_in_the_modules(kernels_on, monkeypatch):
    torch.manual_seed(0)
    act, kan = BSplineActivation(40), KANLinear(24, 7)
    xa, xk = torch.randn(64, 40) * 2, torch.randn(64, 24) * 2
    results = []
    for switch in ("1", "0"):
        monkeypatch.setenv("MAMBA_KAN_KERNELS", switch)
        assert (BA.spline_kernels(xa, 5, 3) is None) == (switch == "0")
        for module, x in ((act, xa), (kan, xk)):
            module.zero_grad()
            xi = x.clone().requires_grad_()
            y = module(xi)
            y.pow(2).sum().backward()
            results.append([y.detach(), xi.grad] + [p.grad.clone() for p in module.parameters()])
    for fast, slow in zip(results[:2], results[2:]):
        for a, b in zip(fast, slow):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_kernels_split_rows_over_threads_without_changing_results(kernels_on):
    x, coef, wb, low, h = _inputs(4096, 50, 5, 3, seed=3)
    x32 = x.float().requires_grad_()
    out = []
    prev = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            kernels = BA.spline_kernels(x32, 5, 3)
            y = BA.bspline_activation_kernel(
                x32, coef.float().requires_grad_(), low, h, 5, 3, wb.float(), kernels
            )
            (gx,) = torch.autograd.grad(y.sum(), x32)
            out.append((y.detach(), gx))
    finally:
        torch.set_num_threads(prev)
    torch.testing.assert_close(out[0][0], out[1][0])
    torch.testing.assert_close(out[0][1], out[1][1])


def test_nan_inputs_give_nan_outputs_not_a_crash(kernels_on):
    x = torch.tensor([[0.5, float("nan"), -9.0, 9.0]])
    coef = torch.randn(4, 8)
    y = BA.bspline_activation_kernel(x, coef, -3.0, 1.2, 5, 3, None, BA.spline_kernels(x, 5, 3))
    assert torch.isnan(y[0, 1]) and torch.isfinite(y[0, [0, 2, 3]]).all()
    kan = KANLinear(4, 2)
    assert torch.isnan(kan(x)).all()  # every output sums over the NaN input's edges


def test_without_a_compiler_the_pytorch_path_runs(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("MAMBA_KAN_KERNELS", "1")
    monkeypatch.setenv("MAMBA_KAN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(K, "_LOADED", {})
    x, coef, wb, low, h = _inputs(50, 6, 5, 3, seed=4)
    with caplog.at_level("WARNING"):
        assert BA.load_spline_kernels(5, 3) is None
    assert "PyTorch path" in caplog.text
    y = BA.bspline_activation(x.float(), coef.float(), low, h, 5, 3, wb.float())
    torch.testing.assert_close(
        y.double(), _reference_activation(x, coef, low, h, 5, 3, wb), atol=1e-5, rtol=1e-5
    )


def test_pytorch_path_with_base_branch_passes_gradcheck():
    x, coef, wb, low, h = _inputs(8, 3, 4, 3, seed=5)
    args = (x.requires_grad_(), coef.requires_grad_(), wb.requires_grad_())
    assert torch.autograd.gradcheck(lambda x_, c_, w_: BA.bspline_activation(x_, c_, low, h, 4, 3, w_), args)


def test_non_contiguous_inputs_are_handled(kernels_on):
    x, coef, wb, low, h = _inputs(40, 24, 5, 3, seed=6)
    x_t = x.float().t().contiguous().t().requires_grad_()  # same values, feature-major storage
    assert not x_t.is_contiguous()
    y = BA.bspline_activation_kernel(
        x_t, coef.float(), low, h, 5, 3, wb.float(), BA.spline_kernels(x_t, 5, 3)
    )
    (gx,) = torch.autograd.grad(y.sum(), x_t)
    x64 = x.clone().requires_grad_()
    y64 = _reference_activation(x64, coef, low, h, 5, 3, wb)
    (gx64,) = torch.autograd.grad(y64.sum(), x64)
    torch.testing.assert_close(y.double(), y64.detach(), atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(gx.double(), gx64, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("n_feat", [1, 5, 8, 9, 16, 23, 37])
def test_activation_kernel_backward_at_every_width(kernels_on, lanes, n_feat):
    """The backward kernel walks VL (8 or 16) features at a time: widths below VL (padded), exact multiples and a
    shifted last chunk all give the float64 reference's gradients (values outside the grid and a NaN-free mix)."""
    x, coef, wb, low, h = _inputs(130, n_feat, 5, 3, seed=n_feat)
    ref = _grads(
        lambda x_, c_, w_: _reference_activation(x_, c_, low, h, 5, 3, w_),
        *(t.clone().requires_grad_() for t in (x, coef, wb)),
    )
    x32, c32, w32 = (t.float().requires_grad_() for t in (x, coef, wb))
    kernels = BA.spline_kernels(x32, 5, 3)
    assert f"#define VL {lanes}" in BA.spline_kernel_source(5, 3, lanes)
    fast = _grads(
        lambda x_, c_, w_: BA.bspline_activation_kernel(x_, c_, low, h, 5, 3, w_, kernels), x32, c32, w32
    )
    for i, (got, want) in enumerate(zip(fast, ref)):
        tol = 2e-5 if i < 2 else 1e-4
        torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("base", [True, False])
def test_activation_backward_nan_input_poisons_only_its_feature(kernels_on, lanes, base):
    """A NaN input gives NaN in its own d/dx element and in its feature's coefficient (and w_b) gradient, not a
    crash or a silently finite sum; every other element and feature stays finite and equal to the gradients of
    the finite input (features are independent)."""
    x, coef, wb, low, h = _inputs(64, 20, 5, 3, seed=11)
    x32, c32 = x.float(), coef.float()
    w32 = wb.float() if base else None
    kernels = BA.spline_kernels(x32, 5, 3)

    def grads(x_):
        xr, cr = x_.clone().requires_grad_(), c32.clone().requires_grad_()
        wr = w32.clone().requires_grad_() if base else None
        y = BA.bspline_activation_kernel(xr, cr, low, h, 5, 3, wr, kernels)
        return torch.autograd.grad(y.sum(), [xr, cr] + ([wr] if base else []))

    poisoned = x32.clone()
    poisoned[7, 3] = float("nan")
    got, clean = grads(poisoned), grads(x32)
    others = [f for f in range(20) if f != 3]
    assert torch.isnan(got[0][7, 3]) and torch.isfinite(got[0][:, others]).all()
    assert torch.isnan(got[1][3]).any() and torch.isfinite(got[1][others]).all()
    torch.testing.assert_close(got[0][:, others], clean[0][:, others])
    torch.testing.assert_close(got[1][others], clean[1][others])
    if base:
        assert torch.isnan(got[2][3]) and torch.isfinite(got[2][others]).all()
