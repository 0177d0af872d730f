"""Statistical building blocks against independent references: Demšar's published example, scipy, statsmodels,
float64 loops of the defining formulas, and brute-force enumeration of exact null distributions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.multitest import multipletests

from mamba_kan.analysis.anova import assumption_checks, two_way_anova
from mamba_kan.analysis.contrasts import decide, planned_contrasts
from mamba_kan.analysis.data import parse_variant
from mamba_kan.analysis.descriptive import bootstrap_mean_ci
from mamba_kan.analysis.multitest import holm
from mamba_kan.analysis.pairwise import cliffs_delta, cohens_dz, pairwise_tests
from mamba_kan.analysis.power import min_detectable_dz, min_p_friedman, min_p_wilcoxon, pairs_needed
from mamba_kan.analysis.ranks import (
    cliques_from_cd,
    friedman_from_ranks,
    friedman_test,
    nemenyi_cd,
    nemenyi_q,
    rank_blocks,
)

VARIANTS = [
    "mlp_transformer",
    "bspline_transformer",
    "kan_transformer",
    "mlp_mamba",
    "bspline_mamba",
    "kan_mamba",
]


# --- Demšar (2006) worked example and critical values ------------------------------------------------------------
def test_demsar_worked_example_friedman_iman_davenport_and_cd():
    # Demšar 2006, section 3.2.2: four C4.5 variants on 14 data sets
    res = friedman_from_ranks([3.143, 2.000, 2.893, 1.964], n_blocks=14)
    assert res["chi2"] == pytest.approx(9.28, abs=0.01)
    assert res["iman_davenport_F"] == pytest.approx(3.69, abs=0.01)
    assert (res["iman_davenport_df1"], res["iman_davenport_df2"]) == (3, 39)
    q, cd = nemenyi_cd(4, 14, 0.05)
    assert q == pytest.approx(2.569, abs=1e-3)
    assert cd == pytest.approx(1.25, abs=0.005)


def test_nemenyi_critical_values_match_demsar_table():
    # Demšar 2006, Table 5(a), alpha = 0.05
    for k, q in [(2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728), (6, 2.850)]:
        assert nemenyi_q(k, 0.05) == pytest.approx(q, abs=1e-3)


# --- Friedman equals scipy ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("k,n", [(3, 5), (4, 14), (6, 3)])
def test_friedman_equals_scipy_including_ties(k, n):
    rng = np.random.default_rng(k * 100 + n)
    m = rng.integers(0, 4, size=(n, k)).astype(float)  # small integers: many ties within blocks
    res = friedman_test(m, [f"v{i}" for i in range(k)], higher_is_better=False, alpha=0.05)
    ref = stats.friedmanchisquare(*m.T)
    assert res["chi2"] == pytest.approx(ref.statistic, rel=1e-10)
    assert res["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    # Iman-Davenport from its definition
    f_f = (n - 1) * ref.statistic / (n * (k - 1) - ref.statistic)
    assert res["iman_davenport_F"] == pytest.approx(f_f, rel=1e-10)
    assert res["iman_davenport_p"] == pytest.approx(stats.f.sf(f_f, k - 1, (k - 1) * (n - 1)), rel=1e-10)


def test_ranks_follow_metric_direction():
    m = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    assert rank_blocks(m, higher_is_better=False)[0].tolist() == [1, 2, 3]
    assert rank_blocks(m, higher_is_better=True)[0].tolist() == [3, 2, 1]
    res = friedman_test(np.array([[1.0, 2.0, 3.0]] * 4), ["a", "b", "c"], higher_is_better=True, alpha=0.05)
    assert res["average_ranks"] == {"a": 3.0, "b": 2.0, "c": 1.0}
    # perfect agreement: chi2 = N(k-1), Iman-Davenport's F is not computable: n/a, not "p = 0"
    assert res["chi2"] == pytest.approx(8.0)
    assert res["iman_davenport_F"] is None and res["iman_davenport_p"] is None


def test_cd_cliques_group_variants_closer_than_cd():
    ranks = {"a": 1.0, "b": 1.8, "c": 2.5, "d": 3.9}
    assert cliques_from_cd(ranks, cd=1.6) == [["a", "b", "c"], ["c", "d"]]
    assert cliques_from_cd(ranks, cd=0.5) == []


# --- multiple testing -------------------------------------------------------------------------------------------
def test_holm_equals_statsmodels_multipletests():
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 15):
        p = rng.uniform(0, 0.2, size=m)
        p[:2] = p[0]  # ties
        ref = multipletests(p, method="holm")[1]
        assert np.allclose(holm(list(p)), ref, rtol=0, atol=1e-14)


def test_holm_leaves_untestable_entries_out_of_the_family():
    p = [0.01, None, 0.04, float("nan"), 0.03]
    got = holm(p)
    ref = multipletests([0.01, 0.04, 0.03], method="holm")[1]
    assert got[1] is None and got[3] is None
    assert np.allclose([got[0], got[2], got[4]], ref)


# --- pairwise tests and effect sizes -------------------------------------------------------------------------------
def test_pairwise_wilcoxon_equals_scipy_and_holm_equals_statsmodels():
    rng = np.random.default_rng(3)
    wide = pd.DataFrame(rng.normal(size=(8, 4)) + np.arange(4) * 0.7, columns=list("abcd"))
    wide.iloc[2, 1] = np.nan  # a missing run: pairs with b use the 7 complete seeds
    recs = pairwise_tests(wide, higher_is_better=True, alpha=0.05)
    assert len(recs) == 6
    for r in recs:
        both = wide[[r["a"], r["b"]]].dropna()
        ref = stats.wilcoxon(both[r["a"]], both[r["b"]])
        assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
        assert r["statistic"] == pytest.approx(ref.statistic)
        assert r["n_pairs"] == (7 if "b" in (r["a"], r["b"]) else 8)
    ref_holm = multipletests([r["p_value"] for r in recs], method="holm")[1]
    assert np.allclose([r["p_holm"] for r in recs], ref_holm)


def test_pairwise_direction_and_paired_superiority():
    wide = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [2.0, 3.0, 2.0, 5.0]})
    lower = pairwise_tests(wide, higher_is_better=False, alpha=0.05)[0]
    higher = pairwise_tests(wide, higher_is_better=True, alpha=0.05)[0]
    assert lower["mean_diff"] == pytest.approx(-0.5)  # differences -1, -1, +1, -1
    assert lower["better"] == "a" and higher["better"] == "b"
    assert lower["p_a_better"] == pytest.approx(0.75)  # a lower in 3 of 4 seeds
    assert higher["p_a_better"] == pytest.approx(0.25)


def test_identical_variants_give_p_one_not_nan():
    wide = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]})
    r = pairwise_tests(wide, higher_is_better=True, alpha=0.05)[0]
    assert r["p_value"] == 1.0 and r["p_holm"] == 1.0 and r["better"] is None and r["d_z"] is None


def test_cliffs_delta_and_dz_equal_their_definitions():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=7), rng.normal(size=7) + 0.3
    a[3] = b[5]  # a tie across samples
    count = 0
    for x in a.tolist():
        for y in b.tolist():
            count += (x > y) - (x < y)
    assert cliffs_delta(a, b) == pytest.approx(count / 49)
    d = a - b
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (len(d) - 1))
    assert cohens_dz(d) == pytest.approx(mean / sd)


# --- power and p-value floors ---------------------------------------------------------------------------------------
def test_minimum_detectable_effect_has_the_stated_power():
    for n in (3, 10, 34):
        d = min_detectable_dz(n, 0.05, 0.8)
        df, crit = n - 1, stats.t.ppf(0.975, n - 1)
        nc = d * math.sqrt(n)
        power = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
        assert power == pytest.approx(0.8, abs=1e-4)
    # Cohen (1988) paired t power: 10 paired seeds detect d_z ~ 1.0; ~34 seeds are needed for d_z = 0.5
    assert min_detectable_dz(10, 0.05, 0.8) == pytest.approx(1.0, abs=0.05)
    assert pairs_needed(0.5, 0.05, 0.8) == 34
    assert min_detectable_dz(1, 0.05, 0.8) is None


def test_wilcoxon_floor_equals_scipys_exact_p_when_all_differences_agree():
    for n in (3, 5, 8):
        ref = stats.wilcoxon(np.arange(1.0, n + 1)).pvalue  # every difference positive
        assert min_p_wilcoxon(n) == pytest.approx(ref, rel=1e-12)
    assert min_p_wilcoxon(5) == 0.0625  # Demšar (2006): 5 task means can never give p < 0.0625


def test_friedman_floor_equals_brute_force_enumeration():
    k, n = 3, 3
    perms = list(itertools.permutations(range(1, k + 1)))
    stats_all = []
    for blocks in itertools.product(perms, repeat=n):
        r = np.array(blocks, dtype=float).mean(axis=0)
        stats_all.append(friedman_from_ranks(r, n)["chi2"])
    stats_all = np.array(stats_all)
    p_min = np.mean(stats_all >= stats_all.max() - 1e-9)
    assert min_p_friedman(k, n) == pytest.approx(p_min)


# --- ANOVA equals statsmodels -----------------------------------------------------------------------------------------
def _factorial_frame(n_seeds: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    seed_eff = rng.normal(0, 0.5, n_seeds)
    for s in range(n_seeds):
        for f_i, ffn in enumerate(["mlp", "bspline", "kan"]):
            for m_i, mixer in enumerate(["transformer", "mamba"]):
                y = 0.4 * f_i - 0.3 * m_i + 0.5 * (f_i == 2) * m_i + seed_eff[s] + rng.normal(0, 0.4)
                rows.append({"seed": s, "ffn": ffn, "mixer": mixer, "value": y})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("blocked,drop", [(True, 0), (True, 2), (False, 0), (False, 3)])
def test_type3_anova_equals_statsmodels_anova_lm(blocked, drop):
    df = _factorial_frame(5, np.random.default_rng(11 + drop))
    df = df.drop(index=[1, 8, 20][:drop]).reset_index(drop=True)  # unbalanced when runs are missing
    res = two_way_anova(df["value"], df["ffn"], df["mixer"], df["seed"] if blocked else None)
    formula = "value ~ C(ffn, Sum) * C(mixer, Sum)" + (" + C(seed, Sum)" if blocked else "")
    ref = anova_lm(smf.ols(formula, data=df).fit(), typ=3)
    names = {
        "ffn": "C(ffn, Sum)",
        "mixer": "C(mixer, Sum)",
        "ffn x mixer": "C(ffn, Sum):C(mixer, Sum)",
        "seed": "C(seed, Sum)",
    }
    assert {r["effect"] for r in res["table"]} == (
        {"ffn", "mixer", "ffn x mixer"} | ({"seed"} if blocked else set())
    )
    for r in res["table"]:
        row = ref.loc[names[r["effect"]]]
        assert r["ss"] == pytest.approx(row["sum_sq"], rel=1e-9)
        assert r["df"] == row["df"]
        assert r["F"] == pytest.approx(row["F"], rel=1e-9)
        assert r["p_value"] == pytest.approx(row["PR(>F)"], rel=1e-8)
        assert r["partial_eta_sq"] == pytest.approx(
            row["sum_sq"] / (row["sum_sq"] + ref.loc["Residual", "sum_sq"])
        )
    assert res["df_resid"] == ref.loc["Residual", "df"]


def test_assumption_checks_equal_scipy():
    rng = np.random.default_rng(5)
    resid = rng.normal(size=20)
    groups = [rng.normal(size=4) * s for s in (1, 2, 3)]
    out = assumption_checks(resid, groups, 0.05)
    assert out["shapiro"]["p_value"] == pytest.approx(stats.shapiro(resid).pvalue)
    assert out["levene"]["p_value"] == pytest.approx(stats.levene(*groups, center="median").pvalue)
    # two replicates per cell: both deviations from the median are equal and Levene's F is undefined, not huge
    two = assumption_checks(resid, [rng.normal(size=2) for _ in range(6)], 0.05)
    assert two["levene"]["p_value"] is None and "3 or more" in two["levene"]["note"]


# --- contrasts ----------------------------------------------------------------------------------------------------
def test_contrasts_equal_hand_built_cell_mean_differences():
    df = _factorial_frame(6, np.random.default_rng(2))
    df["model"] = df["ffn"] + "_" + df["mixer"]
    wide = df.pivot(index="seed", columns="model", values="value")[VARIANTS]
    factors = {m: parse_variant(m) for m in VARIANTS}
    recs = planned_contrasts(wide, factors, higher_is_better=True, alpha=0.05, confidence=0.95)
    cm = wide.mean()  # cell means
    expected = {
        ("D1", "pooled", None): (
            (cm["bspline_transformer"] - cm["mlp_transformer"]) + (cm["bspline_mamba"] - cm["mlp_mamba"])
        )
        / 2,
        ("D2", "pooled", None): (
            (cm["kan_transformer"] - cm["bspline_transformer"]) + (cm["kan_mamba"] - cm["bspline_mamba"])
        )
        / 2,
        ("D1", "within", "transformer"): cm["bspline_transformer"] - cm["mlp_transformer"],
        ("D1", "within", "mamba"): cm["bspline_mamba"] - cm["mlp_mamba"],
        ("D2", "within", "transformer"): cm["kan_transformer"] - cm["bspline_transformer"],
        ("D2", "within", "mamba"): cm["kan_mamba"] - cm["bspline_mamba"],
        ("D1", "interaction", "transformer - mamba"): (cm["bspline_transformer"] - cm["mlp_transformer"])
        - (cm["bspline_mamba"] - cm["mlp_mamba"]),
        ("D2", "interaction", "transformer - mamba"): (cm["kan_transformer"] - cm["bspline_transformer"])
        - (cm["kan_mamba"] - cm["bspline_mamba"]),
        ("K", "pooled", None): (
            (cm["kan_transformer"] - cm["mlp_transformer"]) + (cm["kan_mamba"] - cm["mlp_mamba"])
        )
        / 2,
        ("K", "within", "transformer"): cm["kan_transformer"] - cm["mlp_transformer"],
        ("K", "within", "mamba"): cm["kan_mamba"] - cm["mlp_mamba"],
    }
    assert {(r["name"], r["scope"], r["mixer"]) for r in recs} == set(expected)
    for r in recs:
        assert r["estimate"] == pytest.approx(expected[(r["name"], r["scope"], r["mixer"])], rel=1e-12)
        per_seed = sum(w * wide[m] for m, w in r["weights"].items())
        ref = stats.ttest_1samp(per_seed, 0.0)
        assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
        lo, hi = ref.confidence_interval(0.95)
        assert (r["ci_low"], r["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    # families: K pooled is the gate (unadjusted), {D1, D2 pooled} the primary Holm family, the rest secondary
    fam = {(r["name"], r["scope"]): r["family"] for r in recs}
    assert fam[("K", "pooled")] == "gate" and fam[("D1", "pooled")] == fam[("D2", "pooled")] == "primary"
    for family, size in (("gate", 1), ("primary", 2), ("secondary", 8)):
        members = [r for r in recs if r["family"] == family]
        assert len(members) == size
        ref_holm = multipletests([r["p_value"] for r in members], method="holm")[1]
        assert np.allclose([r["p_holm"] for r in members], ref_holm)


def test_contrast_direction_uses_the_metric_direction():
    wide = pd.DataFrame(
        {
            "mlp_transformer": [1.0, 1.1, 0.9],
            "bspline_transformer": [0.5, 0.7, 0.4],
            "kan_transformer": [0.5, 0.6, 0.5],
        }
    )
    factors = {m: parse_variant(m) for m in wide.columns}
    lower = {r["name"]: r for r in planned_contrasts(wide, factors, False, 0.05, 0.95)}
    higher = {r["name"]: r for r in planned_contrasts(wide, factors, True, 0.05, 0.95)}
    assert (
        lower["D1"]["estimate"] < 0
        and lower["D1"]["favourable"]
        and lower["D1"]["statement"] == "bspline better than mlp"
    )
    assert not higher["D1"]["favourable"] and higher["D1"]["statement"] == "mlp better than bspline"


def test_verdict_rule():
    def rec(p_holm, favourable, equivalent=False):
        return {
            "p_holm": p_holm,
            "favourable": favourable,
            "equivalent": equivalent,
            "statement": "s",
            "p_equivalence": 0.01 if equivalent else 0.5,
        }

    better, worse, ns = rec(0.01, True), rec(0.01, False), rec(0.6, True)
    assert decide(better, rec(0.01, True), ns, 0.05)["verdict"] == "activation"
    assert decide(better, ns, rec(0.01, True), 0.05)["verdict"] == "topology"
    assert decide(better, rec(0.01, True), rec(0.01, True), 0.05)["verdict"] == "both"
    assert decide(better, ns, ns, 0.05)["verdict"] == "undetermined"
    # the question comes first: a KAN worse than the MLP never gets "activation"/"topology", whatever D1/D2 say
    for d1, d2 in ((worse, rec(0.01, True)), (rec(0.01, True), worse), (ns, ns)):
        v = decide(worse, d1, d2, 0.05)
        assert v["verdict"] == "no KAN advantage" and v["kan_vs_mlp"] == "worse"
        assert "no KAN advantage to explain" in v["headline"]
    # not significant and not equivalent: inconclusive; "neither" needs both steps shown equivalent (TOST)
    assert decide(ns, ns, ns, 0.05)["verdict"] == "inconclusive at this power"
    assert decide(ns, rec(0.6, True, True), ns, 0.05)["verdict"] == "inconclusive at this power"
    assert decide(ns, rec(0.6, True, True), rec(0.7, False, True), 0.05)["verdict"] == "neither"
    assert decide(rec(0.6, True, True), ns, ns, 0.05)["kan_vs_mlp"] == "equivalent"
    # a gate passed at p < alpha but a primary D1 just above alpha after Holm: undetermined
    assert decide(better, rec(0.051, True), ns, 0.05)["verdict"] == "undetermined"
    assert decide(None, better, better, 0.05)["verdict"] == "not estimable"


# --- bootstrap ----------------------------------------------------------------------------------------------------
def test_bca_interval_is_scipys_and_degenerate_inputs_are_explicit():
    x = np.array([0.52, 0.51, 0.55, 0.49, 0.53, 0.50])
    lo, hi, method = bootstrap_mean_ci(x, 0.95, 2000, np.random.default_rng(7))
    ref = stats.bootstrap((x,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(7))
    assert method == "BCa"
    assert (lo, hi) == (ref.confidence_interval.low, ref.confidence_interval.high)
    assert lo < x.mean() < hi
    assert bootstrap_mean_ci(np.array([0.3, 0.3, 0.3]), 0.95, 500, np.random.default_rng(0)) == (
        0.3,
        0.3,
        "degenerate (all values equal)",
    )
    assert bootstrap_mean_ci(np.array([0.3]), 0.95, 500, np.random.default_rng(0))[:2] == (None, None)
