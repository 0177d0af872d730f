"""The comparison grid: expansion and cell keys, presets, the compare/export commands, bad input, and a small
end-to-end sweep (skip on re-run, new cells on a changed setting, failures recorded and retried).

References: cell keys are recomputed here with hashlib from the resolved config (independently of the grid code);
the metrics a sweep stores are compared with `run_experiment` called directly, in this process, without pool or
database; the database is inspected with the sqlite3 module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from mamba_kan.cli import main
from mamba_kan.errors import UserError
from mamba_kan.experiments.grid import CODE_VERSION_ENV, TaskSpec, code_version, expand_grid, parse_seeds
from mamba_kan.experiments.presets import PAPER, QUICK, get_preset
from mamba_kan.experiments.runner import SweepOptions, run_sweep
from mamba_kan.experiments.store import RESULTS_DB, SCHEMA_VERSION, read_runs
from mamba_kan.training import NON_RESULT_KEYS, TrainConfig, run_experiment

SIX = ["mlp_transformer", "bspline_transformer", "kan_transformer", "mlp_mamba", "bspline_mamba", "kan_mamba"]
TINY = {"max_steps": 12, "batch_size": 8, "eval_every": 6, "eval_batch_size": 64, "log_every": 3,
        "model_cfg": {"d_model": 32, "n_layers": 1, "n_heads": 2}}  # fmt: skip
TINY_SYMBOLIC = TaskSpec("symbolic/exp_sin", {"n_train": 64, "n_val": 32, "n_test": 32})


def independent_key(cfg: TrainConfig, version: str, threads: int = 1) -> str:
    d = json.loads(json.dumps(cfg.resolved().to_dict()))
    for k in NON_RESULT_KEYS:
        d.pop(k, None)
    chash = hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return hashlib.sha256(f"{chash}\n{version}\nthreads={threads}".encode()).hexdigest()


# --- grid ----------------------------------------------------------------------------------------------------
def test_grid_is_the_full_product_with_independent_keys(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cells = expand_grid(["mlp_transformer", "kan_mamba"], [TaskSpec("symbolic"), TaskSpec("timeseries")], [0, 1],
                        TINY, version="v1")  # fmt: skip
    assert len(cells) == 2 * 2 * 2
    assert {(c.model, c.task, c.seed) for c in cells} == {
        (m, t, s) for m in ("mlp_transformer", "kan_mamba") for t in ("symbolic/exp_sin", "timeseries/lorenz")
        for s in (0, 1)
    }  # fmt: skip
    assert [c.seed for c in cells] == [0] * 4 + [1] * 4  # seed-major: an early stop leaves whole seeds
    for c in cells:
        cfg = TrainConfig.from_dict({**TINY, "model": c.model, "task": c.task, "seed": c.seed})
        assert c.cell_key == independent_key(cfg, "v1", threads=1) and c.config.threads == 1
        assert c.cell_key[:10] in c.run_id and c.config.task == c.task
    assert len({c.cell_key for c in cells}) == len({c.run_id for c in cells}) == 8


def test_cell_key_changes_with_results_settings_only(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    def key(settings, version="v1", task=None):
        task = task or TaskSpec("symbolic")
        return expand_grid(["mlp_mamba"], [task], [0], settings, version=version)[0].cell_key

    base = key(TINY)
    assert key({**TINY, "lr": 1e-3}) != base
    assert key({**TINY, "model_cfg": {**TINY["model_cfg"], "d_model": 48}}) != base
    assert key(TINY, task=TaskSpec("symbolic", {"n_train": 128})) != base
    assert key(TINY, version="v2") != base
    # the thread count changes a CPU run's floating-point sums: part of the key; OMP_NUM_THREADS is its default
    assert key({**TINY, "threads": 3}) != base and key({**TINY, "threads": 1}) == base
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert key(TINY) == key({**TINY, "threads": 3})
    monkeypatch.delenv("OMP_NUM_THREADS")
    # settings that do not change what a run computes keep the cell
    assert key({**TINY, "checkpoint_every": 2}) == base
    # a family name and its default configuration are the same cell; so is an explicit default value
    assert key(TINY, task=TaskSpec("symbolic/exp_sin")) == base
    assert key({**TINY, "model_cfg": {**TINY["model_cfg"], "grid_size": 5}}) == base


def test_option_sweep_gets_distinct_task_labels():
    specs = [
        TaskSpec("timeseries", {"context": 32}),
        TaskSpec("timeseries", {"context": 64}),
        TaskSpec("symbolic"),
    ]
    cells = expand_grid(["mlp_mamba"], specs, [0], TINY, version="v1")
    assert [c.task for c in cells] == ["timeseries/lorenz@context=32", "timeseries/lorenz@context=64",
                                       "symbolic/exp_sin"]  # fmt: skip
    assert all(c.family in ("timeseries", "symbolic") for c in cells)


def test_code_version_can_be_pinned(monkeypatch):
    code_version.cache_clear()
    try:
        unpinned = code_version()
        assert unpinned.startswith("0.") and len(unpinned.split("+")[1]) == 12
        monkeypatch.setenv(CODE_VERSION_ENV, "pinned-1")
        code_version.cache_clear()
        assert code_version() == "pinned-1"
    finally:
        code_version.cache_clear()


def test_parse_seeds():
    assert parse_seeds(3, None) == [0, 1, 2]
    assert parse_seeds(None, ["3,7", "9"]) == [3, 7, 9]
    for bad in (0, -2):
        with pytest.raises(UserError, match="--seeds must be >= 1"):
            parse_seeds(bad, None)
    with pytest.raises(UserError, match=">= 0"):
        parse_seeds(None, ["-1"])
    with pytest.raises(UserError, match="integers"):
        parse_seeds(None, ["a"])


def test_presets_cover_the_design():
    quick = expand_grid(
        list(QUICK.models), QUICK.task_specs(), range(QUICK.seeds), QUICK.settings, version="v"
    )
    assert len(quick) == 6 * 5 * 3 and sorted({c.model for c in quick}) == sorted(SIX)
    assert {c.family for c in quick} == {
        "symbolic",
        "special_functions",
        "timeseries",
        "language",
        "long_context",
    }
    assert all("@" not in c.task for c in quick)  # one configuration per family: plain family/config labels
    paper_tasks = PAPER.task_specs()
    lengths = sorted(s.options["seq_len"] for s in paper_tasks if s.name.startswith("long_context"))
    assert lengths == [256, 512, 2048, 4096] and PAPER.seeds == 10 and PAPER.settings["max_steps"] == 10000
    with pytest.raises(UserError, match="valid choices: quick, paper"):
        get_preset("fast")


# --- bad input: one line, exit status 2, nothing written -----------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "kan_lstm"], "valid choices: mlp_transformer"),
        (["--tasks", "vision"], "valid choices:"),
        (["--tasks", "symbolic/nope"], "configuration of task 'symbolic'"),
        (["--preset", "huge"], "valid choices: quick, paper"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--seeds", "-3"], "--seeds must be >= 1"),
        (["--max-steps", "0"], "max_steps"),
        (["--backend", "pbs"], "valid choices: local, ray, slurm"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--backend", "ray", "--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    code = main(["compare", "--output-dir", str(out), "--tasks", "symbolic", "--seeds", "1", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_output_dir_that_is_a_file_or_unwritable(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["compare", "--output-dir", str(f), "--tasks", "symbolic", "--seeds", "1"]) == 2
    assert "not a directory" in capsys.readouterr().err and f.read_text() == "x"
    # /proc refuses new entries even to root
    assert (
        main(["compare", "--output-dir", "/proc/mamba-kan-results", "--tasks", "symbolic", "--seeds", "1"])
        == 2
    )
    assert "not writable" in capsys.readouterr().err


def test_database_of_another_schema_version_is_refused(tmp_path, capsys):
    db = tmp_path / RESULTS_DB
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    before = db.read_bytes()
    assert main(["compare", "--output-dir", str(tmp_path), "--tasks", "symbolic", "--seeds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "schema version" in err
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [RESULTS_DB]


# --- a small sweep end to end --------------------------------------------------------------------------------
def direct(model: str, spec: TaskSpec, seed: int, settings=TINY) -> dict:
    """The reference: run_experiment in this process, no pool, no database."""
    cfg = TrainConfig.from_dict({**settings, "model": model, "task": spec.name, "seed": seed,
                                 "task_options": dict(spec.options), "threads": 1})  # fmt: skip
    return run_experiment(cfg, None)


BAD_OPTIONS = {"context": 8, "horizon": 16}  # a forecast horizon longer than its context: the task rejects it


def run_with_bad_options(job):
    """A pool's cell function (module level: pickled by name): the mlp_mamba cell runs with options that
    ``expand_grid`` would have refused, so that it fails inside its run, as a cell may."""
    from mamba_kan.experiments.worker import execute_cell

    if job.config["model"] == "mlp_mamba":
        job = dataclasses.replace(job, config={**job.config, "task_options": {**job.config["task_options"],
                                                                                 **BAD_OPTIONS}})  # fmt: skip
    return execute_cell(job)


def test_bad_task_options_are_refused_when_the_grid_is_expanded():
    with pytest.raises(UserError, match="context .8. must be >= horizon .16."):
        expand_grid(["mlp_mamba"], [TaskSpec("timeseries", BAD_OPTIONS)], [0], TINY)


def test_sweep_stores_what_run_experiment_computes_records_failures_and_retries_them(tmp_path):
    from mamba_kan.experiments.backends import LocalBackend

    models = ["mlp_transformer", "kan_mamba"]
    cells = expand_grid(models, [TINY_SYMBOLIC], [0], TINY)
    cells += expand_grid(["mlp_mamba"], [TaskSpec("timeseries", {"context": 16, "horizon": 4})], [0], TINY)

    def backend():
        return LocalBackend(workers=1, threads=1, cell_fn=run_with_bad_options)

    summary = run_sweep(cells, tmp_path, backend=backend())
    assert summary.ran == 3 and summary.counts == {"completed": 2, "failed": 1}
    runs = read_runs(tmp_path).set_index("model")
    for m in models:
        ref = direct(m, TINY_SYMBOLIC, 0)
        row = runs.loc[m]
        assert row["status"] == "completed" and row["metrics"] == ref["metrics"]
        assert row["primary_value"] == ref["primary_value"] and row["params"] == ref["params"]
        assert (tmp_path / row["run_dir"] / "result.json").is_file()
    failed = runs.loc["mlp_mamba"]
    assert failed["status"] == "failed" and "horizon" in failed["error"] and failed["primary_metric"] == "mse"
    # the same grid again: nothing runs (recorded failures included), nothing is rewritten
    again = run_sweep(cells, tmp_path, backend=backend())
    assert again.ran == 0 and again.skipped == 3
    # --retry-failed re-runs the failed cell only
    assert run_sweep(cells, tmp_path, SweepOptions(retry_failed=True), backend=backend()).ran == 1
    con = sqlite3.connect(tmp_path / RESULTS_DB)
    assert dict(con.execute("SELECT model, attempts FROM runs").fetchall()) == {
        "mlp_transformer": 1, "kan_mamba": 1, "mlp_mamba": 2}  # fmt: skip
    assert con.execute("SELECT n_skipped FROM sweeps ORDER BY sweep_id").fetchall() == [(0,), (3,), (2,)]
    con.close()


def test_compare_export_and_report_commands(tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "cmp"
    argv = ["compare", "--models", "mlp_mamba", "kan_mamba", "--tasks", "symbolic/exp_sin", "--seed-list", "0,3",
            "--workers", "2", "--output-dir", str(out), "--set", "batch_size=8", "--set", "eval_every=6",
            "--set", "model_cfg.d_model=32", "--set", "model_cfg.n_layers=1", "--set", "task_options.n_train=64",
            "--set", "task_options.n_val=32", "--set", "task_options.n_test=32", "--max-steps", "12"]  # fmt: skip
    assert main([*argv, "--generate-report"]) == 0
    text = capsys.readouterr().out
    assert "[1/4 |" in text and "[4/4 |" in text and "ETA" in text  # progress lines (not a terminal here)
    assert f"results: {out / RESULTS_DB}" in text
    report_lines = [ln for ln in text.splitlines() if ln.startswith("report:")]
    assert len(report_lines) == 1
    try:
        from mamba_kan.analysis import analyze_directory  # noqa: F401
        from mamba_kan.reporting import generate_report  # noqa: F401
    except ImportError:
        assert "not available yet" in report_lines[0]
    else:
        assert report_lines[0] == f"report:  {out / 'report'}" and (out / "analysis.json").is_file()
    assert main(["export", str(out), "--format", "csv"]) == 0
    runs = pd.read_csv(out / "export" / "runs.csv")
    assert sorted(runs["seed"]) == [0, 0, 3, 3] and set(runs["status"]) == {"completed"}
    assert (runs["config.model_cfg.d_model"] == 32).all()
    # the same command again skips both cells; a changed setting makes two new cells
    assert main(argv) == 0
    assert "4 skipped as already recorded, 0 run" in capsys.readouterr().out
    assert main([*argv, "--dry-run"]) == 0
    assert "4 cells, 4 recorded" in capsys.readouterr().out
    assert main([*argv, "--set", "lr=1e-3", "--dry-run"]) == 0
    assert "4 cells, 0 recorded" in capsys.readouterr().out


def test_run_full_comparison_script_is_a_thin_shell(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "run_full_comparison.py"
    proc = subprocess.run([sys.executable, str(script), "--tasks", "symbolic", "--seeds", "0",
                           "--output-dir", str(tmp_path / "x")], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "--seeds must be >= 1" in proc.stderr and not (tmp_path / "x").exists()
