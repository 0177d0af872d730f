"""The fused CPU attention kernel (mamba_kan.ops.attention_kernel) against an independent float64 evaluation of
causal softmax attention with RoPE (Vaswani et al. 2017, §3.2.1; Su et al. 2021, eq. 34), and its fallbacks."""

from __future__ import annotations

import math

import pytest
import torch

from mamba_kan.modules.attention import CausalSelfAttention
from mamba_kan.ops.attention import (
    causal_attention,
    fused_attention_applies,
    fused_attention_kernels,
    rope_cos_sin,
)

pytestmark = pytest.mark.skipif(
    fused_attention_kernels(torch.zeros(1), 8) is None, reason="no C compiler: the fused kernel cannot build"
)


def reference_attention(qkv: torch.Tensor, n_heads: int, base: float = 10000.0) -> torch.Tensor:
    """float64, written from the equations: q, k rotated as complex numbers (x[2i] + i x[2i+1]) e^{i t theta_i},
    theta_i = base^(-2i/hd); scores q.k / sqrt(hd) with j > t masked to -inf; softmax; weighted sum of v."""
    x = qkv.double()
    b, length, three_d = x.shape
    d = three_d // 3
    hd = d // n_heads
    q, k, v = (t.reshape(b, length, n_heads, hd).permute(0, 2, 1, 3) for t in x.split(d, dim=-1))
    theta = torch.tensor([base ** (-2.0 * i / hd) for i in range(hd // 2)], dtype=torch.float64)
    rot = torch.polar(
        torch.ones(length, hd // 2, dtype=torch.float64), torch.arange(length).double()[:, None] * theta
    )

    def rotate(t: torch.Tensor) -> torch.Tensor:
        c = torch.view_as_complex(t.reshape(*t.shape[:-1], hd // 2, 2).contiguous()) * rot
        return torch.view_as_real(c).flatten(-2)

    scores = rotate(q) @ rotate(k).transpose(-1, -2) / math.sqrt(hd)
    mask = torch.ones(length, length, dtype=torch.bool).triu(1)
    p = scores.masked_fill(mask, float("-inf")).softmax(-1)
    return (p @ v).permute(0, 2, 1, 3).reshape(b, length, d)


def _check_against_reference(b: int, length: int, heads: int, hd: int, scale: float, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    qkv = (torch.randn(b, length, 3 * heads * hd, generator=g) * scale).requires_grad_()
    ref_in = qkv.detach().double().requires_grad_()
    y = causal_attention(qkv, heads)
    y_ref = reference_attention(ref_in, heads)
    gy = torch.randn(y.shape, generator=g)
    y.backward(gy)
    y_ref.backward(gy.double())
    # tolerance relative to the values' size: float32 rounding of inputs, RoPE tables and a ~1e-7 exp
    assert (y.double() - y_ref).abs().max() <= 2e-5 * max(1.0, y_ref.abs().max().item())
    assert (qkv.grad.double() - ref_in.grad).abs().max() <= 2e-5 * max(1.0, ref_in.grad.abs().max().item())


@pytest.mark.parametrize(
    ("b", "length", "heads", "hd"),
    [(2, 1, 2, 2), (2, 7, 4, 8), (3, 128, 4, 8), (1, 300, 2, 16), (1, 65, 3, 6), (2, 33, 1, 4)],
)
def test_fused_attention_matches_float64_equations(b: int, length: int, heads: int, hd: int) -> None:
    _check_against_reference(b, length, heads, hd, scale=1.0)


def test_fused_attention_peaked_softmax_stays_accurate() -> None:
    """Large logits (scores ~ +-100): the max-subtracted exp and the saved log-sum-exp must not overflow."""
    _check_against_reference(2, 96, 2, 8, scale=6.0, seed=1)


def test_fused_attention_long_sequence() -> None:
    assert fused_attention_kernels(torch.zeros(1, 2048, 3 * 8), 8) is not None  # the kernel runs at this size
    _check_against_reference(1, 2048, 1, 8, scale=1.0, seed=2)


def test_the_kernel_is_used_only_where_it_was_measured_faster_than_sdpa() -> None:
    assert (
        fused_attention_applies(8, 4096)
        and fused_attention_applies(16, 512)
        and fused_attention_applies(4, 1)
    )
    assert not fused_attention_applies(16, 513) and not fused_attention_applies(32, 64)
    assert (
        fused_attention_kernels(torch.zeros(1, 1024, 3 * 16), 16) is None
    )  # SDPA: wide heads, long sequence


def test_fused_attention_is_used_and_differs_from_nothing_but_rounding() -> None:
    """The module's fused path and its SDPA path agree to float32 rounding (same maths, different kernels)."""
    torch.manual_seed(0)
    attn = CausalSelfAttention(32, 4)
    x = torch.randn(4, 50, 32)
    assert fused_attention_kernels(attn.qkv(x), 8) is not None
    y_fused = attn(x)
    attn.fused = False
    y_sdpa = attn(x)
    torch.testing.assert_close(y_fused, y_sdpa, atol=2e-5, rtol=1e-5)


def test_fused_attention_result_does_not_depend_on_the_thread_count() -> None:
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(8, 200, 3 * 4 * 8, generator=g).requires_grad_()
    gy = torch.randn(8, 200, 32, generator=g)
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            qkv.grad = None
            y = causal_attention(qkv, 4)
            y.backward(gy)
            results.append((y.detach().clone(), qkv.grad.clone()))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("case", ["switched_off", "float64", "head_dim_32", "autocast", "forced_pytorch"])
def test_fallback_paths_run_and_match_the_reference(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every input the kernel does not take runs scaled_dot_product_attention with the same maths."""
    heads, hd, dtype = (
        2,
        (32 if case == "head_dim_32" else 8),
        torch.float64 if case == "float64" else torch.float32,
    )
    qkv = torch.randn(2, 40, 3 * heads * hd, dtype=dtype)
    if case == "switched_off":
        monkeypatch.setenv("MAMBA_KAN_KERNELS", "0")
    if case != "forced_pytorch":
        expect_none = case != "autocast"
        if expect_none:
            assert fused_attention_kernels(qkv, hd) is None
    if case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fused_attention_kernels(qkv, hd) is None
            y = causal_attention(qkv, heads)
        torch.testing.assert_close(y.double(), reference_attention(qkv, heads), atol=3e-2, rtol=3e-2)
        return
    y = causal_attention(qkv, heads, fused=case != "forced_pytorch")
    tol = 1e-6 if dtype == torch.float64 else 2e-5  # float64: RoPE angles are computed in float32 (by design)
    torch.testing.assert_close(y.double(), reference_attention(qkv, heads), atol=tol, rtol=tol)


def test_rope_tables_are_cached_and_not_inference_tensors() -> None:
    with torch.inference_mode():
        cos, sin = rope_cos_sin(17, 8, "cpu", torch.float32)
    assert not cos.is_inference() and not sin.is_inference()
    cos2, _ = rope_cos_sin(17, 8, torch.device("cpu"), torch.float32)
    assert cos2 is cos  # one table per (length, head dim, device, dtype): not recomputed per layer and step
    angles = torch.arange(17).double()[:, None] * torch.tensor([10000.0 ** (-2 * i / 8) for i in range(4)])
    torch.testing.assert_close(cos.double(), angles.cos(), atol=1e-6, rtol=0)
