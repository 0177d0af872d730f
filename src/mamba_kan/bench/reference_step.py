"""The reference training step of the model suite: a frozen copy of the step as training ran it when the
performance issue (issue 14: "at least 1.5x more training steps per second at the quick size than today's loop")
was filed, so that speed-up is measured side by side in one run instead of against numbers from another day.

What is frozen (each piece exactly as it was when the issue was filed; everything else - the model's modules, the
spline kernels (sped up under the same issue: not counted here), the batch - is shared with the current step, so
improvements there count in neither):

* attention: RoPE tables recomputed on every call and ``scaled_dot_product_attention`` on the (B, H, L, hd)
  views (now: cached tables and, on CPU float32 with small heads, the fused C kernel);
* Mamba's selective scan: the PyTorch chunked scan (``selective_scan(fused=False)``; the fused C scan is item 1
  of the same issue) and its short convolution as K shifted multiply-adds and a SiLU in PyTorch (now: one fused C
  pass each on CPU float32);
* the token loss: ``F.cross_entropy``, with the scored positions cut out by boolean-mask indexing (now: the
  ignore index and, on CPU float32, the fused loss-and-gradient kernel of ``ops.cross_entropy``);
* the optimizer: ``torch.optim.AdamW`` with torch's CPU default, the per-tensor loop (now: the fused CPU AdamW);
* deterministic mode's NaN fill of fresh buffers on (now: off in training; values unchanged).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamba_kan.io_spec import NextTokenOutput
from mamba_kan.modules.attention import CausalSelfAttention
from mamba_kan.modules.mamba import Mamba
from mamba_kan.ops.attention import apply_rope, compute_rope_cos_sin
from mamba_kan.tasks.base import Batch, Task

__all__ = ["reference_loss", "reference_optimizer", "reference_settings", "use_reference_mixers"]


def _reference_attention_forward(self: CausalSelfAttention, x: Tensor) -> Tensor:
    b, length, d = x.shape
    q, k, v = self.qkv(x).split(d, dim=-1)
    q, k, v = (t.view(b, length, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
    cos, sin = compute_rope_cos_sin(length, self.head_dim, x.device, q.dtype)  # per call, as then
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return self.out_proj(y.transpose(1, 2).reshape(b, length, d))


def use_reference_mixers(model: nn.Module) -> int:
    """Make every attention mixer of ``model`` run the frozen forward and every Mamba mixer its PyTorch conv;
    returns how many mixers were switched."""
    n = 0
    for module in model.modules():
        if isinstance(module, CausalSelfAttention):
            module.forward = types.MethodType(_reference_attention_forward, module)  # type: ignore[method-assign]
            n += 1
        elif isinstance(module, Mamba):
            module.fused_conv = module.fused_scan = False
            n += 1
    return n


def reference_loss(task: Task) -> Callable[[Tensor, Batch], Tensor]:
    """The task's loss, except that a masked next-token loss is computed on the boolean-indexed scored positions."""

    def loss(output: Tensor, batch: Batch) -> Tensor:
        if not isinstance(task.output_spec, NextTokenOutput):
            return task.loss(output, batch)
        if batch.mask is None:  # PyTorch's loss as the task had it then (not the fused kernel of today)
            return F.cross_entropy(output.reshape(-1, output.shape[-1]), batch.targets.reshape(-1))
        logits = output.float().reshape(-1, output.shape[-1])
        mask = batch.mask.reshape(-1)
        return F.cross_entropy(logits[mask], batch.targets.reshape(-1)[mask])

    return loss


def reference_optimizer(groups: list[dict], lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
                        device: torch.device) -> torch.optim.AdamW:  # fmt: skip
    extra = {"fused": True} if device.type == "cuda" else {}  # CPU: torch's default, the per-tensor loop
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **extra)


@contextmanager
def reference_settings() -> Iterator[None]:
    """Deterministic mode's NaN fill of uninitialised memory on, for the duration of one reference step."""
    prev = torch.utils.deterministic.fill_uninitialized_memory
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = prev
