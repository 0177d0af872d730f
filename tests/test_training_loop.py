"""The training loop of one cell: determinism, the run record, run-directory files, caching, resume, divergence,
failures, early stopping, and what the timing measures. Tiny models on the symbolic task keep each run < 1 s."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import mamba_kan.tasks.registry as registry
from mamba_kan.errors import UserError
from mamba_kan.models import ModelConfig, build_model
from mamba_kan.training import TrainConfig, config_hash, run_experiment
from mamba_kan.training import loop as loop_module

TINY_MODEL = {"d_model": 16, "n_layers": 1, "n_heads": 2}
# the record keys promised by docs/architecture.md (Run API)
RUN_API_KEYS = (
    "model ffn mixer task seed status primary_metric primary_value higher_is_better metrics best_val best_val_step "
    "curves params flops_per_token steps_per_sec tokens_per_sec wall_time_s peak_memory_mb steps error config env "
    "config_hash"
).split()
ENV_KEYS = ("python", "torch", "numpy", "device_name", "threads", "git_commit", "hostname")


def tiny(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        model="mlp_transformer",
        task="symbolic/exp_sin",
        max_steps=30,
        batch_size=16,
        eval_every=10,
        log_every=5,
        eval_batch_size=500,
        threads=1,
        device="cpu",
        model_cfg=dict(TINY_MODEL),
    )
    return TrainConfig(**{**base, **kw})


class Wrapped:
    """A real task with hooks: it remembers the step of the current training batch so a test can make the loss
    non-finite, raise, or change what evaluation reports at a chosen point."""

    def __init__(self, task, *, nan_from=None, raise_at=None, val_metric=None, eval_sleep=0.0):
        self._task = task
        self.nan_from, self.raise_at, self.val_metric, self.eval_sleep = (
            nan_from,
            raise_at,
            val_metric,
            eval_sleep,
        )
        self.step = -1
        self.val_calls = 0
        self.checksums: list[tuple[str, float]] = []

    def __getattr__(self, name):
        return getattr(self._task, name)

    def train_batch(self, step, batch_size):
        self.step = step
        if self.raise_at is not None and step == self.raise_at:
            raise RuntimeError(f"boom at step {step}")
        return self._task.train_batch(step, batch_size)

    def loss(self, output, batch):
        loss = self._task.loss(output, batch)
        return loss * math.nan if self.nan_from is not None and self.step >= self.nan_from else loss

    def evaluate(self, model, split, batch_size, device="cpu"):
        checksum = sum(p.double().sum().item() for p in model.parameters())
        self.checksums.append((split, checksum))
        if split == "val":
            self.val_calls += 1
            time.sleep(self.eval_sleep)
            if self.val_metric is not None:
                return {self._task.primary_metric: self.val_metric(self.val_calls)}
        return self._task.evaluate(model, split, batch_size, device)


@pytest.fixture
def wrap(monkeypatch):
    """Install a Wrapped task for the next runs; returns the list of created wrappers."""
    made: list[Wrapped] = []

    def install(**hooks):
        real = registry.make_task

        def make_task(name, seed, **options):
            w = Wrapped(real(name, seed, **options), **hooks)
            made.append(w)
            return w

        monkeypatch.setattr(loop_module, "make_task", make_task)  # the name the loop builds its task with
        return made

    return install


# --- determinism ---------------------------------------------------------------------------------------------
def test_same_config_and_seed_give_bit_identical_results():
    a, b = run_experiment(tiny()), run_experiment(tiny())
    assert a["status"] == "completed"
    assert a["metrics"] == b["metrics"]  # exact float equality
    assert a["curves"] == b["curves"]
    c = run_experiment(tiny(seed=1))
    assert c["metrics"] != a["metrics"]


def test_running_an_experiment_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    run_experiment(tiny(max_steps=5, eval_every=5))
    assert torch.equal(torch.rand(4), expected)


# --- the record ----------------------------------------------------------------------------------------------
def test_record_has_every_documented_field_and_is_strict_json():
    r = run_experiment(tiny())
    for key in RUN_API_KEYS:
        assert key in r, key
    json.dumps(r, allow_nan=False)
    assert (r["model"], r["ffn"], r["mixer"], r["seed"], r["steps"]) == (
        "mlp_transformer",
        "mlp",
        "transformer",
        0,
        30,
    )
    assert r["task"] == "symbolic/exp_sin" and r["error"] is None
    assert r["primary_metric"] == "mse" and r["higher_is_better"] is False
    assert r["primary_value"] == r["metrics"]["mse"]
    for key in ENV_KEYS:
        assert key in r["env"], key
    assert r["env"]["torch"] == torch.__version__ and r["env"]["threads"] == 1
    # parameters counted independently (unique tensors) on a rebuilt model
    task = registry.make_task("symbolic/exp_sin", seed=0)
    model = build_model("mlp_transformer", ModelConfig(**TINY_MODEL), task.input_spec, task.output_spec, 2)
    assert r["params"] == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert r["config"] == tiny().resolved().to_dict() and r["config_hash"] == config_hash(tiny())
    # curves: train loss every log_every steps, validation metrics every eval_every steps
    train = [c for c in r["curves"] if c["split"] == "train" and c["metric"] == "loss"]
    assert [c["step"] for c in train] == [5, 10, 15, 20, 25, 30]
    assert train[-1]["value"] < train[0]["value"]  # it learns
    val = [c for c in r["curves"] if c["split"] == "val" and c["metric"] == "mse"]
    assert [c["step"] for c in val] == [10, 20, 30]
    best = min(val, key=lambda c: c["value"])
    assert (r["best_val"], r["best_val_step"]) == (best["value"], best["step"])
    assert r["steps_per_sec"] > 0 and r["tokens_per_sec"] == pytest.approx(r["steps_per_sec"] * 16 * 2)
    assert r["peak_memory_mb"] > 10 and r["wall_time_s"] > 0


def test_run_directory_holds_config_result_model_and_spline_snapshots(tmp_path: Path):
    cfg = tiny(model="bspline_transformer", checkpoint_every=10, keep_checkpoints_after_run=True)
    r = run_experiment(cfg, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "config.json", "result.json", "final_model.pt"} <= names
    assert json.loads((tmp_path / "config.json").read_text()) == r["config"]
    assert json.loads((tmp_path / "result.json").read_text()) == r
    assert sorted(n for n in names if n.endswith(".pt") and n.startswith("ckpt")) == [
        "ckpt_step10.pt",
        "ckpt_step20.pt",
    ]
    # final_model.pt: weights-only loadable, enough to rebuild the model and reproduce the test metrics
    saved = torch.load(tmp_path / "final_model.pt", weights_only=True)
    task = registry.make_task(saved["task"], seed=saved["seed"], **saved["task_options"])
    model = build_model(
        saved["variant"], ModelConfig.from_dict(saved["model_config"]), task.input_spec, task.output_spec, 2
    )
    model.load_state_dict(saved["state_dict"])
    assert task.evaluate(model, "test", 500) == r["metrics"]
    # spline snapshots (3 evaluations: the automatic cadence keeps each): functions on a fixed grid
    snaps = sorted((tmp_path / "snapshots").iterdir())
    assert [p.name for p in snaps] == [f"splines_step{s:06d}.pt" for s in (10, 20, 30)]
    snap = torch.load(snaps[0], weights_only=True)
    assert snap["step"] == 10 and snap["x"].shape == (loop_module.SPLINE_GRID_POINTS,)
    assert snap["functions"] and all(f.shape[-1] == snap["x"].numel() for f in snap["functions"].values())
    last = torch.load(snaps[-1], weights_only=True)["functions"]
    assert any(not torch.equal(last[k], snap["functions"][k]) for k in last)  # the splines were trained


def test_finished_result_is_returned_without_retraining(tmp_path: Path, monkeypatch):
    first = run_experiment(tiny(), tmp_path)
    built: list[int] = []
    real_trainer = loop_module.Trainer

    def counting(*args, **kwargs):
        built.append(1)
        return real_trainer(*args, **kwargs)

    monkeypatch.setattr(loop_module, "Trainer", counting)
    assert run_experiment(tiny(threads=2), tmp_path) == first  # threads do not change the config hash
    assert built == []
    second = run_experiment(tiny(lr=1e-3), tmp_path)  # a different config is not served from the cache
    assert built == [1] and second["config_hash"] != first["config_hash"]


# --- resume --------------------------------------------------------------------------------------------------
def test_resume_from_a_checkpoint_gives_the_uninterrupted_result(tmp_path: Path, caplog):
    # log points not aligned with checkpoints; checkpoints kept after the run, to resume it as if it had died
    cfg = tiny(checkpoint_every=10, max_steps=40, log_every=3, keep_checkpoints_after_run=True)
    full = run_experiment(cfg, tmp_path / "full")
    part = tmp_path / "part"
    run_experiment(cfg, part)
    # pretend the process died after step 30, and its last checkpoint is damaged: the one before (step 20,
    # the last 2 are kept) must be used
    (part / "result.json").unlink()
    damaged = part / "ckpt_step30.pt"
    damaged.write_bytes(damaged.read_bytes()[:500])
    resumed = run_experiment(cfg, part)
    assert "skipping checkpoint" in caplog.text
    assert resumed["resumed_from"] == 20
    for key in ("metrics", "curves", "best_val", "best_val_step", "primary_value", "steps"):
        assert resumed[key] == full[key], key


# --- divergence and failures ---------------------------------------------------------------------------------
def test_non_finite_loss_is_recorded_as_diverged_with_its_step(tmp_path: Path, wrap):
    wrap(nan_from=7)
    r = run_experiment(tiny(), tmp_path)
    assert r["status"] == "diverged" and r["diverged_step"] == 7 and "step 7" in r["error"]
    assert r["steps"] == 10  # stopped at the next check (log_every=5), not at max_steps
    assert r["metrics"] == {} and r["primary_value"] is None
    json.dumps(r, allow_nan=False)
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "diverged"
    assert not (tmp_path / "final_model.pt").exists()


def test_a_huge_learning_rate_diverges_without_crashing():
    r = run_experiment(tiny(lr=1e4, grad_clip=0.0))
    assert r["status"] == "diverged" and r["diverged_step"] is not None and r["diverged_step"] < 30


def test_exception_inside_a_run_is_recorded_as_failed_and_retried(tmp_path: Path, wrap, monkeypatch):
    wrap(raise_at=3)
    r = run_experiment(tiny(), tmp_path)
    assert r["status"] == "failed" and "boom at step 3" in r["error"]
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"
    monkeypatch.undo()
    again = run_experiment(tiny(), tmp_path)  # a failed record is not a cache hit
    assert again["status"] == "completed"


def test_failure_while_building_is_recorded_with_the_same_keys(monkeypatch):
    ok = run_experiment(tiny(max_steps=5, eval_every=5))

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(loop_module, "build_model", broken)
    r = run_experiment(tiny(max_steps=5, eval_every=5))
    assert r["status"] == "failed" and "out of memory" in r["error"]
    assert list(r) == list(ok)
    # no task was built, yet the failure carries the task's own metric and direction
    task = registry.make_task("symbolic/exp_sin", seed=0)
    assert (r["primary_metric"], r["higher_is_better"]) == (task.primary_metric, task.higher_is_better)
    json.dumps(r, allow_nan=False)


def test_trainer_steps_reproduce_the_loops_training_curve():
    """The public step API (what the bench times) is the loop's own step: stepping a Trainer by hand and logging
    every log_every steps gives the train-loss curve run_experiment records."""
    cfg = tiny(max_steps=10, eval_every=10, log_every=5).resolved()
    reference = run_experiment(cfg)
    expected = [c["value"] for c in reference["curves"] if c["split"] == "train" and c["metric"] == "loss"]
    with torch.random.fork_rng():
        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            trainer = loop_module.Trainer(cfg, device=torch.device("cpu"))
            trainer.model.train()
            for _ in range(cfg.max_steps):
                trainer.step()
                if trainer.global_step % cfg.log_every == 0:
                    trainer.sync()
                    assert trainer.log_train() is None  # no non-finite loss
        finally:
            torch.use_deterministic_algorithms(False)
            torch.set_num_threads(prev)
    got = [c["value"] for c in trainer.state.curves if c["metric"] == "loss"]
    assert trainer.global_step == 10 and got == expected
    assert trainer.evaluate("test") == reference["metrics"]


def test_bad_settings_raise_before_any_work():
    with pytest.raises(UserError, match="task option.*nope"):
        run_experiment(tiny(task_options={"nope": 1}))


# --- early stopping and timing -------------------------------------------------------------------------------
def test_early_stopping_stops_and_tests_the_best_weights(wrap):
    made = wrap(val_metric=lambda call: float(call))  # mse gets worse at every evaluation: best is the first
    r = run_experiment(tiny(max_steps=60, early_stopping_patience=2))
    assert r["stopped_early"] and r["steps"] == 30
    assert (r["best_val"], r["best_val_step"]) == (1.0, 10)
    checks = made[-1].checksums
    first_val = next(c for s, c in checks if s == "val")
    test = [c for s, c in checks if s == "test"]
    assert test == [first_val]  # the test split saw the weights of step 10, not of step 30
    assert checks[-2][1] != first_val  # (and those did change after step 10)


def test_steps_per_second_excludes_evaluation(wrap):
    wrap(eval_sleep=0.3)
    r = run_experiment(tiny())
    sleep = 3 * 0.3  # three validation passes
    assert 0 < r["train_time_s"] < r["wall_time_s"] - sleep
    # the first step of a session (allocation) is not timed either
    assert r["steps_per_sec"] == pytest.approx((30 - 1) / r["train_time_s"])


# --- precision and tracking ----------------------------------------------------------------------------------
def test_bf16_autocast_runs_on_cpu():
    r = run_experiment(tiny(precision="bf16", max_steps=10, eval_every=10))
    assert r["status"] == "completed" and r["precision"] == "bf16"
    assert all(math.isfinite(v) for v in r["metrics"].values() if v is not None)
    assert r["metrics"] != run_experiment(tiny(max_steps=10, eval_every=10))["metrics"]


def test_tensorboard_event_files(tmp_path: Path):
    pytest.importorskip("tensorboard")
    run_experiment(tiny(tensorboard=True, max_steps=10, eval_every=5), tmp_path)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_wandb_missing_is_a_one_line_user_error():
    try:
        import wandb  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("wandb is installed")
    with pytest.raises(UserError, match="wandb") as info:
        run_experiment(tiny(wandb=True, max_steps=2, eval_every=2))
    assert "\n" not in str(info.value)


def test_cpu_runs_default_to_one_thread_and_restore_the_callers_setting():
    before = torch.get_num_threads()
    r = run_experiment(tiny(threads=None, max_steps=3, eval_every=3))
    assert r["env"]["threads"] == 1 and r["config"]["threads"] is None
    assert torch.get_num_threads() == before
    if (torch.get_num_threads() or 1) >= 2:
        assert run_experiment(tiny(threads=2, max_steps=3, eval_every=3))["env"]["threads"] == 2
