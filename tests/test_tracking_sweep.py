"""Tracking in sweeps: ``compare --tensorboard/--wandb`` checked before any cell runs, TensorBoard HParams sessions
read back from the event files, W&B offline runs read back from their ``.wandb`` files (group, tags, name, config),
and tracking never changes a cell's key."""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

import pytest

from mamba_kan.cli import main
from mamba_kan.experiments.grid import TaskSpec, expand_grid
from mamba_kan.experiments.runner import SweepOptions, _tracked_config, sweep_group
from mamba_kan.training import TrainConfig, config_hash
from mamba_kan.training.tracking import FINAL_METRICS, factor_tags

TINY = {"max_steps": 12, "batch_size": 8, "eval_every": 6, "eval_batch_size": 64, "log_every": 3,
        "model_cfg": {"d_model": 32, "n_layers": 1, "n_heads": 2}}  # fmt: skip
TINY_SYMBOLIC = TaskSpec("symbolic/exp_sin", {"n_train": 64, "n_val": 32, "n_test": 32})
MODELS = ["mlp_mamba", "kan_transformer"]
TINY_ARGS = ["--models", *MODELS, "--tasks", "symbolic/exp_sin", "--seeds", "1", "--workers", "1",
             "--max-steps", "12", "--set", "batch_size=8", "--set", "eval_every=6", "--set", "eval_batch_size=64",
             "--set", "model_cfg.d_model=32", "--set", "model_cfg.n_layers=1", "--set", "model_cfg.n_heads=2",
             "--set", "task_options.n_train=64", "--set", "task_options.n_val=32",
             "--set", "task_options.n_test=32"]  # fmt: skip


def runs_of(out: Path) -> dict[str, dict]:
    """model -> the results database's row of its run (run_id, run_dir, primary_value, best_val, cell_key...)."""
    from mamba_kan.experiments.store import read_runs

    return {
        row["model"]: {**row, "run_dir": out / row["run_dir"]} for row in read_runs(out).to_dict("records")
    }


# --- the up-front check --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "package", "flag"),
    [
        (["--tensorboard"], "tensorboard", "--tensorboard"),
        (["--set", "tensorboard=true"], "tensorboard", "tensorboard=true"),
        (["--wandb"], "wandb", "--wandb"),
        (["--set", "wandb=true"], "wandb", "wandb=true"),
    ],
)
def test_a_missing_tracking_package_is_one_line_exit_2_before_anything_runs(
    tmp_path, capsys, monkeypatch, argv, package, flag
):
    # a None entry in sys.modules is how Python marks a module as unimportable: find_spec returns None and
    # `import` raises ImportError, exactly as when the package is not installed
    monkeypatch.setitem(sys.modules, package, None)
    out = tmp_path / "out"
    code = main(["compare", "--output-dir", str(out), *TINY_ARGS, *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert flag in err and f"pip install {package}" in err
    assert not out.exists()  # nothing written: no database, no run directory, no failed cell
    # --dry-run runs the same checks
    assert main(["compare", "--output-dir", str(out), *TINY_ARGS, *argv, "--dry-run"]) == 2
    assert not out.exists()


# --- cell keys -----------------------------------------------------------------------------------------------
def test_tracking_settings_do_not_change_cell_keys_or_result_hashes():
    plain = expand_grid(MODELS, [TINY_SYMBOLIC], [0, 1], TINY, version="v1")
    tracked = expand_grid(
        MODELS,
        [TINY_SYMBOLIC],
        [0, 1],
        {
            **TINY,
            "tensorboard": True,
            "wandb": True,
            "wandb_project": "p",
            "wandb_group": "g",
            "wandb_tags": ["x"],
            "run_name": "r",
        },  # fmt: skip
        version="v1",
    )
    assert [c.cell_key for c in tracked] == [c.cell_key for c in plain]
    assert [c.run_id for c in tracked] == [c.run_id for c in plain]
    # what a worker receives with --tensorboard --wandb still hashes to the cell's config hash
    options = SweepOptions(tensorboard=True, wandb=True, wandb_project="proj")
    for cell in plain:
        config = _tracked_config(cell, options, "grp")
        assert config["tensorboard"] and config["wandb"] and config["wandb_project"] == "proj"
        assert config_hash(TrainConfig.from_dict(config)) == cell.config_hash


def test_compare_with_tensorboard_writes_hparams_sessions_and_keeps_cell_keys(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "cmp"
    assert main(["compare", "--output-dir", str(out), *TINY_ARGS, "--tensorboard"]) == 0
    runs = runs_of(out)
    assert sorted(runs) == sorted(MODELS)
    for model, run in runs.items():
        ea = EventAccumulator(str(run["run_dir"] / "tensorboard"))
        ea.Reload()
        content = ea.PluginTagToContent("hparams")
        data = {tag: plugin_data_pb2.HParamsPluginData.FromString(raw) for tag, raw in content.items()}
        assert set(data) == {
            "_hparams_/experiment",
            "_hparams_/session_start_info",
            "_hparams_/session_end_info",
        }
        hp = data["_hparams_/session_start_info"].session_start_info.hparams
        ffn, mixer = model.split("_")
        assert (hp["ffn"].string_value, hp["mixer"].string_value, hp["model"].string_value) == (
            ffn,
            mixer,
            model,
        )
        assert hp["task"].string_value == "symbolic/exp_sin" and hp["seed"].number_value == 0
        assert hp["lr"].number_value == pytest.approx(3e-3) and hp["max_steps"].number_value == 12
        assert hp["model_cfg.d_model"].number_value == 32 and hp["status"].string_value == "completed"
        assert json.loads(hp["task_options"].string_value)["n_train"] == 64
        assert "tensorboard" not in hp and "wandb" not in hp  # tracking settings are not hyperparameters
        experiment = data["_hparams_/experiment"].experiment
        assert [m.name.tag for m in experiment.metric_infos] == list(FINAL_METRICS)
        # the final metrics, against what the results database recorded (event files store float32)
        test = ea.Scalars("hparam/test_primary")[-1]
        assert test.step == 12 and test.value == pytest.approx(run["primary_value"], rel=1e-6)
        assert ea.Scalars("hparam/best_val_primary")[-1].value == pytest.approx(run["best_val"], rel=1e-6)
        assert [e.step for e in ea.Scalars("val/mse")] == [6, 12]
    capsys.readouterr()
    # the same grid without tracking is the same cells: nothing re-runs
    assert main(["compare", "--output-dir", str(out), *TINY_ARGS, "--no-tensorboard"]) == 0
    assert "2 skipped as already recorded, 0 run" in capsys.readouterr().out
    assert {m: r["cell_key"] for m, r in runs_of(out).items()} == {m: r["cell_key"] for m, r in runs.items()}


# --- W&B -----------------------------------------------------------------------------------------------------
def read_wandb_records(run_dir: Path) -> list:
    """Every record of a run's offline ``.wandb`` file: W&B's transaction log is the LevelDB log format (a 7-byte
    file header ``:W&B`` + magic + version, then 32 KiB blocks of chunks with a 7-byte header: CRC32C, length,
    type FULL/FIRST/MIDDLE/LAST), each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, buf, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding up to the block's end
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            records.append(record)
    return records


def test_compare_with_wandb_offline_groups_the_sweep_and_tags_each_factor(tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network; the workers inherit the environment
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "cmp"
    assert (
        main(["compare", "--output-dir", str(out), *TINY_ARGS, "--wandb", "--wandb-project", "mk-test"]) == 0
    )
    capsys.readouterr()
    group = sweep_group(out)
    assert re.fullmatch(r"cmp-[0-9a-f]{8}", group)
    for model, run in runs_of(out).items():
        records = read_wandb_records(run["run_dir"])
        (info,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert info.run_group == group and info.project == "mk-test"
        assert info.display_name == run["run_id"]
        ffn, mixer = model.split("_")
        assert list(info.tags) == [f"ffn:{ffn}", f"mixer:{mixer}", "task:symbolic/exp_sin", "seed:0"]
        config = {item.key: json.loads(item.value_json) for item in info.config.update}
        assert config["model"] == model and config["lr"] == pytest.approx(3e-3)
        assert config["model_cfg"]["d_model"] == 32 and config["task_options"]["n_train"] == 64
        summary = {
            item.key: json.loads(item.value_json)
            for r in records
            if r.WhichOneof("record_type") == "summary"
            for item in r.summary.update
            if item.key
        }
        assert summary["hparam/test_primary"] == pytest.approx(run["primary_value"])
        assert summary["hparam/best_val_primary"] == pytest.approx(run["best_val"])


def test_sweep_group_is_stable_per_directory_and_distinct_between_directories(tmp_path):
    a, b = tmp_path / "x" / "results", tmp_path / "y" / "results"
    assert sweep_group(a) == sweep_group(tmp_path / "x" / "." / "results")
    assert sweep_group(a) != sweep_group(b) and sweep_group(a).startswith("results-")


def test_worker_config_precedence_for_group_tags_and_name():
    settings = {**TINY, "wandb": True, "wandb_group": "mine"}
    (cell,) = expand_grid(["bspline_mamba"], [TINY_SYMBOLIC], [3], settings, version="v1")
    config = _tracked_config(cell, SweepOptions(), "sweep-default")
    assert config["wandb_group"] == "mine"  # --set wandb_group=... is kept
    assert config["wandb_tags"] == ["ffn:bspline", "mixer:mamba", "task:symbolic/exp_sin", "seed:3"]
    assert config["run_name"] == cell.run_id
    assert _tracked_config(cell, SweepOptions(wandb_group="flag"), "d")["wandb_group"] == "flag"
    # without W&B the worker gets the cell's config unchanged
    (plain,) = expand_grid(["bspline_mamba"], [TINY_SYMBOLIC], [3], TINY, version="v1")
    assert _tracked_config(plain, SweepOptions(), "sweep-default") == plain.config.to_dict()


def test_factor_tags():
    assert factor_tags("kan_transformer", "long_context/mqar@seq_len=512", 7) == [
        "ffn:kan", "mixer:transformer", "task:long_context/mqar@seq_len=512", "seed:7"]  # fmt: skip
    assert factor_tags("my_plugin_model", "t" * 100, 0)[0] == "model:my_plugin_model"
    assert all(len(t) <= 64 for t in factor_tags("mlp_mamba", "t" * 100, 0))
