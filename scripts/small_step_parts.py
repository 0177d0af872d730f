"""Side-by-side timings of the pieces of a quick-size training step that the small-step work changed.

Each row times the current path against the path the training loop used before (still in the code as a fallback
or switch), interleaved round by round on the same inputs, 1 thread, at the quick preset's language-task size
(batch 16, L 128, d_model 32, 4 heads, d_inner 64). Prints a Markdown table (docs/benchmarks.md, "Small training
steps"). Run from the repository root:

    python scripts/small_step_parts.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from mamba_kan.bench.reference_step import reference_loss
from mamba_kan.modules.mamba import causal_conv_silu
from mamba_kan.ops.attention import causal_attention
from mamba_kan.ops.selective_scan import selective_scan
from mamba_kan.tasks import make_task
from mamba_kan.training.env import retain_freed_memory

Step = Callable[[], object]


def _median_ms(fns: list[Step], rounds: int) -> list[float]:
    for fn in fns:
        fn()
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        order = range(len(fns)) if r % 2 else reversed(range(len(fns)))
        for i in order:
            t0 = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - t0)
    return [1e3 * statistics.median(t) for t in times]


def _fwd_bwd(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> Step:
    leaves = [t.detach().clone().requires_grad_() for t in inputs]

    def step() -> None:
        for t in leaves:
            t.grad = None
        out = fn(*leaves)
        out.backward(torch.ones_like(out))

    return step


def rows(rounds: int) -> list[tuple[str, str, float, str, float]]:
    g = torch.Generator().manual_seed(0)
    b, length, d, heads, d_inner, n_state = 16, 128, 32, 4, 64, 16
    out = []

    qkv = torch.randn(b, length, 3 * d, generator=g)
    new, old = _median_ms([_fwd_bwd(lambda t: causal_attention(t, heads), qkv),
                           _fwd_bwd(lambda t: causal_attention(t, heads, fused=False), qkv)], rounds)  # fmt: skip
    out.append(("causal attention + RoPE, fwd + bwd", "fused C kernel", new, "SDPA", old))

    x, w, bias = torch.randn(length, b, d_inner, generator=g), torch.randn(d_inner, 4), torch.randn(d_inner)
    new, old = _median_ms([_fwd_bwd(lambda t, w_, b_: causal_conv_silu(t, w_, b_), x, w, bias),
                           _fwd_bwd(lambda t, w_, b_: causal_conv_silu(t, w_, b_, fused=False), x, w, bias)],
                          rounds)  # fmt: skip
    out.append(("Mamba conv1d + SiLU, fwd + bwd", "fused C kernel", new, "PyTorch ops", old))

    u, delta, z = (torch.randn(length, b, d_inner, generator=g) for _ in range(3))
    bm, cm = torch.randn(length, b, n_state, generator=g), torch.randn(length, b, n_state, generator=g)
    a = -torch.rand(d_inner, n_state, generator=g) - 0.5
    dv, dtb = torch.randn(d_inner, generator=g), torch.randn(d_inner, generator=g) * 0.1

    def scan(fused: bool) -> Step:
        return _fwd_bwd(lambda u_, dl_: selective_scan(u_, dl_, a, bm, cm, D=dv, z=z, delta_bias=dtb,
                                                       delta_softplus=True, time_major=True, fused=fused),
                        u, delta)  # fmt: skip

    new, old = _median_ms([scan(True), scan(False)], rounds)
    out.append(("selective scan (one layer), fwd + bwd", "fused C scan", new, "PyTorch chunked scan", old))

    task = make_task("language/synthetic", seed=0, context=length, eval_sequences=32)
    batch = task.train_batch(0, b)
    logits = torch.randn(b, length, 256, generator=g)
    loss_ref = reference_loss(task)
    new, old = _median_ms([_fwd_bwd(lambda t: task.loss(t, batch), logits),
                           _fwd_bwd(lambda t: loss_ref(t, batch), logits)], rounds)  # fmt: skip
    out.append(
        ("masked token loss, fwd + bwd", "fused C kernel (ignore index)", new, "boolean-mask indexing", old)
    )

    from mamba_kan.models import ModelConfig, build_model

    model = build_model("kan_mamba", ModelConfig(d_model=d, n_layers=2, n_heads=heads), task.input_spec,
                        task.output_spec, length)  # fmt: skip
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)
    opts = [torch.optim.AdamW(model.optimizer_groups(0.1), lr=1e-4, **kw) for kw in ({"fused": True}, {})]
    new, old = _median_ms([o.step for o in opts], rounds)
    out.append(
        ("AdamW step (kan_mamba, 41 tensors)", "fused", new, "torch's CPU default (per-tensor loop)", old)
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    retain_freed_memory()
    print("| piece (quick size) | now | ms | before | ms | speed-up |")
    print("|---|---|---|---|---|---|")
    for piece, new_name, new, old_name, old in rows(args.rounds):
        print(f"| {piece} | {new_name} | {new:.2f} | {old_name} | {old:.2f} | {old / new:.2f}x |")


if __name__ == "__main__":
    main()
