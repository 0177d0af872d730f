"""The row-parallel kernel runner (mamba_kan.ops.kernels._pool): row ranges, per-part arguments, status, and
that the OpenMP driver runs kernels on torch's own OpenMP threads rather than on threads of its own."""

from __future__ import annotations

import ctypes
import os
import sys

import pytest
import torch

from mamba_kan.ops.kernels import (
    COUNT,
    START,
    STOP,
    RowArg,
    _pool,
    load_kernel,
    part_ptr,
    row_ptr,
    run_kernel,
)

_SOURCE = r"""
#define _GNU_SOURCE
#include <stdint.h>
#include <unistd.h>
#include <sys/syscall.h>

/* rows[r] = 1000 * part + r for r in [start, stop); info[part] = (start, stop, count, thread id);
   returns 7 when part == fail_part. */
int mark(int64_t* rows, int64_t* info, int64_t start, int64_t stop, int64_t count, int64_t part,
         int64_t fail_part)
{
    for (int64_t r = start; r < stop; ++r) rows[r] = 1000 * part + r;
    info[0] = start;
    info[1] = stop;
    info[2] = count;
    info[3] = (int64_t)syscall(SYS_gettid);
    return part == fail_part ? 7 : 0;
}

/* out[row r, column 0] = the sum of 29 constant arguments, for the rows of this part (row pointer) */
void many(int64_t* out, int64_t n, int64_t a0, int64_t a1, int64_t a2, int64_t a3, int64_t a4, int64_t a5,
          int64_t a6, int64_t a7, int64_t a8, int64_t a9, int64_t a10, int64_t a11, int64_t a12, int64_t a13,
          int64_t a14, int64_t a15, int64_t a16, int64_t a17, int64_t a18, int64_t a19, int64_t a20, int64_t a21,
          int64_t a22, int64_t a23, int64_t a24, int64_t a25, int64_t a26, int64_t a27, int64_t a28, int64_t a29)
{
    int64_t s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11 + a12 + a13 + a14 + a15 + a16 + a17
                + a18 + a19 + a20 + a21 + a22 + a23 + a24 + a25 + a26 + a27 + a28 + a29;
    for (int64_t r = 0; r < n; ++r) out[2 * r] = s;
}
"""
_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGS = {"mark": ([_P, _P] + [_I] * 5, ctypes.c_int), "many": ([_P] + [_I] * 31, None)}


@pytest.fixture(scope="module")
def lib():
    if not sys.platform.startswith("linux"):
        pytest.skip("the test kernel reads Linux thread ids")
    built = load_kernel("pool_test", _SOURCE, (), _SIGS)
    if built is None:
        pytest.skip("no C compiler")
    return built


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=["openmp", "python"])
def runner(request, monkeypatch):
    """Each test once through the OpenMP driver and once with it unavailable (the Python thread pool)."""
    if request.param == "python":
        monkeypatch.setattr(_pool, "_driver", lambda: None)
    elif _pool._driver() is None:
        pytest.skip("the OpenMP driver is not available here (torch not on GNU OpenMP, or no -fopenmp build)")
    return request.param


def _mark(lib, rows: int, row_elems: int, fail_part: int = -1):
    out = torch.full((rows,), -1, dtype=torch.int64)
    info = torch.zeros(4, 4, dtype=torch.int64)  # one row per possible part
    args = [row_ptr(out, 0), part_ptr(info), START, STOP, COUNT, RowArg(per_part=1), fail_part]
    parts = run_kernel(lib.mark, args, rows, row_elems, status=True)
    return parts, out, info


def test_parts_cover_the_rows_in_contiguous_ranges(lib, two_threads, runner):
    rows = 1001
    parts, out, info = _mark(lib, rows, _pool.MIN_CHUNK)
    assert parts == 2
    bounds = [rows * i // parts for i in range(parts + 1)]  # the documented split
    for k in range(parts):
        assert info[k, :3].tolist() == [bounds[k], bounds[k + 1], bounds[k + 1] - bounds[k]]
        assert out[bounds[k] : bounds[k + 1]].tolist() == [
            1000 * k + r for r in range(bounds[k], bounds[k + 1])
        ]
    if runner == "openmp":  # one part per team thread (a Python pool may reuse an idle worker for both)
        assert info[0, 3] != info[1, 3], "the two parts ran on one thread"


def test_small_work_runs_as_one_part_on_the_calling_thread(lib, two_threads, runner):
    parts, out, info = _mark(lib, 10, 1)  # 10 elements: below MIN_CHUNK per thread
    assert parts == 1
    assert out.tolist() == list(range(10))
    assert info[0].tolist()[:3] == [0, 10, 10] and info[0, 3] == _gettid()


def test_a_failing_part_raises_memory_error(lib, two_threads, runner):
    with pytest.raises(MemoryError, match="mark"):
        _mark(lib, 100, _pool.MIN_CHUNK, fail_part=1)


def test_up_to_max_args_are_forwarded(lib, two_threads, runner):
    out = torch.zeros(6, 2, dtype=torch.int64)
    consts = list(range(1, 31))
    parts = run_kernel(lib.many, [row_ptr(out, 2), COUNT, *consts], 6, _pool.MIN_CHUNK)
    assert len(consts) + 2 == _pool.MAX_ARGS and parts == 2
    assert out[:, 0].tolist() == [sum(consts)] * 6 and out[:, 1].tolist() == [0] * 6


def _gettid() -> int:
    return ctypes.CDLL(None).syscall(186 if os.uname().machine == "x86_64" else 178)  # SYS_gettid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux thread ids")
def test_driver_runs_on_torch_openmp_threads(lib, two_threads):
    """With the driver, a kernel's parts run on the threads torch's own parallel ops use: no new threads (other
    packages may map OpenMP runtimes of their own, e.g. scikit-learn's renamed libgomp; the driver binds to the
    one named libgomp.so.1, torch's)."""
    if _pool._driver() is None:
        pytest.skip("the OpenMP driver is not available here (torch not on GNU OpenMP, or no -fopenmp build)")
    x = torch.randn(1 << 22)
    (x * 2).sum()  # a parallel torch op: its OpenMP team now exists
    threads_before = set(os.listdir("/proc/self/task"))
    _, _, info = _mark(lib, 1000, _pool.MIN_CHUNK)
    tids = {str(t) for t in info[:2, 3].tolist()}
    assert len(tids) == 2
    assert tids <= threads_before, "the kernel ran on threads created for it, not on torch's OpenMP team"
    assert set(os.listdir("/proc/self/task")) == threads_before
