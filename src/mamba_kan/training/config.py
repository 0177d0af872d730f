"""Training configuration: one typed dataclass, validated at the boundary, composed from YAML files and
``--set key=value`` overrides.

Composition order (later wins): dataclass defaults <- YAML files (in the order given) <- ``--set`` overrides.
Nested mappings (``model_cfg``, ``task_options``) merge key by key, so ``--set model_cfg.d_model=128`` changes one
model setting and keeps the rest of a file's ``model_cfg``.

``resolve_config`` fills every automatic value (``None`` = "derive from the other settings"), checks the variant,
task and option names, and expands ``model_cfg``/``task_options`` with their defaults, so the saved config names
every hyperparameter the run used and :func:`config_hash` changes when any of them changes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from mamba_kan.choices import DEVICES, PRECISIONS
from mamba_kan.errors import UserError, require
from mamba_kan.yaml_files import EXPERIMENT_FILE_KEYS, is_experiment_mapping
from mamba_kan.yaml_files import looks_like_float as _looks_like_float
from mamba_kan.yaml_files import read_yaml_mapping as read_yaml_file

PACKAGED_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# Settings that do not change what a run computes: left out of config_hash so that, e.g., resuming with a
# different checkpoint interval or thread count still finds the cached result. Tracking and output settings
# (what is logged and which files are kept) are among them: turning TensorBoard on, or keeping fewer snapshots,
# never makes a new cell. (The thread count is part of a grid's cell key separately, see experiments/grid.py.)
TRACKING_KEYS = frozenset({"wandb", "wandb_project", "wandb_group", "wandb_tags", "run_name", "tensorboard"})
OUTPUT_KEYS = frozenset(
    {"checkpoint_every", "keep_checkpoints", "keep_checkpoints_after_run", "snapshot_every"}
)
NON_RESULT_KEYS = frozenset({"threads"}) | TRACKING_KEYS | OUTPUT_KEYS
#: evaluations per spline snapshot when ``snapshot_every`` is unset: about five snapshots a run (see resolved())
AUTO_SNAPSHOTS = 4


@dataclass
class TrainConfig:
    """Every hyperparameter of one (variant, task, seed) run. ``None`` means "derive automatically" (see
    :meth:`resolved`). The same defaults apply to every variant; a per-variant change must be an explicit setting.
    """

    model: str = "mlp_transformer"
    task: str = "symbolic"
    seed: int = 0
    max_steps: int = 500
    batch_size: int = 32
    # AdamW (decoupled weight decay, Loshchilov & Hutter 2019); betas as in nanoGPT / GPT-3
    lr: float = 3e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    # linear warmup then cosine decay to min_lr_ratio * lr; None = 10% of max_steps, capped at 200
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # global-norm clipping; 0 = off
    # evaluation on the validation split every eval_every steps (None = max_steps // 10, at least 1)
    eval_every: int | None = None
    eval_batch_size: int = 256
    early_stopping_patience: int | None = None  # evaluations without improvement; None = off
    log_every: int = 10  # train-loss curve points (and the NaN check) every log_every steps
    checkpoint_every: int | None = None  # None = same as eval_every; 0 = never (needs a run directory)
    # the newest keep_checkpoints checkpoints are kept while a run is in progress (it resumes from the newest)
    keep_checkpoints: int = 2
    # after a finished run (completed or diverged: its result.json is then what a re-run returns) its checkpoints
    # are deleted unless this is true; final_model.pt is kept either way. A failed run keeps them for the retry.
    keep_checkpoints_after_run: bool = False
    # spline snapshots (spline variants: the learned functions on a grid, for the report's GIF): at the first
    # evaluation, every snapshot_every-th evaluation and the last one. None = about five per run (every
    # ceil(evaluations / 4)-th); 0 = the last evaluation only.
    snapshot_every: int | None = None
    device: str = "auto"
    compile: bool = False
    # torch intra-op threads. None = 1 on CPU (this project's models are small: extra threads gain little and
    # lose a lot when the cores are shared, e.g. 65 vs 2.6 steps/s measured on a busy 2-core machine), and
    # torch's setting on GPUs. The number used is recorded in the run's env.
    threads: int | None = None
    precision: str = "auto"  # auto = bf16 autocast on GPUs that support it, else fp32
    # KAN regularisation (KAN paper §2.5: L1 of edge activations + entropy); 0 = off, as in pykan's default
    kan_reg_l1: float = 0.0
    kan_reg_entropy: float = 0.0
    model_cfg: dict[str, Any] = field(default_factory=dict)  # overrides of mamba_kan.models.ModelConfig
    task_options: dict[str, Any] = field(default_factory=dict)  # passed to mamba_kan.tasks.make_task
    # experiment tracking (never changes results)
    wandb: bool = False
    wandb_project: str = "mamba-kan"
    wandb_group: str | None = None  # W&B group (compare sets one per sweep)
    wandb_tags: list[str] = field(default_factory=list)  # empty = ffn:, mixer:, task:, seed: tags of the run
    run_name: str | None = None  # W&B run name (compare: the cell's run id); None = model-task-seedN
    tensorboard: bool = False

    def __post_init__(self) -> None:
        _check_types(self)
        self.validate()

    def validate(self) -> None:
        """Range checks; every message names the offending key."""
        require(0 <= self.seed < 2**63, f"seed must be in [0, 2**63), got {self.seed}")
        require(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive finite number, got {self.lr}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(0 <= self.beta1 < 1, f"beta1 must be in [0, 1), got {self.beta1}")
        require(0 <= self.beta2 < 1, f"beta2 must be in [0, 1), got {self.beta2}")
        require(self.adam_eps > 0, f"adam_eps must be > 0, got {self.adam_eps}")
        require(
            self.warmup_steps is None or 0 <= self.warmup_steps <= self.max_steps,
            f"warmup_steps must be in [0, max_steps={self.max_steps}], got {self.warmup_steps}",
        )
        require(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        require(self.grad_clip >= 0, f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        require(
            self.eval_every is None or self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}"
        )
        require(self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        require(
            self.early_stopping_patience is None or self.early_stopping_patience >= 1,
            f"early_stopping_patience must be >= 1 or null (off), got {self.early_stopping_patience}",
        )
        require(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        require(
            self.checkpoint_every is None or self.checkpoint_every >= 0,
            f"checkpoint_every must be >= 0 (0 = never), got {self.checkpoint_every}",
        )
        if self.device not in DEVICES:
            raise UserError(f"unknown device {self.device!r}; valid choices: {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; valid choices: {', '.join(PRECISIONS)}")
        require(self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}")
        require(
            self.keep_checkpoints >= 1,
            f"keep_checkpoints must be >= 1 (a run resumes from its newest one), got {self.keep_checkpoints}",
        )
        require(
            self.snapshot_every is None or self.snapshot_every >= 0,
            f"snapshot_every must be >= 0 (0 = the last evaluation only) or null (automatic), "
            f"got {self.snapshot_every}",
        )
        require(
            isinstance(self.wandb_tags, list) and all(isinstance(t, str) and t for t in self.wandb_tags),
            f"wandb_tags must be a list of non-empty strings, got {self.wandb_tags!r}",
        )
        require(self.kan_reg_l1 >= 0, f"kan_reg_l1 must be >= 0, got {self.kan_reg_l1}")
        require(self.kan_reg_entropy >= 0, f"kan_reg_entropy must be >= 0, got {self.kan_reg_entropy}")

    # --- derived values ------------------------------------------------------------------------------------
    def resolved(self) -> TrainConfig:
        """A copy with every automatic value filled in and the model/task settings expanded with defaults.

        Raises UserError for an unknown variant, task, model setting or task option.
        """
        warmup = self.warmup_steps if self.warmup_steps is not None else min(self.max_steps // 10, 200)
        eval_every = self.eval_every if self.eval_every is not None else max(1, self.max_steps // 10)
        ckpt = self.checkpoint_every if self.checkpoint_every is not None else eval_every
        evaluations = math.ceil(self.max_steps / eval_every)  # the last one is at max_steps
        snapshot_every = (
            self.snapshot_every
            if self.snapshot_every is not None
            else max(1, math.ceil(evaluations / AUTO_SNAPSHOTS))
        )
        model_cfg = _resolve_model_cfg(self.model, self.model_cfg)
        task, task_options = _resolve_task(self.task, self.task_options)
        _require_finite("task_options", task_options)
        return replace(
            self,
            task=task,
            warmup_steps=warmup,
            eval_every=eval_every,
            checkpoint_every=ckpt,
            snapshot_every=snapshot_every,
            model_cfg=model_cfg,
            task_options=task_options,
        )

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        if not isinstance(values, Mapping):
            raise UserError(f"a training config must be a mapping of settings, got {type(values).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise UserError(f"unknown setting(s) {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
        return cls(**dict(values))


def config_hash(cfg: TrainConfig) -> str:
    """sha256 (hex) of the resolved config as canonical JSON, without the settings that do not change results
    (:data:`NON_RESULT_KEYS`). Stable across processes and dict orderings."""
    d = cfg.resolved().to_dict()
    for key in NON_RESULT_KEYS:
        d.pop(key, None)
    text = json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


THREADS_ENV = "OMP_NUM_THREADS"


def default_threads() -> int:
    """Torch threads per cell when the settings name none: ``OMP_NUM_THREADS`` if set (its first entry, as
    OpenMP reads ``"4,2"``), else 1. A fixed function of the user's settings and environment, never of the machine
    or the queue, so that the same cell computes the same numbers wherever and whenever it runs."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return 1
    first = raw.split(",", 1)[0].strip()
    try:
        value = int(first)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{THREADS_ENV} must be a positive integer, got {raw!r}")
    return value


# --- composition ---------------------------------------------------------------------------------------------
def parse_set_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=1e-3", "model_cfg.d_model=128"]`` -> ``{"lr": 0.001, "model_cfg": {"d_model": 128}}``.

    Values are parsed as YAML scalars/flow collections (``128`` -> int, ``true`` -> bool, ``null`` -> None,
    ``[0.9, 0.95]`` -> list), so a ``--set`` means the same as the same line in a YAML file.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw  # not valid YAML: keep the text; the type check names the key if it is wrong
        if isinstance(value, str) and _looks_like_float(value):
            value = float(value)  # YAML 1.1 reads '1e-3' (no dot) as a string
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {key}: {part!r} is set both as a value and as a mapping")
            node = child
        node[parts[-1]] = value
    return out


def packaged_configs() -> dict[str, Path]:
    """The YAML configs shipped with the package (``mamba_kan/configs/*.yaml``), by name without suffix."""
    return {p.stem: p for p in sorted(PACKAGED_CONFIG_DIR.glob("*.yaml"))}


def find_config_file(name: str | Path) -> Path:
    """A path to a YAML file, or the name of a packaged config (``--config language_small``)."""
    p = Path(name)
    if p.is_file():
        return p
    packaged = packaged_configs()
    if str(name) in packaged:
        return packaged[str(name)]
    raise UserError(f"config file not found: {p}; packaged configs: {', '.join(packaged) or 'none'}")


def read_yaml_mapping(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(resolved path, mapping) of one YAML file (a path or a packaged config's name); an empty file is {}.
    Missing, unreadable, non-UTF-8 or invalid files and non-mapping documents are a one-line UserError."""
    p = find_config_file(path)
    return p, read_yaml_file(p)


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read one YAML file of training settings (a mapping of TrainConfig keys). Missing/invalid files, and
    experiment files (models, tasks, sweep, ...: ``compare --config``), are a UserError."""
    p, data = read_yaml_mapping(path)
    if is_experiment_mapping(data):
        keys = ", ".join(k for k in EXPERIMENT_FILE_KEYS if k in data)
        raise UserError(
            f"config file {p} is an experiment file (it has {keys}), not training settings; "
            "run it with `mamba-kan compare --config FILE`"
        )
    return data


def merge_settings(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: nested mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_settings(out[key], value)
        else:
            out[key] = value
    return out


def compose_config(
    files: Iterable[str | Path] = (), overrides: Iterable[str] = (), **settings: Any
) -> TrainConfig:
    """defaults <- YAML ``files`` <- keyword ``settings`` (e.g. CLI flags that were given) <- ``--set`` overrides."""
    merged: dict[str, Any] = {}
    for f in files:
        merged = merge_settings(merged, load_yaml_config(f))
    merged = merge_settings(merged, {k: v for k, v in settings.items() if v is not None})
    merged = merge_settings(merged, parse_set_overrides(overrides))
    return TrainConfig.from_dict(merged)


# --- helpers -------------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {len(typing.get_args(tp))} values ({', '.join(_type_name(a) for a in typing.get_args(tp))})"
    if origin is not None:
        return {dict: "a mapping", list: "a list"}.get(origin, str(origin))
    names = {float: "a number", int: "an integer", bool: "a boolean (true/false)", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, value) for ``value`` against annotation ``tp``; ints are accepted (and converted) for floats, but a
    bool is never an int or a float."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _coerce(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value), value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            return False, value
        items = [_coerce(v, a) for v, a in zip(value, args)]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is str:
        return isinstance(value, str), value
    return True, value


def _check_types(cfg: TrainConfig) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        setattr(cfg, f.name, _checked(f.name, value, hints[f.name]))
    _require_finite("model_cfg", cfg.model_cfg)
    _require_finite("task_options", cfg.task_options)


def _checked(name: str, value: Any, tp: Any) -> Any:
    """``value`` coerced to annotation ``tp``; a UserError naming ``name`` when it has the wrong type or is a
    non-finite number (a NaN or infinite weight decay, epsilon or clip norm is never meant, and JSON cannot hold
    it)."""
    ok, coerced = _coerce(value, tp)
    if not ok:
        raise UserError(f"setting {name!r} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    _require_finite(name, coerced)
    return coerced


def _require_finite(name: str, value: Any) -> None:
    """UserError naming the (dotted) key of the first NaN or infinite float inside ``value``."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"setting {name!r} must be a finite number, got {value!r}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _require_finite(f"{name}.{k}", v)
    elif isinstance(value, list | tuple):
        for v in value:
            _require_finite(name, v)


def _plain(value: Any) -> Any:
    """Tuples -> lists so that the dict round-trips through JSON and YAML unchanged."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _resolve_model_cfg(variant: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    from mamba_kan.models import ModelConfig, parse_variant  # lazy: keeps `import mamba_kan.config` light

    parse_variant(variant)  # UserError listing the variants
    hints = typing.get_type_hints(ModelConfig)
    # type-check each given value here so that the message names the key (ModelConfig's own range checks
    # would fail on a string with a bare TypeError)
    values = {k: _checked(f"model_cfg.{k}", v, hints[k]) if k in hints else v for k, v in overrides.items()}
    try:
        return _plain(ModelConfig.from_dict(values).to_dict())
    except UserError as exc:
        raise UserError(f"model_cfg: {exc}") from None
    except TypeError as exc:  # a wrong type inside ModelConfig's own checks
        raise UserError(f"model_cfg: {exc}") from None


def _resolve_task(task: str, options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Canonical ``family/config`` name and the options with the family's defaults filled in."""
    import mamba_kan.tasks  # noqa: F401  (importing the package registers the families)
    from mamba_kan.tasks.registry import FAMILIES, parse_task_name

    family, config = parse_task_name(task)
    info = FAMILIES[family]
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise UserError(
            f"unknown task option(s) {', '.join(map(repr, unknown))} for task '{family}'; "
            f"valid: {', '.join(sorted(info.options))}"
        )
    return f"{family}/{config}", _plain({**info.options, **options})
