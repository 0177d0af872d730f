"""Optional experiment tracking: Weights & Biases and TensorBoard event files. Neither is needed to run; both are
imported only when asked for, and nothing they do is inside the timed training steps (they are called at log and
evaluation points)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mamba_kan.errors import UserError

log = logging.getLogger(__name__)


class Tracker:
    """Fan-out of scalar logs to the enabled backends."""

    def __init__(self, backends: list[Any] | None = None) -> None:
        self.backends = backends or []

    def log(self, step: int, values: dict[str, float]) -> None:
        for b in self.backends:
            b.log(step, values)

    def close(self) -> None:
        for b in self.backends:
            try:
                b.close()
            except Exception as exc:  # tracking must never turn a finished run into a failed one
                log.warning("closing %s failed: %s", type(b).__name__, exc)


class TensorBoardBackend:
    def __init__(self, log_dir: Path | None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(
                "--tensorboard needs the 'tensorboard' package: pip install tensorboard"
            ) from None
        self.writer = SummaryWriter(log_dir=None if log_dir is None else str(log_dir))

    def log(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.close()


class WandbBackend:
    """W&B run. Mode: ``$WANDB_MODE`` if set, else online with an API key and offline without one (offline runs
    are written under the run directory and can be synced later with ``wandb sync``)."""

    def __init__(self, project: str, name: str, config: dict[str, Any], run_dir: Path | None) -> None:
        try:
            import wandb
        except ImportError:
            raise UserError(
                "--wandb needs the 'wandb' package: pip install wandb (or the [tracking] extra)"
            ) from None
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = wandb.init(
            project=project,
            name=name,
            config=config,
            dir=None if run_dir is None else str(run_dir),
            mode=mode,
            reinit=True,
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def make_tracker(
    *, wandb: bool, tensorboard: bool, project: str, name: str, config: dict[str, Any], run_dir: Path | None
) -> Tracker:
    backends: list[Any] = []
    if tensorboard:
        backends.append(TensorBoardBackend(None if run_dir is None else run_dir / "tensorboard"))
    if wandb:
        backends.append(WandbBackend(project, name, config, run_dir))
    return Tracker(backends)
