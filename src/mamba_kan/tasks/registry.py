"""Task registry: ``family`` or ``family/config`` names -> Task instances.

A family registers itself with :func:`register_family` (a :class:`FamilyInfo`). The built-in families are
modules imported by ``mamba_kan/tasks/__init__.py``; a family from outside mamba_kan is a plug-in
(:mod:`mamba_kan.plugins`, ``docs/plugins.md``): it registers the same way, from a module loaded by ``--plugin`` or
an entry point, and lookups here load the installed plug-ins first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mamba_kan import plugins
from mamba_kan.errors import UserError, unknown_choice
from mamba_kan.tasks.base import Task


@dataclass(frozen=True)
class FamilyInfo:
    """A task family as the registry, the CLI (``mamba-kan tasks``) and the grid see it.

    ``factory(config_name, seed, **options) -> Task`` builds one configuration for one seed; ``options`` holds
    every option the factory accepts with its default (a run's resolved config records them all, and unknown
    options are refused before the factory is called). ``primary_metric``/``higher_is_better`` must agree with
    the Task's class attributes: they give the direction of failed runs and of ``mamba-kan tasks``.
    """

    name: str
    description: str
    configs: tuple[str, ...]  # named configurations
    default_config: str  # the one used when only the family is named
    factory: Callable[..., Task]  # factory(config_name, seed, **options) -> Task
    options: dict[str, Any]  # documented options with their defaults (sizes, lengths, ...)
    # --- documentation for `mamba-kan tasks` (optional; defaults keep older call sites valid) ---
    option_help: dict[str, str] = field(default_factory=dict)  # option -> one-line meaning
    config_help: dict[str, str] = field(default_factory=dict)  # config -> one-line description
    input_end: str = ""  # e.g. "tokens (vocab 256)"
    output_end: str = ""  # e.g. "next-token"
    primary_metric: str = ""
    higher_is_better: bool = False
    metrics: tuple[str, ...] = ()  # every metric evaluate() reports
    floor: str = ""  # what is known about the best achievable primary metric, if anything

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (everything but the factory)."""
        return {
            "name": self.name,
            "description": self.description,
            "configs": list(self.configs),
            "default_config": self.default_config,
            "config_help": dict(self.config_help),
            "options": dict(self.options),
            "option_help": dict(self.option_help),
            "input": self.input_end,
            "output": self.output_end,
            "primary_metric": self.primary_metric,
            "higher_is_better": self.higher_is_better,
            "metrics": list(self.metrics),
            "floor": self.floor or None,
        }


FAMILIES: dict[str, FamilyInfo] = {}


def register_family(info: FamilyInfo) -> FamilyInfo:
    """Register ``info`` under ``info.name`` (lower-case letters, digits, ``_``) and return it.

    From a plug-in module the family's source is recorded for the cache keys (:mod:`mamba_kan.plugins`); a plug-in
    cannot replace a built-in family, and registering again from the same module replaces the entry.
    """
    if not isinstance(info, FamilyInfo):
        raise UserError(f"register_family expects a FamilyInfo, got {type(info).__name__}")
    if info.default_config not in info.configs:
        raise UserError(
            f"task family {info.name!r}: default_config {info.default_config!r} is not one of its configs"
        )
    plugins.note_family(info.name, exists=info.name in FAMILIES)
    FAMILIES[info.name] = info
    return info


def parse_task_name(name: str) -> tuple[str, str]:
    """'family' or 'family/config' -> (family, config); unknown names raise a UserError listing valid ones."""
    family, _, config = name.partition("/")
    if family not in FAMILIES:
        plugins.ensure_loaded()
    if family not in FAMILIES:
        raise unknown_choice("task family", family, sorted(FAMILIES))
    info = FAMILIES[family]
    config = config or info.default_config
    if config not in info.configs:
        raise unknown_choice(f"configuration of task '{family}'", config, info.configs)
    return family, config


def make_task(name: str, seed: int, **options: Any) -> Task:
    """Build task ``name`` for ``seed``; ``options`` override the family's documented defaults."""
    family, config = parse_task_name(name)
    info = FAMILIES[family]
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for task '{family}'; valid: {', '.join(sorted(info.options))}"
        )
    return info.factory(config, seed, **options)
