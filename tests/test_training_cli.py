"""`mamba-kan train` and scripts/run_experiment.py: the README's quick command as written, --json output,
seeds, config files, output directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mamba_kan.cli.train import main

REPO = Path(__file__).resolve().parents[1]
JSON_KEYS = (
    "model ffn mixer task seed status primary_metric primary_value higher_is_better metrics params flops_per_token "
    "steps_per_sec wall_time_s peak_memory_mb steps config env"
).split()
TINY = ["--set", "model_cfg.d_model=16", "model_cfg.n_layers=1", "model_cfg.n_heads=2", "threads=1"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_readme_quick_command_works_as_written():
    cmd = "scripts/run_experiment.py --model mlp_transformer --task symbolic --seeds 1 --max-steps 100 --no-wandb"
    proc = subprocess.run(
        [sys.executable, *cmd.split()], cwd=REPO, capture_output=True, text=True, timeout=230
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "mlp_transformer  symbolic/" in out and "completed" in out
    assert "test mse = " in out and "lower is better" in out and "steps/s" in out
    # not a terminal: plain log lines instead of a progress bar
    assert "val mse" in proc.stderr and "\r" not in proc.stderr


def test_json_prints_one_object_per_seed(capsys):
    rc = main(["--task", "symbolic/xy", "--seed-list", "3,7", "--max-steps", "12", "--json", *TINY])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    runs = [json.loads(line) for line in lines]
    for r in runs:
        for key in JSON_KEYS:
            assert key in r, key
        assert r["status"] == "completed" and r["steps"] == 12 and r["task"] == "symbolic/xy"
    assert [r["seed"] for r in runs] == [3, 7]
    assert runs[0]["metrics"] != runs[1]["metrics"]


def test_seeds_n_means_zero_to_n_minus_one(capsys):
    assert main(["--task", "symbolic/xy", "--seeds", "2", "--max-steps", "3", "--json", *TINY]) == 0
    assert [json.loads(x)["seed"] for x in capsys.readouterr().out.splitlines()] == [0, 1]


def test_config_file_flags_and_set_compose_and_the_run_is_saved(tmp_path: Path, capsys):
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text(
        "task: symbolic/xy\nlr: 0.002\nmax_steps: 50\nmodel_cfg:\n  d_model: 16\n  n_heads: 2\n"
    )
    argv = ["--config", str(cfg_file), "--max-steps", "6", "--output-dir", str(tmp_path / "out"), "--json"]
    assert main([*argv, "--set", "model_cfg.n_layers=1", "threads=1"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["config"]["lr"] == 0.002 and r["steps"] == 6
    assert r["config"]["model_cfg"]["d_model"] == 16 and r["config"]["model_cfg"]["n_layers"] == 1
    run_dir = tmp_path / "out" / "mlp_transformer__symbolic-xy__seed0"
    assert json.loads((run_dir / "result.json").read_text()) == r
    assert (run_dir / "config.yaml").is_file()


def test_progress_bar_path_returns_the_same_record():
    from mamba_kan.cli.train import _run_with_bar
    from mamba_kan.training import TrainConfig, run_experiment

    cfg = TrainConfig(
        task="symbolic/xy", max_steps=6, threads=1, model_cfg={"d_model": 16, "n_layers": 1, "n_heads": 2}
    )
    with_bar = _run_with_bar(run_experiment, cfg, None, "label")
    assert with_bar["metrics"] == run_experiment(cfg)["metrics"]
