"""Kill-and-resume: a run SIGKILLed after its first checkpoint and restarted with the same command finishes with
exactly (bit-for-bit on CPU) the metrics and curves of an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mamba_kan.cli.train import add_arguments, build_configs, run_dir_for
from mamba_kan.training import run_experiment

REPO = Path(__file__).resolve().parents[1]
FLAGS = [
    "--model", "mlp_transformer", "--task", "symbolic/exp_sin", "--max-steps", "400", "--no-wandb", "--json",
    "--set", "threads=1", "batch_size=16", "checkpoint_every=20", "eval_every=50", "log_every=7",
    "model_cfg.d_model=16", "model_cfg.n_layers=1", "model_cfg.n_heads=2",
]  # fmt: skip


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "mamba_kan", "train", *FLAGS, "--output-dir", str(out)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_then_same_command_resumes_to_the_uninterrupted_result(tmp_path: Path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _command(out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    digest = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(out.glob("*/ckpt_step*.pt.sha256"))  # a checkpoint is complete once its digest exists
        if found:
            digest = found[0]
            break
        time.sleep(0.01)
    assert digest is not None, "no checkpoint appeared"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    run_dir = digest.parent
    assert not (run_dir / "result.json").exists(), "the run finished before it was killed; make it longer"

    again = subprocess.run(_command(out), cwd=REPO, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    assert "resumed" in again.stderr
    resumed = json.loads(again.stdout.strip().splitlines()[-1])
    assert resumed["resumed_from"] is not None and 0 < resumed["resumed_from"] < 400

    # the uninterrupted reference, from the very same flags (in this process: same machine, same versions)
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([*FLAGS, "--output-dir", str(tmp_path / "clean")])
    (cfg,) = build_configs(args)
    assert run_dir_for(out, cfg) == run_dir
    clean = run_experiment(cfg, run_dir_for(args.output_dir, cfg))
    assert clean["resumed_from"] is None and clean["config_hash"] == resumed["config_hash"]
    for key in ("metrics", "primary_value", "curves", "best_val", "best_val_step", "steps", "params"):
        assert resumed[key] == clean[key], key
    assert json.loads((run_dir / "result.json").read_text())["metrics"] == clean["metrics"]
