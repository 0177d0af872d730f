"""The kernel cache never runs code it did not build for this user (issue 12, items 1-2).

Attacks are planted the way another local user would plant them: a library with the exact expected file name
(the name is a hash of public source and CPU flags) and a matching digest record, in a cache directory owned by
someone else or writable by everyone. The planted library has a constructor that writes a marker file, so
"never loaded" is observable: the marker must not exist. Loading happens in a child process, so that a failure
(a planted constructor, SIGBUS on a truncated library) cannot take pytest down with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mamba_kan.ops.kernels._build import build_key

CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
pytestmark = pytest.mark.skipif(
    CC is None or not hasattr(os, "getuid"), reason="needs a C compiler and POSIX"
)

NAME = "cachetest_scale"
SOURCE = """
#include <stdint.h>
void mk_scale(const float* x, float* y, int64_t n, float a) { for (int64_t i = 0; i < n; ++i) y[i] = a * x[i]; }
"""
NOBODY = 65534

# The child loads the kernel through the public API, calls it, and reports what happened as JSON.
CHILD = f"""
import ctypes, json, logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
from mamba_kan.ops.kernels import load_kernel  # torch-free: the child starts in a fraction of a second
lib = load_kernel({NAME!r}, {SOURCE!r},
                  signatures={{"mk_scale": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_float], None)}})
ok = None
if lib is not None:
    x = (ctypes.c_float * 5)(*range(5)); y = (ctypes.c_float * 5)()
    lib.mk_scale(x, y, 5, 3.0)
    ok = list(y) == [3.0 * v for v in range(5)]
print(json.dumps({{"loaded": lib is not None, "correct": ok, "path": getattr(lib, "_name", None)}}))
"""


def _run_child(
    tmp_path: Path, cache: Path, **env: str
) -> tuple[dict, list[str], subprocess.CompletedProcess]:
    home = tmp_path / "home"
    tmp = tmp_path / "tmp"
    for d in (home, tmp):
        d.mkdir(mode=0o700, exist_ok=True)
    full_env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
        "MAMBA_KAN_CACHE_DIR": str(cache),
        "MAMBA_KAN_KERNELS": "1",
        "HOME": str(home),  # the fallback candidates stay inside the test's own directories
        "TMPDIR": str(tmp),
        **env,
    }
    res = subprocess.run(
        [sys.executable, "-c", CHILD], env=full_env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, f"child died with {res.returncode}: {res.stderr[-2000:]}"
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("WARNING")]
    return json.loads(res.stdout.strip().splitlines()[-1]), warnings, res


def _library_name() -> str:
    return f"{NAME}_{build_key(SOURCE)}.so"


def _plant(directory: Path, marker: Path, owner: int | None) -> Path:
    """A library with the expected name and symbol whose constructor writes ``marker``, plus a digest record that
    matches it (an attacker can compute both)."""
    src = directory / "evil.c"
    src.write_text(
        SOURCE + f"#include <stdio.h>\n__attribute__((constructor)) static void planted(void) {{"
        f' FILE* f = fopen("{marker}", "w"); if (f) {{ fputs("ran", f); fclose(f); }} }}\n'
    )
    lib = directory / _library_name()
    subprocess.run([CC, "-shared", "-fPIC", str(src), "-o", str(lib)], check=True, capture_output=True)
    src.unlink()
    record = lib.with_name(lib.name + ".sha256")
    record.write_text(hashlib.sha256(lib.read_bytes()).hexdigest() + "\n")
    for path in (lib, record):
        os.chmod(path, 0o644)
        if owner is not None:
            os.chown(path, owner, owner)
    return lib


def _needs_root() -> None:
    if os.getuid() != 0:
        pytest.skip("creating files owned by another user needs root")


def test_library_planted_in_a_directory_of_another_user_is_never_loaded(tmp_path):
    _needs_root()
    cache = tmp_path / "foreign"
    cache.mkdir(mode=0o755)
    marker = tmp_path / "marker"
    planted = _plant(cache, marker, owner=NOBODY)
    os.chown(cache, NOBODY, NOBODY)
    result, warnings, _ = _run_child(tmp_path, cache)
    assert not marker.exists(), "the planted library's constructor ran"
    assert result["loaded"] and result["correct"]  # built privately instead
    assert not result["path"].startswith(str(cache))
    assert planted.exists()  # a directory we do not trust is not touched either
    assert (
        len(warnings) == 1 and "not using the kernel cache" in warnings[0] and "owned by uid" in warnings[0]
    )


def test_library_planted_in_a_world_writable_directory_is_never_loaded(tmp_path):
    cache = tmp_path / "shared"
    cache.mkdir()
    os.chmod(cache, 0o777)
    marker = tmp_path / "marker"
    _plant(cache, marker, owner=None)  # even a file that looks like our own: anyone could have swapped it in
    result, warnings, _ = _run_child(tmp_path, cache)
    assert not marker.exists(), "the planted library's constructor ran"
    assert result["loaded"] and result["correct"]
    assert not result["path"].startswith(str(cache))
    assert len(warnings) == 1 and "writable by group or others" in warnings[0]


def test_foreign_library_in_our_own_private_directory_is_never_loaded(tmp_path):
    _needs_root()
    cache = tmp_path / "ours"
    cache.mkdir(mode=0o700)
    marker = tmp_path / "marker"
    _plant(cache, marker, owner=NOBODY)
    result, warnings, _ = _run_child(tmp_path, cache)
    assert not marker.exists(), "the planted library's constructor ran"
    assert result["loaded"] and result["correct"]
    assert len(warnings) == 1 and "failed verification" in warnings[0]


def test_fresh_cache_is_private_and_records_the_digest(tmp_path):
    cache = tmp_path / "new" / "kernels"
    result, warnings, _ = _run_child(tmp_path, cache)
    assert result["loaded"] and result["correct"] and warnings == []
    assert stat.S_IMODE(cache.stat().st_mode) & 0o077 == 0  # created 0700 (minus the umask)
    lib = cache / _library_name()
    assert result["path"] == str(lib)
    assert (cache / (lib.name + ".sha256")).read_text().strip() == hashlib.sha256(
        lib.read_bytes()
    ).hexdigest()
    assert stat.S_IMODE(lib.stat().st_mode) & 0o022 == 0
    assert [p.name for p in cache.iterdir() if p.name.startswith(".build-")] == []  # no leftovers


@pytest.mark.parametrize("keep_bytes", [64, 4096])
def test_truncated_library_is_rebuilt_with_one_warning_not_a_crash(tmp_path, keep_bytes):
    cache = tmp_path / "cache"
    _run_child(tmp_path, cache)
    lib = cache / _library_name()
    good = hashlib.sha256(lib.read_bytes()).hexdigest()
    with open(lib, "r+b") as fh:  # a valid ELF header with a short body: dlopen of this raised SIGBUS
        fh.truncate(keep_bytes)
    result, warnings, _ = _run_child(tmp_path, cache)
    assert result["loaded"] and result["correct"]
    assert len(warnings) == 1 and "failed verification" in warnings[0] and "rebuilt" in warnings[0]
    assert hashlib.sha256(lib.read_bytes()).hexdigest() == good


def test_truncated_library_without_a_compiler_falls_back_with_one_warning(tmp_path):
    cache = tmp_path / "cache"
    _run_child(tmp_path, cache)
    lib = cache / _library_name()
    with open(lib, "r+b") as fh:
        fh.truncate(4096)
    result, warnings, _ = _run_child(tmp_path, cache, CC=str(tmp_path / "no-such-compiler"))
    assert result == {"loaded": False, "correct": None, "path": None}
    assert len(warnings) == 1
    assert "failed verification" in warnings[0] and "PyTorch path" in warnings[0]


def test_spline_kernels_load_through_the_verified_cache(tmp_path, monkeypatch):
    """The real spline library takes the same path: built into the private cache with its digest record."""
    import mamba_kan.ops.kernels as K
    from mamba_kan.ops.bspline_autograd import load_spline_kernels

    cache = tmp_path / "cache"
    monkeypatch.setenv("MAMBA_KAN_CACHE_DIR", str(cache))
    monkeypatch.setenv("MAMBA_KAN_KERNELS", "1")
    monkeypatch.setattr(K, "_LOADED", {})
    kernels = load_spline_kernels(2, 1)
    assert kernels is not None
    lib = kernels.path
    assert lib.parent == cache.resolve() and lib.name.startswith("splines_g2_k1_")
    assert (cache / (lib.name + ".sha256")).read_text().strip() == hashlib.sha256(
        lib.read_bytes()
    ).hexdigest()
