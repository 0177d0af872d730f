"""Statistics against published numbers and independent implementations: ARTool's F values on the Higgins et al.
(1990) data, statsmodels' AnovaRM and the Greenhouse-Geisser formula on the covariance matrix, ANOVA on rounding
noise, t-interval coverage, the log scale for MSE-type metrics, and "neither" requiring equivalence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.anova import AnovaRM

from mamba_kan.analysis import analyze_frame
from mamba_kan.analysis.anova import _helmert, art_anova, gg_epsilon, rm_anova, two_way_anova
from mamba_kan.analysis.contrasts import planned_contrasts, tost_dz
from mamba_kan.analysis.data import parse_variant
from mamba_kan.analysis.descriptive import t_mean_ci
from mamba_kan.analysis.ranks import friedman_test

DATA = Path(__file__).parent / "data"
VARIANTS = [
    "mlp_transformer",
    "bspline_transformer",
    "kan_transformer",
    "mlp_mamba",
    "bspline_mamba",
    "kan_mamba",
]


# --- ART against ARTool ------------------------------------------------------------------------------------------
def test_art_equals_artool_on_higgins_1990_table1_in_any_row_order():
    df = pd.read_csv(DATA / "Higgins1990Table1.csv")
    expected = {"Row": 29.9925, "Column": 77.8668, "Row x Column": 0.6417}  # ARTool: Response ~ Row * Column
    for order in (None, 1, 2):
        d = df if order is None else df.sample(frac=1.0, random_state=order)
        res = art_anova(d["Response"], d["Row"], d["Column"], None, names=("Row", "Column"))
        got = {r["effect"]: r["F"] for r in res["table"]}
        for effect, f in expected.items():
            assert round(got[effect], 4) == pytest.approx(f, abs=1e-9), (order, effect, got[effect])


def test_art_equals_artool_on_higgins_1990_table5_with_tray_as_block():
    df = pd.read_csv(DATA / "Higgins1990Table5.csv")
    res = art_anova(
        df["DryMatter"], df["Moisture"], df["Fertilizer"], df["Tray"], names=("Moisture", "Fertilizer")
    )
    got = {r["effect"]: r for r in res["table"]}
    assert round(got["Fertilizer"]["F"], 4) == pytest.approx(122.4017, abs=1e-9)
    assert round(got["Moisture x Fertilizer"]["F"], 4) == pytest.approx(5.1180, abs=1e-9)
    # Moisture varies between trays only: with Tray as an additive block it has no degrees of freedom left
    assert got["Moisture"]["df"] == 0 and got["Moisture"]["F"] is None


# --- ANOVA on rounding noise ---------------------------------------------------------------------------------------
def _identical_within_seed(n_seeds: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(n_seeds):
        base = 0.3 + 0.1 * rng.random()
        for v in VARIANTS:
            ffn, mixer = v.split("_")
            # the same value for every variant of a seed, reached through different float operations
            value = (base * 3.0 + 0.1 * (ffn == "kan")) / 3.0 - (0.1 * (ffn == "kan")) / 3.0
            rows.append({"seed": s, "ffn": ffn, "mixer": mixer, "model": v, "value": value})
    return pd.DataFrame(rows)


def test_anova_gives_no_effect_when_residuals_are_rounding_noise():
    df = _identical_within_seed()
    assert df.groupby("seed")["value"].nunique().max() > 1  # the noise is really there
    res = two_way_anova(df["value"], df["ffn"], df["mixer"], df["seed"])
    assert res["residual_is_rounding_noise"]
    for r in res["table"]:
        assert r["F"] is None and r["p_value"] is None, r
    rm = rm_anova(
        df.pivot(index="seed", columns="model", values="value")[VARIANTS]
        .to_numpy()
        .reshape(-1, 2, 3)
        .transpose(0, 2, 1)
    )
    assert all(r["p_value"] is None for r in rm["table"])
    art = art_anova(df["value"], df["ffn"], df["mixer"], df["seed"])
    assert all(r["p_value"] is None or r["p_value"] >= 0.05 for r in art["table"])
    t = analyze_frame(df.assign(task="t"), higher_is_better=True).tasks["t"]
    assert any("rounding noise" in n for n in t["notes"])
    assert t["verdict"]["kan_vs_mlp"] != "better" and t["verdict"]["kan_vs_mlp"] != "worse"


# --- repeated measures ANOVA -----------------------------------------------------------------------------------
def test_rm_anova_equals_statsmodels_anovarm_and_gg_equals_the_covariance_formula():
    rng = np.random.default_rng(4)
    n = 7
    cube = rng.normal(size=(n, 3, 2)) + rng.normal(0, 1, (n, 1, 1)) + np.array([0, 0.5, 0.9])[None, :, None]
    cube[:, 2, :] += rng.normal(0, 1.5, (n, 2))  # unequal variances: sphericity is violated
    long = pd.DataFrame(
        [
            {"seed": s, "ffn": f, "mixer": m, "y": cube[s, f, m]}
            for s in range(n)
            for f in range(3)
            for m in range(2)
        ]
    )
    ref = AnovaRM(long, "y", "seed", within=["ffn", "mixer"]).fit().anova_table
    got = {r["effect"]: r for r in rm_anova(cube)["table"]}
    for effect, name in (("ffn", "ffn"), ("mixer", "mixer"), ("ffn x mixer", "ffn:mixer")):
        assert got[effect]["F"] == pytest.approx(ref.loc[name, "F Value"], rel=1e-9)
        assert got[effect]["df_error"] == ref.loc[name, "Den DF"]
        assert got[effect]["p_value"] == pytest.approx(ref.loc[name, "Pr > F"], rel=1e-8)
    # Greenhouse-Geisser (1959) epsilon from the k x k covariance of the subject means, double-centred formula
    s = np.cov(cube.mean(axis=2), rowvar=False)
    k = 3
    num = k**2 * (np.mean(np.diag(s)) - s.mean()) ** 2
    den = (k - 1) * (np.sum(s**2) - 2 * k * np.sum(s.mean(axis=1) ** 2) + k**2 * s.mean() ** 2)
    assert got["ffn"]["epsilon_gg"] == pytest.approx(num / den, rel=1e-9)
    assert got["ffn"]["p_gg"] == pytest.approx(
        stats.f.sf(got["ffn"]["F"], 2 * num / den, 2 * (n - 1) * num / den), rel=1e-9
    )
    assert gg_epsilon(cube.mean(axis=2) @ _helmert(3).T) <= 1.0


# --- intervals ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 5, 10])
def test_t_interval_of_the_mean_covers_95_percent_and_matches_scipy(n):
    rng = np.random.default_rng(n)
    x = rng.normal(2.0, 3.0, size=(4000, n))
    m, sd = x.mean(1), x.std(1, ddof=1)
    half = stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    assert np.mean(np.abs(m - 2.0) <= half) >= 0.92
    lo, hi, method = t_mean_ci(x[0], 0.95)
    ref = stats.ttest_1samp(x[0], 0.0).confidence_interval(0.95)
    assert method == "t" and (lo, hi) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_the_interval_the_pipeline_labels_95_percent_is_the_t_interval_and_covers():
    from mamba_kan.analysis import run_full_analysis
    from mamba_kan.analysis.descriptive import cell_summary

    rng = np.random.default_rng(7)
    d = run_full_analysis(
        {v: list(0.5 + rng.normal(0, 0.05, 3)) for v in VARIANTS}, mixed_model=False
    ).to_dict()
    assert {c["ci_method"] for c in d["tasks"]["default"]["cells"]} == {"t"}
    for n in (3, 5, 10):
        hits = 0
        for _ in range(1000):
            c = cell_summary("m", rng.normal(0.5, 0.05, n), None, 0.95, 999, rng)
            hits += c["ci_low"] <= 0.5 <= c["ci_high"]
        assert hits / 1000 >= 0.92, (n, hits)


# --- log scale for MSE-type metrics --------------------------------------------------------------------------------
def _mse_frame(n_seeds: int, ratio: float, rng: np.random.Generator, noise: float = 0.05) -> pd.DataFrame:
    difficulty = np.exp(rng.normal(0, 0.45, n_seeds))  # lognormal seed difficulty (CV ~ 0.45)
    rows = []
    for s in range(n_seeds):
        for v in VARIANTS:
            ffn, mixer = v.split("_")
            scale = 10.0 if mixer == "mamba" else 1.0
            value = scale * difficulty[s] * (ratio if ffn == "kan" else 1.0) * np.exp(rng.normal(0, noise))
            rows.append(
                {
                    "task": "fit",
                    "model": v,
                    "seed": s,
                    "metric": "mse",
                    "value": value,
                    "primary_metric": "mse",
                    "higher_is_better": False,
                }
            )
    return pd.DataFrame(rows)


def test_mse_is_analysed_on_log_scale_with_ratios():
    df = _mse_frame(5, 0.7, np.random.default_rng(3))
    t = analyze_frame(df).tasks["fit"]
    assert t["scale"] == "log" and any("log scale" in n for n in t["notes"])
    d2 = next(c for c in t["contrasts"] if c["name"] == "D2" and c["scope"] == "pooled")
    # the pooled D2 on log scale is the geometric mean of the per-mixer kan/bspline ratios
    wide = df.pivot(index="seed", columns="model", values="value")
    ref = np.exp(
        np.mean(
            np.log(wide["kan_transformer"] / wide["bspline_transformer"]) / 2
            + np.log(wide["kan_mamba"] / wide["bspline_mamba"]) / 2
        )
    )
    assert d2["ratio"] == pytest.approx(ref, rel=1e-10) and d2["ratio"] == pytest.approx(0.7, abs=0.05)
    assert d2["ratio_ci_low"] < d2["ratio"] < d2["ratio_ci_high"] < 1.0
    assert d2["effect_text"].startswith(f"kan's mse is {d2['ratio']:.3g}x bspline's (95% t CI ")
    assert d2["significant"] and d2["favourable"]
    raw = analyze_frame(df, scale="raw").tasks["fit"]
    assert raw["scale"] == "raw" and next(c for c in raw["contrasts"] if c["name"] == "D2")["ratio"] is None


def test_log_scale_finds_a_multiplicative_effect_more_often_than_raw():
    rng = np.random.default_rng(11)
    hits = {"log": 0, "raw": 0}
    for _ in range(30):
        y = _mse_frame(5, 0.7, rng, noise=0.25).pivot(index="seed", columns="model", values="value")[VARIANTS]
        factors = {m: parse_variant(m) for m in VARIANTS}
        for scale, w in (("log", np.log(y)), ("raw", y)):
            recs = planned_contrasts(w, factors, False, 0.05, 0.95, scale=scale)
            hits[scale] += next(r for r in recs if r["name"] == "D2" and r["scope"] == "pooled")[
                "significant"
            ]
    assert hits["log"] > hits["raw"] + 5, hits


# --- equivalence ----------------------------------------------------------------------------------------------------
def test_tost_dz_equals_the_noncentral_t_definition_and_has_level_alpha_at_the_bound():
    n, sesoi = 12, 0.5
    rng = np.random.default_rng(2)
    x = rng.normal(sesoi, 1.0, size=(20000, n))  # true d_z exactly at the bound: equivalence is false
    t = x.mean(1) / (x.std(1, ddof=1) / np.sqrt(n))
    p = tost_dz(t, n, sesoi)
    assert np.mean(p < 0.05) <= 0.06
    nc = sesoi * np.sqrt(n)
    assert p[0] == pytest.approx(max(stats.nct.cdf(t[0], n - 1, nc), stats.nct.sf(t[0], n - 1, -nc)))


def test_neither_requires_equivalence_not_a_power_argument():
    from mamba_kan.analysis.contrasts import task_verdict_arrays, verdict_for_task

    rng = np.random.default_rng(5)
    factors = {m: parse_variant(m) for m in VARIANTS}
    # D1 = +d and D2 = -d (kan = mlp), run noise sd 1, 2 mixers: the pooled per-seed contrasts have d_z = d
    rates = {}
    for label, d in (("at sesoi", 0.5), ("null", 0.0)):
        y = 5.0 + np.array([0.0, d, 0.0])[None, None, :, None] + rng.normal(size=(2000, 40, 3, 2))
        v = task_verdict_arrays(y, 0.05, 0.5)["verdict"]
        rates[label] = float(np.mean(v == "neither"))
        for i in range(3):  # the vectorised rule is the records' rule
            wide = pd.DataFrame(y[i].transpose(0, 2, 1).reshape(40, 6), columns=VARIANTS)
            recs = planned_contrasts(wide, factors, True, 0.05, 0.95, sesoi_dz=0.5)
            assert verdict_for_task(recs, None, 0.5, 0.05)["verdict"] == v[i]
    assert rates["at sesoi"] <= 0.06, rates  # TOST: declaring "neither" at the bound is a false claim
    assert rates["null"] >= 0.5, rates  # and it is reachable when the effects are truly absent


def test_friedman_iman_davenport_is_na_when_blocks_agree_perfectly():
    res = friedman_test(np.array([[1.0, 2.0], [1.0, 2.0]]), ["a", "b"], True, 0.05)
    assert res["iman_davenport_F"] is None and res["iman_davenport_p"] is None


def test_a_factor_confounded_with_the_seed_block_is_noted_with_zero_df():
    rng = np.random.default_rng(8)
    rows = []
    for v in VARIANTS:
        seeds = range(0, 3) if v.endswith("transformer") else range(3, 6)  # the mixers share no seed
        rows += [{"model": v, "seed": s, "value": 1.0 + rng.normal(0, 0.1)} for s in seeds]
    t = analyze_frame(pd.DataFrame(rows), higher_is_better=True, mixed_model=False).tasks["default"]
    mixer = next(r for r in t["anova"]["table"] if r["effect"] == "mixer")
    assert mixer["df"] == 0 and mixer["F"] is None
    assert any("mixer has 0 degrees of freedom" in n for n in t["notes"])
    assert t["verdict"]["kan_vs_mlp"] == "untestable" and t["verdict"]["verdict"] == "not estimable"
