"""The ``mamba-kan`` command line. Each subcommand lives in its own module ``mamba_kan.cli.<name>``
exposing ``add_arguments(parser)`` and ``run(args) -> int``.

Only the subcommand named on the command line is imported (its module keeps torch, pandas and matplotlib out of
its module level and ``add_arguments``), so ``mamba-kan --help`` and ``mamba-kan CMD --help`` answer at once and a
broken optional dependency only affects its own subcommand. ``build_parser(full=True)`` builds every
subcommand's flags (what shell completion needs).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sqlite3
import sys
from collections.abc import Sequence

from mamba_kan import __version__
from mamba_kan.cli.common import ArgumentParser
from mamba_kan.errors import UserError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "models": ("mamba_kan.cli.models", "list the six variants with parameters and FLOPs (parameter-matched)"),
    "tasks": ("mamba_kan.cli.tasks", "list the benchmark tasks and their configurations"),
    "train": ("mamba_kan.cli.train", "train one variant on one task for one or more seeds"),
    "compare": (
        "mamba_kan.cli.compare",
        "run the factorial grid (variants x tasks x seeds) into a results database",
    ),
    "collect": (
        "mamba_kan.cli.collect",
        "ingest runs/*/result.json computed elsewhere into a results database",
    ),
    "export": ("mamba_kan.cli.export", "export a results database as tidy csv/parquet/json"),
    "analyze": ("mamba_kan.cli.analyze", "statistical analysis of a comparison directory"),
    "report": ("mamba_kan.cli.report", "figures, GIF and offline dashboard for a comparison directory"),
    "bench": ("mamba_kan.cli.bench", "benchmark feedforward blocks, mixers and training steps"),
    "completion": ("mamba_kan.cli.completion", "print a shell completion script (bash, zsh or tcsh)"),
}


def _add_global_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags given before the subcommand."""
    parser.add_argument("--version", action="version", version=f"mamba-kan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_plugin_argument(parser)


def _requested(argv: Sequence[str]) -> set[str]:
    """The subcommands named in ``argv`` (normally one): only their modules are imported. A token that names a
    subcommand but is really a flag's value only costs an import."""
    return {a for a in argv if a in SUBCOMMANDS}


def build_parser(argv: Sequence[str] | None = None, *, full: bool = False) -> argparse.ArgumentParser:
    """The ``mamba-kan`` parser. Subcommands named in ``argv`` (default ``sys.argv[1:]``) get their flags, the
    others only their name and help (enough to list them and to parse a command line naming one of those);
    ``full=True`` gives every subcommand its flags."""
    wanted = set(SUBCOMMANDS) if full else _requested(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(
        prog="mamba-kan",
        description="mamba-kan: MLP vs B-spline MLP vs KAN under Transformer and Mamba, compared fairly.",
    )
    _add_global_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name not in wanted:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # subcommand not built yet or optional dep missing
            if exc.name and exc.name.startswith("mamba_kan"):
                p.set_defaults(_unavailable=f"'{name}' is not available in this build")
                continue
            raise
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or --version (0), or bad usage (2; its one line is printed already)
        return exc.code if isinstance(exc.code, int) else 2
    # the command line as typed, for records (a sweep stores the command that made it)
    args._command_line = ["mamba-kan", *argv]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_unavailable", None):
        print(f"mamba-kan: error: {args._unavailable}", file=sys.stderr)
        return 2
    try:
        _load_plugins(args)
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"mamba-kan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:  # a corrupted database, a full disk: one line naming the database
        print(f"mamba-kan {args.command}: error: {_sqlite_message(args, exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        # a file that cannot be read or written (disk full, read-only, a directory in the way)
        if isinstance(exc.__cause__, sqlite3.Error):  # pandas.errors.DatabaseError wraps the sqlite3 error
            print(f"mamba-kan {args.command}: error: {_sqlite_message(args, exc.__cause__)}", file=sys.stderr)
            return 2
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"mamba-kan {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def add_plugin_argument(parser: argparse.ArgumentParser) -> None:
    """The global ``--plugin MODULE`` flag (repeatable; before the subcommand)."""
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first: it registers feedforward blocks, mixers or task families (docs/plugins.md); "
        "repeatable; also read from MAMBA_KAN_PLUGINS=mod1,mod2, and installed entry points of the group "
        "mamba_kan.plugins load by themselves",
    )


def _load_plugins(args: argparse.Namespace) -> None:
    """Load the installed plug-ins, ``MAMBA_KAN_PLUGINS`` and ``--plugin`` modules before the subcommand runs, and
    export the modules in ``MAMBA_KAN_PLUGINS`` so worker processes load them too. A plug-in that fails to import
    raises a UserError naming it (exit status 2)."""
    from mamba_kan.plugins import load_plugins

    load_plugins(getattr(args, "plugin", None) or ())


def _sqlite_message(args: argparse.Namespace, exc: sqlite3.Error) -> str:
    """The store's wording for an SQLite error, naming the database of the command's directory argument."""
    from mamba_kan.experiments.store import database_error, db_path

    target = next(
        (getattr(args, a) for a in ("dir", "directory", "output_dir") if getattr(args, a, None)), None
    )
    if target is None:
        return f"database error: {exc}"
    return str(database_error(db_path(target), exc))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
