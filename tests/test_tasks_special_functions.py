"""`special_functions`: every target equals scipy.special's value (called here directly), spherical harmonics
also against closed forms (catches the sph_harm -> sph_harm_y argument-order change), scaling, domains."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sp
import torch

from mamba_kan.tasks import make_task
from mamba_kan.tasks.special_functions import SPECS


def _sph(n, m):
    """Y_n^m(polar, azimuth) with the argument order of whichever scipy is installed."""
    if hasattr(sp, "sph_harm_y"):
        return lambda x: sp.sph_harm_y(n, m, x[:, 0], x[:, 1]).real
    return lambda x: sp.sph_harm(m, n, x[:, 1], x[:, 0]).real  # old scipy: (m, n, azimuth, polar)


SCIPY_REFERENCE = {
    "bessel_j0": lambda x: sp.jv(0, x[:, 0]),
    "bessel_j1": lambda x: sp.jv(1, x[:, 0]),
    "legendre_p2": lambda x: sp.legendre(2)(x[:, 0]),
    "legendre_p3": lambda x: sp.legendre(3)(x[:, 0]),
    "legendre_p4": lambda x: sp.legendre(4)(x[:, 0]),
    "ellipj_sn": lambda x: sp.ellipj(x[:, 0], x[:, 1])[0],
    "ellipj_cn": lambda x: sp.ellipj(x[:, 0], x[:, 1])[1],
    "ellipj_dn": lambda x: sp.ellipj(x[:, 0], x[:, 1])[2],
    "ellipkinc": lambda x: sp.ellipkinc(x[:, 0], x[:, 1]),
    "ellipeinc": lambda x: sp.ellipeinc(x[:, 0], x[:, 1]),
    "jv": lambda x: sp.jv(x[:, 0], x[:, 1]),
    "yv": lambda x: sp.yv(x[:, 0], x[:, 1]),
    "kv": lambda x: sp.kv(x[:, 0], x[:, 1]),
    "iv": lambda x: sp.iv(x[:, 0], x[:, 1]),
    "lpmv_m0": lambda x: sp.lpmv(0, x[:, 0], x[:, 1]),
    "lpmv_m1": lambda x: sp.lpmv(1, x[:, 0], x[:, 1]),
    "lpmv_m2": lambda x: sp.lpmv(2, x[:, 0], x[:, 1]),
    **{f"sph_harm_m{m}_n{n}": _sph(n, m) for m, n in ((0, 1), (1, 1), (0, 2), (1, 2), (2, 2))},
}

# closed forms (polar t, azimuth p), Condon-Shortley phase as in scipy: an independent check of the angle order
CLOSED_FORM = {
    "sph_harm_m0_n1": lambda t, p: 0.5 * np.sqrt(3 / np.pi) * np.cos(t),
    "sph_harm_m1_n1": lambda t, p: -0.5 * np.sqrt(3 / (2 * np.pi)) * np.sin(t) * np.cos(p),
    "sph_harm_m0_n2": lambda t, p: 0.25 * np.sqrt(5 / np.pi) * (3 * np.cos(t) ** 2 - 1),
    "sph_harm_m1_n2": lambda t, p: -0.5 * np.sqrt(15 / (2 * np.pi)) * np.sin(t) * np.cos(t) * np.cos(p),
    "sph_harm_m2_n2": lambda t, p: 0.25 * np.sqrt(15 / (2 * np.pi)) * np.sin(t) ** 2 * np.cos(2 * p),
}


def test_the_issue_and_kan_paper_functions_are_all_present():
    assert set(SCIPY_REFERENCE) == set(SPECS)


@pytest.mark.parametrize("config", sorted(SCIPY_REFERENCE))
def test_every_target_equals_scipys_value(config):
    task = make_task(f"special_functions/{config}", 0, n_train=300, n_val=20, n_test=300)
    for split in ("train", "val", "test"):
        x, y = task.raw(split)
        np.testing.assert_allclose(y, SCIPY_REFERENCE[config](x), rtol=1e-12, atol=1e-14)
        assert np.all(np.isfinite(y))
        # the domain is the documented box
        lows, highs = np.array(SPECS[config].ranges).T
        assert np.all(x >= lows) and np.all(x <= highs)


@pytest.mark.parametrize("config", sorted(CLOSED_FORM))
def test_spherical_harmonics_match_closed_forms(config):
    task = make_task(f"special_functions/{config}", 0, n_train=200, n_val=5, n_test=5)
    x, y = task.raw("train")
    np.testing.assert_allclose(y, CLOSED_FORM[config](x[:, 0], x[:, 1]), rtol=1e-10, atol=1e-12)


def test_legendre_matches_closed_form():
    x, y = make_task("special_functions/legendre_p3", 0, n_train=100, n_val=5, n_test=5).raw("train")
    np.testing.assert_allclose(y, 0.5 * (5 * x[:, 0] ** 3 - 3 * x[:, 0]), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("config", ["iv", "lpmv_m2"])
def test_large_range_targets_are_standardised_with_training_statistics(config):
    task = make_task(f"special_functions/{config}", 0, n_train=400, n_val=50, n_test=100)
    assert task.standardize
    _, y_train = task.raw("train")
    _, y_test = task.raw("test")
    targets = torch.cat([b.targets for b in task.eval_batches("test", 32)]).squeeze(1).double().numpy()
    np.testing.assert_allclose(targets, (y_test - y_train.mean()) / y_train.std(), rtol=1e-5, atol=1e-5)
    # and the raw scale is what makes it necessary: the raw targets span far more than the unit scale
    assert np.ptp(y_train) > 8


def test_default_config_is_the_raw_scale():
    task = make_task("special_functions", 0, n_train=50, n_val=5, n_test=5)
    assert task.name == "special_functions/jv" and not task.standardize
    x, y = task.raw("train")
    targets = torch.cat([task.train_batch(s, 10).targets for s in range(5)]).squeeze(1)
    assert sorted(targets.tolist()) == pytest.approx(sorted(y.astype(np.float32).tolist()))
