"""The compiler driver: flags, CPU fingerprint, and one build of a C source into a shared library."""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

# -O3 with -fopenmp-simd vectorises the `#pragma omp simd` loops without an OpenMP runtime; no -ffast-math (only
# errno and trapping are given up), so results are IEEE float32 as written in the source.
C_FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math")
C_LIBS = ("-lm",)


@functools.cache
def machine_tag() -> str:
    """Identifies the CPU (kernels are built with -march=native): model and feature flags where readable.
    Read once per process: kernels are looked up on every forward call of the layers that use them."""
    info = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            info += "".join(
                ln for ln in fh.read().splitlines()[:40] if ln.startswith(("model name", "flags"))
            )
    except OSError:
        pass
    return info


@functools.cache
def wide_vectors() -> bool:
    """Whether the CPU has AVX-512F: kernels then use 512-bit vectors (16 float32 lanes) where they are written for
    a vector width, and ask the compiler for 512-bit vectors where it vectorises (gcc and clang otherwise prefer
    256-bit vectors on Intel CPUs)."""
    return re.search(r"\bavx512f\b", machine_tag()) is not None


def vector_lanes() -> int:
    """float32 lanes of one vector register: 16 with AVX-512, else 8 (AVX2; narrower targets split them)."""
    return 16 if wide_vectors() else 8


def vector_flags() -> tuple[str, ...]:
    """Compiler flags for :func:`vector_lanes`-wide loops: 512-bit vectors on AVX-512 CPUs, none elsewhere."""
    return ("-mprefer-vector-width=512",) if wide_vectors() else ()


def build_key(source: str, extra_flags: Sequence[str] = ()) -> str:
    """20 hex digits naming a build: source, flags and CPU (a new CPU or flag gives a new library)."""
    return _build_key(source, tuple(extra_flags))


@functools.lru_cache(maxsize=256)
def _build_key(source: str, extra_flags: tuple[str, ...]) -> str:
    # the layout tag keeps libraries of this verified cache (with digest records) apart from older ones
    text = "\0".join(["verified-cache-1", source, *C_FLAGS, *extra_flags, machine_tag()])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def compiler() -> str:
    """$CC, else cc, gcc or clang from PATH."""
    found = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if found is None:
        raise OSError("no C compiler (cc, gcc or clang) on PATH")
    return found


def compile_library(source: str, workdir: Path, extra_flags: Sequence[str] = ()) -> Path:
    """Compile ``source`` into ``workdir``/lib.so and return that path (raises OSError with the compiler's
    last error line). The compiler runs inside ``workdir`` on relative names, so the library's bytes do not
    depend on the temporary directory's name (concurrent builds of one source produce the same file)."""
    cc = compiler()
    (workdir / "kernel.c").write_text(source)
    errors = ""
    for arch in (["-march=native"], []):  # some compilers (Apple clang on arm64) reject -march=native
        cmd = [cc, *C_FLAGS, *extra_flags, *arch, "kernel.c", "-o", "lib.so", *C_LIBS]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=workdir)
        if res.returncode == 0:
            return workdir / "lib.so"
        errors = (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])[-1]
    raise OSError(f"compiling the C kernel failed: {errors}")
