"""Peak memory on CPU is per run, not per process lifetime (workers run many cells)."""

from __future__ import annotations

import sys

import pytest
import torch

from mamba_kan.training.env import peak_memory_mb, reset_peak_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM reset is Linux-only")
def test_cpu_peak_memory_resets_between_runs():
    cpu = torch.device("cpu")
    big = torch.ones(50_000_000)  # 200 MB touched
    big += 1
    peak_with_big = peak_memory_mb(cpu)
    del big
    reset_peak_memory(cpu)
    small_peak = peak_memory_mb(cpu)
    assert peak_with_big - small_peak > 150, (peak_with_big, small_peak)
