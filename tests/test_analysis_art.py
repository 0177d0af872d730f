"""The Aligned Rank Transform ANOVA (Wobbrock et al. 2011): alignment checked against an independent pandas +
statsmodels construction, and its error rates by simulation (type I for the interaction under main effects only,
power under an interaction, agreement with the parametric ANOVA on balanced normal data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm

from mamba_kan.analysis.anova import art_anova, two_way_anova

FFN = ["mlp", "bspline", "kan"]
MIXER = ["transformer", "mamba"]


def simulate(
    rng: np.random.Generator, n_seeds: int, ffn_eff, mixer_eff, inter: float = 0.0, noise=None
) -> pd.DataFrame:
    """A 3 x 2 design with a seed block; ``inter`` is added to the kan_mamba cell only."""
    seed_eff = rng.normal(0, 0.5, n_seeds)
    rows = []
    for s in range(n_seeds):
        for i, f in enumerate(FFN):
            for j, m in enumerate(MIXER):
                e = rng.normal() if noise is None else noise(rng)
                y = ffn_eff[i] + mixer_eff[j] + inter * (i == 2 and j == 1) + seed_eff[s] + e
                rows.append({"seed": s, "ffn": f, "mixer": m, "value": y})
    return pd.DataFrame(rows)


def _art_p(df: pd.DataFrame) -> dict[str, float]:
    res = art_anova(df["value"], df["ffn"], df["mixer"], df["seed"])
    return {r["effect"]: r["p_value"] for r in res["table"]}


def test_art_equals_an_independent_align_rank_anova_construction():
    df = simulate(np.random.default_rng(0), 5, [0, 0.8, 1.0], [0, 0.5], inter=0.7)
    df = df.drop(index=[4, 17]).reset_index(drop=True)  # unbalanced
    # Wobbrock et al. 2011, steps 1-4, written with pandas group means
    cell = df.groupby(["ffn", "mixer"])["value"].transform("mean")
    ma = df.groupby("ffn")["value"].transform("mean")
    mb = df.groupby("mixer")["value"].transform("mean")
    g = df["value"].mean()
    resid = df["value"] - cell
    aligned = {"ffn": resid + ma - g, "mixer": resid + mb - g, "ffn x mixer": resid + cell - ma - mb + g}
    terms = {"ffn": "C(ffn, Sum)", "mixer": "C(mixer, Sum)", "ffn x mixer": "C(ffn, Sum):C(mixer, Sum)"}
    got = {r["effect"]: r for r in art_anova(df["value"], df["ffn"], df["mixer"], df["seed"])["table"]}
    assert set(got) == set(terms)
    for effect, a in aligned.items():
        d = df.assign(r=stats.rankdata(a))
        ref = anova_lm(smf.ols("r ~ C(ffn, Sum) * C(mixer, Sum) + C(seed, Sum)", data=d).fit(), typ=3)
        assert got[effect]["F"] == pytest.approx(ref.loc[terms[effect], "F"], rel=1e-9)
        assert got[effect]["p_value"] == pytest.approx(ref.loc[terms[effect], "PR(>F)"], rel=1e-8)


def test_art_interaction_false_positive_rate_under_main_effects_only():
    rng = np.random.default_rng(1)
    n_sim = 400
    rejections = 0
    for _ in range(n_sim):
        df = simulate(rng, 8, [0.0, 1.0, 2.0], [0.0, 1.5])  # strong main effects, no interaction
        rejections += _art_p(df)["ffn x mixer"] < 0.05
    rate = rejections / n_sim
    # nominal 0.05; binomial sd at n = 400 is 0.011
    assert 0.02 <= rate <= 0.085, rate


def test_art_finds_an_interaction_that_exists_about_as_often_as_the_anova():
    rng = np.random.default_rng(2)
    n_sim = 100
    art_hits = anova_hits = 0
    for _ in range(n_sim):
        df = simulate(rng, 8, [0.0, 0.5, 0.5], [0.0, 0.3], inter=2.5)  # one cell off by 2.5 noise sd
        art_hits += _art_p(df)["ffn x mixer"] < 0.05
        table = two_way_anova(df["value"], df["ffn"], df["mixer"], df["seed"])["table"]
        anova_hits += next(r["p_value"] for r in table if r["effect"] == "ffn x mixer") < 0.05
    assert art_hits / n_sim >= 0.9
    assert art_hits >= anova_hits - 10  # on normal data ART loses little power against the ANOVA


def test_art_agrees_with_anova_on_balanced_normal_data():
    rng = np.random.default_rng(3)
    n_sim = 150
    agree = {"ffn": 0, "mixer": 0, "ffn x mixer": 0}
    for _ in range(n_sim):
        df = simulate(
            rng, 6, [0.0, 0.4, 0.8], [0.0, 0.5], inter=0.8
        )  # moderate effects: neither test is at 0 or 1
        a = {
            r["effect"]: r["p_value"]
            for r in two_way_anova(df["value"], df["ffn"], df["mixer"], df["seed"])["table"]
        }
        r = _art_p(df)
        for effect in agree:
            agree[effect] += (a[effect] < 0.05) == (r[effect] < 0.05)
    for effect, n in agree.items():
        assert n / n_sim >= 0.85, (effect, n / n_sim)
