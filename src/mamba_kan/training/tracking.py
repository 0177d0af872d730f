"""Optional experiment tracking: Weights & Biases and TensorBoard event files. Neither is needed to run; both are
imported only when asked for, and nothing they do is inside the timed training steps (they are called at log and
evaluation points, and once at the end of the run).

At the end of a run each backend receives the run's hyperparameters (flat scalars and strings: the factors ffn,
mixer, task, seed and every training and model setting) and its final metrics (:data:`FINAL_METRICS`: the task's
primary test metric and the best validation value of it, under the same names on every task so runs of different
tasks share columns). TensorBoard writes them as an HParams session (the hparams plugin's summaries, in the run's
own event file), so ``tensorboard --logdir DIR/runs`` compares every cell of a sweep in its HParams tab; W&B puts
them in the run's config and summary. In a sweep (``mamba-kan compare --wandb``) every run of the sweep is in one
W&B group and carries one tag per factor (``ffn:kan``, ``mixer:mamba``, ``task:symbolic/exp_sin``, ``seed:0``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mamba_kan.design import try_parse_variant
from mamba_kan.errors import UserError

if TYPE_CHECKING:
    from mamba_kan.training.config import TrainConfig

log = logging.getLogger(__name__)

#: final metrics of every run, the same names for every task (TensorBoard's HParams tab takes its metric columns
#: from the first run it reads, so per-task names would hide the other tasks' values)
FINAL_METRICS = ("hparam/test_primary", "hparam/best_val_primary", "hparam/steps_per_sec")
#: W&B's limit on the length of one tag
WANDB_TAG_MAX = 64

HParam = str | int | float


def tensorboard_install_hint() -> str:
    return (
        "TensorBoard logging (--tensorboard, tensorboard=true) needs the 'tensorboard' package: "
        "pip install tensorboard"
    )


def wandb_install_hint() -> str:
    return (
        "W&B logging (--wandb, wandb=true) needs the 'wandb' package: pip install wandb "
        "(or the [tracking] extra)"
    )


def check_tracking_packages(*, tensorboard: bool, wandb: bool) -> None:
    """UserError naming the setting and how to install its package when a requested tracker is not importable.
    Checked without importing them (``importlib.util.find_spec``), so it is cheap enough to run before a sweep."""
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError(tensorboard_install_hint())
    if wandb and importlib.util.find_spec("wandb") is None:
        raise UserError(wandb_install_hint())


def factor_tags(model: str, task: str, seed: int) -> list[str]:
    """One tag per factor of the design: ``ffn:<level>``, ``mixer:<level>``, ``task:<label>``, ``seed:<n>``
    (each cut to W&B's 64 characters). A variant outside the 2x3 design gets ``model:<name>`` instead of the
    two factor tags."""
    parsed = try_parse_variant(model)
    tags = [f"ffn:{parsed[0]}", f"mixer:{parsed[1]}"] if parsed is not None else [f"model:{model}"]
    tags += [f"task:{task}", f"seed:{seed}"]
    return [t[:WANDB_TAG_MAX] for t in tags]


def _hparam_value(value: Any) -> HParam:
    """A value the hparams plugin stores: numbers as they are, booleans and None as text (the plugin would store
    a boolean as 0/1 and drop a None, so a column would change type or vanish between runs), anything else as
    JSON."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float | str):
        return value
    return json.dumps(value, sort_keys=True)


def run_hparams(cfg: TrainConfig, status: str = "completed") -> dict[str, HParam]:
    """The run's hyperparameters as one flat mapping: ``model``, ``ffn``, ``mixer``, ``task``, ``seed``, every
    top-level training setting, ``model_cfg.<key>`` for each model setting, the task options as one JSON string
    (their keys differ between task families, and the HParams tab wants the same columns for every run) and the
    run's ``status``. The tracking settings themselves are left out."""
    from mamba_kan.training.config import TRACKING_KEYS

    d = cfg.to_dict()
    parsed = try_parse_variant(cfg.model)
    out: dict[str, HParam] = {"model": cfg.model}
    out["ffn"], out["mixer"] = parsed if parsed is not None else (cfg.model, "")
    for key, value in d.items():
        if key in TRACKING_KEYS or key in ("model", "model_cfg", "task_options"):
            continue
        out[key] = _hparam_value(value)
    for key, value in d["model_cfg"].items():
        out[f"model_cfg.{key}"] = _hparam_value(value)
    out["task_options"] = _hparam_value(d["task_options"])
    out["status"] = status
    return out


def final_metrics(
    primary: float | None, best_val: float | None, steps_per_sec: float | None
) -> dict[str, float]:
    """:data:`FINAL_METRICS` of a run, leaving out the ones it has no finite value for."""
    values = dict(zip(FINAL_METRICS, (primary, best_val, steps_per_sec)))
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}


class Tracker:
    """Fan-out of scalar logs and the end-of-run summary to the enabled backends."""

    def __init__(self, backends: list[Any] | None = None) -> None:
        self.backends = backends or []

    def log(self, step: int, values: dict[str, float]) -> None:
        for b in self.backends:
            b.log(step, values)

    def finish(self, step: int, hparams: Mapping[str, HParam], metrics: Mapping[str, float]) -> None:
        """Record the run's hyperparameters and final metrics (once, at the end)."""
        for b in self.backends:
            try:
                b.finish(step, dict(hparams), dict(metrics))
            except Exception as exc:  # tracking must never turn a finished run into a failed one
                log.warning("writing the summary to %s failed: %s", type(b).__name__, exc)

    def close(self) -> None:
        for b in self.backends:
            try:
                b.close()
            except Exception as exc:  # tracking must never turn a finished run into a failed one
                log.warning("closing %s failed: %s", type(b).__name__, exc)


class TensorBoardBackend:
    """Event files in ``log_dir``: every logged scalar, and at the end an HParams session (experiment, session
    start and session end summaries of the hparams plugin, the same three ``SummaryWriter.add_hparams`` writes)
    in the same event file, so that the run directory is one TensorBoard run."""

    def __init__(self, log_dir: Path | None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(tensorboard_install_hint()) from None
        self.writer = SummaryWriter(log_dir=None if log_dir is None else str(log_dir))

    def log(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def finish(self, step: int, hparams: dict[str, HParam], metrics: dict[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        # every run declares all FINAL_METRICS (values of the missing ones are simply not written)
        exp, ssi, sei = hparams_summaries(hparams, dict.fromkeys(FINAL_METRICS, 0.0))
        for summary in (exp, ssi, sei):
            self.writer.file_writer.add_summary(summary, step)
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbBackend:
    """W&B run. Mode: ``$WANDB_MODE`` if set, else online with an API key and offline without one (offline runs
    are written under the run directory and can be synced later with ``wandb sync``)."""

    def __init__(
        self,
        project: str,
        name: str,
        config: dict[str, Any],
        run_dir: Path | None,
        *,
        group: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        try:
            import wandb
        except ImportError:
            raise UserError(wandb_install_hint()) from None
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = wandb.init(
            project=project,
            name=name,
            group=group,
            tags=tags or None,
            config=config,
            dir=None if run_dir is None else str(run_dir),
            mode=mode,
            reinit=True,
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def finish(self, step: int, hparams: dict[str, HParam], metrics: dict[str, float]) -> None:
        self.run.config.update({"hparams": hparams}, allow_val_change=True)
        self.run.summary.update(metrics)

    def close(self) -> None:
        self.run.finish()


def make_tracker(cfg: TrainConfig, run_dir: Path | None) -> Tracker:
    """The tracker a run's settings ask for (``tensorboard``, ``wandb`` with ``wandb_project``, ``wandb_group``,
    ``wandb_tags`` (default: :func:`factor_tags`) and ``run_name``). TensorBoard writes ``run_dir/tensorboard``."""
    backends: list[Any] = []
    if cfg.tensorboard:
        backends.append(TensorBoardBackend(None if run_dir is None else run_dir / "tensorboard"))
    if cfg.wandb:
        backends.append(
            WandbBackend(
                cfg.wandb_project,
                cfg.run_name or f"{cfg.model}-{cfg.task}-seed{cfg.seed}",
                cfg.to_dict(),
                run_dir,
                group=cfg.wandb_group,
                tags=list(cfg.wandb_tags) or factor_tags(cfg.model, cfg.task, cfg.seed),
            )
        )
    return Tracker(backends)
