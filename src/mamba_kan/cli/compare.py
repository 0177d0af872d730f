"""``mamba-kan compare``: run the factorial grid (variants x tasks x seeds) into ``DIR/results.db``.

    mamba-kan compare --preset quick --output-dir results/quick --generate-report
    mamba-kan compare --tasks symbolic language --seeds 10 --max-steps 10000 --output-dir results
    mamba-kan compare --preset paper --backend ray --ray-address auto --output-dir /shared/results

Re-running the same command skips finished cells and resumes interrupted ones from their checkpoints.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mamba_kan.choices import BACKENDS
from mamba_kan.errors import UserError, unknown_choice
from mamba_kan.experiments.grid import Cell, expand_grid, parse_seeds
from mamba_kan.experiments.presets import PRESETS, get_preset

if TYPE_CHECKING:  # the runner and the store import pandas: loaded when a sweep runs, not for --help
    from mamba_kan.experiments.backends import Backend
    from mamba_kan.experiments.runner import Progress, SweepSummary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("grid")
    g.add_argument("--models", nargs="+", metavar="MODEL", help="variants (default: the six of the design)")
    g.add_argument(
        "--tasks",
        nargs="+",
        metavar="TASK",
        help="families or family/config names (default: all five families)",
    )
    seeds = g.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, metavar="N", help="seeds 0..N-1 (default: the preset's)")
    seeds.add_argument("--seed-list", nargs="+", metavar="SEED", help="explicit seeds, e.g. --seed-list 3,7")
    g.add_argument(
        "--max-steps", type=int, metavar="N", help="training steps per cell (default: the preset's)"
    )
    g.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        help="a packaged grid and its settings (default: library defaults)",
    )
    g.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="an experiment file (models, tasks, seeds, settings, sweep: docs/experiments.md) and/or YAML "
        "training settings (repeatable; later wins)",
    )
    g.add_argument(
        "--set",
        action="append",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override any setting, dotted for nested ones: --set lr=1e-3 model_cfg.d_model=128 "
        "(task_options.NAME applies to the tasks that have it)",
    )
    r = parser.add_argument_group("running")
    r.add_argument(
        "--output-dir", default="results", metavar="DIR", help="comparison directory (holds results.db)"
    )
    r.add_argument(
        "--workers", type=int, metavar="N", help="local worker processes (default: sized for the machine)"
    )
    r.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads per cell, part of its key (default: OMP_NUM_THREADS if set, else 1)",
    )
    r.add_argument(
        "--backend",
        default="local",
        choices=BACKENDS,
        help="local: a process pool on this machine; ray: Ray tasks; slurm: SLURM array jobs (submitit)",
    )
    r.add_argument("--ray-address", metavar="ADDR", help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT")
    r.add_argument(
        "--ray-gpus-per-cell", type=float, default=0.0, metavar="F", help="GPUs each Ray task asks for"
    )
    r.add_argument(
        "--runs-dir",
        metavar="DIR",
        help="where run directories go (default: OUTPUT_DIR/runs); with --backend slurm, storage the nodes share",
    )
    s = parser.add_argument_group("slurm (--backend slurm, through submitit)")
    s.add_argument(
        "--slurm-cluster",
        default="slurm",
        choices=("slurm", "local", "auto"),
        help="submitit executor: slurm, local (this machine, for testing) or auto",
    )
    s.add_argument("--slurm-partition", metavar="NAME", help="SLURM partition")
    s.add_argument("--slurm-time", type=int, metavar="MIN", help="time limit per cell in minutes")
    s.add_argument("--slurm-gpus", type=int, metavar="N", help="GPUs per cell (gpus_per_node)")
    s.add_argument(
        "--slurm-array-parallelism",
        type=int,
        default=64,
        metavar="N",
        help="cells running at once",
    )
    s.add_argument(
        "--slurm-folder", metavar="DIR", help="submitit job folder (default: next to the runs directory)"
    )
    s.add_argument(
        "--slurm-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="further submitit parameter, e.g. slurm_account=abc or mem_gb=16 (repeatable)",
    )
    r.add_argument(
        "--retry-failed", action="store_true", help="also re-run cells recorded as failed or diverged"
    )
    r.add_argument(
        "--force", action="store_true", help="run even if a feedforward width is below the floor (see models)"
    )
    r.add_argument(
        "--dry-run", action="store_true", help="list the cells and whether they are done; run nothing"
    )
    r.add_argument(
        "--generate-report", action="store_true", help="run the analysis and build the report at the end"
    )
    add_tracking_arguments(parser)


def add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tensorboard`` / ``--wandb`` for every cell of the sweep. Tracking changes no result and no cell key:
    turning it on for a finished grid re-runs nothing (finished cells keep what they logged, or did not)."""
    t = parser.add_argument_group("tracking (no effect on results or cell keys)")
    t.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TensorBoard event files with an HParams session in each run directory; view them all with "
        "`tensorboard --logdir OUTPUT_DIR/runs` (default: the settings' tensorboard, false)",
    )
    t.add_argument(
        "--wandb",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Weights & Biases run per cell, one group per sweep, tags ffn:/mixer:/task:/seed:; offline "
        "without WANDB_API_KEY, or as WANDB_MODE says (default: the settings' wandb, false)",
    )
    t.add_argument(
        "--wandb-project",
        metavar="NAME",
        help="W&B project (default: the settings' wandb_project, mamba-kan)",
    )
    t.add_argument(
        "--wandb-group",
        metavar="NAME",
        help="W&B group of the sweep's runs (default: the output directory's name and a hash of its path)",
    )


def build_cells(args: argparse.Namespace) -> list[Cell]:
    """The grid the flags describe (validated; nothing is written).

    The experiment is ``--preset NAME``, or the experiment file among ``--config`` (at most one), or the library
    defaults; the other ``--config`` files (training settings), ``--max-steps``, ``--threads`` and ``--set`` are
    explicit settings over it (mamba_kan.experiments.grid.expand_grid has the composition order)."""
    from mamba_kan.experiments.spec import check_settings_file, parse_experiment
    from mamba_kan.training.config import (
        compose_config,
        is_experiment_mapping,
        merge_settings,
        parse_set_overrides,
        read_yaml_mapping,
    )

    experiment = get_preset(args.preset)
    explicit: dict[str, Any] = {}
    from_file = None
    for f in args.config:
        path, data = read_yaml_mapping(f)
        if not is_experiment_mapping(data):
            explicit = merge_settings(explicit, check_settings_file(data, str(path)))
            continue
        if args.preset or from_file is not None:
            other = f"--preset {args.preset}" if args.preset else from_file
            raise UserError(f"{path} is an experiment file; give one experiment (here also {other}), not two")
        experiment, from_file = parse_experiment(data, str(path)), str(path)
    if args.seeds is not None or args.seed_list:
        seed_list = parse_seeds(args.seeds, args.seed_list)
    else:
        seed_list = experiment.seed_list()
    if args.max_steps is not None:
        explicit["max_steps"] = args.max_steps
    if getattr(args, "threads", None) is not None:
        explicit["threads"] = args.threads
    explicit = merge_settings(explicit, parse_set_overrides(_set_items(args.set)))
    every = merge_settings(dict(experiment.settings), explicit)
    # type and range check of the settings every cell shares
    compose_config(**{k: v for k, v in every.items() if k not in ("model", "task", "seed")})
    models = args.models or list(experiment.models)
    tasks = experiment.task_specs(args.tasks)
    return expand_grid(
        models, tasks, seed_list, explicit, defaults=experiment.settings, sweep=experiment.sweep
    )


def _set_items(groups: list[Any]) -> list[str]:
    """``--set a=1 b=2 --set c=3`` (argparse: [[a=1, b=2], [c=3]]) -> [a=1, b=2, c=3]."""
    return [item for group in groups for item in ([group] if isinstance(group, str) else group)]


class ConsoleProgress:
    """Progress of the whole grid: a live bar (cells done/total, failures, elapsed, ETA) on a terminal with one
    bar per running cell (its training step of max_steps, when the backend reports steps), and one line per
    finished cell (with the same counters when not on a terminal, e.g. in a CI log). The ETA comes from the
    training steps per second so far (see ``runner.StepRate``), so it is known during the first cell."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar: Any = None
        self._task: Any = None
        self._cells: dict[str, Any] = {}  # cell key -> its row in the live display

    def sweep_started(self, total: int, skipped: int, to_run: int, backend: Backend) -> None:
        where = f"{backend.workers} parallel cell(s) x {backend.threads} thread(s)"
        self._print(f"grid: {total} cells, {skipped} already done, {to_run} to run ({backend.name}: {where})")
        if self.tty and to_run:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(file=self.stream),
            )
            self._task = self._bar.add_task("cells", total=to_run, info=self._info(0, math.nan))
            self._bar.start()

    @staticmethod
    def _info(failures: int, eta_s: float) -> str:
        return f"[red]{failures} failed[/red]  ETA {'?' if math.isnan(eta_s) else _duration(eta_s)}"

    def cell_progress(self, cell: Cell, step: int, progress: Progress) -> None:
        """A running cell's step (from the runner, a few times per second at most)."""
        if self._bar is None:
            return
        row = self._cells.get(cell.cell_key)
        if row is None:
            label = f"  {cell.model} {cell.task} s{cell.seed}"
            row = self._cells[cell.cell_key] = self._bar.add_task(label, total=cell.config.max_steps, info="")
        self._bar.update(row, completed=step)
        self._bar.update(self._task, info=self._info(progress.failures, progress.eta_s))

    def cell_finished(self, cell: Cell, result: Mapping[str, Any], progress: Progress) -> None:
        line = _cell_line(cell, result)
        if self._bar is not None:
            row = self._cells.pop(cell.cell_key, None)
            if row is not None:
                self._bar.remove_task(row)
            self._bar.console.print(line, highlight=False, soft_wrap=True)
            self._bar.update(
                self._task, completed=progress.done, info=self._info(progress.failures, progress.eta_s)
            )
            if progress.done == progress.total:
                self._bar.stop()
                self._bar = None
        else:
            eta = "?" if math.isnan(progress.eta_s) else _duration(progress.eta_s)
            self._print(
                f"[{progress.done:>{len(str(progress.total))}}/{progress.total} | {progress.failures} failed | "
                f"{_duration(progress.elapsed_s)} elapsed | ETA {eta}] {line}"
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _cell_line(cell: Cell, result: Mapping[str, Any]) -> str:
    status = result.get("status")
    metric, value = result.get("primary_metric"), result.get("primary_value")
    shown = f"{metric}={value:.4g}" if isinstance(value, int | float) and metric else ""
    if status != "completed":
        shown = (result.get("error") or "")[:80]
    wall = result.get("wall_time_s")
    took = f" ({wall:.1f} s)" if isinstance(wall, int | float) else ""
    return f"{cell.model:<19} {cell.task:<28} seed {cell.seed:<3} {status:<9} {shown}{took}"


def _dry_run(cells: list[Cell], out: Path) -> int:
    from mamba_kan.experiments.store import check_database, db_path

    done: dict[str, str] = {}
    if check_database(out):
        from mamba_kan.experiments.store import read_runs

        runs = read_runs(out)
        done = dict(zip(runs["cell_key"], runs["status"]))
    for c in cells:
        print(f"{done.get(c.cell_key, 'pending'):<9} {c.run_id}")
    print(f"{len(cells)} cells, {sum(c.cell_key in done for c in cells)} recorded in {db_path(out)}")
    return 0


def _generate_report(out: Path) -> Path | None:
    """Analysis (saved as ``DIR/analysis.json`` and ``DIR/analysis.md``) and the report (``DIR/report``), when
    this build provides them; one line saying so otherwise."""
    try:
        from mamba_kan.analysis import analyze_directory, to_markdown
        from mamba_kan.reporting import generate_report
    except ImportError:
        print("report: not available yet in this build (needs mamba_kan.analysis and mamba_kan.reporting)")
        return None
    try:
        analysis = analyze_directory(out)
        (out / "analysis.json").write_text(analysis.to_json() + "\n")
        (out / "analysis.md").write_text(to_markdown(analysis))
        print(
            f"analysis: {out / 'analysis.json'} and {out / 'analysis.md'} (summary: mamba-kan analyze {out})"
        )
        return Path(generate_report(out, analysis=analysis))
    except UserError as exc:  # e.g. too few variants for statistics: the sweep itself still succeeded
        print(f"report: not generated: {exc}")
        return None


def slurm_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """submitit parameters from the --slurm-* flags (values of --slurm-param parsed as YAML scalars)."""
    import yaml

    params: dict[str, Any] = {}
    if args.slurm_partition:
        params["slurm_partition"] = args.slurm_partition
    if args.slurm_time is not None:
        params["timeout_min"] = args.slurm_time
    if args.slurm_gpus is not None:
        params["gpus_per_node"] = args.slurm_gpus
    for item in args.slurm_param:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--slurm-param expects KEY=VALUE, got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    if args.backend != "slurm" and (params or args.slurm_cluster != "slurm"):
        raise UserError("--slurm-* options need --backend slurm")
    return params


def _command_line(args: argparse.Namespace) -> list[str]:
    """The command as typed (``mamba-kan compare ...``), recorded with the sweep. ``main`` stores it; a caller
    that parsed the flags itself gets the process's arguments, with ``compare`` named once."""
    line = getattr(args, "_command_line", None)
    if line:
        return list(line)
    rest = sys.argv[1:]
    return ["mamba-kan", *(rest if rest[:1] == ["compare"] else ["compare", *rest])]


def run(args: argparse.Namespace) -> int:
    from mamba_kan.experiments.runner import (
        SweepOptions,
        check_backend,
        check_output_dir,
        check_tracking,
        run_sweep,
    )
    from mamba_kan.experiments.store import check_database

    if args.backend not in BACKENDS:
        raise unknown_choice("backend", args.backend, BACKENDS)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    options = SweepOptions(
        backend=args.backend,
        workers=args.workers,
        ray_address=args.ray_address,
        ray_gpus_per_cell=args.ray_gpus_per_cell,
        retry_failed=args.retry_failed,
        runs_dir=args.runs_dir,
        slurm_folder=args.slurm_folder,
        slurm_cluster=args.slurm_cluster,
        slurm_parallelism=args.slurm_array_parallelism,
        slurm_parameters=slurm_parameters(args),
        tensorboard=args.tensorboard,
        wandb=args.wandb,
        wandb_project=args.wandb_project,
        wandb_group=args.wandb_group,
        command=shlex.join(_command_line(args)),
    )
    check_backend(options)
    cells = build_cells(args)  # builds every task: a bad option or a missing data file fails here
    # a missing tensorboard/wandb package: one line, before anything is written
    check_tracking(cells, options)
    from mamba_kan.models import check_grid_width_floor

    if (problems := check_grid_width_floor(cells)) and not args.force:
        raise UserError(f"{problems[0]} ({len(problems)} such); raise d_model or pass --force")
    out = check_output_dir(args.output_dir)
    check_database(out)
    if args.dry_run:
        return _dry_run(cells, out)
    progress = ConsoleProgress()
    t0 = time.perf_counter()
    try:
        summary = run_sweep(cells, out, options, progress)
    finally:
        progress.close()
        from mamba_kan.experiments.spec import record_sweep_keys

        record_sweep_keys(out, cells)  # the swept keys, for analysis (meta 'sweep'); none without a sweep
    _print_summary(summary, time.perf_counter() - t0)
    report = _generate_report(out) if args.generate_report else None
    print(f"results: {summary.db_path}")
    if report is not None:
        print(f"report:  {report}")
    elif not args.generate_report:
        print(f"report:  not generated (add --generate-report, or run `mamba-kan report {out}`)")
    failed = summary.counts.get("failed", 0)
    if failed:
        print(
            f"{failed} cell(s) failed; see the error column, then re-run with --retry-failed", file=sys.stderr
        )
        return 1
    return 0


def _print_summary(s: SweepSummary, wall: float) -> None:
    c = s.counts
    print(
        f"done: {s.total} cells ({c.get('completed', 0)} completed, {c.get('diverged', 0)} diverged, "
        f"{c.get('failed', 0)} failed); {s.skipped} skipped as already recorded, {s.ran} run in {_duration(wall)}"
    )
