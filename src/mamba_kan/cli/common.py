"""Console helpers shared by subcommands (the CLI owns the console; library code only logs), and the argparse
pieces every ``mamba-kan`` parser uses (help with defaults, one-line errors).

Nothing here imports torch, pandas or matplotlib, and rich only when a table is drawn: parsers are built from
this module on every invocation, ``--help`` included.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from rich.console import Console


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Help that keeps a description's own line breaks (examples) and shows each flag's default.

    The default is appended as ``(default: X)`` unless it says nothing (None, False, an empty list: "not given")
    or the help text already speaks of it (e.g. "default: the preset's")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default" in text.lower()
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or (isinstance(default, list | tuple) and not default)
        ):
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with this project's error style: bad usage is one line on stderr (exit status 2), and a value
    outside a flag's choices reads like every other bad name: "unknown device 'tpu'; valid choices: ...".
    Subparsers are made of this class too (argparse uses the parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            from mamba_kan.errors import unknown_choice

            kind = (
                "command" if isinstance(action, argparse._SubParsersAction) else action.dest.replace("_", " ")
            )
            raise argparse.ArgumentError(action, str(unknown_choice(kind, value, action.choices)))

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False)


def print_table(title: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """A rich table on a terminal; when stdout is not a terminal (a pipe, a file, a CI log), plain text at full
    width: no box drawing, no cell cut or wrapped, whatever the width, so the output can be parsed or grepped."""
    numeric = {c: bool(rows) and isinstance(rows[0].get(c), int | float) for c in columns}
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    if not sys.stdout.isatty():
        sys.stdout.write(plain_table(title, columns, cells, numeric))
        return
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if numeric[c] else "left")
    for row in cells:
        table.add_row(*row)
    console().print(table)


def plain_table(
    title: str, columns: Sequence[str], cells: Sequence[Sequence[str]], numeric: dict[str, bool] | None = None
) -> str:
    """``title``, a header, a rule of dashes and the rows, columns padded to their widest cell and separated by
    two spaces (numbers right-aligned); trailing blanks trimmed."""
    numeric = numeric or {}
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        padded = (v.rjust(w) if numeric.get(c) else v.ljust(w) for c, v, w in zip(columns, values, widths))
        return "  ".join(padded).rstrip()

    out = [title] if title else []
    out += [line(columns), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
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
