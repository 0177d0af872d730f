"""Experiment files (``compare --config FILE``): validation, sweeps as products with distinct keys, a real lr
sweep into the database, the presets as packaged YAML, and ``--set`` parity between train and compare.

References: cell keys are recomputed with hashlib from an independently written config (as in
test_experiments.py); the previous Python presets are re-declared here as literals (copied from the code the YAML
files replace) and expanded with the grid's old composition (the preset's settings merged over each task's);
the database is read with the sqlite3 module.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mamba_kan.cli import main
from mamba_kan.design import VARIANTS
from mamba_kan.experiments.grid import TaskSpec
from mamba_kan.experiments.presets import PAPER, PRESETS, QUICK, STUDY, preset_path
from mamba_kan.experiments.spec import SWEEP_META_KEY, load_experiment
from mamba_kan.training import NON_RESULT_KEYS, TrainConfig

TINY_SETTINGS = {"max_steps": 4, "batch_size": 8, "eval_every": 2, "eval_batch_size": 32, "log_every": 2,
                 "model_cfg": {"d_model": 16, "n_layers": 1, "n_heads": 2}}  # fmt: skip
TINY_SYMBOLIC = {"n_train": 32, "n_val": 16, "n_test": 16}


def independent_key(cfg: TrainConfig, version: str, threads: int = 1) -> str:
    d = json.loads(json.dumps(cfg.resolved().to_dict()))
    for k in NON_RESULT_KEYS:
        d.pop(k, None)
    chash = hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return hashlib.sha256(f"{chash}\n{version}\nthreads={threads}".encode()).hexdigest()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def compare_cells(tmp_path: Path, text: str, *extra: str):
    from mamba_kan.cli.compare import add_arguments, build_cells

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    f = write(tmp_path / "exp.yaml", text)
    return build_cells(parser.parse_args(["--config", str(f), *extra]))


# --- validation ----------------------------------------------------------------------------------------------
BAD_FILES = [
    ("modles: [mlp_mamba]\n", "unknown key 'modles'"),
    ("models: [mlp_mamba]\nlr: 0.001\n", "unknown key 'lr' (training settings go under 'settings:')"),
    ("seeds: ten\n", "'seeds' must be a count"),
    ("seeds: [0, 0]\n", "lists a seed twice"),
    ("models: mlp_mamba_xl\ntasks: [symbolic]\n", "mlp_mamba_xl"),
    ("tasks: [symbolic, {name: timeseries, optoins: {}}]\n", "unknown key in tasks[1] 'optoins'"),
    ("tasks: [{options: {context: 8}}]\n", "tasks[0] has no 'name'"),
    ("tasks: [no_such_family]\n", "no_such_family"),
    ("tasks: [{name: timeseries, options: {contxt: 8}}]\n", "contxt"),
    ("settings: {lr: fast}\n", "'lr' must be a number"),
    ("settings: {learning_rate: 0.1}\n", "unknown setting in settings 'learning_rate'"),
    ("tasks: [{name: symbolic, settings: {max_steps: 0}}]\n", "max_steps must be >= 1"),
    ("sweep: {lr: 0.001}\n", "sweep.lr must be a non-empty list"),
    ("sweep: {lr: [0.001, 0.001]}\n", "repeats a value"),
    ("sweep: {lr: [-1.0]}\n", "lr must be a positive finite number"),
    ("sweep: {learning_rate: [0.1]}\n", "cannot sweep 'learning_rate'"),
    ("sweep: {threads: [1, 2]}\n", "cannot sweep 'threads'"),
    ("sweep: {model_cfg: [{d_model: 8}]}\n", "cannot sweep 'model_cfg'"),
    ("sweep: {lr: {kan_mambaa: [0.1]}}\n", "kan_mambaa"),
    ("sweep: {task_options.context: {mlp_mamba: [8]}}\n", "cannot be swept per variant"),
    ("tasks: [symbolic]\nsweep: {task_options.context: [8, 16]}\n", "no task of the grid (symbolic)"),
    ("tasks: [symbolic/exp_sin, symbolic/exp_sin]\nsweep: {model_cfg.d_mdl: [8]}\n", "d_mdl"),
    (
        "tasks: [{name: symbolic, settings: {lr: 0.1}}, {name: symbolic, settings: {lr: 0.2}}]\n",
        "share the label",
    ),
    ("- symbolic\n", "must hold a mapping"),
    ("models: [mlp_mamba\n", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "needle"), BAD_FILES, ids=[n for _, n in BAD_FILES])
def test_a_bad_experiment_file_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, text, needle):
    f = write(tmp_path / "bad.yaml", text)
    out = tmp_path / "out"
    assert main(["compare", "--config", str(f), "--output-dir", str(out), "--seeds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_an_experiment_file_is_refused_by_train_and_with_a_preset(tmp_path, capsys):
    f = write(tmp_path / "exp.yaml", "tasks: [symbolic]\n")
    assert main(["train", "--config", str(f), "--max-steps", "1"]) == 2
    assert "is an experiment file" in capsys.readouterr().err
    assert (
        main(["compare", "--preset", "quick", "--config", str(f), "--dry-run", "--output-dir", str(tmp_path)])
        == 2
    )
    assert "give one experiment" in capsys.readouterr().err


# --- sweeps --------------------------------------------------------------------------------------------------
SWEEP_FILE = """
models: [mlp_transformer, kan_transformer]
tasks:
  - name: symbolic/exp_sin
    options: {n_train: 32, n_val: 16, n_test: 16}
seeds: [0, 5]
settings: {max_steps: 4, batch_size: 8, eval_every: 2, model_cfg: {d_model: 16, n_layers: 1, n_heads: 2}}
sweep:
  lr: {default: [1.0e-3, 3.0e-3], kan_transformer: [1.0e-2, 3.0e-2, 1.0e-1]}
  model_cfg.n_layers: [1, 2]
"""


def test_a_sweep_expands_to_the_product_per_variant_with_distinct_keys(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cells = compare_cells(tmp_path, SWEEP_FILE)
    lrs = {"mlp_transformer": [1e-3, 3e-3], "kan_transformer": [1e-2, 3e-2, 1e-1]}
    expected = {
        (model, seed, lr, layers)
        for seed in (0, 5) for model, values in lrs.items() for lr in values for layers in (1, 2)
    }  # fmt: skip
    got = {(c.model, c.seed, c.config.lr, c.config.model_cfg["n_layers"]) for c in cells}
    assert got == expected and len(cells) == 2 * (2 + 3) * 2
    assert len({c.cell_key for c in cells}) == len({c.run_id for c in cells}) == len(cells)
    for c in cells:
        cfg = TrainConfig.from_dict({
            "max_steps": 4, "batch_size": 8, "eval_every": 2, "lr": c.sweep["lr"], "threads": 1,
            "model_cfg": {"d_model": 16, "n_layers": c.sweep["model_cfg.n_layers"], "n_heads": 2},
            "model": c.model, "task": "symbolic/exp_sin", "seed": c.seed, "task_options": TINY_SYMBOLIC,
        })  # fmt: skip
        assert c.cell_key == independent_key(cfg, c.code_version)
        assert c.task == "symbolic/exp_sin"  # one task label: analysis groups the lr values by config
        assert (
            f"lr={c.config.lr:g}" in c.run_id
            and f"model_cfg.n_layers={c.sweep['model_cfg.n_layers']}" in c.run_id
        )
    # an explicit setting of a swept key replaces the axis: --set lr=0.5 -> one lr for every variant
    fixed = compare_cells(tmp_path, SWEEP_FILE, "--set", "lr=0.5")
    assert {c.config.lr for c in fixed} == {0.5} and len(fixed) == 2 * 2 * 2
    assert all(set(c.sweep) == {"model_cfg.n_layers"} for c in fixed)


def test_a_task_option_sweep_makes_labelled_task_entries(tmp_path):
    text = """
models: [mlp_mamba]
tasks: [symbolic/exp_sin, {name: timeseries/lorenz, options: {horizon: 4, eval_windows: 8}, label: lorenz}]
seeds: 1
settings: {max_steps: 2}
sweep: {task_options.context: [16, 32]}
"""
    cells = compare_cells(tmp_path, text)
    assert sorted(c.task for c in cells) == ["lorenz@context=16", "lorenz@context=32", "symbolic/exp_sin"]
    assert {c.config.task_options["context"] for c in cells if c.family == "timeseries"} == {16, 32}
    assert next(c for c in cells if c.family == "symbolic").sweep == {}


def test_a_two_value_lr_sweep_runs_through_compare_into_the_database(tmp_path, capsys):
    text = f"""
name: lr-sweep
models: [mlp_transformer]
tasks: [{{name: symbolic/exp_sin, options: {json.dumps(TINY_SYMBOLIC)}}}]
seeds: 1
settings: {json.dumps(TINY_SETTINGS)}
sweep: {{lr: [1.0e-3, 1.0e-2]}}
"""
    f = write(tmp_path / "lr.yaml", text)
    out = tmp_path / "cmp"
    assert main(["compare", "--config", str(f), "--output-dir", str(out), "--workers", "1", "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "lr=0.001" in listed and "lr=0.01" in listed and "2 cells, 0 recorded" in listed
    assert main(["compare", "--config", str(f), "--output-dir", str(out), "--workers", "1"]) == 0
    con = sqlite3.connect(out / "results.db")
    rows = con.execute("SELECT task, status, run_dir, record_json FROM runs").fetchall()
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    con.close()
    assert sorted(json.loads(r[3])["config"]["lr"] for r in rows) == [1e-3, 1e-2]
    assert {r[0] for r in rows} == {"symbolic/exp_sin"} and {r[1] for r in rows} == {"completed"}
    assert len({r[2] for r in rows}) == 2  # two run directories
    assert json.loads(meta[SWEEP_META_KEY]) == ["lr"]


# --- presets as YAML -----------------------------------------------------------------------------------------
# The Python presets these files replace, written out again as literals (the options and settings only).
_FN = {"n_train": 1000, "n_val": 200, "n_test": 500}
OLD_QUICK = {
    "settings": {"max_steps": 400, "batch_size": 16, "eval_every": 100, "eval_batch_size": 256,
                 "model_cfg": {"d_model": 32, "n_layers": 2, "n_heads": 4}},
    "tasks": [TaskSpec("symbolic/exp_sin", _FN), TaskSpec("special_functions/jv", _FN),
              TaskSpec("timeseries/lorenz", {"context": 64, "horizon": 10, "eval_windows": 64}),
              TaskSpec("language/synthetic", {"context": 128, "eval_sequences": 32}),
              TaskSpec("long_context/mqar", {"seq_len": 128, "vocab_size": 256, "n_pairs": 8, "n_val": 32,
                                             "n_test": 64})],
}  # fmt: skip
OLD_PAPER = {
    "settings": {"max_steps": 10000, "batch_size": 32, "eval_every": 500,
                 "model_cfg": {"d_model": 128, "n_layers": 4, "n_heads": 4}},
    "tasks": [TaskSpec("symbolic"), TaskSpec("special_functions"), TaskSpec("timeseries", {"context": 256}),
              TaskSpec("language"), TaskSpec("long_context/mqar", {"seq_len": 512, "n_pairs": 64}),
              TaskSpec("long_context/mqar", {"seq_len": 2048, "n_pairs": 64}),
              TaskSpec("long_context/selective_copying", {"seq_len": 4096, "n_tokens": 16}),
              TaskSpec("long_context/induction_heads",
                       {"seq_len": 256, "eval_lengths": [512, 1024, 2048, 4096, 8192, 16384]})],
}  # fmt: skip
_SEQ = {"d_model": 64, "n_layers": 2, "n_heads": 4}
_SMALL = {
    "max_steps": 1000,
    "batch_size": 32,
    "eval_every": 250,
    "model_cfg": {"d_model": 16, "n_layers": 1, "n_heads": 4, "ref_hidden": 128, "d_state": 4, "expand": 1},
}
_RECALL = {"max_steps": 400, "batch_size": 16, "eval_every": 200, "model_cfg": _SEQ}
OLD_STUDY = {
    "settings": {"eval_batch_size": 256},
    "tasks": [TaskSpec("symbolic/exp_sin", {**_FN, "n_test": 1000}, _SMALL),
              TaskSpec("symbolic/feynman_I.6.20", {**_FN, "n_test": 1000}, _SMALL),
              TaskSpec("timeseries/elnino", {"context": 48, "horizon": 12},
                       {"max_steps": 200, "batch_size": 16, "eval_every": 100, "model_cfg": _SEQ}),
              TaskSpec("language/synthetic", {"context": 32, "eval_sequences": 128},
                       {"max_steps": 300, "batch_size": 16, "eval_every": 150, "model_cfg": _SEQ}),
              TaskSpec("long_context/selective_copying", {"seq_len": 32, "n_tokens": 4, "n_val": 64, "n_test": 256},
                       _RECALL),
              TaskSpec("long_context/induction_heads", {"seq_len": 32, "eval_lengths": [64, 128, 256], "n_val": 64,
                                                        "n_test": 256, "n_extrapolation": 128}, _RECALL)],
}  # fmt: skip


def _old_cells(old, seeds, version):
    """Cells as the previous grid built them: the preset's settings merged over each task's own settings."""
    from mamba_kan.training.config import TrainConfig, config_hash, merge_settings

    keys = []
    for seed, spec, model in itertools.product(seeds, old["tasks"], VARIANTS):
        values = merge_settings(merge_settings(spec.settings, old["settings"]), {"threads": 1})
        values.update(model=model, task=spec.name, seed=seed, task_options=dict(spec.options))
        keys.append(independent_key(TrainConfig.from_dict(values), version))
        assert len(config_hash(TrainConfig.from_dict(values))) == 64
    return sorted(keys)


@pytest.mark.parametrize(("preset", "old"), [(QUICK, OLD_QUICK), (STUDY, OLD_STUDY), (PAPER, OLD_PAPER)],
                         ids=["quick", "study", "paper"])  # fmt: skip
def test_the_yaml_presets_make_the_cells_of_the_previous_python_presets(tmp_path, monkeypatch, preset, old):
    from mamba_kan.cli.compare import add_arguments, build_cells

    monkeypatch.setenv("MAMBA_KAN_CODE_VERSION", "v")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    via_preset = build_cells(parser.parse_args(["--preset", preset.name, "--seed-list", "0", "7"]))
    via_file = build_cells(
        parser.parse_args(["--config", str(preset_path(preset.name)), "--seed-list", "0", "7"])
    )
    assert (
        sorted(c.cell_key for c in via_preset)
        == sorted(c.cell_key for c in via_file)
        == _old_cells(old, [0, 7], via_preset[0].code_version)
    )
    assert [c.run_id for c in via_preset] == [c.run_id for c in via_file]
    assert (
        preset.seeds == load_experiment(preset_path(preset.name)).seeds == {"quick": 3}.get(preset.name, 10)
    )


def test_the_presets_ship_as_package_data():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"configs/presets/*.yaml"' in text
    assert {p.name for p in preset_path("quick").parent.glob("*.yaml")} == {f"{n}.yaml" for n in PRESETS}


# --- --set parity --------------------------------------------------------------------------------------------
def test_set_means_the_same_in_train_and_compare(tmp_path, monkeypatch):
    from mamba_kan.cli import compare as compare_cli
    from mamba_kan.cli import train as train_cli

    monkeypatch.setenv("MAMBA_KAN_CODE_VERSION", "v")
    sets = ["--set", "lr=1e-3", "model_cfg.d_model=16", "--set", "task_options.context=24", "batch_size=4"]
    p = argparse.ArgumentParser()
    train_cli.add_arguments(p)
    (train_cfg,) = train_cli.build_configs(
        p.parse_args(["--model", "mlp_mamba", "--task", "timeseries", *sets])
    )
    q = argparse.ArgumentParser()
    compare_cli.add_arguments(q)
    args = q.parse_args(["--models", "mlp_mamba", "--tasks", "timeseries", "symbolic", "language/synthetic",
                         "--seeds", "1", *sets])  # fmt: skip
    cells = {c.family: c for c in compare_cli.build_cells(args)}
    from mamba_kan.training.config import config_hash

    assert config_hash(cells["timeseries"].config) == config_hash(train_cfg)
    # a grid-wide task option reaches the tasks that have it and only those
    assert cells["language"].config.task_options["context"] == 24
    assert "context" not in cells["symbolic"].config.task_options
    assert cells["symbolic"].config.lr == 1e-3 and cells["symbolic"].config.batch_size == 4


def test_a_task_option_no_task_has_is_refused_naming_it(tmp_path, capsys):
    argv = ["compare", "--tasks", "symbolic", "timeseries", "--seeds", "1", "--dry-run",
            "--output-dir", str(tmp_path / "o"), "--set", "task_options.contxt=64"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'contxt'" in err and "symbolic, timeseries" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--task", "timeseries", "--max-steps", "1", "--set", "task_options.contxt=64"]) == 2
    assert "contxt" in capsys.readouterr().err


def test_set_overrides_a_tasks_own_options_and_a_plain_settings_file_still_works(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBA_KAN_CODE_VERSION", "v")
    plain = write(tmp_path / "train.yaml", "max_steps: 3\nmodel_cfg: {d_model: 16}\n")
    cells = compare_cells(
        tmp_path, "models: [mlp_mamba]\ntasks: [{name: timeseries, options: {context: 40}}]\nseeds: 1\n",
        "--config", str(plain), "--set", "task_options.context=20",
    )  # fmt: skip
    (cell,) = cells
    assert cell.config.task_options["context"] == 20  # the flag wins over the file's task options
    assert cell.config.max_steps == 3 and cell.config.model_cfg["d_model"] == 16


def test_the_presets_load_without_importing_torch():
    # the command line lists the presets when it builds its parsers; that must not import torch
    src = str(Path(__file__).resolve().parents[1] / "src")
    code = (
        "import sys; from mamba_kan.experiments.presets import PRESETS, STUDY; print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_the_documented_example_expands_as_the_docs_say(tmp_path):
    docs = (Path(__file__).resolve().parents[1] / "docs" / "experiments.md").read_text()
    example = docs.split("```yaml\n", 1)[1].split("```", 1)[0]
    cells = compare_cells(tmp_path, example)
    assert len(cells) == 70 and "70 cells" in docs
    lrs = {(c.model, c.config.lr) for c in cells}
    assert lrs == {(m, lr) for m in ("mlp_transformer", "bspline_transformer") for lr in (1e-3, 3e-3)} | {
        ("kan_transformer", lr) for lr in (3e-3, 1e-2, 3e-2)
    }
    assert {c.config.max_steps for c in cells if c.family == "timeseries"} == {300}
    assert {c.config.max_steps for c in cells if c.family == "symbolic"} == {500}


def test_a_tasks_own_sweep_replaces_the_grids_axis_for_that_task_only(tmp_path):
    text = """
models: [mlp_mamba]
tasks:
  - symbolic/exp_sin
  - {name: symbolic/feynman_I.6.20, sweep: {lr: [0.1, 0.2, 0.3]}}
seeds: 1
settings: {max_steps: 2}
sweep: {lr: [0.01, 0.02]}
"""
    cells = compare_cells(tmp_path, text)
    by_task: dict[str, set[float]] = {}
    for c in cells:
        by_task.setdefault(c.task, set()).add(c.config.lr)
    assert by_task == {"symbolic/exp_sin": {0.01, 0.02}, "symbolic/feynman_I.6.20": {0.1, 0.2, 0.3}}
