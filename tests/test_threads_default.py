"""A run whose settings name no thread count uses OMP_NUM_THREADS (else 1) on CPU, like compare's cells."""

from __future__ import annotations

import pytest
import torch

from mamba_kan.training.config import TrainConfig
from mamba_kan.training.loop import _session


@pytest.mark.parametrize(("env", "expected"), [("2", 2), ("3,1", 3), (None, 1)])
def test_session_threads_follow_omp_num_threads(monkeypatch, env, expected):
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    before = torch.get_num_threads()
    with _session(TrainConfig(), torch.device("cpu")):
        inside = torch.get_num_threads()
    assert inside == expected
    assert torch.get_num_threads() == before


def test_explicit_threads_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with _session(TrainConfig(threads=1), torch.device("cpu")):
        assert torch.get_num_threads() == 1
