"""The backbone shared by all variants and the factory that builds any of them.

    input end -> n_layers x Block(mixer, ffn) -> final LayerNorm -> output end

Only the two factors (feedforward type, mixer type) differ between variants; everything else - embeddings, norms,
heads, depth, d_model, init scale, the weight-decay rule (:func:`parameter_role`), the dropout sites - is the same.
The feedforward hidden width is solved per variant so that it matches its reference in parameters (or FLOPs/token);
see :mod:`mamba_kan.models.matching`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mamba_kan.io_spec import InputSpec, NextTokenOutput, OutputSpec, TokenInput
from mamba_kan.models.config import ModelConfig
from mamba_kan.models.registry import build_plugin_ffn, build_plugin_mixer, parse_variant
from mamba_kan.modules.attention import CausalSelfAttention
from mamba_kan.modules.block import Block
from mamba_kan.modules.ends import make_input_end, make_output_end
from mamba_kan.modules.ffn import KANFFN, MLP, BSplineMLP
from mamba_kan.modules.splines import BSplineActivation, KANLinear

# --- parameter roles: the one weight-decay rule -------------------------------------------------------------------
# Decayed: the weight matrices of linear maps and the Mamba conv taps (the matrices an L2 penalty is meant for;
# nanoGPT / mamba_ssm practice). Not decayed: norms and biases (decay pulls gains to 0), embeddings, Mamba's A_log,
# D and dt bias (decay would pull A towards -1 and the step size to a constant; Gu & Dao 2023), and every parameter
# of the spline function family in BOTH spline arms - coefficients c, spline scale w_s, base scale w_b. Why none
# for the spline family: decay on them pulls each learned function towards 0 (not towards a smoother function),
# with a strength that depends on how the function is split into w_b, w_s and c; the KAN paper and pykan train
# splines without weight decay and regularise KANs by their own L1/entropy term instead. So bspline - mlp differs
# only by the activation's (undecayed) parameters, and kan - bspline compares the same family under the same rule.
DECAYED_ROLES = frozenset({"linear_weight", "conv_weight"})
ROLES = (
    "linear_weight",
    "conv_weight",
    "bias",
    "norm",
    "embedding",
    "spline_coef",
    "spline_scale",
    "base_scale",
    "ssm_A_log",
    "ssm_D",
    "ssm_dt_bias",
)


def parameter_role(module: nn.Module, name: str, module_path: str = "") -> str:
    """What the parameter ``module.<name>`` is (one of :data:`ROLES`); ``module_path`` is the module's dotted name
    in the model. Unknown parameters are an error, so a new module must state its parameters' roles here rather
    than fall into a default by shape. A plug-in module states them itself: a method ``parameter_role(name)``
    returning one of :data:`ROLES` (or None to fall back to the rules below)."""
    from mamba_kan.modules.mamba import Mamba

    own = getattr(module, "parameter_role", None)
    role = own(name) if callable(own) else None
    if role is not None:
        if role not in ROLES:
            raise TypeError(
                f"{type(module).__name__}.parameter_role({name!r}) = {role!r} is not one of {ROLES}"
            )
        return role
    if isinstance(module, BSplineActivation | KANLinear):
        role = {"coef": "spline_coef", "spline_weight": "spline_scale", "base_weight": "base_scale"}.get(name)
    elif isinstance(module, Mamba):
        role = {"A_log": "ssm_A_log", "D": "ssm_D"}.get(name)
    elif isinstance(module, nn.LayerNorm):
        role = "norm"
    elif isinstance(module, nn.Embedding):
        role = "embedding"
    elif isinstance(module, nn.Linear | nn.Conv1d):
        kind = "linear_weight" if isinstance(module, nn.Linear) else "conv_weight"
        role = kind if name == "weight" else "bias" if name == "bias" else None
        if role == "bias" and module_path.rsplit(".", 1)[-1] == "dt_proj":
            role = "ssm_dt_bias"
    else:
        role = None
    if role is None:
        raise TypeError(f"no weight-decay role for parameter {name!r} of {type(module).__name__}")
    return role


# the built-in feedforward blocks and mixers; plug-ins come from :mod:`mamba_kan.plugins` (via models.registry)
_BUILTIN_FFNS = {
    "mlp": lambda d_model, hidden, cfg: MLP(d_model, hidden),
    "bspline": lambda d_model, hidden, cfg: BSplineMLP(
        d_model, hidden, cfg.grid_size, cfg.spline_order, cfg.grid_range, base=cfg.spline_base
    ),
    "kan": lambda d_model, hidden, cfg: KANFFN(
        d_model, hidden, cfg.grid_size, cfg.spline_order, cfg.grid_range
    ),
}


def _mamba(cfg: ModelConfig) -> nn.Module:
    from mamba_kan.modules.mamba import Mamba

    return Mamba(cfg.d_model, cfg)


_BUILTIN_MIXERS = {
    "transformer": lambda cfg: CausalSelfAttention(cfg.d_model, cfg.n_heads),
    "mamba": _mamba,
    "none": lambda cfg: None,
}


def make_ffn(ffn_type: str, d_model: int, hidden: int, cfg: ModelConfig) -> nn.Module:
    """Feedforward block ``ffn_type`` (built-in or plug-in) of hidden width ``hidden``: (..., d_model) -> same."""
    builder = _BUILTIN_FFNS.get(ffn_type)
    if builder is not None:
        return builder(d_model, hidden, cfg)
    return build_plugin_ffn(ffn_type, d_model, hidden, cfg)


def make_mixer(mixer_type: str, cfg: ModelConfig) -> nn.Module | None:
    """Sequence mixer ``mixer_type`` (built-in or plug-in): (B, L, d_model) -> same; None for ``none``."""
    builder = _BUILTIN_MIXERS.get(mixer_type)
    if builder is not None:
        return builder(cfg)
    return build_plugin_mixer(mixer_type, cfg)


def _scale_mixer_residual(mixer: nn.Module, factor: float) -> None:
    """A plug-in mixer scales its own output (``scale_residual_``); the built-in ones their ``out_proj``."""
    own = getattr(mixer, "scale_residual_", None)
    if callable(own):
        own(factor)
    else:
        mixer.out_proj.weight.mul_(factor)


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
                make_mixer(self.mixer_type, cfg),
                make_ffn(self.ffn_type, d, ffn_hidden, cfg),
                cfg.norm_eps,
                cfg.dropout,
            )
            for _ in range(cfg.n_layers)
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
                _scale_mixer_residual(block.mixer, factor)
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

    def flops_per_token(self, seq_len: int | None = None, flop_count: str | None = None) -> int:
        """Forward FLOPs per token of the backbone and ends (matmuls 2 m n; see each module's docstring).

        ``flop_count``: "yu2024" | "implementation" (default ``cfg.flop_count``); only the spline arms differ.
        """
        length = seq_len or self.seq_len
        count = flop_count or self.cfg.flop_count
        d = self.cfg.d_model
        total = 0
        for block in self.blocks:
            if block.mixer is not None:
                total += int(block.mixer.flops_per_token(length))
            total += int(block.ffn.flops_per_token(count))
        head = self.head.proj
        if isinstance(self.output_spec, NextTokenOutput):
            total += 2 * d * head.out_features
        else:  # read out once per sequence
            total += 2 * d * head.out_features // max(length, 1)
        return total

    # --- training helpers -------------------------------------------------------------------------------------
    def parameter_roles(self) -> dict[str, str]:
        """{parameter name: role} for every trainable parameter (tied weights once); see :func:`parameter_role`."""
        roles: dict[str, str] = {}
        seen: set[int] = set()
        for mod_name, module in self.named_modules():
            for p_name, p in module.named_parameters(recurse=False):
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                roles[f"{mod_name}.{p_name}" if mod_name else p_name] = parameter_role(
                    module, p_name, mod_name
                )
        return roles

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups by parameter role: ``weight_decay`` on the roles in :data:`DECAYED_ROLES`, 0 on the rest.

        Each group carries its ``roles`` (sorted names), so the optimizer's state says what was decayed.
        """
        by_name = dict(self.named_parameters())
        decay, no_decay = [], []
        decay_roles, no_decay_roles = set(), set()
        for name, role in self.parameter_roles().items():
            if role in DECAYED_ROLES:
                decay.append(by_name[name])
                decay_roles.add(role)
            else:
                no_decay.append(by_name[name])
                no_decay_roles.add(role)
        return [
            {"params": decay, "weight_decay": weight_decay, "roles": sorted(decay_roles)},
            {"params": no_decay, "weight_decay": 0.0, "roles": sorted(no_decay_roles)},
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
