"""The run record type: every producer's dict has the same keys, the JSON form is strict, older or newer result
dicts round-trip, failures carry the task's own metric direction, and the module stays torch-free."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from mamba_kan.experiments.worker import failed_result
from mamba_kan.record import RunRecord, column_fields, failed_record, field_kind, record_fields
from mamba_kan.tasks import FAMILIES, make_task

DOCS = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_result_keys_are_the_record_fields_in_order():
    keys = list(RunRecord(model="kan_mamba", status="completed").to_dict())
    assert keys == [f.name for f in record_fields()]
    assert "unknown" not in keys and len(keys) == len(fields(RunRecord)) - 1


def test_json_form_is_strict_and_round_trips():
    record = RunRecord(
        model="kan_mamba",
        task="symbolic/exp_sin",
        status="completed",
        primary_value=float("inf"),
        metrics={"mse": 0.5, "r2": float("nan")},
        curves=[{"step": 1, "split": "train", "metric": "loss", "value": float("nan")}],
    )
    data = record.to_dict()
    text = json.dumps(data, allow_nan=False)  # NaN/inf became null
    assert (
        data["primary_value"] is None and data["metrics"]["r2"] is None and data["curves"][0]["value"] is None
    )
    assert RunRecord.from_dict(json.loads(text)).to_dict() == data


def test_older_and_newer_result_dicts_are_read_without_loss():
    # an older, partial dict (what a dead worker returned before the record type existed)
    old = {
        "model": "mlp_mamba",
        "task": "language",
        "seed": 2,
        "status": "failed",
        "metrics": None,
        "env": {},
    }
    record = RunRecord.from_dict(old)
    assert (record.model, record.seed, record.metrics, record.steps, record.stopped_early) == (
        "mlp_mamba", 2, {}, None, False,
    )  # fmt: skip
    # a key another version added is kept and written back
    newer = {**RunRecord(model="kan_mamba", status="completed").to_dict(), "energy_kwh": 0.25}
    assert RunRecord.from_dict(newer).to_dict() == newer


def test_bad_status_is_refused():
    with pytest.raises(ValueError, match="status must be one of"):
        RunRecord(status="finished")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_failures_carry_the_tasks_own_metric_and_direction(family):
    task = make_task(family, seed=0)  # the reference: the task object itself
    config = {"model": "bspline_transformer", "task": task.name, "seed": 4}
    for data in (failed_record(config, "RuntimeError: boom").to_dict(), failed_result(config, "worker died")):
        assert data["status"] == "failed" and data["seed"] == 4
        assert (data["ffn"], data["mixer"]) == ("bspline", "transformer")
        assert (data["primary_metric"], data["higher_is_better"]) == (
            task.primary_metric,
            task.higher_is_better,
        )
        assert list(data) == [f.name for f in record_fields()]


def test_failure_of_an_unknown_task_or_variant_knows_nothing_and_guesses_nothing():
    data = failed_record({"model": "nope", "task": "nofamily/x", "seed": 0}, "UserError").to_dict()
    assert (data["ffn"], data["mixer"], data["primary_metric"], data["higher_is_better"]) == (None,) * 4


def test_documented_result_keys_are_exactly_the_record_fields():
    """docs/architecture.md (Run API) lists the keys of result.json; they must be the record's fields."""
    text = DOCS.read_text()
    listed = text[text.index("JSON-serialisable with keys:") : text.index("Run directories hold")]
    listed = re.sub(r"\([^)]*\)", "", listed.split(":", 1)[1]).replace("Extra keys:", ",")
    keys = {w for w in re.split(r"[,\s.]+", listed) if re.fullmatch(r"[a-z_]+", w)}
    assert keys == {f.name for f in record_fields()}


def test_column_kinds_come_from_the_annotations():
    assert field_kind("primary_value") is float and field_kind("higher_is_better") is bool
    assert field_kind("params") is int and field_kind("metrics") is dict and field_kind("model") is str
    assert {"model", "task", "seed", "status", "metrics", "config", "env"} <= set(column_fields())
    assert "curves" not in column_fields()


def test_module_imports_without_torch():
    code = "import sys, mamba_kan.record; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
