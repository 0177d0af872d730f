"""The sweep driver: run the cells a results database does not hold yet, record each result as it arrives.

Resume and fault model:

- A cell is done once its row is in ``DIR/results.db``; re-running the same grid skips it (``--retry-failed``
  also re-runs the cells recorded as diverged or failed).
- Each run is recorded in one transaction, so a SIGKILL at any moment leaves every cell either recorded once or
  absent. An absent cell is run again: its run directory ``DIR/runs/<run_id>/`` holds its checkpoints (resumed by
  the training loop) or, if it had finished just before the kill, its ``result.json`` (returned without training).
- Nothing is written before every input has been checked: bad names, seeds, settings or task options (every task
  is built once by ``expand_grid``), an unusable output directory, a database of another schema version or an
  unreachable Ray cluster fail first, with nothing created.
- Every cell of a grid runs with the torch thread count in its config (part of its key), whatever the number of
  workers or of cells left, so a cell's numbers do not depend on the schedule.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mamba_kan.choices import BACKENDS
from mamba_kan.errors import UserError, unknown_choice
from mamba_kan.experiments.backends import (
    Backend,
    LocalBackend,
    RayBackend,
    check_ray_available,
    check_reachable,
    plan_workers,
)
from mamba_kan.experiments.fairness import META_PREFIX as FAIRNESS_PREFIX
from mamba_kan.experiments.fairness import encode as encode_sheet
from mamba_kan.experiments.fairness import grid_fairness_sheets
from mamba_kan.experiments.grid import Cell
from mamba_kan.experiments.store import ResultsStore, check_database, db_path, read_runs
from mamba_kan.experiments.worker import CellJob, failed_result

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
RETRYABLE = ("failed", "diverged")


@dataclass(frozen=True)
class SweepOptions:
    """How to run a grid. ``workers``: None = sized for the machine (see ``plan_workers``). ``threads`` is a
    setting of the cells (their config's ``threads``, part of their key; set it in the grid's settings); here it
    may only repeat it (None = the cells')."""

    backend: str = "local"
    workers: int | None = None
    threads: int | None = None
    ray_address: str | None = None
    ray_gpus_per_cell: float = 0.0
    retry_failed: bool = False
    command: str = ""
    #: where run directories go (default ``DIR/runs``); on a cluster, storage every node shares
    runs_dir: str | None = None
    #: slurm backend: submitit folder, cluster (slurm|local|auto), array parallelism, further parameters
    slurm_folder: str | None = None
    slurm_cluster: str = "slurm"
    slurm_parallelism: int = 64
    slurm_parameters: Mapping[str, Any] = field(default_factory=dict)
    #: tracking for every cell (``compare --tensorboard/--wandb/...``; None = the cells' own settings). Tracking
    #: changes no result and no cell key. ``wandb_group`` None = :func:`sweep_group` of the comparison directory.
    tensorboard: bool | None = None
    wandb: bool | None = None
    wandb_project: str | None = None
    wandb_group: str | None = None


@dataclass(frozen=True)
class Progress:
    """Where the sweep stands (after a cell finished, or a running cell reported its step). ``eta_s``: from the
    training steps per second of this invocation when the cells report steps (the local backend), else from the
    cells finished so far; NaN until either is known."""

    done: int
    total: int
    failures: int
    elapsed_s: float
    eta_s: float


class StepRate:
    """Training steps done in this invocation and steps left, for an ETA that moves inside the first cell.

    ``max_steps``: cell key -> its step budget. A cell's reports raise its current step; a start report sets it
    (a resumed cell begins at its checkpoint; a retried one may begin lower: the lost steps still took time). The
    rate is steps done / seconds since the first report (process start-up and task building are not training),
    summed over cells running in parallel; a finished cell has no steps left, however it ended."""

    def __init__(self, max_steps: Mapping[str, int]) -> None:
        self.max_steps = dict(max_steps)
        self.step: dict[str, int] = {}
        self.done_steps = 0
        self.t_first: float | None = None

    def report(self, cell_key: str, step: int, is_start: bool, now: float) -> None:
        if self.t_first is None:
            self.t_first = now
        previous = self.step.get(cell_key)
        if not is_start and previous is not None and step > previous:
            self.done_steps += step - previous
        if is_start or previous is None or step > previous:
            self.step[cell_key] = step

    def finish(self, cell_key: str) -> None:
        self.step[cell_key] = self.max_steps.get(cell_key, 0)

    def steps_left(self) -> int:
        return sum(max(0, total - self.step.get(key, 0)) for key, total in self.max_steps.items())

    def eta_s(self, now: float) -> float:
        """Seconds left at the rate so far; NaN before two reports of a cell have measured one."""
        if self.t_first is None or self.done_steps <= 0 or now <= self.t_first:
            return math.nan
        return self.steps_left() / (self.done_steps / (now - self.t_first))


@dataclass
class SweepSummary:
    db_path: Path
    output_dir: Path
    total: int
    skipped: int
    ran: int
    counts: dict[str, int] = field(
        default_factory=dict
    )  # status -> cells of the grid (skipped ones included)
    elapsed_s: float = 0.0
    workers: int = 0
    threads: int = 0
    backend: str = "local"


class SweepObserver(Protocol):
    """Receives progress (the CLI draws it; library users may ignore it)."""

    def sweep_started(self, total: int, skipped: int, to_run: int, backend: Backend) -> None: ...

    def cell_finished(self, cell: Cell, result: Mapping[str, Any], progress: Progress) -> None: ...

    # optional: ``cell_progress(cell, step, progress)``, a running cell's training step (local backend), at most
    # a few times per second per cell


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """The comparison directory, checked without creating it: it must be a directory (or not exist yet, under a
    writable parent) and be writable."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"output directory {p} exists and is not a directory")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot create output directory {p}: {probe} is not a directory")
    try:
        # a real probe (created and removed at once): permission bits alone miss read-only mounts and root
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError:
        raise UserError(f"output directory {p} is not writable") from None
    db = db_path(p)
    if db.exists() and not os.access(db, os.W_OK):
        raise UserError(f"results database {db} is not writable")
    return p


def check_backend(options: SweepOptions) -> None:
    """The backend checks that need no running backend (also what ``compare --dry-run`` runs): a known name,
    ``--workers`` >= 1, ``--ray-address`` only with Ray, Ray installed, its cluster reachable."""
    if options.backend not in BACKENDS:
        raise unknown_choice("backend", options.backend, BACKENDS)
    if options.workers is not None and options.workers < 1:
        raise UserError(f"--workers must be >= 1, got {options.workers}")
    if options.backend != "ray":
        if options.ray_address is not None:
            raise UserError("--ray-address needs --backend ray")
        return
    check_ray_available()
    if options.ray_address not in (None, "auto", "local"):
        check_reachable(options.ray_address)


def _tracking_wanted(cells: Sequence[Cell], options: SweepOptions) -> tuple[bool, bool]:
    """(tensorboard, wandb): whether any cell will log to each (the option when given, else the cells')."""
    tb = options.tensorboard if options.tensorboard is not None else any(c.config.tensorboard for c in cells)
    wb = options.wandb if options.wandb is not None else any(c.config.wandb for c in cells)
    return bool(tb), bool(wb)


def check_tracking(cells: Sequence[Cell], options: SweepOptions) -> None:
    """Before any cell runs: a UserError naming the setting and the package to install when a requested
    tracker (``--tensorboard``/``--wandb`` or ``tensorboard``/``wandb`` in the cells' settings) is missing, so
    a sweep never records every cell as failed for it."""
    from mamba_kan.training.tracking import check_tracking_packages

    tensorboard, wandb = _tracking_wanted(cells, options)
    check_tracking_packages(tensorboard=tensorboard, wandb=wandb)


def sweep_group(root: Path) -> str:
    """The W&B group of every run a comparison directory holds: its name and 8 hex digits of its absolute path
    (stable, so a resumed or extended sweep stays in one group; distinct for two directories of the same name)."""
    path = root.expanduser().resolve()
    return f"{path.name}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def _tracked_config(cell: Cell, options: SweepOptions, group: str) -> dict[str, Any]:
    """The cell's config as its worker gets it: the sweep's tracking options applied and, with W&B, the sweep's
    group, one tag per factor and the run id as run name (unless the settings name their own). None of these
    keys is in the config hash, so the cell's key and its result's hash stay the same."""
    from mamba_kan.training.tracking import factor_tags

    config = cell.config.to_dict()
    for key in ("tensorboard", "wandb", "wandb_project"):
        value = getattr(options, key)
        if value is not None:
            config[key] = value
    if config["wandb"]:
        config["wandb_group"] = options.wandb_group or config.get("wandb_group") or group
        config["wandb_tags"] = config.get("wandb_tags") or factor_tags(cell.model, cell.task, cell.seed)
        config["run_name"] = config.get("run_name") or cell.run_id
    return config


def cells_threads(cells: Sequence[Cell]) -> int:
    """The torch threads per cell of a grid (the largest, should cells of several grids be run together)."""
    return max((int(c.config.threads or 1) for c in cells), default=1)


def runs_root(root: Path, options: SweepOptions) -> Path:
    """Where the cells' run directories live: ``--runs-dir`` or ``DIR/runs``."""
    return Path(options.runs_dir).expanduser().resolve() if options.runs_dir else (root / RUNS_DIR).resolve()


def _stored_run_dir(root: Path, run_dir: Path) -> str:
    """The run directory as the database records it: relative to the comparison directory when inside it (the
    directory can then be moved as a whole), absolute otherwise (``--runs-dir`` on shared storage)."""
    try:
        return run_dir.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(run_dir)


def make_backend(options: SweepOptions, n_jobs: int, threads: int = 1, root: Path | None = None) -> Backend:
    """The backend for ``n_jobs`` cells of ``threads`` torch threads each."""
    check_backend(options)
    if options.threads is not None and options.threads != threads:
        raise UserError(
            f"the cells run with {threads} thread(s) (their config's 'threads', part of the cell key), "
            f"not {options.threads}: set threads in the grid's settings (--threads N)"
        )
    if options.backend == "slurm":
        from mamba_kan.experiments.slurm import SubmititBackend

        base = root if root is not None else Path.cwd()
        folder = options.slurm_folder or str(runs_root(base, options).parent / "submitit")
        return SubmititBackend(
            folder,
            threads=threads,
            cluster=options.slurm_cluster,
            max_parallel=options.slurm_parallelism,
            parameters=options.slurm_parameters,
        )
    if options.backend == "ray":
        return RayBackend(options.ray_address, threads=threads, gpus_per_cell=options.ray_gpus_per_cell)
    workers, gpus = plan_workers(max(1, n_jobs), options.workers, threads)
    return LocalBackend(workers, threads, gpus)


def _job(cell: Cell, runs: Path, fresh: bool, options: SweepOptions, group: str) -> CellJob:
    return CellJob(
        cell_key=cell.cell_key,
        run_id=cell.run_id,
        config=_tracked_config(cell, options, group),
        run_dir=str(runs / cell.run_id),
        fresh=fresh,
    )


def run_sweep(
    cells: Sequence[Cell],
    output_dir: str | os.PathLike[str],
    options: SweepOptions | None = None,
    observer: SweepObserver | None = None,
    backend: Backend | None = None,
) -> SweepSummary:
    """Run every cell of ``cells`` not yet recorded in ``output_dir``'s results database; return the summary.

    ``backend``: an already configured backend (default: one made from ``options``); it is closed at the end."""
    options = options or SweepOptions()
    root = check_output_dir(output_dir)
    if len({c.cell_key for c in cells}) != len(cells):
        raise ValueError("duplicate cells in the grid")
    check_tracking(cells, options)  # before the database exists
    existing: dict[str, str] = {}
    if check_database(root):  # schema check before anything is written
        runs = read_runs(root)  # read-only: a database that cannot be read is left exactly as it was
        existing = dict(zip(runs["cell_key"], runs["status"]))
    retry = set(RETRYABLE) if options.retry_failed else set()
    todo = [c for c in cells if c.cell_key not in existing or existing[c.cell_key] in retry]
    runs = runs_root(root, options)
    if backend is None:  # may fail (Ray unreachable) before the database is created
        backend = make_backend(options, len(todo), cells_threads(todo or cells), root)

    start = time.perf_counter()
    todo_keys = {c.cell_key for c in todo}
    counts = Counter(
        existing[c.cell_key] for c in cells if c.cell_key in existing and c.cell_key not in todo_keys
    )
    skipped = len(cells) - len(todo)
    summary = SweepSummary(
        db_path(root), root, len(cells), skipped, 0, workers=backend.workers, threads=backend.threads
    )
    summary.backend = backend.name
    try:
        with ResultsStore(root) as store:
            sweep_id = store.start_sweep(
                options.command, cells[0].code_version if cells else "", backend.name, len(cells), skipped
            )
            for label, sheet in grid_fairness_sheets(cells).items():
                store.set_meta(FAIRNESS_PREFIX + label, encode_sheet(sheet))
            if observer is not None:
                observer.sweep_started(len(cells), skipped, len(todo), backend)
            by_key = {c.cell_key: c for c in todo}
            done = Counter[str]()
            steps = StepRate({c.cell_key: int(c.config.max_steps) for c in todo})

            def progress_now() -> Progress:
                n = sum(done.values())
                now = time.perf_counter()
                elapsed = now - start
                eta = steps.eta_s(now)
                if math.isnan(eta) and n:  # no step reports (Ray, SLURM): from the cells finished
                    eta = elapsed / n * (len(todo) - n)
                return Progress(n, len(todo), done["failed"] + done["diverged"], elapsed, eta)

            on_step = getattr(observer, "cell_progress", None)

            def on_progress(cell_key: str, step: int, is_start: bool) -> None:
                steps.report(cell_key, step, is_start, time.perf_counter())
                if on_step is not None and cell_key in by_key:
                    on_step(by_key[cell_key], step, progress_now())

            def on_result(job: CellJob, result: dict[str, Any]) -> None:
                cell = by_key[job.cell_key]
                result = _check_result(cell, result)
                try:
                    store.record_run(
                        cell.cell_key,
                        cell.run_id,
                        result,
                        task=cell.task,
                        family=cell.family,
                        run_dir=_stored_run_dir(root, runs / cell.run_id),
                        code_version=cell.code_version,
                        sweep_id=sweep_id,
                    )
                except (
                    sqlite3.Error
                ) as exc:  # disk full, I/O error: stop; recorded cells stay, this one resumes
                    raise UserError(f"cannot record {cell.run_id} in {store.path}: {exc}") from None
                done[result["status"]] += 1
                steps.finish(cell.cell_key)
                log.debug("cell %s: %s", cell.run_id, result["status"])
                if observer is not None:
                    observer.cell_finished(cell, result, progress_now())

            group = sweep_group(root)
            jobs = [_job(c, runs, c.cell_key in existing, options, group) for c in todo]
            if jobs and getattr(backend, "reports_progress", False):
                backend.run(jobs, on_result, on_progress=on_progress)  # type: ignore[call-arg]
            elif jobs:
                backend.run(jobs, on_result)
            counts.update(done)
            store.finish_sweep(sweep_id, counts)
    finally:
        backend.close()
    summary.ran = sum(done.values())
    summary.counts = dict(counts)
    summary.elapsed_s = time.perf_counter() - start
    return summary


def _check_result(cell: Cell, result: dict[str, Any]) -> dict[str, Any]:
    """A result must belong to its cell; a mismatch (a foreign result.json in the run directory) is recorded as a
    failure rather than stored as this cell's numbers."""
    h = result.get("config_hash")
    if result.get("status") != "failed" and h is not None and h != cell.config_hash:
        message = f"run returned a result for config {h[:12]}, expected {cell.config_hash[:12]}"
        return failed_result(cell.config.to_dict(), message)
    return result
