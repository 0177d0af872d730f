"""Benchmark tasks: one interface (:mod:`mamba_kan.tasks.base`), a registry, and one module per family.

Importing this package registers every family: ``symbolic``, ``special_functions``, ``timeseries``, ``language``,
``long_context``. Build a task with ``make_task("family/config", seed, **options)``.
"""

from mamba_kan.design import FAMILY_ORDER, family_sort_key
from mamba_kan.tasks import language, long_context, special_functions, symbolic, timeseries  # noqa: F401  (register)
from mamba_kan.tasks.base import SPLITS, Batch, MetricState, Task
from mamba_kan.tasks.registry import FAMILIES, FamilyInfo, make_task, parse_task_name, register_family

# list families in the order of the benchmark's description (KAN-favourable first, Mamba-favourable last)
for _name in sorted(FAMILIES, key=family_sort_key):
    FAMILIES[_name] = FAMILIES.pop(_name)

__all__ = [
    "FAMILY_ORDER",
    "FAMILIES",
    "SPLITS",
    "Batch",
    "FamilyInfo",
    "MetricState",
    "Task",
    "make_task",
    "parse_task_name",
    "register_family",
]
