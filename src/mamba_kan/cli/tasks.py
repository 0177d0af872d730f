"""`mamba-kan tasks`: list the task families with their configurations, options and defaults; or, given a task
name, build it and show its resolved settings (``-o KEY=VALUE`` overrides an option)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, is_dataclass
from typing import Any

import yaml

from mamba_kan.cli.common import console
from mamba_kan.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="a task ('family' or 'family/config') to build and describe")
    p.add_argument("--json", action="store_true", help="print JSON (a list of families, or one task)")
    p.add_argument("--seed", type=int, default=0, help="seed used when describing one task")
    p.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task option override when describing one task (repeatable; VALUE parsed as YAML: 512, [1,2], true)",
    )


def parse_options(items: list[str]) -> dict[str, Any]:
    """['context=512', 'eval_lengths=[4096, 8192]'] -> {'context': 512, 'eval_lengths': [4096, 8192]}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"task option must look like KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise UserError(f"could not parse the value of task option {key.strip()!r}: {value!r}") from None
    return out


def family_rows() -> list[dict[str, Any]]:
    from mamba_kan.tasks import FAMILIES

    return [info.to_dict() for info in FAMILIES.values()]


def describe_task(name: str, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    from mamba_kan.tasks import make_task

    task = make_task(name, seed, **options)
    ends = {"input": _spec(task.input_spec), "output": _spec(task.output_spec)}
    return {
        **task.describe(),
        **ends,
        "primary_metric": task.primary_metric,
        "higher_is_better": task.higher_is_better,
        "floor": task.floor,
        "tokens_per_sample": task.tokens_per_sample,
    }


def _spec(spec: Any) -> dict[str, Any]:
    return {"type": type(spec).__name__, **(asdict(spec) if is_dataclass(spec) else {})}


def run(args: argparse.Namespace) -> int:
    if args.name:
        info = describe_task(args.name, args.seed, parse_options(args.option))
        if args.json:
            print(json.dumps(info, default=str))
        else:
            out = console()
            for key, value in info.items():
                out.print(f"{key}: {value}", markup=False, soft_wrap=True)
        return 0
    if args.option:
        raise UserError("--option needs a task name (e.g. mamba-kan tasks timeseries/co2 -o context=128)")
    rows = family_rows()
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    out = console()
    for row in rows:
        direction = "higher" if row["higher_is_better"] else "lower"
        out.print(f"[bold]{row['name']}[/bold] - {row['description']}", soft_wrap=True)
        out.print(f"  ends: {row['input']} -> {row['output']}", markup=False, soft_wrap=True)
        out.print(
            f"  primary metric: {row['primary_metric']} ({direction} is better)", markup=False, soft_wrap=True
        )
        if row["floor"]:
            out.print(f"  known best: {row['floor']}", markup=False, soft_wrap=True)
        out.print("  configurations (default first):", markup=False, soft_wrap=True)
        configs = [row["default_config"]] + [c for c in row["configs"] if c != row["default_config"]]
        for config in configs:
            out.print(
                f"    {row['name']}/{config}: {row['config_help'].get(config, '')}",
                markup=False,
                soft_wrap=True,
            )
        out.print("  options (default):", markup=False, soft_wrap=True)
        for key, default in row["options"].items():
            out.print(
                f"    {key} = {json.dumps(default)}: {row['option_help'].get(key, '')}",
                markup=False,
                soft_wrap=True,
            )
        out.print("")
    return 0
