"""Measurements: step times (interleaved rounds), the machine's matmul peak, and peak memory.

Timing. Every item of a comparison group is warmed up, then timed in *rounds*: one step of each item per round, so
a change in machine load hits all items of a group alike and their ratios stay meaningful on a shared machine.
Garbage is collected once per round and the item order rotates from round to round. Each
item reports the median wall-clock time (``ms``) and the median process CPU time (``cpu_ms``, all threads; on a
loaded machine the better measure of work done) over the rounds. CUDA steps are synchronised before the clock stops.

Efficiency. ``gflops`` is an item's step FLOPs over its median wall time. ``peak_fraction`` compares work per
CPU-second with the matmul peak per CPU-second measured in the same run (on CUDA: wall-clock for both): on a shared
machine the wall clock also counts time the process waited for a core, CPU time does not.

Peak memory. On CPU each item is rebuilt in a fresh Python process (``mamba_kan.bench._memory_child``): one warm-up
step (lazy allocations, optimizer state, kernel loading), then the kernel's peak-RSS counter is reset
(``/proc/self/clear_refs``, Linux) and one more step runs; ``peak_mb`` is that step's peak resident set size minus
the resident set size before it, i.e. the activations, gradients and workspace of one step (parameters, inputs and
the interpreter are excluded). Where the reset is unsupported the lifetime maximum RSS is used (an upper bound).
On CUDA: ``torch.cuda.max_memory_allocated`` during the step minus the memory allocated before it.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from mamba_kan.bench.items import Item, build_item

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_group(
    items: list[Item], device: torch.device, warmup: int, repeats: int, budget_s: float
) -> dict[str, dict[str, float]]:
    """Median wall and CPU milliseconds per step of each item, timed in interleaved rounds.

    ``repeats`` rounds at most, fewer (but at least 3) when the warm-up shows that a round would exceed
    ``budget_s`` / repeats. Returns {item.key: {"ms", "cpu_ms", "ms_min", "ms_max", "rounds"}}.
    """
    round_s = 0.0
    for item in items:
        for i in range(max(1, warmup)):
            t0 = time.perf_counter()
            item.step()
            _sync(device)
            if i == max(1, warmup) - 1:
                round_s += time.perf_counter() - t0
    rounds = max(min(repeats, 3), min(repeats, int(budget_s / max(round_s, 1e-9))))
    wall: dict[str, list[float]] = {it.key: [] for it in items}
    cpu: dict[str, list[float]] = {it.key: [] for it in items}
    for r in range(rounds):
        # garbage is collected once per round, not before every step: a collection takes 30-50 ms with torch
        # loaded, and a kernel that runs right after that much scalar work is slower for a few ms (measured on a
        # 2-core AVX-512 machine: the fused scan's forward 7 -> 10 ms, also after a 20 ms busy wait), which is
        # not how a training step sees it. The order rotates, so that no item always follows the collection.
        gc.collect()
        for item in items[r % len(items) :] + items[: r % len(items)]:
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            item.step()
            _sync(device)
            wall[item.key].append(1e3 * (time.perf_counter() - t0))
            cpu[item.key].append(1e3 * (time.process_time() - c0))
    return {
        key: {
            "ms": statistics.median(wall[key]),
            "cpu_ms": statistics.median(cpu[key]),
            "ms_min": min(wall[key]),
            "ms_max": max(wall[key]),
            "rounds": rounds,
        }
        for key in wall
    }


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> dict[str, Any]:
    """This machine's practical peak: the best GFLOP/s of an (n x n) @ (n x n) matmul in ``dtype`` (2 n^3 FLOPs),
    by wall-clock (``gflops``) and, on CPU, per CPU-second of the process (``gflops_cpu``: all threads' CPU time,
    so a loaded machine does not lower it)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up (BLAS thread pool, kernel selection)
    _sync(device)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    flops = 2 * n**3
    return {
        "n": n,
        "dtype": str(dtype).replace("torch.", ""),
        "gflops": flops / best / 1e9,
        "gflops_cpu": flops / best_cpu / 1e9 if device.type == "cpu" and best_cpu > 0 else None,
    }


def peak_memory(
    spec: dict[str, Any], device: torch.device, threads: int, precision: str, timeout_s: float = 900
) -> dict[str, Any]:
    """Peak memory of one step of the item ``spec`` (see the module docstring): {"peak_mb", "method"}."""
    if device.type == "cuda":
        item = build_item(spec, device, precision)
        item.step()
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        item.step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del item
        return {"peak_mb": (peak - before) / 2**20, "method": "cuda max_memory_allocated"}
    payload = json.dumps({"spec": spec, "threads": threads, "precision": precision})
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    try:
        res = subprocess.run(
            [sys.executable, "-m", "mamba_kan.bench._memory_child", payload],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        log.warning("memory measurement of %s timed out after %.0f s", spec, timeout_s)
        return {"peak_mb": None, "method": "timed out"}
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        log.warning("memory measurement of %s failed: %s", spec, tail)
        return {"peak_mb": None, "method": f"failed: {tail}"}
    return json.loads(lines[-1])
