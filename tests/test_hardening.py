"""Hardening of the sweep: results independent of the schedule, a crashing cell fails alone, workers die with the
driver, leftovers of a kill are cleaned up, failures reach the console as one line, run files follow the umask.

Every test uses real spawned pools (no mock of the pool or of the worker); the crashing cell is a cell function
defined here (module level, so pool processes import it by name) that ends its own process with ``os._exit``, the
way a segfault or an out-of-memory kill ends it, and otherwise runs the real :func:`execute_cell`.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mamba_kan.cli import main
from mamba_kan.experiments.backends import LocalBackend
from mamba_kan.experiments.grid import TaskSpec, expand_grid
from mamba_kan.experiments.runner import RUNS_DIR, run_sweep
from mamba_kan.experiments.store import read_runs
from mamba_kan.experiments.worker import LOG_FILE, execute_cell

TINY = {"max_steps": 8, "batch_size": 8, "eval_every": 4, "eval_batch_size": 32, "log_every": 2,
        "model_cfg": {"d_model": 32, "n_layers": 1, "n_heads": 2}}  # fmt: skip
TASK = TaskSpec("symbolic/exp_sin", {"n_train": 32, "n_val": 16, "n_test": 16})
CRASHING_MODEL = "kan_mamba"


def crash_one_cell(job):
    """The kan_mamba cell kills its own worker process (no exception, no result: the pool just breaks)."""
    if job.config["model"] == CRASHING_MODEL:
        os._exit(70)
    return execute_cell(job)


def fail_one_cell(job):
    """The mlp_mamba cell fails inside its run (an option the task rejects, which expand_grid would refuse)."""
    if job.config["model"] == "mlp_mamba":
        options = {**job.config["task_options"], "n_train": 0}
        job = dataclasses.replace(job, config={**job.config, "task_options": options})
    return execute_cell(job)


# --- 5: results do not depend on how many cells are left -----------------------------------------------------
def test_a_cell_gives_bit_identical_metrics_alone_and_in_a_larger_grid(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    many = expand_grid(["mlp_transformer", "bspline_mamba"], [TASK], [0], TINY)
    alone = [c for c in many if c.model == "bspline_mamba"]
    # default sizing: several workers for the grid, one for the lone cell (before, the lone cell got all cores)
    big = run_sweep(many, tmp_path / "many")
    small = run_sweep(alone, tmp_path / "alone")
    assert big.counts == {"completed": 2} and small.counts == {"completed": 1}
    assert big.threads == small.threads == 1 == alone[0].config.threads
    a = read_runs(tmp_path / "many").set_index("model").loc["bspline_mamba"]
    b = read_runs(tmp_path / "alone").set_index("model").loc["bspline_mamba"]
    assert a["metrics"] == b["metrics"] and a["primary_value"] == b["primary_value"]  # exact, not approximate
    assert a["env"]["threads"] == b["env"]["threads"] == 1 and a["config"]["threads"] == 1


# --- 3: a crashing cell fails alone ---------------------------------------------------------------------------
def test_a_cell_that_kills_its_worker_is_the_only_cell_recorded_failed(tmp_path):
    cells = expand_grid(["mlp_transformer", CRASHING_MODEL, "mlp_mamba", "bspline_transformer"], [TASK], [0],
                        TINY)  # fmt: skip
    summary = run_sweep(cells, tmp_path, backend=LocalBackend(workers=2, threads=1, cell_fn=crash_one_cell))
    runs = read_runs(tmp_path).set_index("model")
    assert summary.counts == {"completed": 3, "failed": 1}
    assert runs.loc[CRASHING_MODEL, "status"] == "failed"
    assert "worker process died" in runs.loc[CRASHING_MODEL, "error"]
    for model in ("mlp_transformer", "mlp_mamba", "bspline_transformer"):
        assert runs.loc[model, "status"] == "completed" and runs.loc[model, "attempts"] == 1


# --- 8: leftovers of a kill, failures on the console, umask ---------------------------------------------------
def test_resume_removes_temp_files_failures_print_one_line_and_files_follow_the_umask(tmp_path, capfd):
    cells = expand_grid(["mlp_transformer", "mlp_mamba"], [TASK], [0], TINY)
    good = next(c for c in cells if c.model == "mlp_transformer")
    run_dir = tmp_path / RUNS_DIR / good.run_id
    (run_dir / "snapshots").mkdir(parents=True)
    # what atomic_write leaves when killed between mkstemp and os.replace; and a file of the user's, kept
    leftovers = [
        run_dir / ".ckpt_step4.pt.k3x_9a2b.tmp",
        run_dir / "snapshots" / ".splines_step000004.pt.abcdefgh.tmp",
    ]
    for p in leftovers:
        p.write_bytes(b"partial")
    (run_dir / "notes.tmp").write_text("mine")
    old = os.umask(0o022)
    try:
        summary = run_sweep(
            cells, tmp_path, backend=LocalBackend(workers=1, threads=1, cell_fn=fail_one_cell)
        )
    finally:
        os.umask(old)
    assert summary.counts == {"completed": 1, "failed": 1}
    assert not any(p.exists() for p in leftovers) and (run_dir / "notes.tmp").read_text() == "mine"
    for name in ("result.json", "config.json", "final_model.pt"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o644, name  # 0666 & ~022, not mkstemp's 0600
    captured = capfd.readouterr()
    console = captured.out + captured.err
    assert "Traceback" not in console and "n_train must be positive" in console
    failed = next(c for c in cells if c.model == "mlp_mamba")
    log_text = (tmp_path / RUNS_DIR / failed.run_id / LOG_FILE).read_text()
    assert "Traceback" in log_text and "n_train must be positive" in log_text


def test_dry_run_runs_the_backend_checks(tmp_path, capsys):
    base = [
        "compare",
        "--tasks",
        "symbolic",
        "--seeds",
        "1",
        "--dry-run",
        "--output-dir",
        str(tmp_path / "o"),
    ]
    assert main([*base, "--ray-address", "127.0.0.1:1"]) == 2
    assert "--ray-address needs --backend ray" in capsys.readouterr().err
    assert main([*base, "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_analyze_of_a_file_names_that_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("not results")
    assert main(["analyze", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        str(f) in err and "results.db" in err and f"{f}/results.db" not in err and len(err.splitlines()) == 1
    )


# --- 4: no orphans ------------------------------------------------------------------------------------------
def _spawned_children(pid: int) -> list[int]:
    """Pool processes (multiprocessing spawn) whose parent is ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
        if ppid == pid and b"spawn_main" in cmdline:
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone: it no longer computes or holds memory)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_exit_when_the_driver_dies(tmp_path, sig):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "mamba_kan", "compare", "--models", "mlp_transformer", "mlp_mamba",
            "kan_mamba", "--tasks", "symbolic/exp_sin", "--seeds", "1", "--workers", "2", "--max-steps", "100000",
            "--set", "batch_size=8", "--set", "model_cfg.d_model=32", "--set", "model_cfg.n_layers=1",
            "--set", "task_options.n_train=32", "--set", "task_options.n_val=16", "--set", "task_options.n_test=16",
            "--output-dir", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            workers = _spawned_children(proc.pid)
            if len(workers) == 2 and len(list((out / RUNS_DIR).glob(f"*/{LOG_FILE}"))) == 2:
                break  # both workers are inside a cell
            time.sleep(0.2)
        assert len(workers) == 2 and proc.poll() is None, "the sweep did not start two workers"
        proc.send_signal(sig)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "workers outlived the driver"
    finally:
        for pid in [proc.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
