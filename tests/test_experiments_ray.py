"""The Ray backend against a real local Ray instance (no mocks): results identical to the local backend for the
same cells, and a Ray worker killed mid-cell gets its cell retried to the same result.

Reference: the same grid run by the local process pool (both with one torch thread per cell, so on CPU the
numbers must agree bit for bit).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from mamba_kan.experiments.grid import TaskSpec, expand_grid  # noqa: E402
from mamba_kan.experiments.runner import SweepOptions, run_sweep  # noqa: E402
from mamba_kan.experiments.store import read_curves, read_runs  # noqa: E402

pytestmark = pytest.mark.ray

SETTINGS = {"max_steps": 40, "batch_size": 16, "eval_every": 10, "log_every": 5,
            "model_cfg": {"d_model": 32, "n_layers": 1, "n_heads": 2}}  # fmt: skip
TASK = TaskSpec("symbolic/exp_sin", {"n_train": 128, "n_val": 32, "n_test": 64})
CELLS = expand_grid(["mlp_transformer", "kan_mamba"], [TASK], [0], SETTINGS, version="ray-test")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    summary = run_sweep(CELLS, out, SweepOptions(backend="local", workers=2, threads=1))
    assert summary.counts == {"completed": 2}
    return out


def results(path: Path) -> dict[str, tuple]:
    runs = read_runs(path)
    curves = read_curves(path)
    out = {}
    for r in runs.itertuples(index=False):
        c = curves[curves["run_id"] == r.run_id].sort_values(["split", "metric", "step"])
        out[r.run_id] = (r.status, r.primary_value, r.metrics, r.best_val, r.best_val_step, r.params,
                         list(zip(c["split"], c["metric"], c["step"], c["value"])))  # fmt: skip
    return out


def test_ray_grid_gives_the_same_results_as_the_local_backend(tmp_path, local_ray, local_reference):
    summary = run_sweep(CELLS, tmp_path, SweepOptions(backend="ray", threads=1))
    assert summary.backend == "ray" and summary.counts == {"completed": 2}
    assert ray.is_initialized()  # a runtime the caller started is left running
    got, want = results(tmp_path), results(local_reference)
    assert got.keys() == want.keys() and len(got) == 2
    for run_id in want:
        assert got[run_id] == want[run_id], run_id


def _kill_first_cell_worker(run_root: Path, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the Ray worker process executing a cell once that cell has written a checkpoint."""
    while not stop.is_set() and not killed:
        if any(run_root.glob("*/ckpt_step*.pt")):
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if cmdline.startswith(b"ray::execute_cell"):  # Ray's process title while running the task
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                    return
        time.sleep(0.01)


def test_ray_worker_killed_mid_cell_is_retried(tmp_path, local_ray, local_reference):
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_cell_worker, args=(tmp_path / "runs", stop, killed))
    killer.start()
    try:
        summary = run_sweep(CELLS, tmp_path, SweepOptions(backend="ray", threads=1))
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker was caught mid-cell"
    assert summary.counts == {"completed": 2}
    assert results(tmp_path) == results(local_reference)
