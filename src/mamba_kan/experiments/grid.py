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
import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
class SweepAxis:
    """One swept setting: ``key`` (dotted: ``lr``, ``model_cfg.d_model``, ``task_options.context``) takes each of
    ``values`` in turn, as a product with the grid's other axes.

    ``per_variant``: a variant's own list (tuning the learning rate per variant, the usual protocol of KAN-vs-MLP
    comparisons); a variant without an entry uses ``values``, and is not swept on this key when ``values`` is empty.
    """

    key: str
    values: tuple[Any, ...] = ()
    per_variant: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def values_for(self, model: str) -> tuple[Any, ...]:
        return tuple(self.per_variant.get(model, self.values))

    @property
    def is_task_option(self) -> bool:
        return self.key.startswith("task_options.")


@dataclass(frozen=True)
class TaskSpec:
    """One task entry of a grid: ``name`` (``family`` or ``family/config``) and option overrides for it.

    ``settings``: TrainConfig fields for this task's cells only (e.g. a smaller model_cfg for a small-budget
    regression); they override the grid's defaults (an experiment file's ``settings``) and are overridden by its
    explicit settings (``--config`` training files, ``--max-steps``, ``--set``). ``label``: the task name the
    results use (default ``family/config``, see :class:`Cell`). ``sweep``: axes swept for this task only (over the
    grid's axes of the same key)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None
    sweep: tuple[SweepAxis, ...] = ()


@dataclass(frozen=True)
class Cell:
    """One (variant, task, seed, swept values) run of the grid.

    ``task`` is the label the results use: the resolved ``family/config`` name (or the entry's ``label``), with
    ``@option=value`` appended only when the grid runs the same configuration with different options (e.g. two
    sequence lengths), so that such runs are never pooled as replicates of one task. ``sweep``: the swept
    settings of this cell, dotted key -> value (empty without a sweep); the values are also in ``config``, which
    the run record stores, and the run id ends with them (``...lr=0.001.s0.<key>``).
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
    sweep: Mapping[str, Any] = field(default_factory=dict)


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


def _labels(resolved: list[tuple[str, dict[str, Any], str | None]]) -> list[str]:
    """Task labels: the entry's own ``label`` or ``family/config``, plus ``@key=value`` for the options that
    differ between entries that share it (so a length sweep gives ``long_context/mqar@seq_len=2048`` and
    ``...@seq_len=4096``). Entries that would still share a label (same configuration and options, different
    settings) are refused: their runs would be pooled as replicates of one task."""
    bases = [own or name for name, _, own in resolved]
    labels = []
    for (_, options, _), base in zip(resolved, bases):
        same = [o for (_, o, _), b in zip(resolved, bases) if b == base]
        differing = sorted({k for o in same for k in o if any(o2.get(k) != o.get(k) for o2 in same)})
        suffix = ",".join(f"{k}={options.get(k)}" for k in differing)
        labels.append(f"{base}@{suffix}" if suffix else base)
    for label in labels:
        if labels.count(label) > 1:
            raise UserError(
                f"{labels.count(label)} task entries share the label {label!r} but differ in their settings; "
                "give each its own 'label' so their runs are not pooled as one task"
            )
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


def _family_options(name: str) -> dict[str, Any]:
    """The documented options (with defaults) of task ``name``'s family; unknown names raise a UserError."""
    import mamba_kan.tasks  # noqa: F401  (importing the package registers the families)
    from mamba_kan.tasks.registry import FAMILIES, parse_task_name

    return dict(FAMILIES[parse_task_name(name)[0]].options)


def _grid_task_options(
    where: str, options: Mapping[str, Any], tasks: Sequence[TaskSpec]
) -> dict[str, dict[str, Any]]:
    """Grid-wide task options (``--set task_options.context=64``) split per task entry: each entry gets the
    options its family has. An option that no task of the grid has is a UserError naming it."""
    if not isinstance(options, Mapping):
        raise UserError(f"setting 'task_options' ({where}) must be a mapping, got {options!r}")
    known = {spec.name: _family_options(spec.name) for spec in tasks}
    for key in options:
        if not any(key in opts for opts in known.values()):
            families = sorted({name.partition("/")[0] for name in known})
            valid = sorted({k for opts in known.values() for k in opts})
            raise UserError(
                f"task option {key!r} ({where}) is not an option of any task of the grid "
                f"({', '.join(families)}); valid: {', '.join(valid)}"
            )
    return {name: {k: v for k, v in options.items() if k in opts} for name, opts in known.items()}


def _flat_keys(values: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Dotted keys of ``values``, nested mappings included at every level: {"model_cfg": {"d": 1}} ->
    {"model_cfg", "model_cfg.d"}."""
    out: set[str] = set()
    for key, value in values.items():
        out.add(prefix + key)
        if isinstance(value, Mapping):
            out |= _flat_keys(value, f"{prefix}{key}.")
    return out


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"model_cfg.d_model": 32, "lr": 1e-3} -> {"model_cfg": {"d_model": 32}, "lr": 1e-3}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def format_value(value: Any) -> str:
    """A swept value as run ids and labels show it: ``0.001``, ``3e-05``, ``64``, ``true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def _expand_task_option_axes(
    tasks: Sequence[TaskSpec], sweep: Sequence[SweepAxis]
) -> list[tuple[TaskSpec, dict[str, Any], list[SweepAxis]]]:
    """Each task entry once per combination of its swept task options (``task_options.context: [32, 64]`` makes
    two entries, labelled ``...@context=32`` and ``...@context=64``), with the swept values and the entry's other
    axes (the task's own axes replace the grid's axes of the same key)."""
    used: set[str] = set()
    out: list[tuple[TaskSpec, dict[str, Any], list[SweepAxis]]] = []
    for spec in tasks:
        axes = list({**{a.key: a for a in sweep}, **{a.key: a for a in spec.sweep}}.values())
        names = _family_options(spec.name)
        option_axes = []
        for axis in axes:
            if not axis.is_task_option:
                continue
            if axis.per_variant:
                raise UserError(f"sweep {axis.key}: task options cannot be swept per variant")
            if axis.key.partition(".")[2] in names:
                option_axes.append(axis)
                used.add(axis.key)
            elif axis in spec.sweep:
                raise UserError(
                    f"sweep {axis.key} of task {spec.name}: no such option; valid: {', '.join(sorted(names))}"
                )
        others = [a for a in axes if not a.is_task_option]
        for combo in itertools.product(*(a.values for a in option_axes)):
            swept = {a.key: v for a, v in zip(option_axes, combo)}
            options = {**spec.options, **{k.partition(".")[2]: v for k, v in swept.items()}}
            out.append((replace(spec, options=options), swept, others))
    for axis in sweep:
        if axis.is_task_option and axis.key not in used:
            families = sorted({s.name.partition("/")[0] for s in tasks})
            raise UserError(f"sweep {axis.key}: no task of the grid ({', '.join(families)}) has that option")
    return out


def expand_grid(
    models: Sequence[str],
    tasks: Sequence[TaskSpec],
    seeds: Sequence[int],
    settings: Mapping[str, Any],
    version: str | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    sweep: Sequence[SweepAxis] = (),
) -> list[Cell]:
    """All cells of ``models x tasks x seeds x swept values``, ordered seed-major (a sweep stopped early leaves
    complete seeds), then task, variant and swept values.

    A cell's settings compose as (later wins, nested mappings key by key): ``defaults`` (an experiment file's
    ``settings``) <- the task's own ``settings`` <- the swept values <- ``settings`` (explicit settings:
    ``--config`` training files, ``--max-steps``, ``--set``). An explicit setting of a swept key replaces that
    axis (the flag wins). Task options compose as: grid-wide ``defaults['task_options']`` <- the task's options
    <- grid-wide ``settings['task_options']``; a grid-wide option applies to the tasks whose family has it and is
    a UserError only when no task has it. ``threads`` unset becomes
    :func:`~mamba_kan.training.config.default_threads`, recorded in every cell's config. Every task entry is built
    once here (data files read, options checked by the task itself), so a bad option or a missing data file is a
    UserError before anything runs, not a failed cell. Raises UserError for unknown names, settings or options.
    """
    from mamba_kan.training.config import TrainConfig, config_hash, default_threads, merge_settings

    version = version or code_version()
    models = check_models(models)
    defaults = dict(defaults or {})
    for given in (settings, defaults):
        if "model" in given or "task" in given or "seed" in given:
            raise UserError(
                "model, task and seed are set by the grid (--models, --tasks, --seeds), not by --set"
            )
    _check_axes(sweep)
    for spec in tasks:
        _check_axes(spec.sweep)
    explicit = _flat_keys(settings)
    sweep = [a for a in sweep if a.key not in explicit]
    tasks = [replace(s, sweep=tuple(a for a in s.sweep if a.key not in explicit)) for s in tasks]
    if not tasks:
        raise UserError("no tasks given")
    expanded = _expand_task_option_axes(tasks, sweep)
    settings, defaults = dict(settings), dict(defaults)
    names = [s for s, _, _ in expanded]
    over = _grid_task_options("explicit setting", settings.pop("task_options", {}) or {}, names)
    under = _grid_task_options("experiment settings", defaults.pop("task_options", {}) or {}, names)

    def task_options(spec: TaskSpec) -> dict[str, Any]:
        own = spec.settings.get("task_options") or {}
        return {**under[spec.name], **own, **spec.options, **over[spec.name]}

    def values(spec: TaskSpec, swept: Mapping[str, Any], model: str, seed: int) -> dict[str, Any]:
        merged = merge_settings(merge_settings(defaults, spec.settings), _nest(swept))
        merged = merge_settings(merged, settings)
        merged.update(model=model, task=spec.name, seed=int(seed), task_options=task_options(spec))
        if merged.get("threads") is None:
            merged["threads"] = default_threads()
        return merged

    # resolve each task entry once (canonical name + options with defaults); identical entries collapse
    entries: list[tuple[str, dict[str, Any], TaskSpec, dict[str, Any], list[SweepAxis]]] = []
    for spec, swept_options, axes in expanded:
        probe = TrainConfig.from_dict(values(spec, {}, models[0], 0)).resolved()
        same = (probe.task, probe.task_options, spec.settings, spec.label, axes)
        if not any((n, o, s.settings, s.label, a) == same for n, o, s, _, a in entries):
            _build_task(probe.task, int(seeds[0]) if seeds else 0, probe.task_options)
            entries.append((probe.task, probe.task_options, spec, swept_options, axes))
    labels = _labels([(name, opts, spec.label) for name, opts, spec, _, _ in entries])

    cells: list[Cell] = []
    for seed in seeds:
        for (name, _, spec, swept_options, axes), label in zip(entries, labels):
            for model in models:
                model_axes = [(a, a.values_for(model)) for a in axes]
                model_axes = [(a, v) for a, v in model_axes if v]
                for combo in itertools.product(*(v for _, v in model_axes)):
                    swept = {a.key: x for (a, _), x in zip(model_axes, combo)}
                    cfg = TrainConfig.from_dict(values(spec, swept, model, seed)).resolved()
                    h = config_hash(cfg)
                    key = make_cell_key(h, version, cfg.threads, cfg.model, cfg.task)
                    shown = ",".join(f"{k}={format_value(v)}" for k, v in swept.items())
                    middle = f".{_slug(shown)}" if shown else ""
                    run_id = f"{model}.{_slug(label.replace('/', '-'))}{middle}.s{seed}.{key[:10]}"
                    family = name.partition("/")[0]
                    cell_sweep = {**swept_options, **swept}
                    cells.append(
                        Cell(key, run_id, model, label, family, int(seed), cfg, h, version, cell_sweep)
                    )
    if len({c.cell_key for c in cells}) != len(cells):
        seen: dict[str, Cell] = {}
        for c in cells:
            if c.cell_key in seen:
                raise UserError(
                    f"cells {seen[c.cell_key].run_id} and {c.run_id} have the same settings: a swept value "
                    "repeats another cell's (check the sweep's lists)"
                )
            seen[c.cell_key] = c
    return cells


def _check_axes(axes: Sequence[SweepAxis]) -> None:
    """Sweep axes name a result-changing setting once, with non-empty lists of distinct values, and per-variant
    lists only for known variants (those :func:`check_models` accepts)."""
    seen: set[str] = set()
    for axis in axes:
        if axis.key in seen:
            raise UserError(f"sweep {axis.key} is given twice")
        seen.add(axis.key)
        for variant, values in [("", axis.values), *axis.per_variant.items()]:
            if variant:
                try:
                    check_models([variant])
                except UserError as exc:
                    raise UserError(f"sweep {axis.key}: {exc}") from None
            plain = [json.dumps(v, sort_keys=True, default=str) for v in values]
            if len(set(plain)) != len(plain):
                raise UserError(
                    f"sweep {axis.key}{' for ' + variant if variant else ''}: repeated value in {list(values)}"
                )
        if not axis.values and not axis.per_variant:
            raise UserError(f"sweep {axis.key}: no values")
