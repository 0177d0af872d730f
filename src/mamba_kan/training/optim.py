"""AdamW with decay / no-decay parameter groups and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from mamba_kan.training.config import TrainConfig


class WarmupCosine:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based).

    Linear warmup ``(step + 1) / warmup`` for ``step < warmup`` (so the first update is not wasted at lr 0), then
    a half cosine from 1 down to ``min_ratio`` over the remaining ``total - warmup`` steps (Loshchilov & Hutter
    2017, SGDR without restarts; the nanoGPT schedule). A plain object with a primitive ``__dict__``, so
    ``LambdaLR.state_dict()`` stores its settings and the checkpoint loads with ``weights_only=True``.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup = int(warmup)
        self.total = int(total)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``model.optimizer_groups(weight_decay)``: decay by parameter role, one rule for every variant
    (``mamba_kan.models.model.DECAYED_ROLES``: linear and conv weights decayed; norms, biases, embeddings, Mamba's
    A_log / D / dt bias and the spline family - coefficients, spline and base scales, in both spline arms - not)."""
    groups = model.optimizer_groups(cfg.weight_decay)
    n_grouped = sum(p.numel() for g in groups for p in g["params"])
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n_grouped != n_trainable:  # a parameter missing from the groups would silently never train
        raise RuntimeError(f"optimizer_groups cover {n_grouped} of {n_trainable} trainable parameters")
    # fused AdamW: one kernel per step on CUDA, and on CPU one vectorised pass per tensor (torch >= 2.4) instead of
    # torch's default Python loop or the foreach path's ~10 elementwise ops per step (each a pass over every
    # parameter). It rounds differently from the foreach path (tested against a float64 loop of the equations in
    # tests/test_training_optim.py); dtypes it does not take fall back to foreach.
    fused_ok = device.type in ("cuda", "cpu") and all(
        p.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16) for p in model.parameters()
    )
    extra = {"fused": True} if fused_ok else {"foreach": True}
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
        **extra,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR with :class:`WarmupCosine`; ``cfg`` must be resolved (integer ``warmup_steps``)."""
    assert cfg.warmup_steps is not None, "resolve the config first"
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    )
