"""What a worker does with one cell: run it through ``mamba_kan.training.run_experiment`` and return the result.

The same function runs in a local pool process and in a Ray task, so both backends compute identical results for
the same cell. It never touches the results database (the driver is its only writer); it only writes the cell's
run directory (checkpoints, result.json, final model), which is what lets a killed cell resume.

Imports of torch and the training code are deferred to the call, so a pool process spawns quickly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mamba_kan.record import failed_record

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"


@dataclass(frozen=True)
class CellJob:
    """What a worker needs for one cell (picklable, small): the resolved config as a dict (its ``threads`` is the
    cell's torch thread count, part of its key), the absolute run directory, and whether to discard a stored result
    first (``--retry-failed``). ``plugins``: the plug-in modules the driver loaded by name (``--plugin``,
    ``MAMBA_KAN_PLUGINS``), loaded again by the worker whatever the backend (a Ray or SLURM host need not inherit
    the driver's environment; installed entry points load by themselves)."""

    cell_key: str
    run_id: str
    config: dict[str, Any]
    run_dir: str
    fresh: bool = False
    plugins: tuple[str, ...] = field(default_factory=lambda: _driver_plugins())


def _driver_plugins() -> tuple[str, ...]:
    from mamba_kan.plugins import env_modules, loaded_modules

    return tuple(dict.fromkeys(loaded_modules() + tuple(env_modules())))


#: the run's log file, in its run directory: everything the cell logged, tracebacks included (the console gets
#: one line per finished cell from the driver)
LOG_FILE = "train.log"
#: seconds between two checks that the driver is still alive
LIVENESS_INTERVAL_S = 0.5
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_started: Any = None  # the pool's "cell started" queue (set by init_worker), read by the driver
_progress: Any = None  # the pool's step-progress queue (set by init_worker), read by the driver
#: a running cell reports its step to the driver at most this often (the loop emits at its log points, which
#: lie outside the timed steps; this keeps a fast cell to a few small messages per second)
PROGRESS_INTERVAL_S = 0.5


def _die_with_parent(parent_pid: int) -> None:
    """Exit as soon as the driver ``parent_pid`` is gone, whatever this process is doing.

    Linux: the kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG). Everywhere: a daemon thread
    that sees the parent change (a dead parent's children are re-parented) ends the process, between cells and
    during one (a cell's training loop runs in the main thread; this thread only sleeps). Both are needed: the
    signal is set after the fork, so a driver that died before it was set is caught by the thread's first check.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the thread below still works
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)  # no cleanup: the driver that would receive our result is gone
            time.sleep(LIVENESS_INTERVAL_S)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="mamba-kan-liveness", daemon=True).start()


def init_worker(
    threads: int, parent_pid: int, started: Any = None, gpu_queue: Any = None, progress: Any = None
) -> None:
    """Pool initializer: exit with the driver, size the OpenMP/MKL pools to the cells' thread count before torch
    is imported (torch's own thread count is set by the training loop, for each run), and, on a multi-GPU machine,
    give this process one GPU of its own. ``started``: a queue on which each cell is announced when it starts;
    ``progress``: a queue for its step reports (:func:`progress_reporter`)."""
    global _started, _progress
    _die_with_parent(parent_pid)
    _started, _progress = started, progress
    if gpu_queue is not None:
        # must happen before CUDA is initialised in this process; torch reads it lazily
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    # the console of a worker shows warnings and errors as one line each; the full text goes to the cell's log
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(_OneLine("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)


def run_pool_cell(cell_fn: Callable[[CellJob], dict[str, Any]], job: CellJob) -> dict[str, Any]:
    """What a pool process runs for one cell: announce it (so that, if this process dies, the driver knows which
    cells were in flight), then ``cell_fn(job)`` (:func:`execute_cell`, or a test's stand-in)."""
    if _started is not None:
        _started.put(job.cell_key)
    return cell_fn(job)


class _OneLine(logging.Formatter):
    """A log record's first line only (no traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.splitlines()[0] if text else text

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return ""


@contextlib.contextmanager
def cell_log(run_dir: Path) -> Iterator[None]:
    """For the duration of one cell: everything ``mamba_kan`` logs (INFO and up, tracebacks included) is appended
    to ``run_dir/train.log``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / LOG_FILE, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("mamba_kan")
    previous = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


def progress_reporter(cell_key: str, queue: Any = None) -> Callable[[dict[str, Any]], None] | None:
    """The training loop's ``progress`` callback for one cell: puts ``(cell_key, step, is_start)`` on ``queue``
    (default: this pool process's progress queue; None when there is none, e.g. in a Ray task). The ``start``
    event (its step is where a resumed run continues) is always sent, ``step`` events at most every
    ``PROGRESS_INTERVAL_S`` seconds."""
    queue = _progress if queue is None else queue
    if queue is None:
        return None
    last = -math.inf

    def report(event: dict[str, Any]) -> None:
        nonlocal last
        kind = event.get("event")
        if kind not in ("start", "step"):
            return
        now = time.monotonic()
        if kind == "step" and now - last < PROGRESS_INTERVAL_S:
            return
        last = now
        queue.put((cell_key, int(event["step"]), kind == "start"))

    return report


def failed_result(config: dict[str, Any], error: str) -> dict[str, Any]:
    """A Run API dict for a cell whose run could not even report its own failure (e.g. the worker died)."""
    return failed_record(config, error).to_dict()


def execute_cell(job: CellJob) -> dict[str, Any]:
    """Run one cell and return its Run API result dict (never raises: an exception becomes status 'failed').

    Leftover temporary files of a killed earlier attempt are removed first; the run's log goes to
    ``run_dir/train.log``. Torch threads are the config's (set by the training loop)."""
    run_dir = Path(job.run_dir)
    try:
        with cell_log(run_dir):
            try:
                from mamba_kan.plugins import load_plugins
                from mamba_kan.training import TrainConfig, run_experiment
                from mamba_kan.training.checkpoint import remove_temp_files

                load_plugins(job.plugins)  # before the config names a plug-in variant or task

                removed = remove_temp_files(run_dir)
                if removed:
                    log.info("removed %d temporary file(s) left by an interrupted run", len(removed))
                if job.fresh:
                    # --retry-failed: forget the stored failure but keep checkpoints, so the retry resumes
                    (run_dir / RESULT_FILE).unlink(missing_ok=True)
                cfg = TrainConfig.from_dict(job.config)
                return dict(run_experiment(cfg, run_dir, progress=progress_reporter(job.cell_key)))
            except Exception as exc:  # noqa: BLE001 - a cell's failure must be recorded, not end the sweep
                log.error("cell %s failed: %s\n%s", job.run_id, exc, traceback.format_exc())
                message = f"{type(exc).__name__}: {exc}".splitlines()[0]
                return failed_result(job.config, message)
    except OSError as exc:  # the run directory itself is unusable (disk full, permissions)
        return failed_result(job.config, f"cannot write the run directory {run_dir}: {exc.strerror or exc}")
