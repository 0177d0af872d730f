"""The fused cross-entropy kernel (ops.cross_entropy) against PyTorch's F.cross_entropy evaluated in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mamba_kan.ops.cross_entropy as CE
from mamba_kan.io_spec import NextTokenOutput
from mamba_kan.tasks.base import IGNORE_INDEX, Batch, default_loss


@pytest.fixture
def kernel_on(monkeypatch):
    monkeypatch.setenv("MAMBA_KAN_KERNELS", "1")
    if CE.load_cross_entropy_kernel() is None:
        pytest.skip("no C compiler: the cross-entropy kernel cannot be built here")


def _case(n: int, vocab: int, seed: int, scale: float = 3.0, ignored_every: int = 5):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=gen, dtype=torch.float64) * scale
    targets = torch.randint(0, vocab, (n,), generator=gen)
    targets[1::ignored_every] = IGNORE_INDEX
    return logits, targets


def _value_and_grad(fn, logits, targets, weight: float = 1.0):
    x = logits.clone().requires_grad_()
    loss = fn(x, targets, ignore_index=IGNORE_INDEX)
    (loss * weight).backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize(
    ("n", "vocab", "scale"), [(1, 2, 1.0), (37, 5, 3.0), (300, 256, 3.0), (64, 1000, 30.0)]
)
def test_matches_float64_pytorch_loss_and_gradient(kernel_on, n, vocab, scale):
    logits, targets = _case(n, vocab, seed=n + vocab, scale=scale, ignored_every=max(2, n // 3))
    want = _value_and_grad(F.cross_entropy, logits, targets)
    got = _value_and_grad(CE.cross_entropy, logits.float(), targets)
    torch.testing.assert_close(got[0].double(), want[0], atol=2e-6 * max(1.0, scale), rtol=2e-6)
    torch.testing.assert_close(got[1].double(), want[1], atol=1e-7, rtol=1e-5)
    assert got[1][targets == IGNORE_INDEX].eq(0).all()


def test_the_incoming_gradient_scales_the_result(kernel_on):
    logits, targets = _case(50, 17, seed=1)
    want = _value_and_grad(F.cross_entropy, logits, targets, weight=-2.5)
    got = _value_and_grad(CE.cross_entropy, logits.float(), targets, weight=-2.5)
    torch.testing.assert_close(got[1].double(), want[1], atol=1e-7, rtol=1e-5)


def test_results_do_not_depend_on_the_thread_count(kernel_on):
    logits, targets = _case(4096, 64, seed=2)
    prev = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out.append(_value_and_grad(CE.cross_entropy, logits.float(), targets))
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_edge_rows_as_pytorch(kernel_on):
    """No scored row: NaN loss, zero gradient. A NaN or +inf logit, or a row of -inf logits: NaN loss, as PyTorch;
    a -inf logit among finite ones is fine (zero probability)."""
    logits = torch.randn(4, 6)
    none_scored = torch.full((4,), IGNORE_INDEX)
    for fn in (F.cross_entropy, CE.cross_entropy):
        loss, grad = _value_and_grad(fn, logits, none_scored)
        assert torch.isnan(loss) and grad.eq(0).all()
    targets = torch.tensor([0, 1, 2, 3])
    for bad in (float("nan"), float("inf")):
        poisoned = logits.clone()
        poisoned[2, 4] = bad
        assert torch.isnan(_value_and_grad(CE.cross_entropy, poisoned, targets)[0])
        assert torch.isnan(_value_and_grad(F.cross_entropy, poisoned, targets)[0])
    all_minus_inf = logits.clone()
    all_minus_inf[1] = float("-inf")
    assert torch.isnan(_value_and_grad(CE.cross_entropy, all_minus_inf, targets)[0])
    one_minus_inf = logits.clone()
    one_minus_inf[1, 5] = float("-inf")
    want = _value_and_grad(F.cross_entropy, one_minus_inf.double(), targets)
    got = _value_and_grad(CE.cross_entropy, one_minus_inf, targets)
    torch.testing.assert_close(got[0].double(), want[0])
    torch.testing.assert_close(got[1].double(), want[1], atol=1e-7, rtol=1e-5)


def test_out_of_range_target_raises_pytorchs_error(kernel_on):
    logits = torch.randn(8, 5, requires_grad=True)
    for bad in (5, -3):
        targets = torch.zeros(8, dtype=torch.int64)
        targets[6] = bad
        with pytest.raises(IndexError) as want:
            F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
        with pytest.raises(IndexError) as got:
            CE.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
        assert str(got.value) == str(want.value)


def test_other_inputs_take_pytorchs_path(kernel_on, monkeypatch):
    """Without a gradient, in float64, or with the kernels switched off the result is F.cross_entropy's own."""
    logits, targets = _case(40, 9, seed=3)
    x32 = logits.float()
    with torch.no_grad():
        assert CE.cross_entropy(x32, targets).grad_fn is None
        assert torch.equal(CE.cross_entropy(x32, targets), F.cross_entropy(x32, targets))
    x64 = logits.clone().requires_grad_()
    assert type(CE.cross_entropy(x64, targets).grad_fn).__name__.startswith("NllLoss")
    monkeypatch.setenv("MAMBA_KAN_KERNELS", "0")
    x = x32.clone().requires_grad_()
    assert type(CE.cross_entropy(x, targets).grad_fn).__name__.startswith("NllLoss")


def test_task_loss_uses_it_with_the_mask_as_ignore_index(kernel_on):
    gen = torch.Generator().manual_seed(4)
    output = torch.randn(3, 10, 7, generator=gen, requires_grad=True)
    targets = torch.randint(0, 7, (3, 10), generator=gen)
    mask = torch.rand(3, 10, generator=gen) > 0.3
    spec = NextTokenOutput(vocab_size=7)
    loss = default_loss(spec, output, Batch(inputs=targets, targets=targets, mask=mask))
    assert type(loss.grad_fn).__name__ == "_FusedCrossEntropyBackward"
    want = F.cross_entropy(
        output.double().reshape(-1, 7)[mask.reshape(-1)], targets.reshape(-1)[mask.reshape(-1)]
    )
    torch.testing.assert_close(loss.double(), want, atol=1e-6, rtol=1e-6)


def test_second_derivative_raises_instead_of_coming_out_zero(kernel_on):
    logits, targets = _case(20, 7, seed=5)
    x = logits.float().requires_grad_()
    weight = torch.ones(
        (), requires_grad=True
    )  # a differentiable incoming gradient, as in a gradient penalty
    (g,) = torch.autograd.grad(CE.cross_entropy(x, targets), x, grad_outputs=weight, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()
