"""Console helpers shared by subcommands (the CLI owns the console; library code only logs)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def console(stderr: bool = False) -> Console:
    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False)


def print_table(title: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """A rich table on a terminal; plain aligned text when not a TTY (rich handles both)."""
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if rows and isinstance(rows[0].get(c), int | float) else "left")
    for r in rows:
        table.add_row(*(_fmt(r.get(c)) for c in columns))
    console().print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def parse_seeds(seeds: int | None, seed_list: str | None) -> list[int]:
    """--seeds N means 0..N-1; --seed-list '3,7' explicit seeds. Errors are UserErrors."""
    from mamba_kan.errors import UserError

    if seed_list:
        try:
            out = [int(s) for s in seed_list.split(",") if s.strip()]
        except ValueError:
            raise UserError(f"--seed-list must be comma-separated integers, got {seed_list!r}") from None
        if not out or any(s < 0 for s in out):
            raise UserError(f"--seed-list needs non-negative integers, got {seed_list!r}")
        return out
    n = 1 if seeds is None else seeds
    if n < 1:
        raise UserError(f"--seeds must be >= 1, got {n}")
    return list(range(n))
