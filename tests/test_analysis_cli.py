"""``mamba-kan analyze``: end to end from a real results database written by the store, exit status 2 with one
line on stderr for bad input, and the JSON / LaTeX / Markdown outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from mamba_kan.cli import main
from mamba_kan.experiments.store import ResultsStore

VARIANTS = [
    "mlp_transformer",
    "bspline_transformer",
    "kan_transformer",
    "mlp_mamba",
    "bspline_mamba",
    "kan_mamba",
]
TASKS = {"symbolic/exp_sin": ("mse", False), "long_context/mqar": ("accuracy", True)}


def run_result(model: str, task: str, seed: int, value: float | None, status: str = "completed") -> dict:
    ffn, mixer = model.split("_")
    metric, higher = TASKS[task]
    done = status == "completed"
    return {
        "model": model,
        "ffn": ffn,
        "mixer": mixer,
        "task": task,
        "seed": seed,
        "status": status,
        "primary_metric": metric,
        "primary_value": value if done else None,
        "higher_is_better": higher,
        "metrics": {metric: value, "loss": 1.0 + seed} if done else {},
        "best_val": value if done else None,
        "best_val_step": 10,
        "curves": [],
        "params": 1000,
        "flops_per_token": 2000,
        "steps_per_sec": 10.0,
        "tokens_per_sec": 100.0,
        "wall_time_s": 1.0,
        "peak_memory_mb": 10.0,
        "steps": 20,
        "error": None if done else "loss became nan",
        "config": {"model": model, "task": task, "seed": seed},
        "env": {"torch": "test"},
        "config_hash": "h" * 64,
    }


@pytest.fixture(scope="module")
def comparison_dir(tmp_path_factory):
    """A real results.db: 2 tasks x 6 variants x 4 seeds, KAN topology helps, one diverged run."""
    path = tmp_path_factory.mktemp("cmp")
    rng = np.random.default_rng(0)
    with ResultsStore(path) as store:
        for task, (_metric, higher) in TASKS.items():
            for model in VARIANTS:
                for seed in range(4):
                    gain = 0.2 if model.startswith("kan") else 0.0
                    base = 0.5 + gain + rng.normal(0, 0.02) if higher else 1.0 - gain + rng.normal(0, 0.02)
                    diverged = task == "symbolic/exp_sin" and model == "bspline_mamba" and seed == 3
                    result = run_result(
                        model,
                        task,
                        seed,
                        None if diverged else float(base),
                        "diverged" if diverged else "completed",
                    )
                    store.record_run(f"{task}|{model}|{seed}", f"{task}-{model}-{seed}", result)
    return path


def test_analyze_a_real_results_database(comparison_dir, capsys):
    assert main(["analyze", str(comparison_dir), "--n-bootstrap", "499"]) == 0
    out = capsys.readouterr().out
    assert "=== task symbolic/exp_sin: mse (lower is better)" in out
    assert "=== task long_context/mqar: accuracy (higher is better)" in out
    assert "symbolic/exp_sin  bspline_mamba  seed 3: run diverged" in out
    assert out.count("VERDICT: ") == 2 and "VERDICT across tasks" in out
    assert "two-way ANOVA" in out and "Friedman" in out and "mixed model" in out


def test_json_output_equals_independent_references(comparison_dir, capsys):
    assert main(["analyze", str(comparison_dir), "--json", "--n-bootstrap", "499"]) == 0
    doc = json.loads(capsys.readouterr().out)
    t = doc["tasks"]["long_context/mqar"]
    assert t["metric"] == "accuracy" and t["higher_is_better"] is True
    assert doc["missing_runs"] == [
        {
            "task": "symbolic/exp_sin",
            "model": "bspline_mamba",
            "seed": 3,
            "status": "diverged",
            "reason": "run diverged",
        }
    ]
    # the per-task Friedman over seeds equals scipy on the values stored in the database
    from mamba_kan.experiments.store import read_tidy

    tidy = read_tidy(comparison_dir)
    acc = tidy[(tidy["task"] == "long_context/mqar") & (tidy["metric"] == "accuracy")]
    wide = acc.pivot(index="seed", columns="model", values="value")[VARIANTS]
    assert t["friedman"]["chi2"] == pytest.approx(stats.friedmanchisquare(*wide.to_numpy().T).statistic)
    cells = {c["model"]: c["mean"] for c in t["cells"]}
    assert all(math.isclose(cells[m], wide[m].mean()) for m in VARIANTS)
    assert t["verdict"]["verdict"] in ("topology", "inconclusive at this power")
    d2 = next(c for c in t["contrasts"] if c["name"] == "D2" and c["scope"] == "pooled")
    assert d2["favourable"] and d2["estimate"] == pytest.approx(0.2, abs=0.03)


def test_latex_and_markdown_files(comparison_dir, tmp_path, capsys):
    tex, md = tmp_path / "tables.tex", tmp_path / "tables.md"
    rc = main(
        [
            "analyze",
            str(comparison_dir / "results.db"),
            "--latex",
            str(tex),
            "--markdown",
            str(md),
            "--n-bootstrap",
            "499",
        ]
    )
    assert rc == 0
    assert r"\toprule" in tex.read_text() and "kan\\_mamba" in tex.read_text()
    assert "| kan_mamba |" in md.read_text()
    capsys.readouterr()


@pytest.mark.parametrize(
    "extra,text",
    [
        (["--metric", "acc"], "unknown metric 'acc'; valid choices: accuracy, loss, mse"),
        (["--alpha", "0"], "alpha must be"),
    ],
)
def test_bad_options_exit_2_with_one_line(comparison_dir, capsys, extra, text):
    assert main(["analyze", str(comparison_dir), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert text in err and "\n" not in err


def test_directory_without_results_database(tmp_path, capsys):
    assert main(["analyze", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no results database" in err and "\n" not in err
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_calibrate_simulates_a_grid_shaped_like_the_users(comparison_dir, capsys):
    assert main(["analyze", "--calibrate", str(comparison_dir), "--n-sims", "200", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(doc["shape"]["tasks"]) == ["long_context/mqar", "symbolic/exp_sin"]
    assert doc["shape"]["n_seeds"] == 3  # exp_sin has 3 seeds with every variant (one run diverged)
    assert dict(zip(doc["shape"]["tasks"], doc["shape"]["scales"]))["symbolic/exp_sin"] == "log"
    null = next(r for r in doc["rows"] if r["scenario"] == "null" and r["level"] == "per task")
    assert 0.0 <= null["false_claim"] <= 0.1 and null["n"] == 400
    assert main(["analyze", "--calibrate", str(comparison_dir), "--n-sims", "100"]) == 0
    assert "| null | per task |" in capsys.readouterr().out
    assert main(["analyze", "--calibrate", str(comparison_dir), "--n-sims", "3"]) == 2
    assert "n_sims must be >= 10" in capsys.readouterr().err


def test_scale_flag_switches_the_mse_task_to_raw(comparison_dir, capsys):
    assert main(["analyze", str(comparison_dir), "--json", "--scale", "raw"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tasks"]["symbolic/exp_sin"]["scale"] == "raw" and doc["settings"]["scale"] == "raw"
