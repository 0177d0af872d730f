"""`symbolic`: targets against independent references (a float64 `math` loop of the formulas, pykan's Feynman
table), sampling, splits, batch order and metrics."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.special as sp
import torch

from mamba_kan.errors import UserError
from mamba_kan.tasks import make_task
from mamba_kan.tasks.symbolic import FEYNMAN_IDS, SPECS

# the formulas of the issue / KAN paper §3.1, written independently as scalar float64 `math` code
SCALAR_REFERENCE = {
    "sin": lambda v: math.sin(v[0]),
    "cos": lambda v: math.cos(v[0]),
    "exp": lambda v: math.exp(v[0]),
    "log": lambda v: math.log(v[0]),
    "sqrt": lambda v: math.sqrt(v[0]),
    "bessel_j0_20x": lambda v: float(sp.j0(20 * v[0])),
    "exp_sin": lambda v: math.exp(math.sin(math.pi * v[0]) + v[1] ** 2),
    "xy": lambda v: v[0] * v[1],
    "exp_sin_4d": lambda v: math.exp(
        0.5 * (math.sin(math.pi * (v[0] ** 2 + v[1] ** 2)) + math.sin(math.pi * (v[2] ** 2 + v[3] ** 2)))
    ),
    "exp_mean_sin2_100d": lambda v: math.exp(sum(math.sin(math.pi * t / 2) ** 2 for t in v) / 100),
    "sin_exp_cos": lambda v: math.sin(math.exp(math.cos(v[0]))),
    "nested_trig": lambda v: math.cos(2 * math.sin(3 * math.cos(v[0]))),
    "nested_trig_2d": lambda v: math.sin(math.exp(math.cos(math.pi * v[0])) + math.cos(math.pi * v[1])),
}
KAN_TOY_BOXES = {"exp_sin": 2, "xy": 2, "exp_sin_4d": 4, "exp_mean_sin2_100d": 100, "bessel_j0_20x": 1}


def _pykan_feynman():
    """pykan's kan/feynman.py loaded on its own (importing the kan package pulls in much more)."""
    spec = importlib.util.find_spec("kan")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pykan not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "feynman.py"
    module_spec = importlib.util.spec_from_file_location("pykan_feynman", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_feynman_dataset


@pytest.mark.parametrize("config", sorted(SCALAR_REFERENCE))
def test_targets_equal_a_float64_loop_of_the_formula(config):
    task = make_task(f"symbolic/{config}", 0, n_train=50, n_val=5, n_test=50)
    for split in ("train", "test"):
        x, y = task.raw(split)
        expected = np.array([SCALAR_REFERENCE[config](list(row)) for row in x])
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-14)


def test_kan_paper_toy_functions_use_the_unit_box():
    for config, n_vars in KAN_TOY_BOXES.items():
        assert SPECS[config].ranges == ((-1.0, 1.0),) * n_vars


def test_at_least_ten_feynman_equations_match_pykan_formulas_and_ranges():
    get = _pykan_feynman()
    assert len(FEYNMAN_IDS) >= 10
    for eq_id in FEYNMAN_IDS:
        _, _, f, ranges = get(eq_id)
        spec = SPECS[f"feynman_{eq_id}"]
        if not isinstance(ranges[0], list | tuple):  # pykan writes one shared range as [lo, hi]
            ranges = [ranges] * spec.n_vars
        pykan_box = np.array([[float(lo), float(hi)] for lo, hi in ranges])  # bounds may be torch tensors
        np.testing.assert_allclose(np.array(spec.ranges), pykan_box, rtol=1e-7, err_msg=eq_id)
        task = make_task(f"symbolic/feynman_{eq_id}", 1, n_train=200, n_val=5, n_test=5)
        x, y = task.raw("train")
        reference = f(torch.tensor(x, dtype=torch.float64)).reshape(-1).numpy()
        # rtol 1e-7: pykan's pi is torch.tensor(torch.pi), a float32 value
        np.testing.assert_allclose(y, reference, rtol=1e-7, atol=1e-12, err_msg=eq_id)


def test_inputs_are_uniform_in_the_box_and_scaled_affinely_to_unit_interval():
    task = make_task("symbolic/feynman_I.30.3", 0, n_train=4000, n_val=10, n_test=10)
    x, _ = task.raw("train")
    lows = np.array([r[0] for r in SPECS["feynman_I.30.3"].ranges])
    highs = np.array([r[1] for r in SPECS["feynman_I.30.3"].ranges])
    assert np.all(x >= lows) and np.all(x <= highs)
    u = (x - lows) / (highs - lows)
    # uniform: mean 1/2, variance 1/12 per coordinate (4000 samples: se of the mean ~0.005)
    np.testing.assert_allclose(u.mean(axis=0), 0.5, atol=0.025)
    np.testing.assert_allclose(u.var(axis=0), 1 / 12, atol=0.01)
    inputs = torch.cat([b.inputs for b in task.eval_batches("test", 4)])
    xt, _ = task.raw("test")
    np.testing.assert_allclose(inputs.numpy(), 2 * (xt - lows) / (highs - lows) - 1, atol=1e-6)
    raw = make_task("symbolic/feynman_I.30.3", 0, n_train=10, n_val=10, n_test=10, scale_inputs=False)
    np.testing.assert_allclose(next(raw.eval_batches("test", 10)).inputs.numpy(), xt, rtol=1e-6)


def test_default_sizes_follow_the_kan_paper_and_are_configurable():
    task = make_task("symbolic", 0)
    assert [task.raw(s)[0].shape[0] for s in ("train", "val", "test")] == [1000, 500, 1000]
    task = make_task("symbolic/xy", 0, n_train=30, n_val=7, n_test=11)
    assert [task.raw(s)[0].shape[0] for s in ("train", "val", "test")] == [30, 7, 11]
    assert sum(b.size for b in task.eval_batches("test", 4)) == 11


def test_train_val_test_never_share_a_sample():
    task = make_task("symbolic/exp_sin", 0)
    rows = {s: {tuple(r) for r in task.raw(s)[0]} for s in ("train", "val", "test")}
    assert (
        not rows["train"] & rows["val"]
        and not rows["train"] & rows["test"]
        and not rows["val"] & rows["test"]
    )


def test_each_epoch_visits_every_training_sample_once_in_a_seeded_order():
    task = make_task("symbolic/xy", 0, n_train=40, n_val=5, n_test=5)
    x_train = torch.from_numpy(
        (2.0 * (task.raw("train")[0] + 1.0) / 2.0 - 1.0).astype(np.float32)
    )  # scaled box
    seen = torch.cat([task.train_batch(step, 8).inputs for step in range(10)])  # 80 = two epochs
    for epoch in (seen[:40], seen[40:]):
        assert sorted(map(tuple, epoch.tolist())) == sorted(map(tuple, x_train.tolist()))
    assert not torch.equal(seen[:40], seen[40:])  # a new permutation per epoch
    assert not torch.equal(seen[:40], x_train)  # shuffled
    # a batch straddling the epoch boundary takes the end of one permutation and the start of the next
    straddle = task.train_batch(3, 12)  # positions 36..47
    assert torch.equal(straddle.inputs, torch.cat([seen[36:40], seen[40:48]]))


def test_metrics_equal_numpy_mse_rmse_r2_for_a_fixed_predictor():
    task = make_task("symbolic/sin", 0, n_train=10, n_val=10, n_test=300)
    metrics = task.evaluate(lambda x: 0.5 * x, "test", 64)  # predicts 0.5 * scaled input
    inputs = torch.cat([b.inputs for b in task.eval_batches("test", 64)]).double().numpy()
    y = task.raw("test")[1]
    err = 0.5 * inputs[:, 0] - y
    mse = float(np.mean(err**2))
    assert metrics["mse"] == pytest.approx(mse, rel=1e-5)
    assert metrics["rmse"] == pytest.approx(math.sqrt(mse), rel=1e-5)
    assert metrics["r2"] == pytest.approx(1 - mse / np.var(y), rel=1e-5)
    assert task.primary_metric == "mse" and not task.higher_is_better


def test_standardize_uses_training_statistics_only():
    task = make_task("symbolic/exp", 2, n_train=100, n_val=50, n_test=50, standardize=True)
    y_train, y_test = task.raw("train")[1], task.raw("test")[1]
    assert task.target_mean == pytest.approx(y_train.mean()) and task.target_std == pytest.approx(
        y_train.std()
    )
    targets = torch.cat([b.targets for b in task.eval_batches("test", 16)]).squeeze(1).double().numpy()
    np.testing.assert_allclose(targets, (y_test - y_train.mean()) / y_train.std(), rtol=1e-5, atol=1e-6)


def test_bad_option_values_are_user_errors():
    with pytest.raises(UserError, match="standardize must be true or false"):
        make_task("symbolic", 0, standardize="maybe")


@pytest.mark.parametrize("name", ["symbolic/exp_sin", "symbolic/exp_mean_sin2_100d"])
def test_constant_baseline_and_nmse(name):
    task = make_task(name, 0, n_train=300, n_val=50, n_test=400)
    y_train = task.raw("train")[1]
    mean = float(y_train.mean())

    def constant(x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 1), mean, dtype=torch.float64)

    metrics = task.evaluate(constant, "test", 128)
    y_test = task.raw("test")[1]
    assert metrics["baseline_constant"] == pytest.approx(np.mean((y_test - mean) ** 2), rel=1e-9)
    assert metrics["mse"] == pytest.approx(metrics["baseline_constant"], rel=1e-5)  # float32 targets
    # nmse = MSE / test-target variance: the constant predictor scores ~1 whatever the target's scale
    assert metrics["nmse"] == pytest.approx(np.mean((y_test - mean) ** 2) / y_test.var(), rel=1e-5)
    assert metrics["nmse"] == pytest.approx(1.0, abs=0.05)
