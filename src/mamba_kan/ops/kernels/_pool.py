"""Row-parallel calls of a C kernel: on torch's own OpenMP threads where possible, else on Python threads.

Why torch's threads: after each parallel torch op, its OpenMP workers spin for a while waiting for more work. A
kernel split over Python threads then competes with a spinning worker for the second core, and on a 2-core machine
the fused scan's autograd step did not get faster with a second thread at all (56 ms at 1 and at 2 threads, while
the raw kernels scaled 1.5-1.8x). :func:`run_kernel` hands the row ranges to a tiny C driver compiled with
``-fopenmp``; its shared-library dependency ``libgomp.so.1`` resolves to the runtime torch already loaded (the
dynamic loader matches the soname), so the kernel runs on the very workers that are spinning. The driver is only
used when loading it maps no second OpenMP runtime (checked in ``/proc/self/maps``); otherwise, and off Linux, the
rows run on a Python thread pool (ctypes releases the GIL during a foreign call) as before.

Either way the split is the same contiguous row ranges for a given thread count and size, and every part runs
whole on one thread, so per-part accumulators give the same bits whichever runner ran them.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when a kernel runs, so loading a kernel stays torch-free
    from torch import Tensor

log = logging.getLogger(__name__)

_POOL: dict[int, concurrent.futures.ThreadPoolExecutor] = {}  # by size
MIN_CHUNK = 1 << 16  # elements per thread below which splitting costs more than it saves
MAX_ARGS = 32  # arguments of a kernel the C driver can forward


@dataclass(frozen=True)
class RowArg:
    """A kernel argument that depends on the part: ``base + start * per_start + stop * per_stop + part * per_part``
    for the part's row range [start, stop) and its index ``part`` (an address in bytes, or an integer)."""

    base: int = 0
    per_start: int = 0
    per_stop: int = 0
    per_part: int = 0

    def at(self, start: int, stop: int, part: int) -> int:
        return self.base + start * self.per_start + stop * self.per_stop + part * self.per_part


START = RowArg(per_start=1)  # the part's first row
STOP = RowArg(per_stop=1)  # one past its last row
COUNT = RowArg(per_start=-1, per_stop=1)  # its number of rows


def row_ptr(t: Tensor, elems_per_row: int) -> RowArg:
    """Address of row ``start`` of a contiguous tensor seen as rows of ``elems_per_row`` elements."""
    return RowArg(base=t.data_ptr(), per_start=elems_per_row * t.element_size())


def part_ptr(t: Tensor) -> RowArg:
    """Address of ``t[part]``: a per-part accumulator (t contiguous, one slice per possible part)."""
    return RowArg(base=t.data_ptr(), per_part=t.stride(0) * t.element_size())


Arg = int | RowArg | None


def _parts(rows: int, row_elems: int) -> int:
    import torch

    return max(1, min(torch.get_num_threads(), rows, (rows * row_elems) // MIN_CHUNK))


def _bounds(rows: int, parts: int) -> list[int]:
    return [rows * i // parts for i in range(parts + 1)]


def _python_threads(fn: Callable[[int, int, int], None], rows: int, parts: int) -> None:
    pool = _POOL.get(parts)
    if pool is None:
        pool = _POOL[parts] = concurrent.futures.ThreadPoolExecutor(
            parts, thread_name_prefix="mamba-kan-kernel"
        )
    bounds = _bounds(rows, parts)
    futures = [pool.submit(fn, bounds[i], bounds[i + 1], i) for i in range(parts)]
    for fut in futures:
        fut.result()


# --- the OpenMP driver -------------------------------------------------------------------------------------------


def _driver_source() -> str:
    """C source of ``mk_run_rows``: call a kernel (all arguments pointer- or int64-sized, returning void or int)
    once per part inside one OpenMP parallel region, each argument evaluated from its affine row formula."""
    cases = []
    for n in range(MAX_ARGS + 1):
        params = ", ".join(["I"] * n) or "void"
        vals = ", ".join(f"v[{i}]" for i in range(n))
        cases.append(
            f"    case {n}: if (with_status) st = ((int (*)({params}))fn)({vals});"
            f" else ((void (*)({params}))fn)({vals}); break;"
        )
    switch = "\n".join(cases)
    return f"""
#include <stdint.h>
#include <omp.h>
typedef int64_t I;

/* One part: the rows [rows * k / parts, rows * (k + 1) / parts); coef holds (base, per_start, per_stop,
   per_part) per argument. Returns the kernel's status (0 for a void kernel). */
static int run_part(void* fn, I nargs, const I* coef, I rows, I parts, I k, int with_status)
{{
    I v[{MAX_ARGS} + 1];
    const I start = rows * k / parts, stop = rows * (k + 1) / parts;
    for (I i = 0; i < nargs; ++i) v[i] = coef[4 * i] + start * coef[4 * i + 1] + stop * coef[4 * i + 2] + k * coef[4 * i + 3];
    int st = 0;
    switch (nargs) {{
{switch}
    default: st = -1000;
    }}
    return st;
}}

/* Runs every part once; a team smaller than asked for takes several parts per thread (same ranges, same bits).
   Returns 1 when a part's kernel returned non-zero, else 0. */
int mk_run_rows(void* fn, I nargs, const I* coef, I rows, I parts, int with_status)
{{
    int status = 0;
#pragma omp parallel num_threads((int)parts) reduction(|: status)
    for (I k = omp_get_thread_num(); k < parts; k += omp_get_num_threads()) {{
        const int st = run_part(fn, nargs, coef, rows, parts, k, with_status);
        if (st != 0) status |= 1;
    }}
    return status;
}}
"""


def _mapped_openmp() -> frozenset[str]:
    """Paths of the OpenMP runtimes mapped into this process (Linux; empty set elsewhere)."""
    try:
        with open("/proc/self/maps") as fh:
            return frozenset(
                ln.split()[-1] for ln in fh if any(name in ln for name in ("libgomp", "libiomp", "libomp"))
            )
    except OSError:
        return frozenset()


@functools.cache
def _driver() -> ctypes.CDLL | None:
    """The OpenMP row driver, or None: not Linux, kernels off, no build, or it would bring its own runtime."""
    import torch  # noqa: F401  (torch's OpenMP runtime must be mapped before the driver is loaded)

    from mamba_kan.ops.kernels import load_kernel

    if not sys.platform.startswith("linux"):
        return None
    before = _mapped_openmp()
    if not any("libgomp" in path for path in before):
        return None  # torch does not run on GNU OpenMP here: the driver would start a second runtime
    sig = {"mk_run_rows": ([ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p] + [ctypes.c_int64] * 2
                           + [ctypes.c_int], ctypes.c_int)}  # fmt: skip
    lib = load_kernel("row_driver", _driver_source(), ("-fopenmp",), sig)
    if lib is None:
        return None
    if _mapped_openmp() != before:
        log.info("the OpenMP row driver mapped a second OpenMP runtime; kernels split on Python threads")
        return None
    return lib


def run_kernel(fn, args: Sequence[Arg], rows: int, row_elems: int, *, status: bool = False) -> int:
    """Call the ctypes kernel ``fn`` on row ranges covering [0, rows), on up to torch.get_num_threads() threads.

    ``args`` are its arguments: plain integers or addresses, ``None`` (a null pointer), or :class:`RowArg`
    formulas of the part's rows (:data:`START`, :data:`STOP`, :data:`COUNT`, :func:`row_ptr`, :func:`part_ptr`).
    All must be pointer- or int64-sized (the C driver forwards them as int64). ``row_elems`` (elements per row)
    decides how many parts pay off (at least ``MIN_CHUNK`` elements each). With ``status`` the kernel returns int
    and any non-zero return raises MemoryError (the kernels return non-zero only when a scratch allocation
    failed). Returns the number of parts: fixed for a given thread count and size, and parts are contiguous row
    ranges ``[rows * k // parts, rows * (k + 1) // parts)``, so a kernel that reduces per part (``part`` indexes
    its private accumulator) is reproducible.
    """
    parts = _parts(rows, row_elems)
    driver = _driver() if parts > 1 and len(args) <= MAX_ARGS else None
    if driver is not None:
        coef = []
        for a in args:
            r = a if isinstance(a, RowArg) else RowArg(base=a or 0)
            coef += (r.base, r.per_start, r.per_stop, r.per_part)
        addr = ctypes.cast(fn, ctypes.c_void_p).value
        failed = driver.mk_run_rows(
            addr, len(args), (ctypes.c_int64 * len(coef))(*coef), rows, parts, int(status)
        )
    else:
        results: list[int] = [0] * parts

        def part(start: int, stop: int, k: int) -> None:
            results[k] = fn(*(a.at(start, stop, k) if isinstance(a, RowArg) else a for a in args))

        if parts == 1:
            part(0, rows, 0)
        else:
            _python_threads(part, rows, parts)
        failed = status and any(r != 0 for r in results)
    if failed:
        raise MemoryError(
            f"the C kernel {getattr(fn, '__name__', '?')} could not allocate its scratch buffers"
        )
    return parts


def ptr(t: Tensor, offset_elems: int = 0) -> int:
    """Address of element ``offset_elems`` of a contiguous tensor's storage (for a ``ctypes.c_void_p`` argument)."""
    return t.data_ptr() + offset_elems * t.element_size()
