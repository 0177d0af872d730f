"""The fairness sheet travels with the results: ``compare`` stores one per task, the report shows it.

Reference: the sheet's widths and parameter counts must equal those of the models the cells actually trained
(each run records its own ``params`` and ``ffn_hidden``); the database is read back with the sqlite3 module.
"""

from __future__ import annotations

import json
import sqlite3

from mamba_kan.experiments.grid import TaskSpec, expand_grid
from mamba_kan.experiments.runner import SweepOptions, run_sweep
from mamba_kan.experiments.store import RESULTS_DB, read_runs
from mamba_kan.reporting.data import load_report_data
from mamba_kan.reporting.tables import fairness_rows, results_markdown

TINY = {"max_steps": 4, "batch_size": 8, "eval_every": 4, "eval_batch_size": 64, "log_every": 2,
        "model_cfg": {"d_model": 32, "n_layers": 1, "n_heads": 2}}  # fmt: skip


def test_compare_stores_a_fairness_sheet_per_task_matching_the_trained_models(tmp_path):
    tasks = [TaskSpec("symbolic/exp_sin", {"n_train": 64, "n_val": 32, "n_test": 32})]
    models = ["mlp_transformer", "kan_transformer", "kan_mamba"]
    cells = expand_grid(models, tasks, [0], TINY)
    summary = run_sweep(cells, tmp_path, SweepOptions(workers=1))
    assert summary.counts == {"completed": 3}

    con = sqlite3.connect(tmp_path / RESULTS_DB)
    stored = dict(con.execute("SELECT key, value FROM meta WHERE key LIKE 'fairness/%'").fetchall())
    con.close()
    assert set(stored) == {"fairness/symbolic/exp_sin"}
    sheet = json.loads(stored["fairness/symbolic/exp_sin"])
    assert [v["variant"] for v in sheet["variants"]] == models

    records = {
        r["model"]: json.loads((tmp_path / r["run_dir"] / "result.json").read_text())
        for _, r in read_runs(tmp_path).iterrows()
    }
    for v in sheet["variants"]:
        assert v["params"] == records[v["variant"]]["params"]
        assert v["ffn_hidden"] == records[v["variant"]]["ffn_hidden"]
        assert v["decayed_params"] + v["not_decayed_params"] == v["params"]

    data = load_report_data(tmp_path)  # one seed: no statistics, the tables still render
    assert list(data.fairness) == ["symbolic/exp_sin"]
    md = results_markdown(data)
    assert "### Fairness sheet" in md
    for row in fairness_rows(sheet):
        assert "| " + " | ".join(row) + " |" in md
