"""Experiment files: a grid written down as YAML (``mamba-kan compare --config FILE``), validated at load.

    name: lr-per-variant
    description: tune the learning rate of each variant on two tasks
    models: [mlp_transformer, kan_transformer]   # default: the six variants of the design
    tasks:                                        # default: the five families
      - symbolic/exp_sin                          # a name, or a mapping:
      - name: timeseries/lorenz
        options: {context: 64}                    # task options of this entry
        settings: {max_steps: 300}                # TrainConfig fields for this entry's cells
        label: lorenz-64                          # the task name results use (default family/config[@options])
        sweep: {model_cfg.d_model: [32, 64]}      # axes for this entry only
    seeds: 5                                      # 0..4, or a list [0, 3, 7]
    settings: {max_steps: 500, model_cfg: {d_model: 32}}   # TrainConfig fields for every cell
    sweep:                                        # each key takes each value, as a product
      lr: [1.0e-3, 3.0e-3]                        # for every variant, or per variant:
      weight_decay: {default: [0.1], kan_transformer: [0.0, 0.1]}

A cell's settings compose as (later wins; nested mappings key by key): TrainConfig defaults <- ``settings`` <-
the task's ``settings`` <- the swept values <- explicit settings (further ``--config`` training files,
``--max-steps``, ``--set``); an explicit setting of a swept key replaces that axis. A file with none of the keys
above is a plain training-settings file (``--config`` as in ``train``). The shipped presets (quick, study,
paper) are such files: ``mamba_kan/configs/presets/*.yaml``. docs/experiments.md has the full description.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mamba_kan.design import FAMILY_ORDER, VARIANTS
from mamba_kan.errors import UserError
from mamba_kan.experiments.grid import SweepAxis, TaskSpec
from mamba_kan.yaml_files import EXPERIMENT_FILE_KEYS, read_yaml_mapping

TASK_ENTRY_KEYS = ("name", "options", "settings", "label", "sweep")
#: per-variant sweep lists: variant names, and this key for the variants without their own list
DEFAULT_VARIANT_KEY = "default"
#: the ``meta`` key of the results database that lists the settings swept by the grids run into it
SWEEP_META_KEY = "sweep"
_GRID_KEYS = ("model", "task", "seed")
_NESTED = ("model_cfg", "task_options")


@dataclass(frozen=True)
class Experiment:
    """A grid: variants, task entries, seeds, settings and sweep axes (an experiment file or a preset).

    ``settings``: TrainConfig fields for every cell, under each task's own settings. ``tasks``: the task entries
    in order (empty: one default entry per family of ``families``). ``family_tasks``: what a family name given on
    the command line (``--tasks symbolic``) expands to; a family without an entry runs its default
    configuration. ``seeds``: a count (0..N-1) or explicit seeds. ``sweep``: axes swept for every task.
    """

    name: str
    description: str
    seeds: int | tuple[int, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    family_tasks: Mapping[str, tuple[TaskSpec, ...]] = field(default_factory=dict)
    models: tuple[str, ...] = VARIANTS
    families: tuple[str, ...] = FAMILY_ORDER
    tasks: tuple[TaskSpec, ...] = ()
    sweep: tuple[SweepAxis, ...] = ()
    source: str | None = None  # the file it was read from

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def task_specs(self, names: Sequence[str] | None = None) -> list[TaskSpec]:
        """Task entries for ``names`` (families or ``family/config``; None = the experiment's own entries).

        A family name expands to the experiment's entries for it; an explicit ``family/config`` runs the entries
        for that configuration, or, when there are none, the named configuration with the option overrides of
        the family's entries (sizes, lengths).
        """
        from mamba_kan.tasks.registry import parse_task_name

        if names is None and self.tasks:
            return _unique(self.tasks)
        out: list[TaskSpec] = []
        for name in names if names is not None else self.families:
            family, config = parse_task_name(name)  # unknown names: UserError listing the valid ones
            preset_specs = self.family_tasks.get(family)
            if not preset_specs:
                specs = [TaskSpec(name if "/" in name else family)]
            elif "/" in name:
                # the experiment's own entries for this configuration if it has any (study: induction_heads keeps
                # its lengths), else its family entries' options and sizes applied to the named configuration
                own = [s for s in preset_specs if s.name == f"{family}/{config}"]
                specs = own or [replace(s, name=f"{family}/{config}", label=None) for s in preset_specs]
            else:
                specs = list(preset_specs)
            out.extend(s for s in specs if s not in out)
        return out


def _unique(specs: Sequence[TaskSpec]) -> list[TaskSpec]:
    out: list[TaskSpec] = []
    out.extend(s for s in specs if s not in out)
    return out


# --- parsing -------------------------------------------------------------------------------------------------
def load_experiment(path: str | Path, check: bool = True) -> Experiment:
    """Read and validate an experiment file; any problem is a one-line UserError naming the file and key.
    ``check=False``: the structure only (see :func:`parse_experiment`)."""
    p = Path(path)
    return parse_experiment(read_yaml_mapping(p), str(p), check=check)


def parse_experiment(data: Mapping[str, Any], source: str = "experiment", check: bool = True) -> Experiment:
    """An :class:`Experiment` from a YAML mapping (see the module docstring). Unknown keys and wrong types raise
    a UserError ``"<source>: <key> ...; valid: ..."``; names of variants, tasks and options are checked when the
    grid is expanded (their lists come from the registries).

    ``check=False`` skips the checks of setting names and values against TrainConfig (which imports the
    training package, and torch): the packaged presets load that way when the command line builds its parsers;
    their settings are checked when their grid is expanded, as every grid's are."""

    def fail(message: str) -> UserError:
        return UserError(f"{source}: {message}")

    if not isinstance(data, Mapping):
        raise fail(f"an experiment file must be a mapping, got {type(data).__name__}")
    for key in data:
        if key not in EXPERIMENT_FILE_KEYS:
            hint = " (training settings go under 'settings:')" if check and _is_setting(key) else ""
            raise fail(f"unknown key {key!r}{hint}; valid: {', '.join(EXPERIMENT_FILE_KEYS)}")
    name = _string(data.get("name", Path(source).stem), "name", fail)
    description = _string(data.get("description", ""), "description", fail)
    models = _models(data.get("models"), fail)
    seeds = _seeds(data.get("seeds", 3), fail)
    settings = _settings(data.get("settings", {}), "settings", fail, check)
    sweep = _sweep(data.get("sweep", {}), "sweep", fail, check)
    raw_tasks = data.get("tasks")
    if raw_tasks is None:
        tasks: tuple[TaskSpec, ...] = ()
    else:
        if isinstance(raw_tasks, str):
            raw_tasks = [raw_tasks]
        if not isinstance(raw_tasks, list) or not raw_tasks:
            raise fail(f"'tasks' must be a non-empty list of task names or mappings, got {raw_tasks!r}")
        tasks = tuple(_task(entry, f"tasks[{i}]", fail, check) for i, entry in enumerate(raw_tasks))
    families: list[str] = []
    grouped: dict[str, list[TaskSpec]] = {}
    for spec in tasks:
        family = spec.name.partition("/")[0]
        if family not in families:
            families.append(family)
        grouped.setdefault(family, []).append(spec)
    # a bare family name that is its family's only entry is the family's default configuration (as if absent)
    family_tasks = {
        f: tuple(specs) for f, specs in grouped.items() if not (len(specs) == 1 and specs[0] == TaskSpec(f))
    }
    return Experiment(
        name=name,
        description=description,
        seeds=seeds,
        settings=settings,
        family_tasks=family_tasks,
        models=models,
        families=tuple(families) if families else FAMILY_ORDER,
        tasks=tasks,
        sweep=sweep,
        source=source,
    )


def check_settings_file(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A ``--config`` file that is not an experiment file holds training settings only; an unknown key is a
    UserError listing both kinds of keys (a misspelt ``modles`` is probably meant for an experiment file)."""
    from mamba_kan.training.config import TrainConfig

    valid = [f.name for f in fields(TrainConfig)]
    for key in data:
        if key not in valid:
            raise UserError(
                f"{source}: unknown key {key!r}; an experiment file has {', '.join(EXPERIMENT_FILE_KEYS)}, a "
                f"training-settings file has {', '.join(valid)}"
            )
    return dict(data)


def _is_setting(key: str) -> bool:
    from mamba_kan.training.config import TrainConfig

    return key in {f.name for f in fields(TrainConfig)}


def _no_unknown(data: Mapping[str, Any], valid: Sequence[str], what: str, fail: Any) -> None:
    for key in data:
        if key not in valid:
            raise fail(f"unknown {what} {key!r}; valid: {', '.join(valid)}")


def _string(value: Any, where: str, fail: Any) -> str:
    if not isinstance(value, str):
        raise fail(f"{where!r} must be a string, got {value!r} ({type(value).__name__})")
    return value


def _models(value: Any, fail: Any) -> tuple[str, ...]:
    if value is None:
        return VARIANTS
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise fail(f"'models' must be a non-empty list of variant names, got {value!r}")
    return tuple(value)


def _seeds(value: Any, fail: Any) -> int | tuple[int, ...]:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if is_int(value):
        if value < 1:
            raise fail(f"'seeds' must be >= 1 (seeds 0..N-1), got {value}")
        return int(value)
    if isinstance(value, list) and value and all(is_int(v) and v >= 0 for v in value):
        if len(set(value)) != len(value):
            raise fail(f"'seeds' lists a seed twice: {value}")
        return tuple(value)
    raise fail(f"'seeds' must be a count (>= 1) or a non-empty list of seeds >= 0, got {value!r}")


def _settings(value: Any, where: str, fail: Any, check: bool) -> dict[str, Any]:
    """TrainConfig fields other than model/task/seed, type- and range-checked by TrainConfig itself."""
    if not isinstance(value, Mapping):
        raise fail(f"{where!r} must be a mapping of training settings, got {value!r}")
    if not check:
        return dict(value)
    from mamba_kan.training.config import TrainConfig

    valid = [f.name for f in fields(TrainConfig) if f.name not in _GRID_KEYS]
    _no_unknown(value, valid, f"setting in {where}", fail)
    try:
        TrainConfig.from_dict(value)
    except UserError as exc:
        raise fail(f"{where}: {exc}") from None
    return dict(value)


def _task(entry: Any, where: str, fail: Any, check: bool) -> TaskSpec:
    if isinstance(entry, str):
        return TaskSpec(entry)
    if not isinstance(entry, Mapping):
        raise fail(f"{where} must be a task name or a mapping with keys {', '.join(TASK_ENTRY_KEYS)}")
    _no_unknown(entry, TASK_ENTRY_KEYS, f"key in {where}", fail)
    if "name" not in entry:
        raise fail(f"{where} has no 'name' (a task family or family/config)")
    name = _string(entry["name"], f"{where}.name", fail)
    options = entry.get("options", {})
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise fail(f"'{where}.options' must be a mapping of task options, got {options!r}")
    settings = _settings(entry.get("settings", {}), f"{where}.settings", fail, check)
    label = entry.get("label")
    if label is not None:
        label = _string(label, f"{where}.label", fail)
        if not label.strip():
            raise fail(f"'{where}.label' is empty")
    sweep = _sweep(entry.get("sweep", {}), f"{where}.sweep", fail, check)
    return TaskSpec(name, dict(options), settings, label, sweep)


def _sweep(value: Any, where: str, fail: Any, check: bool) -> tuple[SweepAxis, ...]:
    """``{key: [values]}`` or ``{key: {variant: [values], default: [values]}}`` -> axes (values type-checked)."""
    if not isinstance(value, Mapping):
        raise fail(f"{where!r} must be a mapping of setting -> list of values, got {value!r}")
    valid: list[str] = []
    if value and check:
        from mamba_kan.training.config import NON_RESULT_KEYS, TrainConfig

        valid = [f.name for f in fields(TrainConfig) if f.name not in (*_GRID_KEYS, *NON_RESULT_KEYS)]
    axes = []
    for key, spec in value.items():
        top, dot, sub = str(key).partition(".")
        known = top in valid or not check
        if not known or (top in _NESTED) != bool(dot) or (dot and (not sub or "." in sub)):
            raise fail(
                f"cannot sweep {key!r} in {where}; valid: {', '.join(v for v in valid if v not in _NESTED)}, "
                "model_cfg.<name>, task_options.<name> (settings that do not change results are not swept)"
            )
        per_variant: dict[str, tuple[Any, ...]] = {}
        if isinstance(spec, Mapping):
            if top == "task_options":
                raise fail(f"{where}.{key}: task options cannot be swept per variant; give a list")
            default = spec.get(DEFAULT_VARIANT_KEY, [])
            lists = {str(k): v for k, v in spec.items() if k != DEFAULT_VARIANT_KEY}
        else:
            default, lists = spec, {}
        for variant, values in [(DEFAULT_VARIANT_KEY, default), *lists.items()]:
            if not isinstance(values, list) or (not values and variant != DEFAULT_VARIANT_KEY):
                raise fail(
                    f"{where}.{key}{'' if variant == DEFAULT_VARIANT_KEY else '.' + variant} must be a "
                    f"non-empty list of values (or a mapping variant -> list), got {values!r}"
                )
            for v in values:
                if check and not dot:
                    try:
                        TrainConfig.from_dict({key: v})
                    except UserError as exc:
                        raise fail(f"{where}.{key}: {exc}") from None
            plain = [json.dumps(v, sort_keys=True, default=str) for v in values]
            if len(set(plain)) != len(plain):
                raise fail(f"{where}.{key} repeats a value: {values}")
            if variant != DEFAULT_VARIANT_KEY:
                per_variant[variant] = tuple(values)
        if not default and not per_variant:
            raise fail(f"{where}.{key} has no values")
        axes.append(SweepAxis(str(key), tuple(default), per_variant))
    return tuple(axes)


# --- the database's record of swept keys ---------------------------------------------------------------------
def swept_keys(cells: Sequence[Any]) -> list[str]:
    """The dotted settings swept in ``cells`` (grid.Cell), sorted."""
    return sorted({k for c in cells for k in getattr(c, "sweep", {})})


def record_sweep_keys(output_dir: str | Path, cells: Sequence[Any]) -> None:
    """Add the grid's swept keys to the results database's ``meta`` entry :data:`SWEEP_META_KEY` (a JSON list of
    dotted keys, e.g. ``["lr", "model_cfg.d_model"]``, the union over every grid run into the directory), so that
    analysis can group runs by them. Nothing is written when the grid sweeps nothing or when the directory has
    no database (the sweep stopped before it was created)."""
    from mamba_kan.experiments.store import ResultsStore, db_path, read_meta

    keys = swept_keys(cells)
    if not keys or not db_path(output_dir).exists():
        return
    try:
        earlier = json.loads(read_meta(output_dir, SWEEP_META_KEY).get(SWEEP_META_KEY, "[]"))
    except (ValueError, UserError):
        earlier = []
    merged = sorted(set(keys) | {str(k) for k in earlier if isinstance(earlier, list)})
    with ResultsStore(output_dir) as store:
        store.set_meta(SWEEP_META_KEY, json.dumps(merged))
