"""What a run leaves in its directory: spline snapshot cadence (``snapshot_every``), checkpoint retention during a
run (``keep_checkpoints``) and after it (``keep_checkpoints_after_run``), resume after a kill with retention, the
train flags for these settings, and that none of them changes a config hash or a cell key."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from mamba_kan.errors import UserError
from mamba_kan.experiments.grid import TaskSpec, expand_grid
from mamba_kan.training import TrainConfig, config_hash, run_experiment
from mamba_kan.training import loop as loop_module

TINY_MODEL = {"d_model": 16, "n_layers": 1, "n_heads": 2}


def tiny(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        model="bspline_transformer",
        task="symbolic/exp_sin",
        max_steps=20,
        batch_size=16,
        eval_every=4,
        log_every=4,
        eval_batch_size=200,
        threads=1,
        device="cpu",
        model_cfg=dict(TINY_MODEL),
        task_options={"n_train": 128, "n_val": 64, "n_test": 64},
    )
    return TrainConfig(**{**base, **kw})


def snapshot_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.removeprefix("splines_step")) for p in (run_dir / "snapshots").glob("*.pt"))


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.removeprefix("ckpt_step")) for p in run_dir.glob("ckpt_step*.pt"))


# --- snapshot cadence ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("max_steps", "eval_every", "snapshot_every", "expected"),
    [
        # evaluations at 4, 8, ..., 40 (10 of them); automatic: every ceil(10 / 4) = 3rd, plus first and last
        (40, 4, None, [4, 12, 24, 36, 40]),
        (40, 4, 5, [4, 20, 40]),  # first, every 5th (= 20, 40), last
        (40, 4, 1, list(range(4, 41, 4))),  # every evaluation (the earlier behaviour)
        (40, 4, 0, [40]),  # the last one only
        (42, 4, 5, [4, 20, 40, 42]),  # the last evaluation is at max_steps, off the eval_every grid
        (12, 4, None, [4, 8, 12]),  # 3 evaluations: all of them
    ],
)
def test_snapshot_cadence_yields_the_expected_files(
    tmp_path, max_steps, eval_every, snapshot_every, expected
):
    cfg = tiny(max_steps=max_steps, eval_every=eval_every, snapshot_every=snapshot_every)
    r = run_experiment(cfg, tmp_path)
    assert r["status"] == "completed"
    assert snapshot_steps(tmp_path) == expected
    # the evaluations themselves are unchanged: snapshots only select which ones are saved
    val_steps = sorted({c["step"] for c in r["curves"] if c["split"] == "val"})
    assert set(expected) <= set(val_steps) and val_steps[-1] == max_steps


def test_an_early_stop_saves_the_last_snapshot_at_the_stopping_step(tmp_path, monkeypatch):
    real = loop_module.Trainer.evaluate

    def flat_validation(
        self, split
    ):  # no improvement after the first evaluation: patience 2 stops at step 12
        return {"mse": 1.0} if split == "val" else real(self, split)

    monkeypatch.setattr(loop_module.Trainer, "evaluate", flat_validation)
    r = run_experiment(tiny(max_steps=40, early_stopping_patience=2, snapshot_every=0), tmp_path)
    assert r["stopped_early"] and r["steps"] == 12
    assert snapshot_steps(tmp_path) == [12]


def test_reporting_finds_first_and_last_snapshot_with_the_default_cadence(tmp_path):
    from mamba_kan.reporting.splines import snapshot_files

    run_experiment(tiny(max_steps=40, model="kan_mamba"), tmp_path)
    steps = [s for s, _ in snapshot_files(tmp_path)]
    assert (
        steps[0] == 4 and steps[-1] == 40 and len(steps) == 5
    )  # about five per run, first and last among them
    first = torch.load(tmp_path / "snapshots" / "splines_step000004.pt", weights_only=True)
    assert first["step"] == 4 and first["functions"]


def test_a_snapshot_file_holds_its_values_not_the_tensors_they_were_sliced_from(tmp_path):
    run_experiment(tiny(max_steps=4, model="kan_mamba", snapshot_every=0), tmp_path)
    (path,) = (tmp_path / "snapshots").glob("*.pt")
    snap = torch.load(path, weights_only=True)
    tensors = [snap["x"], *snap["functions"].values()]
    values = sum(t.numel() * t.element_size() for t in tensors)
    # torch.save's zip archive adds a pickle and an aligned record per storage: well under 1 KiB each
    assert path.stat().st_size < values + 1024 * (len(tensors) + 1)


# --- checkpoint retention ------------------------------------------------------------------------------------
def test_a_finished_run_deletes_its_checkpoints_and_keeps_the_final_model(tmp_path):
    r = run_experiment(tiny(checkpoint_every=4), tmp_path)
    assert r["status"] == "completed"
    assert checkpoint_steps(tmp_path) == [] and not list(tmp_path.glob("*.sha256"))
    assert {"final_model.pt", "result.json", "config.json", "config.yaml"} <= {
        p.name for p in tmp_path.iterdir()
    }
    # and the finished run is still served from result.json, not retrained
    assert run_experiment(tiny(checkpoint_every=4), tmp_path) == r


def test_keep_checkpoints_after_run_keeps_the_newest_k(tmp_path):
    run_experiment(tiny(checkpoint_every=4, keep_checkpoints=3, keep_checkpoints_after_run=True), tmp_path)
    assert checkpoint_steps(tmp_path) == [
        8,
        12,
        16,
    ]  # checkpoints at 4..16 (none at max_steps), newest 3 kept
    assert all((tmp_path / f"ckpt_step{s}.pt.sha256").is_file() for s in (8, 12, 16))


def test_a_diverged_run_is_finished_too_and_a_failed_one_keeps_its_checkpoints(tmp_path, monkeypatch):
    diverged = run_experiment(tiny(lr=1e4, grad_clip=0.0, checkpoint_every=2), tmp_path / "d")
    assert diverged["status"] == "diverged" and checkpoint_steps(tmp_path / "d") == []
    real = loop_module.Trainer.evaluate

    def failing_test(self, split):
        if split == "test":
            raise RuntimeError("test split unreadable")
        return real(self, split)

    monkeypatch.setattr(loop_module.Trainer, "evaluate", failing_test)
    failed = run_experiment(tiny(checkpoint_every=4), tmp_path / "f")
    assert failed["status"] == "failed" and checkpoint_steps(tmp_path / "f") == [12, 16]  # for the retry


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so the loop neither records nor handles it."""


def test_resume_after_a_kill_with_retention_k_gives_the_uninterrupted_result(tmp_path, monkeypatch):
    cfg = tiny(max_steps=30, eval_every=5, checkpoint_every=5, keep_checkpoints=1, log_every=3)
    full = run_experiment(cfg, tmp_path / "full")
    real_step = loop_module.Trainer.step

    def dies_at_23(self):
        if self.state.step == 23:
            raise Killed
        real_step(self)

    monkeypatch.setattr(loop_module.Trainer, "step", dies_at_23)
    part = tmp_path / "part"
    with pytest.raises(Killed):
        run_experiment(cfg, part)
    assert checkpoint_steps(part) == [20] and not (part / "result.json").exists()  # only the newest one kept
    monkeypatch.setattr(loop_module.Trainer, "step", real_step)
    resumed = run_experiment(cfg, part)
    assert resumed["resumed_from"] == 20
    for key in ("metrics", "curves", "best_val", "best_val_step", "primary_value", "steps"):
        assert resumed[key] == full[key], key
    assert checkpoint_steps(part) == []  # finished: deleted
    assert snapshot_steps(part) == snapshot_steps(tmp_path / "full")  # the same snapshots as without the kill


# --- settings ------------------------------------------------------------------------------------------------
def test_output_settings_change_no_config_hash_and_no_cell_key():
    a = tiny()
    b = tiny(snapshot_every=0, keep_checkpoints=5, keep_checkpoints_after_run=True, checkpoint_every=2)
    assert config_hash(a) == config_hash(b)
    spec = TaskSpec("symbolic/exp_sin", {"n_train": 64, "n_val": 32, "n_test": 32})
    settings = {"max_steps": 12, "model_cfg": TINY_MODEL}
    plain = expand_grid(["mlp_mamba", "kan_mamba"], [spec], [0], settings, version="v1")
    other = {**settings, "snapshot_every": 2, "keep_checkpoints": 4, "keep_checkpoints_after_run": True}
    kept = expand_grid(["mlp_mamba", "kan_mamba"], [spec], [0], other, version="v1")
    assert [c.cell_key for c in kept] == [c.cell_key for c in plain]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"keep_checkpoints": 0}, "keep_checkpoints must be >= 1"),
        ({"snapshot_every": -1}, "snapshot_every must be >= 0"),
        ({"keep_checkpoints_after_run": "yes"}, "keep_checkpoints_after_run"),
    ],
)
def test_bad_output_settings_are_user_errors(settings, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**settings)


def test_train_flags_set_the_output_settings():
    from mamba_kan.cli.train import add_arguments, build_configs

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--model", "kan_mamba", "--task", "symbolic", "--max-steps", "100"]
    args = parser.parse_args(
        [*base, "--snapshot-every", "0", "--keep-checkpoints", "3", "--keep-checkpoints-after-run"]
    )
    (cfg,) = build_configs(args)
    assert (cfg.snapshot_every, cfg.keep_checkpoints, cfg.keep_checkpoints_after_run) == (0, 3, True)
    (default,) = build_configs(parser.parse_args(base))
    # 100 steps, an evaluation every 10: 10 evaluations, a snapshot every ceil(10 / 4) = 3rd
    assert (default.snapshot_every, default.keep_checkpoints, default.keep_checkpoints_after_run) == (
        math.ceil(10 / 4), 2, False)  # fmt: skip
