"""What a run records about the machine it ran on (results are only comparable on the same machine and versions),
and peak-memory measurement."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import resource
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mamba_kan


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Commit of the project checkout this package runs from, read from ``.git`` without running git
    (None when installed from a wheel or the checkout is unreadable)."""
    here = Path(mamba_kan.__file__).resolve()
    for parent in here.parents:
        git = parent / ".git"
        if git.is_file():  # worktree / submodule: "gitdir: <path>"
            text = git.read_text().strip()
            if text.startswith("gitdir:"):
                git = (parent / text.split(":", 1)[1].strip()).resolve()
        if git.is_dir():
            return _read_head(git)
    return None


def _read_head(git: Path) -> str | None:
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        common = git
        if (git / "commondir").is_file():  # linked worktrees keep refs in the common dir
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for base in (git, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
    except OSError:
        return None
    return None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, device, threads, commit and host of this process."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "mamba_kan": mamba_kan.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name(device),
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "git_commit": git_commit(),
        "hostname": socket.gethostname(),
    }


def _reset_linux_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process: writing 5 to /proc/self/clear_refs (Linux >= 4.0,
    proc(5)). Lets a worker process that runs many cells report each cell's own peak. False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _linux_peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both exist only in glibc
    except (OSError, AttributeError, TypeError):
        return None
    return libc


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


def retain_freed_memory() -> bool:
    """Let this process keep the memory a training step frees for the next step (glibc; False elsewhere).

    A small CPU step allocates and frees the same activation buffers every step. By default glibc serves large
    blocks (from 128 KiB; the threshold adapts up to the largest block freed) with fresh ``mmap`` pages and trims
    the heap top after each step, so every step page-faults its buffers in again, which costs a visible share of
    a quick-size step's CPU time (docs/benchmarks.md). Here blocks below 32 MiB come from the heap and up to
    256 MiB of freed heap is kept (``mallopt(M_MMAP_THRESHOLD / M_TRIM_THRESHOLD)``, mallopt(3)). Values do not
    change: PyTorch aligns every CPU buffer to 64 bytes either way. Process-wide and kept after the run (a worker
    process runs many cells); :func:`reset_peak_memory` returns the kept memory to the system first so that each
    run's peak counts its own memory only.
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    )


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak for :func:`peak_memory_mb`. False where the CPU counter cannot be reset (not Linux): the
    peak is then the process-lifetime maximum."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)  # memory kept by retain_freed_memory() belongs to no run
    return _reset_linux_peak_rss()


def peak_memory_mb(device: torch.device) -> float:
    """Max allocated CUDA memory since :func:`reset_peak_memory` on GPUs. On CPU the peak resident set size of the
    process since :func:`reset_peak_memory` on Linux (VmHWM after a clear_refs reset), else the process-lifetime
    maximum (an upper bound in a process that runs several experiments)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = _linux_peak_rss_mb()
    if peak is not None:
        return peak
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux
