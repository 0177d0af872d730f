"""The grid's fairness sheets: one per task, built exactly as the cells build their models, stored with the results.

The input and output ends (and so the parameter budgets and matched widths) differ between tasks, so a sheet is
made for each task label of the grid from its first cell's settings: the task is built as the training loop builds
it (same seed, same batch size, so the same sequence length), then :func:`mamba_kan.models.audit.fairness_audit`
measures every variant of the grid. The report shows them (``tables.md`` and the dashboard).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from mamba_kan.experiments.grid import Cell

log = logging.getLogger(__name__)

META_PREFIX = "fairness/"


def grid_fairness_sheets(cells: Sequence[Cell]) -> dict[str, dict[str, Any]]:
    """task label -> fairness sheet (JSON-ready) for the variants of ``cells``."""
    from mamba_kan.models.audit import fairness_audit
    from mamba_kan.tasks.registry import make_task

    variants = list(dict.fromkeys(c.model for c in cells))
    sheets: dict[str, dict[str, Any] | None] = {}
    for cell in cells:
        if cell.task in sheets:
            continue
        cfg = cell.config
        try:
            task = make_task(cfg.task, seed=cfg.seed, **cfg.task_options)
            first = task.train_batch(0, cfg.batch_size)
            seq_len = int(first.inputs.shape[-1]) if first.inputs.dim() > 1 else 1
            sheets[cell.task] = fairness_audit(
                cfg.model_cfg, task.input_spec, task.output_spec, variants, seq_len=seq_len
            )
        except Exception as exc:  # noqa: BLE001 - the sheet documents the grid; it must never stop the grid
            log.warning(
                "no fairness sheet for %s: %s", cell.task, str(exc).splitlines()[0] if str(exc) else exc
            )
            sheets[cell.task] = None
    return {k: v for k, v in sheets.items() if v is not None}


def encode(sheet: dict[str, Any]) -> str:
    return json.dumps(sheet, sort_keys=True, separators=(",", ":"))
