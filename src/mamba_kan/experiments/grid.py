"""The comparison grid: variants x tasks x seeds -> cells, each with a resolved TrainConfig and a cell key.

A cell's key is sha256(config hash + code version + torch threads). The config hash
(``mamba_kan.training.config.config_hash``) covers every resolved hyperparameter that changes what a run computes
(model settings and task options expanded with their defaults), so changing any setting makes a new cell instead of
silently reusing a stale result; the code version covers the code that computes a run (benchopt keys its cache the
same way: config + code version). The thread count is part of the key because a different number of torch threads
changes a CPU run's floating-point reductions (and so its metrics, by up to ~1% after training); every cell of a
grid gets the same, fixed count (``--threads`` / ``threads`` setting, else ``OMP_NUM_THREADS``, else 1), never one
derived from the machine or from how many cells are left.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from mamba_kan import __version__
from mamba_kan.errors import UserError, unknown_choice

# The subpackages whose code decides a run's numbers. The CLI, the grid runner, analysis and reporting do not,
# so editing them keeps every stored result valid.
_RESULT_CODE = ("ops", "modules", "models", "tasks", "training", "io_spec.py", "errors.py")
CODE_VERSION_ENV = "MAMBA_KAN_CODE_VERSION"


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+<12 hex digits>``: a digest of the source files that compute a run.

    Any edit to the model, task or training code changes it, so results computed by other code are never reused.
    Plug-ins (:mod:`mamba_kan.plugins`) are not part of it: installing one keeps every cached cell valid, and a
    cell that uses one has that plug-in's source digest in its key instead (:func:`make_cell_key`). Set ``MAMBA_KAN_CODE_VERSION`` to pin it explicitly (e.g. after a change known not to affect results); the
    value is recorded with every run either way.
    """
    pinned = os.environ.get(CODE_VERSION_ENV)
    if pinned:
        return pinned
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for entry in _RESULT_CODE:
        path = root / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            digest.update(f.relative_to(root).as_posix().encode())
            digest.update(b"\0")
            digest.update(f.read_bytes())
            digest.update(b"\0")
    return f"{__version__}+{digest.hexdigest()[:12]}"


def make_cell_key(
    config_hash: str, version: str, threads: int, model: str | None = None, task: str | None = None
) -> str:
    """sha256 (hex) of the resolved config's hash, the code version and the torch thread count, and, for a cell
    of ``model`` on ``task`` that uses plug-in components, the digest of their source files
    (:func:`mamba_kan.plugins.cell_source_hash`). A cell of built-in parts has the key it had before plug-ins."""
    text = f"{config_hash}\n{version}\nthreads={threads}"
    if model is not None and task is not None:
        from mamba_kan.plugins import cell_source_hash

        plugin_hash = cell_source_hash(model, task)
        if plugin_hash is not None:
            text += f"\nplugins={plugin_hash}"
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class TaskSpec:
    """One task entry of a grid: ``name`` (``family`` or ``family/config``) and option overrides for it.

    ``settings``: TrainConfig fields for this task's cells only (e.g. a smaller model_cfg for a small-budget
    regression); the grid's own settings (a preset's common settings and explicit flags) are merged over them."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    """One (variant, task, seed) run of the grid.

    ``task`` is the label the results use: the resolved ``family/config`` name, with ``@option=value`` appended
    only when the grid runs the same configuration with different options (e.g. two sequence lengths), so that
    such runs are never pooled as replicates of one task.
    """

    cell_key: str
    run_id: str
    model: str
    task: str
    family: str
    seed: int
    config: Any  # TrainConfig, resolved
    config_hash: str
    code_version: str


def parse_seeds(seeds: int | None, seed_list: Iterable[int | str] | None) -> list[int]:
    """``--seeds N`` -> 0..N-1; ``--seed-list 3,7`` (or ``3 7``) -> [3, 7]. Bad values raise UserError."""
    if seed_list is not None:
        out: list[int] = []
        for item in seed_list:
            for part in str(item).split(","):
                part = part.strip()
                if not part:
                    continue
                try:
                    value = int(part)
                except ValueError:
                    raise UserError(f"--seed-list expects integers, got {part!r}") from None
                if value < 0:
                    raise UserError(f"seeds must be >= 0, got {value}")
                if value not in out:
                    out.append(value)
        if not out:
            raise UserError("--seed-list is empty; give seeds such as --seed-list 0,1,2")
        return out
    if seeds is None:
        raise UserError("give --seeds N or --seed-list")
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1 (seeds 0..N-1), got {seeds}")
    return list(range(seeds))


def check_models(models: Sequence[str]) -> list[str]:
    """Unknown variant names raise a UserError listing the valid ones; duplicates are dropped."""
    from mamba_kan.models.registry import all_variants

    valid = all_variants()  # the built-in variants and those of loaded plug-ins
    out: list[str] = []
    for m in models:
        if m not in valid:
            raise unknown_choice("model variant", m, valid)
        if m not in out:
            out.append(m)
    if not out:
        raise UserError(f"no models given; valid choices: {', '.join(valid)}")
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text).strip("-")


def _labels(resolved: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Task labels: ``family/config``, plus ``@key=value`` for the options that differ between entries that share
    a configuration (so a length sweep gives ``long_context/mqar@seq_len=2048`` and ``...@seq_len=4096``)."""
    labels = []
    for name, options in resolved:
        same = [o for n, o in resolved if n == name]
        differing = sorted({k for o in same for k in o if any(o2.get(k) != o.get(k) for o2 in same)})
        suffix = ",".join(f"{k}={options.get(k)}" for k in differing)
        labels.append(f"{name}@{suffix}" if suffix else name)
    return labels


def _build_task(name: str, seed: int, options: Mapping[str, Any]) -> None:
    """Build task ``name`` once (and drop it): the task's own checks of its options and data files run here,
    before any cell, instead of failing every cell of the task later. Any error is a UserError naming the task."""
    from mamba_kan.tasks.registry import make_task

    try:
        make_task(name, seed=seed, **options)
    except UserError as exc:
        message = str(exc)
        raise UserError(message if name in message else f"task {name}: {message}") from None
    except (ValueError, TypeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"task {name} cannot be built with options {dict(options)}: {first}") from None


def expand_grid(
    models: Sequence[str],
    tasks: Sequence[TaskSpec],
    seeds: Sequence[int],
    settings: Mapping[str, Any],
    version: str | None = None,
) -> list[Cell]:
    """All cells of ``models x tasks x seeds``, ordered seed-major (a sweep stopped early leaves complete seeds).

    ``settings``: TrainConfig fields shared by every cell (max_steps, batch_size, model_cfg, ...); a task's own
    options are merged over ``settings['task_options']``. ``threads`` unset (None) becomes
    :func:`~mamba_kan.training.config.default_threads`, recorded in every cell's config. Every task entry is built
    once here (data files read, options checked by the task itself), so a bad option or a missing data file is a
    UserError before anything runs, not a failed cell. Raises UserError for unknown names, settings or options.
    """
    from mamba_kan.training.config import TrainConfig, config_hash, default_threads, merge_settings

    version = version or code_version()
    models = check_models(models)
    if "model" in settings or "task" in settings or "seed" in settings:
        raise UserError("model, task and seed are set by the grid (--models, --tasks, --seeds), not by --set")
    if settings.get("threads") is None:
        settings = {**settings, "threads": default_threads()}

    # resolve each task entry once (canonical name + options with defaults); identical entries collapse
    entries: list[tuple[str, dict[str, Any], TaskSpec]] = []
    for spec in tasks:
        probe = TrainConfig.from_dict(
            merge_settings(
                merge_settings(spec.settings, settings),
                {"model": models[0], "task": spec.name, "task_options": dict(spec.options)},
            )
        ).resolved()
        if not any(
            name == probe.task and opts == probe.task_options and s.settings == spec.settings
            for name, opts, s in entries
        ):
            _build_task(probe.task, int(seeds[0]) if seeds else 0, probe.task_options)
            entries.append((probe.task, probe.task_options, spec))
    if not entries:
        raise UserError("no tasks given")
    labels = _labels([(name, opts) for name, opts, _ in entries])

    cells: list[Cell] = []
    for seed in seeds:
        for (name, _, spec), label in zip(entries, labels):
            for model in models:
                cfg = TrainConfig.from_dict(
                    merge_settings(
                        merge_settings(spec.settings, settings),
                        {"model": model, "task": spec.name, "seed": int(seed), "task_options": spec.options},
                    )
                ).resolved()
                h = config_hash(cfg)
                key = make_cell_key(h, version, cfg.threads, cfg.model, cfg.task)
                run_id = f"{model}.{_slug(label.replace('/', '-'))}.s{seed}.{key[:10]}"
                family = name.partition("/")[0]
                cells.append(Cell(key, run_id, model, label, family, int(seed), cfg, h, version))
    return cells
