"""Child process of :func:`mamba_kan.bench.measure.peak_memory`: rebuild one item, run one warm-up step, reset
the peak-RSS counter, run one step, print {"peak_mb", "method"} as JSON on the last line of stdout.

Run as ``python -m mamba_kan.bench._memory_child '<json payload>'``; a fresh process so that the allocator's
retained memory from other items cannot hide (or inflate) this item's peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import resource
import sys

import torch

from mamba_kan.bench.items import build_item
from mamba_kan.training.env import peak_memory_mb, reset_peak_memory


def _rss_mb() -> float | None:
    """Current resident set size (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None


def _release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so the baseline RSS holds live data only."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)  # type: ignore[union-attr]
    except (OSError, AttributeError, TypeError):
        pass


def main(argv: list[str]) -> int:
    payload = json.loads(argv[0])
    torch.set_num_threads(int(payload["threads"]))
    device = torch.device("cpu")
    item = build_item(payload["spec"], device, payload.get("precision", "fp32"))
    scale = 2**20 if sys.platform == "darwin" else 2**10  # ru_maxrss: bytes on macOS, KiB on Linux
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    item.step()
    _release_free_memory()
    base = _rss_mb()
    if base is not None and reset_peak_memory(device):
        item.step()
        result = {"peak_mb": peak_memory_mb(device) - base, "method": "VmHWM - VmRSS (fresh process)"}
    else:  # no reset: the lifetime maximum also covers the warm-up step (an upper bound)
        item.step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
        result = {"peak_mb": peak - built, "method": "ru_maxrss growth (fresh process, upper bound)"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
