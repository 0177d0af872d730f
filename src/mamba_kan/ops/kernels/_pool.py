"""Row-parallel calls of a C kernel on Python threads (ctypes releases the GIL during a foreign call)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when a kernel runs, so loading a kernel stays torch-free
    from torch import Tensor

_POOL: dict[int, concurrent.futures.ThreadPoolExecutor] = {}  # by size
MIN_CHUNK = 1 << 16  # elements per thread below which splitting costs more than it saves


def run_rows(fn: Callable[[int, int, int], None], rows: int, row_elems: int) -> int:
    """Call ``fn(start, stop, part)`` on row ranges covering [0, rows), on up to torch.get_num_threads() threads.

    ``row_elems`` (elements per row) decides how many parts pay off (at least ``MIN_CHUNK`` elements each).
    Returns the number of parts; it is fixed for a given thread count and size, and parts are contiguous row
    ranges, so a kernel that reduces per part (``part`` indexes its private accumulator) is reproducible.
    """
    import torch

    parts = max(1, min(torch.get_num_threads(), rows, (rows * row_elems) // MIN_CHUNK))
    if parts == 1:
        fn(0, rows, 0)
        return 1
    pool = _POOL.get(parts)
    if pool is None:
        pool = _POOL[parts] = concurrent.futures.ThreadPoolExecutor(
            parts, thread_name_prefix="mamba-kan-kernel"
        )
    bounds = [rows * i // parts for i in range(parts + 1)]
    futures = [pool.submit(fn, bounds[i], bounds[i + 1], i) for i in range(parts)]
    for fut in futures:
        fut.result()
    return parts


def ptr(t: Tensor, offset_elems: int = 0) -> int:
    """Address of element ``offset_elems`` of a contiguous tensor's storage (for a ``ctypes.c_void_p`` argument)."""
    return t.data_ptr() + offset_elems * t.element_size()
