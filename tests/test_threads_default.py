"""Process settings of a run: threads follow OMP_NUM_THREADS (else 1) on CPU like compare's cells; the NaN fill of
deterministic mode is off during training and changes no value."""

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


def test_session_turns_off_the_nan_fill_and_restores_it():
    torch.utils.deterministic.fill_uninitialized_memory = True
    with _session(TrainConfig(), torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    assert torch.utils.deterministic.fill_uninitialized_memory is True


@pytest.mark.parametrize("variant", ["kan_mamba", "bspline_transformer"])
def test_training_without_the_nan_fill_is_bit_identical(variant):
    """No op reads uninitialised memory: the same steps with torch's NaN fill on and off give equal weights."""
    from mamba_kan.training.loop import Trainer

    cfg = TrainConfig(
        model=variant,
        task="language/synthetic",
        task_options={"context": 16, "eval_sequences": 4},
        batch_size=4,
        max_steps=3,
        model_cfg={"d_model": 16, "n_layers": 1, "n_heads": 2},
    ).resolved()
    weights = []
    for fill in (True, False):
        with _session(cfg, torch.device("cpu")):
            torch.utils.deterministic.fill_uninitialized_memory = fill
            trainer = Trainer(cfg, device=torch.device("cpu"))
            for _ in range(3):
                trainer.step()
            weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
