"""A private, verified cache of compiled kernels.

What is guaranteed before a cached library is handed to ``ctypes.CDLL`` (i.e. before any of its code can run):

* the cache directory (after resolving symlinks) is a directory owned by the current user and not writable by
  group or others; it is created 0700. A directory that fails this (e.g. ``/tmp/mamba_kan_kernels_<uid>`` made
  in advance by another user) is never read: the kernel is compiled into a fresh private temporary directory;
* the library file is a regular file (not a symlink) with the same owner rule;
* its SHA-256, recomputed from the bytes on disk, equals the digest recorded when it was compiled, in a sidecar
  file ``<library>.sha256`` of the same directory that passes the same ownership checks. A truncated or altered
  library therefore never reaches the dynamic loader (``dlopen`` of a short ELF file can kill the process with
  SIGBUS).

A build is written into a temporary directory inside the cache and moved into place with ``os.replace`` (atomic
on POSIX): first the digest record, then the library, so readers see either no library or a complete one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from pathlib import Path

log = logging.getLogger("mamba_kan.ops.kernels")

ENV_CACHE_DIR = "MAMBA_KAN_CACHE_DIR"
_REJECTED: set[str] = set()  # directories already warned about
NO_RECORD = "no digest record"


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else -1


def untrusted_reason(st: os.stat_result) -> str | None:
    """Why a file or directory with this stat must not be trusted (None: it may be)."""
    uid = _uid()
    if uid >= 0 and st.st_uid != uid:
        return f"owned by uid {st.st_uid}, not by the current user (uid {uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _candidates() -> list[Path]:
    env = os.environ.get(ENV_CACHE_DIR)
    return ([Path(env)] if env else []) + [
        Path.home() / ".cache" / "mamba_kan" / "kernels",
        Path(tempfile.gettempdir()) / f"mamba_kan_kernels_{max(_uid(), 0)}",
    ]


def private_cache_dir() -> Path | None:
    """The first usable cache directory ($MAMBA_KAN_CACHE_DIR, ~/.cache/mamba_kan/kernels, then
    <tmp>/mamba_kan_kernels_<uid>), created 0700, resolved and verified (owner, mode, writable); None when none
    passes (the caller then builds into a fresh private temporary directory). A directory that exists but fails
    the ownership checks is reported once with a warning."""
    for path in _candidates():
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            real = Path(os.path.realpath(path))  # later opens must not follow a symlink that could be swapped
            st = os.stat(real)
        except OSError:
            continue
        reason = "not a directory" if not stat.S_ISDIR(st.st_mode) else untrusted_reason(st)
        if reason is None and os.access(real, os.W_OK | os.X_OK):
            return real
        if reason is not None and str(real) not in _REJECTED:
            _REJECTED.add(str(real))
            log.warning("not using the kernel cache %s: %s; compiling into a private temporary directory (chmod 700 "
                        "a directory of your own to use it)", real, reason)  # fmt: skip
    return None


def read_trusted(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file (no symlink) owned by the user and not group/other-writable;
    raises OSError (FileNotFoundError when absent) otherwise."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        reason = "not a regular file" if not stat.S_ISREG(st.st_mode) else untrusted_reason(st)
        if reason is not None:
            raise OSError(f"{path.name} is {reason}")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def digest_path(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def verify(library: Path) -> str | None:
    """None when ``library`` matches its recorded digest (and both pass the ownership checks), else why not.
    Raises FileNotFoundError when the library does not exist."""
    data = read_trusted(library)
    try:
        recorded = read_trusted(digest_path(library)).decode("ascii", "replace").strip()
    except FileNotFoundError:
        return NO_RECORD
    except OSError as exc:
        return str(exc)
    actual = hashlib.sha256(data).hexdigest()
    if actual != recorded:
        return f"SHA-256 {actual[:12]}... differs from the recorded {recorded[:12]}... (truncated or altered)"
    return None


def install(built: Path, library: Path) -> str:
    """Move the freshly built ``built`` (inside a temporary directory of the cache) to ``library`` with its digest
    record, each by an atomic rename; returns the digest."""
    digest = hashlib.sha256(built.read_bytes()).hexdigest()
    record = built.with_name(built.name + ".sha256")
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(digest + "\n")
    os.chmod(built, 0o700)
    os.replace(record, digest_path(library))  # the record first: a library is never visible without one
    os.replace(built, library)
    return digest
