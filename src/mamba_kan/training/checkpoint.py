"""Checkpoints and result files: atomic writes, safe loads, corruption fallback.

- Every file is written to a temporary name in the same directory (``.NAME.XXXXXXXX.tmp``), flushed, fsynced and
  moved into place with ``os.replace`` (atomic on POSIX), so a killed process leaves either the old file or the new
  one, never half; the temporary file a kill leaves behind is removed by :func:`remove_temp_files` when the run is
  resumed. Files get the usual permissions (0666 minus the umask), so collaborators can read shared results.
- A checkpoint ``ckpt_step{N}.pt`` has a sidecar ``ckpt_step{N}.pt.sha256``, written after it; a checkpoint
  without a matching digest (killed between the two writes, truncated, bit rot) is skipped with a warning and the
  previous one is tried.
- Loading uses ``torch.load(..., weights_only=True)``: only tensors and plain containers are unpickled, so opening
  a results directory never executes code from it. A file that needs more is treated as corrupt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^ckpt_step(\d+)\.pt$")
#: temporary names of :func:`atomic_write`: ``.`` + final name + ``.`` + mkstemp's 8 random characters + ``.tmp``
TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no getter before Python 3.13's os API)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path`` and move it into place atomically.

    The file ends up with mode 0666 & ~umask, like any file the user creates (mkstemp alone would make it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text), mode="w")


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    atomic_write(path, lambda fh: torch.save(obj, fh))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_load(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers, onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / f"ckpt_step{step}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file in ``run_dir``, newest first."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := CKPT_RE.match(p.name))]
    return sorted(found, reverse=True)


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as ``ckpt_step{step}.pt`` (+ digest) and delete all but the newest ``keep`` checkpoints."""
    path = checkpoint_path(run_dir, step)
    atomic_torch_save(path, state)
    atomic_write_text(path.with_name(path.name + ".sha256"), sha256_file(path) + "\n")
    for _, old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load one checkpoint after checking its digest. Raises ``ValueError`` when it is missing, truncated,
    corrupt or not loadable with ``weights_only=True``."""
    digest_file = path.with_name(path.name + ".sha256")
    if not digest_file.is_file():
        raise ValueError("no digest file (the write was interrupted)")
    expected = digest_file.read_text().strip()
    if sha256_file(path) != expected:
        raise ValueError("digest mismatch (truncated or corrupt)")
    try:
        state = safe_load(path)
    except Exception as exc:  # UnpicklingError for unsafe content, RuntimeError for a broken archive
        raise ValueError(
            f"cannot be loaded safely: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise ValueError("not a mamba-kan checkpoint")
    return state


def load_latest_checkpoint(run_dir: Path, config_hash: str) -> dict[str, Any] | None:
    """The newest good checkpoint of this config in ``run_dir``, or None; bad ones are skipped with a warning."""
    for step, path in list_checkpoints(run_dir):
        try:
            state = load_checkpoint(path)
        except (ValueError, OSError) as exc:
            log.warning("skipping checkpoint %s: %s", path, exc)
            continue
        if state.get("config_hash") != config_hash:
            log.warning("skipping checkpoint %s: written by a different config", path)
            continue
        if int(state["step"]) != step:
            log.warning("skipping checkpoint %s: it holds step %s", path, state["step"])
            continue
        return state
    return None


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files of :func:`atomic_write` that a killed writer left in ``run_dir`` (and its
    subdirectories); returns them. Call only while no other process writes the run (the sweep's driver runs each
    cell in one worker at a time)."""
    if not run_dir.is_dir():
        return []
    removed = [p for p in run_dir.rglob(".*.tmp") if TEMP_RE.match(p.name) and p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def remove_checkpoints(run_dir: Path) -> None:
    for _, path in list_checkpoints(run_dir):
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
