"""`mamba-kan bench`: time feedforward blocks, sequence mixers and training steps side by side.

Prints tables (or the JSON with --json) and writes the JSON result (--out). Ratios between items measured in the
same run are judged against the performance targets; see mamba_kan.bench and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mamba_kan.choices import BENCH_DEVICES, BENCH_SUITES, PRECISIONS
from mamba_kan.cli.common import print_table

if TYPE_CHECKING:  # the bench imports torch: loaded when it runs, not for --help
    from mamba_kan.bench import BenchConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--suite", default="all", choices=(*BENCH_SUITES, "all"), help="what to time (all: every suite)"
    )
    p.add_argument("--device", default="cpu", choices=BENCH_DEVICES, help="the device timed")
    p.add_argument("--json", action="store_true", help="print the JSON result instead of tables")
    p.add_argument(
        "--out", default=None, help="write the JSON result here (default bench-<suite>-<device>.json)"
    )
    p.add_argument("--no-save", action="store_true", help="do not write the JSON result")
    p.add_argument("--markdown", default=None, metavar="PATH", help="also write a Markdown report")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--repeats", type=int, default=10, help="timed rounds per group")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per item first")
    p.add_argument(
        "--budget", type=float, default=60.0, help="seconds per group; slow groups get fewer rounds (>= 3)"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument("--no-overhead", action="store_true", help="skip the training-loop overhead measurement")
    p.add_argument(
        "--task", default=None, help="model suite task (default language, the quick preset's size)"
    )
    p.add_argument(
        "--precision", default="auto", choices=PRECISIONS, help="auto = bf16 autocast on CUDA, else fp32"
    )
    p.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke run, targets not judged (CI)")


def _config(args: argparse.Namespace) -> BenchConfig:
    from mamba_kan.bench import SUITES, BenchConfig
    from mamba_kan.errors import UserError

    if args.suite == "all":
        suites = SUITES
    elif args.suite in SUITES:
        suites = (args.suite,)
    else:
        raise UserError(f"unknown suite {args.suite!r}; valid choices: {', '.join((*SUITES, 'all'))}")
    return BenchConfig(
        suites=suites,
        device=args.device,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        budget_s=args.budget,
        memory=not args.no_memory,
        tiny=args.tiny,
        precision=args.precision,
        task=args.task,
        overhead=not args.no_overhead,
    )


def run(args: argparse.Namespace) -> int:
    from mamba_kan.bench import run_bench, to_markdown
    from mamba_kan.bench.report import COMPARISON_COLUMNS, ITEM_COLUMNS, comparison_rows, item_rows

    cfg = _config(args)
    cfg.validate()
    out = None if args.no_save else Path(args.out or f"bench-{args.suite}-{args.device}.json")
    result = run_bench(cfg)
    command = (
        "mamba-kan bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if sys.argv[1:2] == ["bench"]
        else None
    )
    result["meta"]["command"] = command
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(to_markdown(result, command))
    if args.json:
        print(json.dumps(result))
        return 0
    meta, peak = result["meta"], result["matmul_peak"]
    print(
        f"{meta['device_name']} | torch {meta['torch']} | {meta['threads']} thread(s) | {meta['precision']} | "
        f"matmul peak {peak['gflops']:.1f} GFLOP/s | spline layers: {meta['spline_backend']}"
    )
    for name, suite in result["suites"].items():
        print_table(f"{name}: median step times", ITEM_COLUMNS, item_rows(suite))
        print_table(f"{name}: ratios measured in this run", COMPARISON_COLUMNS, comparison_rows(suite))
        for note in suite.get("notes", []):
            print(f"note: {note}")
    if out is not None:
        print(f"wrote {out}")
    return 0
