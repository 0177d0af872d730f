"""The value sets of settings and command-line flags, in one torch-, pandas- and matplotlib-free module.

Each set is defined here once; the code that acts on a value (the training loop, the bench, the export, the
figures, the sweep backends) imports it from here, and the command line offers it as argparse ``choices``
without importing that code, so ``mamba-kan --help`` stays fast.
"""

from __future__ import annotations

#: Training device: ``auto`` = CUDA when available, else CPU (``training.loop.resolve_device``).
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: The bench times one named device (no ``auto``: a benchmark result must say what it measured).
BENCH_DEVICES: tuple[str, ...] = ("cpu", "cuda")
#: Numeric precision: ``auto`` = bf16 autocast on GPUs that support it, else fp32.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
#: Where the cells of a sweep run: a local process pool, Ray tasks, SLURM array jobs (submitit).
BACKENDS: tuple[str, ...] = ("local", "ray", "slurm")
#: Bench suites (``mamba-kan bench --suite``; ``all`` runs every one).
BENCH_SUITES: tuple[str, ...] = ("ffn", "mixer", "model")
#: Tidy export formats (``mamba-kan export --format``).
EXPORT_FORMATS: tuple[str, ...] = ("csv", "parquet", "json")
#: Static figure formats of the report (``mamba-kan report --format``, comma-separated).
FIGURE_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")
#: Shells ``mamba-kan completion`` writes a script for (those shtab generates).
COMPLETION_SHELLS: tuple[str, ...] = ("bash", "zsh", "tcsh")
