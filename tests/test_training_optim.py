"""Optimizer and schedule: AdamW parameter groups and warmup + cosine, checked against torch's own schedulers and
an independent naming rule for what must not be decayed."""

from __future__ import annotations

import pytest
import torch

from mamba_kan.models import ModelConfig, build_model
from mamba_kan.tasks import make_task
from mamba_kan.training import TrainConfig
from mamba_kan.training.optim import WarmupCosine, build_optimizer, build_scheduler


@pytest.mark.parametrize(("warmup", "total", "min_ratio"), [(10, 100, 0.1), (1, 37, 0.0), (25, 60, 0.5)])
def test_schedule_matches_torch_linear_then_cosine(warmup, total, min_ratio):
    """Reference: SequentialLR(LinearLR from 1/W to 1 over W-1 steps, CosineAnnealingLR to min_ratio over T-W)."""
    base = 0.3
    p = torch.nn.Parameter(torch.zeros(1))
    ref_opt = torch.optim.SGD([p], lr=base)
    warm = torch.optim.lr_scheduler.LinearLR(ref_opt, 1.0 / warmup, 1.0, total_iters=max(warmup - 1, 0))
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=total - warmup, eta_min=base * min_ratio)
    ref = torch.optim.lr_scheduler.SequentialLR(ref_opt, [warm, cos], milestones=[warmup])
    f = WarmupCosine(warmup, total, min_ratio)
    for step in range(total):
        assert f(step) * base == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12), step
        ref_opt.step()
        ref.step()
    assert f(0) > 0  # the first update is not wasted
    assert f(warmup - 1) == pytest.approx(1.0)
    assert f(total) == pytest.approx(min_ratio)


def test_scheduler_drives_the_optimizer_lr():
    cfg = TrainConfig(max_steps=20, lr=0.01, warmup_steps=4, min_lr_ratio=0.1).resolved()
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    sched = build_scheduler(opt, cfg)
    seen = []
    for _ in range(cfg.max_steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    assert seen[-1] == pytest.approx(
        0.001 + 0.009 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 15 / 16)).item())
    )


def _no_decay_by_name(name: str) -> bool:
    """The rule from the spec, written from parameter names: norms, biases, embeddings, Mamba A_log and D."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf in ("bias", "A_log", "D") or ".norm" in f".{name}" or name.startswith("embed.")


@pytest.mark.parametrize("variant", ["mlp_mamba", "mlp_transformer"])
def test_adamw_groups_exclude_norms_biases_embeddings_alog_d(variant):
    task = make_task("language", seed=0, context=16)
    model = build_model(variant, ModelConfig(d_model=32, n_layers=1), task.input_spec, task.output_spec, 16)
    cfg = TrainConfig(weight_decay=0.1, beta1=0.8, beta2=0.9, adam_eps=1e-7).resolved()
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert len(decay_of) == len({id(p) for p in names.values()})  # every parameter exactly once
    for name, p in names.items():
        expected = 0.0 if _no_decay_by_name(name) else 0.1
        assert decay_of[id(p)] == expected, name
    if variant == "mlp_mamba":
        assert any(n.endswith("A_log") for n in names) and any(n.endswith(".D") for n in names)
    for g in opt.param_groups:
        assert g["betas"] == (0.8, 0.9) and g["eps"] == 1e-7 and g["lr"] == cfg.lr


def _adamw_float64_loop(params, grads_per_step, lrs, betas, eps, weight_decay, decayed):
    """AdamW written from Loshchilov & Hutter (2019), Algorithm 2, in float64, with torch's conventions: the
    decoupled decay p <- p (1 - lr wd), bias-corrected moments, p <- p - lr m_hat / (sqrt(v_hat) + eps)."""
    b1, b2 = betas
    p = [x.detach().double().clone() for x in params]
    m = [torch.zeros_like(x) for x in p]
    v = [torch.zeros_like(x) for x in p]
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
        for i, g in enumerate(grads):
            g = g.double()
            if decayed[i]:
                p[i] = p[i] * (1 - lr * weight_decay)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat = m[i] / (1 - b1**t)
            v_hat = v[i] / (1 - b2**t)
            p[i] = p[i] - lr * m_hat / (v_hat.sqrt() + eps)
    return p


def test_cpu_optimizer_is_fused_adamw_and_matches_a_float64_loop_of_the_equations():
    torch.manual_seed(0)
    task = make_task("symbolic/exp_sin", seed=0, n_train=64, n_val=16, n_test=16)
    model = build_model("kan_transformer", ModelConfig(d_model=16, n_layers=1, n_heads=2), task.input_spec,
                        task.output_spec, 1)  # fmt: skip
    cfg = TrainConfig(lr=3e-3, weight_decay=0.1, warmup_steps=2, max_steps=6).resolved()
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    sched = build_scheduler(opt, cfg)
    assert all(g.get("fused") for g in opt.param_groups)  # the fused CPU kernel, not the foreach path
    order = [p for g in opt.param_groups for p in g["params"]]
    decayed = [g["weight_decay"] > 0 for g in opt.param_groups for _ in g["params"]]
    start = [p.detach().clone() for p in order]
    gen = torch.Generator().manual_seed(1)
    grads, lrs = [], []
    for _ in range(cfg.max_steps):
        step_grads = [torch.randn(p.shape, generator=gen) for p in order]
        for p, g in zip(order, step_grads):
            p.grad = g.clone()
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        grads.append(step_grads)
    expected = _adamw_float64_loop(start, grads, lrs, (cfg.beta1, cfg.beta2), cfg.adam_eps, cfg.weight_decay,
                                   decayed)  # fmt: skip
    for p, e in zip(order, expected):
        torch.testing.assert_close(p.detach().double(), e, atol=1e-6, rtol=1e-6)
    moved = max((p.detach() - s).abs().max().item() for p, s in zip(order, start))
    assert moved > 1e-3  # the steps really moved the parameters (lr 3e-3, six steps)
