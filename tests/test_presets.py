"""Presets: the study preset's design (six variants, >= 10 seeds, the discriminating task configurations, widths
above the fairness floor, per-task sizes that explicit flags still override), the paper preset's long-context
tasks, and the quick preset's pipeline check at the new task defaults."""

from __future__ import annotations

import pytest

from mamba_kan.design import VARIANTS
from mamba_kan.experiments.grid import expand_grid
from mamba_kan.experiments.presets import PAPER, PRESETS, QUICK, STUDY
from mamba_kan.models import ModelConfig, solve_ffn_hidden
from mamba_kan.tasks import make_task
from mamba_kan.tasks.timeseries import SERIES
from mamba_kan.training.config import merge_settings


def _cells(preset, settings=None):
    return expand_grid(
        list(preset.models),
        preset.task_specs(),
        range(preset.seeds),
        settings or preset.settings,
        version="v",
    )


def test_study_has_the_six_variants_ten_seeds_and_the_required_tasks():
    assert STUDY.models == VARIANTS and len(VARIANTS) == 6 and STUDY.seeds >= 10
    specs = {s.name: s for s in STUDY.task_specs()}
    assert "long_context/selective_copying" in specs
    ind = specs["long_context/induction_heads"].options
    assert max(ind["eval_lengths"]) >= 8 * ind["seq_len"]  # extrapolation to >= 8x the training length
    assert "symbolic/exp_sin" in specs and any(n.startswith("symbolic/feynman_") for n in specs)
    assert any(n.startswith("language/") for n in specs)
    real = [n for n in specs if n.startswith("timeseries/") and SERIES[n.split("/")[1]].generate is None]
    assert real, "the study needs one real time series"
    assert STUDY is PRESETS["study"]


def test_study_grid_uses_each_tasks_own_sizes():
    cells = _cells(STUDY)
    n_tasks = len(STUDY.task_specs())
    assert len(cells) == 6 * n_tasks * STUDY.seeds and len({c.cell_key for c in cells}) == len(cells)
    by_task = {c.task: c.config for c in cells}
    assert by_task["symbolic/exp_sin"].model_cfg["d_model"] == 16
    assert by_task["long_context/induction_heads"].model_cfg["d_model"] == 64
    assert all(
        c.config.eval_batch_size == 256 for c in cells
    )  # the preset's common setting reaches every task


def test_explicit_flags_override_the_per_task_settings():
    # what `compare --preset study --max-steps 7 --set model_cfg.d_model=32` passes to the grid
    settings = merge_settings(dict(STUDY.settings), {"max_steps": 7, "model_cfg": {"d_model": 32}})
    cells = _cells(STUDY, settings)
    assert {c.config.max_steps for c in cells} == {7}
    assert {c.config.model_cfg["d_model"] for c in cells} == {32}
    # nested settings merge key by key: the task's other model settings survive the override
    assert {c.config.model_cfg["n_layers"] for c in cells if c.task == "symbolic/exp_sin"} == {1}


def test_an_explicit_configuration_keeps_the_presets_sizes():
    (spec,) = STUDY.task_specs(["long_context/induction_heads"])
    assert spec.settings["model_cfg"]["d_model"] == 64 and spec.options["seq_len"] == 32


def test_every_feedforward_width_of_the_study_is_above_the_fairness_floor():
    # the fairness floor: no feedforward narrower than max(8, d_model / 8) (docs/models.md)
    checked = set()
    for cell in _cells(STUDY):
        cfg = cell.config
        key = (cell.task, cell.model)
        if key in checked:
            continue
        checked.add(key)
        task = make_task(cfg.task, 0, **cfg.task_options)
        mcfg = ModelConfig(**cfg.model_cfg)
        seq_len = getattr(task, "seq_len", None) or getattr(task, "context", None) or task.input_spec.max_len
        width = solve_ffn_hidden(cell.model, mcfg, task.input_spec, task.output_spec, seq_len).ffn_hidden
        assert width >= max(8, mcfg.d_model / 8), f"{cell.task} {cell.model}: width {width}"
    assert len(checked) == 6 * len(STUDY.task_specs())


def test_paper_preset_runs_every_long_context_task_at_paper_scale():
    specs = [s for s in PAPER.task_specs() if s.name.startswith("long_context")]
    assert {s.name for s in specs} == {
        "long_context/mqar",
        "long_context/selective_copying",
        "long_context/induction_heads",
    }
    cells = _cells(PAPER)
    labels = {c.task for c in cells if c.family == "long_context"}
    assert len(labels) == len(specs)  # two MQAR lengths stay two task labels
    copy = next(s for s in specs if s.name.endswith("selective_copying"))
    assert copy.options["seq_len"] == 4096  # Mamba paper §4.1
    ind = next(s for s in specs if s.name.endswith("induction_heads"))
    assert ind.options["seq_len"] == 256 and max(ind.options["eval_lengths"]) >= 64 * 256


@pytest.mark.parametrize("preset", [QUICK, STUDY, PAPER], ids=lambda p: p.name)
def test_every_preset_task_builds_at_its_options(preset):
    for spec in preset.task_specs():
        task = make_task(spec.name, 0, **spec.options)
        assert task.reference_values("test"), f"{spec.name}: no floor or baseline"
