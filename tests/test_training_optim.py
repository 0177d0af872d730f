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
