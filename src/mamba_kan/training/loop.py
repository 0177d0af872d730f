"""The training loop for one (variant, task, seed) cell of the factorial grid.

A plain PyTorch loop: AdamW (decay / no-decay groups), linear warmup + cosine decay, gradient clipping, evaluation
on the validation split every ``eval_every`` steps, optional early stopping on the task's primary metric, and a
final evaluation on the test split.

What makes the numbers trustworthy:
- Determinism: the seed fixes model init (``torch.manual_seed`` inside a ``fork_rng`` block, so the caller's
  global RNG is untouched) and the data (``task.train_batch(step, ...)`` is a pure function of seed and step).
  On CPU ``torch.use_deterministic_algorithms(True)`` is on, so a rerun is bit-for-bit identical.
- Resume: a checkpoint holds model, optimizer, scheduler, RNG states, the step (= the data position), the curves,
  the early-stopping state and the running loss sum, so a killed run continues exactly where its last checkpoint
  left it and ends with the same numbers.
- Divergence: the loss is accumulated on the device; every ``log_every`` steps one sync checks it and the index
  of the first non-finite step (tracked on the device, no per-step sync). A NaN/inf stops the run with status
  ``diverged``; any other exception gives status ``failed`` with the message. Neither escapes.
- Timing: steps/s counts training steps only; evaluation, checkpointing, logging and the first step of each
  session (lazy allocation, compilation) are outside the timed spans.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from mamba_kan.errors import UserError
from mamba_kan.models import ModelConfig, build_model, parse_variant
from mamba_kan.record import RunRecord, failed_record
from mamba_kan.tasks.registry import make_task
from mamba_kan.training import checkpoint as ckpt
from mamba_kan.training.config import TrainConfig, config_hash, default_threads
from mamba_kan.training.distributed import (
    DistInfo,
    all_reduce_mean,
    all_reduce_min,
    barrier,
    loss_weight,
    setup_distributed,
    shard_batch,
    teardown_distributed,
)
from mamba_kan.training.env import environment, peak_memory_mb, reset_peak_memory, retain_freed_memory
from mamba_kan.training.optim import build_optimizer, build_scheduler
from mamba_kan.training.tracking import Tracker, final_metrics, make_tracker, run_hparams

log = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, Any]], None]
SPLINE_GRID_POINTS = 101
#: statuses whose result.json is returned by a re-run instead of training (see read_cached_result)
FINISHED = ("completed", "diverged")
_NO_BAD_STEP = 2**62  # "no non-finite loss yet" (an all_reduce MIN over ranks needs a large sentinel, not -1)


# --- small helpers -------------------------------------------------------------------------------------------
def resolve_device(pref: str, info: DistInfo) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but CUDA is not available; valid choices here: auto, cpu")
    if pref in ("cuda", "auto") and torch.cuda.is_available():
        index = info.local_rank if info.enabled else torch.cuda.current_device()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def resolve_precision(pref: str, device: torch.device) -> str:
    if pref != "auto":
        return pref
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _is_better(value: float, best: float | None, higher_is_better: bool) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if higher_is_better else value < best


def _rng_state() -> dict[str, Any]:
    """Global RNG states (dropout draws from torch's). numpy's global RNG is not used: tasks draw from their own
    seeded Generators (mamba_kan.tasks.common)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


@contextlib.contextmanager
def _session(cfg: TrainConfig, device: torch.device) -> Iterator[None]:
    """Process-wide settings for one run, restored afterwards: threads, deterministic algorithms (CPU), and the
    global RNG (forked, so running an experiment does not change the caller's random stream). On CPU the
    allocator is also told to keep freed memory (:func:`retain_freed_memory`; not restored, it changes no value)."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=devices):
        try:
            # unset: OMP_NUM_THREADS else 1 on CPU, the same rule compare applies to its cells
            threads = (
                cfg.threads
                if cfg.threads is not None
                else (default_threads() if device.type == "cpu" else None)
            )
            if threads is not None:
                torch.set_num_threads(threads)
            if device.type == "cpu":
                torch.use_deterministic_algorithms(True)
                # deterministic mode fills every torch.empty with NaN so that a read of uninitialised memory
                # shows up; no op of ours reads one (a rerun is bit-identical either way, tested), and the fill
                # costs a pass over every fresh buffer: ~3-6% of a quick-size step on this CPU
                torch.utils.deterministic.fill_uninitialized_memory = False
                retain_freed_memory()  # no page faults for the same buffers every step (process-wide, kept)
            yield
        finally:
            torch.set_num_threads(prev_threads)
            torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
            torch.utils.deterministic.fill_uninitialized_memory = prev_fill


def snapshot_due(cfg: TrainConfig, step: int, last: bool) -> bool:
    """Whether the evaluation at ``step`` saves a spline snapshot: the first evaluation, every
    ``snapshot_every``-th one and the ``last`` (at max_steps or an early stop); only the last when
    ``snapshot_every`` is 0. A function of the step, so a resumed run saves the same files as an uninterrupted
    one. ``cfg`` must be resolved."""
    assert cfg.eval_every is not None and cfg.snapshot_every is not None, "resolve the config first"
    if last:
        return True
    if cfg.snapshot_every == 0:
        return False
    index = step // cfg.eval_every  # evaluation k (1 = the first) is at step k * eval_every
    return index == 1 or index % cfg.snapshot_every == 0


def read_cached_result(run_dir: Path, chash: str) -> dict[str, Any] | None:
    """``result.json`` of a finished run with this config hash (completed or diverged; failed runs are retried)."""
    path = run_dir / "result.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None
    if result.get("config_hash") != chash or result.get("status") not in FINISHED:
        return None
    return result


# --- the run -------------------------------------------------------------------------------------------------
@dataclass
class _State:
    """Everything besides model/optimizer/scheduler that a checkpoint must carry to resume exactly."""

    step: int = 0
    curves: list[dict[str, Any]] = field(default_factory=list)
    best_val: float | None = None
    best_val_step: int | None = None
    evals_since_best: int = 0
    stopped_early: bool = False
    train_time_s: float = 0.0  # timed training seconds so far (all sessions)
    timed_steps: int = 0
    wall_time_s: float = 0.0  # wall time of earlier sessions


class Trainer:
    """One cell's task, model, optimizer, schedule and training state, with the steps of its training loop.

    :func:`run_experiment` drives it through :meth:`run`; the bench times the same :meth:`step` against a bare
    step of the same model. The caller owns the process settings (threads, deterministic algorithms:
    ``run_experiment`` sets them for the run). ``cfg`` must be resolved (``TrainConfig.resolved()``).

    Public steps: :meth:`step` (one optimizer step on the next batch, no host sync), :meth:`sync` (wait for the
    device), :meth:`log_train` (the synchronising log point: mean loss since the last one, divergence check),
    :meth:`evaluate` (metrics of a split), :meth:`run` (the whole loop, returns the record).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        run_dir: Path | None = None,
        device: torch.device | None = None,
        info: DistInfo | None = None,
        progress: ProgressFn | None = None,
        chash: str | None = None,
    ) -> None:
        info = info if info is not None else DistInfo()
        device = device if device is not None else resolve_device(cfg.device, info)
        chash = chash if chash is not None else config_hash(cfg)
        self.cfg, self.chash, self.run_dir, self.device, self.info = cfg, chash, run_dir, device, info
        self.progress = progress
        self.precision = resolve_precision(cfg.precision, device)
        self.write = run_dir is not None and info.is_main
        # One seed drives everything. Reseeding before each construction keeps model init independent of how
        # much randomness the task's constructor happens to use.
        torch.manual_seed(cfg.seed)
        self.task = make_task(cfg.task, seed=cfg.seed, **cfg.task_options)
        first = self.task.train_batch(0, cfg.batch_size)
        self.seq_len = int(first.inputs.shape[-1]) if first.inputs.dim() > 1 else 1
        torch.manual_seed(cfg.seed)
        self.model: nn.Module = build_model(
            cfg.model,
            ModelConfig.from_dict(cfg.model_cfg),
            self.task.input_spec,
            self.task.output_spec,
            self.seq_len,
        ).to(device)
        self.optimizer = build_optimizer(self.model, cfg, device)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.train_model: nn.Module = self.model
        if info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        self.state = _State()
        self.best_state: dict[str, Tensor] | None = None
        self.loss_sum = torch.zeros((), device=device)
        self.grad_norm_sum = torch.zeros((), device=device)
        self.loss_count = 0
        self.first_bad = torch.full((), _NO_BAD_STEP, dtype=torch.long, device=device)
        self.resumed_from: int | None = None
        self.use_reg = cfg.kan_reg_l1 > 0 or cfg.kan_reg_entropy > 0
        self.t_start = time.perf_counter()  # restarted by run(); wall time counts from there
        self.tracker: Tracker = Tracker()

    # --- checkpoints ---------------------------------------------------------------------------------------
    def _checkpoint_state(self) -> dict[str, Any]:
        s = self.state
        return {
            "step": s.step,
            "config_hash": self.chash,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_state(),
            "curves": s.curves,
            "best_val": s.best_val,
            "best_val_step": s.best_val_step,
            "evals_since_best": s.evals_since_best,
            "stopped_early": s.stopped_early,
            "best_model": self.best_state,
            "loss_sum": self.loss_sum,
            "grad_norm_sum": self.grad_norm_sum,
            "loss_count": self.loss_count,
            "first_bad": self.first_bad,
            "train_time_s": s.train_time_s,
            "timed_steps": s.timed_steps,
            "wall_time_s": s.wall_time_s + (time.perf_counter() - self.t_start),
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"])
        self.state = _State(
            step=int(saved["step"]),
            curves=list(saved["curves"]),
            best_val=saved["best_val"],
            best_val_step=saved["best_val_step"],
            evals_since_best=int(saved["evals_since_best"]),
            stopped_early=bool(saved["stopped_early"]),
            train_time_s=float(saved["train_time_s"]),
            timed_steps=int(saved["timed_steps"]),
            wall_time_s=float(saved["wall_time_s"]),
        )
        self.best_state = saved["best_model"]
        self.loss_sum = saved["loss_sum"].to(self.device)
        self.grad_norm_sum = saved["grad_norm_sum"].to(self.device)
        self.loss_count = int(saved["loss_count"])
        self.first_bad = saved["first_bad"].to(self.device)
        self.resumed_from = self.state.step

    def _try_resume(self) -> None:
        if self.run_dir is None:
            return
        saved = ckpt.load_latest_checkpoint(self.run_dir, self.chash)
        barrier(self.info)  # every rank has read before rank 0 may prune anything
        if saved is None:
            if self.write and ckpt.list_checkpoints(self.run_dir):
                log.warning("no usable checkpoint in %s: starting from scratch", self.run_dir)
                ckpt.remove_checkpoints(self.run_dir)
            return
        self._restore(saved)
        log.info("resumed %s from step %d", self.run_dir, self.state.step)
        if self.write:  # newer files were unusable; drop them so pruning keeps the good ones
            for step, path in ckpt.list_checkpoints(self.run_dir):
                if step > self.state.step:
                    path.unlink(missing_ok=True)
                    path.with_name(path.name + ".sha256").unlink(missing_ok=True)

    def _save_checkpoint(self) -> None:
        if self.write:
            assert self.run_dir is not None
            ckpt.save_checkpoint(
                self.run_dir, self.state.step, self._checkpoint_state(), keep=self.cfg.keep_checkpoints
            )
        barrier(self.info)

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far (= the position in the task's training data)."""
        return self.state.step

    # --- evaluation ----------------------------------------------------------------------------------------
    def evaluate(self, split: str) -> dict[str, float]:
        """The task's metrics of the current model on ``split`` (``val`` or ``test``)."""
        self.model.eval()
        try:
            with _autocast(self.device, self.precision):
                return self.task.evaluate(self.model, split, self.cfg.eval_batch_size, self.device)
        finally:
            self.model.train()

    def _validate(self) -> bool:
        """Evaluate on the validation split, update curves / best / early stopping; True = stop now."""
        s, task = self.state, self.task
        metrics = self.evaluate("val")
        s.curves.extend({"step": s.step, "split": "val", "metric": k, "value": v} for k, v in metrics.items())
        value = metrics.get(task.primary_metric, math.nan)
        if _is_better(value, s.best_val, task.higher_is_better):
            s.best_val, s.best_val_step, s.evals_since_best = value, s.step, 0
            if self.cfg.early_stopping_patience is not None:
                self.best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
                }
        else:
            s.evals_since_best += 1
        self.tracker.log(s.step, {f"val/{k}": v for k, v in metrics.items()})
        self._emit({"event": "eval", "step": s.step, "metrics": metrics})
        if self.info.is_main:
            log.info(
                "step %d/%d  val %s %.6g  (best %s at step %s)",
                s.step, self.cfg.max_steps, task.primary_metric, value, s.best_val, s.best_val_step,
            )  # fmt: skip
        patience = self.cfg.early_stopping_patience
        stop = patience is not None and s.evals_since_best >= patience
        if snapshot_due(self.cfg, s.step, last=stop or s.step >= self.cfg.max_steps):
            self._save_splines()
        return stop

    def _save_splines(self) -> None:
        fn = getattr(self.model, "spline_functions", None)
        if not self.write or fn is None:
            return
        lo, hi = self.model.cfg.grid_range  # type: ignore[union-attr]
        xs = torch.linspace(lo, hi, SPLINE_GRID_POINTS, device=self.device)
        # clone: the functions are slices of larger tensors (all neurons / all KAN edges), and torch.save writes
        # a view's whole storage (measured: 675 KB for 26 KB of values on a quick-preset kan_mamba)
        functions = {name: f.detach().to("cpu").clone() for name, f in fn(xs).items()}
        if functions:
            assert self.run_dir is not None
            path = self.run_dir / "snapshots" / f"splines_step{self.state.step:06d}.pt"
            ckpt.atomic_torch_save(path, {"step": self.state.step, "x": xs.cpu(), "functions": functions})

    # --- logging -------------------------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        if self.progress is not None and self.info.is_main:
            self.progress(event)

    def log_train(self) -> int | None:
        """The log point: record the mean train loss (and grad norm, lr) since the last log point and return the
        first non-finite step, if any. Reads the device (one sync)."""
        s = self.state
        loss = all_reduce_mean(self.loss_sum, self.info).item() / self.loss_count
        grad_norm = self.grad_norm_sum.item() / self.loss_count
        lr = self.scheduler.get_last_lr()[0]
        bad = int(all_reduce_min(self.first_bad, self.info).item())
        self.loss_sum.zero_()
        self.grad_norm_sum.zero_()
        self.loss_count = 0
        for metric, value in (("loss", loss), ("grad_norm", grad_norm), ("lr", lr)):
            s.curves.append({"step": s.step, "split": "train", "metric": metric, "value": value})
        self.tracker.log(s.step, {"train/loss": loss, "train/grad_norm": grad_norm, "train/lr": lr})
        self._emit({"event": "step", "step": s.step, "loss": loss})
        if not self.progress:
            log.debug("step %d/%d  train loss %.6g", s.step, self.cfg.max_steps, loss)
        return bad if bad != _NO_BAD_STEP else None

    # --- one optimizer step --------------------------------------------------------------------------------
    def step(self) -> None:
        """One optimizer step on the next training batch; loss and divergence stay on the device (no sync)."""
        cfg, step = self.cfg, self.state.step
        global_batch = self.task.train_batch(step, cfg.batch_size)
        local = shard_batch(global_batch, self.info)
        weight = loss_weight(global_batch, local, self.info)
        batch = local.to(self.device)
        with _autocast(self.device, self.precision):
            out = self.train_model(batch.inputs)
        loss = self.task.loss(out, batch) if weight > 0 else out.float().sum() * 0.0
        total = (
            loss + self.model.regularization_loss(cfg.kan_reg_l1, cfg.kan_reg_entropy)
            if self.use_reg
            else loss
        )
        (total * weight if weight != 1.0 else total).backward()
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        # foreach: one batched norm and scale instead of a loop over the tensors (same values; torch's default
        # takes the loop on CPU)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm, foreach=True)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        total = total.detach()
        # first non-finite step, kept on the device: no host sync inside the step
        bad = ~torch.isfinite(total)
        self.first_bad = torch.where(bad, torch.clamp(self.first_bad, max=step), self.first_bad)
        self.loss_sum += loss.detach() * weight
        self.grad_norm_sum += grad_norm.detach()
        self.loss_count += 1
        self.state.step = step + 1

    def sync(self) -> None:
        """Wait for the device to finish queued work (a no-op on CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- main ----------------------------------------------------------------------------------------------
    def run(self) -> RunRecord:
        """Resume if a checkpoint allows, train to the end (or early stop), test; the record of the run. A
        diverged or failed run is recorded, not raised (a UserError is raised)."""
        cfg, s = self.cfg, self.state
        self.t_start = time.perf_counter()
        reset_peak_memory(self.device)
        self._try_resume()
        s = self.state
        if self.write:
            assert self.run_dir is not None
            ckpt.atomic_write_text(
                self.run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False)
            )
            ckpt.atomic_write_json(self.run_dir / "config.json", cfg.to_dict())
        if self.info.is_main:
            self.tracker = make_tracker(cfg, self.run_dir)
        status, error, diverged_step = "completed", None, None
        self._emit({"event": "start", "step": s.step, "total": cfg.max_steps})
        metrics: dict[str, float] = {}
        try:
            diverged_step = self._loop()
            if diverged_step is not None:
                status = "diverged"
                error = f"non-finite loss at step {diverged_step}"
                log.warning("%s on %s, seed %d: %s", cfg.model, cfg.task, cfg.seed, error)
            else:
                if self.best_state is not None:  # early stopping: test the best-validation weights
                    self.model.load_state_dict(self.best_state)
                metrics = self.evaluate("test")
        except UserError:
            raise
        except Exception as exc:  # recorded, never raised: one bad cell must not stop a grid
            status, error, metrics = "failed", _describe(exc), {}
            log.error("run failed: %s\n%s", error, traceback.format_exc())
        self.tracker.log(s.step, {f"test/{k}": v for k, v in metrics.items()})
        primary = metrics.get(self.task.primary_metric) if status == "completed" else None
        speed = s.timed_steps / s.train_time_s if s.train_time_s > 0 else None
        self.tracker.finish(s.step, run_hparams(cfg, status), final_metrics(primary, s.best_val, speed))
        self.tracker.close()
        self._emit({"event": "end", "step": s.step, "status": status})
        return self._result(status, error, diverged_step, metrics)

    def _loop(self) -> int | None:
        """Train to ``max_steps`` (or early stop); return the first non-finite step if the loss diverged."""
        cfg, s = self.cfg, self.state
        assert cfg.eval_every is not None and cfg.checkpoint_every is not None, "resolve the config first"
        ckpt_every = cfg.checkpoint_every if self.run_dir is not None else 0
        self.model.train()
        first_in_session = True
        pending = 0  # steps since the last timing boundary
        t0 = time.perf_counter()
        while s.step < cfg.max_steps and not s.stopped_early:
            self.step()
            pending += 1
            step = s.step
            at_log = step % cfg.log_every == 0 or step == cfg.max_steps
            at_eval = step % cfg.eval_every == 0 or step == cfg.max_steps
            at_ckpt = ckpt_every > 0 and step % ckpt_every == 0 and step < cfg.max_steps
            if not (first_in_session or at_log or at_eval or at_ckpt):
                continue
            self.sync()
            if not first_in_session:  # the first step of a session pays for allocation / compilation
                s.train_time_s += time.perf_counter() - t0
                s.timed_steps += pending
            first_in_session = False
            if at_log and (bad := self.log_train()) is not None:
                return bad
            if at_eval:
                s.stopped_early = self._validate()
            if at_ckpt:
                self._save_checkpoint()
            pending = 0
            t0 = time.perf_counter()
        return None

    def _result(
        self, status: str, error: str | None, diverged_step: int | None, metrics: dict[str, float]
    ) -> RunRecord:
        cfg, s, task = self.cfg, self.state, self.task
        ffn, mixer = parse_variant(cfg.model)
        steps_per_sec = s.timed_steps / s.train_time_s if s.train_time_s > 0 else None
        samples = None if steps_per_sec is None else steps_per_sec * cfg.batch_size
        return RunRecord(
            model=cfg.model,
            ffn=ffn,
            mixer=mixer,
            task=task.name,
            seed=cfg.seed,
            status=status,
            error=error,
            diverged_step=diverged_step,
            primary_metric=task.primary_metric,
            primary_value=metrics.get(task.primary_metric) if status == "completed" else None,
            higher_is_better=task.higher_is_better,
            floor=task.floor,
            metrics=metrics,
            best_val=s.best_val,
            best_val_step=s.best_val_step,
            stopped_early=s.stopped_early,
            curves=s.curves,
            params=self.model.num_params(),
            flops_per_token=self.model.flops_per_token(),
            ffn_hidden=getattr(self.model, "ffn_hidden", None),
            seq_len=self.seq_len,
            steps_per_sec=steps_per_sec,
            train_time_s=s.train_time_s,
            samples_per_sec=samples,
            tokens_per_sec=None if samples is None else samples * task.tokens_per_sample,
            wall_time_s=s.wall_time_s + (time.perf_counter() - self.t_start),
            peak_memory_mb=peak_memory_mb(self.device),
            steps=s.step,
            resumed_from=self.resumed_from,
            precision=self.precision,
            world_size=self.info.world_size,
            config=cfg.to_dict(),
            task_description=task.describe(),
            env=environment(self.device),
            config_hash=self.chash,
        )

    def save_final_model(self) -> None:
        if not self.write:
            return
        assert self.run_dir is not None
        ckpt.atomic_torch_save(
            self.run_dir / "final_model.pt",
            {
                "state_dict": self.model.state_dict(),
                "model_config": self.cfg.model_cfg,
                "variant": self.cfg.model,
                "task": self.task.name,
                "task_options": self.cfg.task_options,
                "seed": self.cfg.seed,
                "seq_len": self.seq_len,
                "ffn_hidden": getattr(self.model, "ffn_hidden", None),
            },
        )


def _setup_failure(cfg: TrainConfig, chash: str, device: torch.device, error: str, wall: float) -> RunRecord:
    """The record of a run that failed before its first step."""
    return failed_record(
        cfg.to_dict(),
        error,
        wall_time_s=wall,
        peak_memory_mb=peak_memory_mb(device),
        steps=0,
        precision=resolve_precision(cfg.precision, device),
        world_size=1,
        env=environment(device),
        config_hash=chash,
    )


def run_experiment(
    cfg: TrainConfig, run_dir: Path | str | None = None, *, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Train one (variant, task, seed) cell and return its JSON-serialisable record (see docs/architecture.md).

    With ``run_dir``: checkpoints ``ckpt_step{N}.pt`` (the newest ``keep_checkpoints`` kept while the run is in
    progress, all deleted once it has finished unless ``keep_checkpoints_after_run``), ``config.yaml`` /
    ``config.json``, ``result.json``, ``final_model.pt`` and spline snapshots ``snapshots/splines_step{N:06d}.pt``
    (see :func:`snapshot_due`) are written there; an existing ``result.json`` with the same config hash is
    returned without retraining, and a checkpoint of the same config is resumed. Bad settings raise
    :class:`UserError`; a diverged or failed run is returned, not raised.
    ``progress`` (optional) receives small event dicts at log/eval points (main process only).
    """
    cfg = cfg.resolved()
    chash = config_hash(cfg)
    path = Path(run_dir) if run_dir is not None else None
    if path is not None:
        cached = read_cached_result(path, chash)
        if cached is not None:
            log.info("%s: finished result with the same config found, not retraining", path)
            return cached
    info = setup_distributed(cfg.device)
    try:
        device = resolve_device(cfg.device, info)
        t_start = time.perf_counter()
        with _session(cfg, device):
            try:
                trainer = Trainer(cfg, run_dir=path, device=device, info=info, progress=progress, chash=chash)
            except UserError:
                raise
            except Exception as exc:  # building the task or model failed: record it like any other failure
                log.error("run failed during setup: %s\n%s", _describe(exc), traceback.format_exc())
                record = _setup_failure(cfg, chash, device, _describe(exc), time.perf_counter() - t_start)
            else:
                record = trainer.run()
                if record.status == "completed":
                    trainer.save_final_model()
        result = record.to_dict()
        if path is not None and info.is_main:
            ckpt.atomic_write_json(path / "result.json", result)
            # after result.json (a kill in between leaves both, which is harmless): a finished run is served
            # from result.json from now on, so its checkpoints are dead weight; a failed one keeps them to resume
            if result["status"] in FINISHED and not cfg.keep_checkpoints_after_run:
                ckpt.remove_checkpoints(path)
        return result
    finally:
        teardown_distributed(info)
