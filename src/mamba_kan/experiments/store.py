"""The results store: one SQLite database per comparison directory (``DIR/results.db``).

Why SQLite, and why one writer: several processes writing one SQLite file hit "database is locked" (Optuna FAQ,
MLflow #6490), so only the sweep driver writes; workers hand their result dicts back to it. The database runs in
WAL mode so that readers (analysis, report, a user's notebook) never block the writer and never see a half-written
run: each run is recorded in ONE transaction (its row and its curves), so a SIGKILL at any moment
leaves either the whole run or nothing.

Tables (schema version :data:`SCHEMA_VERSION`):

- ``meta(key, value)``: ``schema_version``, ``created_at``, ``created_with`` (mamba-kan version), and
  ``fairness/<task label>``: the fairness sheet (:func:`mamba_kan.models.audit.fairness_audit`, JSON) of the
  variants as the grid builds them for that task.
- ``runs``: one row per grid cell, keyed by ``cell_key`` = sha256(resolved config hash + code version): the
  columns a query selects or joins on (task label, family, model, ffn, mixer, seed, status), provenance (code
  version, run directory, attempts, sweep, time) and the run's whole record (:class:`mamba_kan.record.RunRecord`,
  without its curves) as JSON in ``record_json``. Everything else the readers return is derived from that record.
- ``curves(cell_key, step, split, metric, value)``: learning curves (the record's ``curves``), one row per point.
- ``sweeps``: one row per ``compare`` invocation (command line, code version, cell counts) for provenance.

Readers (:func:`read_runs`, :func:`read_tidy`, :func:`read_curves`) open the file read-only (``mode=ro``): they take
no write lock and never modify it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import pandas as pd

from mamba_kan import __version__
from mamba_kan.errors import UserError
from mamba_kan.record import RunRecord, column_fields, field_kind

log = logging.getLogger(__name__)

RESULTS_DB = "results.db"
SCHEMA_VERSION = 2
#: Versions the readers read and the writer upgrades in place: 1 kept each run field as a column of its own (the
#: rest in ``extra_json``) and the final metrics in a table of their own.
READABLE_VERSIONS = (1, SCHEMA_VERSION)

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE sweeps (
    sweep_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    command      TEXT,
    code_version TEXT,
    backend      TEXT,
    n_cells      INTEGER,
    n_skipped    INTEGER,
    n_completed  INTEGER,
    n_diverged   INTEGER,
    n_failed     INTEGER
);
CREATE TABLE runs (
    cell_key     TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL UNIQUE,
    task         TEXT NOT NULL,
    family       TEXT,
    model        TEXT NOT NULL,
    ffn          TEXT,
    mixer        TEXT,
    seed         INTEGER NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('completed', 'diverged', 'failed')),
    code_version TEXT,
    run_dir      TEXT,
    attempts     INTEGER NOT NULL DEFAULT 1,
    sweep_id     INTEGER REFERENCES sweeps(sweep_id),
    recorded_at  TEXT NOT NULL,
    record_json  TEXT NOT NULL
);
CREATE INDEX runs_task_model_seed ON runs(task, model, seed);
CREATE TABLE curves (
    cell_key TEXT NOT NULL REFERENCES runs(cell_key) ON DELETE CASCADE,
    step     INTEGER NOT NULL,
    split    TEXT NOT NULL,
    metric   TEXT NOT NULL,
    value    REAL,
    PRIMARY KEY (cell_key, split, metric, step)
) WITHOUT ROWID;
"""

#: Columns of :func:`read_tidy`, in order (the long format the analysis reads).
TIDY_COLUMNS = (
    "task",
    "model",
    "ffn",
    "mixer",
    "seed",
    "status",
    "metric",
    "value",
    "primary_metric",
    "higher_is_better",
    "run_id",
)
#: Columns of :func:`read_curves`, in order.
CURVE_COLUMNS = ("run_id", "task", "model", "ffn", "mixer", "seed", "step", "split", "metric", "value")


# --- paths ---------------------------------------------------------------------------------------------------
def db_path(path: str | os.PathLike[str]) -> Path:
    """``DIR`` or ``DIR/results.db`` -> the database file. A path ending in ``.db`` is taken as the file."""
    p = Path(path)
    return p if p.suffix == ".db" else p / RESULTS_DB


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _float_or_none(value: Any) -> float | None:
    """SQLite stores NaN as NULL anyway; make it explicit and reject non-numbers early."""
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else v


# --- schema checks -------------------------------------------------------------------------------------------
def _schema_version(con: sqlite3.Connection, path: Path) -> int:
    """The schema version stored in ``con``; a UserError when the file is not a mamba-kan results database."""
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise database_error(path, exc) from None
    if row is None:
        raise UserError(f"{path} is not a mamba-kan results database (no schema_version)")
    try:
        return int(row[0])
    except ValueError:
        raise UserError(f"{path} has an invalid schema_version {row[0]!r}") from None


def _require_version(version: int, path: Path) -> None:
    if version not in READABLE_VERSIONS:
        raise UserError(
            f"{path} has results schema version {version}, this mamba-kan {__version__} reads version "
            f"{SCHEMA_VERSION}; use another --output-dir or the mamba-kan release that wrote it"
        )


def database_error(path: Path, exc: sqlite3.Error) -> UserError:
    """A one-line UserError for an SQLite error on ``path`` that says what happened: only a file that is not an
    SQLite database, or one without the ``meta`` table, is "not a mamba-kan results database"; a corrupted file
    or a failing disk is named as such (such a database may be good: never invite deleting it)."""
    code = getattr(exc, "sqlite_errorcode", None)
    base = code & 0xFF if isinstance(code, int) else None
    if base == sqlite3.SQLITE_NOTADB or "no such table: meta" in str(exc):
        return UserError(f"{path} is not a mamba-kan results database ({exc})")
    if base == sqlite3.SQLITE_CORRUPT:
        return UserError(f"results database {path} is corrupted ({exc}); restore it from a backup")
    if base == sqlite3.SQLITE_FULL:
        return UserError(f"cannot write results database {path}: {exc} (free some space and re-run)")
    return UserError(f"cannot use results database {path}: {exc}")


def _connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection (no write lock, no change to the file)."""
    if not path.is_file():
        if path.parent.is_file():  # `analyze FILE`: name the file that was given, not FILE/results.db
            raise UserError(
                f"{path.parent} is not a comparison directory or a results database (.db); give the directory "
                "holding results.db or the .db file"
            )
        raise UserError(f"no results database at {path}; run `mamba-kan compare --output-dir DIR` first")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        con.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise database_error(path, exc) from None
    return con


def check_database(path: str | os.PathLike[str]) -> bool:
    """True if a results database exists at ``path`` with a schema version this release reads, False if there is
    none.

    Raises UserError for a file that is not a results database or has another schema version. Never writes.
    """
    p = db_path(path)
    if not p.exists():
        return False
    with contextlib.closing(_connect_ro(p)) as con:
        _require_version(_schema_version(con, p), p)
    return True


def _record_json(data: dict[str, Any]) -> str:
    """A record dict as stored: without its curves (those are rows of the curves table)."""
    return json.dumps({k: v for k, v in data.items() if k != "curves"}, sort_keys=True, default=str)


_STORED = "run_id, task, cell_key, family, code_version, attempts, recorded_at, run_dir"


def _stored_runs(con: sqlite3.Connection, version: int) -> list[dict[str, Any]]:
    """Every run row as {store columns..., "record": the record dict without curves}, in reading order."""
    order = "ORDER BY task, model, seed, run_id"
    if version == SCHEMA_VERSION:
        cur = con.execute(f"SELECT {_STORED}, record_json FROM runs {order}")
        return [{**dict(zip(_STORED.split(", "), row[:-1])), "record": json.loads(row[-1])} for row in cur]
    # version 1: rebuild the record from its columns, extra_json and the metrics table
    metrics: dict[str, dict[str, float | None]] = {}
    for key, metric, value in con.execute("SELECT cell_key, metric, value FROM metrics"):
        metrics.setdefault(key, {})[metric] = value
    cur = con.execute(f"SELECT * FROM runs {order}")
    names = [c[0] for c in cur.description]
    out = []
    for row in cur:
        v1 = dict(zip(names, row))
        record = {
            k: v1[k] for k in column_fields() if k in v1 and k not in ("task", "config", "env", "metrics")
        }
        if record.get("higher_is_better") is not None:
            record["higher_is_better"] = bool(record["higher_is_better"])
        record.update(
            task=v1["task_name"],
            config=json.loads(v1["config_json"]),
            env=json.loads(v1["env_json"]),
            metrics=metrics.get(v1["cell_key"], {}),
            **json.loads(v1["extra_json"]),
        )
        out.append({**{k: v1[k] for k in _STORED.split(", ")}, "record": record})
    return out


def _acquire_writer_lock(path: Path) -> IO[bytes] | None:
    """An exclusive advisory lock next to the database, so that two drivers never write one directory at once.

    flock is released by the kernel when the process dies (even by SIGKILL), so a killed sweep never leaves a stale
    lock behind. Platforms without fcntl (Windows) go without the guard.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    handle = open(path.with_name(path.name + ".lock"), "ab")  # noqa: SIM115 - kept open for the store's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UserError(
            f"{path} is being written by another mamba-kan process; wait for it to finish"
        ) from None
    return handle


# --- the writer ----------------------------------------------------------------------------------------------
class ResultsStore:
    """The single writer of a results database. ``path``: a comparison directory or the ``.db`` file.

    Creating a store creates the file (and its directory) with the current schema; opening an existing one checks
    the schema version first (read-only) and refuses another version without touching the file. Use as a context
    manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = db_path(path)
        exists = check_database(self.path)  # raises before anything is written
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _acquire_writer_lock(self.path)
        self._con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        # WAL: readers never block the driver and see only committed runs; FULL sync: a committed run survives a
        # power cut, at a cost (one fsync per run) that is nothing next to a training run.
        self._con.execute("PRAGMA journal_mode = WAL")
        self._con.execute("PRAGMA synchronous = FULL")
        self._con.execute("PRAGMA foreign_keys = ON")
        if not exists:
            self._create()
        elif _schema_version(self._con, self.path) == 1:
            self._upgrade_from_v1()
        log.debug("results store %s (schema %d)", self.path, SCHEMA_VERSION)

    def _create(self) -> None:
        with self._transaction() as con:
            # a concurrent creator may have won the race between the check and the connect
            if con.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone() is not None:
                _require_version(_schema_version(con, self.path), self.path)
                return
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            con.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?)",
                [
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("created_at", _now()),
                    ("created_with", __version__),
                ],
            )

    def _upgrade_from_v1(self) -> None:
        """Rewrite a version-1 database in the current schema in one transaction (SQLite's table-rebuild
        procedure, foreign keys off meanwhile so that dropping the old table does not cascade to the curves)."""
        self._con.execute("PRAGMA foreign_keys = OFF")
        try:
            with self._transaction() as con:
                rows = _stored_runs(con, 1)
                sweeps = dict(con.execute("SELECT cell_key, sweep_id FROM runs").fetchall())
                create = _SCHEMA[_SCHEMA.index("CREATE TABLE runs (") : _SCHEMA.index("CREATE INDEX")]
                con.execute(create.replace("CREATE TABLE runs (", "CREATE TABLE runs_v2 (").rstrip("; \n"))
                con.executemany(
                    f"INSERT INTO runs_v2({_STORED}, sweep_id, ffn, mixer, model, seed, status, record_json) "
                    f"VALUES ({', '.join('?' * (len(_STORED.split(', ')) + 7))})",
                    [
                        (*(r[k] for k in _STORED.split(", ")), sweeps[r["cell_key"]],
                         *(r["record"].get(k) for k in ("ffn", "mixer", "model", "seed", "status")),
                         _record_json(RunRecord.from_dict(r["record"]).to_dict()))
                        for r in rows
                    ],
                )  # fmt: skip
                con.execute("DROP TABLE metrics")
                con.execute("DROP TABLE runs")
                con.execute("ALTER TABLE runs_v2 RENAME TO runs")
                con.execute("CREATE INDEX runs_task_model_seed ON runs(task, model, seed)")
                con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        finally:
            self._con.execute("PRAGMA foreign_keys = ON")
        log.info("upgraded %s to results schema version %d (%d runs)", self.path, SCHEMA_VERSION, len(rows))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so a transaction never fails half-way on a lock upgrade
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def close(self) -> None:
        self._con.close()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sweeps ------------------------------------------------------------------------------------------
    def start_sweep(self, command: str, code_version: str, backend: str, n_cells: int, n_skipped: int) -> int:
        with self._transaction() as con:
            cur = con.execute(
                "INSERT INTO sweeps(started_at, command, code_version, backend, n_cells, n_skipped) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (_now(), command, code_version, backend, n_cells, n_skipped),
            )
            return int(cur.lastrowid or 0)

    def finish_sweep(self, sweep_id: int, counts: Mapping[str, int]) -> None:
        with self._transaction() as con:
            con.execute(
                "UPDATE sweeps SET finished_at = ?, n_completed = ?, n_diverged = ?, n_failed = ? WHERE sweep_id = ?",
                (
                    _now(),
                    counts.get("completed", 0),
                    counts.get("diverged", 0),
                    counts.get("failed", 0),
                    sweep_id,
                ),
            )

    # --- runs --------------------------------------------------------------------------------------------
    def record_run(
        self,
        cell_key: str,
        run_id: str,
        result: RunRecord | Mapping[str, Any],
        *,
        task: str | None = None,
        family: str | None = None,
        run_dir: str | None = None,
        code_version: str | None = None,
        sweep_id: int | None = None,
    ) -> None:
        """Insert or replace the run of ``cell_key`` with ``result`` (a :class:`RunRecord` or its dict) in one
        transaction.

        ``task`` is the label the grid gives the cell (defaults to the record's task). Re-recording a cell (a
        retried failure) replaces its row and curves and increments ``attempts``; a cell never has two rows.
        """
        record = result if isinstance(result, RunRecord) else RunRecord.from_dict(result)
        data = record.to_dict()
        curves = [
            (cell_key, int(c["step"]), str(c["split"]), str(c["metric"]), _float_or_none(c["value"]))
            for c in data["curves"]
        ]
        label = task or record.task
        row: dict[str, Any] = {
            "cell_key": cell_key,
            "run_id": run_id,
            "task": label,
            "family": family or label.partition("/")[0],
            "model": record.model,
            "ffn": record.ffn,
            "mixer": record.mixer,
            "seed": record.seed,
            "status": record.status,
            "code_version": code_version,
            "run_dir": run_dir,
            "sweep_id": sweep_id,
            "recorded_at": _now(),
            "record_json": _record_json(data),
        }
        cols = list(row)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "cell_key")
        with self._transaction() as con:
            con.execute(
                f"INSERT INTO runs({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
                f"ON CONFLICT(cell_key) DO UPDATE SET {updates}, attempts = runs.attempts + 1",
                [row[c] for c in cols],
            )
            con.execute("DELETE FROM curves WHERE cell_key = ?", (cell_key,))
            # OR REPLACE: a resumed run may log a step twice; the later value is the one the run kept
            con.executemany(
                "INSERT OR REPLACE INTO curves(cell_key, step, split, metric, value) VALUES (?, ?, ?, ?, ?)",
                curves,
            )

    def statuses(self) -> dict[str, str]:
        """cell_key -> status of every recorded run."""
        return dict(self._con.execute("SELECT cell_key, status FROM runs").fetchall())

    def count(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` in the ``meta`` table (replacing an earlier value)."""
        with self._transaction() as con:
            con.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


# --- readers -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _reader(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    p = db_path(path)
    con = _connect_ro(p)
    try:
        _require_version(_schema_version(con, p), p)
        yield con
    finally:
        con.close()


def read_meta(path: str | os.PathLike[str], prefix: str = "") -> dict[str, str]:
    """``key -> value`` of the ``meta`` table entries whose key starts with ``prefix``."""
    with _reader(path) as con:
        rows = con.execute("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
        return dict(rows.fetchall())


def _record_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Give each record field's column the dtype of its declared type: floats as float (None -> NaN), flags as
    bool/None objects; integers stay as pandas infers them (int64, float64 when some are missing)."""
    for name in column_fields():
        kind = field_kind(name)
        if kind is float:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
        elif kind is bool:
            frame[name] = pd.Series(
                [None if v is None or v != v else bool(v) for v in frame[name]],
                index=frame.index,
                dtype=object,
            )
    return frame


def read_runs(path: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per recorded run: ``run_id``, then every record field that is a column (``RunRecord``'s
    ``column`` metadata; the record's ``task`` is ``task_name``, ``task`` is the grid's label), the other fields
    as the dict ``extra``, then the store's own columns (``cell_key``, ``family``, ``code_version``,
    ``attempts``, ``recorded_at``, ``run_dir``).

    ``config``, ``env``, ``metrics`` and ``extra`` are dicts; ``higher_is_better`` is a bool (None if unknown); a
    missing number (e.g. ``primary_value`` of a failed run) is NaN. ``path``: a comparison directory or the
    ``.db`` file.
    """
    with _reader(path) as con:
        stored = _stored_runs(con, _schema_version(con, db_path(path)))
    columns = column_fields()
    flat = []
    for row in stored:
        record = RunRecord.from_dict(row.pop("record")).to_dict()
        record["task_name"] = record.pop("task")
        record["metrics"] = {k: math.nan if v is None else float(v) for k, v in record["metrics"].items()}
        own = {k: record.pop(k) for k in [*columns, "task_name"] if k != "task"}
        record.pop("curves")
        flat.append({"run_id": row.pop("run_id"), "task": row.pop("task"), **own, "extra": record, **row})
    names = ["run_id", "task", *[c if c != "task" else "task_name" for c in columns], "extra"]
    names += _STORED.split(", ")[2:]
    frame = pd.DataFrame(flat, columns=names)
    return _record_columns(frame).reset_index(drop=True)


def read_tidy(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Long format, one row per run x final metric, columns :data:`TIDY_COLUMNS`.

    A run that did not complete (diverged/failed) appears once, with ``metric = primary_metric`` and ``value``
    NaN, so that missing cells are visible to the statistics rather than silently absent. The metric and its
    direction are the ones the run's record carries (its task's declaration); the store never guesses them.
    """
    runs = read_runs(path)
    rows: list[dict[str, Any]] = []
    for r in runs.itertuples(index=False):
        base = {
            "task": r.task,
            "model": r.model,
            "ffn": r.ffn,
            "mixer": r.mixer,
            "seed": int(r.seed),
            "status": r.status,
            "primary_metric": r.primary_metric,
            "higher_is_better": r.higher_is_better,
            "run_id": r.run_id,
        }
        if r.status == "completed" and r.metrics:
            rows.extend({**base, "metric": m, "value": float(v)} for m, v in r.metrics.items())
        else:
            rows.append({**base, "metric": r.primary_metric, "value": float("nan")})
    df = pd.DataFrame(rows, columns=list(TIDY_COLUMNS))
    df["value"] = df["value"].astype(float)
    df["seed"] = df["seed"].astype("int64")
    return df


def read_curves(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Learning curves, one row per (run, step, split, metric), columns :data:`CURVE_COLUMNS`."""
    with _reader(path) as con:
        df = pd.read_sql_query(
            "SELECT r.run_id, r.task, r.model, r.ffn, r.mixer, r.seed, c.step, c.split, c.metric, c.value "
            "FROM curves c JOIN runs r ON r.cell_key = c.cell_key "
            "ORDER BY r.task, r.model, r.seed, c.split, c.metric, c.step",
            con,
        )
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    return df[list(CURVE_COLUMNS)]
