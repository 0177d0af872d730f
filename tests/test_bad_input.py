"""Bad input to the command line: exit status 2, one line on stderr naming the problem, no traceback, nothing
written. One table row per case (issue 12, items 6 and 7); each row builds its own files in a fresh directory.

The paths no write can reach are made without relying on permission bits (tests may run as root, whom read-only
modes do not stop): a path under a regular file, an existing directory where a file is wanted, and /proc (which
refuses new entries to everyone). The corrupted database is a real results database with its ``runs`` table's
root page overwritten; the failing disk is a file-size limit (RLIMIT_FSIZE) on the command's process.
"""

from __future__ import annotations

import resource
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mamba_kan.cli import main
from mamba_kan.experiments.store import RESULTS_DB, ResultsStore

GRID = ["--models", "mlp_mamba", "--tasks", "symbolic", "--seeds", "1", "--max-steps", "2"]
ONE = ["--model", "mlp_mamba", "--task", "symbolic", "--max-steps", "2"]


def make_database(root: Path, runs: int = 20) -> Path:
    """A real results database with ``runs`` recorded runs (written by the store; no training)."""
    with ResultsStore(root) as store:
        for i in range(runs):
            store.record_run(f"key{i}", f"run{i}", {
                "status": "completed", "model": "mlp_mamba", "ffn": "mlp", "mixer": "mamba",
                "task": "symbolic/exp_sin", "seed": i, "primary_metric": "mse", "primary_value": 0.1 + i,
                "higher_is_better": False, "metrics": {"mse": 0.1 + i},
                "curves": [{"step": s, "split": "train", "metric": "loss", "value": 1 / (s + 1)} for s in range(40)],
                "config": {"model": "mlp_mamba"}, "env": {},
            })  # fmt: skip
    return root / RESULTS_DB


def corrupt_database(root: Path) -> Path:
    """A results database whose ``runs`` table is unreadable (its root page overwritten); meta still reads."""
    db = make_database(root)
    con = sqlite3.connect(db)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    root_page = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    con.close()
    with open(db, "r+b") as f:
        f.seek((root_page - 1) * page_size)
        f.write(b"\xa5" * page_size)
    return db


def latin1_config(tmp: Path) -> Path:
    p = tmp / "settings.yaml"
    p.write_bytes("lr: 0.001  # r\xe9glage\n".encode("latin-1"))
    return p


def a_file(tmp: Path) -> Path:
    p = tmp / "a_file"
    p.write_text("keep me\n")
    return p


# each row: (id, argv built from the test's directory (the output path is tmp/"out"), text the error must contain)
Row = tuple[str, Callable[[Path], list[str]], str]
ROWS: list[Row] = [
    # 6: non-finite numbers (compare and train)
    *[
        (
            f"compare-{key}-inf",
            lambda t, k=key: ["compare", *GRID, "--output-dir", str(t / "out"), "--set", f"{k}=.inf"],
            f"'{key}' must be a finite number",
        )
        for key in ("weight_decay", "adam_eps", "grad_clip", "kan_reg_l1", "kan_reg_entropy")
    ],  # fmt: skip
    *[
        (
            f"train-{key}-inf",
            lambda t, k=key: ["train", *ONE, "--output-dir", str(t / "out"), "--set", f"{k}=.inf"],
            f"'{key}' must be a finite number",
        )
        for key in ("weight_decay", "adam_eps", "grad_clip", "kan_reg_l1", "kan_reg_entropy")
    ],  # fmt: skip
    # 6: --config with non-UTF-8 bytes
    (
        "compare-config-latin1",
        lambda t: ["compare", *GRID, "--output-dir", str(t / "out"), "--config", str(latin1_config(t))],
        "is not UTF-8 text",
    ),  # fmt: skip
    (
        "train-config-latin1",
        lambda t: ["train", *ONE, "--output-dir", str(t / "out"), "--config", str(latin1_config(t))],
        "is not UTF-8 text",
    ),  # fmt: skip
    # 6: train --output-dir that is a file, under a file, or unwritable
    (
        "train-output-dir-is-a-file",
        lambda t: ["train", *ONE, "--output-dir", str(a_file(t))],
        "exists and is not a directory",
    ),
    (
        "train-output-dir-under-a-file",
        lambda t: ["train", *ONE, "--output-dir", str(a_file(t) / "out")],
        "is not a directory",
    ),
    (
        "train-output-dir-unwritable",
        lambda t: ["train", *ONE, "--output-dir", "/proc/mamba-kan-test-out"],
        "is not writable",
    ),
    # 6: a database with corrupted pages
    *[
        (
            f"{cmd}-corrupted-database",
            lambda t, c=cmd: [c, str(corrupt_database(t / "db").parent)],
            "is corrupted",
        )
        for cmd in ("analyze", "export", "report")
    ],  # fmt: skip
    (
        "compare-corrupted-database",
        lambda t: ["compare", *GRID, "--output-dir", str(corrupt_database(t / "db").parent)],
        "is corrupted",
    ),  # fmt: skip
    (
        "compare-dry-run-corrupted-database",
        lambda t: ["compare", *GRID, "--dry-run", "--output-dir", str(corrupt_database(t / "db").parent)],
        "is corrupted",
    ),  # fmt: skip
    # 6: export into a directory that cannot be written
    (
        "export-into-unwritable-dir",
        lambda t: [
            "export",
            str(make_database(t / "db").parent),
            "--output-dir",
            "/proc/mamba-kan-test-export",
        ],
        "is not writable",
    ),  # fmt: skip
    (
        "export-into-dir-under-a-file",
        lambda t: ["export", str(make_database(t / "db").parent), "--output-dir", str(a_file(t) / "export")],
        "is not a directory",
    ),  # fmt: skip
    # 6: analyze --markdown/--latex to a directory or an unwritable path, refused before the analysis runs: the
    # comparison directory does not even exist, so an error about it would mean the analysis ran first
    (
        "analyze-markdown-to-a-directory",
        lambda t: ["analyze", str(t / "missing"), "--markdown", str(t)],
        "--markdown",
    ),
    (
        "analyze-latex-unwritable",
        lambda t: ["analyze", str(t / "missing"), "--latex", "/proc/mamba-kan.tex"],
        "cannot write --latex",
    ),
    (
        "analyze-latex-under-a-file",
        lambda t: ["analyze", str(t / "missing"), "--latex", str(a_file(t) / "t.tex")],
        "--latex",
    ),  # fmt: skip
    # 6: a model setting of the wrong type names its key
    (
        "compare-model-cfg-type",
        lambda t: ["compare", *GRID, "--output-dir", str(t / "out"), "--set", "model_cfg.d_model=abc"],
        "'model_cfg.d_model' must be an integer",
    ),  # fmt: skip
    (
        "train-model-cfg-type",
        lambda t: ["train", *ONE, "--output-dir", str(t / "out"), "--set", "model_cfg.d_model=abc"],
        "'model_cfg.d_model' must be an integer",
    ),  # fmt: skip
    # 7: task options and data files are checked (the task is built) before any cell, also with --dry-run
    *[
        (
            f"compare-n-train-0{suffix}",
            lambda t, x=extra: [
                "compare",
                *GRID,
                "--output-dir",
                str(t / "out"),
                "--set",
                "task_options.n_train=0",
                *x,
            ],
            "n_train must be positive",
        )
        for suffix, extra in (("", []), ("-dry-run", ["--dry-run"]))
    ],  # fmt: skip
    *[
        (
            f"compare-missing-text-file{suffix}",
            lambda t, x=extra: [
                "compare",
                "--models",
                "mlp_mamba",
                "--tasks",
                "language/text",
                "--seeds",
                "1",
                "--output-dir",
                str(t / "out"),
                "--set",
                f"task_options.data_path={t / 'no.txt'}",
                *x,
            ],
            "text file not found",
        )
        for suffix, extra in (("", []), ("-dry-run", ["--dry-run"]))
    ],  # fmt: skip
]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (SQLite's empty -wal/-shm companions of a reader aside)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


@pytest.mark.parametrize(("argv", "needle"), [pytest.param(a, n, id=i) for i, a, n in ROWS])
def test_bad_input_is_one_line_exit_2_no_traceback_nothing_written(tmp_path, capsys, argv, needle):
    args = argv(tmp_path)
    before = snapshot(tmp_path)
    code = main(args)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, captured
    assert len(err.splitlines()) == 1 and needle in err, err
    assert "Traceback" not in captured.err + captured.out
    assert snapshot(tmp_path) == before  # no file created, changed or removed
    assert not (tmp_path / "out").exists()


def _limit_file_size() -> None:  # runs in the child before exec
    signal.signal(
        signal.SIGXFSZ, signal.SIG_IGN
    )  # a write past the limit fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics")
def test_a_failing_disk_is_reported_as_such_never_as_a_foreign_database(tmp_path):
    db = make_database(tmp_path)
    before = db.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "mamba_kan", "compare", *GRID, "--output-dir", str(tmp_path)],
        preexec_fn=_limit_file_size, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    err = proc.stderr.strip()
    assert proc.returncode == 2, proc.stderr
    assert len(err.splitlines()) == 1 and str(db) in err and "not a mamba-kan results database" not in err, (
        err
    )
    assert "disk I/O error" in err or "disk is full" in err, err
    assert db.read_bytes() == before


def test_a_full_database_on_write_is_one_line_naming_the_database(tmp_path):
    """sqlite's max_page_count makes the disk 'full' for one connection: the store's message for it."""
    from mamba_kan.experiments.store import database_error

    db = make_database(tmp_path, runs=1)
    con = sqlite3.connect(db)
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(sqlite3.OperationalError) as info:
        con.execute("INSERT INTO meta(key, value) VALUES ('big', ?)", ("x" * 100_000,))
    con.close()
    message = str(database_error(db, info.value))
    assert message.startswith(f"cannot write results database {db}") and "full" in message
