"""Optional generated C kernels for the CPU: build, verified cache, loading, and a row-parallel runner.

The kernels are an accelerator, never a requirement: every caller keeps a PyTorch path with the same maths, and
:func:`load_kernel` returns ``None`` (after one logged warning) whenever a kernel cannot be used - no C compiler,
a build error, ``MAMBA_KAN_KERNELS=0`` in the environment, or a symbol missing from the library.

API (for a new kernel, e.g. a fused selective scan):

* ``load_kernel(name, source, extra_flags=(), signatures=None) -> ctypes.CDLL | None`` - compile the C99 source
  ``source`` with the system C compiler (``$CC``, ``cc``, ``gcc`` or ``clang``; flags :data:`C_FLAGS` plus
  ``-march=native`` plus ``extra_flags``, linked with ``-lm``, no torch headers), cache it, load it and set
  ``argtypes``/``restype`` from ``signatures`` (``{"fn": ([ctypes.c_void_p, ctypes.c_int64, ...], None)}``).
  ``name`` (letters, digits, ``_``) names the cache file; the build key is a hash of source, flags and CPU, so
  a changed source or a different machine rebuilds. Results are memoised per (name, key) in the process.
* ``run_kernel(fn, args, rows, row_elems, status=False) -> parts`` - call the ctypes kernel ``fn`` once per
  contiguous row range on up to ``torch.get_num_threads()`` threads - torch's own OpenMP workers through a small
  C driver where that shares torch's runtime, else Python threads - with ``args`` given as integers, addresses
  or :class:`RowArg` formulas of the part (``START``, ``STOP``, ``COUNT``, ``row_ptr(t, per_row)``,
  ``part_ptr(t)``); see :mod:`._pool` for why.
* ``ptr(tensor, offset_elems=0) -> int`` - a raw address for a ``c_void_p`` argument (contiguous tensors only).
* ``cpu_float32(x) -> bool`` - whether ``x`` is the kind of input the CPU kernels take (CPU, float32, autocast
  off); callers dispatch on it before calling :func:`load_kernel`.
* :data:`C_EXP` - a vectorisable ``static inline float mk_exp(float)`` for kernels that need exp (silu, softplus).
* ``wide_vectors()``, ``vector_lanes()``, ``vector_flags()`` - AVX-512 or not: 16 or 8 float32 lanes per vector,
  and the compiler flag for 512-bit auto-vectorisation (part of the build key through the flags and source).
* :data:`C_VEC` / ``c_vec(lanes)`` - 8-float (or ``lanes``-float) vectors of GCC/clang's vector extensions
  (``vf``, ``vld``/``vst``, ``vsel``, ``vfma``, ``vfloor``, ``vexp``; include after :data:`C_EXP`) for loops whose
  accumulators must stay in registers, and lane masks ``vm`` (``vm_lt``/``vm_gt``/``vm_eq``/``vm_le``/``vm_ge``/
  ``vm_nan``, ``vblend``, ``vadd_if``): AVX-512 mask registers for 16-lane vectors on AVX-512 CPUs (one instruction
  per select or masked add), integer lanes elsewhere.

Cache and trust (see :mod:`._cache`): libraries live in ``$MAMBA_KAN_CACHE_DIR``, else
``~/.cache/mamba_kan/kernels``, else ``<tmp>/mamba_kan_kernels_<uid>``, the first that is a directory owned by the
current user and not writable by group or others (created 0700); with none, the kernel is built in a fresh
private temporary directory for this process. Before loading, the library's SHA-256 is recomputed and compared
with the digest recorded at build time; a mismatch (truncated or altered file) rebuilds once with one warning.
Builds are installed by atomic renames, so concurrent processes may build the same kernel safely.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mamba_kan.ops.kernels import _cache
from mamba_kan.ops.kernels._build import (
    C_FLAGS,
    build_key,
    compile_library,
    machine_tag,
    vector_flags,
    vector_lanes,
    wide_vectors,
)
from mamba_kan.ops.kernels._pool import (
    COUNT,
    START,
    STOP,
    RowArg,
    part_ptr,
    ptr,
    row_ptr,
    run_kernel,
)
from mamba_kan.ops.kernels.c_common import C_EXP, C_VEC, c_vec

if TYPE_CHECKING:  # the package imports without torch (a build or cache check needs none)
    from torch import Tensor

__all__ = [
    "C_EXP",
    "C_VEC",
    "C_FLAGS",
    "COUNT",
    "ENV_SWITCH",
    "START",
    "STOP",
    "RowArg",
    "c_vec",
    "cache_path",
    "cpu_float32",
    "kernels_enabled",
    "load_kernel",
    "machine_tag",
    "part_ptr",
    "ptr",
    "row_ptr",
    "run_kernel",
    "vector_flags",
    "vector_lanes",
    "wide_vectors",
]

log = logging.getLogger(__name__)

ENV_SWITCH = "MAMBA_KAN_KERNELS"  # "0" = never use the C kernels
Signatures = Mapping[str, tuple[Sequence[Any], Any]]
_LOADED: dict[tuple[str, str], ctypes.CDLL | None] = {}


def kernels_enabled() -> bool:
    """False when the user switched the kernels off (MAMBA_KAN_KERNELS=0)."""
    return os.environ.get(ENV_SWITCH, "1") != "0"


def _cpu_autocast_on() -> bool:
    import torch

    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def cpu_float32(x: Tensor) -> bool:
    """Whether ``x`` is an input the CPU float32 kernels take: on the CPU, float32, CPU autocast off."""
    import torch

    return x.device.type == "cpu" and x.dtype == torch.float32 and not _cpu_autocast_on()


def cache_path(name: str, source: str, extra_flags: Sequence[str] = ()) -> Path | None:
    """Where :func:`load_kernel` keeps this build (None: no trusted cache directory, builds stay private)."""
    directory = _cache.private_cache_dir()
    return None if directory is None else directory / f"{name}_{build_key(source, extra_flags)}.so"


def _open(path: Path, signatures: Signatures | None) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for symbol, (argtypes, restype) in (signatures or {}).items():
        fn = getattr(lib, symbol)  # AttributeError for a missing symbol
        fn.argtypes, fn.restype = list(argtypes), restype
    return lib


def _build_into(directory: Path, library: Path, source: str, extra_flags: Sequence[str]) -> None:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
        _cache.install(compile_library(source, Path(tmp), extra_flags), library)
    log.info("built %s in %.1f s", library, time.perf_counter() - t0)


def _load_private(name: str, source: str, extra_flags: Sequence[str], signatures: Signatures | None):
    """Build into a fresh private temporary directory (0700, ours) and load from there; the directory is removed
    once the library is mapped."""
    tmp = Path(tempfile.mkdtemp(prefix="mamba_kan_kernel_"))
    try:
        library = tmp / f"{name}.so"
        _build_into(tmp, library, source, extra_flags)
        if (reason := _cache.verify(library)) is not None:
            raise OSError(f"the freshly built {library.name} failed verification: {reason}")
        return _open(library, signatures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(name: str, source: str, extra_flags: Sequence[str], signatures: Signatures | None) -> ctypes.CDLL:
    directory = _cache.private_cache_dir()
    if directory is None:
        return _load_private(name, source, extra_flags, signatures)
    library = directory / f"{name}_{build_key(source, extra_flags)}.so"
    try:
        reason = _cache.verify(library)
    except FileNotFoundError:
        reason = ""  # not built yet
    except OSError as exc:
        reason = str(exc)
    if reason is None:
        return _open(library, signatures)
    if reason:  # never opened: removed (it is in our own, verified directory) and rebuilt
        try:
            library.unlink()
        except OSError:  # e.g. a directory of that name: leave it, build privately
            return _load_private(name, source, extra_flags, signatures)
    try:
        _build_into(directory, library, source, extra_flags)
        if _cache.verify(library) is not None:  # e.g. replaced meanwhile by a concurrent, different build
            return _load_private(name, source, extra_flags, signatures)
    except OSError as exc:
        if reason:
            msg = f"the cached {library.name} failed verification ({reason}) and rebuilding failed: {exc}"
            raise OSError(msg) from exc
        raise
    if reason and reason != _cache.NO_RECORD:  # no record = an interrupted build or an older version: quiet
        log.warning("cached kernel %s failed verification (%s); rebuilt it", library, reason)
    return _open(library, signatures)


def load_kernel(
    name: str, source: str, extra_flags: Sequence[str] = (), signatures: Signatures | None = None
) -> ctypes.CDLL | None:
    """The compiled and verified library of ``source`` (see the module docstring), or None when kernels are
    switched off or cannot be built or loaded; failures are logged once per (name, build)."""
    if not kernels_enabled():
        return None
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"kernel name must be letters, digits and '_', got {name!r}")
    key = (name, build_key(source, extra_flags))
    if key not in _LOADED:
        lib = None
        try:
            lib = _load(name, source, extra_flags, signatures)
        except (OSError, AttributeError, subprocess.SubprocessError) as exc:
            log.warning("C kernel %s unavailable (%s); using the PyTorch path", name, exc)
        _LOADED[key] = lib
    return _LOADED[key]
