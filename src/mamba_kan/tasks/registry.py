"""Task registry: ``family`` or ``family/config`` names -> Task instances.

A family module registers itself with :func:`register_family`; adding a task is adding one module and importing
it in ``mamba_kan/tasks/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mamba_kan.errors import UserError, unknown_choice
from mamba_kan.tasks.base import Task


@dataclass(frozen=True)
class FamilyInfo:
    name: str
    description: str
    configs: tuple[str, ...]  # named configurations
    default_config: str  # the one used when only the family is named
    factory: Callable[..., Task]  # factory(config_name, seed, **options) -> Task
    options: dict[str, Any]  # documented options with their defaults (sizes, lengths, ...)


FAMILIES: dict[str, FamilyInfo] = {}


def register_family(info: FamilyInfo) -> FamilyInfo:
    FAMILIES[info.name] = info
    return info


def parse_task_name(name: str) -> tuple[str, str]:
    """'family' or 'family/config' -> (family, config); unknown names raise a UserError listing valid ones."""
    family, _, config = name.partition("/")
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
