# ruff: noqa: F811  (the imported fixture "sweep" is requested by name)
"""``report --where/--tune``: a report of a sweep shows the configuration ``analyze`` would analyse, in its figures
and tables as well as its statistics, and never a pool of configurations. The store is the lr sweep of
test_analysis_configs (36 runs written through the real ResultsStore); expectations come from its tables."""

from __future__ import annotations

import json

import pytest

from mamba_kan.cli import main
from mamba_kan.reporting.data import load_report_data
from test_analysis_configs import CHOSEN, SEEDS, TABLE, TASK, VARIANTS
from test_analysis_configs import lr_sweep as sweep  # noqa: F401,F811  (the same store, one definition)


def _lrs(data):
    return {(r.model, r.seed): r.config["lr"] for r in data.runs.itertuples()}


def test_without_a_selection_statistics_are_skipped_and_say_why(sweep):
    data = load_report_data(sweep)
    assert data.analysis is None and "differ in lr" in data.analysis_note
    assert len(data.runs) == len(TABLE)


def test_where_keeps_one_configuration_for_figures_and_statistics(sweep):
    data = load_report_data(sweep, where=["lr=1e-3"])
    assert set(_lrs(data).values()) == {1e-3} and len(data.runs) == len(VARIANTS) * len(SEEDS)
    assert data.analysis is not None and data.analysis["settings"]["where"] == {"lr": [0.001]}
    cells = {c["model"]: c["mean"] for c in data.analysis["tasks"][TASK]["cells"]}
    assert cells["mlp_transformer"] == pytest.approx(
        sum(TABLE[("mlp_transformer", 1e-3, s)][1] for s in SEEDS) / len(SEEDS)
    )


def test_tune_keeps_each_variants_validation_best(sweep):
    data = load_report_data(sweep, tune=["lr"])
    lrs = _lrs(data)
    assert lrs == {(m, s): CHOSEN[m] for m in VARIANTS for s in SEEDS}
    assert {r["model"]: r["chosen"]["lr"] for r in data.analysis["tuning"]} == CHOSEN


def test_report_cli_with_where_builds_the_report_of_that_configuration(sweep, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", str(sweep), "--out", str(out), "--where", "lr=0.003"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["figures"]
    tables = (out / "tables.md").read_text()
    # the unfiltered report of this directory says "Statistics skipped: ... differ in lr"
    assert "Statistics skipped" not in tables and "differ in lr" not in tables


@pytest.mark.parametrize(
    ("flag", "text"),
    [(["--where", "lrr=1e-3"], "did you mean lr?"), (["--where", "lr"], "--where expects KEY=VALUE")],
)
def test_report_bad_selection_is_one_line_exit_2(sweep, tmp_path, capsys, flag, text):
    out = tmp_path / "rep_bad"
    assert main(["report", str(sweep), "--out", str(out), *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert text in err and "\n" not in err
    assert not out.exists()
