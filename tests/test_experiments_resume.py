"""Kill-and-resume: SIGKILL the whole sweep (driver and workers) at a random moment, run the same command again,
and compare the database with an uninterrupted run of the same grid.

The reference is the uninterrupted sweep in another directory; the comparison reads both databases with the
sqlite3 module. Every cell must be present exactly once with identical metrics and curves; cells recorded before
the kill must be left untouched; cells that were mid-run must have resumed from their checkpoints.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

GRID = [
    "--models", "mlp_transformer", "mlp_mamba",
    "--tasks", "symbolic/exp_sin",
    "--seeds", "2",
    "--workers", "2", "--threads", "1",
    "--max-steps", "120",
    "--set", "eval_every=10", "--set", "batch_size=16", "--set", "log_every=5",
    "--set", "model_cfg.d_model=32", "--set", "model_cfg.n_layers=1",
    "--set", "task_options.n_train=256", "--set", "task_options.n_val=64", "--set", "task_options.n_test=64",
]  # fmt: skip
N_CELLS = 4


def compare(out: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mamba_kan", "compare", *GRID, "--output-dir", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: killpg reaches the driver and every worker
        # pinned so that the cells stay the same cells while the source tree is edited during the test
        env={**os.environ, "MAMBA_KAN_CODE_VERSION": "kill-and-resume-test"},
        **kwargs,
    )


def finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    return output


def snapshot(db: Path) -> dict[str, dict]:
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = {}
    for key, run_id, record_json, attempts, recorded in con.execute(
        "SELECT cell_key, run_id, record_json, attempts, recorded_at FROM runs"
    ):
        r = json.loads(record_json)
        val_curve = con.execute(
            "SELECT step, metric, value FROM curves WHERE cell_key = ? AND split = 'val' ORDER BY step, metric",
            (key,),
        ).fetchall()
        result = ("status", "primary_value", "best_val", "best_val_step", "steps", "params", "metrics")
        rows[key] = {
            "run_id": run_id,
            "result": (*(r[k] for k in result), val_curve),
            "resumed_from": r["resumed_from"],
            "attempts": attempts,
            "recorded_at": recorded,
        }
    con.close()
    return rows


def start_until_training(out: Path) -> subprocess.Popen:
    """Start the sweep and return once training has begun (a first checkpoint file exists)."""
    proc = compare(out)
    deadline = time.monotonic() + 120
    while (
        not any((out / "runs").glob("*/ckpt_step*.pt"))
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    return proc


def test_sigkill_at_a_random_moment_then_rerun_completes_the_grid_exactly(tmp_path):
    # the reference: the same command, never interrupted; also times its training phase
    proc = start_until_training(tmp_path / "reference")
    t0 = time.monotonic()
    while (
        len(list((tmp_path / "reference" / "runs").glob("*/result.json"))) < N_CELLS and proc.poll() is None
    ):
        time.sleep(0.01)
    training_s = time.monotonic() - t0  # from the first checkpoint to the last cell's result
    finish(proc)
    reference = snapshot(tmp_path / "reference" / "results.db")
    assert len(reference) == N_CELLS

    # kill driver and workers at a uniformly random moment of the training phase
    out = tmp_path / "killed"
    seed = random.randrange(2**32)
    delay = random.Random(seed).uniform(0.0, training_s)
    proc = start_until_training(out)
    time.sleep(delay)
    alive = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_state = snapshot(out / "results.db") if (out / "results.db").exists() else {}
    mid_run = {
        d.name
        for d in (out / "runs").iterdir()
        if any(d.glob("ckpt_step*.pt")) and not (d / "result.json").exists()
    }
    print(
        f"random seed {seed}: SIGKILL {delay:.2f} s into training (reference {training_s:.1f} s; "
        f"{'alive' if alive else 'already finished'}); recorded before: {len(killed_state)}, mid-run: {len(mid_run)}"
    )

    output = finish(compare(out))
    assert f"{len(killed_state)} skipped as already recorded" in output, output
    resumed = snapshot(out / "results.db")
    # every cell exactly once (the primary key makes a duplicate row impossible; the count checks none is missing)
    assert resumed.keys() == reference.keys()
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(r["run_id"] for r in reference.values())
    for key, ref in reference.items():
        assert resumed[key]["result"] == ref["result"], resumed[key]["run_id"]
    for key, before in killed_state.items():  # recorded before the kill: kept, not re-run
        assert resumed[key]["recorded_at"] == before["recorded_at"] and resumed[key]["attempts"] == 1
    for row in resumed.values():
        if row["run_id"] in mid_run:  # interrupted mid-run: continued from a checkpoint, not from scratch
            assert row["resumed_from"] is not None, row["run_id"]
