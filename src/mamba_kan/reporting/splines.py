"""The learned 1-D functions of the spline variants, read from a run's artefacts.

- Final functions: ``DIR/runs/<run_id>/final_model.pt`` (weights-only: state_dict, model config, variant, task,
  task options, seed, seq_len, ffn_hidden; written by the training loop). The model is rebuilt with the stored
  feedforward width (no re-matching), the weights are loaded strictly, and ``model.spline_functions(x)`` is
  evaluated on the configured grid range: B-spline MLP activations per neuron and a sample of KAN edge functions
  phi(x) = w_b silu(x) + w_s sum_m c_m B_m(x) (KAN paper eq. 2.10).
- Evolution: ``snapshots/splines_step{N:06d}.pt`` = {"step", "x" (S,), "functions" {module: (n_functions, S)}},
  saved at every validation step.

Everything is loaded with ``torch.load(weights_only=True)``: opening a results directory never runs its code.
A missing or unreadable artefact raises :class:`SplinesUnavailable` with the reason (the report shows it).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mamba_kan.design import try_parse_variant, variant_sort_key

log = logging.getLogger(__name__)

SPLINE_FFNS = ("bspline", "kan")
_SNAPSHOT_RE = re.compile(r"^splines_step(\d+)\.pt$")


class SplinesUnavailable(Exception):
    """No learned functions for a run; the message says why."""


@dataclass
class SplineSet:
    """Learned functions of one run at one step. ``x``: (S,) grid; ``functions``: {module name: (n_functions, S)}."""

    run_id: str
    model: str
    task: str
    seed: int
    step: int | None
    x: np.ndarray
    functions: dict[str, np.ndarray]


def is_spline_variant(model: str) -> bool:
    parsed = try_parse_variant(model)
    return parsed is not None and parsed[0] in SPLINE_FFNS


def run_path(root: Path, run: pd.Series) -> Path:
    """The run's artefact directory (``run_dir`` is stored relative to the comparison directory)."""
    rd = run.get("run_dir")
    if not isinstance(rd, str) or not rd:
        raise SplinesUnavailable(f"run {run['run_id']} has no run directory recorded")
    p = Path(rd)
    return p if p.is_absolute() else root / p


def final_functions(root: Path, run: pd.Series) -> SplineSet:
    """The learned functions of a completed run's final weights (see the module docstring)."""
    import torch

    from mamba_kan.models import MambaKanModel, ModelConfig
    from mamba_kan.tasks.registry import make_task
    from mamba_kan.training.checkpoint import safe_load
    from mamba_kan.training.loop import SPLINE_GRID_POINTS

    path = run_path(root, run) / "final_model.pt"
    if not path.is_file():
        raise SplinesUnavailable(f"no final_model.pt for run {run['run_id']}")
    try:
        payload = safe_load(path)
        task = make_task(
            str(payload["task"]), seed=int(payload["seed"]), **dict(payload.get("task_options") or {})
        )
        cfg = ModelConfig.from_dict(dict(payload["model_config"]))
        model = MambaKanModel(
            str(payload["variant"]),
            cfg,
            task.input_spec,
            task.output_spec,
            ffn_hidden=int(payload["ffn_hidden"]),
            seq_len=int(payload.get("seq_len") or 256),
        )
        model.load_state_dict(payload["state_dict"])
        lo, hi = cfg.grid_range
        xs = torch.linspace(float(lo), float(hi), SPLINE_GRID_POINTS)
        fns = model.spline_functions(xs)
    except Exception as exc:  # a stale or foreign file: the report notes it and goes on
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise SplinesUnavailable(
            f"cannot rebuild run {run['run_id']} from final_model.pt ({type(exc).__name__}: {first})"
        ) from exc
    if not fns:
        raise SplinesUnavailable(f"run {run['run_id']} ({run['model']}) has no spline functions")
    return SplineSet(
        run_id=str(run["run_id"]),
        model=str(run["model"]),
        task=str(run["task"]),
        seed=int(run["seed"]),
        step=int(run["steps"]) if pd.notna(run.get("steps")) else None,
        x=xs.numpy().astype(float),
        functions={k: v.detach().cpu().numpy().astype(float) for k, v in fns.items()},
    )


def snapshot_files(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of a run's spline snapshots, oldest first."""
    d = run_dir / "snapshots"
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _SNAPSHOT_RE.match(p.name))]
    return sorted(found)


def snapshot_series(root: Path, run: pd.Series) -> list[SplineSet]:
    """Every readable spline snapshot of a run, oldest first (unreadable ones are skipped with a warning)."""
    from mamba_kan.training.checkpoint import safe_load

    out = []
    for step, path in snapshot_files(run_path(root, run)):
        try:
            d: Any = safe_load(path)
            fns = d["functions"]
            xs = np.asarray(d["x"], dtype=float)
        except Exception as exc:  # truncated or foreign file
            log.warning("skipping spline snapshot %s: %s", path, exc)
            continue
        out.append(
            SplineSet(
                run_id=str(run["run_id"]),
                model=str(run["model"]),
                task=str(run["task"]),
                seed=int(run["seed"]),
                step=int(d.get("step", step)),
                x=xs,
                functions={k: np.asarray(v, dtype=float) for k, v in fns.items()},
            )
        )
    return out


def representative_runs(data: Any, task: str) -> list[pd.Series]:
    """One completed run per spline variant on ``task`` (the lowest seed), in the design's order."""
    r = data.completed
    r = r[(r["task"] == task).to_numpy(bool) & r["model"].map(is_spline_variant).to_numpy(bool)]
    out = []
    for m in sorted(r["model"].unique(), key=variant_sort_key):
        rows = r[r["model"] == m].sort_values("seed")
        out.append(rows.iloc[0])
    return out
