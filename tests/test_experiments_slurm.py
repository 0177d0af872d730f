"""The slurm backend through submitit's local executor (the same submit/poll/result path as on a cluster, with
jobs as processes on this machine), ``--runs-dir`` outside the comparison directory, and ``mamba-kan collect``.

Reference: the metrics a slurm sweep stores equal those of ``run_experiment`` called directly in this process
(same cell, same thread count); the database is read back with the sqlite3 module.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from mamba_kan.cli import main
from mamba_kan.experiments.grid import TaskSpec, expand_grid
from mamba_kan.experiments.runner import SweepOptions, run_sweep
from mamba_kan.experiments.store import RESULTS_DB, read_runs
from mamba_kan.training import run_experiment

submitit = pytest.importorskip("submitit")

TINY = {"max_steps": 6, "batch_size": 8, "eval_every": 6, "eval_batch_size": 64, "log_every": 3,
        "model_cfg": {"d_model": 32, "n_layers": 1, "n_heads": 2}}  # fmt: skip
TASK = TaskSpec("symbolic/exp_sin", {"n_train": 64, "n_val": 32, "n_test": 32})


def _metrics(db: Path) -> dict[str, dict[str, float]]:
    """run_id -> final metrics, read from the stored run records with sqlite3."""
    con = sqlite3.connect(db)
    rows = con.execute("SELECT run_id, record_json FROM runs").fetchall()
    con.close()
    return {run_id: json.loads(record)["metrics"] for run_id, record in rows}


@pytest.mark.slow
def test_slurm_local_executor_sweep_then_collect(tmp_path):
    cells = expand_grid(["mlp_transformer", "kan_mamba"], [TASK], [0], TINY)
    out, shared = tmp_path / "local_results", tmp_path / "shared" / "runs"
    options = SweepOptions(backend="slurm", threads=1, slurm_cluster="local", runs_dir=str(shared))
    summary = run_sweep(cells, out, options)
    assert summary.counts == {"completed": 2} and summary.backend == "slurm"

    # run directories live on the "shared" storage, the database stays in the local comparison directory
    runs = read_runs(out)
    assert sorted(runs["run_dir"]) == sorted(str(shared / c.run_id) for c in cells)
    assert all((shared / c.run_id / "result.json").is_file() for c in cells)
    assert not (out / "runs").exists()

    # same numbers as the cell run directly here (the result came back through submitit's job folder)
    direct = run_experiment(cells[0].config, None)
    stored = _metrics(out / RESULTS_DB)[cells[0].run_id]
    assert stored == pytest.approx({k: v for k, v in direct["metrics"].items()}, rel=0, abs=0)

    # collect the shared run directories into a fresh database: same cells, same keys, so compare skips them
    fresh = tmp_path / "collected"
    assert main(["collect", str(shared), "--output-dir", str(fresh)]) == 0
    collected = read_runs(fresh)
    assert set(collected["cell_key"]) == {c.cell_key for c in cells}
    assert _metrics(fresh / RESULTS_DB) == _metrics(out / RESULTS_DB)
    again = run_sweep(cells, fresh, SweepOptions(workers=1, threads=1))
    assert again.skipped == 2 and again.ran == 0
    # collecting twice records nothing new
    assert main(["collect", str(shared), "--output-dir", str(fresh)]) == 0
    assert len(read_runs(fresh)) == 2


def test_collect_skips_foreign_files_with_one_line(tmp_path, capsys):
    src = tmp_path / "runs" / "junk"
    src.mkdir(parents=True)
    (src / "result.json").write_text(json.dumps({"hello": 1}))
    assert main(["collect", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a mamba-kan result" in err[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["collect", "/nonexistent/runs", "--output-dir", "OUT"], "does not exist"),
        (
            ["compare", "--tasks", "symbolic", "--slurm-partition", "gpu", "--output-dir", "OUT"],
            "--backend slurm",
        ),
        (["compare", "--backend", "slurm", "--slurm-param", "novalue", "--output-dir", "OUT"], "KEY=VALUE"),
    ],
)
def test_slurm_and_collect_bad_input(tmp_path, capsys, argv, message):
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()
