"""The results store: schema, WAL, version check, upsert, atomicity under SIGKILL, readers, export.

References: the run dicts written are the expected values read back; the raw file is inspected with the sqlite3
module directly (not through the store) and the exported files with pandas/pyarrow readers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from mamba_kan.errors import UserError
from mamba_kan.experiments.export import export_results
from mamba_kan.experiments.store import (
    RESULTS_DB,
    SCHEMA_VERSION,
    TIDY_COLUMNS,
    ResultsStore,
    read_curves,
    read_runs,
    read_tidy,
)
from mamba_kan.record import RunRecord, column_fields, failed_record, record_fields


def run_result(model="kan_mamba", task="symbolic/exp_sin", seed=0, status="completed", value=0.25, n_curve=5):
    """A result dict as the training loop writes it: built from the record type, so a renamed field fails here."""
    ffn, mixer = model.split("_")
    completed = status == "completed"
    record = RunRecord(
        model=model,
        ffn=ffn,
        mixer=mixer,
        task=task,
        seed=seed,
        status=status,
        primary_metric="mse",
        primary_value=value if completed else None,
        higher_is_better=False,
        floor=0.0,
        metrics={"mse": value, "rmse": math.sqrt(value), "r2": float("nan")} if completed else {},
        best_val=value * 1.1,
        best_val_step=40,
        curves=[
            {"step": 10 * i, "split": "train", "metric": "loss", "value": 1.0 / (i + 1)}
            for i in range(n_curve)
        ]
        + [{"step": 50, "split": "val", "metric": "mse", "value": value * 1.1}],
        params=12345,
        flops_per_token=67890,
        steps_per_sec=12.5,
        tokens_per_sec=400.0,
        wall_time_s=8.0,
        peak_memory_mb=321.0,
        steps=50,
        error=None if completed else "loss became nan at step 12",
        config={"model": model, "task": task, "seed": seed, "lr": 0.003, "model_cfg": {"d_model": 32}},
        env={"torch": "2.13", "threads": 1},
        config_hash="h" * 64,
    )
    return record.to_dict()


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def filled(tmp_path):
    with ResultsStore(tmp_path) as store:
        store.record_run("k1", "run1", run_result(seed=0, value=0.25), run_dir="runs/run1")
        store.record_run("k2", "run2", run_result(model="mlp_mamba", seed=0, value=0.5), run_dir="runs/run2")
        # failed before the task was built: the record still carries the task family's metric and direction
        failed = failed_record(run_result(seed=1)["config"], "loss became nan at step 12")
        store.record_run("k3", "run3", failed, run_dir="runs/run3")
    return tmp_path


def test_new_database_is_wal_with_schema_version(tmp_path):
    with ResultsStore(tmp_path):
        pass
    con = sqlite3.connect(tmp_path / RESULTS_DB)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    version = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "curves", "meta", "sweeps"} <= tables
    con.close()


def test_read_runs_returns_what_was_recorded(tmp_path):
    filled(tmp_path)
    runs = read_runs(tmp_path).set_index("run_id")
    assert len(runs) == 3
    r = runs.loc["run1"]
    expected = run_result(seed=0, value=0.25)
    for key in (
        "model",
        "ffn",
        "mixer",
        "task",
        "seed",
        "status",
        "primary_metric",
        "params",
        "flops_per_token",
        "steps",
        "best_val_step",
    ):
        assert r[key] == expected[key], key
    for key in (
        "primary_value",
        "steps_per_sec",
        "tokens_per_sec",
        "wall_time_s",
        "peak_memory_mb",
        "best_val",
    ):
        assert r[key] == pytest.approx(expected[key]), key
    assert r["higher_is_better"] is False
    assert r["config"] == expected["config"] and r["env"] == expected["env"]
    assert r["metrics"]["mse"] == 0.25 and math.isnan(r["metrics"]["r2"])
    assert r["run_dir"] == "runs/run1"
    f = runs.loc["run3"]
    assert (
        f["status"] == "failed"
        and math.isnan(f["primary_value"])
        and f["error"].startswith("loss became nan")
    )
    # the .db file path works as well as the directory
    assert len(read_runs(tmp_path / RESULTS_DB)) == 3


def test_rerecording_a_cell_replaces_it_and_counts_attempts(tmp_path):
    with ResultsStore(tmp_path) as store:
        store.record_run("k1", "run1", run_result(status="failed", n_curve=5))
        store.record_run("k1", "run1", run_result(status="completed", value=0.125, n_curve=3))
    con = sqlite3.connect(tmp_path / RESULTS_DB)
    assert con.execute("SELECT COUNT(*), MAX(attempts), MAX(status) FROM runs").fetchone() == (
        1,
        2,
        "completed",
    )
    assert con.execute("SELECT COUNT(*) FROM curves").fetchone()[0] == 3 + 1  # old curves gone
    con.close()
    assert read_runs(tmp_path).loc[0, "primary_value"] == 0.125


def test_read_tidy_long_format_and_missing_runs(tmp_path):
    filled(tmp_path)
    tidy = read_tidy(tmp_path)
    assert list(tidy.columns) == list(TIDY_COLUMNS)
    done = tidy[tidy["status"] == "completed"]
    assert len(done) == 2 * 3  # two completed runs x three metrics
    row = done[(done["model"] == "mlp_mamba") & (done["metric"] == "rmse")]
    assert row["value"].item() == pytest.approx(math.sqrt(0.5))
    failed = tidy[tidy["status"] == "failed"]
    assert len(failed) == 1
    # the failed run's primary metric and direction are its task's declaration; its value is NaN
    assert failed["metric"].item() == "mse" and failed["primary_metric"].item() == "mse"
    assert failed["higher_is_better"].item() is False and math.isnan(failed["value"].item())


def test_read_curves(tmp_path):
    filled(tmp_path)
    curves = read_curves(tmp_path)
    one = curves[(curves["run_id"] == "run2") & (curves["split"] == "train")].sort_values("step")
    assert one["step"].tolist() == [0, 10, 20, 30, 40]
    assert one["value"].tolist() == pytest.approx([1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    assert set(curves.columns) >= {"task", "model", "ffn", "mixer", "seed", "metric"}


def test_other_schema_version_is_refused_and_left_untouched(tmp_path):
    filled(tmp_path)
    db = tmp_path / RESULTS_DB
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    before = sha(db)
    with pytest.raises(UserError, match="schema version"):
        ResultsStore(tmp_path)
    with pytest.raises(UserError, match="schema version"):
        read_runs(tmp_path)
    assert sha(db) == before


def test_foreign_file_is_refused_and_left_untouched(tmp_path):
    db = tmp_path / RESULTS_DB
    db.write_bytes(b"not a database at all" * 100)
    before = sha(db)
    with pytest.raises(UserError, match="not a mamba-kan results database"):
        ResultsStore(tmp_path)
    assert sha(db) == before


def test_missing_database_is_a_user_error(tmp_path):
    for reader in (read_runs, read_tidy, read_curves):
        with pytest.raises(UserError, match="no results database"):
            reader(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_readers_do_not_block_or_modify(tmp_path):
    filled(tmp_path)
    db = tmp_path / RESULTS_DB
    before = sha(db)
    committed = read_runs(tmp_path), read_tidy(tmp_path), read_curves(tmp_path)
    assert sha(db) == before and len(committed[2]) == 2 * 6
    # while the driver holds a write transaction open, a reader still reads the last committed state
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM curves")
    assert len(read_runs(tmp_path)) == 3 and read_runs(tmp_path).loc[0, "metrics"]
    assert len(read_curves(tmp_path)) == 2 * 6
    # ...and a reader holds no lock that would stop the writer from committing
    writer.execute("COMMIT")
    writer.close()


def test_second_writer_is_refused(tmp_path):
    with ResultsStore(tmp_path):
        with pytest.raises(UserError, match="another mamba-kan process"):
            ResultsStore(tmp_path)
    with ResultsStore(tmp_path):  # released on close
        pass


def test_sigkill_during_a_write_leaves_nothing_half_recorded(tmp_path):
    """A process killed inside record_run leaves the run either absent or complete, never partial."""
    child = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_store import run_result
        from mamba_kan.experiments.store import ResultsStore
        r = run_result(n_curve=1_500_000)
        with ResultsStore({str(tmp_path)!r}) as s:
            print("writing", flush=True)
            s.record_run("k1", "run1", r)
            print("done", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    # uncommitted pages spill into the WAL file once the page cache fills: kill once it has grown, i.e. while the
    # transaction is in flight
    wal = tmp_path / (RESULTS_DB + "-wal")
    deadline = time.monotonic() + 60
    while (
        (not wal.exists() or wal.stat().st_size < 4 << 20)
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    assert proc.poll() is None, "the write finished before the kill; make it larger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    con = sqlite3.connect(tmp_path / RESULTS_DB)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    runs = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    curves = con.execute("SELECT COUNT(*) FROM curves").fetchone()[0]
    con.close()
    assert (runs, curves) == (0, 0)
    # the store opens again and accepts writes after the crash
    with ResultsStore(tmp_path) as s:
        s.record_run("k2", "run2", run_result(seed=3))
        assert s.count() == runs + 1


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export_one_row_per_cell(tmp_path, fmt):
    filled(tmp_path)
    files = export_results(tmp_path, fmt, curves=True)
    assert [f.name for f in files] == [f"runs.{fmt}", f"metrics.{fmt}", f"curves.{fmt}"]
    reader = {
        "csv": pd.read_csv,
        "parquet": pd.read_parquet,
        "json": lambda p: pd.read_json(p, orient="records"),
    }
    runs = reader[fmt](tmp_path / "export" / f"runs.{fmt}")
    assert len(runs) == 3 and sorted(runs["run_id"]) == ["run1", "run2", "run3"]
    r1 = runs.set_index("run_id").loc["run1"]
    if fmt == "json":
        assert r1["metrics"]["mse"] == 0.25 and r1["config"]["model_cfg"]["d_model"] == 32
    else:
        assert r1["metric.mse"] == 0.25 and r1["config.model_cfg.d_model"] == 32
        assert json.loads(r1["env"]) == {"torch": "2.13", "threads": 1}
    metrics = reader[fmt](tmp_path / "export" / f"metrics.{fmt}")
    assert len(metrics) == 2 * 3 + 1
    curves = reader[fmt](tmp_path / "export" / f"curves.{fmt}")
    assert len(curves) == 2 * 6  # the failed run has none


def test_export_errors(tmp_path):
    with pytest.raises(UserError, match="no results database"):
        export_results(tmp_path, "csv")
    assert not (tmp_path / "export").exists()
    filled(tmp_path)
    with pytest.raises(UserError, match="valid choices: csv, parquet, json"):
        export_results(tmp_path, "xlsx")


def test_read_runs_columns_come_from_the_record_type(tmp_path):
    """Every record field reaches the reader: column fields as columns, the others (but curves) in ``extra``."""
    filled(tmp_path)
    runs = read_runs(tmp_path).set_index("run_id")
    names = [f.name for f in record_fields()]
    shown = [("task_name" if c == "task" else c) for c in column_fields()]
    assert set(shown) <= set(runs.columns)
    extra = runs.loc["run1", "extra"]
    assert set(extra) == set(names) - set(column_fields()) - {"curves"}
    assert extra["floor"] == 0.0 and extra["stopped_early"] is False
    assert runs.loc["run1", "task_name"] == "symbolic/exp_sin"


def test_the_store_does_not_guess_a_direction(tmp_path):
    """A record without a metric direction stays without one: the store never fills it from other runs."""
    unknown = {**run_result(seed=1, status="failed"), "primary_metric": None, "higher_is_better": None}
    with ResultsStore(tmp_path) as store:
        store.record_run("k1", "run1", run_result(seed=0))
        store.record_run("k2", "run2", unknown)
    tidy = read_tidy(tmp_path).set_index("run_id")
    assert tidy.loc["run2", "higher_is_better"] is None and pd.isna(tidy.loc["run2", "primary_metric"])
    assert (tidy.loc["run1", "higher_is_better"] == False).all()  # noqa: E712 - object column of bools


# the version-1 layout as the previous release wrote it (one column per headline field, a metrics table)
_V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sweeps (sweep_id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT NOT NULL, finished_at TEXT,
    command TEXT, code_version TEXT, backend TEXT, n_cells INTEGER, n_skipped INTEGER, n_completed INTEGER,
    n_diverged INTEGER, n_failed INTEGER);
CREATE TABLE runs (cell_key TEXT PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, model TEXT NOT NULL, ffn TEXT,
    mixer TEXT, task TEXT NOT NULL, task_name TEXT, family TEXT, seed INTEGER NOT NULL, status TEXT NOT NULL,
    primary_metric TEXT, primary_value REAL, higher_is_better INTEGER, params INTEGER, flops_per_token INTEGER,
    steps_per_sec REAL, tokens_per_sec REAL, wall_time_s REAL, peak_memory_mb REAL, steps INTEGER, best_val REAL,
    best_val_step INTEGER, error TEXT, config_hash TEXT, code_version TEXT, config_json TEXT NOT NULL,
    env_json TEXT NOT NULL, extra_json TEXT NOT NULL, run_dir TEXT, attempts INTEGER NOT NULL DEFAULT 1,
    sweep_id INTEGER REFERENCES sweeps(sweep_id), recorded_at TEXT NOT NULL);
CREATE TABLE metrics (cell_key TEXT NOT NULL REFERENCES runs(cell_key) ON DELETE CASCADE, metric TEXT NOT NULL,
    value REAL, PRIMARY KEY (cell_key, metric)) WITHOUT ROWID;
CREATE TABLE curves (cell_key TEXT NOT NULL REFERENCES runs(cell_key) ON DELETE CASCADE, step INTEGER NOT NULL,
    split TEXT NOT NULL, metric TEXT NOT NULL, value REAL, PRIMARY KEY (cell_key, split, metric, step))
    WITHOUT ROWID;
"""


def write_v1(path, results):
    con = sqlite3.connect(path / RESULTS_DB)
    con.executescript(_V1_SCHEMA)
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    headline = [c for c in column_fields() if c not in ("task", "config", "env", "metrics")]
    for i, r in enumerate(results):
        extra = {k: v for k, v in r.items() if k not in column_fields() and k != "curves"}
        row = {k: r[k] for k in headline} | {
            "cell_key": f"k{i}", "run_id": f"run{i}", "task": r["task"], "task_name": r["task"],
            "family": r["task"].partition("/")[0], "config_json": json.dumps(r["config"]),
            "env_json": json.dumps(r["env"]), "extra_json": json.dumps(extra), "recorded_at": "2026-01-01",
        }  # fmt: skip
        con.execute(
            f"INSERT INTO runs({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
        )
        con.executemany(
            "INSERT INTO metrics VALUES (?, ?, ?)", [(f"k{i}", k, v) for k, v in r["metrics"].items()]
        )
        con.executemany(
            "INSERT INTO curves VALUES (?, ?, ?, ?, ?)",
            [(f"k{i}", c["step"], c["split"], c["metric"], c["value"]) for c in r["curves"]],
        )
    con.commit()
    con.close()


def test_a_version_1_database_is_read_and_upgraded_without_loss(tmp_path):
    results = [run_result(seed=0), run_result(model="mlp_mamba", seed=1, status="diverged")]
    write_v1(tmp_path, results)
    db = tmp_path / RESULTS_DB
    before = sha(db)
    old = read_runs(tmp_path), read_tidy(tmp_path), read_curves(tmp_path)
    assert sha(db) == before  # reading does not upgrade
    assert old[0].loc[0, "extra"]["floor"] == 0.0 and old[0].loc[0, "higher_is_better"] is False
    assert old[0].loc[0, "primary_value"] == 0.25 and len(old[2]) == 2 * 6
    with ResultsStore(tmp_path) as store:  # the writer upgrades in place, in one transaction
        store.record_run("k2", "run2", run_result(seed=2))
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION
    )
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    con.close()
    new = read_runs(tmp_path), read_tidy(tmp_path), read_curves(tmp_path)
    for a, b in zip(old, new):
        b = b[b["run_id"] != "run2"].reset_index(drop=True)
        pd.testing.assert_frame_equal(a.drop(columns=["recorded_at"], errors="ignore"),
                                      b.drop(columns=["recorded_at"], errors="ignore"))  # fmt: skip
