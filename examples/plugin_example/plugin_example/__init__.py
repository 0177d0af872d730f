"""Example mamba-kan plug-in: importing this package registers the ``glu`` feedforward block and the ``sine``
task family (see docs/plugins.md). After it is loaded, ``glu_transformer``, ``glu_mamba`` and ``glu_ffn`` are
model variants and ``sine``/``sine/sin1d``/``sine/sin2d`` are tasks."""

from mamba_kan.plugins import register_family, register_ffn
from plugin_example.glu import SwiGLU
from plugin_example.sine import SINE_FAMILY

register_ffn(
    "glu",
    lambda d_model, hidden, cfg: SwiGLU(d_model, hidden),
    description="SwiGLU feedforward block (Shazeer 2020): W_o (silu(W_g x) * W_v x)",
)
register_family(SINE_FAMILY)
