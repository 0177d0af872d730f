"""Console helpers shared by subcommands (the CLI owns the console; library code only logs)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
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


def check_writable_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` can be written as a file (checked now, before any long computation; nothing is left behind):
    not a directory, under an existing directory, and really writable (a probe, since permission bits say
    nothing to root or about read-only mounts). ``what`` names the flag in the message."""
    from mamba_kan.errors import UserError

    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{what} {p} is a directory; give a file name")
    if not p.parent.is_dir():
        raise UserError(f"cannot write {what} {p}: directory {p.parent} does not exist")
    existed = p.exists()
    try:
        with open(p, "ab"):  # appends nothing: an existing file is unchanged
            pass
    except OSError as exc:
        raise UserError(f"cannot write {what} {p}: {exc.strerror or exc}") from None
    if not existed:
        p.unlink(missing_ok=True)
    return p


def check_writable_dir(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` is (or can be created as) a writable directory; nothing is created (a probe file is made and
    removed in the nearest existing ancestor)."""
    from mamba_kan.errors import UserError

    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"{what} {p} exists and is not a directory")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot create {what} {p}: {probe} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise UserError(f"{what} {p} is not writable: {exc.strerror or exc}") from None
    return p
