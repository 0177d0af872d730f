"""Ingest run directories computed elsewhere (a cluster's shared storage, another machine) into a results database.

Each run directory holds the run's own ``result.json`` (the Run API dict, with its resolved config). The cell key
is recomputed from that config exactly as the grid computes it (config hash + code version), so a later
``compare`` with the same settings recognises the collected cells as done and skips them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mamba_kan.errors import UserError
from mamba_kan.experiments.grid import code_version, make_cell_key
from mamba_kan.experiments.runner import check_output_dir
from mamba_kan.experiments.store import ResultsStore, check_database
from mamba_kan.experiments.worker import RESULT_FILE
from mamba_kan.record import STATUSES

log = logging.getLogger(__name__)


@dataclass
class CollectSummary:
    found: int = 0
    recorded: int = 0
    already: int = 0
    problems: list[str] = field(default_factory=list)


def find_result_files(source: str | os.PathLike[str]) -> list[Path]:
    """``result.json`` files under ``source``: the file itself, ``source/result.json``, ``source/*/result.json``
    or ``source/runs/*/result.json`` (a comparison directory)."""
    src = Path(source).expanduser()
    if not src.exists():
        raise UserError(f"nothing to collect: {src} does not exist")
    if src.is_file():
        return [src]
    direct = src / RESULT_FILE
    if direct.is_file():
        return [direct]
    files = sorted(src.glob(f"*/{RESULT_FILE}")) + sorted(src.glob(f"runs/*/{RESULT_FILE}"))
    return list(dict.fromkeys(files))


def collect_runs(
    sources: Iterable[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    version: str | None = None,
    replace: bool = False,
) -> CollectSummary:
    """Record every run found under ``sources`` into ``output_dir``'s database (the only writer is this process).

    ``version``: the code version the runs were computed with (default: this installation's). A cell already
    recorded as completed is left alone unless ``replace``. Unreadable or foreign files are listed in
    ``problems`` and skipped; they never abort the collection.
    """
    from mamba_kan.training.config import TrainConfig, config_hash

    files = [f for s in sources for f in find_result_files(s)]
    root = check_output_dir(output_dir)
    check_database(root)
    version = version or code_version()
    summary = CollectSummary(found=len(files))
    with ResultsStore(root) as store:
        existing = store.statuses()
        for f in files:
            try:
                result = json.loads(f.read_text(encoding="utf-8"))
                cfg = TrainConfig.from_dict(dict(result["config"])).resolved()
            except (OSError, ValueError, KeyError, TypeError, UserError) as exc:
                summary.problems.append(f"{f}: not a mamba-kan result ({type(exc).__name__}: {exc})"[:300])
                continue
            h = config_hash(cfg)
            if result.get("config_hash") not in (None, h):
                summary.problems.append(f"{f}: its config hash does not match its config; skipped")
                continue
            if result.get("status") not in STATUSES:
                summary.problems.append(f"{f}: unknown status {result.get('status')!r}; skipped")
                continue
            key = make_cell_key(
                h, version, cfg.threads if cfg.threads is not None else 1, cfg.model, cfg.task
            )
            if existing.get(key) == "completed" and not replace:
                summary.already += 1
                continue
            run_dir = f.parent.resolve()
            try:
                stored_dir = run_dir.relative_to(root.resolve()).as_posix()
            except ValueError:
                stored_dir = str(run_dir)
            store.record_run(
                key,
                run_dir.name,
                result,
                task=str(cfg.task),
                family=str(cfg.task).partition("/")[0],
                run_dir=stored_dir,
                code_version=version,
            )
            existing[key] = str(result["status"])
            summary.recorded += 1
    return summary
