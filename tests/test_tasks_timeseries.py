"""`timeseries`: chronological splits, training-only normalisation, MASE, the AR floor, the generators and the
real series, each against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from mamba_kan.errors import UserError
from mamba_kan.tasks import make_task
from mamba_kan.tasks.timeseries import (
    AR_COEFFS,
    LORENZ_DT,
    LORENZ_EVERY,
    MG_DT,
    MG_TAU,
    SERIES,
    lorenz_trajectory,
    mackey_glass_trajectory,
)

SMALL = {"context": 32, "horizon": 8, "series_length": 800, "eval_windows": 30}


def test_normalisation_uses_the_training_part_only():
    # sine_trend rises through the series, so statistics of the whole series would differ clearly
    task = make_task("timeseries/sine_trend", 0, **SMALL)
    n_train = task.bounds["train"][1]
    assert n_train == 800 - 2 * 120
    train = task.raw_series[:n_train]
    assert task.norm_mean == pytest.approx(train.mean()) and task.norm_std == pytest.approx(train.std())
    assert abs(task.raw_series.mean() - train.mean()) > 0.1
    np.testing.assert_allclose(task.series[:n_train], (train - train.mean()) / train.std())


def test_changing_only_the_future_changes_neither_normaliser_nor_training_batches(monkeypatch):
    import mamba_kan.tasks.timeseries as ts

    base = make_task("timeseries/elnino", 0, context=64, horizon=8)
    n_train = base.bounds["train"][1]
    future_shifted = base.raw_series.copy()
    future_shifted[n_train:] += 1000.0
    monkeypatch.setattr(ts, "_real_series", lambda name: future_shifted.copy())
    shifted = make_task("timeseries/elnino", 0, context=64, horizon=8)
    assert (shifted.norm_mean, shifted.norm_std, shifted.mase_scale) == (
        base.norm_mean,
        base.norm_std,
        base.mase_scale,
    )
    for step in range(5):
        assert torch.equal(shifted.train_batch(step, 16).inputs, base.train_batch(step, 16).inputs)
    assert not torch.equal(
        next(shifted.eval_batches("test", 4)).targets, next(base.eval_batches("test", 4)).targets
    )


def test_real_series_statistics_come_from_the_first_70_percent():
    import statsmodels.datasets as smd

    raw = smd.co2.load_pandas().data["co2"].interpolate().bfill().to_numpy()
    task = make_task("timeseries/co2", 0, context=128, horizon=10)
    n_train = len(raw) - 2 * round(0.15 * len(raw))
    assert task.bounds["train"] == (0, n_train)
    assert task.norm_mean == pytest.approx(raw[:n_train].mean()) and task.norm_std == pytest.approx(
        raw[:n_train].std()
    )
    assert not np.isnan(task.raw_series).any() and len(task.raw_series) == 2284


def test_windows_are_chronological_and_targets_never_cross_splits():
    task = make_task("timeseries/lorenz", 0, **SMALL)
    lo_val, hi_val = task.bounds["val"]
    lo_test, hi_test = task.bounds["test"]
    for step in range(20):
        b = task.train_batch(step, 16)
        start = b.extra["target_start"].numpy()
        assert np.all(start + task.horizon <= task.bounds["train"][1])
        _check_window_content(task, b)
    for split, (lo, hi) in (("val", (lo_val, hi_val)), ("test", (lo_test, hi_test))):
        starts = torch.cat([b.extra["target_start"] for b in task.eval_batches(split, 7)]).numpy()
        assert starts.min() == lo and starts.max() == hi - task.horizon  # first and last window included
        assert len(starts) == task.eval_windows and np.all(np.diff(starts) > 0)
        for b in task.eval_batches(split, 7):
            _check_window_content(task, b)


def _check_window_content(task, batch):
    """inputs are the `context` normalised values just before the target start, targets the next `horizon`."""
    for row, t0 in enumerate(batch.extra["target_start"].tolist()):
        np.testing.assert_allclose(batch.inputs[row].numpy(), task.series[t0 - task.context : t0], rtol=1e-6)
        np.testing.assert_allclose(batch.targets[row].numpy(), task.series[t0 : t0 + task.horizon], rtol=1e-6)


def test_mase_equals_hyndman_definition_for_a_seasonal_naive_forecaster():
    task = make_task(
        "timeseries/multi_seasonal", 0, context=200, horizon=10, series_length=3000, eval_windows=40
    )
    m = SERIES["multi_seasonal"].season  # 168 <= context: the forecaster can look back one season

    def seasonal_naive(x: torch.Tensor) -> torch.Tensor:
        return x[:, -m : -m + task.horizon]

    metrics = task.evaluate(seasonal_naive, "test", 16)
    # float64 loop: scale = mean_{t>=m} |z_t - z_{t-m}| over the training part; MASE = mean |e| / scale
    z, n_train = task.series, task.bounds["train"][1]
    scale = sum(abs(z[t] - z[t - m]) for t in range(m, n_train)) / (n_train - m)
    errors = []
    for b in task.eval_batches("test", 16):
        for t0 in b.extra["target_start"].tolist():
            errors += [abs(z[t0 - m + h] - z[t0 + h]) for h in range(task.horizon)]
    assert metrics["mase"] == pytest.approx(np.mean(errors) / scale, rel=1e-5)
    assert metrics["mae"] == pytest.approx(np.mean(errors), rel=1e-5)
    assert {"mse", "rmse", "mae", "r2", "mase"} <= set(metrics)


def test_ar_floor_matches_statsmodels_psi_weights_and_the_optimal_forecast():
    from statsmodels.tsa.arima_process import arma2ma

    task = make_task("timeseries/ar", 3, context=64, horizon=10, series_length=40000, eval_windows=2000)
    psi = arma2ma(np.r_[1.0, -np.array(AR_COEFFS)], [1.0], lags=task.horizon)
    floor = np.mean(np.cumsum(psi**2)) / task.norm_std**2
    assert task.expected_floor == pytest.approx(floor, rel=1e-12)
    assert task.reference_values("test")["floor_expected"] == pytest.approx(floor, rel=1e-12)

    def optimal(x: torch.Tensor) -> torch.Tensor:
        # recursive conditional expectation on the raw scale, then back to the normalised scale
        y = x.double() * task.norm_std + task.norm_mean
        a, b = y[:, -1], y[:, -2]
        out = []
        for _ in range(task.horizon):
            a, b = AR_COEFFS[0] * a + AR_COEFFS[1] * b, a
            out.append(a)
        return (torch.stack(out, 1) - task.norm_mean) / task.norm_std

    metrics = task.evaluate(optimal, "test", 256)
    # the realised floor is the optimal forecast's MSE on these very windows (float32 inputs: ~1e-6 relative)
    assert metrics["mse"] == pytest.approx(task.floor, rel=1e-4)
    assert metrics["floor"] == task.floor and metrics["gap_to_floor"] == pytest.approx(0.0, abs=1e-4)
    # 2000 overlapping windows over 6000 points: the realised MSE is within ~10% of its expectation
    assert task.floor == pytest.approx(floor, rel=0.12)


def test_forecast_baselines_are_the_mse_of_the_naive_forecasts():
    task = make_task("timeseries/elnino", 0, context=48, horizon=12)
    m = task.spec.season  # 12

    def naive(x: torch.Tensor) -> torch.Tensor:
        return x[:, -1:].expand(-1, task.horizon)

    def seasonal(x: torch.Tensor) -> torch.Tensor:
        return x[:, -m:][:, : task.horizon]  # horizon 12 = one season: the last season repeated

    def constant(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], task.horizon)  # the training mean on the normalised scale

    refs = task.reference_values("test")
    assert task.evaluate(naive, "test", 64)["mse"] == pytest.approx(refs["baseline_naive"], rel=1e-5)
    assert task.evaluate(seasonal, "test", 64)["mse"] == pytest.approx(
        refs["baseline_seasonal_naive"], rel=1e-5
    )
    metrics = task.evaluate(constant, "test", 64)
    assert metrics["mse"] == pytest.approx(refs["baseline_constant"], rel=1e-5)
    assert metrics["nmse"] == pytest.approx(1 - metrics["r2"]) and "floor" not in metrics
    # the seasonal-naive forecast is a strong baseline for a monthly temperature series
    assert refs["baseline_seasonal_naive"] < refs["baseline_constant"] < refs["baseline_naive"]


def test_lorenz_generator_converges_to_scipy_solve_ivp_at_fourth_order():
    start = (1.0, 1.0, 1.0)

    def rhs(_t, s):
        x, y, z = s
        return [10 * (y - x), x * (28 - z) - y, x * y - 8 / 3 * z]

    times = LORENZ_DT * LORENZ_EVERY * np.arange(1, 101)  # 3 time units
    ref = solve_ivp(rhs, (0, times[-1]), start, t_eval=times, rtol=1e-12, atol=1e-12, method="DOP853").y[0]
    err = {
        k: np.abs(lorenz_trajectory(start, 100, LORENZ_DT / k, LORENZ_EVERY * k) - ref).max() for k in (1, 2)
    }
    assert err[1] < 5e-3  # the default step is accurate over several Lyapunov times...
    assert 10 < err[1] / err[2] < 24  # ...and halving it divides the error by ~2^4: classical RK4


def test_mackey_glass_generator_matches_a_plain_euler_loop():
    rng = np.random.default_rng(0)
    lag = int(round(MG_TAU / MG_DT))
    history = 1.2 + 0.1 * rng.standard_normal(lag + 1)
    ours = mackey_glass_trajectory(history, 60)
    xs = list(history)  # x on the dt grid, oldest first; x(t - tau) = xs[-1 - lag]
    ref = []
    for k in range(60 * 10):
        xs.append(xs[-1] + MG_DT * (0.2 * xs[-1 - lag] / (1 + xs[-1 - lag] ** 10) - 0.1 * xs[-1]))
        if (k + 1) % 10 == 0:
            ref.append(xs[-1])
    np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_real_series_ship_with_statsmodels_and_keep_fixed_splits_across_seeds():
    for name, length in (("co2", 2284), ("elnino", 732), ("sunspots", 309)):
        context = 64 if name == "sunspots" else 128
        a = make_task(f"timeseries/{name}", 0, context=context, horizon=10)
        b = make_task(f"timeseries/{name}", 1, context=context, horizon=10)
        assert len(a.raw_series) == length
        assert np.array_equal(a.raw_series, b.raw_series)
        assert torch.equal(
            next(a.eval_batches("test", 1000)).inputs, next(b.eval_batches("test", 1000)).inputs
        )
        assert not torch.equal(a.train_batch(0, 8).inputs, b.train_batch(0, 8).inputs)  # batch order differs


def test_elnino_is_the_monthly_series_in_calendar_order():
    import statsmodels.datasets as smd

    frame = smd.elnino.load_pandas().data
    task = make_task("timeseries/elnino", 0, context=128, horizon=10)
    assert task.raw_series[:12].tolist() == frame.iloc[0, 1:].tolist()  # 1950 JAN..DEC
    assert task.raw_series[12] == frame.loc[1, "JAN"]


@pytest.mark.parametrize(
    ("config", "options", "message"),
    [
        ("lorenz", {"context": 10, "horizon": 20}, r"context \(10\) must be >= horizon \(20\)"),
        ("sunspots", {"context": 256}, "training part has 217 of 309 points.*use a context <= 197"),
        ("lorenz", {"context": 512, "series_length": 500}, "or a larger series_length"),
        ("co2", {"test_fraction": 0.9}, r"test_fraction must be a finite number in \[0.0, 0.5\]"),
        ("lorenz", {"noise": -1}, "noise must be"),
    ],
)
def test_bad_settings_are_user_errors(config, options, message):
    with pytest.raises(UserError, match=message):
        make_task(f"timeseries/{config}", 0, **options)


def test_the_standard_context_and_horizon_grid_works_on_synthetic_and_co2():
    for context in (128, 256, 512):
        for horizon in (10, 20):
            for name in ("mackey_glass", "co2"):
                task = make_task(
                    f"timeseries/{name}", 0, context=context, horizon=horizon, series_length=3000
                )
                b = task.train_batch(0, 2)
                assert b.inputs.shape == (2, context) and b.targets.shape == (2, horizon)
                assert task.input_spec.max_len == context and task.output_spec.horizon == horizon


def test_noise_level_is_relative_to_the_signal():
    clean = make_task("timeseries/sine_trend", 0, noise=0.0, series_length=2000, context=64, horizon=8)
    noisy = make_task("timeseries/sine_trend", 0, noise=0.1, series_length=2000, context=64, horizon=8)
    resid = noisy.raw_series - clean.raw_series
    assert resid.std() == pytest.approx(0.1 * clean.raw_series.std(), rel=0.1)
    assert math.isclose(float(np.mean(resid)), 0.0, abs_tol=0.02)
