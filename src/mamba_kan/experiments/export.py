"""Export a results database as files for pandas/R users.

Files written (``FMT`` = csv, parquet or json):

- ``runs.FMT``: one row per cell. Scalar run fields, then one ``metric.<name>`` column per final metric and one
  ``config.<key>`` column per resolved setting (nested settings flattened: ``config.model_cfg.d_model``), the
  run record's further fields as ``extra.<key>``, the environment as one JSON text column ``env``. In JSON the nested config/env/metrics stay nested.
- ``metrics.FMT``: long format, one row per run x final metric (``read_tidy``): task, model, ffn, mixer, seed,
  status, metric, value, primary_metric, higher_is_better, run_id.
- ``curves.FMT`` (with ``curves=True``): one row per (run, step, split, metric).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mamba_kan.choices import EXPORT_FORMATS
from mamba_kan.errors import UserError, unknown_choice
from mamba_kan.experiments.store import read_curves, read_runs, read_tidy

FORMATS = EXPORT_FORMATS


def _flatten(prefix: str, value: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    for k, v in value.items():
        key = f"{prefix}.{k}"
        if isinstance(v, Mapping):
            _flatten(key, v, out)
        elif isinstance(v, list | tuple):
            out[key] = json.dumps(list(v))  # one cell per setting, readable by both pandas and R
        else:
            out[key] = v
    return out


def runs_wide(path: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per cell with metrics and the resolved config as flat columns (see module docstring)."""
    runs = read_runs(path)
    scalar = runs.drop(columns=["config", "env", "metrics", "extra"])
    metrics = pd.DataFrame(
        [{f"metric.{k}": v for k, v in m.items()} for m in runs["metrics"]], index=runs.index
    )
    config = pd.DataFrame([_flatten("config", c, {}) for c in runs["config"]], index=runs.index)
    extra = pd.DataFrame([_flatten("extra", e, {}) for e in runs["extra"]], index=runs.index)
    env = pd.Series([json.dumps(e, sort_keys=True) for e in runs["env"]], index=runs.index, name="env")
    return pd.concat([scalar, metrics, extra, config, env], axis=1)


def _write(df: pd.DataFrame, path: Path, fmt: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "csv":
        df.to_csv(tmp, index=False)
    elif fmt == "json":
        tmp.write_text(df.to_json(orient="records", indent=1, default_handler=str))
    else:
        # parquet cannot hold Python objects of mixed types: keep text and numbers, everything else as JSON text
        out = df.copy()
        for col in out.columns:
            if out[col].dtype == object:
                out[col] = [
                    None if v is None else v if isinstance(v, str) else json.dumps(v) for v in out[col]
                ]
        out.to_parquet(tmp, index=False)
    os.replace(tmp, path)  # readers never see a half-written file


def export_results(
    path: str | os.PathLike[str],
    fmt: str = "csv",
    output_dir: str | os.PathLike[str] | None = None,
    curves: bool = False,
) -> list[Path]:
    """Write runs/metrics(/curves) files for the database at ``path`` into ``output_dir`` (default
    ``<comparison dir>/export``); returns the files written."""
    if fmt not in FORMATS:
        raise unknown_choice("export format", fmt, FORMATS)
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UserError("parquet export needs pyarrow: pip install 'mamba-kan[parquet]'") from None
    src = Path(path)
    base = src.parent if src.suffix == ".db" else src
    # read everything first: a missing or foreign database fails before any file is written
    tables: dict[str, pd.DataFrame] = {"runs": runs_wide(src)}
    if fmt == "json":
        # JSON keeps nesting: config/env/metrics as objects instead of flattened columns
        tables["runs"] = read_runs(src)
    tables["metrics"] = read_tidy(src)
    if curves:
        tables["curves"] = read_curves(src)
    out_dir = Path(output_dir) if output_dir is not None else base / "export"
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"export directory {out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in tables.items():
        target = out_dir / f"{name}.{fmt}"
        _write(df, target, fmt)
        written.append(target)
    return written
