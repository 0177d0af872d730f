"""The analysis pipeline end to end on synthetic results with a known truth: the original Mamba_KAN project's API, verdicts,
metric direction, missing runs, bad input, the JSON contract and the paper/README tables."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mamba_kan.analysis import (
    analyze_directory,
    analyze_frame,
    format_summary,
    print_analysis_summary,
    run_full_analysis,
    to_latex,
    to_markdown,
)
from mamba_kan.errors import UserError

VARIANTS = [
    "mlp_transformer",
    "bspline_transformer",
    "kan_transformer",
    "mlp_mamba",
    "bspline_mamba",
    "kan_mamba",
]
FAST = {"n_bootstrap": 499}


def make_frame(
    n_seeds: int,
    level: dict[str, float],
    *,
    tasks=("symbolic/exp_sin",),
    metric="mse",
    higher_is_better=False,
    sd=1.0,
    rng_seed=0,
    models=VARIANTS,
) -> pd.DataFrame:
    """Tidy rows as read_tidy returns them. ``level``: ffn -> mean shift (in the metric, before direction)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for task in tasks:
        seed_eff = rng.normal(0, 0.3 * sd, n_seeds)
        for model in models:
            ffn, mixer = model.split("_")
            for s in range(n_seeds):
                value = 10.0 + level.get(ffn, 0.0) + seed_eff[s] + rng.normal(0, sd)
                base = {
                    "task": task,
                    "model": model,
                    "ffn": ffn,
                    "mixer": mixer,
                    "seed": s,
                    "status": "completed",
                }
                base |= {"primary_metric": metric, "higher_is_better": higher_is_better}
                rows.append(base | {"metric": metric, "value": value})
                rows.append(base | {"metric": "wall_time_s", "value": 1.0})
    return pd.DataFrame(rows)


# --- the original Mamba_KAN project's API ---------------------------------------------------------------------------------------
def test_seed_api_dict_of_lists(capsys):
    rng = np.random.default_rng(0)
    data = {v: list(0.50 + 0.05 * ("kan" in v) + rng.normal(0, 0.01, 6)) for v in VARIANTS}
    analysis = run_full_analysis(data)
    print_analysis_summary(analysis)
    out = capsys.readouterr().out
    assert "=== task default: score (higher is better)" in out
    assert "VERDICT: topology" in out  # kan better than bspline, bspline == mlp
    d = analysis.to_dict()
    assert d["across"] is None and d["tasks"]["default"]["n_complete_seeds"] == 6
    assert analysis.verdicts == {"default": "topology"}


def test_dict_with_unparsed_names_gets_rank_tests_but_no_factorial_part():
    data = {"resnet": [0.9, 0.91, 0.92, 0.9], "vit": [0.8, 0.82, 0.81, 0.83], "mlp": [0.5, 0.52, 0.49, 0.5]}
    t = run_full_analysis(data, n_bootstrap=499).to_dict()["tasks"]["default"]
    ref = stats.friedmanchisquare(*(np.array(v) for v in data.values()))
    assert t["friedman"]["chi2"] == pytest.approx(ref.statistic)
    assert len(t["pairwise"]) == 3 and t["anova"] is None and t["contrasts"] == [] and t["verdict"] is None
    assert any("does not parse" in n for n in t["notes"])
    assert t["friedman"]["average_ranks"] == {"resnet": 1.0, "vit": 2.0, "mlp": 3.0}  # higher is better


# --- verdicts on a known truth -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "level,expected",
    [
        (
            {"bspline": -3.0, "kan": -3.0},
            "activation",
        ),  # mse: the spline activation lowers it, topology adds nothing
        ({"kan": -3.0}, "topology"),
        ({"bspline": -3.0, "kan": -6.0}, "both"),
        # kan significantly worse than mlp: there is no KAN advantage to attribute (was "neither" before the
        # verdict asked "is kan better than mlp?" first)
        ({"bspline": 3.0, "kan": 6.0}, "no KAN advantage"),
        ({}, "inconclusive at this power"),  # nothing to find and 4 seeds cannot rule much out
    ],
)
def test_verdict_recovers_the_simulated_truth(level, expected):
    n = 4 if not level else 10
    analysis = analyze_frame(make_frame(n, level, rng_seed=1), **FAST)
    assert analysis.verdicts["symbolic/exp_sin"] == expected


def test_neither_when_both_steps_are_shown_equivalent_to_zero():
    # 70 seeds and no effect: TOST shows D1 and D2 inside +-0.5 d_z, so both explanations are ruled out
    analysis = analyze_frame(make_frame(70, {}, rng_seed=4), **FAST)
    t = analysis.tasks["symbolic/exp_sin"]
    v = t["verdict"]
    assert v["verdict"] == "neither" and v["kan_vs_mlp"] != "better"
    assert all(c["equivalent"] for c in t["contrasts"] if c["family"] == "primary")


def test_lower_is_better_is_used_for_ranks_statements_and_verdict():
    mse = analyze_frame(make_frame(8, {"bspline": -3.0, "kan": -3.0}), **FAST).tasks["symbolic/exp_sin"]
    d1 = next(c for c in mse["contrasts"] if c["name"] == "D1" and c["scope"] == "pooled")
    assert d1["estimate"] < 0 and d1["statement"] == "bspline better than mlp"
    ranks = mse["friedman"]["average_ranks"]
    assert max(ranks["mlp_transformer"], ranks["mlp_mamba"]) > min(ranks["bspline_mamba"], ranks["kan_mamba"])
    # the same numbers read as accuracy: the activation now hurts
    acc = make_frame(8, {"bspline": -3.0, "kan": -3.0}).assign(
        primary_metric="accuracy", higher_is_better=True
    )
    acc["metric"] = acc["metric"].replace("mse", "accuracy")
    t = analyze_frame(acc, **FAST).tasks["symbolic/exp_sin"]
    d1 = next(c for c in t["contrasts"] if c["name"] == "D1" and c["scope"] == "pooled")
    assert d1["statement"] == "mlp better than bspline" and t["verdict"]["verdict"] != "activation"


# --- missing runs -----------------------------------------------------------------------------------------------
def test_missing_runs_are_reported_and_each_test_counts_its_pairs():
    df = make_frame(6, {"kan": -2.0})
    bad = (df["model"] == "kan_mamba") & (df["seed"] == 2)
    df = df[~(bad & (df["metric"] == "wall_time_s"))]
    df.loc[bad, ["status", "value"]] = ["diverged", np.nan]
    df = df[
        ~((df["model"] == "mlp_transformer") & (df["seed"] == 4))
    ]  # a run that never reached the database
    analysis = analyze_frame(df, **FAST)
    d = analysis.to_dict()
    missing = {(m["model"], m["seed"], m["status"]) for m in d["missing_runs"]}
    assert missing == {("kan_mamba", 2, "diverged"), ("mlp_transformer", 4, "absent")}
    t = d["tasks"]["symbolic/exp_sin"]
    assert t["n_complete_seeds"] == 4 and t["friedman"]["n_blocks"] == 4
    pairs = {(r["a"], r["b"]): r["n_pairs"] for r in t["pairwise"]}
    assert pairs[("mlp_transformer", "kan_mamba")] == 4
    assert pairs[("bspline_transformer", "kan_mamba")] == 5
    assert pairs[("bspline_transformer", "kan_transformer")] == 6
    cells = {c["model"]: c["n"] for c in t["cells"]}
    assert cells["kan_mamba"] == 5 and cells["mlp_transformer"] == 5 and cells["kan_transformer"] == 6
    d2_mamba = next(c for c in t["contrasts"] if c["name"] == "D2" and c["mixer"] == "mamba")
    assert d2_mamba["n_pairs"] == 5
    assert t["anova"]["n"] == 34 and not t["anova"]["balanced"]
    assert any("diverged" in n for n in t["notes"])
    json.dumps(d, allow_nan=False)  # no NaN anywhere
    assert "kan_mamba  seed 2: run diverged" in format_summary(analysis)


# --- bad input ------------------------------------------------------------------------------------------------------
def test_bad_input_gives_one_line_user_errors(tmp_path):
    cases = [
        (lambda: run_full_analysis({"mlp_transformer": [0.5], "kan_transformer": [0.6]}), "at least 2 seeds"),
        (lambda: run_full_analysis({"mlp_transformer": [0.5, 0.6]}), "at least 2 variants"),
        (lambda: analyze_frame(make_frame(3, {}), metric="acuracy"), "valid choices: mse, wall_time_s"),
        (lambda: analyze_directory(tmp_path / "nope"), "does not exist"),
        (lambda: analyze_directory(tmp_path), "results"),
        (lambda: analyze_frame(make_frame(3, {}), alpha=1.5), "alpha must be"),
        (lambda: analyze_frame(make_frame(3, {}).drop(columns=["seed"])), "lacks column"),
        (lambda: analyze_frame(make_frame(3, {}), metric="wall_time_s"), "pass --direction"),
    ]
    for call, text in cases:
        with pytest.raises(UserError) as err:
            call()
        msg = str(err.value)
        assert text in msg and "\n" not in msg, msg


def test_other_metric_with_explicit_direction():
    df = make_frame(3, {})
    a = analyze_frame(df, metric="wall_time_s", higher_is_better=False, **FAST)
    t = a.tasks["symbolic/exp_sin"]
    assert t["metric"] == "wall_time_s" and t["direction_source"] == "given"
    assert all(r["p_value"] == 1.0 for r in t["pairwise"])  # every run took 1.0 s: no difference, not NaN


# --- across tasks ---------------------------------------------------------------------------------------------------
def _two_direction_frame() -> pd.DataFrame:
    mse = make_frame(5, {"kan": -2.0}, tasks=("a",), rng_seed=1)
    acc = make_frame(5, {"kan": 2.0}, tasks=("b",), metric="accuracy", higher_is_better=True, rng_seed=2)
    return pd.concat([mse, acc, make_frame(5, {"kan": -2.0}, tasks=("c",), rng_seed=3)], ignore_index=True)


def test_across_tasks_ranks_respect_each_tasks_direction_and_equal_scipy():
    analysis = analyze_frame(_two_direction_frame(), scale="raw", **FAST)
    a = analysis.to_dict()["across"]
    ranks = a["friedman"]["average_ranks"]
    assert min(ranks, key=ranks.get).startswith("kan_")  # kan is best in every task whatever the direction
    means = pd.DataFrame(a["means"]).pivot(index="task", columns="model", values="mean")[a["models"]]
    sign = np.array([-1.0, 1.0, -1.0])[:, None]  # a: mse, b: accuracy, c: mse
    ref = stats.friedmanchisquare(*(sign * means.to_numpy()).T)
    assert a["friedman"]["chi2"] == pytest.approx(ref.statistic)
    assert a["power"]["min_p_wilcoxon"] == pytest.approx(0.25)  # 3 tasks: exact Wilcoxon floor 2 / 2^3
    assert a["cd_diagram"]["cd"] == pytest.approx(a["friedman"]["cd"])


def test_mixed_model_contrasts_equal_cell_means_of_the_standardised_scores():
    df = _two_direction_frame()
    a = analyze_frame(df, scale="raw", **FAST).to_dict()["across"]
    mm = a["mixed_model"]
    assert "error" not in mm, mm.get("error")
    # balanced design: the GLS estimate of a contrast is the contrast of the raw cell means of z
    z = []
    for _task, g in df[df["metric"] == df["primary_metric"]].groupby("task"):
        sign = 1.0 if g["higher_is_better"].iloc[0] else -1.0
        y = sign * g["value"]
        z.append(g.assign(z=(y - y.mean()) / y.std(ddof=1)))
    cm = pd.concat(z).groupby("model")["z"].mean()
    d1 = ((cm["bspline_transformer"] - cm["mlp_transformer"]) + (cm["bspline_mamba"] - cm["mlp_mamba"])) / 2
    d2_t = cm["kan_transformer"] - cm["bspline_transformer"]
    got = {(c["name"], c["scope"], c["mixer"]): c for c in mm["contrasts"]}
    assert got[("D1", "pooled", None)]["estimate"] == pytest.approx(d1, abs=1e-6)
    assert got[("D2", "within", "transformer")]["estimate"] == pytest.approx(d2_t, abs=1e-6)
    d2 = got[("D2", "pooled", None)]
    assert d2["favourable"] and d2["family"] == "primary"
    # 3 tasks: the Wald statistic is referred to t with n_tasks - 1 = 2 df, not to the normal (anti-conservative)
    assert d2["df"] == 2 and d2["p_value"] == pytest.approx(2 * stats.t.sf(abs(d2["z"]), 2), rel=1e-12)


def test_mixed_model_failure_is_reported_not_raised(monkeypatch):
    from statsmodels.regression.mixed_linear_model import MixedLM

    def broken(self, *args, **kwargs):
        raise np.linalg.LinAlgError("Singular matrix")

    monkeypatch.setattr(MixedLM, "fit", broken)
    analysis = analyze_frame(_two_direction_frame(), **FAST)
    a = analysis.to_dict()["across"]
    assert "Singular matrix" in a["mixed_model"]["error"]
    # the verdict comes from the task-level t-tests, which do not need the mixed model
    assert a["verdict"]["verdict"] != "not estimable" and a["task_level"]["contrasts"]
    assert a["friedman"] is not None  # the rest of the analysis is still there
    assert "mixed model: not available" in format_summary(analysis)


# --- outputs ---------------------------------------------------------------------------------------------------------
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w%])")


def _json_numbers(obj, out):
    if isinstance(obj, dict):
        for v in obj.values():
            _json_numbers(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _json_numbers(v, out)
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        out.append(float(obj))
    return out


def test_json_holds_every_number_the_summary_shows():
    df = _two_direction_frame()
    df.loc[(df["model"] == "kan_mamba") & (df["seed"] == 1) & (df["task"] == "a"), ["status", "value"]] = [
        "failed",
        np.nan,
    ]
    analysis = analyze_frame(df, **FAST)
    text = format_summary(analysis)
    doc = json.loads(analysis.to_json())
    numbers = np.array(sorted(set(_json_numbers(doc, []))))
    tokens = _NUMBER.findall(re.sub(r"et al\. \d{4}", "", text))  # citation years are not results
    assert len(tokens) > 300
    for tok in tokens:
        value = float(tok)
        mant = tok.split("e")[0]
        decimals = len(mant.split(".")[1]) if "." in mant else 0
        exp = int(tok.split("e")[1]) if "e" in tok else 0
        tol = 0.5 * 10.0 ** (exp - decimals) * 1.001
        assert np.min(np.abs(numbers - value)) <= tol, f"{tok} is shown but not in the JSON"


def test_markdown_and_latex_tables():
    analysis = analyze_frame(_two_direction_frame(), **FAST)
    md = to_markdown(analysis)
    tex = to_latex(analysis)
    for v in VARIANTS:
        assert f"| {v} |" in md
        assert v.replace("_", r"\_") in tex
    assert md.count("|---|") >= 4
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == tex.count(r"\begin{table}") >= 4
    # every tabular row has as many cells as its column specification
    for block in re.findall(r"\\begin\{tabular\}\{(l?r*)\}(.*?)\\end\{tabular\}", tex, flags=re.S):
        spec, body = block
        rows = [r for r in body.split("\n") if r.endswith("\\\\")]
        assert all(len(re.split(r"(?<!\\)&", r)) == len(spec) for r in rows)
    buf = io.StringIO()
    print_analysis_summary(analysis, file=buf)
    assert "VERDICT across tasks" in buf.getvalue()


def test_cd_diagram_draws_every_variant_and_each_group():
    from matplotlib.lines import Line2D

    from mamba_kan.analysis import plot_cd_diagram

    cd = analyze_frame(_two_direction_frame(), **FAST).to_dict()["across"]["cd_diagram"]
    for groups in ("nemenyi", "wilcoxon"):
        fig = plot_cd_diagram(cd, groups=groups)
        ax = fig.axes[0]
        texts = [t.get_text() for t in ax.texts]
        for model, rank in cd["average_ranks"].items():
            assert f"{model} ({rank:.2f})" in texts
        thick = [c for c in ax.collections if max(c.get_linewidths(), default=0) == 3]
        assert len(thick) == len(cd[f"cliques_{groups}"])
        assert any(t.startswith("CD = ") for t in texts) == (groups == "nemenyi")
        assert sum(isinstance(a, Line2D) for a in ax.lines) == len(cd["average_ranks"])
        fig.savefig(io.BytesIO(), format="png")
    with pytest.raises(UserError, match="valid choices: nemenyi, wilcoxon"):
        plot_cd_diagram(cd, groups="bonferroni")


def test_nested_dict_is_one_task_per_key_and_none_marks_a_missing_run():
    rng = np.random.default_rng(5)
    data = {
        task: {v: [float(x) for x in 1.0 + rng.normal(0, 0.1, 4)] for v in VARIANTS}
        for task in ("t1", "t2", "t3")
    }
    data["t2"]["kan_mamba"][1] = None
    d = run_full_analysis(data, higher_is_better=False, n_bootstrap=499).to_dict()
    assert d["input"]["tasks"] == ["t1", "t2", "t3"] and d["across"]["friedman"]["n_blocks"] == 3
    assert d["missing_runs"] == [
        {"task": "t2", "model": "kan_mamba", "seed": 1, "status": "missing", "reason": "run missing"}
    ]
    assert all(t["higher_is_better"] is False for t in d["tasks"].values())
