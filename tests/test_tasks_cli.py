"""`mamba-kan tasks [--json]`: every family with its configurations and defaults; one task described; errors."""

from __future__ import annotations

import json

from mamba_kan.cli import main
from mamba_kan.tasks import FAMILIES


def test_tasks_json_lists_all_five_families_with_configs_and_defaults(capsys):
    assert main(["tasks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [
        "symbolic",
        "special_functions",
        "timeseries",
        "language",
        "long_context",
    ]
    by_name = {r["name"]: r for r in rows}
    for name, row in by_name.items():
        info = FAMILIES[name]
        assert row["configs"] == list(info.configs) and row["default_config"] in row["configs"]
        assert row["options"] == json.loads(json.dumps(info.options))
        assert row["input"] and row["output"] and row["description"]
        assert isinstance(row["higher_is_better"], bool)
    assert (
        by_name["long_context"]["primary_metric"] == "accuracy"
        and by_name["long_context"]["higher_is_better"]
    )
    assert by_name["language"]["primary_metric"] == "loss" and not by_name["language"]["higher_is_better"]
    assert (
        by_name["timeseries"]["options"]["context"] == 128
        and by_name["timeseries"]["options"]["horizon"] == 20
    )
    # null = the configuration's own default length (256 for all three)
    assert by_name["long_context"]["options"]["seq_len"] is None
    assert {"co2", "elnino", "lorenz"} <= set(by_name["timeseries"]["configs"])
    assert sum(c.startswith("feynman_") for c in by_name["symbolic"]["configs"]) >= 10


def test_tasks_text_output_names_every_task(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name, info in FAMILIES.items():
        for config in info.configs:
            assert f"{name}/{config}" in out


def test_tasks_describes_one_task_with_overrides(capsys):
    assert main(["tasks", "long_context/induction_heads", "-o", "seq_len=256", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["seq_len"] == 256 and info["eval_lengths"] == [512, 1024, 2048]
    assert info["input"] == {"type": "TokenInput", "vocab_size": 16} and info["primary_metric"] == "accuracy"


def test_tasks_bad_input_exits_2_with_one_line(capsys):
    assert main(["tasks", "symbolic/nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.count("\n") == 0 and "unknown configuration of task 'symbolic' 'nope'" in err and "exp_sin" in err
    )
    assert main(["tasks", "long_context/mqar", "-o", "n_pairs=600"]) == 2
    assert "4 * n_pairs <= seq_len" in capsys.readouterr().err
    assert main(["tasks", "language", "-o", "context"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["tasks", "-o", "context=3"]) == 2
