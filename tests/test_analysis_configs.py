"""Runs of one (task, variant) in more than one configuration: ``analyze`` refuses to average them, ``--where``
selects one, ``--tune`` picks each variant's validation-best value and analyses its test metric; re-runs of one
configuration are still averaged. The stores are written through the real ResultsStore from RunRecord dicts, and
every expectation is computed here from the fixture's own tables, never from the analysis' output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mamba_kan.analysis import analyze_frame
from mamba_kan.analysis.configs import EXCLUDED_KEYS, canonical, parse_value, parse_where
from mamba_kan.cli import main
from mamba_kan.errors import UserError
from mamba_kan.experiments.store import ResultsStore

VARIANTS = [
    "mlp_transformer",
    "bspline_transformer",
    "kan_transformer",
    "mlp_mamba",
    "bspline_mamba",
    "kan_mamba",
]
TASK = "long_context/mqar"
LRS = (1e-3, 3e-3)
SEEDS = (0, 1, 2)
BASE = {m: 0.5 + 0.05 * i for i, m in enumerate(VARIANTS)}
# validation effect of each lr per variant; the test effect is its negative, so choosing on test would pick the
# other lr for every variant: only a choice made on validation passes the tuning test
VAL_EFFECT = {
    "mlp_transformer": {1e-3: 0.05, 3e-3: 0.0},
    "bspline_transformer": {1e-3: 0.0, 3e-3: 0.04},
    "kan_transformer": {1e-3: 0.02, 3e-3: 0.03},
    "mlp_mamba": {1e-3: 0.0, 3e-3: 0.01},
    "bspline_mamba": {1e-3: 0.03, 3e-3: 0.0},
    "kan_mamba": {1e-3: 0.0, 3e-3: 0.06},  # best on validation, but seed 2 diverges at 3e-3
}
DIVERGED = {("kan_mamba", 3e-3, 2)}
# by hand from VAL_EFFECT (jitter < 0.002 cannot reorder effects 0.01 apart) and DIVERGED
CHOSEN = {
    "mlp_transformer": 1e-3,
    "bspline_transformer": 3e-3,
    "kan_transformer": 3e-3,
    "mlp_mamba": 3e-3,
    "bspline_mamba": 1e-3,
    "kan_mamba": 1e-3,
}


def _table() -> dict[tuple[str, float, int], tuple[float, float]]:
    """(model, lr, seed) -> (best_val, test accuracy)."""
    rng = np.random.default_rng(3)
    out = {}
    for m in VARIANTS:
        for lr in LRS:
            for s in SEEDS:
                eff = VAL_EFFECT[m][lr]
                out[(m, lr, s)] = (
                    BASE[m] + eff + 0.01 * s + rng.uniform(-0.002, 0.002),
                    BASE[m] - eff + 0.01 * s + rng.uniform(-0.002, 0.002),
                )
    return out


TABLE = _table()


def record(model, seed, config, val, test, status="completed", task=TASK, metric="accuracy", higher=True):
    ffn, mixer = model.split("_")
    done = status == "completed"
    return {
        "model": model,
        "ffn": ffn,
        "mixer": mixer,
        "task": task,
        "seed": seed,
        "status": status,
        "primary_metric": metric,
        "primary_value": test if done else None,
        "higher_is_better": higher,
        "metrics": {metric: test} if done else {},
        "best_val": val,
        "best_val_step": 10,
        "curves": [],
        "steps": 20,
        "error": None if done else "loss became nan",
        "config": {"model": model, "task": task, "seed": seed, **config},
        "env": {},
    }


def base_config(lr: float, seed: int, d_model: int = 64, context: int = 16) -> dict:
    return {
        "lr": lr,
        "max_steps": 20,
        "threads": 1 + seed % 2,  # bookkeeping: differs between runs, never a different configuration
        "model_cfg": {"d_model": d_model, "grid_range": [-3.0, 3.0], "ffn_hidden": None},
        "task_options": {"context": context},
    }


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory):
    """One task x 6 variants x 3 seeds x lr in {1e-3, 3e-3}; kan_mamba seed 2 diverges at lr 3e-3."""
    path = tmp_path_factory.mktemp("lr_sweep")
    with ResultsStore(path) as store:
        for (m, lr, s), (val, test) in TABLE.items():
            if (m, lr, s) in DIVERGED:
                rec = record(m, s, base_config(lr, s), None, None, status="diverged")
            else:
                rec = record(m, s, base_config(lr, s), val, test)
            store.record_run(f"{m}|{lr}|{s}", f"{m}-{lr}-{s}", rec)
    return path


def _analyze_json(capsys, *args):
    assert main(["analyze", *map(str, args), "--json", "--n-bootstrap", "499"]) == 0
    return json.loads(capsys.readouterr().out)


def _cell_means(doc):
    return {c["model"]: c["mean"] for c in doc["tasks"][TASK]["cells"]}


def test_different_lrs_are_refused_not_averaged(lr_sweep, capsys):
    assert main(["analyze", str(lr_sweep), "--n-bootstrap", "499"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "differ in lr (0.001, 0.003)" in err and "--where lr=VALUE" in err and "--tune lr" in err
    # only lr: the bookkeeping 'threads' that also differs between runs is not a configuration difference
    assert "threads" not in err and "max_steps" not in err


def test_where_selects_one_configuration(lr_sweep, capsys):
    doc = _analyze_json(capsys, lr_sweep, "--where", "lr=1e-3")
    means = _cell_means(doc)
    for m in VARIANTS:
        assert means[m] == pytest.approx(np.mean([TABLE[(m, 1e-3, s)][1] for s in SEEDS]))
    assert doc["settings"]["where"] == {"lr": [0.001]}
    assert any("--where lr=0.001: 18 of 36 runs kept" in n for n in doc["notes"])
    assert doc["tuning"] == []


def test_where_on_lr_3e3_keeps_the_diverged_run_visible(lr_sweep, capsys):
    doc = _analyze_json(capsys, lr_sweep, "--where", "lr=0.003")
    assert [(r["model"], r["seed"], r["status"]) for r in doc["missing_runs"]] == [
        ("kan_mamba", 2, "diverged")
    ]


@pytest.mark.parametrize(
    "flag,text",
    [
        (["--where", "lr=0.01"], "--where lr=0.01: no run matches; lr in the results: 0.001, 0.003"),
        (["--where", "lrr=1e-3"], "--where lrr: no run has this setting; did you mean lr?"),
        (["--where", "lr"], "--where expects KEY=VALUE"),
        (["--tune", "d_model"], "--tune d_model: no run has this setting; did you mean model_cfg.d_model?"),
        (["--tune", "threads"], "--tune threads: threads is not a setting (bookkeeping"),
    ],
)
def test_bad_where_and_tune_exit_2_with_one_line(lr_sweep, capsys, flag, text):
    assert main(["analyze", str(lr_sweep), *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert text in err and "\n" not in err


def test_tune_picks_each_variants_validation_best_and_reports_its_test_metric(lr_sweep, capsys, tmp_path):
    md = tmp_path / "tables.md"
    doc = _analyze_json(capsys, lr_sweep, "--tune", "lr", "--markdown", md)
    tuning = {r["model"]: r for r in doc["tuning"]}
    assert {m: r["chosen"]["lr"] for m, r in tuning.items()} == CHOSEN
    # the same choice, recomputed here from the fixture table: mean best_val over the seeds with a value, a
    # candidate with a seed lacking one ranked last
    for m in VARIANTS:
        means = {}
        for lr in LRS:
            vals = [TABLE[(m, lr, s)][0] for s in SEEDS if (m, lr, s) not in DIVERGED]
            means[lr] = (len(vals) < len(SEEDS), -np.mean(vals))
        assert min(means, key=means.get) == CHOSEN[m]
        cands = {c["value"]["lr"]: c for c in tuning[m]["candidates"]}
        for lr in LRS:
            vals = [TABLE[(m, lr, s)][0] for s in SEEDS if (m, lr, s) not in DIVERGED]
            assert cands[lr]["mean_val"] == pytest.approx(np.mean(vals))
            assert cands[lr]["n_without_val"] == len(SEEDS) - len(vals)
    assert tuning["kan_mamba"]["candidates"][1]["n_without_val"] == 1
    # the test metric analysed is the chosen configuration's, all three seeds, paired
    means = _cell_means(doc)
    for m in VARIANTS:
        assert means[m] == pytest.approx(np.mean([TABLE[(m, CHOSEN[m], s)][1] for s in SEEDS]))
    assert doc["tasks"][TASK]["n_complete_seeds"] == 3 and doc["missing_runs"] == []
    text = md.read_text()
    assert (
        "Settings tuned per variant" in text and "| long_context/mqar | kan_mamba | lr | lr=0.001 |" in text
    )


def test_tune_summary_shows_the_tuning_table(lr_sweep, capsys):
    assert main(["analyze", str(lr_sweep), "--tune", "lr", "--n-bootstrap", "499"]) == 0
    out = capsys.readouterr().out
    assert "tuned per variant on validation" in out
    assert "bspline_transformer" in out and "lr=0.003" in out


def test_reruns_of_one_configuration_are_still_averaged(tmp_path, capsys):
    with ResultsStore(tmp_path) as store:
        for m in VARIANTS[:2]:
            for s in SEEDS:
                for attempt, shift in enumerate((0.0, 0.02)):  # two code versions, same settings
                    val, test = TABLE[(m, 1e-3, s)]
                    rec = record(m, s, base_config(1e-3, s), val, test + shift)
                    store.record_run(f"{m}|{s}|{attempt}", f"{m}-{s}-{attempt}", rec)
    doc = _analyze_json(capsys, tmp_path)
    means = _cell_means(doc)
    for m in VARIANTS[:2]:
        assert means[m] == pytest.approx(np.mean([TABLE[(m, 1e-3, s)][1] + 0.01 for s in SEEDS]))
    assert any("has 2 values of accuracy; using their mean" in n for n in doc["notes"])


def _nested_sweep(path, key):
    """2 variants x 2 seeds x (d_model in {64, 128} or context in {16, 32})."""
    with ResultsStore(path) as store:
        for m in VARIANTS[:2]:
            for s in SEEDS[:2]:
                for level in (0, 1):
                    cfg = (
                        base_config(1e-3, s, d_model=(64, 128)[level])
                        if key == "d_model"
                        else base_config(1e-3, s, context=(16, 32)[level])
                    )
                    rec = record(m, s, cfg, 0.5 + 0.1 * level, 0.5 + 0.1 * level + 0.01 * s + 0.003 * len(m))
                    store.record_run(f"{m}|{s}|{level}", f"{m}-{s}-{level}", rec)


@pytest.mark.parametrize(
    "key,dotted,value,level",
    [("d_model", "model_cfg.d_model", "128", 1), ("context", "task_options.context", "16", 0)],
)
def test_dotted_key_filter_on_a_nested_setting(tmp_path, capsys, key, dotted, value, level):
    _nested_sweep(tmp_path, key)
    assert main(["analyze", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"differ in {dotted} (" in err and f"--where {dotted}=VALUE" in err
    doc = _analyze_json(capsys, tmp_path, "--where", f"{dotted}={value}")
    means = _cell_means(doc)
    for m in VARIANTS[:2]:
        expected = np.mean([0.5 + 0.1 * level + 0.01 * s + 0.003 * len(m) for s in SEEDS[:2]])
        assert means[m] == pytest.approx(expected)


def test_tuning_one_setting_while_another_varies_freely_is_refused(tmp_path, capsys):
    with ResultsStore(tmp_path) as store:
        for m in VARIANTS[:2]:
            for s in SEEDS[:2]:
                for lr in LRS:
                    for d in (64, 128):
                        rec = record(m, s, base_config(lr, s, d_model=d), 0.5 + lr * 10, 0.5 + d / 1000)
                        store.record_run(f"{m}|{s}|{lr}|{d}", f"{m}-{s}-{lr}-{d}", rec)
    assert main(["analyze", str(tmp_path), "--tune", "lr"]) == 2
    err = capsys.readouterr().err.strip()
    assert "differ in model_cfg.d_model (64, 128)" in err and "\n" not in err
    # tuning both picks the best combination per variant: lr 3e-3 (val 0.53); d_model does not change val, so
    # the first (64) of the tied candidates
    doc = _analyze_json(capsys, tmp_path, "--tune", "lr", "--tune", "model_cfg.d_model")
    assert {r["model"]: r["chosen"] for r in doc["tuning"]} == {
        m: {"lr": 3e-3, "model_cfg.d_model": 64} for m in VARIANTS[:2]
    }
    assert any("2 candidates tie on validation" in n for n in doc["notes"])


def test_a_setting_chosen_per_variant_is_noted_not_refused(tmp_path, capsys):
    with ResultsStore(tmp_path) as store:
        for m in VARIANTS[:2]:
            lr = CHOSEN[m]
            for s in SEEDS:
                val, test = TABLE[(m, lr, s)]
                store.record_run(f"{m}|{s}", f"{m}-{s}", record(m, s, base_config(lr, s), val, test))
    doc = _analyze_json(capsys, tmp_path)
    assert any(
        "settings differ between variants" in n
        and "lr (mlp_transformer 0.001, bspline_transformer 0.003)" in n
        for n in doc["notes"]
    )


def test_tune_on_a_log_scale_metric_uses_the_geometric_mean(tmp_path, capsys):
    """mse is analysed on log scale, so candidates compare by geometric mean: lr 1e-3 has val mse (1, 100) ->
    geometric 10, arithmetic 50.5; lr 3e-3 has (30, 30) -> 30 both. Geometric picks 1e-3, arithmetic 3e-3."""
    vals = {1e-3: (1.0, 100.0), 3e-3: (30.0, 30.0)}
    with ResultsStore(tmp_path) as store:
        for m in VARIANTS[:2]:
            for lr in LRS:
                for s in SEEDS[:2]:
                    rec = record(
                        m,
                        s,
                        base_config(lr, s),
                        vals[lr][s],
                        1.0 + s + len(m) / 10,
                        metric="mse",
                        higher=False,
                    )
                    store.record_run(f"{m}|{lr}|{s}", f"{m}-{lr}-{s}", rec)
    doc = _analyze_json(capsys, tmp_path, "--tune", "lr")
    assert all(r["chosen"] == {"lr": 1e-3} and r["criterion"] == "geometric mean" for r in doc["tuning"])
    assert doc["tuning"][0]["candidates"][0]["mean_val"] == pytest.approx(10.0)
    doc = _analyze_json(capsys, tmp_path, "--tune", "lr", "--scale", "raw")
    assert all(r["chosen"] == {"lr": 3e-3} and r["criterion"] == "mean" for r in doc["tuning"])


def test_python_api_on_a_tidy_frame_with_config_columns():
    import pandas as pd

    rows = [
        {
            "task": TASK,
            "model": m,
            "seed": s,
            "metric": "accuracy",
            "value": TABLE[(m, lr, s)][1],
            "primary_metric": "accuracy",
            "higher_is_better": True,
            "best_val": TABLE[(m, lr, s)][0],
            "config.lr": lr,
            "config.model_cfg.grid_range": "[-3.0, 3.0]",  # a list as a csv export writes it
        }
        for m in VARIANTS[:3]
        for lr in LRS
        for s in SEEDS
    ]
    df = pd.DataFrame(rows)
    with pytest.raises(UserError, match=r"differ in lr \(0.001, 0.003\)"):
        analyze_frame(df, n_bootstrap=499)
    a = analyze_frame(df, n_bootstrap=499, where={"lr": 3e-3, "model_cfg.grid_range": (-3, 3)})
    means = {c["model"]: c["mean"] for c in a.tasks[TASK]["cells"]}
    assert means["kan_transformer"] == pytest.approx(
        np.mean([TABLE[("kan_transformer", 3e-3, s)][1] for s in SEEDS])
    )
    a = analyze_frame(df, n_bootstrap=499, tune=["lr"])
    assert {r["model"]: r["chosen"]["lr"] for r in a.tuning} == {m: CHOSEN[m] for m in VARIANTS[:3]}


def test_where_values_are_yaml_scalars():
    assert parse_where(["lr=1e-3", "model_cfg.d_model=64", "config.compile=true", "x=null", "lr=3e-3"]) == {
        "lr": [0.001, 0.003],
        "model_cfg.d_model": [64],
        "compile": [True],
        "x": [None],
    }
    assert canonical(parse_value("[-3, 3]")) == canonical((-3.0, 3.0))
    assert canonical(parse_value("1")) != canonical(True)  # a flag is not the number 1
    assert canonical(parse_value("128")) == canonical(128.0)


def test_excluded_keys_cover_every_setting_that_never_changes_results():
    from mamba_kan.training.config import NON_RESULT_KEYS

    assert set(NON_RESULT_KEYS) <= set(EXCLUDED_KEYS)


def test_the_value_the_refusal_prints_selects_that_configuration():
    """A swept value like 10**-2.5 is printed so that pasting it after --where matches it exactly."""
    import re

    import pandas as pd

    lr_odd = 10**-2.5
    rows = [
        {
            "task": TASK,
            "model": m,
            "seed": s,
            "metric": "accuracy",
            "value": 0.5 + 0.01 * s + 0.1 * (lr == lr_odd),
        }
        | {"higher_is_better": True, "config.lr": lr}
        for m in VARIANTS[:2]
        for lr in (1e-3, lr_odd)
        for s in SEEDS
    ]
    df = pd.DataFrame(rows)
    with pytest.raises(UserError) as err:
        analyze_frame(df, n_bootstrap=499)
    printed = re.search(r"lr \(0\.001, ([^)]+)\)", str(err.value)).group(1)
    a = analyze_frame(df, n_bootstrap=499, where=[f"lr={printed}"])
    assert a.tasks[TASK]["cells"][0]["mean"] == pytest.approx(0.61)
