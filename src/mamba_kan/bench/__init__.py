"""Benchmark suites: feedforward blocks, sequence mixers and whole training steps, timed side by side.

    from mamba_kan.bench import BenchConfig, run_bench, to_markdown
    result = run_bench(BenchConfig(suites=("ffn",), threads=1))

A benchmark, not a test: it reports medians, achieved GFLOP/s against the machine's measured matmul peak, peak
memory, and ratios between items measured in the same run, each judged against the performance targets
(``mamba_kan.bench.suites``). ``mamba-kan bench`` is the command-line front end.
"""

from mamba_kan.bench.items import Item, build_item, matched_ffn_widths
from mamba_kan.bench.report import to_markdown
from mamba_kan.bench.runner import BenchConfig, loop_overhead, run_bench, run_suite
from mamba_kan.bench.suites import SUITES

__all__ = [
    "SUITES",
    "BenchConfig",
    "Item",
    "build_item",
    "loop_overhead",
    "matched_ffn_widths",
    "run_bench",
    "run_suite",
    "to_markdown",
]
