"""Shared test setup: small thread counts (2-core CI machine, tests run one after another)."""

from __future__ import annotations

import pytest
import torch

# One thread: the models in tests are tiny, and OpenMP spin-waiting on a loaded 2-core machine is slow.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
