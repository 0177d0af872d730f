"""Cells as SLURM array jobs through submitit (Rapin & al., facebookincubator/submitit).

The driver stays the only writer of the results database, which must live on a local disk: SQLite's locking does
not work on NFS/Lustre (SQLite documentation, "How To Corrupt An SQLite Database File", section 2.1). The jobs run
``worker.execute_cell`` on the cluster's nodes and write their run directories (checkpoints, ``result.json``) on
storage the nodes share (``--runs-dir``); submitit carries each cell's result back through its job folder, and
the driver records it as it arrives. If the driver is stopped, the jobs keep running and their ``result.json``
files can be ingested later with ``mamba-kan collect`` (or by re-running the same ``compare``, which returns a
finished run's stored result without training).

``cluster="local"`` runs the same code path with submitit's local executor (one process per job on this machine);
the tests use it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mamba_kan.errors import UserError
from mamba_kan.experiments.worker import CellJob, execute_cell, failed_result

log = logging.getLogger(__name__)

CLUSTERS = ("slurm", "local", "auto")


def _import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise UserError("the slurm backend needs submitit: pip install 'mamba-kan[slurm]'") from None
    return submitit


class SubmititBackend:
    """A SLURM array job per sweep (``slurm_array_parallelism`` cells at a time), one cell per array task.

    ``folder``: submitit's job folder (logs, pickled jobs and results): it must be on shared storage for a real
    cluster. ``threads``: CPUs per cell (``cpus_per_task``). ``parameters``: further submitit/SLURM parameters
    (``slurm_partition``, ``timeout_min``, ``gpus_per_node``, ``slurm_additional_parameters``, ...).
    """

    name = "slurm"

    def __init__(
        self,
        folder: str | Path,
        *,
        threads: int = 1,
        cluster: str = "slurm",
        max_parallel: int = 64,
        parameters: Mapping[str, Any] | None = None,
        poll_s: float = 2.0,
    ) -> None:
        if cluster not in CLUSTERS:
            raise UserError(f"unknown submitit cluster {cluster!r}; valid choices: {', '.join(CLUSTERS)}")
        if threads < 1 or max_parallel < 1:
            raise UserError("--threads and --slurm-array-parallelism must be >= 1")
        submitit = _import_submitit()
        self.folder = Path(folder).expanduser().resolve()
        self.threads = threads
        self.workers = max_parallel
        self.poll_s = poll_s
        try:
            self.executor = submitit.AutoExecutor(
                folder=str(self.folder), cluster=None if cluster == "auto" else cluster
            )
        except RuntimeError as exc:  # e.g. no sbatch on this machine
            raise UserError(
                f"cannot use the submitit {cluster} executor: {str(exc).splitlines()[0]}"
            ) from None
        params: dict[str, Any] = {"cpus_per_task": threads, "slurm_array_parallelism": max_parallel}
        params.update(parameters or {})
        if cluster == "local":  # the local executor knows no slurm_* parameters
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        try:
            self.executor.update_parameters(**params)
        except (ValueError, TypeError) as exc:
            raise UserError(f"bad submitit parameter: {str(exc).splitlines()[0]}") from None

    def run(self, jobs: Sequence[CellJob], on_result: Any) -> None:
        """Submit ``jobs`` as one array, then hand each finished cell's result to ``on_result`` as it arrives."""
        if not jobs:
            return
        with self.executor.batch():
            submitted = [self.executor.submit(execute_cell, job) for job in jobs]
        pending = dict(zip(submitted, jobs))
        log.info("submitted %d cells as submitit job(s) %s", len(jobs), submitted[0].job_id.split("_")[0])
        try:
            while pending:
                finished = [j for j in pending if j.done()]
                if not finished:
                    time.sleep(self.poll_s)
                    continue
                for sjob in finished:
                    job = pending.pop(sjob)
                    on_result(job, self._result(sjob, job))
        except BaseException:
            # the driver is going away: leave nothing running on the cluster that nobody will collect
            for sjob in pending:
                try:
                    sjob.cancel(check=False)
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
            raise

    @staticmethod
    def _result(sjob: Any, job: CellJob) -> dict[str, Any]:
        try:
            return dict(sjob.result())
        except Exception as exc:  # noqa: BLE001 - a job that died (node failure, time limit) is this cell's failure
            first = str(exc).strip().splitlines()
            message = first[-1] if first else type(exc).__name__
            return failed_result(job.config, f"slurm job {sjob.job_id} failed: {message[:300]}")

    def close(self) -> None:
        pass
