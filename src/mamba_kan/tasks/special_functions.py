"""``special_functions``: regression on special functions of one or two inputs, evaluated with scipy.special
(the KAN paper's §3.2 set, Liu et al. 2024, plus one-input Bessel and Legendre functions). KAN-favourable.

Domains are chosen so every target is finite and of moderate size, and are stated per configuration:
- yv(v, x) and kv(v, x) diverge as x -> 0: x starts at 1;
- iv(v, x) grows like e^x: x <= 4 and targets are standardised (train mean/std);
- lpmv(m, v, x) with a non-integer degree v diverges as x -> -1 (and its derivative as x -> 1): x in [-0.9, 0.9];
  for m = 2 values reach ~10 there, so targets are standardised;
- ellipkinc(phi, m) is infinite at phi = pi/2, m = 1: |phi| <= 1.5 keeps it below ~3.5;
- spherical harmonics are complex: the target is the real part of Y_n^m(polar, azimuth). scipy >= 1.15 offers
  ``sph_harm_y(n, m, polar, azimuth)``; older scipy ``sph_harm(m, n, azimuth, polar)`` (argument order and the
  meaning of theta/phi differ -- :func:`spherical_harmonic` hides the difference).
Note (Yu et al. 2024, KAN or MLP: A Fairer Comparison): KANbeFair's jv/yv/kv/iv labels computed derivatives; here they are the
functions themselves.
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


class SpecialFunctionTask(FunctionRegressionTask):
    family = "special_functions"


def spherical_harmonic(n: int, m: int, polar: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """Complex Y_n^m at polar angle in [0, pi] and azimuth in [0, 2 pi], on any scipy version."""
    if hasattr(sp, "sph_harm_y"):  # scipy >= 1.15
        return sp.sph_harm_y(n, m, polar, azimuth)
    return sp.sph_harm(m, n, azimuth, polar)  # pragma: no cover - old scipy: (m, n, azimuthal, polar)


def _lpmv(m: int):
    return lambda x: sp.lpmv(m, x[:, 0], x[:, 1])


def _sph(m: int, n: int):
    return lambda x: spherical_harmonic(n, m, x[:, 0], x[:, 1]).real


_LPMV_NOTE = "x kept in [-0.9, 0.9]: for non-integer degree P_v^m diverges as x -> -1."
_SPECS: list[FunctionSpec] = [
    # --- one input ---
    FunctionSpec("bessel_j0", lambda x: sp.j0(x[:, 0]), ((0.0, 10.0),), "J0(x)"),
    FunctionSpec("bessel_j1", lambda x: sp.j1(x[:, 0]), ((0.0, 10.0),), "J1(x)"),
    FunctionSpec("legendre_p2", lambda x: sp.eval_legendre(2, x[:, 0]), ((-1.0, 1.0),), "P2(x)"),
    FunctionSpec("legendre_p3", lambda x: sp.eval_legendre(3, x[:, 0]), ((-1.0, 1.0),), "P3(x)"),
    FunctionSpec("legendre_p4", lambda x: sp.eval_legendre(4, x[:, 0]), ((-1.0, 1.0),), "P4(x)"),
    # --- two inputs (KAN paper §3.2) ---
    FunctionSpec(
        "ellipj_sn", lambda x: sp.ellipj(x[:, 0], x[:, 1])[0], ((-2.0, 2.0), (0.0, 1.0)), "sn(u | m)"
    ),
    FunctionSpec(
        "ellipj_cn", lambda x: sp.ellipj(x[:, 0], x[:, 1])[1], ((-2.0, 2.0), (0.0, 1.0)), "cn(u | m)"
    ),
    FunctionSpec(
        "ellipj_dn", lambda x: sp.ellipj(x[:, 0], x[:, 1])[2], ((-2.0, 2.0), (0.0, 1.0)), "dn(u | m)"
    ),
    FunctionSpec(
        "ellipkinc",
        lambda x: sp.ellipkinc(x[:, 0], x[:, 1]),
        ((-1.5, 1.5), (0.0, 1.0)),
        "F(phi | m), incomplete elliptic integral of the first kind",
        "|phi| <= 1.5 keeps F finite (it diverges at phi = pi/2, m = 1).",
    ),
    FunctionSpec(
        "ellipeinc",
        lambda x: sp.ellipeinc(x[:, 0], x[:, 1]),
        ((-1.5, 1.5), (0.0, 1.0)),
        "E(phi | m), incomplete elliptic integral of the second kind",
    ),
    FunctionSpec(
        "jv", lambda x: sp.jv(x[:, 0], x[:, 1]), ((0.0, 5.0), (0.0, 10.0)), "J_v(x), Bessel first kind"
    ),
    FunctionSpec(
        "yv",
        lambda x: sp.yv(x[:, 0], x[:, 1]),
        ((0.0, 2.0), (1.0, 10.0)),
        "Y_v(x), Bessel second kind",
        "x >= 1: Y_v diverges as x -> 0.",
    ),
    FunctionSpec(
        "kv",
        lambda x: sp.kv(x[:, 0], x[:, 1]),
        ((0.0, 2.0), (1.0, 5.0)),
        "K_v(x), modified Bessel second kind",
        "x >= 1: K_v diverges as x -> 0.",
    ),
    FunctionSpec(
        "iv",
        lambda x: sp.iv(x[:, 0], x[:, 1]),
        ((0.0, 2.0), (0.0, 4.0)),
        "I_v(x), modified Bessel first kind",
        "x <= 4 (I_v grows like e^x); values up to ~11, so standardised.",
        standardize=True,
    ),
    FunctionSpec("lpmv_m0", _lpmv(0), ((0.0, 3.0), (-0.9, 0.9)), "P_v^0(x), associated Legendre", _LPMV_NOTE),
    FunctionSpec("lpmv_m1", _lpmv(1), ((0.0, 3.0), (-0.9, 0.9)), "P_v^1(x), associated Legendre", _LPMV_NOTE),
    FunctionSpec(
        "lpmv_m2",
        _lpmv(2),
        ((0.0, 3.0), (-0.9, 0.9)),
        "P_v^2(x), associated Legendre",
        _LPMV_NOTE + " Values reach ~10, so standardised.",
        standardize=True,
    ),
]
for _m, _n in ((0, 1), (1, 1), (0, 2), (1, 2), (2, 2)):
    _SPECS.append(
        FunctionSpec(
            f"sph_harm_m{_m}_n{_n}",
            _sph(_m, _n),
            ((0.0, PI), (0.0, 2 * PI)),
            f"Re Y_{_n}^{_m}(polar, azimuth), spherical harmonic",
        )
    )
SPECS: dict[str, FunctionSpec] = {s.name: s for s in _SPECS}
DEFAULT_CONFIG = "jv"


def make_special_function_task(config: str, seed: int, **options: Any) -> SpecialFunctionTask:
    return SpecialFunctionTask(
        SPECS[config], seed, **merge_options("special_functions", FUNCTION_OPTIONS, options)
    )


INFO = register_family(
    function_fit_family(
        "special_functions",
        "regression on special functions (Bessel, Legendre, elliptic, associated Legendre, spherical "
        "harmonics) evaluated with scipy.special; KAN-favourable",
        SPECS,
        DEFAULT_CONFIG,
        make_special_function_task,
    )
)
