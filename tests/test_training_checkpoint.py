"""Checkpoint files: atomic writes, digest checks, fallback past corrupt files, and loads that never execute code."""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from mamba_kan.training import checkpoint as ckpt


def _state(step: int, chash: str = "h") -> dict:
    return {
        "step": step,
        "config_hash": chash,
        "w": torch.full((3,), float(step)),
        "curves": [{"step": step}],
    }


def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path: Path):
    path = tmp_path / "result.json"
    ckpt.atomic_write_json(path, {"v": 1})

    def dies_halfway(fh):
        fh.write('{"v": 2, "partial')
        raise OSError("disk full")

    with pytest.raises(OSError):
        ckpt.atomic_write(path, dies_halfway, mode="w")
    assert path.read_text().strip() == '{\n "v": 1\n}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temporary left behind


def test_save_load_round_trip_and_keep_last_two(tmp_path: Path):
    for step in (10, 20, 30):
        ckpt.save_checkpoint(tmp_path, step, _state(step))
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [30, 20]
    assert not (tmp_path / "ckpt_step10.pt.sha256").exists()
    state = ckpt.load_latest_checkpoint(tmp_path, "h")
    assert state is not None and state["step"] == 30
    assert torch.equal(state["w"], torch.full((3,), 30.0)) and state["curves"] == [{"step": 30}]


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "no_digest", "garbage"])
def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path: Path, damage: str, caplog):
    ckpt.save_checkpoint(tmp_path, 10, _state(10))
    newest = ckpt.save_checkpoint(tmp_path, 20, _state(20))
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        i = len(data) // 3
        newest.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif damage == "no_digest":  # killed between writing the file and its digest
        newest.with_name(newest.name + ".sha256").unlink()
    else:
        newest.write_bytes(b"not a checkpoint at all")
    with caplog.at_level(logging.WARNING, logger="mamba_kan.training.checkpoint"):
        state = ckpt.load_latest_checkpoint(tmp_path, "h")
    assert state is not None and state["step"] == 10
    assert "ckpt_step20.pt" in caplog.text


def test_all_corrupt_means_start_from_scratch(tmp_path: Path):
    p = ckpt.save_checkpoint(tmp_path, 5, _state(5))
    p.write_bytes(p.read_bytes()[:100])
    assert ckpt.load_latest_checkpoint(tmp_path, "h") is None


def test_checkpoint_of_another_config_is_not_resumed(tmp_path: Path):
    ckpt.save_checkpoint(tmp_path, 10, _state(10, chash="other"))
    assert ckpt.load_latest_checkpoint(tmp_path, "h") is None


class _Exploit:
    """Unpickling this runs os.system: what a hostile results directory could contain."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_loading_never_executes_code_from_the_results_directory(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt_step10.pt"
    # a real torch zip archive whose pickle calls os.system, with a *valid* digest so only the unpickler can stop it
    torch.save({"step": 10, "config_hash": "h", "payload": _Exploit(marker)}, path)
    assert zipfile.is_zipfile(path)
    (tmp_path / "ckpt_step10.pt.sha256").write_text(ckpt.sha256_file(path))
    # sanity: the plain (unsafe) unpickler would run it
    with zipfile.ZipFile(path) as z:
        raw = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"system" in raw
    assert ckpt.load_latest_checkpoint(tmp_path, "h") is None
    with pytest.raises(ValueError, match="safely"):
        ckpt.load_checkpoint(path)
    assert not marker.exists()
    # and the same for the standalone safe loader used for final_model.pt / snapshots
    with pytest.raises(pickle.UnpicklingError):
        ckpt.safe_load(path)
    assert not marker.exists()


def test_written_files_follow_the_umask(tmp_path: Path):
    old = os.umask(0o027)
    try:
        ckpt.atomic_write_json(tmp_path / "result.json", {"v": 1})
        ckpt.save_checkpoint(tmp_path, 3, _state(3))
    finally:
        os.umask(old)
    for name in ("result.json", "ckpt_step3.pt", "ckpt_step3.pt.sha256"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name  # 0666 & ~027 (mkstemp alone: 0600)


def test_remove_temp_files_removes_only_what_atomic_write_leaves(tmp_path: Path):
    (tmp_path / "snapshots").mkdir()
    ckpt.atomic_write_json(tmp_path / "result.json", {"v": 1})

    def killed(fh):  # a writer killed after mkstemp, before os.replace, leaves its temporary file
        fh.write(b"partial")
        raise KeyboardInterrupt

    leftovers = []
    for target in (tmp_path / "ckpt_step5.pt", tmp_path / "snapshots" / "splines_step000005.pt"):
        with pytest.raises(KeyboardInterrupt):
            ckpt.atomic_write(target, killed)
        # atomic_write cleans up after an exception it sees; a SIGKILL gives it no chance: plant the same name
        leftover = target.with_name(f".{target.name}.a1b2_c3d.tmp")
        leftover.write_bytes(b"partial")
        leftovers.append(leftover)
    keep = [tmp_path / "notes.tmp", tmp_path / ".hidden.tmp", tmp_path / "result.json"]
    for p in keep[:2]:
        p.write_text("mine")
    assert sorted(ckpt.remove_temp_files(tmp_path)) == sorted(leftovers)
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in keep)
