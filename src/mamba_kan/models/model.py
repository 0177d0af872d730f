"""The backbone shared by all variants and the factory that builds any of them.

    input end -> n_layers x Block(mixer, ffn) -> final LayerNorm -> output end

Only the two factors (feedforward type, mixer type) differ between variants; everything else - embeddings, norms,
heads, depth, d_model, init - is identical. The feedforward hidden width is solved per variant so that the whole
model matches the ``mlp_transformer`` reference in parameters (or FLOPs/token); see :mod:`mamba_kan.models.matching`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mamba_kan.io_spec import InputSpec, NextTokenOutput, OutputSpec, TokenInput
from mamba_kan.models.config import ModelConfig
from mamba_kan.models.registry import parse_variant
from mamba_kan.modules.attention import CausalSelfAttention
from mamba_kan.modules.block import Block
from mamba_kan.modules.ends import make_input_end, make_output_end
from mamba_kan.modules.ffn import KANFFN, MLP, BSplineMLP
from mamba_kan.modules.splines import BSplineActivation, KANLinear


def make_ffn(ffn_type: str, d_model: int, hidden: int, cfg: ModelConfig) -> nn.Module:
    if ffn_type == "mlp":
        return MLP(d_model, hidden)
    if ffn_type == "bspline":
        return BSplineMLP(
            d_model, hidden, cfg.grid_size, cfg.spline_order, cfg.grid_range, base=cfg.spline_base
        )
    if ffn_type == "kan":
        return KANFFN(d_model, hidden, cfg.grid_size, cfg.spline_order, cfg.grid_range)
    raise ValueError(ffn_type)


def make_mixer(mixer_type: str, cfg: ModelConfig, layer_idx: int) -> nn.Module | None:
    if mixer_type == "transformer":
        return CausalSelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
    if mixer_type == "mamba":
        from mamba_kan.modules.mamba import Mamba

        return Mamba(cfg.d_model, cfg, layer_idx=layer_idx)
    if mixer_type == "none":
        return None
    raise ValueError(mixer_type)


class MambaKanModel(nn.Module):
    """One variant of the factorial design for one input/output end.

    forward(inputs): tokens (B, L) long or values (B, L) float -> (B, L, V) logits | (B, out_dim) | (B, horizon).
    """

    def __init__(
        self,
        variant: str,
        cfg: ModelConfig,
        input_spec: InputSpec,
        output_spec: OutputSpec,
        ffn_hidden: int,
        seq_len: int = 256,
    ) -> None:
        super().__init__()
        self.variant = variant
        self.ffn_type, self.mixer_type = parse_variant(variant)
        self.cfg = cfg
        self.input_spec = input_spec
        self.output_spec = output_spec
        self.ffn_hidden = ffn_hidden
        self.seq_len = seq_len
        d = cfg.d_model
        self.embed = make_input_end(input_spec, d, token_mixing=self.mixer_type != "none")
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(
                d,
                make_mixer(self.mixer_type, cfg, i),
                make_ffn(self.ffn_type, d, ffn_hidden, cfg),
                cfg.norm_eps,
            )
            for i in range(cfg.n_layers)
        )
        self.norm_f = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.head = make_output_end(output_spec, d)
        if (
            cfg.tie_embeddings
            and isinstance(input_spec, TokenInput)
            and isinstance(output_spec, NextTokenOutput)
            and input_spec.vocab_size == output_spec.vocab_size
        ):
            self.head.proj.weight = self.embed.embedding.weight
        self._scale_residuals()

    @torch.no_grad()
    def _scale_residuals(self) -> None:
        """GPT-2 / Mamba: residual output projections scaled by 1/sqrt(n_residuals_per_layer * n_layers)."""
        n_res = 2 if self.mixer_type != "none" else 1
        factor = 1.0 / math.sqrt(n_res * self.cfg.n_layers)
        for block in self.blocks:
            if block.mixer is not None:
                block.mixer.out_proj.weight.mul_(factor)
            block.ffn.scale_residual_(factor)

    def forward(self, inputs: Tensor) -> Tensor:
        x = self.drop(self.embed(inputs))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm_f(x))

    # --- accounting -------------------------------------------------------------------------------------------
    def num_params(self) -> int:
        """Trainable parameters, tied weights counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Forward FLOPs per token of the backbone and ends (matmuls 2 m n; see each module's docstring)."""
        length = seq_len or self.seq_len
        d = self.cfg.d_model
        total = 0
        for block in self.blocks:
            if block.mixer is not None:
                total += int(block.mixer.flops_per_token(length))
            total += int(block.ffn.flops_per_token())
        head = self.head.proj
        if isinstance(self.output_spec, NextTokenOutput):
            total += 2 * d * head.out_features
        else:  # read out once per sequence
            total += 2 * d * head.out_features // max(length, 1)
        return total

    # --- training helpers -------------------------------------------------------------------------------------
    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on matrices (and spline coefficients); none on norms, biases, embeddings,
        Mamba's A_log and D (flagged ``_no_weight_decay``), and the per-function spline/base scales."""
        decay, no_decay = [], []
        seen: set[int] = set()
        embedding_params = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        for name, p in self.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if (
                p.dim() < 2
                or getattr(p, "_no_weight_decay", False)
                or id(p) in embedding_params
                or name.endswith(("spline_weight", "base_weight"))
                and p.dim() < 2
            ):
                no_decay.append(p)
            else:
                decay.append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def regularization_loss(self, weight_l1: float = 1.0, weight_entropy: float = 1.0) -> Tensor:
        """KAN sparsity regulariser summed over KAN layers (0 for other variants)."""
        total = torch.zeros((), device=self.norm_f.weight.device)
        for m in self.modules():
            if isinstance(m, KANLinear):
                total = total + m.regularization_loss(weight_l1, weight_entropy)
        return total

    def spline_modules(self) -> dict[str, nn.Module]:
        return {n: m for n, m in self.named_modules() if isinstance(m, BSplineActivation | KANLinear)}

    @torch.no_grad()
    def spline_functions(self, xs: Tensor, max_functions: int = 16) -> dict[str, Tensor]:
        """Learned 1-D functions on points xs (S,): {module name: (n_functions, S)} - activations of the B-spline
        MLP per neuron, a sample of KAN edges (the first ``max_functions``)."""
        out = {}
        for name, m in self.spline_modules().items():
            if isinstance(m, KANLinear):
                out[name] = m.functions(xs, max_edges=max_functions).cpu()
            else:
                out[name] = m.functions(xs)[:max_functions].cpu()
        return out

    @torch.no_grad()
    def update_grids(self, inputs: Tensor, margin: float = 0.05) -> None:
        """Refit every spline grid to the inputs it sees on ``inputs`` (grid update from data, KAN paper §2.5)."""
        captured: dict[nn.Module, Tensor] = {}
        hooks = [
            m.register_forward_pre_hook(lambda mod, args: captured.__setitem__(mod, args[0].detach()))
            for m in self.spline_modules().values()
        ]
        try:
            self(inputs)
        finally:
            for h in hooks:
                h.remove()
        for m, x in captured.items():
            m.update_grid(x, margin)

    def describe(self) -> dict:
        return {
            "variant": self.variant,
            "ffn": self.ffn_type,
            "mixer": self.mixer_type,
            "ffn_hidden": self.ffn_hidden,
            "params": self.num_params(),
            "flops_per_token": self.flops_per_token(),
            "config": self.cfg.to_dict(),
        }
