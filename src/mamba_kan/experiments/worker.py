"""What a worker does with one cell: run it through ``mamba_kan.training.run_experiment`` and return the result.

The same function runs in a local pool process and in a Ray task, so both backends compute identical results for
the same cell. It never touches the results database (the driver is its only writer); it only writes the cell's
run directory (checkpoints, result.json, final model), which is what lets a killed cell resume.

Imports of torch and the training code are deferred to the call, so a pool process spawns quickly.
"""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mamba_kan.record import failed_record

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"


@dataclass(frozen=True)
class CellJob:
    """What a worker needs for one cell (picklable, small): the resolved config as a dict, the absolute run
    directory, torch threads, and whether to discard a stored result first (``--retry-failed``)."""

    cell_key: str
    run_id: str
    config: dict[str, Any]
    run_dir: str
    threads: int = 1
    fresh: bool = False


def init_worker(threads: int, gpu_queue: Any = None) -> None:
    """Pool initializer: pin torch threads (workers x threads never exceeds the cores) and, on a multi-GPU
    machine, give this process one GPU of its own."""
    if gpu_queue is not None:
        # must happen before CUDA is initialised in this process; torch reads it lazily
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (a reused process): harmless
        pass


def failed_result(config: dict[str, Any], error: str) -> dict[str, Any]:
    """A Run API dict for a cell whose run could not even report its own failure (e.g. the worker died)."""
    return failed_record(config, error).to_dict()


def execute_cell(job: CellJob) -> dict[str, Any]:
    """Run one cell and return its Run API result dict (never raises: an exception becomes status 'failed')."""
    try:
        import torch

        from mamba_kan.training import TrainConfig, run_experiment

        if torch.get_num_threads() != job.threads:
            torch.set_num_threads(job.threads)
        run_dir = Path(job.run_dir)
        if job.fresh:
            # --retry-failed: forget the stored failure but keep checkpoints, so the retry resumes where it was
            (run_dir / RESULT_FILE).unlink(missing_ok=True)
        cfg = TrainConfig.from_dict({**job.config, "threads": job.threads})
        return dict(run_experiment(cfg, run_dir))
    except Exception as exc:  # noqa: BLE001 - a cell's failure must be recorded, not end the sweep
        log.debug("cell %s failed:\n%s", job.run_id, traceback.format_exc())
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return failed_result(job.config, message)
