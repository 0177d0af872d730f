"""`mamba-kan train`: train one variant on one task for one or more seeds.

    mamba-kan train --model mlp_transformer --task symbolic --seeds 1 --max-steps 100 [--no-wandb]
                    [--output-dir DIR] [--config FILE.yaml ...] [--set key=value ...] [--json]

Settings compose as: TrainConfig defaults <- --config files <- the named flags given here <- --set overrides.
``scripts/run_experiment.py`` accepts exactly the same flags (it calls :func:`main`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from mamba_kan.choices import DEVICES, PRECISIONS
from mamba_kan.errors import UserError

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="variant, e.g. mlp_transformer, kan_mamba (`mamba-kan models`)")
    p.add_argument("--task", help="task family or family/config (`mamba-kan tasks`)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds", type=int, metavar="N", help="train seeds 0..N-1 (default: the config's seed, 0)"
    )
    seeds.add_argument("--seed-list", metavar="S1,S2", help="explicit seeds, e.g. 3,7")
    p.add_argument("--max-steps", type=int, help="optimizer steps (default: the config's)")
    p.add_argument("--batch-size", type=int, help="samples per optimizer step (default: the config's)")
    p.add_argument("--lr", type=float, help="peak learning rate of AdamW (default: the config's)")
    p.add_argument(
        "--device", choices=DEVICES, help="auto = CUDA when available, else CPU (default: the config's)"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto = bf16 autocast on GPUs that support it, else fp32 (default: the config's)",
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE.yaml",
        help="YAML settings (repeatable; later wins)",
    )
    p.add_argument(
        "--set",
        action="append",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override any setting, dotted for nested ones: --set lr=1e-3 model_cfg.d_model=128",
    )
    p.add_argument(
        "--output-dir", type=Path, help="write each run (checkpoints, result.json) under DIR; resumes"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per run on stdout")
    p.add_argument(
        "--wandb", action=argparse.BooleanOptionalAction, default=None, help="Weights & Biases logging"
    )
    p.add_argument("--tensorboard", action="store_true", default=None, help="write TensorBoard event files")
    o = p.add_argument_group("outputs (with --output-dir; no effect on results)")
    o.add_argument(
        "--snapshot-every",
        type=int,
        metavar="N",
        help="spline snapshots at the first, every N-th and the last evaluation; 0 = the last only "
        "(default: about five per run)",
    )
    o.add_argument(
        "--keep-checkpoints",
        type=int,
        metavar="K",
        help="checkpoints kept while a run is in progress, newest first (default: 2)",
    )
    o.add_argument(
        "--keep-checkpoints-after-run",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the checkpoints of a finished run (default: deleted; final_model.pt is always kept)",
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="a UTF-8 text file for language modelling (selects language/text; split 90/5/5 by position)",
    )


def build_configs(args: argparse.Namespace) -> list[Any]:
    """The resolved TrainConfig of every requested seed (validates everything before any training starts)."""
    from mamba_kan.experiments.grid import parse_seeds
    from mamba_kan.training import compose_config

    overrides = [item for group in args.set for item in group]
    task = args.task
    if getattr(args, "data", None) is not None:
        if task in (None, "language"):
            task = "language/text"
        overrides.append(f"task_options.data_path={args.data}")
    base = compose_config(
        args.config,
        overrides,
        model=args.model,
        task=task,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        precision=args.precision,
        threads=args.threads,
        compile=args.compile,
        wandb=args.wandb,
        tensorboard=args.tensorboard,
        snapshot_every=getattr(args, "snapshot_every", None),
        keep_checkpoints=getattr(args, "keep_checkpoints", None),
        keep_checkpoints_after_run=getattr(args, "keep_checkpoints_after_run", None),
    ).resolved()
    if args.seeds is None and args.seed_list is None:
        seeds = [base.seed]
    else:
        seeds = parse_seeds(args.seeds, None if args.seed_list is None else [args.seed_list])
    return [replace(base, seed=s) for s in seeds]


def run_dir_for(output_dir: Path | None, cfg: Any) -> Path | None:
    if output_dir is None:
        return None
    return output_dir / f"{cfg.model}__{cfg.task.replace('/', '-')}__seed{cfg.seed}"


def run(args: argparse.Namespace) -> int:
    from mamba_kan.training import run_experiment

    configs = build_configs(args)
    if args.output_dir is not None:  # checked before the first step, as compare does
        from mamba_kan.cli.common import check_writable_dir

        check_writable_dir(args.output_dir, "output directory")
    results = []
    # under torchrun every rank runs this command; only rank 0 talks to the console
    is_main = int(os.environ.get("RANK", "0")) == 0
    show_bar = is_main and sys.stderr.isatty()
    for cfg in configs:
        run_dir = run_dir_for(args.output_dir, cfg)
        if run_dir is not None and is_main:
            from mamba_kan.training.checkpoint import remove_temp_files

            remove_temp_files(run_dir)  # left by a killed earlier attempt
        label = f"{cfg.model} {cfg.task} seed {cfg.seed}"
        if show_bar:
            result = _run_with_bar(run_experiment, cfg, run_dir, label)
        else:
            if is_main:
                log.info(
                    "training %s (%d steps)%s", label, cfg.max_steps, f" in {run_dir}" if run_dir else ""
                )
            result = run_experiment(cfg, run_dir)
        results.append(result)
        if args.json and is_main:
            print(json.dumps(result, allow_nan=False), flush=True)
    if not args.json and is_main:
        _print_summary(results)
    return 1 if any(r["status"] == "failed" for r in results) else 0


def _run_with_bar(run_experiment: Any, cfg: Any, run_dir: Path | None, label: str) -> dict[str, Any]:
    """A rich progress bar on stderr, fed by the loop's progress events (at log/eval points only)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mamba_kan.cli.common import console

    loop_log = logging.getLogger("mamba_kan.training")
    old_level = loop_log.level
    loop_log.setLevel(logging.WARNING)  # the bar shows what the per-eval log lines would
    columns = (
        TextColumn("{task.description}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console(stderr=True), transient=False) as bar:
        tid = bar.add_task(label, total=cfg.max_steps, info="")
        info: dict[str, str] = {}

        def on_event(ev: dict[str, Any]) -> None:
            if ev["event"] == "step":
                info["train"] = f"loss {ev['loss']:.4g}"
            elif ev["event"] == "eval":
                metrics = ev["metrics"]
                info["val"] = ", ".join(f"{k} {v:.4g}" for k, v in list(metrics.items())[:2])
            bar.update(tid, completed=ev["step"], info="  ".join(info.values()))

        try:
            return run_experiment(cfg, run_dir, progress=on_event)
        finally:
            loop_log.setLevel(old_level)


def _fmt(value: Any, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def summary_lines(r: dict[str, Any]) -> list[str]:
    """Human-readable summary of one run record: the primary test metric (with the task's floor when known)."""
    head = f"{r['model']}  {r['task']}  seed {r['seed']}: {r['status']}"
    if r.get("error"):
        head += f" ({r['error']})"
    lines = [head]
    if r.get("primary_metric") is not None and r.get("primary_value") is not None:
        direction = "higher is better" if r["higher_is_better"] else "lower is better"
        floor = f", floor {_fmt(r['floor'])}" if r.get("floor") is not None else ""
        lines.append(f"  test {r['primary_metric']} = {_fmt(r['primary_value'])}  ({direction}{floor})")
        others = {k: v for k, v in r["metrics"].items() if k != r["primary_metric"]}
        if others:
            lines.append("  other test metrics: " + ", ".join(f"{k} {_fmt(v)}" for k, v in others.items()))
    if r.get("best_val") is not None:
        lines.append(f"  best val {r['primary_metric']} = {_fmt(r['best_val'])} at step {r['best_val_step']}")
    if r.get("params") is not None:
        lines.append(
            f"  {r['params']:,} params, {r['flops_per_token']:,} FLOPs/token, {r['steps']} steps, "
            f"{_fmt(r['steps_per_sec'], '.1f')} steps/s, {_fmt(r['wall_time_s'], '.1f')} s wall, "
            f"peak memory {_fmt(r['peak_memory_mb'], '.0f')} MB"
        )
    return lines


def _print_summary(results: list[dict[str, Any]]) -> None:
    for r in results:
        print("\n".join(summary_lines(r)))


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Stand-alone entry point (``scripts/run_experiment.py``): same flags, same exit codes as ``mamba-kan train``."""
    from mamba_kan.cli.common import ArgumentParser

    parser = ArgumentParser(prog=prog, description="Train one variant on one task for one or more seeds.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return run(args)
    except UserError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
