"""``symbolic``: regression on closed-form functions, where KANs are expected to help.

Configurations (inputs uniform in the stated box; 1000 train / 1000 test as in the KAN paper, Liu et al. 2024):
- basic functions: sin, cos, exp, log, sqrt on valid domains;
- the KAN paper's toy functions (§3.1): J0(20x), exp(sin(pi x) + y^2), x*y, the 4-variable
  exp(0.5 (sin(pi(x1^2+x2^2)) + sin(pi(x3^2+x4^2)))) and the 100-variable exp(mean_i sin^2(pi x_i / 2));
- deep compositions: sin(exp(cos x)), nested trigonometric functions;
- 15 Feynman equations with the variable ranges of pykan's ``kan/feynman.py`` (the AI Feynman set, Udrescu &
  Tegmark 2020), named ``feynman_<equation id>``; equations whose ranges touch a pole (e.g. I.15.3x at u = c)
  were left out so every target stays finite and the MSE meaningful.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.special as sp

from mamba_kan.tasks.common import merge_options
from mamba_kan.tasks.function_fit import (
    FUNCTION_OPTIONS,
    FunctionRegressionTask,
    FunctionSpec,
    function_fit_family,
)
from mamba_kan.tasks.registry import register_family

PI = np.pi
U1 = (-1.0, 1.0)
TWO_PI = (0.0, 2 * PI)


class SymbolicTask(FunctionRegressionTask):
    family = "symbolic"


def _c(x: np.ndarray, i: int) -> np.ndarray:
    """Column ``i`` of the (N, n_vars) input array."""
    return x[:, i]


_SPECS: list[FunctionSpec] = [
    # --- basic functions ---
    FunctionSpec("sin", lambda x: np.sin(_c(x, 0)), ((-PI, PI),), "sin(x)"),
    FunctionSpec("cos", lambda x: np.cos(_c(x, 0)), ((-PI, PI),), "cos(x)"),
    FunctionSpec("exp", lambda x: np.exp(_c(x, 0)), ((-2.0, 2.0),), "exp(x)"),
    FunctionSpec(
        "log", lambda x: np.log(_c(x, 0)), ((0.1, 4.0),), "log(x)", "Domain kept away from the pole at 0."
    ),
    FunctionSpec("sqrt", lambda x: np.sqrt(_c(x, 0)), ((0.0, 4.0),), "sqrt(x)"),
    # --- KAN paper toy functions (§3.1, Figure 3.1), inputs in [-1, 1]^n ---
    FunctionSpec("bessel_j0_20x", lambda x: sp.j0(20.0 * _c(x, 0)), (U1,), "J0(20x)"),
    FunctionSpec(
        "exp_sin",
        lambda x: np.exp(np.sin(PI * _c(x, 0)) + _c(x, 1) ** 2),
        (U1, U1),
        "exp(sin(pi x) + y^2)",
    ),
    FunctionSpec("xy", lambda x: _c(x, 0) * _c(x, 1), (U1, U1), "x * y"),
    FunctionSpec(
        "exp_sin_4d",
        lambda x: np.exp(
            0.5
            * (np.sin(PI * (_c(x, 0) ** 2 + _c(x, 1) ** 2)) + np.sin(PI * (_c(x, 2) ** 2 + _c(x, 3) ** 2)))
        ),
        (U1,) * 4,
        "exp(0.5 (sin(pi(x1^2 + x2^2)) + sin(pi(x3^2 + x4^2))))",
    ),
    FunctionSpec(
        "exp_mean_sin2_100d",
        lambda x: np.exp(np.mean(np.sin(PI * x / 2.0) ** 2, axis=1)),
        (U1,) * 100,
        "exp((1/100) sum_i sin^2(pi x_i / 2)), 100 variables",
    ),
    # --- deep compositions ---
    FunctionSpec("sin_exp_cos", lambda x: np.sin(np.exp(np.cos(_c(x, 0)))), ((-PI, PI),), "sin(exp(cos(x)))"),
    FunctionSpec(
        "nested_trig",
        lambda x: np.cos(2.0 * np.sin(3.0 * np.cos(_c(x, 0)))),
        ((-PI, PI),),
        "cos(2 sin(3 cos(x)))",
    ),
    FunctionSpec(
        "nested_trig_2d",
        lambda x: np.sin(np.exp(np.cos(PI * _c(x, 0))) + np.cos(PI * _c(x, 1))),
        (U1, U1),
        "sin(exp(cos(pi x)) + cos(pi y))",
    ),
]

# Feynman equations: formulas and variable ranges as in pykan's kan/feynman.py (variables in its column order).
_FEYNMAN: list[tuple[str, Any, tuple[tuple[float, float], ...], str]] = [
    (
        "I.6.20a",
        lambda x: np.exp(-(x[:, 0] ** 2) / 2) / np.sqrt(2 * PI),
        ((-3.0, 3.0),),
        "exp(-theta^2/2)/sqrt(2pi)",
    ),
    (
        "I.6.20",
        lambda x: np.exp(-(x[:, 0] ** 2) / (2 * x[:, 1] ** 2)) / np.sqrt(2 * PI * x[:, 1] ** 2),
        (U1, (0.5, 2.0)),
        "exp(-theta^2/(2 sigma^2))/sqrt(2 pi sigma^2)",
    ),
    (
        "I.6.20b",
        lambda x: np.exp(-((x[:, 0] - x[:, 1]) ** 2) / (2 * x[:, 2] ** 2)) / np.sqrt(2 * PI * x[:, 2] ** 2),
        ((-1.5, 1.5), (-1.5, 1.5), (0.5, 2.0)),
        "exp(-(theta-theta1)^2/(2 sigma^2))/sqrt(2 pi sigma^2)",
    ),
    (
        "I.8.4",
        lambda x: np.sqrt((x[:, 1] - x[:, 0]) ** 2 + (x[:, 3] - x[:, 2]) ** 2),
        (U1,) * 4,
        "sqrt((x2-x1)^2 + (y2-y1)^2)",
    ),
    (
        "I.9.18",
        lambda x: (
            x[:, 0]
            * x[:, 1]
            * x[:, 2]
            / ((x[:, 3] - x[:, 4]) ** 2 + (x[:, 5] - x[:, 6]) ** 2 + (x[:, 7] - x[:, 8]) ** 2)
        ),
        (U1, U1, U1, (-1.0, -0.5), (0.5, 1.0), (-1.0, -0.5), (0.5, 1.0), (-1.0, -0.5), (0.5, 1.0)),
        "G m1 m2 / ((x2-x1)^2 + (y2-y1)^2 + (z2-z1)^2)",
    ),
    (
        "I.12.2",
        lambda x: x[:, 0] * x[:, 1] / (4 * PI * x[:, 2] * x[:, 3] ** 2),
        (U1, U1, (0.5, 2.0), (0.5, 2.0)),
        "q1 q2 / (4 pi epsilon r^2)",
    ),
    (
        "I.12.11",
        lambda x: x[:, 0] * (x[:, 1] + x[:, 2] * x[:, 3] * np.sin(x[:, 4])),
        (U1, U1, U1, U1, TWO_PI),
        "q (E_f + B v sin(theta))",
    ),
    (
        "I.13.12",
        lambda x: x[:, 0] * x[:, 1] * x[:, 2] * (1 / x[:, 4] - 1 / x[:, 3]),
        ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0), (0.5, 2.0), (0.5, 2.0)),
        "G m1 m2 (1/r2 - 1/r1)",
    ),
    (
        "I.18.16",
        lambda x: x[:, 0] * x[:, 1] * x[:, 2] * np.sin(x[:, 3]),
        (U1, U1, U1, TWO_PI),
        "m r v sin(theta)",
    ),
    (
        "I.29.16",
        lambda x: np.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2 - 2 * x[:, 0] * x[:, 1] * np.cos(x[:, 2] - x[:, 3])),
        (U1, U1, TWO_PI, TWO_PI),
        "sqrt(x1^2 + x2^2 - 2 x1 x2 cos(theta1 - theta2))",
    ),
    (
        "I.30.3",
        lambda x: x[:, 0] * np.sin(x[:, 1] * x[:, 2] / 2) ** 2 / np.sin(x[:, 2] / 2) ** 2,
        ((0.0, 1.0), (0.0, 4.0), (0.4 * PI, 1.6 * PI)),
        "I0 sin^2(n theta/2) / sin^2(theta/2)",
    ),
    (
        "I.37.4",
        lambda x: x[:, 0] + x[:, 1] + 2 * np.sqrt(x[:, 0] * x[:, 1]) * np.cos(x[:, 2]),
        ((0.1, 1.0), (0.1, 1.0), TWO_PI),
        "I1 + I2 + 2 sqrt(I1 I2) cos(delta)",
    ),
    (
        "I.40.1",
        lambda x: x[:, 0] * np.exp(-x[:, 1] * x[:, 2] * x[:, 3] / (x[:, 4] * x[:, 5])),
        ((0.0, 1.0), U1, U1, U1, (1.0, 2.0), (1.0, 2.0)),
        "n0 exp(-m g x / (k_b T))",
    ),
    (
        "I.44.4",
        lambda x: x[:, 0] * x[:, 1] * x[:, 2] * np.log(x[:, 4] / x[:, 3]),
        ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0), (0.5, 2.0), (0.5, 2.0)),
        "n k_b T log(V2/V1)",
    ),
    (
        "I.50.26",
        lambda x: x[:, 0] * (np.cos(x[:, 2] * x[:, 3]) + x[:, 1] * np.cos(x[:, 2] * x[:, 3]) ** 2),
        ((0.0, 1.0), (0.0, 1.0), TWO_PI, (0.0, 1.0)),
        "x1 (cos(omega t) + alpha cos^2(omega t))",
    ),
]
FEYNMAN_IDS: tuple[str, ...] = tuple(eq_id for eq_id, *_ in _FEYNMAN)
_SPECS += [
    FunctionSpec(f"feynman_{eq_id}", fn, ranges, formula, f"Feynman {eq_id}.")
    for eq_id, fn, ranges, formula in _FEYNMAN
]
SPECS: dict[str, FunctionSpec] = {s.name: s for s in _SPECS}
DEFAULT_CONFIG = "exp_sin"


def make_symbolic_task(config: str, seed: int, **options: Any) -> SymbolicTask:
    return SymbolicTask(SPECS[config], seed, **merge_options("symbolic", FUNCTION_OPTIONS, options))


INFO = register_family(
    function_fit_family(
        "symbolic",
        "regression on closed-form functions (basic, KAN-paper toys, deep compositions, Feynman); "
        "KAN-favourable",
        SPECS,
        DEFAULT_CONFIG,
        make_symbolic_task,
    )
)
