"""TrainConfig: composition of YAML files and --set overrides, validation at the boundary, the config hash,
and the CLI's handling of bad settings (exit status 2, one line, no traceback)."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mamba_kan.errors import UserError
from mamba_kan.training import NON_RESULT_KEYS, TrainConfig, compose_config, config_hash, parse_set_overrides
from mamba_kan.training.config import load_yaml_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_resolve_every_automatic_value():
    cfg = TrainConfig(max_steps=500).resolved()
    assert cfg.warmup_steps == 50  # 10% of max_steps
    assert TrainConfig(max_steps=10_000).resolved().warmup_steps == 200  # capped
    assert cfg.eval_every == 50 and cfg.checkpoint_every == 50
    assert cfg.task.startswith("symbolic/")  # the family's default configuration, named in full
    # model settings expanded with every ModelConfig default, so the saved config names all hyperparameters
    from mamba_kan.models import ModelConfig

    assert cfg.model_cfg == json.loads(json.dumps(ModelConfig().to_dict()))
    assert None not in (cfg.warmup_steps, cfg.eval_every, cfg.checkpoint_every)


def test_set_values_are_parsed_like_yaml():
    got = parse_set_overrides(
        [
            "lr=1e-3",
            "max_steps=20",
            "compile=true",
            "early_stopping_patience=null",
            "model_cfg.grid_range=[-2, 2]",
        ]
    )
    assert got == {
        "lr": 0.001,
        "max_steps": 20,
        "compile": True,
        "early_stopping_patience": None,
        "model_cfg": {"grid_range": [-2, 2]},
    }
    assert isinstance(got["lr"], float) and isinstance(got["max_steps"], int)


def test_yaml_files_flags_and_set_compose_in_order(tmp_path: Path):
    a = tmp_path / "a.yaml"
    a.write_text("lr: 1e-3\nbatch_size: 8\nmodel_cfg:\n  d_model: 48\n  n_layers: 3\n")
    b = tmp_path / "b.yaml"
    b.write_text("batch_size: 16\nmodel_cfg:\n  n_heads: 2\n")
    cfg = compose_config([a, b], ["model_cfg.d_model=32", "seed=4"], max_steps=30, model=None)
    assert cfg.lr == 0.001  # from a (YAML 1.1 reads '1e-3' as a string; it must still be a float)
    assert cfg.batch_size == 16  # b overrides a
    assert cfg.max_steps == 30  # a named flag
    assert cfg.model == "mlp_transformer"  # a flag that was not given (None) keeps the default
    assert cfg.seed == 4
    # nested settings merge key by key: --set changed d_model only
    assert cfg.model_cfg == {"d_model": 32, "n_layers": 3, "n_heads": 2}
    # --set wins over a named flag
    assert compose_config([], ["max_steps=7"], max_steps=30).max_steps == 7


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"learning_rate": 0.1}, "'learning_rate'"),
        ({"lr": "fast"}, "'lr'"),
        ({"max_steps": 1.5}, "'max_steps'"),
        ({"compile": 1}, "'compile'"),
        ({"max_steps": 0}, "max_steps"),
        ({"lr": -1.0}, "lr"),
        ({"min_lr_ratio": 2.0}, "min_lr_ratio"),
        ({"warmup_steps": 50, "max_steps": 10}, "warmup_steps"),
        ({"device": "tpu"}, "device"),
        ({"precision": "fp16"}, "precision"),
        ({"early_stopping_patience": 0}, "early_stopping_patience"),
        ({"model_cfg": 3}, "'model_cfg'"),
        # non-finite numbers pass a ">= 0" check but are never meant (and JSON cannot store them)
        ({"weight_decay": math.inf}, "'weight_decay' must be a finite number"),
        ({"adam_eps": math.inf}, "'adam_eps' must be a finite number"),
        ({"grad_clip": math.inf}, "'grad_clip' must be a finite number"),
        ({"kan_reg_l1": math.inf}, "'kan_reg_l1' must be a finite number"),
        ({"kan_reg_entropy": math.nan}, "'kan_reg_entropy' must be a finite number"),
        ({"task_options": {"noise": math.inf}}, "'task_options.noise' must be a finite number"),
    ],
)
def test_bad_settings_are_user_errors_naming_the_key(settings, needle):
    with pytest.raises(UserError, match=needle) as info:
        TrainConfig.from_dict(settings)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"model": "kan_rnn"}, "kan_rnn"),
        ({"task": "no_such_family"}, "no_such_family"),
        ({"model_cfg": {"d_modle": 3}}, "d_modle"),
        ({"model_cfg": {"d_model": 30, "n_heads": 4}}, "n_heads"),
        ({"model_cfg": {"d_model": "abc"}}, "'model_cfg.d_model' must be an integer"),
        ({"model_cfg": {"grid_range": [0, "x"]}}, "'model_cfg.grid_range'"),
        ({"model_cfg": {"dropout": math.nan}}, "'model_cfg.dropout' must be a finite number"),
        ({"task_options": {"no_such_option": 1}}, "no_such_option"),
    ],
)
def test_names_are_checked_when_resolving(settings, needle):
    with pytest.raises(UserError, match=needle):
        TrainConfig.from_dict(settings).resolved()


def test_yaml_file_errors(tmp_path: Path):
    with pytest.raises(UserError, match="not found"):
        load_yaml_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_yaml_config(listy)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("lr: 0.001 # r\xe9glage\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8 text"):
        load_yaml_config(latin1)


def test_default_threads_is_one_or_omp_num_threads(monkeypatch):
    from mamba_kan.training.config import default_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # nested OpenMP levels: the outer one counts
    assert default_threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(UserError, match="OMP_NUM_THREADS must be a positive integer"):
        default_threads()


def test_config_hash_is_sha256_of_canonical_resolved_json():
    cfg = TrainConfig(lr=1e-3, model_cfg={"n_layers": 1, "d_model": 32})
    # independent recomputation from the documented definition
    d = json.loads(json.dumps(cfg.resolved().to_dict()))
    for key in NON_RESULT_KEYS:
        d.pop(key)
    expected = hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert config_hash(cfg) == expected
    # insensitive to dict order, to "family" vs "family/default", and to settings that do not change results
    same = TrainConfig(model_cfg={"d_model": 32, "n_layers": 1}, lr=1e-3, task=cfg.resolved().task)
    assert config_hash(same) == expected
    assert (
        config_hash(TrainConfig.from_dict({**cfg.to_dict(), "threads": 1, "checkpoint_every": 3})) == expected
    )
    # sensitive to anything that changes the run, including values that only differ from a default
    assert config_hash(TrainConfig(lr=2e-3, model_cfg={"n_layers": 1, "d_model": 32})) != expected
    assert (
        config_hash(TrainConfig(lr=1e-3, model_cfg={"n_layers": 1, "d_model": 32, "grid_size": 6}))
        != expected
    )


def test_resolved_config_round_trips_through_json_and_yaml(tmp_path: Path):
    import yaml

    cfg = TrainConfig(model_cfg={"grid_range": (-2.0, 2.0)}).resolved()
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert compose_config([path]) == cfg


def test_cli_bad_setting_exits_2_with_one_line(capsys):
    from mamba_kan.cli.train import main

    for argv in (["--set", "bogus=1"], ["--set", "lr=abc"], ["--model", "nope"], ["--seeds", "0"]):
        assert main(argv, prog="train") == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("train: error:"), err
        assert "Traceback" not in err


def test_cli_subprocess_exit_status_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "mamba_kan", "train", "--set", "model_cfg.d_modle=3", "--max-steps", "5"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "d_modle" in proc.stderr and "Traceback" not in proc.stderr


def test_packaged_configs_resolve_and_are_found_by_name():
    from mamba_kan.training.config import packaged_configs

    names = packaged_configs()
    assert "quick" in names
    for name, path in names.items():
        by_name = compose_config([name])
        assert by_name == compose_config([path])
        by_name.resolved()  # every name inside is valid
    with pytest.raises(UserError, match="packaged configs: .*quick"):
        compose_config(["no_such_config"])
