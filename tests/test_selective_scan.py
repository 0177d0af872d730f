"""The selective scan against a float64 loop of the paper's equations (Gu & Dao 2023, eq. 2a-2b, 4).

The reference below is written independently of mamba_kan: one time step at a time, one (batch, channel) at a
time, exactly as the recurrence reads. Its gradients come from autograd over that loop, so the hand-written
backward of the chunked kernel is checked against a different derivation.
"""

from __future__ import annotations

import functools
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from mamba_kan.errors import UserError
from mamba_kan.ops.scan_kernel import load_scan_kernels
from mamba_kan.ops.selective_scan import auto_chunk, fused_kernels, selective_scan, selective_scan_ref

ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def loop_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t; y_t = C_t . h_t + D u_t; y *= silu(z). Float64, per element."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    bsz, d, L = u.shape
    n = A.shape[1]
    rows = []
    for b in range(bsz):
        chans = []
        for c in range(d):
            h = torch.zeros(n, dtype=torch.float64)
            ys = []
            for t in range(L):
                dt = delta[b, c, t]
                if delta_bias is not None:
                    dt = dt + delta_bias[c].double()
                if delta_softplus:
                    dt = torch.log1p(torch.exp(dt))
                h = torch.exp(dt * A[c]) * h + dt * B[b, :, t] * u[b, c, t]
                y = torch.dot(h, C[b, :, t])
                if D is not None:
                    y = y + D[c].double() * u[b, c, t]
                if z is not None:
                    zz = z[b, c, t].double()
                    y = y * zz / (1 + torch.exp(-zz))
                ys.append(y)
            chans.append(torch.stack(ys) if ys else torch.zeros(0, dtype=torch.float64))
        rows.append(torch.stack(chans))
    return torch.stack(rows)


@pytest.fixture(params=["fused", "pytorch"])
def backend(request, monkeypatch):
    """Run a test on the fused C scan (skipped where no C compiler builds it) and on the PyTorch fallback."""
    monkeypatch.setenv("MAMBA_KAN_KERNELS", "1" if request.param == "fused" else "0")
    if request.param == "fused" and load_scan_kernels(4) is None:
        pytest.skip("no C compiler: the fused scan cannot be built here")
    return request.param


def make_inputs(bsz, d, n, L, dtype=torch.float64, seed=0, delta_scale=0.5, a_max=2.0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return {
        "u": r(bsz, d, L),
        "delta": r(bsz, d, L) * delta_scale,
        "A": -torch.rand(d, n, generator=g, dtype=torch.float64) * a_max - 0.05,
        "B": r(bsz, n, L),
        "C": r(bsz, n, L),
        "D": r(d),
        "z": r(bsz, d, L),
        "delta_bias": r(d) * 0.3,
    }


def leaf(inputs, dtype, keep):
    return {k: v.to(dtype).requires_grad_() if k in keep else None for k, v in inputs.items()}


OPTION_SETS = {
    "bare": dict(use=("u", "delta", "A", "B", "C"), softplus=False),
    "all": dict(use=ARGS, softplus=True),
    "D_only": dict(use=("u", "delta", "A", "B", "C", "D"), softplus=False),
    "z_bias": dict(use=("u", "delta", "A", "B", "C", "z", "delta_bias"), softplus=False),
    "softplus_D": dict(use=("u", "delta", "A", "B", "C", "D"), softplus=True),
}


def outputs_and_grads(fn, x, softplus, weight):
    y = fn(**x, delta_softplus=softplus)
    used = [v for v in x.values() if v is not None]
    grads = torch.autograd.grad((y * weight.to(y.dtype)).sum(), used)
    return y, dict(zip([k for k, v in x.items() if v is not None], grads))


@pytest.mark.parametrize("L", [1, 7, 33, 100])
@pytest.mark.parametrize("options", list(OPTION_SETS))
def test_float64_matches_loop_outputs_and_every_gradient(L, options, backend):
    opt = OPTION_SETS[options]
    raw = make_inputs(2, 3, 4, L, seed=L)
    weight = torch.randn(2, 3, L, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref_y, ref_g = outputs_and_grads(loop_scan, leaf(raw, torch.float64, opt["use"]), opt["softplus"], weight)
    # chunk 8: L = 33 and 100 span several chunks with a ragged last one; L = 1 and 7 fit in one
    for chunk in (8, None):
        fast = functools.partial(selective_scan, chunk=chunk)
        y, g = outputs_and_grads(fast, leaf(raw, torch.float64, opt["use"]), opt["softplus"], weight)
        assert y.dtype == torch.float64 and y.shape == (2, 3, L)
        torch.testing.assert_close(y, ref_y, rtol=1e-10, atol=1e-12)
        assert set(g) == set(opt["use"])
        for name in opt["use"]:
            torch.testing.assert_close(g[name], ref_g[name], rtol=1e-9, atol=1e-11, msg=f"grad of {name}")


@pytest.mark.parametrize("L", [7, 100])
def test_float32_agrees_with_float64_loop(L, backend):
    raw = make_inputs(2, 5, 16, L, seed=3)
    weight = torch.randn(2, 5, L, dtype=torch.float64)
    ref_y, ref_g = outputs_and_grads(loop_scan, leaf(raw, torch.float64, ARGS), True, weight)
    y, g = outputs_and_grads(selective_scan, leaf(raw, torch.float32, ARGS), True, weight)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref_y, rtol=1e-4, atol=1e-5)
    for name in ARGS:
        scale = ref_g[name].abs().max().item()
        torch.testing.assert_close(g[name].double(), ref_g[name], rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_reference_implementation_matches_loop():
    raw = make_inputs(2, 3, 4, 9, seed=5)
    weight = torch.randn(2, 3, 9, dtype=torch.float64)
    ref_y, ref_g = outputs_and_grads(loop_scan, leaf(raw, torch.float64, ARGS), True, weight)
    y, g = outputs_and_grads(selective_scan_ref, leaf(raw, torch.float64, ARGS), True, weight)
    torch.testing.assert_close(y, ref_y, rtol=1e-12, atol=1e-12)
    for name in ARGS:
        torch.testing.assert_close(g[name], ref_g[name], rtol=1e-10, atol=1e-12)


def test_gradcheck_tiny_double():
    raw = make_inputs(2, 3, 2, 6, seed=7)
    tensors = tuple(raw[k].clone().requires_grad_() for k in ARGS)

    def fn(*xs):
        return selective_scan(*xs, delta_softplus=True, chunk=4)

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-7)


def test_chunk_length_does_not_change_result(backend):
    raw = make_inputs(2, 3, 4, 45, seed=11)
    weight = torch.randn(2, 3, 45, dtype=torch.float64)
    results = []
    for chunk in (1, 3, 16, 64):
        fast = functools.partial(selective_scan, chunk=chunk)
        results.append(outputs_and_grads(fast, leaf(raw, torch.float64, ARGS), True, weight))
    y0, g0 = results[0]
    for y, g in results[1:]:
        torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-13)
        for name in ARGS:
            torch.testing.assert_close(g[name], g0[name], rtol=1e-11, atol=1e-13)


def test_large_steps_over_long_sequence_stay_finite_and_correct(backend):
    """sum(delta * |A|) over a chunk far beyond 88: an exp(-cumsum) chunk scan would overflow in float32 here."""
    L, n = 300, 16
    raw = make_inputs(1, 2, n, L, seed=13, delta_scale=1.0)
    raw["delta"] = raw["delta"].abs() + 2.0  # softplus(>=2) ~ 2.1..5
    raw["A"] = -torch.arange(1, n + 1, dtype=torch.float64).repeat(2, 1)
    weight = torch.randn(1, 2, L, dtype=torch.float64)
    ref_y, ref_g = outputs_and_grads(loop_scan, leaf(raw, torch.float64, ARGS), True, weight)
    y, g = outputs_and_grads(
        lambda **kw: selective_scan(**kw, chunk=64), leaf(raw, torch.float32, ARGS), True, weight
    )
    assert torch.isfinite(y).all() and all(torch.isfinite(v).all() for v in g.values())
    torch.testing.assert_close(y.double(), ref_y, rtol=1e-4, atol=1e-5)
    for name in ARGS:
        scale = ref_g[name].abs().max().item()
        torch.testing.assert_close(g[name].double(), ref_g[name], rtol=1e-3, atol=1e-5 * scale, msg=name)


def test_time_major_layout_matches_batch_major(backend):
    raw = make_inputs(2, 3, 4, 21, seed=17)
    y_bm = selective_scan(**raw, delta_softplus=True, chunk=5)
    tm = {k: (v.permute(2, 0, 1) if v.dim() == 3 else v) for k, v in raw.items()}
    y_tm = selective_scan(**tm, delta_softplus=True, chunk=5, time_major=True)
    assert y_tm.shape == (21, 2, 3)
    torch.testing.assert_close(y_tm.permute(1, 2, 0), y_bm, rtol=1e-13, atol=1e-14)


def test_low_precision_inputs_compute_in_float32_and_return_input_dtype():
    raw = make_inputs(2, 4, 8, 50, seed=19)
    ref = loop_scan(**raw, delta_softplus=True)
    x = {k: v.to(torch.bfloat16) for k, v in raw.items()}
    y = selective_scan(**x, delta_softplus=True)
    assert y.dtype == torch.bfloat16
    # inputs are rounded to bf16 (rel. 4e-3); an all-bf16 recurrence would drift far more over 50 steps
    exact_on_rounded = loop_scan(**{k: v.double() for k, v in x.items()}, delta_softplus=True)
    torch.testing.assert_close(y.double(), exact_on_rounded, rtol=1e-2, atol=1e-2)
    assert (y.double() - ref).abs().max() < 0.1 * ref.abs().max()


def find_node(grad_fn, name):
    stack = [grad_fn]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        if type(node).__name__ == name:
            return node
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    raise AssertionError(f"{name} not in the autograd graph")


def test_backward_keeps_only_chunk_boundary_states(backend):
    """Saved for backward: inputs plus L / chunk states, not the (batch, L, d, N) states of every step."""
    bsz, d, n, L, chunk = 2, 32, 16, 256, 32
    raw = make_inputs(bsz, d, n, L, dtype=torch.float32, seed=23)
    x = {k: v.float().requires_grad_() for k, v in raw.items()}
    y = selective_scan(**x, delta_softplus=True, chunk=chunk)
    node = find_node(y.grad_fn, "_FusedScanBackward" if backend == "fused" else "_ChunkedScanBackward")
    saved = sum(t.numel() for t in node.saved_tensors)
    inputs = sum(v.numel() for v in x.values())
    extra = saved - inputs
    assert extra <= (L // chunk) * bsz * d * n  # one (batch, d, N) state per chunk


def test_auto_chunk_targets_cache_sized_buffers():
    assert auto_chunk(4, 256, 16) == 32  # the measured optimum at the benchmark size
    assert auto_chunk(16, 512, 16) == 4
    assert auto_chunk(64, 1024, 16) == 4  # clamped below
    assert auto_chunk(1, 16, 4) == 64  # clamped above


@pytest.mark.parametrize(
    "change",
    [
        {"A": torch.zeros(5, 4)},
        {"B": torch.zeros(2, 4, 9)},
        {"delta": torch.zeros(2, 3, 7)},
        {"D": torch.zeros(4)},
        {"u": torch.zeros(2, 3)},
    ],
)
def test_bad_shapes_raise_user_error(change):
    x = {k: v.float() for k, v in make_inputs(2, 3, 4, 8).items()}
    x.update(change)
    with pytest.raises(UserError, match="selective_scan"):
        selective_scan(**x)


def test_bad_chunk_raises_user_error():
    x = {k: v.float() for k, v in make_inputs(1, 2, 2, 4).items()}
    with pytest.raises(UserError, match="chunk"):
        selective_scan(**x, chunk=0)


def test_cpu_never_dispatches_to_mamba_ssm(monkeypatch):
    """Even when mamba_ssm is importable, CPU tensors go to the project's kernel (mamba-ssm needs CUDA)."""

    def fail(*args, **kwargs):
        raise AssertionError("mamba_ssm kernel called for CPU tensors")

    fake = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    fake.selective_scan_fn = fail
    for name in ("mamba_ssm", "mamba_ssm.ops"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops.selective_scan_interface", fake)
    raw = make_inputs(1, 2, 3, 5, seed=29)
    torch.testing.assert_close(selective_scan(**raw), loop_scan(**raw), rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_loop():
    raw = make_inputs(2, 4, 8, 40, seed=31)
    ref = loop_scan(**raw, delta_softplus=True)
    y = selective_scan(**{k: v.float().cuda() for k, v in raw.items()}, delta_softplus=True)
    torch.testing.assert_close(y.double().cpu(), ref, rtol=1e-4, atol=1e-4)


def test_softplus_matches_torch():
    """The loop's log1p(exp(x)) is torch's softplus for the moderate values used here (guards the reference)."""
    x = torch.linspace(-5, 5, 11, dtype=torch.float64)
    torch.testing.assert_close(torch.log1p(torch.exp(x)), F.softplus(x))


# --- the fused C scan ------------------------------------------------------------------------------------------
@pytest.fixture
def fused(monkeypatch):
    monkeypatch.setenv("MAMBA_KAN_KERNELS", "1")
    if load_scan_kernels(16) is None:
        pytest.skip("no C compiler: the fused scan cannot be built here")


@pytest.fixture(params=["avx2-blocks", "avx512-blocks"])
def scan_blocks(request, monkeypatch):
    """The fused scan built with 8-channel (AVX2) and with 16-channel (AVX-512) items, whatever this CPU has (the
    kernels pick one per machine, so each machine would otherwise test only its own)."""
    import mamba_kan.ops.scan_kernel as sk

    wide = request.param == "avx512-blocks"
    monkeypatch.setattr(sk, "wide_vectors", lambda: wide)
    monkeypatch.setattr(sk, "vector_flags", lambda: ("-mprefer-vector-width=512",) if wide else ())
    sk._block.cache_clear()
    sk.scan_source.cache_clear()
    assert f"#define DB {8 * (1 + wide)}" in sk.scan_source(16)
    yield sk._block("f32")
    sk._block.cache_clear()  # before monkeypatch restores this machine's choice
    sk.scan_source.cache_clear()


@pytest.mark.parametrize("n", [16, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", list(OPTION_SETS))
def test_fused_long_sequence_many_chunks_every_gradient(fused, scan_blocks, dtype, options, n):
    """L = 300 over chunks of 32 (ragged last chunk), 21 channels (full channel blocks then a partial one, for
    8- and 16-lane blocks), N = 16 and 8 (float32 full blocks on explicit vectors with one or two reduction trees
    per step, or, N = 8 on 16 lanes, on the scalar items): the fused kernel's outputs and all eight gradients
    against the float64 reference."""
    opt = OPTION_SETS[options]
    bsz, d, L = 2, 21, 300
    raw = make_inputs(bsz, d, n, L, seed=41)
    if not opt["softplus"]:  # keep delta > 0 (a growing state would overflow float32 over 300 steps)
        raw["delta"] = raw["delta"].abs() * 0.2
        raw["delta_bias"] = raw["delta_bias"].abs()
    weight = torch.randn(bsz, d, L, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref_y, ref_g = outputs_and_grads(
        selective_scan_ref, leaf(raw, torch.float64, opt["use"]), opt["softplus"], weight
    )
    y, g = outputs_and_grads(selective_scan, leaf(raw, dtype, opt["use"]), opt["softplus"], weight)
    rtol = 1e-10 if dtype == torch.float64 else 2e-4
    torch.testing.assert_close(y.double(), ref_y, rtol=rtol, atol=rtol * ref_y.abs().max().item())
    for name in opt["use"]:
        scale = ref_g[name].abs().max().item()
        torch.testing.assert_close(g[name].double(), ref_g[name], rtol=rtol, atol=rtol * scale, msg=name)


def test_fused_float32_chunk_length_changes_no_bit(fused, scan_blocks):
    """float32, N = 16, full and partial channel blocks: the chunk length only decides where the state is
    checkpointed and recomputed (and, in the backward, where the adjoint carry waits between chunks), so outputs
    and all gradients are the same numbers for chunks of 1, 3, 16, 32 and 64 steps over L = 70."""
    raw = make_inputs(2, scan_blocks + 3, 16, 70, seed=67)
    weight = torch.randn(
        2, scan_blocks + 3, 70, dtype=torch.float64, generator=torch.Generator().manual_seed(68)
    )
    results = [
        outputs_and_grads(
            functools.partial(selective_scan, chunk=chunk), leaf(raw, torch.float32, ARGS), True, weight
        )
        for chunk in (32, 1, 3, 16, 64)
    ]
    y0, g0 = results[0]
    for y, g in results[1:]:
        assert torch.equal(y, y0)
        for name in ARGS:
            assert torch.equal(g[name], g0[name]), name


@pytest.mark.parametrize("options", ["all", "bare", "z_bias"])
def test_fused_vector_items_equal_scalar_items_bitwise(fused, scan_blocks, options):
    """float32, N = 16: a full block of VL channels runs the explicit-vector items, the same first VL - 1 channels
    alone (one partial block) the scalar items. Everything that belongs to a channel (y, du, d delta, dz, its
    column of dA, dD, d bias) must be the same float32 number: the two are written to do the same operations.
    dB and dC sum over channels (in another order, and over one more channel) and are left out."""
    lanes = scan_blocks
    opt = OPTION_SETS[options]
    raw = make_inputs(2, lanes, 16, 77, seed=61)
    weight = torch.randn(2, lanes, 77, dtype=torch.float64, generator=torch.Generator().manual_seed(62))
    keep = lanes - 1
    per_channel = {"u": 1, "delta": 1, "z": 1, "A": 0, "D": 0, "delta_bias": 0}  # the channel dimension
    cut = {k: v.narrow(per_channel[k], 0, keep) if k in per_channel else v for k, v in raw.items()}
    y_full, g_full = outputs_and_grads(
        selective_scan, leaf(raw, torch.float32, opt["use"]), opt["softplus"], weight
    )
    y_cut, g_cut = outputs_and_grads(
        selective_scan, leaf(cut, torch.float32, opt["use"]), opt["softplus"], weight[:, :keep]
    )
    assert torch.equal(y_full[:, :keep], y_cut)
    for name in set(opt["use"]) & set(per_channel):
        assert torch.equal(g_full[name].narrow(per_channel[name], 0, keep), g_cut[name]), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_extreme_delta_times_a_underflows_cleanly(fused, dtype):
    """delta * A from -1e4 (exp underflows to 0: the state forgets everything) to -1e-9 (dA ~ 1), softplus of
    very negative inputs (delta ~ 1e-13, log1p accuracy) and of large ones (delta = x above 20)."""
    bsz, d, n, L = 1, 9, 16, 120
    raw = make_inputs(bsz, d, n, L, seed=43)
    g = torch.Generator().manual_seed(44)
    pre = torch.empty(bsz, d, L, dtype=torch.float64)
    pre[:, :3] = torch.rand(bsz, 3, L, generator=g, dtype=torch.float64) * 10 + 25  # softplus(x) = x, large
    pre[:, 3:6] = -torch.rand(bsz, 3, L, generator=g, dtype=torch.float64) * 5 - 28  # softplus ~ 1e-13
    pre[:, 6:] = torch.randn(bsz, 3, L, generator=g, dtype=torch.float64)
    raw["delta"], raw["delta_bias"] = pre, torch.zeros(d, dtype=torch.float64)
    raw["A"] = -torch.logspace(-4, 3, n, dtype=torch.float64).repeat(d, 1)  # -1e-4 .. -1e3
    weight = torch.randn(bsz, d, L, dtype=torch.float64, generator=g)
    ref_y, ref_g = outputs_and_grads(selective_scan_ref, leaf(raw, torch.float64, ARGS), True, weight)
    y, grads = outputs_and_grads(selective_scan, leaf(raw, dtype, ARGS), True, weight)
    assert torch.isfinite(y).all() and all(torch.isfinite(v).all() for v in grads.values())
    rtol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(y.double(), ref_y, rtol=rtol, atol=rtol * ref_y.abs().max().item())
    for name in ARGS:
        scale = ref_g[name].abs().max().item()
        torch.testing.assert_close(grads[name].double(), ref_g[name], rtol=rtol, atol=rtol * scale, msg=name)


def test_fused_module_layout_noncontiguous_time_major_views(fused):
    """As modules/mamba.py calls it: time-major, B and C (L, batch, N) are views split from one projection."""
    L, bsz, d, n = 70, 3, 20, 16
    g = torch.Generator().manual_seed(47)
    x_dbl = torch.randn(L, bsz, 4 + 2 * n, generator=g)
    _, B, C = torch.split(x_dbl, [4, n, n], dim=-1)  # non-contiguous (L, batch, N)
    u, dt, z = (torch.randn(L, bsz, d, generator=g) for _ in range(3))
    A = -torch.rand(d, n, generator=g) * 3 - 0.1
    D, bias = torch.randn(d, generator=g), torch.randn(d, generator=g)
    tensors = [u, dt, A, B, C, D, z, bias]
    leaves = [t.clone().requires_grad_() for t in tensors]
    y = selective_scan(*leaves, delta_softplus=True, time_major=True)
    assert y.shape == (L, bsz, d)
    ref_leaves = [t.double().requires_grad_() for t in tensors]
    bm = [ref_leaves[i].permute(1, 2, 0) for i in (0, 1)] + [ref_leaves[2]]
    bm += [ref_leaves[i].permute(1, 2, 0) for i in (3, 4)] + [ref_leaves[5], ref_leaves[6].permute(1, 2, 0)]
    ref = selective_scan_ref(*bm, ref_leaves[7], delta_softplus=True).permute(2, 0, 1)
    w = torch.randn(L, bsz, d, generator=g)
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-4)
    got = torch.autograd.grad((y * w).sum(), leaves)
    want = torch.autograd.grad((ref * w.double()).sum(), ref_leaves)
    for name, a, b in zip(ARGS, got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4 * b.abs().max().item(), msg=name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_threads_agree_with_one_thread(fused, monkeypatch, dtype):
    """Items split over 2 threads (per-thread partial sums of dA, dB, dC, dD, d bias; in float32 each thread's
    items on explicit vectors, their state kept between chunks per thread) = the 1-thread result."""
    import mamba_kan.ops.scan_kernel as sk

    parts_used = []
    real_run = sk.run_kernel
    monkeypatch.setattr(
        sk, "run_kernel", lambda *a, **k: parts_used.append(real_run(*a, **k)) or parts_used[-1]
    )
    raw = make_inputs(3, 48, 16, 100, seed=53)
    weight = torch.randn(3, 48, 100, dtype=torch.float64)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(outputs_and_grads(selective_scan, leaf(raw, dtype, ARGS), True, weight))
    finally:
        torch.set_num_threads(before)
    assert parts_used == [1, 1, 2, 2]  # forward and backward, on 1 and then on 2 threads
    (y1, g1), (y2, g2) = results
    torch.testing.assert_close(y2, y1, rtol=0, atol=0)
    tol = 1e-13 if dtype == torch.float64 else 1e-5  # the partial sums are added in another order
    for name in ARGS:
        if name in ("A", "B", "C", "D", "delta_bias"):  # summed over items: per-thread partials
            torch.testing.assert_close(
                g2[name], g1[name], rtol=tol, atol=tol * g1[name].abs().max(), msg=name
            )
        else:  # per element: the same numbers
            torch.testing.assert_close(g2[name], g1[name], rtol=0, atol=0, msg=name)


def test_kernels_disabled_runs_the_pytorch_path(monkeypatch):
    """MAMBA_KAN_KERNELS=0: no fused kernel is offered and the chunked PyTorch scan still gives the reference."""
    monkeypatch.setenv("MAMBA_KAN_KERNELS", "0")
    raw = make_inputs(2, 3, 4, 20, seed=59)
    assert fused_kernels(raw["u"], 4) is None
    x = {k: v.float().requires_grad_() for k, v in raw.items()}
    y = selective_scan(**x, delta_softplus=True)
    find_node(y.grad_fn, "_ChunkedScanBackward")
    torch.testing.assert_close(y.double(), loop_scan(**raw, delta_softplus=True), rtol=1e-4, atol=1e-5)


def test_fused_kernel_is_used_on_cpu_when_available(fused):
    x = {k: v.float().requires_grad_() for k, v in make_inputs(1, 2, 16, 5).items()}
    find_node(selective_scan(**x).grad_fn, "_FusedScanBackward")
    assert fused_kernels(torch.zeros(1, dtype=torch.bfloat16), 16) is None  # bf16 is cast to float32 first
