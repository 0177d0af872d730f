"""The Mamba-1 mixer against the PyPI package mambapy (an independent pure-PyTorch Mamba) and the official init."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mambapy.mamba import MambaBlock, MambaConfig
from torch.utils.flop_counter import FlopCounterMode

from mamba_kan.models.config import ModelConfig
from mamba_kan.modules.mamba import Mamba, causal_conv_silu, causal_depthwise_conv
from mamba_kan.ops.conv_kernel import load_conv_kernels


def pair(d_model=32, **sizes):
    """Our layer and a mambapy MambaBlock holding identical weights."""
    torch.manual_seed(0)
    ours = Mamba(d_model, ModelConfig(d_model=d_model, **sizes))
    ref_cfg = MambaConfig(
        d_model=d_model,
        n_layers=1,
        d_state=sizes.get("d_state", 16),
        d_conv=sizes.get("d_conv", 4),
        expand_factor=sizes.get("expand", 2),
        dt_rank=sizes.get("dt_rank") or "auto",
    )
    ref = MambaBlock(ref_cfg)
    ref.load_state_dict(ours.state_dict())  # same parameter names; strict: every weight is copied
    return ours, ref


def forward_backward(layer, x, weight):
    x = x.clone().requires_grad_()
    y = layer(x)
    params = list(layer.parameters())
    grads = torch.autograd.grad((y * weight).sum(), [x, *params])
    return y, grads[0], grads[1:]


@pytest.mark.parametrize(
    ("sizes", "L"),
    [
        ({}, 37),
        ({}, 64),
        ({"d_state": 8, "d_conv": 3, "expand": 3, "dt_rank": 5}, 50),
    ],
)
def test_matches_mambapy_outputs_and_gradients(sizes, L):
    ours, ref = pair(**sizes)
    x = torch.randn(2, L, 32)
    weight = torch.randn(2, L, 32)
    y, gx, gp = forward_backward(ours, x, weight)
    y_ref, gx_ref, gp_ref = forward_backward(ref, x, weight)
    assert y.shape == (2, L, 32)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-5)
    for (name, _), g, g_ref in zip(ours.named_parameters(), gp, gp_ref):
        scale = g_ref.abs().max().item()
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5 * max(scale, 1.0), msg=name)


@pytest.mark.parametrize("kernels", ["1", "0"])
def test_fused_and_fallback_scan_paths_both_match_mambapy(monkeypatch, kernels):
    """The layer with the fused C scan (kernels on; the PyTorch path where none builds) and with the PyTorch scan
    (MAMBA_KAN_KERNELS=0) against mambapy, at a length spanning several checkpoint chunks."""
    monkeypatch.setenv("MAMBA_KAN_KERNELS", kernels)
    ours, ref = pair(d_model=16)
    x, weight = torch.randn(1, 100, 16), torch.randn(1, 100, 16)
    y, gx, gp = forward_backward(ours, x, weight)
    y_ref, gx_ref, gp_ref = forward_backward(ref, x, weight)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-5)
    for (name, _), g, g_ref in zip(ours.named_parameters(), gp, gp_ref):
        torch.testing.assert_close(
            g, g_ref, rtol=1e-4, atol=1e-5 * max(g_ref.abs().max().item(), 1.0), msg=name
        )


def test_causal_conv_matches_torch_conv1d():
    torch.manual_seed(1)
    L, bsz, d, K = 11, 3, 5, 4
    x = torch.randn(L, bsz, d, dtype=torch.float64, requires_grad=True)
    w = torch.randn(d, K, dtype=torch.float64, requires_grad=True)
    b = torch.randn(d, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(L, bsz, d, dtype=torch.float64)
    y = causal_depthwise_conv(x, w, b)
    grads = torch.autograd.grad((y * gy).sum(), [x, w, b])
    y_ref = F.conv1d(x.permute(1, 2, 0), w[:, None, :], b, padding=K - 1, groups=d)[..., :L].permute(2, 0, 1)
    grads_ref = torch.autograd.grad((y_ref * gy).sum(), [x, w, b])
    torch.testing.assert_close(y, y_ref)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)
    # kernel longer than the sequence
    x2 = x[:2].detach()
    y2 = causal_depthwise_conv(x2, w, b)
    y2_ref = F.conv1d(x2.permute(1, 2, 0), w[:, None, :], b, padding=K - 1, groups=d)[..., :2].permute(
        2, 0, 1
    )
    torch.testing.assert_close(y2, y2_ref)


def test_gradcheck_whole_layer_double():
    torch.manual_seed(2)
    layer = Mamba(4, ModelConfig(d_model=4, d_state=3, d_conv=3)).double()
    x = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-6)


def test_causal_outputs_before_t_ignore_later_inputs():
    torch.manual_seed(3)
    layer = Mamba(16, ModelConfig(d_model=16))
    x = torch.randn(2, 40, 16)
    x2 = x.clone()
    x2[:, 25:] += torch.randn(2, 15, 16)
    with torch.no_grad():
        y, y2 = layer(x), layer(x2)
    torch.testing.assert_close(y[:, :25], y2[:, :25], rtol=0, atol=0)
    assert (y[:, 25] - y2[:, 25]).abs().max() > 1e-4


def test_dt_bias_is_inverse_softplus_of_dt_in_range():
    cfg = ModelConfig(d_model=512)  # d_inner 1024 samples of dt
    layer = Mamba(512, cfg)
    dt = F.softplus(layer.dt_proj.bias.detach().double())
    assert dt.min() >= cfg.dt_min * (1 - 1e-5) and dt.max() <= cfg.dt_max * (1 + 1e-5)
    # log-uniform on [1e-3, 1e-1]: both decades are populated
    assert (dt < 1e-2).float().mean().item() == pytest.approx(0.5, abs=0.1)


def test_dt_floor_applies():
    cfg = ModelConfig(d_model=64, dt_min=1e-6, dt_max=1e-3, dt_init_floor=1e-4)
    dt = F.softplus(Mamba(64, cfg).dt_proj.bias.detach().double())
    assert dt.min() >= 1e-4 * (1 - 1e-5)
    assert (dt == dt.min()).sum() > 1  # the floor binds for the many draws below it


def test_a_d_and_dt_weight_init():
    cfg = ModelConfig(d_model=40, d_state=12, dt_rank=7)
    layer = Mamba(40, cfg)
    A = -torch.exp(layer.A_log.detach())
    expected = -torch.arange(1, 13, dtype=torch.float32).repeat(80, 1)
    torch.testing.assert_close(A, expected)
    assert layer.A_log.dtype == torch.float32
    torch.testing.assert_close(layer.D.detach(), torch.ones(80))
    w = layer.dt_proj.weight.detach()
    assert w.shape == (80, 7) and w.abs().max() <= 7**-0.5
    assert w.abs().max() > 0.8 * 7**-0.5  # uniform on the whole interval, not a narrow normal
    assert layer.x_proj.weight.shape == (7 + 24, 80)
    assert layer.in_proj.bias is None and layer.x_proj.bias is None and layer.out_proj.bias is None
    assert layer.conv1d.bias is not None and layer.dt_proj.bias is not None


def test_flops_per_token_covers_counted_matmuls_plus_scan(monkeypatch):
    # the PyTorch scan, whose C.h contraction is a bmm the counter sees (the fused C scan is invisible to it)
    monkeypatch.setenv("MAMBA_KAN_KERNELS", "0")
    cfg = ModelConfig(d_model=64)
    layer = Mamba(64, cfg)
    bsz, L = 2, 32
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        layer(torch.randn(bsz, L, 64))
    counted = counter.get_total_flops() / (bsz * L)  # mm / bmm only: projections + the scan's C.h contraction
    di, n = 128, 16
    linear = 2 * sum(m.weight.numel() for m in (layer.in_proj, layer.x_proj, layer.dt_proj, layer.out_proj))
    assert counted == pytest.approx(linear + 2 * di * n)  # guards that the counter saw what we think it saw
    flops = layer.flops_per_token(L)
    assert flops == layer.flops_per_token(4 * L)  # linear in length: per-token cost is constant
    remainder = flops - linear  # conv, the scan and the elementwise ops
    assert 2 * cfg.d_conv * di + 9 * di * n <= remainder <= 2 * cfg.d_conv * di + 9 * di * n + 30 * di


def test_bfloat16_autocast_stays_close_to_float32():
    """Under CPU autocast the projections run in bf16 but the scan is computed in fp32 (as mamba_simple)."""
    torch.manual_seed(4)
    layer = Mamba(32, ModelConfig(d_model=32))
    x = torch.randn(2, 30, 32)
    with torch.no_grad():
        ref = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.05 * ref.abs().max().item())


@pytest.mark.skipif(load_conv_kernels() is None, reason="no C compiler: the fused conv kernel cannot build")
@pytest.mark.parametrize(
    ("L", "bsz", "d", "K"), [(11, 3, 5, 4), (2, 2, 16, 4), (130, 4, 67, 3), (40, 1, 8, 1)]
)
def test_fused_conv_silu_matches_float64_conv1d_then_silu(L, bsz, d, K):
    """The fused C conv + SiLU (float32) against torch's float64 Conv1d and SiLU: outputs and all gradients;
    channel counts off the 8-lane blocks, kernels longer than the sequence."""
    g = torch.Generator().manual_seed(L)
    x = torch.randn(L, bsz, d, generator=g, requires_grad=True)
    w = torch.randn(d, K, generator=g, requires_grad=True)
    b = torch.randn(d, generator=g, requires_grad=True)
    gy = torch.randn(L, bsz, d, generator=g)
    y = causal_conv_silu(x, w, b)
    grads = torch.autograd.grad((y * gy).sum(), [x, w, b])
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    pre = F.conv1d(x64.permute(1, 2, 0), w64[:, None, :], b64, padding=K - 1, groups=d)[..., :L].permute(
        2, 0, 1
    )
    y_ref = F.silu(pre)
    grads_ref = torch.autograd.grad((y_ref * gy.double()).sum(), [x64, w64, b64])
    torch.testing.assert_close(y.double(), y_ref, atol=2e-6, rtol=2e-6)
    for got, ref in zip(grads, grads_ref):
        torch.testing.assert_close(got.double(), ref, atol=2e-5 * max(1.0, ref.abs().max().item()), rtol=1e-5)


@pytest.mark.skipif(load_conv_kernels() is None, reason="no C compiler: the fused conv kernel cannot build")
def test_fused_conv_silu_does_not_depend_on_the_thread_count_and_falls_back_off_float32(monkeypatch):
    g = torch.Generator().manual_seed(0)
    x, w, b = (
        torch.randn(300, 8, 64, generator=g),
        torch.randn(64, 4, generator=g),
        torch.randn(64, generator=g),
    )
    gy = torch.randn(300, 8, 64, generator=g)
    old, out = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
            y = causal_conv_silu(xs, ws, bs)
            out.append((y.detach(), *torch.autograd.grad((y * gy).sum(), [xs, ws, bs])))
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(a, c) for a, c in zip(*out))
    # float64, the switch off, and fused=False all run the PyTorch ops
    ref = F.silu(causal_depthwise_conv(x.double(), w.double(), b.double()))
    torch.testing.assert_close(causal_conv_silu(x.double(), w.double(), b.double()), ref)
    torch.testing.assert_close(causal_conv_silu(x, w, b, fused=False).double(), ref, atol=2e-6, rtol=2e-6)
    monkeypatch.setenv("MAMBA_KAN_KERNELS", "0")
    assert load_conv_kernels() is None
