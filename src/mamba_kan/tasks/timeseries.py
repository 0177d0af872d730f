"""``timeseries``: univariate forecasting of the next ``horizon`` values from the last ``context`` values.

Series
- synthetic (regenerated from the seed; iid Gaussian observation noise with std ``noise`` x the signal's std):
  ``sine_trend`` (linear trend + period-24 sine), ``multi_seasonal`` (periods 24 and 168), ``lorenz`` (x-coordinate
  of the Lorenz-63 system, sigma 10, rho 28, beta 8/3, RK4 with dt 0.01, one sample every 3 steps),
  ``mackey_glass`` (tau 17, beta 0.2, gamma 0.1, n 10, Euler dt 0.1, one sample per time unit), ``ar`` (the AR(2)
  process y_t = 1.5 y_{t-1} - 0.75 y_{t-2} + e_t, e_t ~ N(0, 1): its noise is the innovation, quasi-period 12);
- real, shipped inside statsmodels (no download): ``co2`` (Mauna Loa weekly CO2 1958-2001, 2284 points, the 59
  missing weeks filled by linear interpolation), ``elnino`` (monthly Nino sea-surface temperature 1950-2010, 732
  points), ``sunspots`` (yearly sunspot numbers 1700-2008, 309 points: use context <= 128).

Splits are chronological: the first 70% of the series is the training part, then 15% validation, 15% test
(``val_fraction``/``test_fraction``). The series is normalised with the mean and standard deviation of the
training part only. Training windows lie wholly inside the training part (start drawn from (seed, step));
a validation/test window has its *targets* inside its part and takes its context from the values just before
(which may lie in an earlier part -- the past is observed at forecast time); at most ``eval_windows`` evenly
spaced windows per part.

Metrics on the normalised scale: MSE (primary), RMSE, MAE, R^2, and MASE (Hyndman & Koehler 2006): MAE divided
by the in-sample MAE of the seasonal-naive forecast y_t = y_{t-m} over the training part (m = the series'
season: 24, 168, 12, 52, 11; 1 = naive for the chaotic series), and ``nmse`` (MSE / variance of the split's
targets, = 1 - R^2).

Baselines on the split's actual evaluation windows (MSE, like the primary metric): ``baseline_constant`` (the
training mean, 0 on the normalised scale), ``baseline_naive`` (repeat the last observed value) and, for seasonal
series, ``baseline_seasonal_naive`` (y_{T+h} = y_{T+h-m ceil(h/m)}). For ``ar`` the generator is known, so ``floor``
is the *realised* MSE of the optimal forecast (the AR recursion from the last two observed values) on the split's
windows, and ``floor_expected`` its expectation sigma^2 mean_h sum_{j<h} psi_j^2 / s_train^2 (psi = the MA(inf)
weights); on a finite test set the two differ by sampling noise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from mamba_kan.errors import UserError
from mamba_kan.io_spec import ContinuousInput, ForecastOutput
from mamba_kan.tasks.base import Batch, MetricState, Task
from mamba_kan.tasks.common import (
    as_float,
    as_int,
    check_seed,
    check_split,
    check_step,
    make_rng,
    merge_options,
)
from mamba_kan.tasks.registry import FamilyInfo, register_family

OPTIONS: dict[str, Any] = {
    "context": 128,  # the short end of the standard grid, so a laptop runs it; the paper preset uses 256
    "horizon": 20,
    "series_length": 10000,
    "noise": 0.05,
    "val_fraction": 0.15,
    "test_fraction": 0.15,
    "eval_windows": 256,
}
OPTION_HELP: dict[str, str] = {
    "context": "input window length (standard grid: 128, 256, 512)",
    "horizon": "forecast horizon (standard grid: 10, 20); must be <= context",
    "series_length": "points generated for synthetic series (real series have their own length)",
    "noise": "observation-noise std relative to the signal std (synthetic series except ar)",
    "val_fraction": "chronological fraction of the series used for validation",
    "test_fraction": "chronological fraction of the series used for testing (the last part)",
    "eval_windows": "at most this many evenly spaced windows per validation/test part",
}

AR_COEFFS = (1.5, -0.75)  # stationary: characteristic roots of modulus 1/sqrt(0.75), quasi-period 12
BURN_IN = 1000


# --- series generators: (n points, rng) -> float64 (n,) -----------------------------------------------------
def sine_trend(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)
    return 2.0 * t / n + np.sin(2 * np.pi * t / 24 + rng.uniform(0, 2 * np.pi))


def multi_seasonal(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    return np.sin(2 * np.pi * t / 24 + phase[0]) + 0.5 * np.sin(2 * np.pi * t / 168 + phase[1])


LORENZ_DT, LORENZ_EVERY = 0.01, 3


def lorenz(n: int, rng: np.random.Generator) -> np.ndarray:
    """x(t) of Lorenz-63 from a seeded start near (1, 1, 1), after BURN_IN discarded samples."""
    start = tuple(float(v) for v in 1.0 + rng.normal(size=3))
    return lorenz_trajectory(start, n + BURN_IN)[BURN_IN:]


def lorenz_trajectory(
    state: tuple[float, float, float], n: int, dt: float = LORENZ_DT, every: int = LORENZ_EVERY
) -> np.ndarray:
    """x-coordinate after each ``every`` classical RK4 steps of ``dt`` (sigma 10, rho 28, beta 8/3), shape (n,).

    Scalar Python floats: for a 3-vector they are several times faster than numpy calls.
    """
    sigma, rho, beta = 10.0, 28.0, 8.0 / 3.0
    x, y, z = state

    def f(x: float, y: float, z: float) -> tuple[float, float, float]:
        return sigma * (y - x), x * (rho - z) - y, x * y - beta * z

    out = np.empty(n)
    h2, h6 = dt / 2, dt / 6
    for i in range(n):
        for _ in range(every):
            k1 = f(x, y, z)
            k2 = f(x + h2 * k1[0], y + h2 * k1[1], z + h2 * k1[2])
            k3 = f(x + h2 * k2[0], y + h2 * k2[1], z + h2 * k2[2])
            k4 = f(x + dt * k3[0], y + dt * k3[1], z + dt * k3[2])
            x += h6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            y += h6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
            z += h6 * (k1[2] + 2 * k2[2] + 2 * k3[2] + k4[2])
        out[i] = x
    return out


MG_TAU, MG_BETA, MG_GAMMA, MG_POWER, MG_DT = 17.0, 0.2, 0.1, 10, 0.1


def mackey_glass(n: int, rng: np.random.Generator) -> np.ndarray:
    """Mackey-Glass from a seeded history near 1.2, after BURN_IN discarded samples."""
    history = 1.2 + 0.1 * rng.standard_normal(int(round(MG_TAU / MG_DT)) + 1)
    return mackey_glass_trajectory(history, n + BURN_IN)[BURN_IN:]


def mackey_glass_trajectory(history: np.ndarray, n: int, dt: float = MG_DT) -> np.ndarray:
    """dx/dt = beta x(t - tau) / (1 + x(t - tau)^10) - gamma x(t) by Euler steps of ``dt``; one sample per time
    unit, shape (n,). ``history``: x at the tau/dt + 1 grid points of [-tau, 0], oldest first."""
    lag = int(round(MG_TAU / dt))
    per_sample = int(round(1.0 / dt))
    if len(history) != lag + 1:
        raise ValueError(f"history needs {lag + 1} values, got {len(history)}")
    ring = [float(v) for v in history]  # ring[head] = x(t - tau); Python floats beat numpy for scalars
    x = ring[-1]
    head = 0
    out = np.empty(n)
    for i in range(n):
        for _ in range(per_sample):
            delayed = ring[head]
            x = x + dt * (MG_BETA * delayed / (1.0 + delayed**MG_POWER) - MG_GAMMA * x)
            ring[head] = x
            head = (head + 1) % (lag + 1)
        out[i] = x
    return out


def ar_process(n: int, rng: np.random.Generator) -> np.ndarray:
    """y_t = phi_1 y_{t-1} + phi_2 y_{t-2} + e_t from zero start, BURN_IN steps discarded (a plain loop: cheaper
    than importing scipy.signal for one filter)."""
    e = rng.standard_normal(n + BURN_IN).tolist()
    phi1, phi2 = AR_COEFFS
    out = np.empty(n + BURN_IN)
    y1 = y2 = 0.0
    for t, et in enumerate(e):
        y1, y2 = phi1 * y1 + phi2 * y2 + et, y1
        out[t] = y1
    return out[BURN_IN:]


def ar_psi_weights(count: int, coeffs: tuple[float, ...] = AR_COEFFS) -> np.ndarray:
    """MA(inf) weights psi_0..psi_{count-1} of an AR(p): psi_0 = 1, psi_j = sum_i phi_i psi_{j-i}."""
    psi = np.zeros(count)
    psi[0] = 1.0
    for j in range(1, count):
        psi[j] = sum(phi * psi[j - i] for i, phi in enumerate(coeffs, start=1) if j - i >= 0)
    return psi


@functools.cache
def _real_series(name: str) -> np.ndarray:
    import statsmodels.api as sm

    if name == "co2":
        data = sm.datasets.co2.load_pandas().data["co2"]
        return data.interpolate(limit_direction="both").to_numpy(dtype=np.float64)
    if name == "elnino":
        data = sm.datasets.elnino.load_pandas().data.drop(columns="YEAR")
        return data.to_numpy(dtype=np.float64).reshape(-1)  # rows are years, columns months
    if name == "sunspots":
        return sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=np.float64)
    raise KeyError(name)


@dataclass(frozen=True)
class SeriesSpec:
    name: str
    description: str
    season: int  # seasonal-naive lag m for MASE (1 = plain naive)
    generate: Callable[[int, np.random.Generator], np.ndarray] | None = None  # None: a real series
    noisy: bool = True  # add observation noise (synthetic deterministic signals)


SERIES: dict[str, SeriesSpec] = {
    s.name: s
    for s in (
        SeriesSpec("sine_trend", "linear trend + sine (period 24) + noise", 24, sine_trend),
        SeriesSpec("multi_seasonal", "two seasonalities (periods 24 and 168) + noise", 168, multi_seasonal),
        SeriesSpec("lorenz", "Lorenz-63 x-coordinate (chaotic) + noise", 1, lorenz),
        SeriesSpec("mackey_glass", "Mackey-Glass delay equation, tau 17 (chaotic) + noise", 1, mackey_glass),
        SeriesSpec(
            "ar",
            "AR(2) process 1.5, -0.75 with N(0,1) innovations (known optimal MSE)",
            12,
            ar_process,
            False,
        ),
        SeriesSpec("co2", "Mauna Loa weekly CO2 1958-2001 (statsmodels), 2284 points", 52),
        SeriesSpec(
            "elnino", "monthly El Nino sea-surface temperature 1950-2010 (statsmodels), 732 points", 12
        ),
        SeriesSpec(
            "sunspots", "yearly sunspot numbers 1700-2008 (statsmodels), 309 points; context <= 128", 11
        ),
    )
}
DEFAULT_CONFIG = "lorenz"


class ForecastMetricState(MetricState):
    """Adds MASE: mean over windows of (mean_h |error|) / the window's seasonal-naive scale."""

    def __init__(self, spec: ForecastOutput) -> None:
        super().__init__(spec)
        self.mase_sum = 0.0
        self.windows = 0

    def update(self, output: torch.Tensor, batch: Batch) -> None:
        super().update(output, batch)
        abs_err = (output.double() - batch.targets.double()).abs().mean(dim=1)  # (B,)
        self.mase_sum += (abs_err / batch.extra["mase_scale"].double()).sum().item()
        self.windows += batch.size

    def compute(self) -> dict[str, float]:
        out = super().compute()
        out["mase"] = self.mase_sum / self.windows if self.windows else math.nan
        return out


class TimeSeriesTask(Task):
    """Forecast ``horizon`` values from ``context`` values (see the module docstring)."""

    family = "timeseries"
    primary_metric = "mse"
    higher_is_better = False

    def __init__(self, config: str, seed: int, **options: Any) -> None:
        super().__init__(config, check_seed(seed))
        self.spec = SERIES[config]
        self.context = as_int("context", options["context"])
        self.horizon = as_int("horizon", options["horizon"])
        if self.context < self.horizon:
            raise UserError(
                f"context ({self.context}) must be >= horizon ({self.horizon}) for task {self.name}"
            )
        self.noise = as_float("noise", options["noise"], 0.0)
        self.eval_windows = as_int("eval_windows", options["eval_windows"])
        val_fraction = as_float("val_fraction", options["val_fraction"], 0.0, 0.5)
        test_fraction = as_float("test_fraction", options["test_fraction"], 0.0, 0.5)

        self.raw_series = self._load(as_int("series_length", options["series_length"], 2))
        n = len(self.raw_series)
        n_val, n_test = round(n * val_fraction), round(n * test_fraction)
        self.bounds = {
            "train": (0, n - n_val - n_test),
            "val": (n - n_val - n_test, n - n_test),
            "test": (n - n_test, n),
        }
        self._check_lengths()
        train = self.raw_series[: self.n_train]
        # normalisation fitted on the training part only (no look-ahead into val/test)
        self.norm_mean, self.norm_std = float(train.mean()), float(train.std())
        if not self.norm_std > 0:
            raise UserError(f"task {self.name}: the training part is constant; cannot normalise")
        self.series = (self.raw_series - self.norm_mean) / self.norm_std
        m = self.spec.season
        self.mase_scale = float(
            np.mean(np.abs(self.series[m : self.n_train] - self.series[: self.n_train - m]))
        )
        self._windows = sliding_window_view(self.series.astype(np.float32), self.context + self.horizon)

    # --- data ----------------------------------------------------------------------------------------------
    def _load(self, length: int) -> np.ndarray:
        if self.spec.generate is None:
            return _real_series(self.spec.name).copy()
        rng = make_rng(self.seed, "timeseries", self.spec.name, "series")
        signal = self.spec.generate(length, rng)
        if self.spec.noisy and self.noise > 0:
            signal = signal + self.noise * signal.std() * rng.standard_normal(length)
        return signal

    @property
    def n_train(self) -> int:
        return self.bounds["train"][1]

    def _check_lengths(self) -> None:
        n = len(self.raw_series)
        need = self.context + self.horizon
        if self.n_train < need:
            raise UserError(
                f"task {self.name}: the training part has {self.n_train} of {n} points, fewer than context + "
                f"horizon = {need}; use a context <= {max(self.n_train - self.horizon, 0)}"
                + ("" if self.spec.generate is None else " or a larger series_length")
            )
        for split in ("val", "test"):
            lo, hi = self.bounds[split]
            if hi - lo < self.horizon:
                raise UserError(
                    f"task {self.name}: the {split} part has {hi - lo} points, fewer than horizon {self.horizon}; "
                    f"raise {split}_fraction or lower the horizon"
                )
        if self.n_train <= self.spec.season:
            raise UserError(f"task {self.name}: training part too short for the seasonal-naive scale")

    def _batch(self, starts: np.ndarray) -> Batch:
        windows = torch.from_numpy(self._windows[starts].copy())  # (B, context + horizon)
        size = len(starts)
        return Batch(
            windows[:, : self.context],
            windows[:, self.context :],
            extra={
                "mase_scale": torch.full((size,), self.mase_scale, dtype=torch.float32),
                "target_start": torch.from_numpy(starts + self.context),
            },
        )

    def train_batch(self, step: int, batch_size: int) -> Batch:
        check_step(step, batch_size)
        rng = make_rng(self.seed, "timeseries", self.spec.name, "train", step)
        last_start = self.n_train - self.context - self.horizon
        return self._batch(rng.integers(0, last_start, size=batch_size, endpoint=True))

    def eval_starts(self, split: str) -> np.ndarray:
        """Window starts of ``split``: targets inside the part, at most ``eval_windows`` evenly spaced."""
        check_split(split)
        lo, hi = self.bounds[split]
        first, last = lo, hi - self.horizon  # target start positions
        count = last - first + 1
        targets = np.arange(first, last + 1)
        if count > self.eval_windows:
            targets = np.unique(np.linspace(first, last, self.eval_windows).round().astype(np.int64))
        return targets - self.context

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        check_step(0, batch_size)
        starts = self.eval_starts(split)
        for i in range(0, len(starts), batch_size):
            yield self._batch(starts[i : i + batch_size])

    # --- ends and metrics ----------------------------------------------------------------------------------
    @property
    def input_spec(self) -> ContinuousInput:
        return ContinuousInput(max_len=self.context)

    @property
    def output_spec(self) -> ForecastOutput:
        return ForecastOutput(horizon=self.horizon)

    @property
    def tokens_per_sample(self) -> int:
        return self.context

    @property
    def expected_floor(self) -> float | None:
        """ar: expected MSE of the optimal forecast on the normalised scale; None for other series."""
        if self.spec.name != "ar":
            return None
        psi2 = np.cumsum(ar_psi_weights(self.horizon) ** 2)  # forecast-error variance at h = 1..H (sigma = 1)
        return float(psi2.mean() / self.norm_std**2)

    def _eval_targets(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Target indices (n_windows, H) into the series and the index of each window's last observed value."""
        starts = self.eval_starts(split)
        last = starts + self.context - 1
        return last[:, None] + np.arange(1, self.horizon + 1)[None, :], last

    def ar_optimal_forecast(self, last: np.ndarray) -> np.ndarray:
        """(n,) indices of the last observed values -> (n, H) optimal ar forecasts on the normalised scale.

        The process has mean 0, so E[y_{T+h} | past] follows the AR recursion from y_T, y_{T-1} (raw scale)."""
        phi1, phi2 = AR_COEFFS
        y1, y2 = self.raw_series[last], self.raw_series[np.maximum(last - 1, 0)]
        out = np.empty((len(last), self.horizon))
        for h in range(self.horizon):
            y1, y2 = phi1 * y1 + phi2 * y2, y1
            out[:, h] = y1
        return (out - self.norm_mean) / self.norm_std

    def compute_reference_values(self, split: str) -> dict[str, float]:
        """Baselines (and the ar floor) on the split's evaluation windows; see the module docstring."""
        check_split(split)
        index, last = self._eval_targets(split)
        y = self.series[index]  # (n, H) normalised targets, float64
        out = {
            "baseline_constant": float(np.mean(y**2)),
            "baseline_naive": float(np.mean((y - self.series[last][:, None]) ** 2)),
        }
        m = self.spec.season
        if m > 1:
            lag = m * np.ceil(np.arange(1, self.horizon + 1) / m).astype(np.int64)  # m ceil(h/m), h = 1..H
            out["baseline_seasonal_naive"] = float(
                np.mean((y - self.series[np.maximum(index - lag, 0)]) ** 2)
            )
        if self.spec.name == "ar":
            out["floor"] = float(np.mean((y - self.ar_optimal_forecast(last)) ** 2))
            out["floor_expected"] = float(self.expected_floor)  # type: ignore[arg-type]
        return out

    def new_metric_state(self) -> ForecastMetricState:
        return ForecastMetricState(self.output_spec)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "context": self.context,
            "horizon": self.horizon,
            "points": len(self.raw_series),
            "bounds": {k: list(v) for k, v in self.bounds.items()},
            "noise": self.noise if self.spec.generate is not None and self.spec.noisy else None,
            "norm_mean": self.norm_mean,
            "norm_std": self.norm_std,
            "season": self.spec.season,
            "mase_scale": self.mase_scale,
            "eval_windows": self.eval_windows,
            "floor": self.floor,
        }


def make_timeseries_task(config: str, seed: int, **options: Any) -> TimeSeriesTask:
    return TimeSeriesTask(config, seed, **merge_options("timeseries", OPTIONS, options))


INFO = register_family(
    FamilyInfo(
        name="timeseries",
        description="univariate forecasting (synthetic: trend, seasonal, chaotic, AR; real: statsmodels co2, "
        "elnino, sunspots); chronological splits, train-only normalisation",
        configs=tuple(SERIES),
        default_config=DEFAULT_CONFIG,
        factory=make_timeseries_task,
        options=dict(OPTIONS),
        option_help=dict(OPTION_HELP),
        config_help={name: s.description + f"; MASE season {s.season}" for name, s in SERIES.items()},
        input_end="continuous (max_len = context)",
        output_end="forecast (horizon values)",
        primary_metric="mse",
        higher_is_better=False,
        metrics=(
            "mse",
            "rmse",
            "mae",
            "r2",
            "nmse",
            "mase",
            "baseline_constant",
            "baseline_naive",
            "baseline_seasonal_naive",
            "floor",
            "floor_expected",
            "gap_to_floor",
        ),
        floor="ar: realised MSE of the optimal forecast on the test windows (floor_expected: its expectation); "
        "all series: constant, naive and seasonal-naive baselines",
    )
)
