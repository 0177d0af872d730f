"""The run record: what one (variant, task, seed) cell reports, as one typed dataclass (torch-free).

Every producer builds a :class:`RunRecord`: the training loop at the end of a run, the loop when a run fails before
its first step (:func:`failed_record`), and the sweep driver when a worker died without reporting
(:func:`failed_record` again). ``RunRecord.to_dict()`` is the JSON object written as ``result.json`` and returned by
``run_experiment``; its keys are the field names below, unchanged from the original Mamba_KAN project's
``result.json``. The results store keeps the record as JSON next to a few indexed columns and derives its tables
from the fields declared here, so a field added or renamed here reaches the store, the readers and the export
without a second list to edit.

Each field's ``column`` metadata says whether the readers (``mamba_kan.experiments.store.read_runs``) show it as
a column of its own; the others travel together in the readers' ``extra`` column.

The direction of the primary metric (``higher_is_better``) is the task's own declaration, carried by every
record, including failures (looked up from the task family when no task object was built).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STATUSES: tuple[str, ...] = ("completed", "diverged", "failed")


def _col(default: Any = None) -> Any:
    """A field the readers show as its own column."""
    return field(default=default, metadata={"column": True})


def _col_factory(factory: Any) -> Any:
    return field(default_factory=factory, metadata={"column": True})


@dataclass
class RunRecord:
    """One cell's outcome. Field order is the key order of ``result.json``; ``None`` = not measured / not known."""

    model: str = _col("")
    ffn: str | None = _col()
    mixer: str | None = _col()
    task: str = _col("")  # the task's full name (``family/config``)
    seed: int = _col(0)
    status: str = _col("failed")  # one of STATUSES
    error: str | None = _col()  # "ExceptionType: first line" for failed / diverged runs
    diverged_step: int | None = None  # first step with a non-finite loss
    primary_metric: str | None = _col()
    primary_value: float | None = _col()  # test value of the primary metric (completed runs only)
    higher_is_better: bool | None = _col()  # the task's direction of its primary metric
    floor: float | None = None  # the task's best achievable value of the primary metric, when known
    metrics: dict[str, float] = _col_factory(dict)  # final test metrics
    best_val: float | None = _col()
    best_val_step: int | None = _col()
    stopped_early: bool = False
    curves: list[dict[str, Any]] = field(default_factory=list)  # {"step", "split", "metric", "value"} rows
    params: int | None = _col()
    flops_per_token: int | None = _col()
    ffn_hidden: int | None = None
    seq_len: int | None = None
    steps_per_sec: float | None = _col()
    train_time_s: float | None = None
    samples_per_sec: float | None = None
    tokens_per_sec: float | None = _col()
    wall_time_s: float | None = _col()
    peak_memory_mb: float | None = _col()
    steps: int | None = _col()
    resumed_from: int | None = None
    precision: str | None = None
    world_size: int | None = None
    config: dict[str, Any] = _col_factory(dict)  # the resolved TrainConfig as a dict
    task_description: dict[str, Any] | None = None
    env: dict[str, Any] = _col_factory(dict)  # machine and versions (mamba_kan.training.env.environment)
    config_hash: str | None = _col()
    # keys of a result dict that this version does not know (written by another version): kept, written back
    unknown: dict[str, Any] = field(default_factory=dict, repr=False, metadata={"serialised": False})

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"run status must be one of {STATUSES}, got {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``result.json`` (NaN/inf become null: JSON has neither)."""
        out = {f.name: getattr(self, f.name) for f in record_fields()}
        out.update(self.unknown)
        return _finite_or_none(out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        """A record from a result dict (``result.json``, a worker's reply); missing keys take their defaults,
        unknown keys are kept in ``unknown`` and written back by :meth:`to_dict`."""
        hints = _hints()
        names = {f.name for f in record_fields()}
        # an explicit null stays null where the field allows it, and takes the default where it does not
        known = {k: v for k, v in data.items() if k in names and (v is not None or type(None) in hints[k][1])}
        return cls(**known, unknown={k: v for k, v in data.items() if k not in names})


def record_fields() -> tuple[dataclasses.Field, ...]:
    """The serialised fields of :class:`RunRecord`, in ``result.json`` order."""
    return tuple(f for f in dataclasses.fields(RunRecord) if f.metadata.get("serialised", True))


def column_fields() -> tuple[str, ...]:
    """Fields the readers show as columns of their own (the rest go to their ``extra`` column)."""
    return tuple(f.name for f in record_fields() if f.metadata.get("column", False))


def field_kind(name: str) -> type:
    """The value type of a field without ``None``: ``float`` for ``float | None``, ``dict`` for ``dict[str, Any]``."""
    return _hints()[name][0]


@functools.lru_cache(maxsize=1)
def _hints() -> dict[str, tuple[type, tuple[Any, ...]]]:
    """field -> (value type, the members of its union) from the annotations."""
    out = {}
    for name, hint in typing.get_type_hints(RunRecord).items():
        members = (
            typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        )
        value = next(a for a in members if a is not type(None))
        out[name] = (typing.get_origin(value) or value, members)
    return out


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def task_direction(task: str) -> tuple[str | None, bool | None]:
    """(primary metric, higher_is_better) that the family of ``task`` (``family`` or ``family/config``) declares;
    (None, None) for an unknown family. Imports the task registry (and with it torch) only when called."""
    try:
        from mamba_kan.tasks import FAMILIES  # deferred: this module stays torch-free at import
    except ImportError:  # pragma: no cover - a broken tasks package is itself the failure being recorded
        return None, None
    info = FAMILIES.get(str(task).partition("/")[0])
    if info is None or not info.primary_metric:
        return None, None
    return info.primary_metric, info.higher_is_better


def failed_record(config: Mapping[str, Any], error: str, **measured: Any) -> RunRecord:
    """The record of a run that failed before it could report (setup failure, dead worker).

    ``config``: the run's (resolved) TrainConfig as a dict. The primary metric and its direction come from the
    task family, so a failure is counted against the right metric. ``measured``: further fields the caller knows
    (wall time, peak memory, env, ...).
    """
    from mamba_kan.plugins import try_parse_variant  # built-in and registered plug-in levels

    model = str(config.get("model", ""))
    variant = try_parse_variant(model)
    task = str(config.get("task", ""))
    primary, higher = task_direction(task)
    seed = config.get("seed")
    base: dict[str, Any] = dict(
        model=model,
        ffn=None if variant is None else variant[0],
        mixer=None if variant is None else variant[1],
        task=task,
        seed=int(seed) if isinstance(seed, int) else 0,
        status="failed",
        error=error,
        primary_metric=primary,
        higher_is_better=higher,
        config=dict(config),
    )
    return RunRecord(**{**base, **measured})
