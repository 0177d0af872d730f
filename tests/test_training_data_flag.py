"""`mamba-kan train --data PATH` trains byte-level language modelling on a user's UTF-8 text file."""

from __future__ import annotations

import json
import subprocess
import sys


def _train(*args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "mamba_kan",
        "train",
        "--model",
        "mlp_transformer",
        "--max-steps",
        "3",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_data_flag_selects_language_text(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Ein kleiner Text über Füchse und Hunde. " * 300, encoding="utf-8")
    p = _train("--data", str(corpus), "--json", "--set", "task_options.context=32")
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["task"] == "language/text" and result["status"] == "completed"
    assert result["primary_metric"] == "loss"


def test_data_flag_missing_or_binary_file_is_a_one_line_error(tmp_path):
    p = _train("--data", str(tmp_path / "missing.txt"))
    assert p.returncode == 2 and "not found" in p.stderr and "Traceback" not in p.stderr
    binary = tmp_path / "blob.txt"
    binary.write_bytes(bytes(range(256)) * 10)
    p = _train("--data", str(binary))
    assert p.returncode == 2 and "UTF-8" in p.stderr and "Traceback" not in p.stderr
