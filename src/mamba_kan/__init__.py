"""mamba-kan: a 2x3 factorial comparison of feedforward blocks (MLP, B-spline MLP, KAN) under
sequence mixers (Transformer attention, Mamba selective SSM).

Layout (imports only point down): ops -> modules -> models; tasks; training; experiments;
analysis; reporting; bench; cli.
"""

__version__ = "0.1.0"
