"""Calibration: how often the verdicts of a grid shaped like yours claim something false, and how often they find a
true effect of the smallest size of interest.

:func:`calibrate` simulates complete grids with the shape of the user's (tasks, seeds, mixers, each task's
analysis scale, seed-to-seed and run-to-run spread estimated from the results; :func:`shape_from_tasks`) under
known truths, runs the verdict procedures of the analysis on each (the vectorised
:func:`~mamba_kan.analysis.contrasts.task_verdict_arrays` and
:func:`~mamba_kan.analysis.contrasts.across_verdict_arrays`, which a test checks against the pipeline on the same
data; procedures that do not enter a verdict, such as the rank tests and the mixed model, are skipped) and counts:

- ``null``: every variant equal. A false claim is any verdict that says kan differs from mlp (activation,
  topology, both, undetermined, or "no KAN advantage" because kan is worse).
- ``null, tasks differ``: the mean D2 over tasks is 0 but each task's D2 is drawn N(0, tau) (tau in run-noise sds),
  D1 = 0. Only the across-task verdict is scored (each task's own D2 is not 0).
- ``D2 at SESOI``: D2 = ``sesoi_dz`` in d_z units in every task, D1 = 0. Power = "topology" (the true answer);
  false claims: "activation", "both" (D1 is 0), kan worse, and "neither" (D2 is not inside +-SESOI, so declaring
  equivalence is false: TOST keeps this at alpha).
- ``kan worse``: kan 2 sds worse than mlp, bspline 3 sds worse, kan 1 sd better than bspline (the case where a
  verdict that skips the question said "topology"). False claims: anything that says kan beats mlp.
- ``coverage``: the fraction of simulations in which the 95% (``confidence``) t interval of each per-task contrast,
  and of a cell mean, contains the true value (under ``null`` and ``D2 at SESOI``).

A simulated run: y[task, seed, ffn, mixer] = mu_task + seed effect (N(0, seed_sd)) + effect(ffn, mixer) + noise
(N(0, noise_sd)), on the task's analysis scale (log for MSE-type metrics: the raw values are then lognormal), oriented so that higher is better. Rates are over ``n_sims`` grids (per-task rates over
n_sims x n_tasks task analyses); with 1000 grids a rate of 0.05 has a binomial standard error of 0.007.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from mamba_kan.analysis.contrasts import (
    CLAIMS_KAN_BETTER,
    across_verdict_arrays,
    task_verdict_arrays,
)
from mamba_kan.analysis.data import TaskData
from mamba_kan.design import FFN_LEVELS, MIXER_LEVELS
from mamba_kan.errors import UserError

SCENARIOS = ("null", "null, tasks differ", "D2 at SESOI", "kan worse")


@dataclass
class GridShape:
    """The shape of a grid: tasks (names, analysis scales, spreads), seeds per task, mixers.

    ``noise_sd`` / ``seed_sd``: per task, on the task's analysis scale; ``location``: per task, the grand mean on
    that scale (only the raw values' level; no verdict depends on it)."""

    tasks: list[str]
    n_seeds: int
    mixers: tuple[str, ...] = MIXER_LEVELS
    scales: list[str] = field(default_factory=list)
    noise_sd: list[float] = field(default_factory=list)
    seed_sd: list[float] = field(default_factory=list)
    location: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        t = len(self.tasks)
        self.scales = self.scales or ["raw"] * t
        self.noise_sd = self.noise_sd or [1.0] * t
        self.seed_sd = self.seed_sd or [0.5] * t
        self.location = self.location or [0.0] * t
        if self.n_seeds < 2:
            raise UserError(f"calibration needs at least 2 seeds per variant, got {self.n_seeds}")
        if not self.mixers:
            raise UserError("calibration needs at least one mixer")


def preset_shape(n_tasks: int, n_seeds: int, mixers: tuple[str, ...] = MIXER_LEVELS) -> GridShape:
    """A grid of ``n_tasks`` tasks x 3 ffn x ``mixers`` x ``n_seeds`` seeds, unit run noise, seed sd 0.5."""
    return GridShape([f"task{i + 1}" for i in range(n_tasks)], n_seeds, tuple(mixers))


def shape_from_tasks(tasks: list[TaskData]) -> GridShape:
    """The shape of the user's grid: the tasks with all 3 ffn levels under a common set of mixers, the smallest
    number of complete seeds among them, and each task's spreads from its complete seeds on the analysis scale
    (run noise = the root mean square of the seed x variant residual, seed sd from the seed means)."""
    names, scales, noise, seed_sd, loc = [], [], [], [], []
    n_seeds: list[int] = []
    mixers_all: list[tuple[str, ...]] = []
    for td in tasks:
        cols = {tuple(v): m for m, v in td.factors.items()}
        mixers = tuple(x for x in MIXER_LEVELS + ("none",) if all((f, x) in cols for f in FFN_LEVELS))
        if not mixers:
            continue
        order = [cols[(f, x)] for f in FFN_LEVELS for x in mixers]
        y = td.analysed()[order].dropna().to_numpy(float)
        if y.shape[0] < 2:
            continue
        resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
        dof = (y.shape[0] - 1) * (y.shape[1] - 1)
        s2 = float(np.sum(resid**2) / dof) if dof else 0.0
        seed_var = float(np.var(y.mean(1), ddof=1)) - s2 / y.shape[1]
        names.append(td.name)
        scales.append(td.scale)
        noise.append(float(np.sqrt(s2)) if s2 > 0 else 1.0)
        seed_sd.append(float(np.sqrt(max(seed_var, 0.0))))
        loc.append(float(y.mean()))
        n_seeds.append(int(y.shape[0]))
        mixers_all.append(mixers)
    if not names:
        raise UserError(
            "calibration needs at least one task with mlp, bspline and kan under a common mixer and 2 complete seeds"
        )
    common = tuple(x for x in mixers_all[0] if all(x in m for m in mixers_all))
    return GridShape(names, min(n_seeds), common or mixers_all[0], scales, noise, seed_sd, loc)


def _simulate(shape: GridShape, effect: np.ndarray, rng: np.random.Generator, n_sims: int) -> np.ndarray:
    """(n_sims, n_tasks, n_seeds, 3, n_mixers) values on the analysis scale, oriented (higher = better); ``effect``
    broadcasts to (n_sims, n_tasks, 1, 3, n_mixers) in run-noise sds. For a log-scale task these are the logs of
    lognormal raw values, which is what the pipeline analyses after its log transform."""
    t, n, m = len(shape.tasks), shape.n_seeds, len(shape.mixers)
    sd = np.asarray(shape.noise_sd, float)[None, :, None, None, None]
    seed = rng.normal(size=(n_sims, t, n, 1, 1)) * np.asarray(shape.seed_sd, float)[None, :, None, None, None]
    noise = rng.normal(size=(n_sims, t, n, 3, m)) * sd
    return np.asarray(shape.location, float)[None, :, None, None, None] + seed + effect * sd + noise


def _ffn_effect(d1: float, d2: float) -> np.ndarray:
    """Oriented (higher = better) ffn effects (mlp, bspline, kan) with bspline - mlp = d1, kan - bspline = d2."""
    return np.array([0.0, d1, d1 + d2])[:, None]


def _rates(verdicts: np.ndarray) -> dict[str, float]:
    v = np.asarray(verdicts).ravel()
    names, counts = np.unique(v, return_counts=True)
    return {str(a): float(c) / v.size for a, c in zip(names, counts)}


def calibrate(
    shape: GridShape,
    n_sims: int = 1000,
    alpha: float = 0.05,
    sesoi_dz: float = 0.5,
    confidence: float = 0.95,
    seed: int = 0,
    tau: float = 1.0,
) -> dict[str, Any]:
    """Simulate ``n_sims`` grids of ``shape`` per scenario and score the verdicts (see the module docstring).

    Returns {shape, settings, rows: [{scenario, level, n, false_claim, power, verdicts {verdict: rate},
    coverage {name: rate}}]}. Deterministic for a given ``seed``."""
    if n_sims < 10:
        raise UserError(f"n_sims must be >= 10, got {n_sims}")
    rng = np.random.default_rng(seed)
    t, m = len(shape.tasks), len(shape.mixers)
    # the pooled per-seed contrast of one mixer-averaged ffn step has sd noise * sqrt(2 / m): d_z = SESOI needs
    d_sesoi = sesoi_dz * np.sqrt(2.0 / m)
    rows: list[dict[str, Any]] = []
    worse_kan = set(CLAIMS_KAN_BETTER)
    noise_sd = np.asarray(shape.noise_sd, float)[None, :]
    location = np.asarray(shape.location, float)[None, :]
    n = shape.n_seeds
    t_half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1))

    def row(name: str, level: str, r: dict[str, np.ndarray], false_set: set, power_set: set | None) -> dict:
        v = r["verdict"]
        false = np.isin(v, sorted(false_set - {"worse"}))
        if "worse" in false_set:
            false |= r["kan_vs_mlp"] == "worse"
        return {
            "scenario": name,
            "level": level,
            "n": int(v.size),
            "false_claim": float(np.mean(false)),
            "power": None if power_set is None else float(np.mean(np.isin(v, sorted(power_set)))),
            "verdicts": _rates(v),
            "coverage": {},
        }

    def score(
        name: str,
        y: np.ndarray,
        truth: dict[str, float],
        false_set: set,
        power_set: set | None,
        levels: tuple,
    ) -> None:
        if "task" in levels:
            r = task_verdict_arrays(y, alpha, sesoi_dz, confidence)
            rec = row(name, "per task", r, false_set, power_set)
            for c, true in truth.items():  # true contrast in run-noise sds -> on each task's analysis scale
                tv = true * noise_sd
                rec["coverage"][c] = float(np.mean((r[f"{c}_ci_low"] <= tv) & (tv <= r[f"{c}_ci_high"])))
            if truth:
                cell = y[..., 0, 0]  # mlp under the first mixer: its true mean is the task's location
                half = t_half * cell.std(-1, ddof=1) / np.sqrt(n)
                rec["coverage"]["cell mean"] = float(np.mean(np.abs(cell.mean(-1) - location) <= half))
            rows.append(rec)
        if "across" in levels and t >= 2:
            rows.append(
                row(
                    name,
                    "across tasks",
                    across_verdict_arrays(y, alpha, sesoi_dz, confidence),
                    false_set,
                    power_set,
                )
            )

    null_claims = worse_kan | {"worse"}
    # 1. the global null
    y = _simulate(shape, np.zeros((1, 1, 1, 3, m)), rng, n_sims)
    score("null", y, {"K": 0.0, "D1": 0.0, "D2": 0.0}, null_claims, None, ("task", "across"))
    # 2. null on average, D2 differs between tasks
    d2_task = rng.normal(0.0, tau, size=(n_sims, t, 1, 1, 1))
    eff = np.concatenate([np.zeros_like(d2_task), np.zeros_like(d2_task), d2_task], axis=3)
    y = _simulate(shape, eff * np.ones((1, 1, 1, 1, m)), rng, n_sims)
    score("null, tasks differ", y, {}, null_claims, None, ("across",))
    # 3. D2 exactly at the SESOI (d_z of the pooled contrast), D1 = 0
    y = _simulate(shape, _ffn_effect(0.0, d_sesoi)[None, None, None], rng, n_sims)
    score(
        "D2 at SESOI",
        y,
        {"K": d_sesoi, "D1": 0.0, "D2": d_sesoi},
        {"activation", "both", "neither", "worse"},
        {"topology"},
        ("task", "across"),
    )
    # 4. kan worse than mlp although kan beats bspline
    y = _simulate(shape, _ffn_effect(-3.0, 1.0)[None, None, None], rng, n_sims)
    score("kan worse", y, {"K": -2.0, "D1": -3.0, "D2": 1.0}, worse_kan, None, ("task", "across"))
    return {
        "shape": asdict(shape),
        "settings": {
            "n_sims": n_sims,
            "alpha": alpha,
            "sesoi_dz": sesoi_dz,
            "confidence": confidence,
            "seed": seed,
            "tau": tau,
        },
        "rows": rows,
    }


def format_calibration(result: dict[str, Any]) -> str:
    """A Markdown table of :func:`calibrate`'s result (also readable as plain text)."""
    sh, st = result["shape"], result["settings"]
    head = (
        f"Calibration of the verdicts: {len(sh['tasks'])} task(s) x 3 ffn x {len(sh['mixers'])} mixer(s) x "
        f"{sh['n_seeds']} seeds; {st['n_sims']} simulated grids per scenario; alpha = {st['alpha']:g}, "
        f"SESOI d_z = {st['sesoi_dz']:g}, {st['confidence'] * 100:g}% t intervals, tau = {st['tau']:g}"
    )
    lines = [
        head,
        "",
        "| scenario | level | false-claim rate | power (topology) | coverage K / D1 / D2 / cell | verdicts |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        cov = r["coverage"]
        ctext = " / ".join(f"{cov[c]:.3f}" for c in ("K", "D1", "D2", "cell mean") if c in cov) if cov else ""
        verdicts = ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["verdicts"].items(), key=lambda kv: -kv[1]))
        power = "" if r["power"] is None else f"{r['power']:.3f}"
        lines.append(
            f"| {r['scenario']} | {r['level']} | {r['false_claim']:.3f} | {power} | {ctext} | {verdicts} |"
        )
    return "\n".join(lines) + "\n"
