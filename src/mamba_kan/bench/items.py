"""What the benchmark times: one *item* = one module (or model) and the work of one step on fixed inputs.

An item is rebuilt from a small JSON-able ``spec`` (so a fresh process can rebuild it to measure its peak memory):

* ``{"kind": "ffn", "ffn": "mlp"|"bspline"|"kan"|"pykan", "d_model", "hidden", "tokens"}`` - one feedforward
  block, forward + backward on (tokens, d_model) inputs. ``pykan`` is two ``kan.KANLayer`` (d -> hidden -> d).
* ``{"kind": "mixer", "mixer": "attention"|"mamba"|"mambapy", "d_model", "n_heads", "seq_len", "batch"}`` - one
  sequence mixer, forward + backward on (batch, seq_len, d_model). ``mambapy`` is the PyPI package's
  ``MambaBlock`` (pure PyTorch, parallel scan) with the same sizes as the project's :class:`Mamba`.
* ``{"kind": "mixer", "mixer": "scan_fused"|"scan_pytorch"|"scan_mambapy"|"scan_roofline_copy", "d_inner",
  "d_state", "seq_len", "batch"}`` - the selective scan op alone with the Mamba layer's options (D skip, z gate,
  delta bias, softplus), forward + backward. ``scan_mambapy`` is mambapy's ``MambaBlock.selective_scan`` with the
  softplus and the gate applied around it in PyTorch; ``scan_roofline_copy`` copies as many bytes as the scan
  must move (:func:`scan_bytes_moved`), so scan time / copy time is the distance from the memory roofline.
* ``{"kind": "model", "variant", "task", "task_options", "batch_size", "model_cfg"}`` - one training step of a
  parameter-matched variant: forward, task loss, backward, gradient clipping, AdamW step (the training loop's
  optimizer), as in ``mamba_kan.training``. With ``"reference": true``, the same model's step as the loop ran it
  when the performance issue was filed (:mod:`mamba_kan.bench.reference_step`), group
  ``reference step``.

FLOPs of a step are 3 x the forward FLOPs (backward = 2 x forward for matmuls, the usual 6N convention), with
the forward FLOPs from each module's ``flops_per_token`` in the ``implementation`` count: the work the code
executes (basis then GEMM), not Yu et al. 2024's per-edge spline accounting, which counts spline evaluations a
KAN layer never performs and put small KAN models near or above the measured matmul peak. Third-party
items get the FLOPs of the project module with the same shape, so "achieved GFLOP/s" compares like with like.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mamba_kan.errors import UserError, unknown_choice

FFN_KINDS = ("mlp", "bspline", "kan", "pykan")
MIXER_KINDS = ("attention", "mamba", "mambapy")
# the selective scan op alone (mixer suite): the fused C scan, the PyTorch scan, mambapy's parallel scan, and a
# memory copy of the bytes the scan must move (its roofline)
SCAN_KINDS = ("scan_fused", "scan_pytorch", "scan_mambapy", "scan_roofline_copy")
TRAIN_FLOPS_FACTOR = 3  # forward + backward
EXECUTED = "implementation"  # FLOP count of the executed work (modules.ffn FLOP_COUNTS)


@dataclass
class Item:
    """A benchmark item: ``step()`` does the timed work once (and leaves no gradient behind)."""

    name: str
    group: str
    spec: dict[str, Any]
    step: Callable[[], None]
    flops: float  # per step
    params: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name} [{self.group}]"


def optional_package(name: str) -> bool:
    """Whether an optional comparison package (pykan's ``kan``, ``mambapy``) imports."""
    try:
        __import__(name)
    except Exception:  # noqa: BLE001 - any import failure means "not available" (pykan pulls in sklearn etc.)
        return False
    return True


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _fwd_bwd_step(
    module: nn.Module, x: Tensor, grad_out: Tensor, device: torch.device, precision: str
) -> Callable[[], None]:
    """Forward + backward with a fixed upstream gradient (no loss op to time); clears parameter gradients."""

    def step() -> None:
        module.zero_grad(set_to_none=True)
        xi = x.detach().requires_grad_(True)
        with _autocast(device, precision):
            y = module(xi)
        y.backward(grad_out.to(y.dtype))

    return step


# --- feedforward blocks ---------------------------------------------------------------------------------------
def ffn_param_count(ffn: str, d_model: int, hidden: int, grid_size: int = 5, spline_order: int = 3) -> int:
    from mamba_kan.modules.ffn import KANFFN, MLP, BSplineMLP

    if ffn == "mlp":
        return _count(MLP(d_model, hidden))
    if ffn == "bspline":
        return _count(BSplineMLP(d_model, hidden, grid_size, spline_order))
    if ffn in ("kan", "pykan"):
        return _count(KANFFN(d_model, hidden, grid_size, spline_order))
    raise unknown_choice("feedforward", ffn, FFN_KINDS)


def matched_ffn_widths(d_model: int, ref_hidden: int | None = None) -> dict[str, int]:
    """Hidden widths of the mlp / bspline / kan blocks exactly as training builds them at this d_model.

    Each width is ``mamba_kan.models.solve_ffn_hidden`` for the variant ``<ffn>_transformer`` with
    ``ModelConfig(d_model, ref_hidden)`` (reference width 4 d_model by default), i.e. the parameter match of the
    whole model, including any width rounding the solver applies. Every layer but the feedforward block is the
    same across the three levels, so the width does not depend on the task: a small next-token task is used.
    """
    from mamba_kan.design import FFN_LEVELS, variant_name
    from mamba_kan.io_spec import NextTokenOutput, TokenInput
    from mamba_kan.models import ModelConfig
    from mamba_kan.models.matching import solve_ffn_hidden

    cfg = ModelConfig(d_model=d_model, ref_hidden=ref_hidden)
    ends = (TokenInput(vocab_size=64), NextTokenOutput(vocab_size=64))
    return {
        ffn: solve_ffn_hidden(variant_name(ffn, "transformer"), cfg, *ends).ffn_hidden for ffn in FFN_LEVELS
    }


class _PykanFFN(nn.Module):
    """pykan's KANLayer twice (d -> hidden -> d); its forward returns (y, preacts, postacts, postspline)."""

    def __init__(self, d_model: int, hidden: int, device: torch.device) -> None:
        super().__init__()
        from kan.KANLayer import KANLayer

        self.first = KANLayer(in_dim=d_model, out_dim=hidden, num=5, k=3, device=str(device))
        self.second = KANLayer(in_dim=hidden, out_dim=d_model, num=5, k=3, device=str(device))

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(x)[0])[0]


def _build_ffn(spec: dict[str, Any], device: torch.device, precision: str) -> Item:
    from mamba_kan.modules.ffn import KANFFN, MLP, BSplineMLP

    ffn, d, hidden, tokens = spec["ffn"], int(spec["d_model"]), int(spec["hidden"]), int(spec["tokens"])
    torch.manual_seed(0)
    if ffn == "mlp":
        module: nn.Module = MLP(d, hidden)
    elif ffn == "bspline":
        module = BSplineMLP(d, hidden)
    elif ffn == "kan":
        module = KANFFN(d, hidden)
    elif ffn == "pykan":
        if not optional_package("kan"):
            raise UserError("the pykan comparison needs the 'pykan' package (pip install pykan)")
        module = _PykanFFN(d, hidden, device)
    else:
        raise unknown_choice("feedforward", ffn, FFN_KINDS)
    module = module.to(device)
    flops_module = KANFFN(d, hidden) if ffn == "pykan" else module
    x = torch.randn(tokens, d, device=device)
    grad_out = torch.randn(tokens, d, device=device)
    return Item(
        name=ffn,
        group=f"d_model={d}",
        spec=spec,
        step=_fwd_bwd_step(module, x, grad_out, device, precision),
        flops=TRAIN_FLOPS_FACTOR * flops_module.flops_per_token(EXECUTED) * tokens,  # type: ignore[operator]
        params=_count(module),
        details={"d_model": d, "hidden": hidden, "tokens": tokens},
    )


# --- sequence mixers ------------------------------------------------------------------------------------------
def scan_bytes_moved(batch: int, d_inner: int, d_state: int, seq_len: int, itemsize: int = 4) -> int:
    """Bytes a selective scan with D, z, delta bias and softplus must move, forward + backward, in the best case.

    Forward reads u, delta, z (batch, d_inner, L) and B, C (batch, N, L), writes y; backward reads u, delta, z,
    B, C and dy, writes du, d delta, dz, dB, dC. Parameters (A, D, bias: O(d_inner N)) and any saved state are
    left out: a kernel that recomputes everything from its inputs moves no more than this.
    """
    big, small = batch * d_inner * seq_len, batch * d_state * seq_len
    return itemsize * ((4 * big + 2 * small) + (7 * big + 4 * small))


def _scan_inputs(spec: dict[str, Any], device: torch.device) -> dict[str, Tensor]:
    """Inputs of the Mamba layer's scan at its initialisation: time-major (L, batch, .), A = -(1..N)."""
    d, n, length, batch = int(spec["d_inner"]), int(spec["d_state"]), int(spec["seq_len"]), int(spec["batch"])
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g).to(device)  # noqa: E731
    return {
        "u": r(length, batch, d),
        "delta": r(length, batch, d) * 0.5,
        "A": -torch.arange(1, n + 1, dtype=torch.float32, device=device).repeat(d, 1),
        "B": r(length, batch, n),
        "C": r(length, batch, n),
        "D": torch.ones(d, device=device),
        "z": r(length, batch, d),
        "delta_bias": torch.full(
            (d,), -4.0, device=device
        ),  # softplus(-4 + N(0, 1/4)) ~ 0.02, mamba's dt range
        "grad": r(length, batch, d),
    }


def _build_scan(spec: dict[str, Any], device: torch.device, precision: str) -> Item:
    """The selective scan op alone (see the module docstring); every kind gets the fused scan's FLOPs."""
    import torch.nn.functional as F

    from mamba_kan.modules.mamba import SCAN_FLOPS_PER_STATE
    from mamba_kan.ops.selective_scan import selective_scan

    kind = spec["mixer"]
    d, n, length, batch = int(spec["d_inner"]), int(spec["d_state"]), int(spec["seq_len"]), int(spec["batch"])
    x = _scan_inputs(spec, device)
    grad = x.pop("grad")
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    moved = scan_bytes_moved(batch, d, n, length)
    if kind == "scan_roofline_copy":
        src = torch.empty(moved // 8, dtype=torch.float32, device=device).normal_()
        dst = torch.empty_like(src)  # copying k bytes reads k and writes k: half of `moved` each way

        def step() -> None:
            dst.copy_(src)

    elif kind in ("scan_fused", "scan_pytorch"):
        fused = kind == "scan_fused"

        def step() -> None:
            leaves = [x[k].detach().requires_grad_(True) for k in names]
            with _autocast(device, precision):
                y = selective_scan(*leaves, delta_softplus=True, time_major=True, fused=fused)
            y.backward(grad)

    elif kind == "scan_mambapy":
        if not optional_package("mambapy"):
            raise UserError("the mambapy comparison needs the 'mambapy' package (pip install mambapy)")
        from mambapy.mamba import MambaBlock

        bm = {
            k: (v.transpose(0, 1).contiguous() if v.dim() == 3 else v) for k, v in x.items()
        }  # (batch, L, .)
        grad_bm = grad.transpose(0, 1).contiguous()

        def step() -> None:
            u, delta, A, B, C, D, z, bias = (bm[k].detach().requires_grad_(True) for k in names)
            with _autocast(device, precision):
                # selective_scan does not use its instance (mambapy 1.2); softplus and gate as MambaBlock.ssm
                y = MambaBlock.selective_scan(None, u, F.softplus(delta + bias), A, B, C, D) * F.silu(z)
            y.backward(grad_bm)

    else:
        raise unknown_choice("scan", kind, SCAN_KINDS)
    return Item(
        name=kind,
        group=f"L={length}",
        spec=spec,
        step=step,
        flops=0
        if kind == "scan_roofline_copy"
        else TRAIN_FLOPS_FACTOR * SCAN_FLOPS_PER_STATE * batch * length * d * n,
        params=0 if kind == "scan_roofline_copy" else d * n + 2 * d,  # the layer's A, D and dt bias
        details={"d_inner": d, "d_state": n, "seq_len": length, "batch": batch, "bytes_moved": moved},
    )


def _build_mixer(spec: dict[str, Any], device: torch.device, precision: str) -> Item:
    if spec["mixer"] in SCAN_KINDS:
        return _build_scan(spec, device, precision)
    from mamba_kan.models.config import ModelConfig
    from mamba_kan.modules.attention import CausalSelfAttention
    from mamba_kan.modules.mamba import Mamba

    mixer, d, length, batch = spec["mixer"], int(spec["d_model"]), int(spec["seq_len"]), int(spec["batch"])
    n_heads = int(spec.get("n_heads", 4))
    cfg = ModelConfig(d_model=d, n_heads=n_heads)
    torch.manual_seed(0)
    if mixer == "attention":
        module: nn.Module = CausalSelfAttention(d, n_heads)
    elif mixer == "mamba":
        module = Mamba(d, cfg)
    elif mixer == "mambapy":
        if not optional_package("mambapy"):
            raise UserError("the mambapy comparison needs the 'mambapy' package (pip install mambapy)")
        from mambapy.mamba import MambaBlock, MambaConfig

        module = MambaBlock(
            MambaConfig(
                d_model=d, n_layers=1, d_state=cfg.d_state, expand_factor=cfg.expand, d_conv=cfg.d_conv
            )
        )
    else:
        raise unknown_choice("mixer", mixer, MIXER_KINDS)
    module = module.to(device)
    flops_module = module if mixer != "mambapy" else Mamba(d, cfg)
    x = torch.randn(batch, length, d, device=device)
    grad_out = torch.randn(batch, length, d, device=device)
    fpt = flops_module.flops_per_token(length)  # type: ignore[operator]
    return Item(
        name=mixer,
        group=f"L={length}",
        spec=spec,
        step=_fwd_bwd_step(module, x, grad_out, device, precision),
        flops=TRAIN_FLOPS_FACTOR * fpt * batch * length,
        params=_count(module),
        details={"d_model": d, "seq_len": length, "batch": batch},
    )


# --- whole training steps -------------------------------------------------------------------------------------
def _build_model(spec: dict[str, Any], device: torch.device, precision: str) -> Item:
    from mamba_kan.models import ModelConfig, build_model
    from mamba_kan.tasks import make_task
    from mamba_kan.training.config import TrainConfig
    from mamba_kan.training.optim import build_optimizer

    variant, batch_size = spec["variant"], int(spec["batch_size"])
    task = make_task(spec["task"], seed=0, **spec.get("task_options", {}))
    batch = task.train_batch(0, batch_size).to(device)
    seq_len = int(batch.inputs.shape[-1]) if batch.inputs.dim() > 1 else 1
    torch.manual_seed(0)
    model = build_model(
        variant, ModelConfig.from_dict(dict(spec["model_cfg"])), task.input_spec, task.output_spec, seq_len
    ).to(device)
    cfg = TrainConfig(model=variant, batch_size=batch_size)  # the training loop's optimizer defaults
    reference = bool(spec.get("reference", False))
    settings: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    loss_fn = task.loss
    if reference:  # the frozen earlier step (mamba_kan.bench.reference_step)
        from mamba_kan.bench import reference_step as ref

        ref.use_reference_mixers(model)
        loss_fn, settings = ref.reference_loss(task), ref.reference_settings
        optimizer = ref.reference_optimizer(model.optimizer_groups(cfg.weight_decay), cfg.lr,
                                            (cfg.beta1, cfg.beta2), cfg.adam_eps, cfg.weight_decay, device)  # fmt: skip
    else:
        optimizer = build_optimizer(model, cfg, device)

    def step() -> None:
        with settings():
            with _autocast(device, precision):
                out = model(batch.inputs)
            loss = loss_fn(out, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    tokens = batch_size * task.tokens_per_sample
    return Item(
        name=variant,
        group="reference step" if reference else "train step",
        spec=spec,
        step=step,
        flops=TRAIN_FLOPS_FACTOR * model.flops_per_token(seq_len, EXECUTED) * tokens,
        params=model.num_params(),
        details={"ffn_hidden": model.ffn_hidden, "tokens": tokens, "seq_len": seq_len},
    )


_BUILDERS = {"ffn": _build_ffn, "mixer": _build_mixer, "model": _build_model}


def build_item(spec: dict[str, Any], device: torch.device, precision: str = "fp32") -> Item:
    """Build the item described by ``spec`` on ``device`` (precision 'fp32' or 'bf16' autocast)."""
    kind = spec.get("kind")
    if kind not in _BUILDERS:
        raise unknown_choice("benchmark item kind", kind, sorted(_BUILDERS))
    return _BUILDERS[kind](spec, device, precision)
